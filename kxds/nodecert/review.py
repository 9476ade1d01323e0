"""Who a projected ServiceAccount token belongs to: the TokenReview API, and the verdict.

A per-node proxy proves its node with the token the kubelet projects into
its pod (``serviceAccountToken`` volume, audience ``kxds``). kxds asks the
API server (``POST /apis/authentication.k8s.io/v1/tokenreviews`` with
``spec.audiences: [kxds]``) and accepts it only when

* ``status.authenticated`` is true and ``status.audiences`` holds the audience
  (the API server answers the intersection of asked and token audiences);
* the user is one of the allowed service accounts
  (``system:serviceaccount:<ns>:<name>``): any pod may mint a token with any
  audience, so the audience alone proves nothing;
* the token is bound to a pod (``authentication.kubernetes.io/pod-name``), so
  it dies with the pod, and names the node it runs on
  (``authentication.kubernetes.io/node-name``, Kubernetes 1.30+), which must
  be the node asked for.

:func:`verdict` is pure; :func:`review_token` makes the call.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from kxds.errors import KxdsError

POD_NAME = "authentication.kubernetes.io/pod-name"
NODE_NAME = "authentication.kubernetes.io/node-name"
REVIEW_PATH = "/apis/authentication.k8s.io/v1/tokenreviews"


class TokenRefused(KxdsError):
    """The token does not prove what was asked; ``status`` is the HTTP answer (401/403)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class TokenOwner:
    """What an accepted token proves."""

    service_account: str
    """``namespace/name``."""
    pod: str
    node: str


class RequestClient(Protocol):
    """The part of :class:`kxds.kube.client.KubeClient` used here."""

    def request(self, method: str, path: str, *, body: Any = None) -> dict[str, Any]: ...


def _extra(user: Mapping[str, Any], key: str) -> str | None:
    values = (user.get("extra") or {}).get(key) or []
    return str(values[0]) if len(values) == 1 and values[0] else None


def verdict(status: Mapping[str, Any], audience: str, node: str,
            accounts: Iterable[str]) -> TokenOwner:
    """Judge a TokenReview ``status`` for a certificate of ``node``; raise
    :class:`TokenRefused` saying why not."""
    if not status.get("authenticated"):
        raise TokenRefused(401, f"token not authenticated: {status.get('error') or 'invalid'}")
    if audience not in (status.get("audiences") or []):
        raise TokenRefused(401, f"token is not for audience {audience!r}")
    user = status.get("user") or {}
    prefix, _, account = str(user.get("username", "")).partition("system:serviceaccount:")
    ns, _, name = account.partition(":")
    if prefix or not ns or not name:
        raise TokenRefused(403, "token is not a service account's")
    if f"{ns}/{name}" not in set(accounts):
        raise TokenRefused(403, f"service account {ns}/{name} may not obtain node certificates")
    pod, claimed = _extra(user, POD_NAME), _extra(user, NODE_NAME)
    if pod is None:
        raise TokenRefused(403, "token is not bound to a pod")
    if claimed is None:
        raise TokenRefused(403, "token names no node (Kubernetes 1.30+ bound tokens do)")
    if claimed != node:
        raise TokenRefused(403, f"token of pod {ns}/{pod} on node {claimed!r}, "
                                f"not on node {node!r}")
    return TokenOwner(f"{ns}/{name}", pod, claimed)


def review_token(client: RequestClient, token: str, audience: str) -> Mapping[str, Any]:
    """The ``status`` of a TokenReview of ``token`` for ``audience`` (blocking)."""
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
            "spec": {"token": token, "audiences": [audience]}}
    reply = client.request("POST", REVIEW_PATH, body=body)
    status = reply.get("status")
    return status if isinstance(status, dict) else {}
