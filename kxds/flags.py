"""The ``kxds`` command's flags: the types of their values, and the groups shared by commands.

Every flag that shapes translation is turned into a :class:`TranslateConfig` in
one place, :func:`config_from_args`, shared by serve, translate and validate.
"""

from __future__ import annotations

import argparse
import ipaddress
import re
from pathlib import Path

from kxds.envoy.bootstrap import parse_address
from kxds.ir import ClientIPConfig, HttpOptions
from kxds.kube.lbpool import Pool, parse_pool
from kxds.kube.limits import Limits
from kxds.translators.config import TracingConfig, TranslateConfig
from kxds.xds.limits import DEFAULTS as XDS_DEFAULTS


def address(text: str) -> str:
    try:
        parse_address(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e
    return text


def millis(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 60_000:
        raise argparse.ArgumentTypeError(f"not a duration in milliseconds (0-60000): {text!r}")
    return value


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}")
    return int(text)


def _ports(text: str) -> tuple[int, ...]:
    """Port numbers separated by commas (none: an empty text)."""
    return tuple(sorted({_port(part.strip()) for part in text.split(",") if part.strip()}))


def _count(text: str) -> int:
    """A positive whole number (ASCII digits)."""
    if not text.isascii() or not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a positive whole number: {text!r}")
    return int(text)


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"not a fraction between 0 and 1: {text!r}")
    return value


def add_input_limit_flags(p: argparse.ArgumentParser, *, serving: bool) -> None:
    """Limits on the input (README "Limits"); the guard flags only for ``serve``."""
    defaults = Limits()
    g = p.add_argument_group("input limits")
    g.add_argument("--max-manifest-bytes", type=_count, default=defaults.max_manifest_bytes,
                   metavar="BYTES", help="skip (and report) manifest files larger than this "
                   "(default: %(default)s)")
    g.add_argument("--max-document-nodes", type=_count, default=defaults.max_document_nodes,
                   metavar="N", help="refuse YAML documents of more nodes than this, each "
                   "alias counted as a copy (default: %(default)s)")
    g.add_argument("--max-service-ports", type=_count, default=defaults.max_service_ports,
                   metavar="N", help="refuse Services with more ports (default: %(default)s)")
    if serving:
        g.add_argument("--max-delete-fraction", type=_fraction, default=0.5, metavar="F",
                       help="manifests: hold a change removing more than this share of the "
                       "objects at once (default: %(default)s)")
        g.add_argument("--allow-empty", action="store_true",
                       help="manifests: publish the directory even when it loses every "
                       "object or more than --max-delete-fraction of them")


def _cidrs(text: str) -> tuple[str, ...]:
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            out.append(str(ipaddress.ip_network(part, strict=False)))
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a CIDR: {part!r}") from None
    return tuple(out)


def _port_range(text: str) -> tuple[int, int]:
    first, _, last = text.partition("-")
    lo, hi = _port(first.strip()), _port(last.strip() or first.strip())
    if hi < lo:
        raise argparse.ArgumentTypeError(f"empty port range: {text!r}")
    return lo, hi


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _lb_pool(text: str) -> Pool:
    try:
        return parse_pool(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_lb_pool_flag(p: argparse.ArgumentParser) -> None:
    """``--lb-pool``: allocate LoadBalancer addresses (with the Kubernetes API source)."""
    p.add_argument("--lb-pool", type=_lb_pool, action="append", default=[],
                   metavar="NAME=RANGE[,RANGE][;namespaces=NS,..][;avoid-buggy-ips]",
                   help="hand LoadBalancer Services addresses from this pool and write "
                        "them to their status (repeatable; first pool first; needs the "
                        "Kubernetes API source and its leader lease)")


def mark_bit(text: str) -> int:
    """A packet mark with exactly one bit set (``0x2000`` or ``8192``)."""
    try:
        value = int(text, 0)
    except ValueError:
        value = 0
    if value <= 0 or value >= 1 << 32 or value & (value - 1):
        raise argparse.ArgumentTypeError(f"{text!r} is not a single mark bit (e.g. 0x2000)")
    return value


def _hops(text: str) -> int:
    """A trusted-hop count: 0 or more."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of hops (0 or more)")
    return value


def _namespaced_name(text: str) -> tuple[str, str]:
    """``NS/NAME`` -> ``(ns, name)``."""
    ns, sep, name = text.partition("/")
    if not sep or not ns or not name or "/" in name:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAMESPACE/NAME")
    return ns, name


def add_translate_flags(p: argparse.ArgumentParser) -> None:
    """Flags that shape translation (read by :func:`config_from_args`)."""
    g = p.add_argument_group("translation")
    _add_edge_listener_flags(g)
    _add_node_flags(g)
    _add_client_ip_flags(g)
    _add_http_flags(g)
    _add_tracing_flags(g)


def _add_edge_listener_flags(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--ingress-class", default="kxds",
                   help="serve Ingresses of this class (default: %(default)s)")
    g.add_argument("--http-port", type=_port, default=8080,
                   help="the edge HTTP listener's port (default: %(default)s)")
    g.add_argument("--https-port", type=_port, default=8443,
                   help="the edge HTTPS listener's port (default: %(default)s)")
    g.add_argument("--reserved-ports", type=_ports, default=(9901,), metavar="PORT,...",
                   help="TCP ports the edge Envoys hold for themselves (admin, health): a "
                        "Gateway listener there is PortUnavailable (default: 9901)")
    g.add_argument("--listen-address", default="0.0.0.0",
                   help="address the edge listeners bind (default: %(default)s)")
    g.add_argument("--default-certificate", type=_namespaced_name, default=None,
                   metavar="NS/NAME",
                   help="TLS Secret served to HTTPS clients without SNI or with an unknown "
                        "one (default: none; such clients are refused)")
    g.add_argument("--min-tls-version", choices=("1.0", "1.1", "1.2", "1.3"), default="1.2",
                   help="oldest TLS version the HTTPS listener accepts (default: %(default)s)")


def _add_node_flags(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--node-bind-address", default="0.0.0.0",
                   help="address per-node proxies bind nodePorts to, unless a proxy's "
                        "bootstrap names its own (default: %(default)s)")
    g.add_argument("--external-ip-cidrs", type=_cidrs, default=(), metavar="CIDR,...",
                   help="serve Service externalIPs only inside these (default: none)")
    g.add_argument("--node-port-range", type=_port_range, default=(30000, 32767),
                   metavar="FIRST-LAST", help="valid nodePorts (default: 30000-32767)")
    g.add_argument("--cluster-cidrs", type=_cidrs, default=(), metavar="CIDR,...",
                   help="pod and node CIDRs: their clients at per-node listeners follow "
                        "internalTrafficPolicy (default: none)")


def _add_client_ip_flags(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--client-ip-source", choices=("peer", "xff", "proxy-protocol"),
                   default="peer",
                   help="where edge listeners take the client address that access rules "
                        "match: the socket peer, X-Forwarded-For behind --xff-trusted-hops "
                        "proxies, or a PROXY protocol header (default: %(default)s)")
    g.add_argument("--xff-trusted-hops", type=_hops, default=0, metavar="N",
                   help="with --client-ip-source xff: how many proxies in front of the "
                        "gateway append to X-Forwarded-For; 0 never trusts the header "
                        "(default: %(default)s)")


def _add_http_flags(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--limit-status-code", type=_limit_status, default=429, metavar="CODE",
                   help="the status of a request refused by a limit-rps / limit-rpm "
                        "annotation (default: %(default)s)")
    g.add_argument("--ignore-snippets", action="store_true",
                   help="serve Ingresses that carry nginx snippet annotations, without the "
                        "snippets (reported); by default their routes answer 503, since a "
                        "snippet may be what restricted access")
    g.add_argument("--access-log-format", metavar="FORMAT", default=None,
                   help="an Envoy format string for the access log line (default: one "
                        "JSON object per request)")
    g.add_argument("--hide-response-headers", type=_hidden_headers, default=(),
                   metavar="NAME[,NAME...]",
                   help="remove these headers from every response (e.g. server,"
                        "x-envoy-upstream-service-time); a name ending in * removes every "
                        "header with that prefix (default: none)")
    g.add_argument("--no-access-log", action="store_true",
                   help="log no request (default: every request, one line on Envoy's stdout)")


def _add_tracing_flags(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--otel-collector", type=_host_port, metavar="HOST:PORT",
                   help="send request traces (OTLP/gRPC) to this OpenTelemetry collector; "
                        "routes of Ingresses with enable-opentelemetry: \"true\" are traced "
                        "(default: no tracing)")
    g.add_argument("--otel-service-name", default="kxds", metavar="NAME",
                   help="the service.name of the spans (default: %(default)s)")
    g.add_argument("--otel-sampler-ratio", type=_ratio, default=1.0, metavar="RATIO",
                   help="of the requests of traced routes, those traced, 0-1 "
                        "(default: %(default)s)")
    g.add_argument("--otel-trace-all", action="store_true",
                   help="with --otel-collector: trace every route but those of Ingresses "
                        "with enable-opentelemetry: \"false\"")


def _names(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise argparse.ArgumentTypeError("expected namespace names, comma separated")
    return names


_HEADER_NAME = re.compile(r"^[!#$%&'+\-.^_`|~0-9a-z]+\*?$")
_FRAMING = ("content-length", "transfer-encoding", "connection", "upgrade", "content-type")
"""Headers a response cannot lose and stay well formed (or usable)."""


def _hidden_headers(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(n.strip().lower() for n in text.split(",") if n.strip()))
    if not names:
        raise argparse.ArgumentTypeError("expected header names, comma separated")
    for n in names:
        if not _HEADER_NAME.match(n) or n == "*":
            raise argparse.ArgumentTypeError(f"{n!r} is not a header name (or prefix ending "
                                             "in *)")
        kept = [f for f in _FRAMING if f == n or (n.endswith("*") and f.startswith(n[:-1]))]
        if kept:
            raise argparse.ArgumentTypeError(f"{n!r} would remove {kept[0]}, which a "
                                             "response needs")
    return names


_HOST = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])$")


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not _HOST.match(host) or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def _ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"not a ratio between 0 and 1: {text!r}")
    return value


def _limit_status(text: str) -> int:
    value = int(text)
    if not 400 <= value <= 599:
        raise argparse.ArgumentTypeError(f"{value} is not a 4xx or 5xx status")
    return value


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a positive whole number: {text!r}")
    return int(text)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 86_400:
        raise argparse.ArgumentTypeError(f"not a number of seconds (0-86400]: {text!r}")
    return value


def add_xds_limit_flags(p: argparse.ArgumentParser) -> None:
    """What one xDS client may cost (README "Limits"); see :func:`kxds.serve.limits_from_args`."""
    d = XDS_DEFAULTS
    g = p.add_argument_group("xDS client limits (over one: RESOURCE_EXHAUSTED, "
                             "counted in kxds_xds_limit_hits_total)")
    for flag, default, what in (
            ("--max-subscribed-names", d.max_subscribed_names,
             "resource names one stream may subscribe to, per type"),
            ("--max-message-bytes", d.max_message_bytes, "largest xDS request read"),
            ("--max-streams-per-client", d.max_streams_per_client,
             "open streams per client address"),
            ("--max-groups-per-client", d.max_groups_per_client,
             "groups (edge/<cluster>, node/<name>) per client address"),
            ("--max-groups", d.max_groups, "groups in all")):
        g.add_argument(flag, type=_positive, default=default, metavar="N",
                       help=f"{what} (default: %(default)s)")
    g.add_argument("--nack-retry-initial", type=_seconds, default=d.nack_retry_initial,
                   metavar="SECONDS", help="first delay before a resource rejected for a "
                   "passing reason (a port in use) is sent again (default: %(default)s)")
    g.add_argument("--nack-retry-max", type=_seconds, default=d.nack_retry_max,
                   metavar="SECONDS", help="the delay doubles up to this (default: %(default)s)")
    g.add_argument("--group-grace", type=_seconds, default=60.0, metavar="SECONDS",
                   help="forget a group (node/<name>, edge/<cluster> but edge/default) "
                        "this long after its last stream ended (default: %(default)s)")


def config_from_args(args: argparse.Namespace) -> TranslateConfig:
    """The one place command-line flags become a :class:`TranslateConfig`."""
    tracing = None
    if args.otel_collector is not None:
        tracing = TracingConfig(collector_host=args.otel_collector[0],
                                collector_port=args.otel_collector[1],
                                service_name=args.otel_service_name,
                                sampler_ratio=args.otel_sampler_ratio,
                                all_routes=args.otel_trace_all)
    return TranslateConfig(
        ingress_class=args.ingress_class,
        http_port=args.http_port,
        https_port=args.https_port,
        listen_address=args.listen_address,
        default_certificate=args.default_certificate,
        min_tls_version=args.min_tls_version,
        node_bind_address=args.node_bind_address,
        external_ip_cidrs=args.external_ip_cidrs,
        node_port_range=args.node_port_range,
        cluster_cidrs=args.cluster_cidrs,
        client_ip=ClientIPConfig(source=args.client_ip_source,
                                 xff_trusted_hops=args.xff_trusted_hops),
        http=HttpOptions(access_log=not args.no_access_log,
                         access_log_format=args.access_log_format,
                         hide_response_headers=args.hide_response_headers),
        tracing=tracing,
        limit_status=args.limit_status_code,
        ignore_snippets=args.ignore_snippets,
        reserved_ports=args.reserved_ports,
    )


def add_api_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of the API source, the status writer, leader election and Events."""
    g = parser.add_argument_group("Kubernetes API")
    g.add_argument("--kubeconfig", metavar="FILE", help="watch the API of this kubeconfig")
    g.add_argument("--in-cluster", action="store_true",
                   help="watch the API with the pod's service account")
    g.add_argument("--namespace", metavar="NS", help="watch namespaced objects only in NS")
    g.add_argument("--watch-namespaces", metavar="NS[,NS...]", type=_names, default=(),
                   help="read Secrets and ConfigMaps only in these namespaces (a Role each "
                        "is then enough; "
                        "default: wherever the other kinds are read)")
    g.add_argument("--publish-service", metavar="NS/NAME",
                   help="copy this Service's load-balancer status into Ingress status")
    g.add_argument("--publish-address", metavar="IP|HOST",
                   help="write this address into Ingress status")
    g.add_argument("--leader-elect", action="store_true",
                   help="write status and Events only while holding the Lease")
    g.add_argument("--lease-name", default="kxds", metavar="NAME")
    g.add_argument("--lease-namespace", metavar="NS",
                   help="default: the pod's namespace, else 'default'")
    g.add_argument("--leader-identity", metavar="ID", help="default: host name + random suffix")
    g.add_argument("--lease-duration", type=float, default=15.0, metavar="SECONDS")
    g.add_argument("--renew-deadline", type=float, default=10.0, metavar="SECONDS")
    g.add_argument("--retry-period", type=float, default=2.0, metavar="SECONDS")
    g.add_argument("--no-events", dest="events", action="store_false",
                   help="do not record diagnostics as Kubernetes Events")


def add_xds_security_flags(p: argparse.ArgumentParser) -> None:
    """TLS on the xDS port, the metrics-only address, and node certificate issuance."""
    g = p.add_argument_group("xDS security")
    g.add_argument("--xds-tls-cert", type=Path, metavar="FILE",
                   help="kxds's serving certificate chain (PEM): serve xDS over TLS")
    g.add_argument("--xds-tls-key", type=Path, metavar="FILE", help="its private key (PEM)")
    g.add_argument("--xds-client-ca", type=Path, metavar="FILE",
                   help="CA bundle proxies' client certificates must chain to (required "
                        "with TLS: a proxy's identity is its certificate's spiffe:// URI SAN)")
    g.add_argument("--xds-trust-domain", default="kxds", metavar="NAME",
                   help="trust domain of the identities: spiffe://NAME/edge/<group>, "
                        "spiffe://NAME/node/<node> (default: %(default)s)")
    g.add_argument("--xds-insecure", action="store_true",
                   help="serve plaintext xDS on a non-loopback --xds-address (any client "
                        "that reaches it can pose as any proxy)")
    g.add_argument("--metrics-address", type=address, metavar="HOST:PORT",
                   help="also serve /metrics, /healthz and /readyz (never /debug) here; "
                        "may be public")
    from kxds.nodecert.issuer import add_issuer_flags

    add_issuer_flags(g)


def add_source_flags(p: argparse.ArgumentParser) -> None:
    """Where ``kxds serve`` reads Kubernetes objects from."""
    g = p.add_argument_group("source")
    g.add_argument("--manifests", type=Path, metavar="DIR",
                   help="watch this directory of Kubernetes YAML manifests")
    add_api_arguments(p)
