"""kxds: an Envoy xDS control plane for Kubernetes traffic entering a cluster."""

__version__ = "0.1.0"
