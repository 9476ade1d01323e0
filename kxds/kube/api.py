"""The Kubernetes API source: list + watch every kind kxds reads, into ClusterStates.

One reflector thread per kind runs the loop client-go's reflector runs
(https://kubernetes.io/docs/reference/using-api/api-concepts/#efficient-detection-of-changes):
a paginated list gives the state and a ``resourceVersion``; a watch from that
version streams changes; ``BOOKMARK`` events advance the version without an
object; a watch that ends cleanly resumes from the last version seen; a broken
watch (cut connection, read timeout, server error) resumes after an exponential
backoff with jitter; ``410 Gone`` (as an HTTP status or as an ``ERROR`` event
with code 410) means the version is too old, so the kind is listed again and
the store replaced by the new list. Known objects are never dropped because a
watch broke: only a successful list replaces them.

Objects are parsed with :func:`kxds.kube.parse.parse_object`, exactly as the
manifest loader parses them, so the same objects give the same ClusterState.
Pods are stripped before parsing to what NetworkPolicy needs (labels, IPs,
node, container ports); TLS Secrets are watched with a field selector and only
those referenced (by Ingress ``tls``, by annotations naming secrets, or by
configuration) enter the ClusterState.

:meth:`ApiSource.run` publishes nothing until every kind has completed its
first list; later changes publish new states. While the API is unreachable
nothing is published, so proxies keep their last configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

from kxds.kube.client import KubeClient, describe, is_gone, status_code
from kxds.kube.limits import Limits
from kxds.kube.models import ClusterState, Key
from kxds.kube.store import KINDS, Kind, Store

log = logging.getLogger(__name__)

Publish = Callable[[ClusterState], None]
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiOptions:
    """Tuning of the API source; the defaults suit a real cluster, tests shorten them."""

    namespace: str | None = None
    """Watch namespaced kinds only in this namespace (cluster-scoped kinds stay cluster-wide)."""
    page_size: int = 500
    watch_timeout: float = 300.0
    """Server-side watch timeout; each watch picks a random value in [t, 2t) like client-go."""
    read_timeout: float = 120.0
    """No byte (event or bookmark) for this long means a dead connection: watch again."""
    connect_timeout: float = 5.0
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    absent_retry: float = 60.0
    """How often a kind the server does not serve (its CRD not installed: 404) is
    listed again; meanwhile it counts as listed, with no objects."""
    extra_secrets: tuple[Key, ...] = ()
    """Secrets referenced by configuration (the default certificate)."""
    kinds: tuple[Kind, ...] = field(default_factory=lambda: KINDS)
    secret_namespaces: tuple[str, ...] = ()
    """Read Secrets and ConfigMaps only in these namespaces (``--watch-namespaces``);
    empty: everywhere the other kinds are read."""

    def watched_kinds(self) -> tuple[Kind, ...]:
        """The kinds, with Secrets and ConfigMaps split per namespace when
        ``secret_namespaces`` says so."""
        if not self.secret_namespaces:
            return self.kinds
        out: list[Kind] = []
        for kind in self.kinds:
            out += kind.in_namespaces(self.secret_namespaces) \
                if kind.plural in ("secrets", "configmaps") else [kind]
        return tuple(out)
    limits: Limits = field(default_factory=Limits)
    """Input limits the parser applies (``--max-service-ports``)."""


class Backoff:
    """Exponential backoff with "equal jitter": half fixed, half random."""

    def __init__(self, initial: float, maximum: float) -> None:
        self.initial = initial
        self.maximum = maximum
        self.current = initial

    def next(self) -> float:
        delay = self.current
        self.current = min(self.maximum, self.current * 2)
        return delay / 2 + random.uniform(0, delay / 2)

    def reset(self) -> None:
        self.current = self.initial


class Gone(Exception):
    """The resourceVersion we hold is too old: list again."""


class Reflector:
    """Keeps one kind in the store current: list, then watch, forever."""

    def __init__(self, kind: Kind, client: KubeClient, store: Store, options: ApiOptions) -> None:
        self.kind = kind
        self.client = client
        self.store = store
        self.options = options
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"watch-{kind.plural}", daemon=True)
        self._stream: Any = None
        self._lock = threading.Lock()
        self.rv: str | None = None
        """The resourceVersion to resume from; None: list first."""
        self.failing = False
        self.missing = False
        """The server answered 404 for the kind (an optional kind whose CRD is absent)."""
        self.backoff = Backoff(options.backoff_initial, options.backoff_max)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        with self._lock:
            stream = self._stream
        if stream is not None:
            stream.stop()

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                if self.rv is None:
                    self.rv = self._list()
                    self._recovered()
                started = time.monotonic()
                if self._watch() or time.monotonic() - started > 1.0:
                    continue  # a clean end (server timeout): watch again from rv at once
                # A watch that ends at once without a single event: do not spin on it.
            except Gone:
                log.info("event=relist kind=%s reason=gone rv=%s", self.kind.plural, self.rv)
                self.rv = None
                # Paced like any retry (client-go's reflector backs off between
                # list-and-watch rounds too): a server answering every watch with
                # 410 must not get a list per millisecond.
            except Exception as e:  # any failure: keep the state and rv, retry later
                if self.stopping.is_set():
                    break
                if self.kind.optional and status_code(e) == 404:
                    self._absent()
                    continue
                # One warning per outage; the retries after it are debug noise.
                level = logging.DEBUG if self.failing else logging.WARNING
                log.log(level, "event=watch_failed kind=%s error=%s", self.kind.plural, describe(e))
                self.failing = True
            self.stopping.wait(self.backoff.next())

    def _absent(self) -> None:
        """The server does not serve the kind (its CRD is not installed, or was removed):
        it has no objects; look again every ``absent_retry`` seconds, saying so once."""
        if not self.missing:
            log.info("event=kind_not_served kind=%s api=%s retry_seconds=%g (CRD not "
                     "installed?)", self.kind.plural, self.kind.api_version,
                     self.options.absent_retry)
            self.missing = True
        self.rv = None
        self.store.replace(self.kind, [])
        self.stopping.wait(self.options.absent_retry)

    def _recovered(self) -> None:
        if self.missing:
            self.missing = False
            log.info("event=kind_served kind=%s api=%s", self.kind.plural, self.kind.api_version)
        self.backoff.reset()
        if self.failing:
            self.failing = False
            log.info("event=watch_recovered kind=%s rv=%s", self.kind.plural, self.rv)

    def _list(self) -> str:
        """List every page (one consistent snapshot), then replace the store's objects."""
        version: list[str] = []
        self.store.replace(self.kind, self._items(version))
        log.debug("%s: listed at resourceVersion %s", self.kind.plural, version[0])
        return version[0]

    def _items(self, version: list[str]) -> Iterator[Mapping[str, Any]]:
        """The items of every page of one list; the list's resourceVersion is appended
        to ``version`` at the end.

        The next page is fetched (by a helper thread) while the store parses this
        one, so the API server and kxds work at the same time, and at the end of a
        long list only its last page is left to parse (5,000 EndpointSlices: 0.2-0.3
        s less before the first snapshot).
        """
        page = _in_background(self._page, "", f"list-{self.kind.plural}")
        while True:
            items, cont, rv = page.result()
            if cont:
                page = _in_background(self._page, cont, f"list-{self.kind.plural}")
            yield from items
            if not cont:
                version.append(rv)
                return

    def _page(self, cont: str) -> tuple[list[Mapping[str, Any]], str, str]:
        """One page of a list: its items, the continue token ("" on the last page) and
        the list's resourceVersion."""
        query = {"limit": str(self.options.page_size)}
        if cont:
            query["continue"] = cont
        if self.kind.field_selector:
            query["fieldSelector"] = self.kind.field_selector
        page = self.client.request(
            "GET", self.kind.path(self.options.namespace), query=query,
            timeout=(self.options.connect_timeout, self.options.read_timeout),
        )
        meta = page.get("metadata") or {}
        return (page.get("items") or [], str(meta.get("continue") or ""),
                str(meta.get("resourceVersion") or ""))

    def _watch(self) -> bool:
        """Stream events from ``self.rv``, advancing it; whether any event came."""
        assert self.rv is not None
        progressed = False
        timeout = int(self.options.watch_timeout * (1 + random.random()))
        stream = self.client.watch(
            self.kind.path(self.options.namespace), self.rv,
            field_selector=self.kind.field_selector, timeout_seconds=timeout,
            request_timeout=(self.options.connect_timeout, self.options.read_timeout),
        )
        with self._lock:
            self._stream = stream
        if self.stopping.is_set():  # stopped before the stream could be stopped
            return False
        try:
            for etype, obj in stream:
                if self.stopping.is_set():
                    break
                if etype == "ERROR":
                    if is_gone(obj):
                        raise Gone()
                    raise RuntimeError(f"watch error: {obj.get('message')}")
                if etype == "ADDED" or etype == "MODIFIED":
                    self.store.upsert(self.kind, obj)
                elif etype == "DELETED":
                    self.store.delete(self.kind, obj)
                # Kept on self, so a broken stream resumes from the last event or
                # BOOKMARK seen rather than replaying (or 410ing) from an older one.
                self.rv = str((obj.get("metadata") or {}).get("resourceVersion") or self.rv)
                if not progressed:  # the connection works: the next failure starts afresh
                    progressed = True
                    self._recovered()
        finally:
            with self._lock:
                self._stream = None
        return progressed


class ApiSource:
    """A source (``async run(publish)``) fed by the Kubernetes API."""

    def __init__(self, client: KubeClient, options: ApiOptions | None = None) -> None:
        self.client = client
        self.options = options or ApiOptions()
        self.store = Store(self.options.watched_kinds(),
                           extra_secrets=self.options.extra_secrets,
                           limits=self.options.limits)
        self._subscribers: list[Publish] = []
        self.last: ClusterState | None = None
        """The last published state (None before the first complete sync)."""
        self.reflectors: list[Reflector] = []
        """One per watched kind while :meth:`run` runs (their ``rv`` shows progress)."""

    def subscribe(self, callback: Publish) -> None:
        """Also call ``callback`` with every published state (the status writer)."""
        self._subscribers.append(callback)

    def start(self) -> None:
        """Start listing and watching every kind now, before :meth:`run` (which
        otherwise starts them): at start-up the first list, most of the time until
        kxds is ready, then overlaps the rest of the process's setup. The store
        fills meanwhile; nothing is published before :meth:`run`."""
        if self.reflectors:
            return
        self.reflectors = [Reflector(k, self.client, self.store, self.options)
                           for k in self.options.watched_kinds()]
        for r in self.reflectors:
            r.start()

    def stop(self) -> None:
        """Stop the watches :meth:`start` started (:meth:`run` stops its own when it
        ends: this is for a process whose set-up failed before it ran)."""
        reflectors, self.reflectors = self.reflectors, []
        for r in reflectors:
            r.stop()

    async def run(self, publish: Publish) -> None:
        """Watch until cancelled; publish after the first complete sync and on changes."""
        loop = asyncio.get_running_loop()
        changed = asyncio.Event()

        def notify() -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closing
                loop.call_soon_threadsafe(changed.set)

        self.store.on_change = notify
        changed.set()  # what was listed since start() is looked at once
        self.start()
        reflectors = self.reflectors
        published = -1
        try:
            while True:
                await changed.wait()
                changed.clear()
                # Off the loop: indexing tens of thousands of objects takes a
                # noticeable time, and the xDS streams share this loop.
                state, generation = await asyncio.to_thread(self.store.snapshot)
                if state is None or generation == published:
                    continue
                published = generation
                self.last = state
                publish(state)
                for callback in self._subscribers:
                    callback(state)
        finally:
            self.reflectors = []  # a run after this one starts afresh
            for r in reflectors:
                r.stop()
            await asyncio.to_thread(_join, reflectors, 5.0)


def _in_background(call: Callable[[str], _T], arg: str, name: str) -> Future[_T]:
    """``call(arg)`` in a daemon thread of its own, like the reflectors' (a request
    stuck until its read timeout never holds up the process's exit, as an executor's
    threads would)."""
    future: Future[_T] = Future()

    def run() -> None:
        try:
            future.set_result(call(arg))
        except BaseException as e:  # handed to the caller, which re-raises it
            future.set_exception(e)

    threading.Thread(target=run, name=name, daemon=True).start()
    return future


def _join(reflectors: list[Reflector], timeout: float) -> None:
    """Wait for the stopped threads, ``timeout`` in all (they are daemons anyway)."""
    deadline = time.monotonic() + timeout
    for r in reflectors:
        r.thread.join(max(0.0, deadline - time.monotonic()))
