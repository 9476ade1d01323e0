"""The ``kxds`` command: serve | translate | validate | bootstrap | sandbox.

- ``kxds serve --manifests DIR``: watch a manifest directory (or the Kubernetes
  API), translate, and serve Envoy over ADS; admin/metrics on ``--admin-address``.
- ``kxds translate -f PATH``: the Envoy resources for PATH, as YAML, like a config dump.
- ``kxds validate -f PATH``: every problem in PATH, one per line; exit 1 when any.
- ``kxds bootstrap --role edge|node ...``: an Envoy bootstrap that connects to kxds.
- ``kxds sandbox``: kxds, a real Envoy and echo backends on loopback.

Every flag that shapes translation is turned into a :class:`TranslateConfig` in
one place, :func:`config_from_args`, shared by serve, translate and validate.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from kxds.envoy.bootstrap import BootstrapOptions, XdsTls, bootstrap_yaml, parse_address
from kxds.flags import (
    add_input_limit_flags,
    add_lb_pool_flag,
    add_source_flags,
    add_translate_flags,
    add_xds_limit_flags,
    add_xds_security_flags,
    address,
    config_from_args,
    is_ip,
    mark_bit,
    millis,
)
from kxds.kube.limits import limits_from_flags
from kxds.kube.models import ClusterState
from kxds.translators.translation import Translation

__all__ = ["add_translate_flags", "add_xds_limit_flags", "config_from_args", "main"]

log = logging.getLogger("kxds")

if TYPE_CHECKING:
    _Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]


# --- the command line ----------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kxds", description="An Envoy xDS control plane "
                                "for Kubernetes traffic entering a cluster.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_serve(sub)
    _add_translate_and_validate(sub)
    _add_bootstrap(sub)
    _add_node_routing(sub)
    _add_node_cert(sub)
    _add_certgen(sub)
    _add_sandbox(sub)
    return p


def _add_serve(sub: _Subparsers) -> None:
    s = sub.add_parser("serve", help="watch the source and serve Envoy over xDS")
    add_source_flags(s)
    s.add_argument("--xds-address", type=address, default="127.0.0.1:18000",
                   help="gRPC xDS address (default: %(default)s)")
    s.add_argument("--admin-address", type=address, default="127.0.0.1:19100",
                   help="metrics, health and debug endpoints (default: %(default)s)")
    s.add_argument("--holdoff-ms", type=millis, default=50.0,
                   help="rebuild this long after the last change (default: %(default)s)")
    s.add_argument("--max-holdoff-ms", type=millis, default=250.0,
                   help="...but at most this long after the first (default: %(default)s)")
    add_translate_flags(s)
    add_input_limit_flags(s, serving=True)
    add_lb_pool_flag(s)
    add_xds_security_flags(s)
    add_xds_limit_flags(s)
    _log_flag(s)


def _add_translate_and_validate(sub: _Subparsers) -> None:
    for name, what in (("translate", "print the Envoy resources for PATH as YAML"),
                       ("validate", "report every problem in PATH; exit 1 when any")):
        t = sub.add_parser(name, help=what)
        t.add_argument("-f", "--filename", type=Path, required=True, metavar="PATH",
                       help="a manifest file or a directory of them")
        t.add_argument("--node", metavar="NAME",
                       help="the view of the per-node proxy on node NAME instead of the edge")
        t.add_argument("--node-zone", metavar="ZONE",
                       help="with --node: the node's topology zone (same-zone endpoints first)")
        t.add_argument("--node-transparent", action="store_true",
                       help="with --node: the node is set up for transparent source addresses")
        add_translate_flags(t)
        add_input_limit_flags(t, serving=False)


def _add_bootstrap(sub: _Subparsers) -> None:
    b = sub.add_parser("bootstrap", help="print an Envoy bootstrap that connects to kxds")
    b.add_argument("--role", choices=("edge", "node"), default="edge")
    b.add_argument("--node-id", required=True, help="Envoy's node.id (unique per proxy)")
    b.add_argument("--node-name", help="Kubernetes node name (required for --role node)")
    b.add_argument("--zone", help="topology zone of the proxy")
    b.add_argument("--bind-address", metavar="IP",
                   help="--role node: the address this proxy binds nodePorts to "
                        "(node metadata bind_address; default: kxds's --node-bind-address)")
    b.add_argument("--transparent", action="store_true",
                   help="--role node: the node is set up for transparent source addresses "
                        "(`kxds node-routing`; Envoy needs CAP_NET_ADMIN), so backends may "
                        "see clients' own addresses (node metadata source_ip_mode)")
    b.add_argument("--cluster", metavar="GROUP", help="gateway group (node.cluster)")
    b.add_argument("--xds-address", type=address, required=True, help="kxds's HOST:PORT")
    b.add_argument("--admin-port", type=int, default=9901)
    b.add_argument("--admin-host", default="127.0.0.1")
    b.add_argument("--delta", action="store_true", help="incremental xDS (DELTA_GRPC)")
    b.add_argument("--initial-fetch-timeout", default="0s",
                   help="how long Envoy waits for kxds before starting anyway "
                        "(default %(default)s: wait)")
    b.add_argument("-o", "--output", type=Path, help="write to this file instead of stdout")
    _add_bootstrap_tls(b)


def _add_bootstrap_tls(b: argparse.ArgumentParser) -> None:
    m = b.add_argument_group("mTLS to kxds (paths as the proxy sees them)")
    m.add_argument("--tls-cert", metavar="FILE",
                   help="client certificate chain naming this proxy (spiffe://kxds/...)")
    m.add_argument("--tls-key", metavar="FILE", help="its private key")
    m.add_argument("--tls-sds", metavar="FILE",
                   help="instead of --tls-cert and --tls-key: the SDS file naming them, "
                        "as `kxds node-cert` writes it (sds.yaml in its --out-dir); Envoy "
                        "then reloads the certificate when it is renewed")
    m.add_argument("--tls-ca", metavar="FILE", help="CA that signed kxds's certificate")
    m.add_argument("--tls-server-name", metavar="NAME",
                   help="SNI and the name kxds's certificate must carry "
                        "(default: the --xds-address host)")


def _add_node_routing(sub: _Subparsers) -> None:
    r = sub.add_parser("node-routing", help="print, apply or remove the node set-up for "
                       "transparent source addresses (policy routing of replies to the "
                       "per-node Envoy; needs CAP_NET_ADMIN)")
    r.add_argument("action", choices=("print", "apply", "remove"))
    r.add_argument("--mark", type=mark_bit, default=None, metavar="BIT",
                   help="the packet mark bit (default: 0x2000)")
    r.add_argument("--table", type=int, default=None, help="the routing table (default: 2000)")
    r.add_argument("--priority", type=int, default=None,
                   help="the routing rule's priority (default: 100)")
    r.add_argument("--ipv4-only", action="store_true", help="leave IPv6 alone")


def _add_node_cert(sub: _Subparsers) -> None:
    n = sub.add_parser("node-cert", help="obtain and renew this node's xDS client "
                       "certificate from kxds, proving the node with a ServiceAccount token")
    from kxds.nodecert.client import add_node_cert_flags

    add_node_cert_flags(n)
    _log_flag(n)


def _add_certgen(sub: _Subparsers) -> None:
    from kxds.certgen import add_certgen_flags

    g = sub.add_parser("certgen", help="write the xDS CA, kxds's serving certificate and "
                       "edge proxies' client certificates (files or Kubernetes Secrets)")
    add_certgen_flags(g)


def _add_sandbox(sub: _Subparsers) -> None:
    from kxds.sandbox.run import add_sandbox_flags

    x = sub.add_parser("sandbox", help="kxds + a real Envoy + echo backends on loopback")
    add_sandbox_flags(x)
    _log_flag(x, default="warning")


def _log_flag(p: argparse.ArgumentParser, default: str = "info") -> None:
    p.add_argument("--log-level", default=default,
                   choices=("debug", "info", "warning", "error"))


# --- commands ----------------------------------------------------------------


def _load(args: argparse.Namespace) -> ClusterState:
    from kxds.kube.loader import load_path

    if not args.filename.exists():
        raise SystemExit(f"kxds {args.command}: {args.filename}: no such file or directory")
    return load_path(args.filename, limits_from_flags(args),
                     node_port_range=args.node_port_range)


def _translation(args: argparse.Namespace, state: ClusterState) -> Translation:
    from kxds.translators.config import NodeInfo
    from kxds.translators.edge import translate
    from kxds.translators.node import translate_node

    # Translators read no clock: certificates are checked against the time of this run.
    config = dataclasses.replace(config_from_args(args), tls_now=dt.datetime.now(dt.UTC))
    if args.node:
        return translate_node(state, config, NodeInfo(name=args.node, zone=args.node_zone,
                                                      transparent=args.node_transparent))
    return translate(state, config)


def cmd_translate(args: argparse.Namespace) -> int:
    """Print the Envoy resources as YAML; diagnostics go to stderr."""
    from kxds.envoy.build import build_resources
    from kxds.envoy.dump import resources_to_yaml

    translation = _translation(args, _load(args))
    for d in translation.diagnostics:
        print(d, file=sys.stderr)
    sys.stdout.write(resources_to_yaml(build_resources(translation.ir)))
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    """One line per problem (``Kind ns/name: field: reason: message``); exit 1 when any."""
    from kxds.kube.ingress_class import problems_of_ours, skipped_summary
    from kxds.translators.gateway_status import status_lines

    state = _load(args)
    # An Ingress of another class that cannot be read is that controller's problem.
    problems, _ = problems_of_ours(state, args.ingress_class)
    translation = _translation(args, state)
    found = sorted(set(translation.diagnostics) | set(problems))
    for d in found:
        print(d)
    for line in status_lines(translation.gateway_status):
        print(f"Status: {line}")
    for line in skipped_summary(state, args.ingress_class):
        print(f"Skipped: {line}")
    if found:
        return 1
    count = sum(1 for _ in state.objects())
    print(f"OK: {count} objects in {args.filename}, no problems")
    return 0


def _bootstrap_tls(args: argparse.Namespace) -> XdsTls | None:
    """The mTLS files of ``kxds bootstrap``: all three, or none."""
    files = (args.tls_cert, args.tls_key, args.tls_ca, args.tls_sds)
    if not any(files) and not args.tls_server_name:
        return None
    if args.tls_sds and (args.tls_cert or args.tls_key):
        raise SystemExit("kxds bootstrap: --tls-sds names the certificate and key: "
                         "give it instead of --tls-cert and --tls-key")
    if not args.tls_ca or not (args.tls_sds or (args.tls_cert and args.tls_key)):
        raise SystemExit("kxds bootstrap: --tls-ca goes with --tls-cert and --tls-key, "
                         "or with --tls-sds")
    return XdsTls(cert=args.tls_cert or "", key=args.tls_key or "", sds=args.tls_sds or "",
                  ca=args.tls_ca, server_name=args.tls_server_name)


def cmd_bootstrap(args: argparse.Namespace) -> int:
    """Print (or write) an Envoy bootstrap."""
    host, port = parse_address(args.xds_address)
    if args.role == "node" and not args.node_name:
        raise SystemExit("kxds bootstrap: --role node needs --node-name")
    if args.bind_address is not None and (args.role != "node" or not is_ip(args.bind_address)):
        raise SystemExit("kxds bootstrap: --bind-address needs --role node and an IP address")
    if args.transparent and args.role != "node":
        raise SystemExit("kxds bootstrap: --transparent needs --role node")
    text = bootstrap_yaml(BootstrapOptions(
        role=args.role, node_id=args.node_id, node_name=args.node_name, zone=args.zone,
        group=args.cluster, xds_host=host, xds_port=port, admin_host=args.admin_host,
        admin_port=args.admin_port, delta=args.delta, tls=_bootstrap_tls(args),
        initial_fetch_timeout=args.initial_fetch_timeout, bind_address=args.bind_address,
        transparent=args.transparent))
    if args.output:
        args.output.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def cmd_node_routing(args: argparse.Namespace) -> int:
    """Print, apply or remove the node set-up for transparent source addresses."""
    from kxds import noderouting

    given = {k: getattr(args, k) for k in ("mark", "table", "priority")
             if getattr(args, k) is not None}
    routing = noderouting.Routing(**given, ipv6=not args.ipv4_only)
    if args.action == "print":
        sys.stdout.write(noderouting.script(routing))
        return 0
    try:
        (noderouting.apply if args.action == "apply" else noderouting.remove)(routing)
    except (noderouting.RoutingError, OSError) as e:
        print(f"kxds node-routing: {e}", file=sys.stderr)
        return 1
    return 0


def cmd_node_cert(args: argparse.Namespace) -> int:
    """Obtain (and, unless ``--once``, keep renewing) the node's certificate."""
    from kxds.nodecert.client import ClientOptions, run

    return run(ClientOptions(url=args.url, ca_file=args.ca, token_file=args.token_file,
                             node=args.node_name, out_dir=args.out_dir), once=args.once)


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # Libraries' debug chatter (a line per gRPC call) would drown kxds's own.
    for noisy in ("grpc", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, logging.getLogger().level))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``kxds`` command."""
    args = _parser().parse_args(argv)
    if args.command == "serve":
        _setup_logging(args.log_level)
        from kxds.serve import serve

        return asyncio.run(serve(args, config_from_args(args)))
    if args.command == "translate":
        _setup_logging("warning")
        return cmd_translate(args)
    if args.command == "validate":
        _setup_logging("warning")
        return cmd_validate(args)
    if args.command == "bootstrap":
        return cmd_bootstrap(args)
    if args.command == "node-routing":
        return cmd_node_routing(args)
    if args.command == "node-cert":
        _setup_logging(args.log_level)
        return cmd_node_cert(args)
    if args.command == "certgen":
        from kxds.certgen import run_certgen

        return run_certgen(args)
    from kxds.sandbox.run import run_sandbox

    _setup_logging(args.log_level)
    return run_sandbox(args)


if __name__ == "__main__":
    sys.exit(main())
