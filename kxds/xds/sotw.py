"""State-of-the-world xDS: the stream state machine (no gRPC here).

Rules (Envoy xds_protocol, "ACK/NACK and resource type instance version",
"When to send an update", "Grouping resources into responses"):

* the node comes from the first request; later requests may omit it;
* a request whose ``response_nonce`` is not the last nonce sent for its type
  is stale and ignored; SotW requests carry the full subscription, so the next
  fresh one loses nothing. A request repeating the last nonce after its ACK
  changes the subscription (Envoy asks for a new cluster's endpoints so);
* ACK = fresh nonce and no ``error_detail``; NACK = ``error_detail`` set, and
  Envoy's ``version_info`` is then the last version it accepted;
* clusters and listeners are full state: every response carries all of them
  (Envoy subscribes wildcard; a client naming them gets all it named) and an
  absent one is removed. Endpoints, routes and secrets are named: a
  response carries only requested resources and only those that changed (an
  absent one is simply not updated; an unknown name is never answered);
* no response when the type version equals the one Envoy holds: a reconnecting
  Envoy whose ``version_info`` matches gets nothing (versions are content
  hashes, so this holds across a kxds restart too). For named types the
  version also hashes the subscribed names: a reply carries only what changed,
  so the view's version alone would not say which names Envoy got. An Envoy
  that subscribed to more names and lost its stream before the answer (kxds
  killed mid-push) reports a version that no longer matches, and gets them.
"""

from __future__ import annotations

import hashlib
import sys
from typing import Any

from kxds.xds.cache import View, type_version
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


class SotwStream(ProtocolStream):
    """One state-of-the-world stream (ADS or a single-type service)."""

    protocol = "sotw"

    def on_request(self, req: Any) -> BadRequest | None:
        """Take one ``DiscoveryRequest``; returns what was wrong with it, if anything."""
        type_url = str(req.type_url)
        bad = self.check_type(type_url)
        if bad is not None:
            return self.bad(bad)
        names = req.resource_names
        bad = self.too_many_names(type_url, len(names))  # counted as sent, no copy made
        if bad is not None:
            return bad
        st = self.states[type_url]
        nonce = str(req.response_nonce)
        if nonce:
            if nonce != st.last_nonce:
                # Stale (an older response) or never sent by us: ignore it.
                log.debug("event=stale_nonce node=%s type=%s nonce=%s",
                          self.identity.node_id, type_url, nonce)
                return None
            reply = st.pending
            if reply is not None:
                if req.HasField("error_detail"):
                    self.nack(st, reply, str(req.error_detail.message))
                else:
                    self.ack(st, reply)
                st.version_held = str(req.version_info)[:MAX_VERSION]
            # Otherwise a new subscription with the latest nonce (already ACKed).
        elif not st.subscribed and req.version_info:
            # First request on a new stream from an Envoy that already holds a
            # version (it reconnected, or kxds restarted): trust the content hash.
            st.version_held = str(req.version_info)[:MAX_VERSION]
        # Interned: every stream's subscriptions then share one string per name.
        self._subscribe(st, [sys.intern(str(n)) for n in names])
        return None

    def _subscribe(self, st: TypeState, names: list[str]) -> None:
        first = not st.subscribed
        was_wildcard = st.wildcard
        previous = st.names
        st.subscribed = True
        st.wildcard = st.type_url in WILDCARD_TYPES and (not names or "*" in names)
        new = set(names) - {"*"}
        if not st.wildcard:
            for gone in st.names - new:
                # Envoy drops what it unsubscribes; a later subscribe resends it.
                # (Nothing of it is kept: streams outlive many names under churn.)
                st.held.pop(gone, None)
                st.objs.pop(gone, None)
                st.acked.pop(gone, None)
        st.dirty |= new - st.names
        st.names = new
        if first and st.version_held:
            st.held = {}
            st.objs = {}
        if first or was_wildcard != st.wildcard:
            st.resync()
        if st.type_url not in WILDCARD_TYPES and (first or new != previous):
            st.names_digest = _digest(new)

    def plan(self, st: TypeState, view: View, names: set[str] | None) -> Plan | None:
        """Full state for clusters and listeners, changed named resources otherwise.

        Clusters and listeners carry every resource the client asked for in each
        response, wildcard or not: one left out is deleted ("Grouping Resources
        into Responses"). A named subscription (e.g. a gRPC client's) then gets
        the version of its own subset, so subscribing to one more name is answered.
        """
        full_state = st.type_url in WILDCARD_TYPES
        if names is not None and not full_state and not st.rejected:
            resources = changed(st.desired_subset(view, names), st)
            if not resources:
                return None
            return Plan(resources, [], _named(view.type_version(st.type_url), st), {})
        desired, version = st.desired(view)
        if full_state and not st.wildcard:
            version = type_version(desired.values())
        elif not full_state:
            version = _named(version, st)
        if not st.held and st.version_held and version == st.version_held:
            # Reconnected with the current version: adopt it, send nothing.
            st.held = {n: r.version for n, r in desired.items()}
            st.objs = dict(desired)
            st.acked = dict(desired)
            return None
        if full_state:
            if version == st.version_held and not (st.force & desired.keys()):
                return None
            removed = sorted(n for n in st.held if n not in desired)
            return Plan([desired[n] for n in sorted(desired)], removed, version, desired)
        resources = changed(desired, st)
        if not resources:
            return None
        return Plan(resources, [], version, {})

    def without_removals(self, st: TypeState, plan: Plan) -> Plan | None:
        """Keep the removed resources one more round (they go once later types settle)."""
        kept = dict(plan.full)
        kept.update({n: st.objs[n] for n in plan.removed if n in st.objs})
        if {n: r.version for n, r in kept.items()} == st.held:
            return None
        return Plan([kept[n] for n in sorted(kept)], [], type_version(kept.values()), kept,
                    set(plan.removed))

    def commit(self, st: TypeState, plan: Plan) -> None:
        """Envoy will hold ``plan`` (all of it for clusters and listeners)."""
        if st.type_url in WILDCARD_TYPES:
            st.held = {n: r.version for n, r in plan.full.items()}
            st.objs = dict(plan.full)
        else:
            for res in plan.resources:
                st.held[res.name] = res.version
                st.objs[res.name] = res
        st.version_held = plan.version


def _digest(names: set[str]) -> str:
    """A hash of a subscription's names (computed when they change, not per reply)."""
    return hashlib.sha256("\n".join(sorted(names)).encode()).hexdigest()[:16]


def _named(version: str, st: TypeState) -> str:
    """The version of a named type's reply: the resources' version and the names."""
    return hashlib.sha256(f"{version}:{st.names_digest}".encode()).hexdigest()[:16]
