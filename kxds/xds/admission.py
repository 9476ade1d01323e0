"""Which new xDS streams kxds takes: caps per client identity and on groups in all.

A *client* is who opened the stream, as far as kxds can tell: by default the
peer's address without its port (``ipv4:10.0.0.7``), since a node id or
``node.cluster`` is whatever the client writes. :data:`ClientKey` is the
function that says it, so a certificate identity can take its place; every
stream behind one address (a NAT, a sidecar proxy) counts as one client.

Per client: at most ``max_streams_per_client`` open streams, and at most
``max_groups_per_client`` groups among those its open streams are in and
those it was the last to leave that are not forgotten yet (the controller
forgets a group without streams after its grace period), so opening and
closing streams with ever new ``node.cluster`` values gains nothing. In all:
a stream that would create a group beyond ``max_groups`` is refused. Streams
of groups that exist are never refused for the global cap.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from kxds.xds.cache import SnapshotCache
from kxds.xds.identity import NodeIdentity
from kxds.xds.limits import XdsLimits
from kxds.xds.protocol import BadRequest

ClientKey = Callable[[Any, NodeIdentity], str]
"""``(grpc servicer context, node identity) -> client identity``."""


def peer_client(context: Any, identity: NodeIdentity) -> str:
    """The peer's address without its port (``ipv4:10.0.0.7``, ``ipv6:[fd00::7]``)."""
    peer = str(context.peer())
    kind, sep, rest = peer.partition(":")
    if sep and kind in ("ipv4", "ipv6") and ":" in rest:
        return f"{kind}:{rest.rsplit(':', 1)[0]}"
    return peer


def _refusal(reason: str, message: str) -> BadRequest:
    return BadRequest(reason, message, fatal=True, code="RESOURCE_EXHAUSTED")


class Admission:
    """Counts streams and groups per client; refuses what would exceed a cap."""

    def __init__(self, cache: SnapshotCache, limits: XdsLimits) -> None:
        self.cache = cache
        self.limits = limits
        self._open: dict[str, Counter[str]] = {}
        """client -> group -> open streams."""
        self._left: dict[str, str] = {}
        """group without streams -> the client whose stream left it last."""
        self._idle: dict[str, set[str]] = {}
        """client -> the groups it left last that are not forgotten yet."""
        cache.removal_listeners.append(self._forget_group)

    def admit(self, client: str, group: str) -> BadRequest | None:
        """Why a new stream of ``client`` in ``group`` is refused, or None."""
        lim = self.limits
        open_ = self._open.get(client, Counter())
        if open_.total() >= lim.max_streams_per_client:
            return _refusal("streams_per_client", f"client {client} has {open_.total()} "
                            f"open streams; kxds allows {lim.max_streams_per_client} "
                            "(--max-streams-per-client)")
        groups = self.groups_of(client)
        if group not in groups and len(groups) >= lim.max_groups_per_client:
            return _refusal("groups_per_client", f"client {client} is in {len(groups)} groups "
                            f"({', '.join(sorted(groups)[:3])}, ...); kxds allows "
                            f"{lim.max_groups_per_client} (--max-groups-per-client)")
        known = self.cache.groups()
        if group not in known and len(known) >= lim.max_groups:
            return _refusal("groups", f"{len(known)} groups exist; kxds serves at most "
                            f"{lim.max_groups} (--max-groups)")
        return None

    def groups_of(self, client: str) -> set[str]:
        """The groups counted against ``client``."""
        return set(self._open.get(client, ())) | self._idle.get(client, set())

    def opened(self, client: str, group: str) -> None:
        """A stream was admitted."""
        self._forget_group(group)  # in use again: no longer anyone's idle group
        self._open.setdefault(client, Counter())[group] += 1

    def closed(self, client: str, group: str) -> None:
        """An admitted stream ended (after the cache dropped its watch)."""
        open_ = self._open.get(client)
        if open_ is None:
            return
        open_[group] -= 1
        if open_[group] <= 0:
            del open_[group]
        if not open_:
            del self._open[client]
        if self.cache.idle_since(group) is not None:
            self._left[group] = client
            self._idle.setdefault(client, set()).add(group)

    def clients(self) -> int:
        """How many clients are tracked (open streams, or groups not yet forgotten)."""
        return len(self._open.keys() | self._idle.keys())

    def _forget_group(self, group: str) -> None:
        client = self._left.pop(group, None)
        if client is None:
            return
        idle = self._idle.get(client)
        if idle is not None:
            idle.discard(group)
            if not idle:
                del self._idle[client]
