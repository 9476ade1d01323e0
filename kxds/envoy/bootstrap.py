"""Envoy bootstrap files: how a proxy finds kxds and says who it is.

A bootstrap is the only static configuration an Envoy served by kxds needs:
its node identity (id, ``node.cluster`` as the gateway group, metadata
``role``/``node_name``/``zone``), one static cluster ``xds_cluster`` that
reaches kxds over HTTP/2 (with mTLS: a client certificate naming the proxy,
and kxds's certificate checked against a CA and a name), ADS for clusters and
listeners (everything else is named by them and fetched on the same stream),
and a local admin listener.

The bootstrap is rendered as plain data (dicts) and dumped as YAML; it is not
built from protobuf classes because it is a file people read and edit, and
``envoy --mode validate`` checks it in the tests.
"""

from __future__ import annotations

import ipaddress
import shlex
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any, Literal

import yaml

from kxds.envoy import ext_authz_relay as ext_authz

Role = Literal["edge", "node"]

XDS_CLUSTER = "xds_cluster"


@dataclass(frozen=True, slots=True, kw_only=True)
class XdsTls:
    """Files of the proxy's side of mTLS to kxds (paths as the proxy sees them)."""

    ca: str
    """The CA kxds's serving certificate must chain to."""
    cert: str = ""
    """The client certificate chain naming this proxy (``spiffe://kxds/...``)."""
    key: str = ""
    sds: str = ""
    """Instead of ``cert`` and ``key``: a file-based SDS resource naming them (as
    ``kxds node-cert`` writes it beside them, :func:`client_sds_yaml`). Envoy
    reloads such a certificate when it is renewed; files named directly are read
    once, at start."""
    server_name: str | None = None
    """SNI, and the name kxds's certificate must carry (default: the xDS host)."""

    def __post_init__(self) -> None:
        if bool(self.sds) == bool(self.cert and self.key) or (self.sds and (self.cert or self.key)):
            raise ValueError("the client certificate is either a certificate and a key, "
                             "or an SDS file naming them")


@dataclass(frozen=True, slots=True, kw_only=True)
class BootstrapOptions:
    """Everything that varies between the bootstraps of different proxies."""

    role: Role
    node_id: str
    xds_host: str
    xds_port: int
    node_name: str | None = None
    """The Kubernetes node a per-node proxy runs on (required for ``role="node"``)."""
    zone: str | None = None
    bind_address: str | None = None
    """``role="node"``: where this proxy binds nodePorts (node metadata ``bind_address``)."""
    transparent: bool = False
    """``role="node"``: the node is set up for transparent source addresses (node
    metadata ``source_ip_mode: transparent``; see :mod:`kxds.noderouting`)."""
    group: str | None = None
    """``node.cluster``: the gateway group an edge proxy belongs to (``default`` when unset)."""
    admin_host: str = "127.0.0.1"
    admin_port: int = 9901
    delta: bool = False
    tls: XdsTls | None = None
    """mTLS to kxds (client certificate, CA); None: plaintext (loopback only)."""
    initial_fetch_timeout: str = "0s"
    """How long Envoy waits for its first clusters and listeners before it starts anyway.

    ``0s`` (wait for kxds) is the default: a gateway that reports itself
    initialized with no listeners would pass readiness checks and refuse every
    connection, which is worse than staying unready until kxds has answered.
    Envoy keeps retrying the ADS stream meanwhile.
    """


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) -> (host, port); raises ValueError."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _socket(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def _node(opts: BootstrapOptions) -> dict[str, Any]:
    metadata: dict[str, str] = {"role": opts.role}
    if opts.node_name:
        metadata["node_name"] = opts.node_name
    if opts.zone:
        metadata["zone"] = opts.zone
    if opts.bind_address:
        metadata["bind_address"] = opts.bind_address
    if opts.transparent:
        metadata["source_ip_mode"] = "transparent"
    node: dict[str, Any] = {
        "id": opts.node_id,
        "cluster": opts.group or "default",
        "metadata": metadata,
    }
    if opts.zone:
        # Envoy's own locality, used by zone-aware load balancing.
        node["locality"] = {"zone": opts.zone}
    return node


def _xds_cluster(opts: BootstrapOptions) -> dict[str, Any]:
    # A hostname (docker-compose's service name, a Kubernetes Service DNS name)
    # is resolved by Envoy; an IP literal needs no resolver.
    dns = not _is_ip(opts.xds_host)
    cluster: dict[str, Any] = {
        "name": XDS_CLUSTER,
        "type": "STRICT_DNS" if dns else "STATIC",
        "connect_timeout": "1s",
        # gRPC needs HTTP/2 to the upstream; keepalive pings notice a dead
        # kxds (or a silently dropped connection) and trigger a reconnect.
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/"
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {
                    "http2_protocol_options": {
                        "connection_keepalive": {"interval": "30s", "timeout": "5s"},
                    },
                },
            },
        },
        "load_assignment": {
            "cluster_name": XDS_CLUSTER,
            "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": _socket(opts.xds_host, opts.xds_port)}},
            ]}],
        },
    }
    if dns:
        cluster["dns_lookup_family"] = "V4_PREFERRED"
    if opts.tls is not None:
        cluster["transport_socket"] = _upstream_tls(opts.tls, opts.xds_host)
    return cluster


def _upstream_tls(tls: XdsTls, host: str) -> dict[str, Any]:
    """The xds_cluster's TLS: our client certificate, and kxds's checked by CA and name.

    The name check matters: every proxy's client certificate chains to the same
    CA, so the chain alone would let a proxy's certificate pose as kxds.
    """
    name = tls.server_name or host
    san_type = "IP_ADDRESS" if _is_ip(name) else "DNS"
    context: dict[str, Any] = {
        "@type": "type.googleapis.com/"
                 "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "common_tls_context": {
            "alpn_protocols": ["h2"],
            **_client_certificate(tls),
            "validation_context": {
                "trusted_ca": {"filename": tls.ca},
                "match_typed_subject_alt_names": [
                    {"san_type": san_type, "matcher": {"exact": name}}],
            },
        },
    }
    if not _is_ip(name):
        context["sni"] = name
    return {"name": "envoy.transport_sockets.tls", "typed_config": context}


CLIENT_SECRET = "xds_client"
"""The SDS name of the proxy's own certificate for the channel to kxds."""


def _client_certificate(tls: XdsTls) -> dict[str, Any]:
    if not tls.sds:
        return {"tls_certificates": [{"certificate_chain": {"filename": tls.cert},
                                      "private_key": {"filename": tls.key}}]}
    return {"tls_certificate_sds_secret_configs": [{"name": CLIENT_SECRET, "sds_config": {
        "resource_api_version": "V3", "path_config_source": {"path": tls.sds}}}]}


def client_sds_yaml(cert: str, key: str) -> str:
    """The file-based SDS resource naming the client certificate ``cert`` and its ``key``.

    Envoy watches their directory and reads both again when a file is renamed
    into it (the way :mod:`kxds.nodecert.client` writes them), so a renewed
    certificate is used for the next connection without a restart.
    """
    directory = str(PurePath(cert).parent)
    secret = {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
        "name": CLIENT_SECRET,
        "tls_certificate": {"certificate_chain": {"filename": cert},
                            "private_key": {"filename": key},
                            "watched_directory": {"path": directory}},
    }
    return yaml.safe_dump({"resources": [secret]}, sort_keys=False)


def _dynamic_resources(opts: BootstrapOptions) -> dict[str, Any]:
    def ads() -> dict[str, Any]:
        # Fresh dicts each time, so the YAML has no anchors/aliases.
        return {"ads": {}, "resource_api_version": "V3",
                "initial_fetch_timeout": opts.initial_fetch_timeout}

    return {
        "ads_config": {
            "api_type": "DELTA_GRPC" if opts.delta else "GRPC",
            "transport_api_version": "V3",
            "set_node_on_first_message_only": True,
            "grpc_services": [{"envoy_grpc": {
                "cluster_name": XDS_CLUSTER,
                # Reconnect quickly after kxds restarts (Envoy's default
                # backoff starts at 500 ms and grows to 30 s). Envoy waits a
                # random time below an interval that doubles per failure, so the
                # cap bounds how long a proxy sleeps after kxds listens again:
                # with 1 s, every proxy is back within 1 s of it (a refused
                # connect per proxy per 0.5 s on average while kxds is away).
                "retry_policy": {"retry_back_off": {
                    "base_interval": "0.25s", "max_interval": "1s",
                }},
            }}],
        },
        "cds_config": ads(),
        "lds_config": ads(),
    }


def render_bootstrap(opts: BootstrapOptions) -> dict[str, Any]:
    """The bootstrap for one proxy, as the data Envoy's YAML loader reads."""
    if opts.role == "node" and not opts.node_name:
        raise ValueError("a node-role proxy needs its node name")
    if opts.transparent and opts.role != "node":
        raise ValueError("transparent source addresses are for node-role proxies")
    out: dict[str, Any] = {
        "node": _node(opts),
        "dynamic_resources": _dynamic_resources(opts),
        "static_resources": {"clusters": [_xds_cluster(opts)]},
        "admin": {"address": _socket(opts.admin_host, opts.admin_port)},
    }
    if opts.role == "edge":  # the relay of external authentication checks
        out["bootstrap_extensions"] = [ext_authz.INTERNAL_LISTENER_EXTENSION]
        out["static_resources"]["listeners"] = [ext_authz.relay_listener()]
        out["static_resources"]["clusters"].append(ext_authz.relay_cluster())
    return out


def bootstrap_command(opts: BootstrapOptions) -> str:
    """The ``kxds bootstrap`` command line that renders ``opts`` (for the file's header)."""
    words = ["kxds", "bootstrap", "--role", opts.role, "--node-id", opts.node_id]
    for flag, value in (("--node-name", opts.node_name), ("--zone", opts.zone),
                        ("--bind-address", opts.bind_address), ("--cluster", opts.group)):
        if value:
            words += [flag, value]
    if opts.transparent:
        words.append("--transparent")
    words += ["--xds-address", f"{opts.xds_host}:{opts.xds_port}"]
    if opts.tls is not None:
        if opts.tls.sds:
            words += ["--tls-sds", opts.tls.sds]
        else:
            words += ["--tls-cert", opts.tls.cert, "--tls-key", opts.tls.key]
        words += ["--tls-ca", opts.tls.ca]
        if opts.tls.server_name:
            words += ["--tls-server-name", opts.tls.server_name]
    if opts.admin_host != "127.0.0.1":
        words += ["--admin-host", opts.admin_host]
    words += ["--admin-port", str(opts.admin_port)]
    if opts.delta:
        words.append("--delta")
    if opts.initial_fetch_timeout != "0s":
        words += ["--initial-fetch-timeout", opts.initial_fetch_timeout]
    return " ".join(shlex.quote(w) for w in words)


def bootstrap_yaml(opts: BootstrapOptions) -> str:
    """:func:`render_bootstrap` as YAML, headed by the command that renders it."""
    header = (
        f"# Envoy bootstrap for a kxds {opts.role} proxy; everything else comes over ADS.\n"
        f"# Rendered by: {bootstrap_command(opts)}\n"
    )
    return header + yaml.dump(render_bootstrap(opts), Dumper=_Dumper, sort_keys=False)


class _Dumper(yaml.SafeDumper):
    """PyYAML's safe dumper, writing multi-line text (the relay's Lua) as a literal block."""


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _text)
