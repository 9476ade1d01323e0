"""What both xDS protocol variants share: per-type state, ACK/NACK, ordering.

A stream state machine (:class:`kxds.xds.sotw.SotwStream`,
:class:`kxds.xds.delta.DeltaStream`) is fed requests and, given the group's
current :class:`~kxds.xds.cache.View`, says which :class:`Reply` values to
send next, in order. It knows no gRPC and is unit-tested directly.

Rules ported from Envoy's xDS protocol documentation
(https://www.envoyproxy.io/docs/envoy/latest/api-docs/xds_protocol):

* one response in flight per type: the next one waits for the ACK/NACK of the
  previous (go-control-plane keeps one watch per request for the same reason),
  so a rejected version is known before anything is built on top of it;
* additions go clusters -> endpoints -> listeners -> routes -> secrets; listeners
  and routes also wait for the clusters reply's ACK, which Envoy sends only
  once new clusters are warm (have their endpoints): a route never points at a
  cluster that cannot take traffic yet (held at most WARMING_HOLD_LIMIT).
  Endpoints and secrets never wait for that ACK: warming clusters need them;
* a type's removals wait until the types that refer to it have nothing left
  to send or to be ACKed (clusters after the routes and listeners that used
  them, route tables after listeners, endpoints after clusters): "make before
  break", see "eventual consistency considerations";
* a cluster sent again is followed by its endpoints: Envoy warms a changed
  cluster and needs its ClusterLoadAssignment again ("resource warming");
* a NACK names the resources Envoy rejected in its error text; only those are
  rolled back to their last ACKed version, their rejected version is never sent
  again, and the record keeps Envoy's words and the objects they came from.
  When the text names none of them, every resource of the reply is rejected.
  Unless the error can pass by itself (a port still in use, a file not yet
  there: :mod:`kxds.xds.retry`): then that version is offered again with
  backoff until Envoy accepts it or the view moves on;
* a stream may subscribe to at most ``max_subscribed_names`` names per type
  (:mod:`kxds.xds.limits`); a request beyond that ends it with
  ``RESOURCE_EXHAUSTED``.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kxds.envoy.resource import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    ROUTE,
    SECRET,
    TYPE_ORDER,
    Resource,
)
from kxds.xds.cache import View, type_version
from kxds.xds.identity import NodeIdentity
from kxds.xds.limits import DEFAULTS, XdsLimits
from kxds.xds.metrics import XdsMetrics, short
from kxds.xds.retry import (
    Retry,
    error_for,
    find_name,
    forget_rejected,
    is_transient,
    remember_rejected,
    schedule,
)
from kxds.xds.tracker import NodeRecord, NodeTracker

log = logging.getLogger("kxds.xds")

WILDCARD_TYPES = frozenset({CLUSTER, LISTENER})
"""Types Envoy subscribes to as a whole (empty or ``*`` names)."""
KNOWN_TYPES = frozenset(TYPE_ORDER)

USERS = {CLUSTER: (LISTENER, ROUTE), ENDPOINT: (CLUSTER,), ROUTE: (LISTENER,),
         SECRET: (LISTENER, CLUSTER)}
"""Which types refer to resources of a type: its removals wait until those settle."""

WAIT_FOR_WARM_CLUSTERS = frozenset({LISTENER, ROUTE})
"""Types held back while a clusters reply is unACKed. Envoy withholds the CDS ACK
until the new or changed clusters have warmed (got their endpoints), so routes
and listeners that use them go out only once they can take traffic."""

WARMING_HOLD_LIMIT = 5.0
"""Seconds to hold listeners and routes for warming clusters at most (a cluster
that never warms must not freeze every other change)."""


MAX_VERSION = 64
"""Characters of a version a client reports that are kept (kxds's own have 16)."""
MAX_ERROR_KEPT = 4096
"""Characters of a NACK's error text kept in records and log lines (a client
may send megabytes of it)."""
MAX_ERROR_SEARCHED = 256 * 1024
"""Characters of a NACK's error text searched for names of unusual spelling."""
_TOKEN = re.compile(r"[\w./-]+")


def blamed_names(error: str, names: Iterable[str]) -> set[str]:
    """The resource names that Envoy's error text mentions as whole words.

    Linear in the text and the names: most names are one token of the text
    (letters, digits, ``_ . / -``); any other is looked for in its first
    :data:`MAX_ERROR_SEARCHED` characters only.
    """
    tokens = set(_TOKEN.findall(error))
    head = error[:MAX_ERROR_SEARCHED]
    return {name for name in names if name in tokens or (
        name and _TOKEN.fullmatch(name) is None and name in head and find_name(head, name) >= 0)}


def _kept(error: str) -> str:
    """``error`` cut to :data:`MAX_ERROR_KEPT` characters, saying how long it was."""
    if len(error) <= MAX_ERROR_KEPT:
        return error
    return f"{error[:MAX_ERROR_KEPT]}... ({len(error)} characters)"


@dataclass(frozen=True, slots=True)
class BadRequest:
    """A request the stream refuses (``fatal``: end it) or ignores."""

    reason: str
    message: str
    fatal: bool = False
    code: str = "INVALID_ARGUMENT"
    """The gRPC status a fatal refusal ends the stream with (``RESOURCE_EXHAUSTED``:
    a limit of :class:`~kxds.xds.limits.XdsLimits`, named by ``reason``)."""


@dataclass(slots=True)
class Reply:
    """One response to write: resources in order, removals (delta), versions."""

    type_url: str
    resources: list[Resource]
    removed: list[str]
    version: str
    nonce: str
    set_at: float
    sent_at: float
    full: Mapping[str, Resource] = field(default_factory=dict)
    """SotW: everything Envoy holds of this type once it accepts the reply."""


@dataclass(slots=True)
class Plan:
    """What a type would send now (before a nonce is assigned)."""

    resources: list[Resource]
    removed: list[str]
    version: str
    full: Mapping[str, Resource]
    deferred: set[str] | None = None
    """Removals postponed by make-before-break (planned again later)."""
    absent: list[str] = field(default_factory=list)
    """Delta: subscribed names the view does not have and the client does not
    hold, announced in ``removed_resources`` (never postponed: nothing breaks)."""


@dataclass(slots=True)
class TypeState:
    """Per-stream, per-type subscription and delivery state."""

    type_url: str
    subscribed: bool = False
    wildcard: bool = False
    names: set[str] = field(default_factory=set)
    held: dict[str, str] = field(default_factory=dict)
    """name -> version Envoy holds, assuming the in-flight reply is accepted."""
    objs: dict[str, Resource] = field(default_factory=dict)
    """name -> the Resource last sent (SotW needs bodies to keep a removed cluster)."""
    acked: dict[str, Resource] = field(default_factory=dict)
    version_held: str = ""
    acked_version: str = ""
    pending: Reply | None = None
    last_nonce: str = ""
    """The nonce of the last reply of this type (Envoy repeats it on later requests)."""
    rejected: dict[str, list[str]] = field(default_factory=dict)
    """name -> versions Envoy rejected, never sent again (bounded, oldest dropped)."""
    absent: set[str] = field(default_factory=set)
    """Delta: subscribed names already announced as not existing."""
    force: set[str] = field(default_factory=set)
    answered: bool = False
    """Whether a reply of this type went out (or the client said what it holds)."""
    retries: dict[str, Retry] = field(default_factory=dict)
    """name -> a rejected version to offer again (the error may pass), bounded."""
    names_digest: str = ""
    """SotW named types: a hash of ``names``, part of every reply's version."""
    claimed: set[str] = field(default_factory=set)
    """Delta: names the client said it holds on connecting, not yet compared with the view
    (those at the current version are then recorded as ACKed: it has them)."""

    synced: Mapping[str, Resource] | None = None
    """The view mapping this state was last fully reconciled with (None: never)."""
    dirty: set[str] = field(default_factory=set)
    """Names to look at again since ``synced`` (subscriptions, rollbacks, deferrals)."""

    @property
    def pending_version(self) -> str | None:
        """The version of the reply in flight, if any."""
        return self.pending.version if self.pending is not None else None

    def resync(self) -> None:
        """Forget ``synced``: the next plan looks at every resource."""
        self.synced = None
        self.dirty.clear()

    def release(self) -> None:
        """The stream ended: drop what only a live stream needs (subscriptions,
        work lists); what the proxy was sent and ACKed stays for the config dump."""
        self.names = set()
        self.dirty = set()
        self.force = set()
        self.absent = set()
        self.synced = None
        self.pending = None
        self.retries = {}
        # Delta: versions the client claimed on connecting, never sent by kxds.
        self.held = {n: v for n, v in self.held.items() if n in self.objs}

    def desired_subset(self, view: View, names: Iterable[str]) -> dict[str, Resource]:
        """:meth:`desired`, for some names only."""
        by_name = view.of_type(self.type_url)
        out = {}
        for name in names:
            res = by_name.get(name)
            if res is None or not (self.wildcard or name in self.names):
                continue
            if res.version in self.rejected.get(name, ()):
                res = self.acked.get(name)
                if res is None:
                    continue
            out[name] = res
        return out

    def desired(self, view: View) -> tuple[Mapping[str, Resource], str]:
        """What this subscription should hold now (rejected versions rolled back),
        and its type version."""
        by_name = view.of_type(self.type_url)
        if not self.rejected:
            # The type's version in the view: every stream of the group shares it.
            if self.wildcard:
                return by_name, view.type_version(self.type_url)
            return ({n: by_name[n] for n in self.names if n in by_name},
                    view.type_version(self.type_url))
        if self.wildcard:
            base = dict(by_name)
        else:
            base = {n: by_name[n] for n in self.names if n in by_name}
        for name in [n for n, r in base.items() if r.version in self.rejected.get(n, ())]:
            previous = self.acked.get(name)
            if previous is not None:
                base[name] = previous
            else:
                del base[name]
        return base, type_version(base.values())


class ProtocolStream:
    """Base of the SotW and delta stream state machines."""

    protocol = "?"

    def __init__(self, identity: NodeIdentity, tracker: NodeTracker,
                 metrics: XdsMetrics | None = None,
                 types: Iterable[str] = TYPE_ORDER, limits: XdsLimits = DEFAULTS) -> None:
        self.identity = identity
        self.metrics = metrics
        self.limits = limits
        self.clock: Callable[[], float] = time.monotonic
        """The stream's time (``time.monotonic``; tests set their own)."""
        self.tracker = tracker
        self.types = tuple(types)
        self.states = {t: TypeState(t) for t in self.types}
        self.wake_at: float | None = None
        """When to look again at replies held back (see :meth:`next_replies`)."""
        self.record: NodeRecord = tracker.connect(identity, self.protocol, self.states)
        self._nonce = 0
        self._logged: set[str] = set()
        """Reasons of bad requests already logged on this stream."""

    def close(self) -> None:
        """The stream ended: its subscriptions are released at once."""
        for st in self.states.values():
            st.release()
        self.tracker.disconnect(self.identity)

    # -- requests ----------------------------------------------------------

    def on_request(self, req: Any) -> BadRequest | None:
        """Take one request message; returns what was wrong with it, if anything."""
        raise NotImplementedError

    def check_type(self, type_url: str) -> BadRequest | None:
        """Refuse requests without a type; ignore types this stream does not serve."""
        if not type_url:
            return BadRequest("no_type_url", "request without type_url", fatal=True)
        if type_url not in self.states:
            return BadRequest("unknown_type", f"type {type_url!r} is not served here")
        return None

    def too_many_names(self, type_url: str, count: int) -> BadRequest | None:
        """Refuse a subscription of more than ``max_subscribed_names`` names."""
        cap = self.limits.max_subscribed_names
        if count <= cap:
            return None
        return BadRequest(
            "subscribed_names", f"{count} {short(type_url)} names on one stream; kxds serves "
            f"at most {cap} per type (--max-subscribed-names)", fatal=True,
            code="RESOURCE_EXHAUSTED")

    def bad(self, bad: BadRequest) -> BadRequest:
        """Count a refused or ignored request; log it once per stream and reason (a
        client repeating it gets a debug line each time, not a warning)."""
        level = logging.DEBUG if bad.reason in self._logged else logging.WARNING
        self._logged.add(bad.reason)
        log.log(level, "event=bad_request node=%s protocol=%s reason=%s message=%r",
                self.identity.node_id, self.protocol, bad.reason, bad.message[:300])
        if self.metrics is not None:
            self.metrics.bad_requests.labels(bad.reason).inc()
        return bad

    def ack(self, st: TypeState, reply: Reply) -> None:
        """Envoy accepted ``reply``."""
        st.pending = None
        if reply.full:
            st.acked = dict(reply.full)
        else:
            for res in reply.resources:
                st.acked[res.name] = res
            for name in reply.removed:
                st.acked.pop(name, None)
        st.acked_version = reply.version
        if st.retries:
            for res in reply.full.values() if reply.full else reply.resources:
                retry = st.retries.get(res.name)
                if retry is not None and retry.version == res.version:
                    del st.retries[res.name]  # the passing error passed
                    log.info("event=nack_healed node=%s type=%s resource=%s version=%s "
                             "attempts=%d", self.identity.node_id, short(st.type_url),
                             res.name, res.version, retry.attempts)
        if self.metrics is not None:
            self.metrics.observe_ack(st.type_url, max(0.0, time.monotonic() - reply.set_at))

    def nack(self, st: TypeState, reply: Reply, error: str) -> None:
        """Envoy rejected (part of) ``reply``: roll back only what it names."""
        st.pending = None
        sent = {r.name: r for r in reply.resources}
        for name in reply.removed:
            # Envoy applies a rejected reply's removals too (its CDS/LDS update
            # removes, then adds what it can): what it holds no longer includes
            # them, so a later rollback must not "keep" a removed resource.
            st.acked.pop(name, None)
        # Only what changed can be at fault: a full-state reply repeats the rest.
        new = {n for n, r in sent.items()
               if (prev := st.acked.get(n)) is None or prev.version != r.version}
        names = blamed_names(error, new) or new
        error = _kept(error)
        st.dirty |= names
        now = self.clock()
        retrying = []
        for name, res in sent.items():
            if name not in names:
                st.acked[name] = res  # Envoy applies the resources it did not reject
                continue
            remember_rejected(st.rejected, name, res.version)
            if is_transient(error_for(name, error, names)):
                retry = schedule(st.retries, name, res.version, error, now,
                                 self.limits.nack_retry_initial, self.limits.nack_retry_max)
                retrying.append(f"{name}@{retry.due - now:.0f}s")
            previous = st.acked.get(name)
            if previous is None:
                st.held.pop(name, None)
                st.objs.pop(name, None)
            else:
                st.held[name] = previous.version
                st.objs[name] = previous
        rejected = [sent[n] for n in sorted(names)]
        NodeTracker.nacked(self.record, st.type_url, rejected, error, st.acked)
        if self.metrics is not None:
            self.metrics.nacks.labels(short(st.type_url)).inc()
        log.warning(
            "event=nack node=%s group=%s protocol=%s type=%s nonce=%s resources=%s "
            "versions=%s refs=%s error=%r", self.identity.node_id, self.identity.group,
            self.protocol, short(st.type_url), reply.nonce,
            ",".join(r.name for r in rejected), ",".join(r.version for r in rejected),
            ";".join(str(ref) for r in rejected for ref in r.refs), error)
        if retrying:
            log.info("event=nack_retry_scheduled node=%s type=%s retry=%s",
                     self.identity.node_id, short(st.type_url), ",".join(retrying))

    # -- responses ---------------------------------------------------------

    def plan(self, st: TypeState, view: View, names: set[str] | None) -> Plan | None:
        """What ``st`` would send now; None when Envoy is up to date.

        ``names``: only these can differ from what Envoy holds (None: any).
        """
        raise NotImplementedError

    def without_removals(self, st: TypeState, plan: Plan) -> Plan | None:
        """The same plan with its removals postponed (make before break)."""
        raise NotImplementedError

    def commit(self, st: TypeState, plan: Plan) -> None:
        """Record that ``plan`` is being sent (Envoy will hold it once accepted)."""
        raise NotImplementedError

    def next_replies(self, view: View, now: float | None = None) -> list[Reply]:
        """The replies to send now, in make-before-break order.

        Sets :attr:`wake_at` when a held reply should be reconsidered at a given
        time even if nothing else happens.
        """
        now = self.clock() if now is None else now
        self.wake_at = None
        for st in self.states.values():
            if st.retries:
                self._release_due(st, view, now)
        ready = [t for t in self.types
                 if self.states[t].subscribed and self.states[t].pending is None]
        busy = {t for t in self.types if self.states[t].pending is not None}
        busy |= {t for t in ready if self._plan(self.states[t], view) is not None}
        replies = []
        for type_url in ready:
            if type_url in WAIT_FOR_WARM_CLUSTERS and self._clusters_warming(now):
                continue
            st = self.states[type_url]
            plan = self._plan(st, view)  # again: an earlier reply may have forced some
            if plan is None:
                continue
            if plan.removed and any(u in busy for u in USERS.get(type_url, ())):
                plan = self.without_removals(st, plan)
                if plan is None:
                    continue
            replies.append(self._emit(st, plan, view, now))
        return replies

    def _release_due(self, st: TypeState, view: View, now: float) -> None:
        """Offer again the rejected versions whose retry is due; wake for the next."""
        by_name = view.of_type(st.type_url)
        for name, retry in list(st.retries.items()):
            current = by_name.get(name)
            if current is None or current.version != retry.version:
                del st.retries[name]  # the view moved on: nothing to retry
            elif retry.due > now:
                self._wake(retry.due)
            elif forget_rejected(st.rejected, name, retry.version):
                st.dirty.add(name)
                if self.metrics is not None:
                    self.metrics.nack_retries.labels(short(st.type_url)).inc()
                log.info("event=nack_retry node=%s type=%s resource=%s version=%s attempt=%d",
                         self.identity.node_id, short(st.type_url), name, retry.version,
                         retry.attempts + 1)

    def _wake(self, at: float) -> None:
        self.wake_at = at if self.wake_at is None else min(self.wake_at, at)

    def _clusters_warming(self, now: float) -> bool:
        """Whether a clusters reply awaits its ACK (Envoy ACKs once they are warm)."""
        cds = self.states.get(CLUSTER)
        if cds is None or cds.pending is None:
            return False
        deadline = cds.pending.sent_at + WARMING_HOLD_LIMIT
        if now >= deadline:
            return False
        self._wake(deadline)
        return True

    def _plan(self, st: TypeState, view: View) -> Plan | None:
        # Most views change one type (endpoints): the others are recognized by
        # mapping identity and cost nothing, however many resources they hold.
        source = view.of_type(st.type_url)
        names = source.changes_since(st.synced) if st.synced is not None else None
        if names is not None:
            names |= st.dirty | st.force
            if not names:
                return None
        plan = self.plan(st, view, names)
        if plan is None:
            st.synced = source
            st.dirty.clear()
            st.force.clear()  # nothing forced applies (e.g. endpoints not subscribed yet)
        return plan

    def _emit(self, st: TypeState, plan: Plan, view: View, now: float) -> Reply:
        self._nonce += 1
        removed = sorted([*plan.removed, *plan.absent]) if plan.absent else plan.removed
        reply = Reply(st.type_url, plan.resources, removed, plan.version,
                      str(self._nonce), view.set_at, now, plan.full)
        if st.type_url == CLUSTER and ENDPOINT in self.states:
            eds = self.states[ENDPOINT]
            # A changed cluster is warmed again by Envoy and needs its endpoints.
            eds.force |= {r.name for r in plan.resources
                          if r.name in eds.held and st.held.get(r.name) != r.version}
        self.commit(st, plan)
        st.answered = True
        if plan.deferred is not None:
            st.dirty |= plan.deferred
        else:
            st.synced = view.of_type(st.type_url)
            st.dirty.clear()
        st.force -= {r.name for r in plan.resources}
        st.pending = reply
        st.last_nonce = reply.nonce
        return reply


def changed(desired: Mapping[str, Resource], st: TypeState) -> list[Resource]:
    """Resources whose version differs from what Envoy holds, or that must be resent."""
    held, force = st.held, st.force
    return sorted((r for n, r in desired.items() if held.get(n) != r.version or n in force),
                  key=lambda r: r.name)
