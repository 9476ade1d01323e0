"""Kubernetes objects (plain dicts, as YAML or the API gives them) -> typed models.

:func:`parse_object` validates the fields kxds uses. A problem that makes the
object unusable raises :class:`Invalid` internally and comes out as one
:class:`Diagnostic`; the object is then left out, and nothing else is affected.
Kinds kxds does not read return ``None`` without a diagnostic.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Callable, Mapping
from typing import Any, cast

from kxds.diagnostics import Diagnostic, ObjectRef, Reason, escape, show
from kxds.kube import models as m
from kxds.kube.fields import (
    Invalid,
    check_count,
    check_name,
    fail,
    get_bool,
    get_int,
    get_int_or_str,
    get_list,
    get_map,
    get_str,
    items,
    one_of,
    parse_meta,
    parse_selector,
    scalar,
    str_list,
    str_map,
)
from kxds.kube.legacy import LEGACY_INGRESS_VERSIONS, ingress_to_v1
from kxds.kube.limits import (
    MAX_ADDRESSES_PER_ENDPOINT,
    MAX_ENDPOINTS_PER_SLICE,
    MAX_PORTS_PER_SLICE,
    Limits,
)
from kxds.kube.parse_gateway import PARSERS as GATEWAY_PARSERS
from kxds.kube.parse_ingress import parse_ingress, parse_ingress_class

log = logging.getLogger(__name__)

SERVICE_NAME_LABEL = "kubernetes.io/service-name"

_PROTOCOLS = ("TCP", "UDP", "SCTP")
_SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")


# --- metadata and selectors ------------------------------------------------


# --- kinds -----------------------------------------------------------------


def parse_service_port(raw: Mapping[str, Any], path: str) -> m.ServicePort:
    return m.ServicePort(
        name=get_str(raw, "name", path) or "",
        port=cast(int, get_int(raw, "port", path, required=True)),
        protocol=one_of(get_str(raw, "protocol", path), _PROTOCOLS, f"{path}.protocol", "TCP"),  # type: ignore[arg-type]
        target_port=get_int_or_str(raw, "targetPort", path),
        node_port=get_int(raw, "nodePort", path),
        app_protocol=get_str(raw, "appProtocol", path),
    )


def _unique_ports(ports: tuple[m.ServicePort, ...]) -> None:
    """The API server refuses a repeated port name, or a repeated port and protocol."""
    names: set[str] = set()
    numbers: set[tuple[int, str]] = set()
    for i, p in enumerate(ports):
        if p.name and p.name in names:
            fail(f"spec.ports[{i}].name", f"{show(p.name)} is used by an earlier port")
        if (p.port, p.protocol) in numbers:
            fail(f"spec.ports[{i}]", f"port {p.port}/{p.protocol} is used by an earlier port")
        names.add(p.name)
        numbers.add((p.port, p.protocol))


def _lb_status(doc: Mapping[str, Any], key: str) -> tuple[str, ...]:
    """``status.loadBalancer.ingress[].<key>`` values (ip or hostname)."""
    lb = get_map(get_map(doc, "status", ""), "loadBalancer", "status")
    return tuple(scalar(i[key], f"status.loadBalancer.ingress[{n}].{key}")
                 for n, i in enumerate(get_list(lb, "ingress", "status.loadBalancer"))
                 if isinstance(i, Mapping) and i.get(key))


def parse_service(doc: Mapping[str, Any], limits: Limits) -> m.Service:
    meta = parse_meta(doc, "Service", namespaced=True)
    spec = get_map(doc, "spec", "")
    svc_type = one_of(get_str(spec, "type", "spec"), _SERVICE_TYPES, "spec.type", "ClusterIP")
    check_count(get_list(spec, "ports", "spec"), limits.max_service_ports, "spec.ports",
                "kxds --max-service-ports")
    ports = items(spec, "ports", "spec", parse_service_port)
    if len(ports) > 1 and any(not p.name for p in ports):
        fail("spec.ports", "every port must be named when a Service has more than one")
    _unique_ports(ports)
    selector = str_map(spec, "selector", "spec") if spec.get("selector") is not None else None
    if svc_type == "ExternalName" and not get_str(spec, "externalName", "spec"):
        fail("spec.externalName", "is required for type ExternalName", Reason.MISSING_FIELD)
    affinity_cfg = get_map(get_map(spec, "sessionAffinityConfig", "spec"), "clientIP", "spec")
    return m.Service(
        meta=meta,
        type=svc_type,  # type: ignore[arg-type]
        ports=ports,
        selector=selector,
        cluster_ip=get_str(spec, "clusterIP", "spec"),
        external_name=(get_str(spec, "externalName", "spec") or "").lower() or None,
        external_ips=str_list(spec, "externalIPs", "spec"),
        load_balancer_ip=get_str(spec, "loadBalancerIP", "spec"),
        load_balancer_source_ranges=str_list(spec, "loadBalancerSourceRanges", "spec"),
        load_balancer_ingress=_lb_status(doc, "ip"),
        load_balancer_hostnames=_lb_status(doc, "hostname"),
        external_traffic_policy=one_of(  # type: ignore[arg-type]
            get_str(spec, "externalTrafficPolicy", "spec"), ("Cluster", "Local"),
            "spec.externalTrafficPolicy", "Cluster",
        ),
        internal_traffic_policy=one_of(  # type: ignore[arg-type]
            get_str(spec, "internalTrafficPolicy", "spec"), ("Cluster", "Local"),
            "spec.internalTrafficPolicy", "Cluster",
        ),
        health_check_node_port=get_int(spec, "healthCheckNodePort", "spec"),
        session_affinity=one_of(  # type: ignore[arg-type]
            get_str(spec, "sessionAffinity", "spec"), ("None", "ClientIP"),
            "spec.sessionAffinity", "None",
        ),
        session_affinity_timeout=get_int(
            affinity_cfg, "timeoutSeconds", "spec.sessionAffinityConfig.clientIP", hi=86400
        ),
        traffic_distribution=get_str(spec, "trafficDistribution", "spec"),
        allocate_load_balancer_node_ports=get_bool(spec, "allocateLoadBalancerNodePorts",
                                                   "spec", True),
    )


def parse_slice_endpoint(raw: Mapping[str, Any], path: str) -> m.SliceEndpoint:
    addresses = str_list(raw, "addresses", path)
    if not addresses:
        fail(f"{path}.addresses", "must name at least one address", Reason.MISSING_FIELD)
    check_count(addresses, MAX_ADDRESSES_PER_ENDPOINT, f"{path}.addresses",
                "the EndpointSlice API allows 100")
    cond = get_map(raw, "conditions", path)
    cpath = f"{path}.conditions"
    ready = get_bool(cond, "ready", cpath, True)
    ref = get_map(raw, "targetRef", path)
    hints = get_map(raw, "hints", path)
    return m.SliceEndpoint(
        addresses=addresses,
        ready=ready,
        serving=get_bool(cond, "serving", cpath, ready),
        terminating=get_bool(cond, "terminating", cpath, False),
        node_name=get_str(raw, "nodeName", path),
        zone=get_str(raw, "zone", path),
        hostname=get_str(raw, "hostname", path),
        target_ref=m.TargetRef(
            kind=get_str(ref, "kind", f"{path}.targetRef") or "Pod",
            namespace=get_str(ref, "namespace", f"{path}.targetRef") or "",
            name=cast(str, get_str(ref, "name", f"{path}.targetRef")),
        ) if ref.get("name") else None,
        hints_for_zones=tuple(
            scalar(z["name"], f"{path}.hints.forZones[{i}].name")
            for i, z in enumerate(get_list(hints, "forZones", f"{path}.hints"))
            if isinstance(z, Mapping) and z.get("name")
        ),
    )


def parse_endpoint_port(raw: Mapping[str, Any], path: str) -> m.EndpointPort:
    return m.EndpointPort(
        name=get_str(raw, "name", path) or "",
        port=get_int(raw, "port", path),
        protocol=one_of(get_str(raw, "protocol", path), _PROTOCOLS, f"{path}.protocol", "TCP"),  # type: ignore[arg-type]
        app_protocol=get_str(raw, "appProtocol", path),
    )


def parse_endpoint_slice(doc: Mapping[str, Any], limits: Limits) -> m.EndpointSlice:
    meta = parse_meta(doc, "EndpointSlice", namespaced=True)
    service = meta.labels.get(SERVICE_NAME_LABEL)
    if not service:
        fail(f"metadata.labels[{SERVICE_NAME_LABEL}]", "is required", Reason.MISSING_FIELD)
    check_name(service, "dns1035", f"metadata.labels[{SERVICE_NAME_LABEL}]")
    check_count(get_list(doc, "endpoints", ""), MAX_ENDPOINTS_PER_SLICE, "endpoints",
                "the EndpointSlice API allows 1000")
    check_count(get_list(doc, "ports", ""), MAX_PORTS_PER_SLICE, "ports",
                "the EndpointSlice API allows 100")
    return m.EndpointSlice(
        meta=meta,
        service_name=service,
        address_type=one_of(  # type: ignore[arg-type]
            get_str(doc, "addressType", ""), ("IPv4", "IPv6", "FQDN"), "addressType", "IPv4"
        ),
        ports=items(doc, "ports", "", parse_endpoint_port),
        endpoints=items(doc, "endpoints", "", parse_slice_endpoint),
    )


def parse_policy_port(raw: Mapping[str, Any], path: str) -> m.PolicyPort:
    port = get_int_or_str(raw, "port", path)
    end = get_int(raw, "endPort", path)
    if end is not None and not isinstance(port, int):
        fail(f"{path}.endPort", "needs a numeric port")
    if end is not None and isinstance(port, int) and end < port:
        fail(f"{path}.endPort", f"{end} is below port {port}")
    return m.PolicyPort(
        protocol=one_of(get_str(raw, "protocol", path), _PROTOCOLS, f"{path}.protocol", "TCP"),  # type: ignore[arg-type]
        port=port,
        end_port=end,
    )


def parse_peer(raw: Mapping[str, Any], path: str) -> m.PolicyPeer:
    block = get_map(raw, "ipBlock", path)
    pods = raw.get("podSelector")
    nss = raw.get("namespaceSelector")
    if block and (pods is not None or nss is not None):
        fail(path, "ipBlock cannot be combined with podSelector or namespaceSelector")
    return m.PolicyPeer(
        ip_block=m.IPBlock(
            cidr=cast(str, get_str(block, "cidr", f"{path}.ipBlock", required=True)),
            except_=str_list(block, "except", f"{path}.ipBlock"),
        ) if block else None,
        pod_selector=parse_selector(get_map(raw, "podSelector", path), f"{path}.podSelector")
        if pods is not None else None,
        namespace_selector=parse_selector(
            get_map(raw, "namespaceSelector", path), f"{path}.namespaceSelector"
        ) if nss is not None else None,
    )


def parse_policy_rule(raw: Mapping[str, Any], path: str) -> m.PolicyRule:
    return m.PolicyRule(
        from_=items(raw, "from", path, parse_peer) if raw.get("from") is not None else None,
        ports=(items(raw, "ports", path, parse_policy_port)
               if raw.get("ports") is not None else None),
    )


def parse_network_policy(doc: Mapping[str, Any], limits: Limits) -> m.NetworkPolicy:
    meta = parse_meta(doc, "NetworkPolicy", namespaced=True)
    spec = get_map(doc, "spec", "")
    if spec.get("podSelector") is None:
        fail("spec.podSelector", "is required", Reason.MISSING_FIELD)
    types = str_list(spec, "policyTypes", "spec")
    for t in types:
        one_of(t, ("Ingress", "Egress"), "spec.policyTypes", "")
    if not types:
        # API default: Ingress always, Egress only when egress rules are present.
        types = ("Ingress", "Egress") if spec.get("egress") else ("Ingress",)
    return m.NetworkPolicy(
        meta=meta,
        pod_selector=parse_selector(get_map(spec, "podSelector", "spec"), "spec.podSelector"),
        policy_types=types,  # type: ignore[arg-type]
        ingress=items(spec, "ingress", "spec", parse_policy_rule),
    )


def _decode(value: Any, field: str) -> bytes:
    if not isinstance(value, str):
        fail(field, "must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        fail(field, "is not valid base64")


def parse_secret(doc: Mapping[str, Any], limits: Limits) -> m.Secret:
    meta = parse_meta(doc, "Secret", namespaced=True)
    data = {scalar(k, "data"): _decode(v, f"data[{k}]")
            for k, v in get_map(doc, "data", "").items()}
    data.update({k: v.encode() for k, v in str_map(doc, "stringData", "").items()})
    return m.Secret(meta=meta, type=get_str(doc, "type", "") or "Opaque", data=data)


def parse_config_map(doc: Mapping[str, Any], limits: Limits) -> m.ConfigMap:
    meta = parse_meta(doc, "ConfigMap", namespaced=True)
    # Only data is read: annotations (kubectl's last-applied copy) are not kept.
    meta = m.Meta(kind=meta.kind, namespace=meta.namespace, name=meta.name, labels=meta.labels,
                  uid=meta.uid, resource_version=meta.resource_version,
                  creation_timestamp=meta.creation_timestamp)
    data = str_map(doc, "data", "")
    if sum(len(k) + len(v) for k, v in data.items()) > m.MAX_CONFIG_MAP_BYTES:
        return m.ConfigMap(meta=meta, too_large=True)
    return m.ConfigMap(meta=meta, data=data)


def parse_namespace(doc: Mapping[str, Any], limits: Limits) -> m.Namespace:
    meta = parse_meta(doc, "Namespace", namespaced=False)
    # The control plane sets this label on every namespace, immutably, to its
    # name; manifests often omit it, and one naming another namespace must not
    # make a NetworkPolicy namespaceSelector match it.
    labels = {**meta.labels, "kubernetes.io/metadata.name": meta.name}
    return m.Namespace(meta=m.Meta(kind="Namespace", namespace="", name=meta.name,
                                   labels=labels, annotations=meta.annotations, uid=meta.uid,
                                   resource_version=meta.resource_version,
                                   creation_timestamp=meta.creation_timestamp))


def parse_container_ports(spec: Mapping[str, Any]) -> tuple[m.ContainerPort, ...]:
    out = []
    for c in get_list(spec, "containers", "spec"):
        if not isinstance(c, Mapping):
            continue
        for p in get_list(c, "ports", "spec.containers[]"):
            if (isinstance(p, Mapping) and isinstance(p.get("name"), str)
                    and isinstance(p.get("containerPort"), int)):
                proto = p.get("protocol") if p.get("protocol") in _PROTOCOLS else "TCP"
                out.append(m.ContainerPort(name=str(p["name"]), port=p["containerPort"],
                                           protocol=cast(m.Protocol, proto)))
    return tuple(out)


def parse_pod(doc: Mapping[str, Any], limits: Limits) -> m.Pod:
    meta = parse_meta(doc, "Pod", namespaced=True)
    # Pods are kept only for NetworkPolicy (labels, addresses, named ports); their
    # annotations can be large and are never read, so they are not kept.
    meta = m.Meta(kind=meta.kind, namespace=meta.namespace, name=meta.name, labels=meta.labels,
                  uid=meta.uid, resource_version=meta.resource_version,
                  creation_timestamp=meta.creation_timestamp)
    spec = get_map(doc, "spec", "")
    status = get_map(doc, "status", "")
    ips = tuple(scalar(p["ip"], f"status.podIPs[{i}].ip")
                for i, p in enumerate(get_list(status, "podIPs", "status"))
                if isinstance(p, Mapping) and p.get("ip"))
    pod_ip = get_str(status, "podIP", "status")
    if not ips and pod_ip:
        ips = (pod_ip,)
    return m.Pod(
        meta=meta,
        node_name=get_str(spec, "nodeName", "spec"),
        pod_ips=ips,
        phase=get_str(status, "phase", "status") or "Running",
        container_ports=parse_container_ports(spec),
    )


PARSERS: Mapping[tuple[str, str], Callable[[Mapping[str, Any], Limits], m.Model]] = {
    ("v1", "Service"): parse_service,
    ("v1", "Secret"): parse_secret,
    ("v1", "Namespace"): parse_namespace,
    ("v1", "ConfigMap"): parse_config_map,
    ("v1", "Pod"): parse_pod,
    ("discovery.k8s.io/v1", "EndpointSlice"): parse_endpoint_slice,
    ("networking.k8s.io/v1", "Ingress"): parse_ingress,
    ("networking.k8s.io/v1", "IngressClass"): parse_ingress_class,
    ("networking.k8s.io/v1", "NetworkPolicy"): parse_network_policy,
    **GATEWAY_PARSERS,
}

_NAMESPACED = ("Service", "Secret", "Pod", "EndpointSlice", "Ingress", "NetworkPolicy", "Gateway",
               "HTTPRoute", "ReferenceGrant", "GRPCRoute", "TLSRoute", "TCPRoute", "UDPRoute",
               "ConfigMap", "BackendTLSPolicy")


def ref_of(doc: Mapping[str, Any], fallback: str = "") -> ObjectRef:
    """Best-effort reference to a raw object, for diagnostics about it."""
    raw_meta = doc.get("metadata")
    meta: Mapping[str, Any] = raw_meta if isinstance(raw_meta, Mapping) else {}

    def text(value: Any, default: str) -> str:
        return value if isinstance(value, str) and value else default

    kind = text(doc.get("kind"), "Object")
    name = text(meta.get("name"), fallback or "<unnamed>")
    namespace = text(meta.get("namespace"), "")
    if kind in _NAMESPACED:
        namespace = namespace or "default"
    return ObjectRef(kind, namespace, name)


def _type_of(doc: Mapping[str, Any]) -> tuple[str, str]:
    """``(apiVersion, kind)``; a value that is not a string stands for nothing we read."""
    api, kind = doc.get("apiVersion"), doc.get("kind")
    return (api if isinstance(api, str) else "?", kind if isinstance(kind, str) else "?")


def _converted(doc: Mapping[str, Any], origin: str
               ) -> tuple[Mapping[str, Any], Diagnostic | None]:
    """``doc`` itself, or a v1beta1 Ingress converted to v1 with a diagnostic saying so."""
    api, kind = _type_of(doc)
    if kind != "Ingress" or api not in LEGACY_INGRESS_VERSIONS:
        return doc, None
    note = Diagnostic(ref_of(doc, origin), "apiVersion", Reason.DEPRECATED_API,
                      f"{api} Ingress (removed in Kubernetes 1.22) read as networking.k8s.io/v1, "
                      "converted as the API server converted it: backend is defaultBackend, "
                      "serviceName/servicePort are service.name/port, a path without pathType "
                      "is ImplementationSpecific")
    return ingress_to_v1(doc), note


def parse_object(doc: Any, origin: str = "", limits: Limits | None = None
                 ) -> tuple[m.Model | None, Diagnostic | None]:
    """Parse one Kubernetes object: (model, None), (None, problem) or (None, None).

    (model, note) when the object is usable but something about it is worth
    saying (an old API version converted). Nothing raises: a bug met while
    parsing one object is an ``InternalError`` diagnostic naming it.
    """
    if not isinstance(doc, Mapping):
        ref = ObjectRef("File", "", origin or "<input>")
        return None, Diagnostic(ref, "document", Reason.INVALID_VALUE,
                                f"is a {type(doc).__name__}, not an object")
    doc, note = _converted(doc, origin)
    parser = PARSERS.get(_type_of(doc))
    if parser is None:
        log.debug("ignoring %s %s from %s", *(escape(t) for t in _type_of(doc)), escape(origin))
        return None, None
    try:
        return parser(doc, limits or Limits()), note
    except Invalid as e:
        return None, Diagnostic(ref_of(doc, origin), e.field.lstrip("."), e.reason, e.message,
                                asked_class=_asked_class(doc))
    except Exception as e:  # a bug: this object is left out, never the others
        log.exception("event=parse_failed object=%s", ref_of(doc, origin))
        return None, Diagnostic(ref_of(doc, origin), "", Reason.INTERNAL_ERROR,
                                f"kxds failed to read this object ({type(e).__name__}); "
                                "it is left out: please report it",
                                asked_class=_asked_class(doc))


def _asked_class(doc: Mapping[str, Any]) -> tuple[str | None, str | None] | None:
    """The class an Ingress that could not be read asks for (None for other kinds)."""
    if doc.get("kind") != "Ingress":
        return None
    spec, meta = doc.get("spec"), doc.get("metadata")
    name = spec.get("ingressClassName") if isinstance(spec, Mapping) else None
    annotations = meta.get("annotations") if isinstance(meta, Mapping) else None
    annotated = (annotations.get("kubernetes.io/ingress.class")
                 if isinstance(annotations, Mapping) else None)
    return (name if isinstance(name, str) else None,
            annotated if isinstance(annotated, str) else None)
