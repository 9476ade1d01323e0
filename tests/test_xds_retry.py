"""A NACK for a reason that can pass is retried with backoff; other NACKs never are.

Driven at the state-machine level (no gRPC, no Envoy), both protocols: the
stream is fed protobuf requests as Envoy would send them and asked what to
send at chosen instants, so the backoff is checked without waiting for it.
"""

from __future__ import annotations

from typing import Any

import pytest
import xds_support as t
from envoy.service.discovery.v3 import discovery_pb2

from kxds.envoy.resource import LISTENER, Resource
from kxds.xds.cache import SnapshotCache, View
from kxds.xds.delta import DeltaStream
from kxds.xds.identity import NodeIdentity
from kxds.xds.limits import XdsLimits
from kxds.xds.metrics import XdsMetrics
from kxds.xds.protocol import ProtocolStream, Reply
from kxds.xds.retry import error_for, is_transient, schedule
from kxds.xds.sotw import SotwStream
from kxds.xds.tracker import NodeTracker

EDGE = NodeIdentity("edge-1", "edge", "edge/default", None, None, "default")
BIND = ("Error adding/updating listener(s) http: cannot bind '127.0.0.1:8080': "
        "Address already in use")
INVALID = "Error adding/updating listener(s) http: Proto constraint validation failed"
PROTOCOLS = [pytest.param(SotwStream, id="sotw"), pytest.param(DeltaStream, id="delta")]


def view_of(*items: Resource) -> View:
    cache = SnapshotCache()
    cache.set_view("edge/default", t.resources(*items))
    cache.mark_synced()
    view = cache.view("edge/default")
    assert view is not None
    return view


class Driver:
    """One stream state machine and the requests Envoy would send it."""

    def __init__(self, factory: type[ProtocolStream]) -> None:
        self.metrics = XdsMetrics()
        self.machine = factory(EDGE, NodeTracker(), self.metrics, (LISTENER,),
                               XdsLimits(nack_retry_initial=1.0, nack_retry_max=8.0))
        self.delta = factory is DeltaStream
        self.now = 0.0
        self.machine.clock = lambda: self.now
        self.request()

    def request(self, **fields: Any) -> None:
        cls = discovery_pb2.DeltaDiscoveryRequest if self.delta else discovery_pb2.DiscoveryRequest
        error = fields.pop("error", None)
        req = cls(type_url=LISTENER, **fields)
        if error:
            req.error_detail.message = error
        assert self.machine.on_request(req) is None

    def answer(self, reply: Reply, error: str | None = None, accepted: str = "") -> None:
        """ACK ``reply``, or NACK it with ``error`` (SotW: saying ``accepted`` is held)."""
        if self.delta:
            self.request(response_nonce=reply.nonce, error=error)
        else:
            self.request(response_nonce=reply.nonce, error=error,
                         version_info=reply.version if error is None else accepted)

    def send(self, view: View, now: float) -> list[Reply]:
        """What the stream sends at ``now``; an empty SotW state (what Envoy holds
        after rejecting its very first listeners) is ACKed and left out."""
        self.now = now
        replies = []
        for reply in self.machine.next_replies(view, now):
            if reply.resources or reply.removed:
                replies.append(reply)
            else:
                self.answer(reply)
        return replies

    def retry_json(self, name: str) -> dict[str, Any] | None:
        table = self.machine.record.types.get(LISTENER, {})
        return table[name].to_json().get("retry") if name in table else None


@pytest.mark.parametrize("factory", PROTOCOLS)
def test_a_listener_rejected_for_a_held_port_is_retried_with_backoff_until_accepted(
        factory: type[ProtocolStream]) -> None:
    d = Driver(factory)
    view = view_of(t.listener("http", 8080, "http"))
    [first] = d.send(view, 0.0)
    d.answer(first, BIND)
    assert d.send(view, 0.5) == [] and d.machine.wake_at == pytest.approx(1.0, abs=0.01)
    retry = d.retry_json("http")
    assert retry is not None and retry["attempts"] == 1 and "Address already in use" in retry[
        "last_error"]
    # Due: the same bytes again; rejected again, the delay doubles: 2, 4, then 8 (the cap).
    now = 1.0
    for attempt, delay in ((2, 2.0), (3, 4.0), (4, 8.0), (5, 8.0)):
        [again] = d.send(view, now)
        assert [r.version for r in again.resources] == [r.version for r in first.resources]
        d.answer(again, BIND)
        assert d.send(view, now + delay - 0.01) == []
        assert d.machine.wake_at == pytest.approx(now + delay, abs=0.05)
        assert d.retry_json("http")["attempts"] == attempt  # type: ignore[index]
        now += delay
    # The port is free now: accepted, and the retry state is gone.
    [last] = d.send(view, now)
    d.answer(last)
    assert d.send(view, now + 100) == [] and d.machine.wake_at is None
    assert d.retry_json("http") is None
    record = d.machine.record.types[LISTENER]["http"]
    assert record.acked_version == t.listener("http", 8080, "http").version
    assert record.nacked is None
    assert d.metrics.nack_retries.labels("listeners")._value.get() == 5


@pytest.mark.parametrize("factory", PROTOCOLS)
def test_a_permanent_rejection_is_never_resent_unchanged(
        factory: type[ProtocolStream]) -> None:
    d = Driver(factory)
    view = view_of(t.listener("http", 8080, "http"))
    [first] = d.send(view, 0.0)
    d.answer(first, INVALID)
    assert d.machine.wake_at is None
    assert d.send(view, 10_000.0) == []
    assert d.retry_json("http") is None
    # A changed listener goes out at once.
    fixed = view_of(t.listener("http", 8081, "http"))
    [reply] = d.send(fixed, 10_001.0)
    assert [r.name for r in reply.resources] == ["http"]


@pytest.mark.parametrize("factory", PROTOCOLS)
def test_only_the_listener_whose_error_can_pass_is_retried(
        factory: type[ProtocolStream]) -> None:
    d = Driver(factory)
    view = view_of(t.listener("a", 8080, "r"), t.listener("b", 8081, "r"))
    [first] = d.send(view, 0.0)
    d.answer(first, "Error adding/updating listener(s) a: cannot bind '127.0.0.1:8080': "
                    "Address already in use, b: Proto constraint validation failed")
    assert d.retry_json("a") is not None and d.retry_json("b") is None
    [again] = d.send(view, 1.0)
    assert "a" in {r.name for r in again.resources}
    if d.delta:
        assert [r.name for r in again.resources] == ["a"]  # b's version never again


@pytest.mark.parametrize("factory", PROTOCOLS)
def test_a_retry_ends_when_the_view_moves_on(factory: type[ProtocolStream]) -> None:
    d = Driver(factory)
    [first] = d.send(view_of(t.listener("http", 8080, "http")), 0.0)
    d.answer(first, BIND)
    moved = view_of(t.listener("http", 9090, "http"))
    [reply] = d.send(moved, 0.1)  # the new version needs no waiting
    assert [r.version for r in reply.resources] == [t.listener("http", 9090, "http").version]
    assert d.retry_json("http") is None
    d.answer(reply)
    assert d.send(moved, 100.0) == [] and d.machine.wake_at is None


def test_the_stream_wakes_for_a_due_retry_without_any_other_event() -> None:
    d = Driver(SotwStream)
    view = view_of(t.listener("http", 8080, "http"))
    [first] = d.send(view, 50.0)
    d.answer(first, BIND)
    d.send(view, 50.2)
    assert d.machine.wake_at == pytest.approx(51.0, abs=0.01)


@pytest.mark.parametrize(("error", "transient"), [
    (BIND, True),
    ("cannot bind '10.0.0.9:80': Cannot assign requested address", True),
    ("Invalid path: /etc/certs/tls.crt does not exist", True),
    ("Failed to load certificate chain from /x: No such file or directory", True),
    (INVALID, False),
    ("Didn't find a registered implementation for name: 'envoy.filters.nope'", False),
], ids=["in-use", "not-available", "no-path", "no-file", "invalid", "unknown-filter"])
def test_which_errors_can_pass(error: str, transient: bool) -> None:
    assert is_transient(error) is transient


def test_error_for_takes_the_part_about_one_resource() -> None:
    text = "Error adding/updating listener(s) a: cannot bind: Address already in use, b: bad"
    assert error_for("a", text, {"a", "b"}) == "a: cannot bind: Address already in use, "
    assert error_for("b", text, {"a", "b"}) == "b: bad"
    assert error_for("c", text, {"c"}) == text


def test_backoff_doubles_to_its_cap_and_restarts_for_a_new_version() -> None:
    retries: dict[str, Any] = {}
    delays = []
    for _ in range(9):
        delays.append(schedule(retries, "l", "v1", "e", 0.0, 1.0, 60.0).due)
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert schedule(retries, "l", "v2", "e", 0.0, 1.0, 60.0).due == 1.0
    for i in range(300):
        schedule(retries, f"n{i}", "v", "e", 0.0, 1.0, 60.0)
    assert len(retries) == 256 and "n299" in retries


def test_a_huge_error_text_is_searched_in_linear_time_and_kept_short() -> None:
    """A client may NACK with megabytes of text: blaming stays linear, and records,
    retries and log lines keep only the start of it."""
    import time

    from kxds.xds.protocol import MAX_ERROR_KEPT, blamed_names

    names = [f"default/svc{i}/80" for i in range(10_000)] + ["ns/s/443/tls/sni=a.example"]
    error = "x: " * 1_000_000 + "default/svc7/80: bad, ns/s/443/tls/sni=a.example: bad"
    started = time.monotonic()
    assert blamed_names(error, names) == {"default/svc7/80"}  # the other is past the head
    assert blamed_names("ns/s/443/tls/sni=a.example: bad", names) == {
        "ns/s/443/tls/sni=a.example"}
    assert time.monotonic() - started < 5.0
    d = Driver(SotwStream)
    view = view_of(t.listener("http", 8080, "http"))
    [first] = d.send(view, 0.0)
    d.answer(first, BIND + " " + "y" * 1_000_000)
    retry = d.retry_json("http")
    assert retry is not None and len(retry["last_error"]) < MAX_ERROR_KEPT + 100
    nack = d.machine.record.nacks[-1]
    assert len(nack.error) < MAX_ERROR_KEPT + 100 and nack.error.endswith("characters)")
