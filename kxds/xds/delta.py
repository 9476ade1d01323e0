"""Incremental (delta) xDS: the stream state machine (no gRPC here).

Rules (Envoy xds_protocol, "Incremental xDS"):

* subscriptions are changed by ``resource_names_subscribe`` /
  ``resource_names_unsubscribe`` on any request, whatever its nonce: delta
  requests are not idempotent, so none may be dropped;
* clusters and listeners are wildcard when the first request of the type
  subscribes to nothing, or whenever ``*`` is subscribed (until unsubscribed);
* ``initial_resource_versions`` on the first request of a type says what the
  client already holds (it reconnected): only what differs is sent, and what
  the client holds but the server no longer has goes out in
  ``removed_resources``;
* the first wildcard reply goes out even when empty: a starting Envoy waits for
  it before it finishes initializing;
* a changed resource is sent alone to each subscriber; an unsubscribed one is
  forgotten without a removal;
* a subscribed name the server does not have goes out in ``removed_resources``
  ("Knowing When a Requested Resource Does Not Exist"), once per subscription,
  so a starting Envoy need not wait for its initial fetch timeout; a name
  subscribed again is answered again, even one the client says it holds;
* ACK/NACK is by ``response_nonce`` (+ ``error_detail``); a NACK rolls back only
  the resources Envoy names, which keep their last ACKed version.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from typing import Any

from kxds.envoy.resource import Resource
from kxds.xds.cache import View
from kxds.xds.protocol import (
    MAX_VERSION,
    WILDCARD_TYPES,
    BadRequest,
    Plan,
    ProtocolStream,
    TypeState,
    changed,
    log,
)


class DeltaStream(ProtocolStream):
    """One delta stream (ADS or a single-type service)."""

    protocol = "delta"

    def on_request(self, req: Any) -> BadRequest | None:
        """Take one ``DeltaDiscoveryRequest``; returns what was wrong with it, if anything."""
        type_url = str(req.type_url)
        bad = self.check_type(type_url)
        if bad is not None:
            return self.bad(bad)
        st = self.states[type_url]
        bad = self._check_size(st, req)
        if bad is not None:
            return bad
        nonce = str(req.response_nonce)
        if nonce:
            if st.pending is not None and nonce == st.pending.nonce:
                if req.HasField("error_detail"):
                    self.nack(st, st.pending, str(req.error_detail.message))
                else:
                    self.ack(st, st.pending)
            else:
                log.debug("event=stale_nonce node=%s type=%s nonce=%s",
                          self.identity.node_id, type_url, nonce)
        if not st.subscribed:
            st.subscribed = True
            st.wildcard = type_url in WILDCARD_TYPES and not req.resource_names_subscribe
            st.held = {str(k): str(v)[:MAX_VERSION]
                       for k, v in req.initial_resource_versions.items()}
            st.answered = bool(st.held)
            st.claimed = set(st.held)
            first = True
        else:
            first = False
        # Interned: every stream's subscriptions then share one string per name.
        self._subscribe(st, [sys.intern(str(n)) for n in req.resource_names_subscribe],
                        [str(n) for n in req.resource_names_unsubscribe], first)
        return None

    def _check_size(self, st: TypeState, req: Any) -> BadRequest | None:
        """Refuse a request that would leave more names subscribed (or claimed held)
        than the stream may have."""
        cap = self.limits.max_subscribed_names
        held = len(req.initial_resource_versions)
        if held > cap:
            return self.too_many_names(st.type_url, held)
        subscribe = req.resource_names_subscribe
        if len(st.names) + len(subscribe) <= cap:
            return None  # the cheap bound suffices (every request of a normal client)
        if len(subscribe) > cap:
            return self.too_many_names(st.type_url, len(subscribe))  # counted as sent
        after = (st.names | set(subscribe)) - set(req.resource_names_unsubscribe) - {"*"}
        return self.too_many_names(st.type_url, len(after))

    @staticmethod
    def _subscribe(st: TypeState, subscribe: list[str], unsubscribe: list[str],
                   first: bool = False) -> None:
        was_wildcard = st.wildcard
        if "*" in subscribe:
            st.wildcard = True
        if "*" in unsubscribe:
            st.wildcard = False
        st.names |= set(subscribe) - {"*"}
        st.names -= set(unsubscribe)
        for name in unsubscribe:
            if not st.wildcard:
                # Envoy forgets it; so do we (streams outlive many names under churn).
                st.held.pop(name, None)
                st.acked.pop(name, None)
            st.force.discard(name)
            st.absent.discard(name)
        for name in subscribe:
            # A (re)subscription asks for the resource even if the client held it
            # before ("the server must still provide those resources"), unless it
            # says so in the initial_resource_versions of this very request.
            if not first or name in st.objs:
                st.held.pop(name, None)
                st.objs.pop(name, None)
            st.absent.discard(name)
            st.dirty.add(name)
        if was_wildcard != st.wildcard:
            if not st.wildcard:
                for name in [n for n in st.held if n not in st.names]:
                    del st.held[name]
            st.resync()

    def plan(self, st: TypeState, view: View, names: set[str] | None) -> Plan | None:
        """Changed or new resources, and removals of what the client holds but we lack."""
        if names is None:
            desired, version = st.desired(view)
            removed = sorted(n for n in st.held if n not in desired)
            candidates: Iterable[str] = st.names
        else:
            desired = st.desired_subset(view, names)
            version = view.type_version(st.type_url)
            removed = sorted(n for n in names if n in st.held and n not in desired)
            candidates = st.names.intersection(names)
        by_name = view.of_type(st.type_url)
        absent = sorted(n for n in candidates if n not in by_name and n not in st.held
                        and n not in st.absent)
        resources = changed(desired, st)
        if st.claimed:
            _adopt_claimed(st, desired)
        if not resources and not removed and not absent:
            if st.wildcard and not st.answered:
                # A fresh client waits for its first wildcard reply to finish
                # initializing, even when there is nothing to send yet.
                return Plan([], [], version, {})
            return None
        return Plan(resources, removed, version, {}, absent=absent)

    def without_removals(self, st: TypeState, plan: Plan) -> Plan | None:
        """Send the additions now; the removals once later types settle."""
        if not plan.resources and not plan.absent:
            return None
        return Plan(plan.resources, [], plan.version, {}, set(plan.removed), plan.absent)

    def commit(self, st: TypeState, plan: Plan) -> None:
        """The client will hold these versions and none of the removed names."""
        for res in plan.resources:
            st.held[res.name] = res.version
            st.objs[res.name] = res
        for name in plan.removed:
            st.held.pop(name, None)
            st.objs.pop(name, None)
        # Told it does not exist: not again until it exists or is subscribed anew.
        st.absent |= {n for n in plan.removed if n in st.names}
        st.absent.update(plan.absent)
        st.absent.difference_update(r.name for r in plan.resources)


def _adopt_claimed(st: TypeState, desired: Mapping[str, Resource]) -> None:
    """Record as ACKed what a reconnecting client holds at the current version.

    Its ``initial_resource_versions`` named them and nothing is sent for them
    (versions are content hashes, the same across a kxds restart): the client
    has exactly these resources, as if it had ACKed them on this stream.
    """
    for name in list(st.claimed):  # costs what the client claimed, not the view's size
        held = st.held.get(name)
        res = desired.get(name)
        if held is None:  # since removed, unsubscribed or replaced
            st.claimed.discard(name)
        elif res is not None:
            if held == res.version and name not in st.acked:
                st.acked[name] = res
                st.objs[name] = res
            st.claimed.discard(name)
