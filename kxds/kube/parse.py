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
from typing import Any, NoReturn, TypeVar, cast

from kxds.diagnostics import Diagnostic, ObjectRef, Reason
from kxds.kube import models as m

log = logging.getLogger(__name__)

T = TypeVar("T")

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"

_PROTOCOLS = ("TCP", "UDP", "SCTP")
_SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
_PATH_TYPES = ("Exact", "Prefix", "ImplementationSpecific")
_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


class Invalid(Exception):
    """A field makes the object unusable; carries the diagnostic's parts."""

    def __init__(self, field: str, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.reason = reason
        self.message = message


def fail(field: str, message: str, reason: Reason = Reason.INVALID_VALUE) -> NoReturn:
    raise Invalid(field, reason, message)


# --- typed field access ----------------------------------------------------


def get_map(obj: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any]:
    value = obj.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        fail(f"{path}.{key}", f"must be an object, not {type(value).__name__}")
    return value


def get_list(obj: Mapping[str, Any], key: str, path: str) -> list[Any]:
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        fail(f"{path}.{key}", f"must be a list, not {type(value).__name__}")
    return value


def get_str(obj: Mapping[str, Any], key: str, path: str, *, required: bool = False) -> str | None:
    value = obj.get(key)
    if value is None or value == "":
        if required:
            fail(f"{path}.{key}", "is required", Reason.MISSING_FIELD)
        return None
    if not isinstance(value, str):
        fail(f"{path}.{key}", f"must be a string, not {value!r}")
    return value


def get_int(
    obj: Mapping[str, Any], key: str, path: str, *, lo: int = 1, hi: int = 65535,
    required: bool = False,
) -> int | None:
    value = obj.get(key)
    if value is None:
        if required:
            fail(f"{path}.{key}", "is required", Reason.MISSING_FIELD)
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        fail(f"{path}.{key}", f"must be an integer, not {value!r}")
    if not lo <= value <= hi:
        fail(f"{path}.{key}", f"{value} is outside {lo}-{hi}")
    return value


def get_int_or_str(obj: Mapping[str, Any], key: str, path: str) -> int | str | None:
    """An IntOrString port: a number 1-65535, or a name (a numeric string counts as a number)."""
    value = obj.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, str):
        if value.isdigit():
            return get_int({key: int(value)}, key, path)
        return value
    return get_int(obj, key, path)


def get_bool(obj: Mapping[str, Any], key: str, path: str, default: bool) -> bool:
    value = obj.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        fail(f"{path}.{key}", f"must be true or false, not {value!r}")
    return value


def one_of(value: str | None, allowed: tuple[str, ...], field: str, default: str) -> str:
    if value is None:
        return default
    if value not in allowed:
        fail(field, f"{value!r} is not one of {', '.join(allowed)}")
    return value


def str_map(obj: Mapping[str, Any], key: str, path: str) -> dict[str, str]:
    raw = get_map(obj, key, path)
    out: dict[str, str] = {}
    for k, v in raw.items():
        if not isinstance(k, str) or not isinstance(v, (str, int, float, bool)):
            fail(f"{path}.{key}", f"entry {k!r} must map a string to a string")
        out[k] = v if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else str(v)
    return out


def items(
    obj: Mapping[str, Any], key: str, path: str, parse: Callable[[Any, str], T]
) -> tuple[T, ...]:
    """Parse every element of a list field, each with its own indexed path."""
    out = []
    for i, raw in enumerate(get_list(obj, key, path)):
        item_path = f"{path}.{key}[{i}]"
        if not isinstance(raw, Mapping):
            fail(item_path, "must be an object")
        out.append(parse(raw, item_path))
    return tuple(out)


# --- metadata and selectors ------------------------------------------------


def parse_meta(doc: Mapping[str, Any], kind: str, *, namespaced: bool) -> m.Meta:
    meta = get_map(doc, "metadata", "")
    name = get_str(meta, "name", "metadata", required=True)
    assert name is not None
    namespace = (get_str(meta, "namespace", "metadata") or "default") if namespaced else ""
    return m.Meta(
        kind=kind,
        namespace=namespace,
        name=name,
        labels=str_map(meta, "labels", "metadata"),
        annotations=str_map(meta, "annotations", "metadata"),
        uid=get_str(meta, "uid", "metadata") or "",
        resource_version=str(meta.get("resourceVersion") or ""),
        creation_timestamp=str(meta.get("creationTimestamp") or ""),
    )


def parse_requirement(raw: Mapping[str, Any], path: str) -> m.Requirement:
    key = get_str(raw, "key", path, required=True)
    op = one_of(get_str(raw, "operator", path, required=True), _OPERATORS, f"{path}.operator", "")
    values = tuple(str(v) for v in get_list(raw, "values", path))
    if op in ("In", "NotIn") and not values:
        fail(f"{path}.values", f"must not be empty for operator {op}")
    if op in ("Exists", "DoesNotExist") and values:
        fail(f"{path}.values", f"must be empty for operator {op}")
    assert key is not None
    return m.Requirement(key=key, operator=op, values=values)  # type: ignore[arg-type]


def parse_selector(raw: Mapping[str, Any], path: str) -> m.LabelSelector:
    return m.LabelSelector(
        match_labels=tuple(sorted(str_map(raw, "matchLabels", path).items())),
        match_expressions=items(raw, "matchExpressions", path, parse_requirement),
    )


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


def parse_service(doc: Mapping[str, Any]) -> m.Service:
    meta = parse_meta(doc, "Service", namespaced=True)
    spec = get_map(doc, "spec", "")
    status_lb = get_map(get_map(doc, "status", ""), "loadBalancer", "status")
    svc_type = one_of(get_str(spec, "type", "spec"), _SERVICE_TYPES, "spec.type", "ClusterIP")
    ports = items(spec, "ports", "spec", parse_service_port)
    if len(ports) > 1 and any(not p.name for p in ports):
        fail("spec.ports", "every port must be named when a Service has more than one")
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
        external_ips=tuple(str(x) for x in get_list(spec, "externalIPs", "spec")),
        load_balancer_ip=get_str(spec, "loadBalancerIP", "spec"),
        load_balancer_source_ranges=tuple(
            str(x) for x in get_list(spec, "loadBalancerSourceRanges", "spec")
        ),
        load_balancer_ingress=tuple(
            str(i["ip"]) for i in get_list(status_lb, "ingress", "status.loadBalancer")
            if isinstance(i, Mapping) and i.get("ip")
        ),
        load_balancer_hostnames=tuple(
            str(i["hostname"]) for i in get_list(status_lb, "ingress", "status.loadBalancer")
            if isinstance(i, Mapping) and i.get("hostname")
        ),
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
    )


def parse_slice_endpoint(raw: Mapping[str, Any], path: str) -> m.SliceEndpoint:
    addresses = tuple(str(a) for a in get_list(raw, "addresses", path))
    if not addresses:
        fail(f"{path}.addresses", "must name at least one address", Reason.MISSING_FIELD)
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
            kind=str(ref.get("kind") or "Pod"),
            namespace=str(ref.get("namespace") or ""),
            name=str(ref["name"]),
        ) if ref.get("name") else None,
        hints_for_zones=tuple(
            str(z.get("name")) for z in get_list(hints, "forZones", f"{path}.hints")
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


def parse_endpoint_slice(doc: Mapping[str, Any]) -> m.EndpointSlice:
    meta = parse_meta(doc, "EndpointSlice", namespaced=True)
    service = meta.labels.get(SERVICE_NAME_LABEL)
    if not service:
        fail(f"metadata.labels[{SERVICE_NAME_LABEL}]", "is required", Reason.MISSING_FIELD)
    return m.EndpointSlice(
        meta=meta,
        service_name=service,
        address_type=one_of(  # type: ignore[arg-type]
            get_str(doc, "addressType", ""), ("IPv4", "IPv6", "FQDN"), "addressType", "IPv4"
        ),
        ports=items(doc, "ports", "", parse_endpoint_port),
        endpoints=items(doc, "endpoints", "", parse_slice_endpoint),
    )


def parse_backend(raw: Mapping[str, Any], path: str) -> m.IngressBackend:
    if raw.get("resource") is not None:
        fail(f"{path}.resource", "resource backends are not supported", Reason.UNSUPPORTED)
    svc = get_map(raw, "service", path)
    spath = f"{path}.service"
    name = get_str(svc, "name", spath, required=True)
    port = get_map(svc, "port", spath)
    number = get_int(port, "number", f"{spath}.port")
    port_name = get_str(port, "name", f"{spath}.port")
    if (number is None) == (port_name is None):
        fail(f"{spath}.port", "must set exactly one of number or name", Reason.MISSING_FIELD)
    assert name is not None
    return m.IngressBackend(service=name, port_number=number, port_name=port_name)


def parse_path(raw: Mapping[str, Any], path: str) -> m.IngressPath:
    path_type = get_str(raw, "pathType", path, required=True)
    one_of(path_type, _PATH_TYPES, f"{path}.pathType", "")
    value = get_str(raw, "path", path) or "/"
    if not value.startswith("/"):
        fail(f"{path}.path", f"{value!r} must start with '/'")
    backend = get_map(raw, "backend", path)
    if not backend:
        fail(f"{path}.backend", "is required", Reason.MISSING_FIELD)
    return m.IngressPath(
        path=value, path_type=path_type, backend=parse_backend(backend, f"{path}.backend")  # type: ignore[arg-type]
    )


def parse_host(value: str | None, field: str) -> str:
    """Validate an Ingress host: a DNS name, or ``*.`` followed by one; no port, no IP."""
    if value is None:
        return ""
    host = value.lower()
    labels = host[2:].split(".") if host.startswith("*.") else host.split(".")
    if not all(lbl and len(lbl) <= 63 and all(c.isalnum() or c == "-" for c in lbl)
               for lbl in labels) or (host.startswith("*.") and "*" in host[2:]):
        fail(field, f"{value!r} is not a valid host name (a DNS name, optionally '*.' first)")
    return host


def parse_rule(raw: Mapping[str, Any], path: str) -> m.IngressRule:
    http = get_map(raw, "http", path)
    return m.IngressRule(
        host=parse_host(get_str(raw, "host", path), f"{path}.host"),
        paths=items(http, "paths", f"{path}.http", parse_path),
    )


def parse_tls(raw: Mapping[str, Any], path: str) -> m.IngressTLS:
    return m.IngressTLS(
        hosts=tuple(str(h).lower() for h in get_list(raw, "hosts", path)),
        secret_name=get_str(raw, "secretName", path),
    )


def parse_ingress(doc: Mapping[str, Any]) -> m.Ingress:
    meta = parse_meta(doc, "Ingress", namespaced=True)
    spec = get_map(doc, "spec", "")
    default = get_map(spec, "defaultBackend", "spec")
    lb = get_map(get_map(doc, "status", ""), "loadBalancer", "status")
    return m.Ingress(
        meta=meta,
        ingress_class_name=get_str(spec, "ingressClassName", "spec"),
        default_backend=parse_backend(default, "spec.defaultBackend") if default else None,
        rules=items(spec, "rules", "spec", parse_rule),
        tls=items(spec, "tls", "spec", parse_tls),
        load_balancer_ingress=tuple(
            str(i.get("ip") or i.get("hostname"))
            for i in get_list(lb, "ingress", "status.loadBalancer")
            if isinstance(i, Mapping) and (i.get("ip") or i.get("hostname"))
        ),
    )


def parse_ingress_class(doc: Mapping[str, Any]) -> m.IngressClass:
    meta = parse_meta(doc, "IngressClass", namespaced=False)
    controller = get_str(get_map(doc, "spec", ""), "controller", "spec", required=True)
    assert controller is not None
    return m.IngressClass(
        meta=meta,
        controller=controller,
        is_default=meta.annotations.get(DEFAULT_CLASS_ANNOTATION, "").lower() == "true",
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
            except_=tuple(str(x) for x in get_list(block, "except", f"{path}.ipBlock")),
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


def parse_network_policy(doc: Mapping[str, Any]) -> m.NetworkPolicy:
    meta = parse_meta(doc, "NetworkPolicy", namespaced=True)
    spec = get_map(doc, "spec", "")
    if spec.get("podSelector") is None:
        fail("spec.podSelector", "is required", Reason.MISSING_FIELD)
    types = tuple(str(t) for t in get_list(spec, "policyTypes", "spec"))
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


def parse_secret(doc: Mapping[str, Any]) -> m.Secret:
    meta = parse_meta(doc, "Secret", namespaced=True)
    data = {k: _decode(v, f"data[{k}]") for k, v in get_map(doc, "data", "").items()}
    data.update({k: str(v).encode() for k, v in get_map(doc, "stringData", "").items()})
    return m.Secret(meta=meta, type=get_str(doc, "type", "") or "Opaque", data=data)


def parse_namespace(doc: Mapping[str, Any]) -> m.Namespace:
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
            if isinstance(p, Mapping) and p.get("name") and isinstance(p.get("containerPort"), int):
                proto = p.get("protocol") if p.get("protocol") in _PROTOCOLS else "TCP"
                out.append(m.ContainerPort(name=str(p["name"]), port=p["containerPort"],
                                           protocol=cast(m.Protocol, proto)))
    return tuple(out)


def parse_pod(doc: Mapping[str, Any]) -> m.Pod:
    meta = parse_meta(doc, "Pod", namespaced=True)
    # Pods are kept only for NetworkPolicy (labels, addresses, named ports); their
    # annotations can be large and are never read, so they are not kept.
    meta = m.Meta(kind=meta.kind, namespace=meta.namespace, name=meta.name, labels=meta.labels,
                  uid=meta.uid, resource_version=meta.resource_version,
                  creation_timestamp=meta.creation_timestamp)
    spec = get_map(doc, "spec", "")
    status = get_map(doc, "status", "")
    ips = tuple(str(p["ip"]) for p in get_list(status, "podIPs", "status")
                if isinstance(p, Mapping) and p.get("ip"))
    if not ips and get_str(status, "podIP", "status"):
        ips = (str(status["podIP"]),)
    return m.Pod(
        meta=meta,
        node_name=get_str(spec, "nodeName", "spec"),
        pod_ips=ips,
        phase=get_str(status, "phase", "status") or "Running",
        container_ports=parse_container_ports(spec),
    )


PARSERS: Mapping[tuple[str, str], Callable[[Mapping[str, Any]], m.Model]] = {
    ("v1", "Service"): parse_service,
    ("v1", "Secret"): parse_secret,
    ("v1", "Namespace"): parse_namespace,
    ("v1", "Pod"): parse_pod,
    ("discovery.k8s.io/v1", "EndpointSlice"): parse_endpoint_slice,
    ("networking.k8s.io/v1", "Ingress"): parse_ingress,
    ("networking.k8s.io/v1", "IngressClass"): parse_ingress_class,
    ("networking.k8s.io/v1", "NetworkPolicy"): parse_network_policy,
}


def ref_of(doc: Mapping[str, Any], fallback: str = "") -> ObjectRef:
    """Best-effort reference to a raw object, for diagnostics about it."""
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), Mapping) else {}
    assert isinstance(meta, Mapping)
    kind = doc.get("kind") if isinstance(doc.get("kind"), str) else "Object"
    name = meta.get("name") if isinstance(meta.get("name"), str) else fallback or "<unnamed>"
    namespace = meta.get("namespace") if isinstance(meta.get("namespace"), str) else ""
    if kind in ("Service", "Secret", "Pod", "EndpointSlice", "Ingress", "NetworkPolicy"):
        namespace = namespace or "default"
    return ObjectRef(str(kind), str(namespace), str(name))


def parse_object(doc: Any, origin: str = "") -> tuple[m.Model | None, Diagnostic | None]:
    """Parse one Kubernetes object. Returns (model, None), (None, problem) or (None, None)."""
    if not isinstance(doc, Mapping):
        ref = ObjectRef("File", "", origin or "<input>")
        return None, Diagnostic(ref, "document", Reason.INVALID_VALUE,
                                f"is a {type(doc).__name__}, not an object")
    parser = PARSERS.get((str(doc.get("apiVersion")), str(doc.get("kind"))))
    if parser is None:
        log.debug("ignoring %s %s from %s", doc.get("apiVersion"), doc.get("kind"), origin)
        return None, None
    try:
        return parser(doc), None
    except Invalid as e:
        return None, Diagnostic(ref_of(doc, origin), e.field.lstrip("."), e.reason, e.message)
