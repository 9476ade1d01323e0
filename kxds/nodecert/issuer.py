"""The node certificate endpoint on kxds: a CSR and a token in, a short-lived certificate out.

``POST /v1/node-certificate`` over HTTPS (kxds's serving certificate, the one
of the xDS port), with ``Authorization: Bearer <projected token>`` and the
JSON body ``{"node": "<node name>", "csr": "<PEM CSR>"}``. When the token
proves a pod of an allowed ServiceAccount on that node
(:func:`kxds.nodecert.review.verdict`), the answer is ``200`` and
``{"certificate": "<PEM chain>", "ca": "<PEM CA>", "not_after": "<ISO 8601>"}``:
a client certificate naming only ``spiffe://<trust domain>/node/<node>``,
valid for ``--node-cert-lifetime``. Otherwise ``401`` (token not valid for
kxds) or ``403`` (valid, but not for that node), ``400`` for a malformed
request; the body is ``{"error": "..."}`` and the refusal is logged (never
the token).

The private key never leaves the node: the client sends a CSR, and the
certificate names what kxds decided, not what the CSR asked for.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from kxds.certs.issue import CsrError, sign_csr
from kxds.certs.make import KeyPair
from kxds.certs.spiffe import ProxyId, valid_name
from kxds.nodecert.review import RequestClient, TokenRefused, review_token, verdict
from kxds.xds.httpd import Request, Response, SmallHttpServer

log = logging.getLogger("kxds.nodecert")

PATH = "/v1/node-certificate"
MAX_BODY = 64 * 1024


def add_issuer_flags(g: argparse._ArgumentGroup) -> None:
    """The flags of the node certificate endpoint (``kxds serve``)."""
    g.add_argument("--node-cert-address", metavar="HOST:PORT",
                   help="serve per-node proxies' certificate requests here (HTTPS with the "
                        "--xds-tls-cert certificate; needs --node-ca-cert/--node-ca-key and "
                        "the Kubernetes API for TokenReviews)")
    g.add_argument("--node-ca-cert", type=Path, metavar="FILE",
                   help="CA certificate that signs node certificates (the --xds-client-ca)")
    g.add_argument("--node-ca-key", type=Path, metavar="FILE", help="its private key")
    g.add_argument("--node-cert-lifetime", type=float, default=24.0, metavar="HOURS",
                   help="how long a node certificate is valid (default: %(default)s)")
    g.add_argument("--node-cert-audience", default="kxds", metavar="AUD",
                   help="audience the tokens must be for (default: %(default)s)")
    g.add_argument("--node-cert-service-account", action="append", default=None,
                   metavar="NS/NAME",
                   help="service account whose pods may obtain node certificates "
                        "(repeatable; default: kxds/kxds-node)")


@dataclass(slots=True)
class NodeCertIssuer:
    """Judges requests and signs certificates (blocking: the TokenReview is an API call)."""

    ca: KeyPair
    client: RequestClient
    audience: str = "kxds"
    accounts: tuple[str, ...] = ("kxds/kxds-node",)
    lifetime: dt.timedelta = field(default_factory=lambda: dt.timedelta(hours=24))
    trust_domain: str = "kxds"

    def issue(self, token: str, node: str, csr_pem: bytes, now: dt.datetime) -> bytes:
        """The certificate chain for ``node``; raises :class:`TokenRefused` or ``CsrError``."""
        if not valid_name(node):
            raise CsrError(f"{node!r} is not a node name")
        owner = verdict(review_token(self.client, token, self.audience), self.audience, node,
                        self.accounts)
        uri = ProxyId("node", node).uri(self.trust_domain)
        chain = sign_csr(self.ca, csr_pem, uri, self.lifetime, now)
        log.info("event=node_cert_issued node=%s pod=%s service_account=%s hours=%.1f",
                 node, owner.pod, owner.service_account, self.lifetime.total_seconds() / 3600)
        return chain


def _json(status: int, doc: dict[str, str]) -> tuple[int, bytes]:
    return status, json.dumps(doc).encode()


class IssuerServer:
    """The HTTPS shell around :class:`NodeCertIssuer` (one request per connection)."""

    def __init__(self, issuer: NodeCertIssuer, context: ssl.SSLContext) -> None:
        self.issuer = issuer
        self.context = context
        self._http = SmallHttpServer(
            "node_cert", self._handle, context=context, max_body=MAX_BODY, deadline=30.0,
            bad_request=(400, "application/json", _json(400, {"error": "bad request"})[1]),
            too_large=(413, "application/json", _json(413, {"error": "request too large"})[1]))

    async def start(self, address: str) -> int:
        """Listen on ``host:port`` (port 0 picks one); returns the bound port."""
        return await self._http.start(address)

    async def stop(self) -> None:
        """Stop listening."""
        await self._http.stop()

    async def _handle(self, request: Request) -> Response:
        status, body = await self.answer(request.method, request.target, request.headers,
                                         request.body)
        return status, "application/json", body

    async def answer(self, method: str, target: str, headers: dict[str, str],
                     body: bytes) -> tuple[int, bytes]:
        """The response to one request."""
        if target != PATH:
            return _json(404, {"error": f"not found; POST {PATH}"})
        if method != "POST":
            return _json(405, {"error": "only POST"})
        scheme, _, token = headers.get("authorization", "").partition(" ")
        try:
            doc = json.loads(body)
            node, csr = str(doc["node"]), str(doc["csr"]).encode()
        except (ValueError, KeyError, TypeError):
            return _json(400, {"error": 'expected JSON {"node": ..., "csr": ...}'})
        if scheme.lower() != "bearer" or not token.strip():
            return self._refused(401, node, "no bearer token")
        now = dt.datetime.now(dt.UTC)
        try:
            chain = await asyncio.to_thread(self.issuer.issue, token.strip(), node, csr, now)
        except TokenRefused as e:
            return self._refused(e.status, node, str(e))
        except CsrError as e:
            return self._refused(400, node, str(e))
        except Exception as e:  # the API unreachable, say: refuse, never issue
            log.exception("event=node_cert_failed node=%s", node)
            return _json(500, {"error": f"cannot check the token now: {type(e).__name__}"})
        return _json(200, {"certificate": chain.decode(), "ca": self.issuer.ca.cert_pem.decode(),
                           "not_after": (now + self.issuer.lifetime).isoformat()})

    @staticmethod
    def _refused(status: int, node: str, why: str) -> tuple[int, bytes]:
        log.warning("event=node_cert_refused node=%s status=%d reason=%r", node, status, why)
        return _json(status, {"error": why})


def _load_ca(cert: Path, key: Path) -> KeyPair:
    try:
        pair = KeyPair(cert_pem=cert.read_bytes(), key_pem=key.read_bytes())
        pair.load()
    except (OSError, ValueError, AssertionError) as e:
        raise SystemExit(f"kxds serve: node CA: {e}") from None
    return pair


async def start_issuer(args: argparse.Namespace) -> IssuerServer | None:
    """Start the node certificate endpoint when ``--node-cert-address`` asks for it."""
    if not args.node_cert_address:
        return None
    if not (args.xds_tls_cert and args.xds_tls_key):
        raise SystemExit("kxds serve: --node-cert-address needs --xds-tls-cert/--xds-tls-key "
                         "(it serves HTTPS with that certificate)")
    if not (args.node_ca_cert and args.node_ca_key):
        raise SystemExit("kxds serve: --node-cert-address needs --node-ca-cert and --node-ca-key")
    if not (args.kubeconfig or args.in_cluster):
        raise SystemExit("kxds serve: --node-cert-address needs the Kubernetes API "
                         "(--kubeconfig or --in-cluster) to review tokens")
    if not 0 < args.node_cert_lifetime <= 24 * 30:
        raise SystemExit("kxds serve: --node-cert-lifetime must be between 0 and 720 hours")
    from kxds.kube.client import KubeClient

    issuer = NodeCertIssuer(
        _load_ca(args.node_ca_cert, args.node_ca_key),
        KubeClient.from_config(args.kubeconfig, in_cluster=args.in_cluster),
        audience=args.node_cert_audience,
        accounts=tuple(args.node_cert_service_account or ("kxds/kxds-node",)),
        lifetime=dt.timedelta(hours=args.node_cert_lifetime),
        trust_domain=args.xds_trust_domain)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.xds_tls_cert, args.xds_tls_key)
    server = IssuerServer(issuer, context)
    await server.start(args.node_cert_address)
    return server


