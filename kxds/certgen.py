"""``kxds certgen``: the certificates of the xDS channel, without hand work.

Makes a CA, kxds's serving certificate (DNS names of the kxds Service) and
one client certificate per edge gateway group (``spiffe://kxds/edge/<group>``),
as Contour's certgen job does, and writes them

* as files (``--out-dir``): ``ca.crt``, ``ca.key``, ``kxds.crt``, ``kxds.key``,
  ``edge-<group>.crt``, ``edge-<group>.key``;
* as Kubernetes Secret manifests (``--secrets-dir``, or ``-`` for stdout);
* or as Secrets created through the API (``--apply``; with ``--kubeconfig`` or
  ``--in-cluster``). Existing Secrets are kept unless ``--overwrite``: a Job
  that runs again does not rotate what proxies trust.

The Secrets (in ``--namespace``): ``kxds-ca`` (the CA and its key: kxds
signs node certificates with it), ``kxds-xds-ca`` (the CA certificate only,
for per-node proxies to check kxds with), ``kxds-xds-tls``
(kxds's certificate, key and ``ca.crt``), ``kxds-edge-<group>`` (an edge
group's client certificate, key and ``ca.crt``). Per-node proxies get no
certificate here: they obtain short-lived ones with ``kxds node-cert``.
"""

from __future__ import annotations

import argparse
import base64
import logging
import sys
from pathlib import Path
from typing import Any

import yaml

from kxds.certs.make import KeyPair, make_ca, make_client, make_leaf
from kxds.certs.spiffe import ProxyId, proxy_id

log = logging.getLogger("kxds.certgen")

Secret = dict[str, Any]


def add_certgen_flags(p: argparse.ArgumentParser) -> None:
    """The flags of ``kxds certgen``."""
    out = p.add_argument_group("output (at least one)")
    out.add_argument("--out-dir", type=Path, metavar="DIR", help="write PEM files here")
    out.add_argument("--secrets-dir", metavar="DIR|-",
                     help="write Secret manifests here (- for stdout)")
    out.add_argument("--apply", action="store_true",
                     help="create the Secrets through the Kubernetes API")
    p.add_argument("--kubeconfig", metavar="FILE")
    p.add_argument("--in-cluster", action="store_true")
    p.add_argument("--overwrite", action="store_true",
                   help="with --apply: replace existing Secrets (default: keep them all)")
    p.add_argument("--namespace", default="kxds", help="namespace of kxds and the Secrets")
    p.add_argument("--service", default="kxds", help="name of kxds's Service")
    p.add_argument("--dns-name", action="append", default=[], metavar="NAME",
                   help="extra DNS name or IP for kxds's certificate (repeatable)")
    p.add_argument("--edge-group", action="append", default=None, metavar="GROUP",
                   help="an edge gateway group to make a client certificate for "
                        "(repeatable; default: default)")
    p.add_argument("--trust-domain", default="kxds")
    p.add_argument("--ca-days", type=int, default=3650)
    p.add_argument("--cert-days", type=int, default=365)


def service_names(service: str, namespace: str) -> list[str]:
    """The DNS names a client may use for a Service."""
    return [service, f"{service}.{namespace}", f"{service}.{namespace}.svc",
            f"{service}.{namespace}.svc.cluster.local"]


def tls_secret(namespace: str, name: str, pair: KeyPair, ca: bytes | None) -> Secret:
    """A ``kubernetes.io/tls`` Secret (with ``ca.crt`` when given)."""
    data = {"tls.crt": pair.cert_pem, "tls.key": pair.key_pem}
    if ca is not None:
        data["ca.crt"] = ca
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {"app.kubernetes.io/part-of": "kxds"}},
            "data": {k: base64.b64encode(v).decode() for k, v in data.items()}}


def generate(args: argparse.Namespace) -> tuple[KeyPair, KeyPair, dict[str, KeyPair]]:
    """The CA, kxds's serving pair, and each edge group's client pair."""
    groups: list[ProxyId] = [proxy_id("edge", g) for g in (args.edge_group or ["default"])]
    ca = make_ca(f"kxds xDS CA ({args.namespace})", days=args.ca_days)
    server = make_leaf(ca, [*service_names(args.service, args.namespace), *args.dns_name],
                       days=args.cert_days)
    edges = {g.name: make_client(ca, g.uri(args.trust_domain), hours=24 * args.cert_days)
             for g in groups}
    return ca, server, edges


def secrets(args: argparse.Namespace, ca: KeyPair, server: KeyPair,
            edges: dict[str, KeyPair]) -> list[Secret]:
    """The Secrets certgen writes, in the order they are created."""
    ns = args.namespace
    ca_only = {**tls_secret(ns, "kxds-xds-ca", ca, None), "type": "Opaque",
               "data": {"ca.crt": base64.b64encode(ca.cert_pem).decode()}}
    return [tls_secret(ns, "kxds-ca", ca, None), ca_only,
            tls_secret(ns, "kxds-xds-tls", server, ca.cert_pem),
            *(tls_secret(ns, f"kxds-edge-{g}", pair, ca.cert_pem)
              for g, pair in sorted(edges.items()))]


def write_files(out: Path, ca: KeyPair, server: KeyPair, edges: dict[str, KeyPair]) -> None:
    """PEM files; keys readable by the owner only."""
    out.mkdir(parents=True, exist_ok=True)
    files = {"ca": ca, "kxds": server, **{f"edge-{g}": p for g, p in edges.items()}}
    for stem, pair in files.items():
        (out / f"{stem}.crt").write_bytes(pair.cert_pem)
        key = out / f"{stem}.key"
        key.touch(mode=0o600)
        key.chmod(0o600)
        key.write_bytes(pair.key_pem)


def write_manifests(target: str, docs: list[Secret]) -> None:
    """Secret manifests into a directory (one file each), or ``-``: stdout."""
    if target == "-":
        sys.stdout.write(yaml.safe_dump_all(docs, sort_keys=False))
        return
    out = Path(target)
    out.mkdir(parents=True, exist_ok=True)
    for doc in docs:
        path = out / f"{doc['metadata']['name']}.yaml"
        path.touch(mode=0o600)
        path.write_text(yaml.safe_dump(doc, sort_keys=False))


def apply_secrets(client: Any, docs: list[Secret], overwrite: bool) -> int:
    """Create the Secrets (replace them with ``overwrite``); returns how many were written.

    Without ``overwrite`` nothing is written when any of them exists: a CA kept
    beside a new serving certificate would not match it.
    """
    from kxds.kube.client import status_code

    paths = [f"/api/v1/namespaces/{d['metadata']['namespace']}/secrets" for d in docs]
    existing = []
    for path, doc in zip(paths, docs, strict=True):
        try:
            existing.append(client.request("GET", f"{path}/{doc['metadata']['name']}"))
        except Exception as e:
            if status_code(e) != 404:
                raise
            existing.append(None)
    if any(existing) and not overwrite:
        log.warning("event=certgen_kept message=%r", "Secrets exist; none written "
                    "(--overwrite replaces them)")
        return 0
    for path, doc, old in zip(paths, docs, existing, strict=True):
        if old is None:
            client.request("POST", path, body=doc)
        else:
            body = {**doc, "metadata": {**doc["metadata"],
                                        "resourceVersion": old["metadata"]["resourceVersion"]}}
            client.request("PUT", f"{path}/{doc['metadata']['name']}", body=body)
    return len(docs)


def run_certgen(args: argparse.Namespace) -> int:
    """The ``kxds certgen`` command."""
    if not (args.out_dir or args.secrets_dir or args.apply):
        raise SystemExit("kxds certgen: give --out-dir, --secrets-dir or --apply")
    if args.apply and not (args.kubeconfig or args.in_cluster):
        raise SystemExit("kxds certgen: --apply needs --kubeconfig or --in-cluster")
    try:
        ca, server, edges = generate(args)
    except ValueError as e:
        raise SystemExit(f"kxds certgen: {e}") from None
    docs = secrets(args, ca, server, edges)
    if args.out_dir:
        write_files(args.out_dir, ca, server, edges)
    if args.secrets_dir:
        write_manifests(args.secrets_dir, docs)
    if args.apply:
        from kxds.kube.client import KubeClient

        client = KubeClient.from_config(args.kubeconfig, in_cluster=args.in_cluster)
        written = apply_secrets(client, docs, args.overwrite)
        print(f"kxds certgen: {written} Secrets written in namespace {args.namespace}",
              file=sys.stderr)
    return 0
