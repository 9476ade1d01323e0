"""The query store itself: what it records, when it reuses, runs, patches and forgets.

The equivalence of incremental and full translation is tests/test_incremental.py;
these tests pin the mechanism down with small queries whose every run is counted.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

import pytest

from kxds.incremental import Changes, Context, Query, Store
from kxds.kube.loader import load_text
from kxds.kube.models import ClusterState, Model
from kxds.recording import CONFIG, STATE_FIELDS, WHOLE
from kxds.translators.config import TranslateConfig

CONFIG_DEFAULT = TranslateConfig()


def service(name: str, port: int = 80, ns: str = "a") -> str:
    return (f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\n"
            f"spec: {{ports: [{{name: http, port: {port}}}]}}\n---\n")


def models(text: str) -> dict[tuple[type, tuple[str, str]], Model]:
    return {(type(o), o.meta.key): o for o in load_text(text).objects()}


def state_of(objects: dict[tuple[type, tuple[str, str]], Model]) -> ClusterState:
    return ClusterState.from_objects(objects.values())


class Counted:
    """Queries over Services that count their runs."""

    def __init__(self) -> None:
        self.runs: dict[str, int] = {}
        self.port = Query("port", self._port)
        self.ports = Query("ports", self._ports)
        self.parity = Query("parity", self._parity)

    def _count(self, name: str) -> None:
        self.runs[name] = self.runs.get(name, 0) + 1

    def _port(self, ctx: Context, key: tuple[str, str]) -> int | None:
        self._count("port")
        svc = ctx.state.services.get(key)
        return svc.ports[0].port if svc is not None else None

    def _ports(self, ctx: Context, _: None) -> tuple[int | None, ...]:
        self._count("ports")
        return tuple(ctx.query(self.port, key) for key in sorted(ctx.state.services))

    def _parity(self, ctx: Context, _: None) -> int:
        self._count("parity")
        return sum(p or 0 for p in ctx.query(self.ports, None)) % 2


def ask(store: Store, state: ClusterState, query: Query[Any, Any], key: Any = None,
        config: TranslateConfig = CONFIG_DEFAULT) -> Any:
    ctx = store.begin(state, config)
    try:
        return ctx.query(query, key)
    finally:
        store.end()


def test_unchanged_state_runs_nothing_and_a_change_runs_only_its_readers() -> None:
    q, store = Counted(), Store()
    objects = models(service("a") + service("b"))
    assert ask(store, state_of(objects), q.parity) == 0
    assert q.runs == {"parity": 1, "ports": 1, "port": 2}
    ask(store, state_of(objects), q.parity)  # new state object, the same models
    assert q.runs == {"parity": 1, "ports": 1, "port": 2}
    objects |= models(service("a", 81))
    assert ask(store, state_of(objects), q.parity) == 1
    # port(a) ran; ports listed every Service again (it iterates them: a whole read
    # of services, which changed); port(b) was reused.
    assert q.runs == {"parity": 2, "ports": 2, "port": 3}


def test_equal_value_cuts_off_what_depends_on_it() -> None:
    q, store = Counted(), Store()
    objects = models(service("a") + service("b", 82))
    ask(store, state_of(objects), q.parity)
    objects |= models(service("a", 84))  # a new port, the same parity
    ask(store, state_of(objects), q.parity)
    assert q.runs["parity"] == 2  # ports changed, so parity ran; its value did not change
    first = ask(Store(), state_of(objects), q.ports)
    objects |= models(service("b", 82))  # a new model, equal to the last one
    store_runs = dict(q.runs)
    assert ask(store, state_of(objects), q.ports) == first
    assert q.runs["ports"] == store_runs["ports"] + 1  # ran (it iterates services)...
    assert q.runs["parity"] == store_runs["parity"]  # ...but parity was cut off


def test_update_gets_what_changed_and_patches_instead_of_running() -> None:
    seen: list[Changes] = []
    runs = {"total": 0}
    port = Query("port", lambda ctx, key: ctx.state.services[key].ports[0].port)

    def total(ctx: Context, _: None) -> int:
        runs["total"] += 1
        return sum(ctx.query(port, key) for key in ctx.state.services)

    def update(ctx: Context, _: None, old: int, changes: Changes) -> int | None:
        seen.append(changes)
        if changes.reads:
            return None  # the list of Services changed: run in full
        return old + sum(ctx.query(port, key) for _, key in changes.queries) - 80

    query = Query("total", total, update)
    store = Store()
    objects = models(service("a") + service("b"))
    assert ask(store, state_of(objects), query) == 160
    objects |= models(service("a", 90))
    assert ask(store, state_of(objects), query) == 170
    # A Service changed: the total's own read changed, and port(a) may have changed
    # too, which ``changes`` could not name (a dirty entry's dependencies are not
    # looked at before it runs): run in full, the update is not asked.
    assert runs["total"] == 2
    assert seen == []


def test_entries_nothing_uses_are_forgotten() -> None:
    q, store = Counted(), Store()
    objects = models(service("a") + service("b") + service("c"))
    ask(store, state_of(objects), q.parity)
    assert len(store) == 5
    del objects[next(k for k in objects if k[1] == ("a", "c"))]
    ask(store, state_of(objects), q.parity)
    assert len(store) == 4  # port(c) went with its Service
    ask(store, state_of(objects), q.port, ("a", "a"))  # another root: the rest is unused
    assert len(store) == 1


def test_tables_shrink_with_the_state_and_readers_stay_exact() -> None:
    """Thousands of entries, then nearly all deleted: the store's tables are made to fit
    again (a dict keeps its size as keys leave), and it still answers and forgets right."""
    q, store = Counted(), Store()
    many = models("".join(service(f"s{i}", 80 + i % 7) for i in range(3000)))
    ask(store, state_of(many), q.parity)
    assert len(store) == 3002
    full = sys.getsizeof(store._entries) + sys.getsizeof(store._readers)
    few = {k: v for k, v in many.items() if k[1][1] in ("s1", "s2")}
    assert ask(store, state_of(few), q.parity) == (81 + 82) % 2
    assert len(store) == 4
    assert sys.getsizeof(store._entries) + sys.getsizeof(store._readers) < full / 10
    few |= models(service("s1", 90))  # a reader recorded before the copy is still found
    assert ask(store, state_of(few), q.parity) == (90 + 82) % 2
    assert q.runs["port"] == 3001


def test_a_query_sees_its_previous_value() -> None:
    calls: list[object] = []

    def remember(ctx: Context, _: None) -> int:
        calls.append(ctx.previous_value())
        return len(ctx.state.services)

    query, store = Query("count", remember), Store()
    ask(store, state_of(models(service("a"))), query)
    ask(store, state_of(models(service("a") + service("b"))), query)
    assert calls == [None, 1]


def test_every_state_field_and_config_attribute_is_recorded() -> None:
    """The reuse decision sees every read: a query reading any field of the state, or
    any attribute of the config, is run again when that one changes. A field added to
    ClusterState or TranslateConfig is covered without anyone listing it."""
    base = load_text(service("a") + """apiVersion: v1
kind: Secret
metadata: {name: s, namespace: a}
type: kubernetes.io/tls
data: {}
""")
    fields = [f.name for f in dataclasses.fields(ClusterState)]
    assert list(STATE_FIELDS) == fields
    for name in fields:
        runs = {"n": 0}

        def read(ctx: Context, _: None, name: str = name, runs: dict[str, int] = runs) -> int:
            runs["n"] += 1
            return len(getattr(ctx.state, name))

        query, store = Query(f"read-{name}", read), Store()
        ask(store, base, query)
        ask(store, dataclasses.replace(base), query)
        assert runs["n"] == 1, f"{name}: an unchanged field ran the query again"
        value = getattr(base, name)
        changed = (*value, object()) if isinstance(value, tuple) else {**value, ("z", "z"): 1}
        ask(store, dataclasses.replace(base, **{name: changed}), query)
        assert runs["n"] == 2, f"{name}: a read of it was not seen"
    for f in dataclasses.fields(TranslateConfig):
        runs = {"n": 0}

        def read_config(ctx: Context, _: None, attr: str = f.name,
                        runs: dict[str, int] = runs) -> object:
            runs["n"] += 1
            return getattr(ctx.config, attr)

        query, store = Query(f"config-{f.name}", read_config), Store()
        ask(store, base, query)
        ask(store, base, query, config=TranslateConfig())
        assert runs["n"] == 1
        other = {"ingress_class": "x", "http_port": 1, "https_port": 2, "listen_address": "::",
                 "min_tls_version": "1.3", "node_bind_address": "::1"}
        if f.name not in other:
            continue
        ask(store, base, query, config=dataclasses.replace(CONFIG_DEFAULT,
                                                           **{f.name: other[f.name]}))
        assert runs["n"] == 2, f"config {f.name}: a read of it was not seen"


@pytest.mark.parametrize("access", ["get", "getitem", "contains", "iterate", "length",
                                    "items", "values", "keys", "truthiness"])
def test_each_kind_of_access_is_recorded(access: str) -> None:
    store = Store()
    ctx = store.begin(state_of(models(service("a"))), CONFIG_DEFAULT)
    frame_reads: list[frozenset[object]] = []

    def read(ctx: Context, _: None) -> object:
        services = ctx.state.services
        result = {"get": lambda: services.get(("a", "a")),
                  "getitem": lambda: services[("a", "a")],
                  "contains": lambda: ("a", "a") in services,
                  "iterate": lambda: list(services), "length": lambda: len(services),
                  "items": lambda: list(services.items()),
                  "values": lambda: list(services.values()),
                  "keys": lambda: list(services.keys()),
                  "truthiness": lambda: bool(services)}[access]()
        frame_reads.append(frozenset(ctx._frames[-1].reads))
        return result

    ctx.query(Query("read", read), None)
    store.end()
    expected = ("services", ("a", "a")) if access in ("get", "getitem", "contains") \
        else ("services", WHOLE)
    assert frame_reads == [frozenset({expected})]


def test_config_reads_are_recorded_by_attribute() -> None:
    store = Store()
    reads: list[frozenset[object]] = []

    def read(ctx: Context, _: None) -> int:
        port = ctx.config.http_port
        reads.append(frozenset(ctx._frames[-1].reads))
        return port

    ctx = store.begin(ClusterState(), CONFIG_DEFAULT)
    assert ctx.query(Query("port", read), None) == 8080
    store.end()
    assert reads == [frozenset({(CONFIG, "http_port")})]


class Summaries:
    """Per-Service readers of summaries marked ``firewall``, one summary above another."""

    def __init__(self, *, firewall: bool = True) -> None:
        self.port = Query("port", lambda ctx, key: ctx.state.services[key].ports[0].port)
        self.top = Query("top", self._top, firewall=firewall)
        self.mid = Query("mid", lambda ctx, key: ctx.query(self.port, key) // 10
                         + ctx.query(self.top, None))
        self.sum = Query("sum", self._sum, firewall=firewall)
        self.reader = Query("reader", lambda ctx, key: (ctx.query(self.mid, key),
                                                        ctx.query(self.sum, None)))
        self.root = Query("root", lambda ctx, _: tuple(
            ctx.query(self.reader, key) for key in sorted(ctx.state.services)))

    def _top(self, ctx: Context, _: None) -> int:
        return ctx.query(self.port, ("a", "s0")) // 100

    def _sum(self, ctx: Context, _: None) -> int:
        return sum(ctx.query(self.mid, key) for key in ctx.state.services) % 7


def test_firewalls_give_what_a_fresh_store_gives() -> None:
    """A firewall changes when work happens, never the answer; also with one summary
    under another (both held at once) and with readers added and removed."""
    q, store = Summaries(), Store()
    objects = models("".join(service(f"s{i}", 80 + i) for i in range(6)))
    changes = [("s0", 81), ("s5", 300), ("s0", 210), ("s5", 85), ("s1", 110), ("s3", 83),
               ("s0", 80)]
    for step, (name, port) in enumerate(changes):
        objects |= models(service(name, port))
        if step == 3:
            objects |= models(service("new", 420))
        if step == 4:
            del objects[next(k for k in objects if k[1] == ("a", "new"))]
        state = state_of(objects)
        assert ask(store, state, q.root) == ask(Store(), state, Summaries(firewall=False).root)


def test_a_firewall_keeps_a_change_from_reaching_every_reader(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Two ports changed without changing the sum: only those two Services' readers
    are looked at again (without the firewall, every one of them was). Not when two
    firewalls may have changed (s0's port moved too): the store cannot tell cheaply
    whether one is under the other, and marks through both."""
    looked: dict[tuple[bool, bool], int] = {}
    for firewall, s0_moves in ((True, False), (False, False), (True, True)):
        q, store = Summaries(firewall=firewall), Store()
        objects = models("".join(service(f"s{i}", 80 + 10 * i) for i in range(50)))
        ask(store, state_of(objects), q.root)
        objects |= models(service("s7", 160))  # s7's mid goes up one...
        objects |= models(service("s8", 150))  # ...and s8's down one: the sum stays
        if s0_moves:
            objects |= models(service("s0", 81))  # the same mid and top
        state = state_of(objects)
        expected = ask(Store(), state, q.root)
        checked = {"n": 0}

        def counted(self: Store, ctx: Context, entry: Any, checked: Any = checked,
                    refresh: Any = Store._refresh) -> None:
            if entry.query.name == "reader" and (entry.dirty or entry.suspect):
                checked["n"] += 1
            refresh(self, ctx, entry)

        with monkeypatch.context() as m:
            m.setattr(Store, "_refresh", counted)
            assert ask(store, state, q.root) == expected
        looked[firewall, s0_moves] = checked["n"]
    assert looked == {(True, False): 2, (False, False): 50, (True, True): 50}


def test_a_firewall_that_raises_is_reported_by_its_reader_and_then_recovers() -> None:
    """A bug under a firewall raises where its readers ask for it (in the rebuild), and
    a later state computes everything again correctly."""
    q, store = Summaries(), Store()
    objects = models("".join(service(f"s{i}", 80 + i) for i in range(4)))
    ask(store, state_of(objects), q.root)
    broken = models(service("s1", 5))  # its mid, 5 // 10 + 0, is 0: the sum divides by it

    def fragile(ctx: Context, _: None) -> int:
        mids = [ctx.query(q.mid, key) for key in ctx.state.services]
        return sum(mids) % 7 + 100 // min(m - ctx.query(q.top, None) for m in mids)

    object.__setattr__(q.sum, "fn", fragile)
    with pytest.raises(ZeroDivisionError):
        ask(store, state_of(objects | broken), q.root)
    fixed = objects | models(service("s1", 95))
    expected = Summaries()
    object.__setattr__(expected.sum, "fn", fragile)
    assert ask(store, state_of(fixed), q.root) == ask(Store(), state_of(fixed), expected.root)
