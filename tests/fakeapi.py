"""An in-test Kubernetes API server that speaks the real list/watch protocol.

It follows the documented behaviour of the API server
(https://kubernetes.io/docs/reference/using-api/api-concepts/), not what is
convenient for kxds:

- one global, monotonically increasing ``resourceVersion`` shared by every
  kind (etcd's revision); a list's ``metadata.resourceVersion`` is that global
  value at list time, not the largest item version; list items carry no
  ``kind``/``apiVersion`` (the list does), watch event objects do;
- ``limit``/``continue`` pagination from a consistent snapshot; a continue
  token older than the event history is ``410 Expired``, whose Status carries a
  token that would continue from the latest snapshot (an inconsistent list);
- ``watch=1`` answers ``200`` with a chunked stream of JSON lines
  ``{"type": ADDED|MODIFIED|DELETED|BOOKMARK|ERROR, "object": ...}``; without
  ``resourceVersion`` (or ``"0"``) it starts with synthetic ADDED events of the
  current state; a ``resourceVersion`` older than the retained event history
  gets an ``ERROR`` event carrying a ``Status`` with code 410 (reason
  ``Expired``, "too old resource version"), then the stream ends, as the
  watch cache does (or, with ``gone_as_http``, an HTTP ``410 Gone`` reply: the
  documentation promises only "status code 410", so clients handle both);
  BOOKMARK events (only with ``allowWatchBookmarks=true``, at no promised
  interval) carry only ``kind``, ``apiVersion`` and ``metadata.resourceVersion``;
  ``timeoutSeconds`` ends the stream cleanly;
- a field selector turns an object moving out of (into) the selection into a
  DELETED (ADDED) event, as the watch cache does;
- a write that changes nothing gets no new version and no event;
- a Secret's ``stringData`` is merged into ``data`` (base64) on write and never read
  back;
- ``metadata.generation`` of an object with a ``spec`` is 1 when it is created and
  goes up by one with each write that changes the spec (a status or metadata
  write leaves it); it is read-only, so a value a client sends is ignored;
- PUT with a stale ``metadata.resourceVersion`` is ``409 Conflict``; PUT to
  ``/status`` changes only ``status``; POST of an existing name is ``409
  AlreadyExists``; PATCH applies a JSON merge patch (strategic merge patches
  are treated alike: the same for the maps and scalars kxds patches);
- errors are ``Status`` objects with ``code``, ``reason`` and ``message``.

Test controls: :meth:`FakeApi.cut_watches` (close every watch stream without
the terminating chunk), :meth:`FakeApi.freeze_watches` (streams go silent but
stay open, like a peer that vanished without a FIN), :meth:`FakeApi.compact`
(forget event history, so older versions get 410), :meth:`FakeApi.go_offline`
(connection refused, or ``503``), :meth:`FakeApi.go_online`, ``not_installed``
(API groups answered ``404``, as without their CRDs), ``unavailable``
(resources answered ``503`` while the others work), and ``on_request`` (a
hook run before each request, to inject races).

TokenReview (``POST /apis/authentication.k8s.io/v1/tokenreviews``) answers
for tokens made by :meth:`FakeApi.issue_token`, as the documentation of
TokenReview and bound ServiceAccount tokens describes: ``spec.audiences``
defaults to the API server's own audience; the token is authenticated only
when its audiences intersect them (``status.audiences`` is the intersection),
it has not expired, and the Pod it is bound to still exists with the same
uid; ``user.extra`` carries ``authentication.kubernetes.io/pod-name``,
``pod-uid``, ``node-name`` (1.30+) and ``credential-id``; the review is not
stored, and the answer is ``201 Created``.

Serves plain HTTP, or HTTPS with ``tls=(cert_file, key_file)``; with ``token``
set, a request without ``Authorization: Bearer <token>`` gets ``401
Unauthorized``, as a service account's client does with a wrong token.

Not reproduced: authorization (RBAC), other authentication methods,
set-based label selectors, strategic-merge list semantics, server-side apply,
admission and validation (beyond a required name), ``resourceVersion`` on a
list or get and ``resourceVersionMatch``, streaming lists
(``sendInitialEvents`` and its ``initial-events-end`` bookmark), a watch from
a future version (``Too large resource version``), DELETE over HTTP (tests
delete directly), 429 throttling, protobuf and HTTP/2.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import itertools
import json
import socket
import ssl
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

Obj = dict[str, Any]

# (group/version path prefix, plural) -> (apiVersion, kind, namespaced)
RESOURCES: dict[tuple[str, str], tuple[str, str, bool]] = {
    ("/api/v1", "services"): ("v1", "Service", True),
    ("/api/v1", "secrets"): ("v1", "Secret", True),
    ("/api/v1", "configmaps"): ("v1", "ConfigMap", True),
    ("/api/v1", "pods"): ("v1", "Pod", True),
    ("/api/v1", "namespaces"): ("v1", "Namespace", False),
    ("/api/v1", "events"): ("v1", "Event", True),
    ("/apis/discovery.k8s.io/v1", "endpointslices"): ("discovery.k8s.io/v1", "EndpointSlice", True),
    ("/apis/networking.k8s.io/v1", "ingresses"): ("networking.k8s.io/v1", "Ingress", True),
    ("/apis/networking.k8s.io/v1", "ingressclasses"):
        ("networking.k8s.io/v1", "IngressClass", False),
    ("/apis/networking.k8s.io/v1", "networkpolicies"):
        ("networking.k8s.io/v1", "NetworkPolicy", True),
    ("/apis/gateway.networking.k8s.io/v1", "gatewayclasses"):
        ("gateway.networking.k8s.io/v1", "GatewayClass", False),
    ("/apis/gateway.networking.k8s.io/v1", "gateways"):
        ("gateway.networking.k8s.io/v1", "Gateway", True),
    ("/apis/gateway.networking.k8s.io/v1", "httproutes"):
        ("gateway.networking.k8s.io/v1", "HTTPRoute", True),
    ("/apis/gateway.networking.k8s.io/v1", "grpcroutes"):
        ("gateway.networking.k8s.io/v1", "GRPCRoute", True),
    ("/apis/gateway.networking.k8s.io/v1", "backendtlspolicies"):
        ("gateway.networking.k8s.io/v1", "BackendTLSPolicy", True),
    ("/apis/gateway.networking.k8s.io/v1alpha2", "tlsroutes"):
        ("gateway.networking.k8s.io/v1alpha2", "TLSRoute", True),
    ("/apis/gateway.networking.k8s.io/v1alpha2", "tcproutes"):
        ("gateway.networking.k8s.io/v1alpha2", "TCPRoute", True),
    ("/apis/gateway.networking.k8s.io/v1alpha2", "udproutes"):
        ("gateway.networking.k8s.io/v1alpha2", "UDPRoute", True),
    ("/apis/gateway.networking.k8s.io/v1beta1", "referencegrants"):
        ("gateway.networking.k8s.io/v1beta1", "ReferenceGrant", True),
    ("/apis/coordination.k8s.io/v1", "leases"): ("coordination.k8s.io/v1", "Lease", True),
    # Create-only: answered by FakeApi.review_token, never stored.
    ("/apis/authentication.k8s.io/v1", "tokenreviews"):
        ("authentication.k8s.io/v1", "TokenReview", False),
}
API_AUDIENCE = "https://kubernetes.default.svc.cluster.local"
"""The API server's own audience: what a TokenReview without ``spec.audiences`` checks."""


@dataclass(frozen=True)
class BoundToken:
    """A projected ServiceAccount token, as the kubelet gets it from TokenRequest."""

    namespace: str
    service_account: str
    pod: str
    pod_uid: str
    node: str
    audiences: tuple[str, ...]
    expires: float
BY_KIND = {(v[0], v[1]): k for k, v in RESOURCES.items()}

Resource = tuple[str, str]
Key = tuple[Resource, str, str]


def status(code: int, reason: str, message: str) -> Obj:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


@dataclass
class Change:
    rv: int
    key: Key
    obj: Obj | None
    """The object after the change; None for a deletion."""
    prev: Obj | None


def _merge_string_data(obj: Obj) -> None:
    """A Secret's ``stringData`` goes into ``data``, base64-encoded, overwriting the
    same keys; the API server never stores or returns ``stringData`` itself."""
    if obj.get("kind") != "Secret" or "stringData" not in obj:
        return
    plain = obj.pop("stringData") or {}
    data = dict(obj.get("data") or {})
    data.update({k: base64.b64encode(str(v).encode()).decode() for k, v in plain.items()})
    obj["data"] = data


def _set_generation(obj: Obj, prev: Obj | None) -> None:
    """``metadata.generation`` as the API server keeps it for objects with a ``spec``:
    1 when created, one more whenever the spec changes, whatever the client sent."""
    if "spec" not in obj:
        obj["metadata"].pop("generation", None)
        return
    if prev is None:
        generation = 1
    else:
        generation = int(prev["metadata"].get("generation") or 1)
        if obj.get("spec") != prev.get("spec"):
            generation += 1
    obj["metadata"]["generation"] = generation


def _without_rv(obj: Obj) -> Obj:
    return {**obj, "metadata": {k: v for k, v in obj.get("metadata", {}).items()
                                if k != "resourceVersion"}}


def _continue_token(rv: int, after: tuple[str, ...]) -> str:
    """An opaque ``continue`` value: the snapshot's version and the last key returned."""
    return base64.b64encode(json.dumps({"rv": rv, "after": list(after)}).encode()).decode()


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.body = status(code, reason, message)


def _field_match(obj: Obj, selector: str) -> bool:
    for term in filter(None, selector.split(",")):
        name, _, want = term.partition("=")
        value: Any = obj
        for part in name.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if str(value or "") != want:
            return False
    return True


def _label_match(obj: Obj, selector: str) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    for term in filter(None, selector.split(",")):
        name, _, want = term.partition("=")
        if labels.get(name) != want:
            return False
    return True


@dataclass
class Query:
    resource: Resource
    namespace: str | None
    field_selector: str = ""
    label_selector: str = ""

    def matches(self, key: Key, obj: Obj | None) -> bool:
        return (obj is not None and key[0] == self.resource
                and (self.namespace is None or key[1] == self.namespace)
                and _field_match(obj, self.field_selector)
                and _label_match(obj, self.label_selector))


class FakeApi:
    """The in-memory API server; see the module docstring for its behaviour."""

    def __init__(self, *, history: int = 10_000, bookmark_interval: float = 0.2,
                 default_watch_timeout: float = 30.0, tls: tuple[str, str] | None = None,
                 token: str | None = None) -> None:
        self.tls = tls
        self.token = token
        self.lock = threading.Condition()
        self.rv = 100
        self.objects: dict[Key, Obj] = {}
        self.history: deque[Change] = deque(maxlen=history)
        self.oldest = self.rv
        """Watches and continue tokens from versions below this get 410."""
        self.bookmark_interval = bookmark_interval
        self.default_watch_timeout = default_watch_timeout
        self.offline: str | None = None
        self.not_installed: set[str] = set()
        """API groups whose CRDs are not installed: every path under them is ``404``,
        as for any resource the server does not know (``gateway.networking.k8s.io``)."""
        self.unavailable: set[str] = set()
        """Resources (plural names) answered ``503`` while the rest work (a partial outage)."""
        self.requests: list[tuple[str, str]] = []
        self.on_request: Callable[[str, str], None] | None = None
        """Called with (method, path) before a request is handled (to inject races)."""
        self._epoch = 0
        self._streams = 0
        self._frozen_below = 0
        self.gone_as_http = False
        """Answer a too-old watch with HTTP 410 instead of an ERROR event (both happen)."""
        self._server: ThreadingHTTPServer | None = None
        self._port = 0
        self._open: set[socket.socket] = set()
        """Connections streaming a watch."""
        self._conns: set[socket.socket] = set()
        """Every open connection."""
        self.tokens: dict[str, BoundToken] = {}
        self.cut_mid_event: str | None = None
        """A resource (plural name) whose next watch event is cut in the middle: half
        its bytes are written, then the connection drops (a proxy or node going away)."""

    # --- lifecycle ------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self._port}"

    @property
    def port(self) -> int:
        return self._port

    def start(self) -> FakeApi:
        api = self

        class Handler(_Handler):
            fake = api

        server = _Server(("127.0.0.1", self._port), Handler)
        if self.tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*self.tls)
            server.socket = ctx.wrap_socket(server.socket, server_side=True)
        server.daemon_threads = True
        self._port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self.cut_watches()

    def go_offline(self, mode: str = "refuse") -> None:
        """``refuse``: close the listening socket (connection refused); ``503``: answer 503."""
        self.cut_watches()
        if mode == "refuse":
            self.stop()
            with self.lock:
                conns = list(self._conns)
            for conn in conns:  # kept-alive connections must not outlive the listener
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        else:
            self.offline = mode

    def go_online(self) -> None:
        self.offline = None
        if self._server is None:
            self.start()

    def cut_watches(self) -> None:
        """Drop every open watch connection mid-stream (no terminating chunk)."""
        with self.lock:
            self._epoch += 1
            conns = list(self._open)
            self._open.clear()
            self.lock.notify_all()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def freeze_watches(self) -> None:
        """Make every open watch go silent without closing (a peer that vanished)."""
        with self.lock:
            self._frozen_below = self._streams

    def too_old(self, rv: str) -> str:
        """Why a watch from ``rv`` cannot be served ("" when it can)."""
        with self.lock:
            if rv in ("", "0") or int(rv) >= self.oldest - 1:
                return ""
            return f"too old resource version: {rv} ({self.oldest - 1})"

    def compact(self) -> None:
        """Forget the event history, as etcd compaction does."""
        with self.lock:
            self.history.clear()
            self.oldest = self.rv + 1

    def count(self, method: str, path_prefix: str, query: str = "") -> int:
        with self.lock:
            return sum(1 for m, p in self.requests
                       if m == method and p.startswith(path_prefix) and query in p)

    def watch_versions(self, path: str) -> list[int]:
        """The ``resourceVersion`` of every watch request on ``path``, oldest first."""
        with self.lock:
            urls = [urlsplit(p) for m, p in self.requests if m == "GET"]
        out = []
        for url in urls:
            query = parse_qs(url.query)
            if url.path == path and query.get("watch") and query.get("resourceVersion"):
                out.append(int(query["resourceVersion"][-1]))
        return out

    # --- tokens ---------------------------------------------------------------------

    def issue_token(self, namespace: str, service_account: str, pod: str,
                    audiences: tuple[str, ...] = (API_AUDIENCE,), ttl: float = 3600.0) -> str:
        """A token bound to an existing Pod (its node taken from ``spec.nodeName``)."""
        obj = self.get("v1", "Pod", namespace, pod)
        if obj is None:
            raise ValueError(f"no pod {namespace}/{pod}")
        token = f"fake-token-{uuid.uuid4().hex}"
        self.tokens[token] = BoundToken(namespace, service_account, pod, obj["metadata"]["uid"],
                                        (obj.get("spec") or {}).get("nodeName", ""),
                                        tuple(audiences), time.time() + ttl)
        return token

    def review_token(self, body: Obj) -> Obj:
        """The TokenReview answer for ``body`` (see the module docstring)."""
        spec = body.get("spec") or {}
        wanted = list(spec.get("audiences") or [API_AUDIENCE])
        bound = self.tokens.get(str(spec.get("token") or ""))
        review: Obj = {"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1",
                       "metadata": {"creationTimestamp": None}, "spec": spec}
        if bound is None or bound.expires < time.time():
            review["status"] = {"authenticated": False, "user": {},
                                "error": "[invalid bearer token, token has expired]"}
            return review
        common = [a for a in wanted if a in bound.audiences]
        if not common:
            review["status"] = {"authenticated": False, "user": {}, "error": (
                f"[invalid bearer token, token audiences {list(bound.audiences)} "
                f"is invalid for the target audiences {wanted}]")}
            return review
        pod = self.get("v1", "Pod", bound.namespace, bound.pod)
        if pod is None or pod["metadata"]["uid"] != bound.pod_uid:
            review["status"] = {"authenticated": False, "user": {}, "error": (
                f'[invalid bearer token, pods "{bound.pod}" not found]')}
            return review
        extra = {"authentication.kubernetes.io/pod-name": [bound.pod],
                 "authentication.kubernetes.io/pod-uid": [bound.pod_uid],
                 "authentication.kubernetes.io/credential-id": [f"JTI={uuid.uuid4()}"]}
        if bound.node:
            extra["authentication.kubernetes.io/node-name"] = [bound.node]
        review["status"] = {"authenticated": True, "audiences": common, "user": {
            "username": f"system:serviceaccount:{bound.namespace}:{bound.service_account}",
            "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, bound.service_account)),
            "groups": ["system:serviceaccounts", f"system:serviceaccounts:{bound.namespace}",
                       "system:authenticated"],
            "extra": extra}}
        return review

    # --- object store --------------------------------------------------------------

    def _key(self, obj: Obj) -> Key:
        res = BY_KIND[(obj["apiVersion"], obj["kind"])]
        meta = obj["metadata"]
        ns = meta.get("namespace", "default") if RESOURCES[res][2] else ""
        return (res, ns, meta["name"])

    def _record(self, key: Key, obj: Obj | None) -> Obj | None:
        """Store ``obj`` (None deletes) at the next version; called with the lock held.

        A write that changes nothing is a no-op, as in the API server (its
        storage skips identical updates): no new version, no watch event. The
        object stored is returned.
        """
        prev = self.objects.get(key)
        if obj is not None and prev is not None and _without_rv(obj) == _without_rv(prev):
            return prev
        self.rv += 1
        if obj is None:
            self.objects.pop(key, None)
        else:
            obj["metadata"]["resourceVersion"] = str(self.rv)
            self.objects[key] = obj
        if len(self.history) == self.history.maxlen:
            self.oldest = self.history[0].rv + 1
        # Stored objects are replaced, never mutated, so sharing them here is safe.
        self.history.append(Change(self.rv, key, obj, prev))
        self.lock.notify_all()
        return obj

    def apply(self, obj: Obj) -> Obj:
        """Create or replace ``obj`` directly (no concurrency check), as a test sets up state."""
        obj = copy.deepcopy(obj)
        with self.lock:
            key = self._key(obj)
            meta = obj["metadata"]
            if RESOURCES[key[0]][2]:
                meta["namespace"] = key[1]
            old = self.objects.get(key)
            meta.setdefault("uid", old["metadata"]["uid"] if old else str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", old["metadata"]["creationTimestamp"] if old
                            else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
            if obj.get("kind") == "Secret":
                obj.setdefault("type", "Opaque")  # the API server's default
            _merge_string_data(obj)
            _set_generation(obj, old)
            return copy.deepcopy(self._record(key, obj))

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        with self.lock:
            key = (BY_KIND[(api_version, kind)], namespace, name)
            if key in self.objects:
                self._record(key, None)

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> Obj | None:
        with self.lock:
            obj = self.objects.get((BY_KIND[(api_version, kind)], namespace, name))
            return copy.deepcopy(obj) if obj else None

    def _state_at(self, rv: int) -> dict[Key, Obj]:
        """Every object as of ``rv``, by undoing newer changes (needs the history)."""
        if rv < self.oldest - 1:
            raise ApiError(410, "Expired", "The provided continue parameter is too old "
                           "to display a consistent list result.")
        state = dict(self.objects)
        for change in reversed(self.history):
            if change.rv <= rv:
                break
            if change.prev is None:
                state.pop(change.key, None)
            else:
                state[change.key] = change.prev
        return state

    # --- list and watch -----------------------------------------------------------

    def list(self, q: Query, limit: int, cont: str) -> Obj:
        with self.lock:
            if cont:
                token = json.loads(base64.b64decode(cont))
                rv, after = int(token["rv"]), tuple(token["after"])
            else:
                rv, after = self.rv, ()
            if rv < self.oldest - 1:
                # The Status carries a token that continues from the latest snapshot
                # instead (an inconsistent list), as the API reference describes.
                expired = ApiError(410, "Expired", "The provided continue parameter is too "
                                   "old to display a consistent list result.")
                expired.body["metadata"]["continue"] = _continue_token(self.rv, after)
                raise expired
            state = self._state_at(rv)
            keys = sorted(k for k, o in state.items() if q.matches(k, o) and k[1:] > after)
            page = keys[:limit] if limit else keys
            # Shallow copies: stored objects are replaced, never mutated (see
            # _record), and the reply is only serialized. A deep copy per item cost
            # most of a large list's time, far more than the real API server takes.
            items = [{f: v for f, v in state[k].items() if f not in ("kind", "apiVersion")}
                     for k in page]
            meta: Obj = {"resourceVersion": str(rv)}
            if limit and len(keys) > limit:
                last = page[-1][1:]
                meta["continue"] = _continue_token(rv, last)
                meta["remainingItemCount"] = len(keys) - limit
        api_version, kind, _ = RESOURCES[q.resource]
        return {"kind": f"{kind}List", "apiVersion": api_version, "metadata": meta,
                "items": items}

    def watch(self, q: Query, rv: str, bookmarks: bool, timeout: float) -> Iterator[Obj]:
        """Yield watch events until the timeout, a cut, or the caller stops."""
        deadline = time.monotonic() + timeout
        api_version, kind, _ = RESOURCES[q.resource]
        with self.lock:
            epoch = self._epoch
            stream = self._streams
            self._streams += 1
            too_old = ""
            pending: list[Obj] = []
            if rv in ("", "0"):
                pending = [{"type": "ADDED", "object": copy.deepcopy(o)}
                           for k, o in sorted(self.objects.items()) if q.matches(k, o)]
                since = self.rv
            else:
                since = int(rv)
                if since < self.oldest - 1:
                    too_old = f"too old resource version: {since} ({self.oldest - 1})"
        if too_old:
            yield {"type": "ERROR", "object": status(410, "Expired", too_old)}
            return
        yield from pending
        next_bookmark = time.monotonic() + self.bookmark_interval
        while True:
            with self.lock:
                while stream < self._frozen_below and self._epoch == epoch:
                    self.lock.wait(0.1)  # a dead peer: nothing more, ever, until cut
                if self._epoch != epoch:
                    return
                events = self._events_since(q, since)
                if not events:
                    wait = min(deadline, next_bookmark) - time.monotonic()
                    if wait > 0:
                        self.lock.wait(wait)
                    if stream < self._frozen_below or self._epoch != epoch:
                        continue  # frozen or cut while waiting
                    events = self._events_since(q, since)
                since = self.rv
                current = self.rv
            yield from events
            now = time.monotonic()
            if now >= deadline:
                return
            if bookmarks and now >= next_bookmark:
                next_bookmark = now + self.bookmark_interval
                yield {"type": "BOOKMARK", "object": {
                    "kind": kind, "apiVersion": api_version,
                    "metadata": {"resourceVersion": str(current)}}}

    def _events_since(self, q: Query, since: int) -> list[Obj]:
        # The newest changes are at the history's end: walked back to ``since`` only,
        # so each watch's wake-up costs the new events, not the whole history (which
        # the real server's watch cache does not pay either).
        newer = list(itertools.takewhile(lambda c: c.rv > since, reversed(self.history)))
        out = []
        for change in reversed(newer):
            was, now = q.matches(change.key, change.prev), q.matches(change.key, change.obj)
            if now:
                out.append({"type": "MODIFIED" if was else "ADDED",
                            "object": copy.deepcopy(change.obj)})
            elif was:
                gone = copy.deepcopy(change.obj or change.prev)
                assert gone is not None
                # A deletion is reported with the object's last state at the deletion's
                # version; an object leaving the selection, with its new state.
                gone["metadata"]["resourceVersion"] = str(change.rv)
                out.append({"type": "DELETED", "object": gone})
        return out

    # --- writes ------------------------------------------------------------------------

    def create(self, res: Resource, ns: str, body: Obj) -> Obj:
        with self.lock:
            name = body.get("metadata", {}).get("name")
            if not name:
                raise ApiError(422, "Invalid", "metadata.name: Required value")
            api_version, kind, namespaced = RESOURCES[res]
            key = (res, ns if namespaced else "", name)
            if key in self.objects:
                raise ApiError(409, "AlreadyExists", f'{res[1]} "{name}" already exists')
            obj = copy.deepcopy(body)
            obj.update(apiVersion=api_version, kind=kind)
            meta = obj["metadata"]
            if namespaced:
                meta["namespace"] = ns
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            _merge_string_data(obj)
            _set_generation(obj, None)
            return copy.deepcopy(self._record(key, obj))

    def replace(self, key: Key, body: Obj, subresource: str) -> Obj:
        with self.lock:
            current = self.objects.get(key)
            if current is None:
                raise ApiError(404, "NotFound", f'{key[0][1]} "{key[2]}" not found')
            want = str(body.get("metadata", {}).get("resourceVersion") or "")
            if want and want != current["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {key[0][1]} '
                               f'"{key[2]}": the object has been modified; please apply your '
                               "changes to the latest version and try again")
            if subresource == "status":
                obj = copy.deepcopy(current)
                obj["status"] = copy.deepcopy(body.get("status") or {})
            else:
                obj = copy.deepcopy(body)
                obj["metadata"].update({k: current["metadata"][k]
                                        for k in ("uid", "creationTimestamp", "namespace")
                                        if k in current["metadata"]})
                obj.update(apiVersion=current["apiVersion"], kind=current["kind"])
                obj.setdefault("status", current.get("status"))
                if obj["status"] is None:
                    del obj["status"]
                _merge_string_data(obj)
                _set_generation(obj, current)
            return copy.deepcopy(self._record(key, obj))

    def patch(self, key: Key, body: Obj) -> Obj:
        with self.lock:
            current = self.objects.get(key)
            if current is None:
                raise ApiError(404, "NotFound", f'{key[0][1]} "{key[2]}" not found')
            obj = merge_patch(current, body)
            obj["metadata"]["name"] = key[2]
            _merge_string_data(obj)
            _set_generation(obj, current)
            return copy.deepcopy(self._record(key, obj))


class _Server(ThreadingHTTPServer):
    # The accept backlog the real API server has (Go listens with the system's
    # somaxconn): socketserver's default of 5 overflowed when a client opened a
    # connection per kind at once (a list, then a watch, per kind), and the
    # connections beyond it waited for the client's SYN retransmission, 1 s later.
    request_queue_size = 1024


class _Handler(BaseHTTPRequestHandler):
    fake: FakeApi
    protocol_version = "HTTP/1.1"
    # TCP_NODELAY, as the real API server (Go's net/http) sets it: the headers
    # and the body go in two writes, and with Nagle's algorithm the body waits
    # for the client's delayed ACK of the headers (40 ms per reply on a
    # kept-alive connection, which made every list page cost 40 ms more).
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        with self.fake.lock:
            self.fake._conns.add(self.connection)

    def finish(self) -> None:
        with self.fake.lock:
            self.fake._conns.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def _route(self) -> tuple[Resource, str | None, str, str, dict[str, str]]:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        parts = [p for p in url.path.split("/") if p]
        prefix_len = 2 if parts[:1] == ["api"] else 3
        prefix, rest = "/" + "/".join(parts[:prefix_len]), parts[prefix_len:]
        ns = None
        if rest[:1] == ["namespaces"] and len(rest) >= 3:
            ns, rest = rest[1], rest[2:]
        res = (prefix, rest[0])
        if res not in RESOURCES or (parts[1:2] and parts[1] in self.fake.not_installed):
            raise ApiError(404, "NotFound", f"the server could not find {url.path}")
        name = rest[1] if len(rest) > 1 else ""
        sub = rest[2] if len(rest) > 2 else ""
        return res, ns, name, sub, query

    def _send_json(self, code: int, body: Obj) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Obj:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}")  # type: ignore[no-any-return]

    def _handle(self, method: str) -> None:
        with self.fake.lock:
            self.fake.requests.append((method, self.path))
        if self.fake.on_request is not None:
            self.fake.on_request(method, self.path)
        segments = set(urlsplit(self.path).path.split("/"))
        if self.fake.offline == "503" or segments & self.fake.unavailable:
            self._send_json(503, status(503, "ServiceUnavailable", "apiserver is shutting down"))
            return
        scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
        # The auth scheme is case-insensitive (RFC 9110 11.1); the client sends "bearer".
        if self.fake.token is not None and (scheme.lower() != "bearer"
                                            or token.strip() != self.fake.token):
            self._send_json(401, status(401, "Unauthorized", "Unauthorized"))
            return
        try:
            res, ns, name, sub, query = self._route()
            key = (res, ns or "", name)
            if res[1] == "tokenreviews":
                if method != "POST" or name:
                    raise ApiError(405, "MethodNotAllowed", "tokenreviews: create only")
                self._send_json(201, self.fake.review_token(self._body()))
            elif method == "GET" and not name:
                self._list_or_watch(res, ns, query)
            elif method == "GET":
                obj = self.fake.get(*RESOURCES[res][:2], ns or "", name)
                if obj is None:
                    raise ApiError(404, "NotFound", f'{res[1]} "{name}" not found')
                self._send_json(200, obj)
            elif method == "POST":
                self._send_json(201, self.fake.create(res, ns or "", self._body()))
            elif method == "PUT":
                self._send_json(200, self.fake.replace(key, self._body(), sub))
            elif method == "PATCH":
                self._send_json(200, self.fake.patch(key, self._body()))
            else:
                raise ApiError(405, "MethodNotAllowed", method)
        except ApiError as e:
            self._send_json(e.body["code"], e.body)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def _cut_here(self, res: Resource, event: Obj) -> bool:
        """Whether to cut this event in the middle (see ``FakeApi.cut_mid_event``)."""
        with self.fake.lock:
            if self.fake.cut_mid_event != res[1] or event.get("type") == "BOOKMARK":
                return False
            self.fake.cut_mid_event = None
            return True

    def _list_or_watch(self, res: Resource, ns: str | None, query: dict[str, str]) -> None:
        q = Query(res, ns, query.get("fieldSelector", ""), query.get("labelSelector", ""))
        if query.get("watch") not in ("true", "1", "True"):
            self._send_json(200, self.fake.list(q, int(query.get("limit") or 0),
                                                query.get("continue", "")))
            return
        timeout = float(query.get("timeoutSeconds") or self.fake.default_watch_timeout)
        gone = self.fake.too_old(query.get("resourceVersion", ""))
        if gone and self.fake.gone_as_http:
            self._send_json(410, status(410, "Gone", gone))
            return
        bookmarks = query.get("allowWatchBookmarks") in ("true", "True", "1")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        with self.fake.lock:
            self.fake._open.add(self.connection)
        try:
            for event in self.fake.watch(q, query.get("resourceVersion", ""), bookmarks, timeout):
                line = json.dumps(event).encode() + b"\n"
                if self._cut_here(res, event):
                    self.wfile.write(b"%x\r\n%s" % (len(line), line[:len(line) // 2]))
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                self.wfile.flush()
            with self.fake.lock:
                cut = self.connection not in self.fake._open
            if not cut:  # a clean end: the terminating chunk
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
        except OSError:
            pass
        finally:
            with self.fake.lock:
                self.fake._open.discard(self.connection)
            self.close_connection = True


# --- driving a source against it ------------------------------------------------------


def kubeconfig(url: str, path: str) -> str:
    """Write a kubeconfig for ``url`` (bearer token auth, which the fake ignores)."""
    text = f"""apiVersion: v1
kind: Config
clusters: [{{name: fake, cluster: {{server: "{url}"}}}}]
users: [{{name: fake, user: {{token: test-token}}}}]
contexts: [{{name: fake, context: {{cluster: fake, user: fake}}}}]
current-context: fake
"""
    with open(path, "w") as f:
        f.write(text)
    return path


class SourceRunner:
    """Runs an ``async run(publish)`` source on its own event loop thread; records states."""

    def __init__(self, source: Any) -> None:
        import asyncio

        self.source = source
        self.states: list[Any] = []
        self.cond = threading.Condition()
        self.loop = asyncio.new_event_loop()
        self._task: Any = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _publish(self, state: Any) -> None:
        with self.cond:
            self.states.append(state)
            self.cond.notify_all()

    def _main(self) -> None:
        import asyncio

        asyncio.set_event_loop(self.loop)
        self._task = self.loop.create_task(self.source.run(self._publish))
        with contextlib.suppress(BaseException):
            self.loop.run_until_complete(self._task)

    def __enter__(self) -> SourceRunner:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(lambda: self._task.cancel())
        self._thread.join(10)
        assert not self._thread.is_alive(), "source did not stop"
        self.loop.close()

    def wait(self, pred: Any, timeout: float = 10.0, what: str = "state") -> Any:
        """The first published state (latest first) satisfying ``pred``, within ``timeout``."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                if self.states and pred(self.states[-1]):
                    return self.states[-1]
                left = deadline - time.monotonic()
                if left <= 0:
                    last = self.states[-1] if self.states else None
                    raise AssertionError(f"timed out waiting for {what}; "
                                         f"{len(self.states)} states, last: {last!r:.2000}")
                self.cond.wait(left)

    @property
    def count(self) -> int:
        with self.cond:
            return len(self.states)
