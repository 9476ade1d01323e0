"""M3: cold translation + serialization of the whole snapshot.

For each size: ``translate(state)`` then ``build_resources(ir)`` (which
serializes every resource), timed separately; then the serialized output is
parsed back into protobuf messages and serializing those alone is timed, which
is the floor any Python control plane using protobuf pays.

Both stages run with the cyclic garbage collector paused, as in the
controller (:data:`kxds.gc_policy.gc_paused`); the collection the pause
defers is timed after them and reported as ``gc``, outside ``total``.
"""

from __future__ import annotations

import cProfile
import gc
import io
import pstats
import sys
import time
from pathlib import Path
from typing import Any

from google.protobuf.message import Message

from bench.report import Metric
from bench.scenario import Spec, build_state
from bench.timing import Summary, clear_memos
from kxds.envoy.resource import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET, Resources

TARGET = "<= 1 s; <= 5x serialize-alone; t(5000)/t(500) <= 11"


def _message_classes() -> dict[str, type[Message]]:
    from envoy.config.cluster.v3 import cluster_pb2
    from envoy.config.endpoint.v3 import endpoint_pb2
    from envoy.config.listener.v3 import listener_pb2
    from envoy.config.route.v3 import route_pb2
    from envoy.extensions.transport_sockets.tls.v3 import secret_pb2

    return {CLUSTER: cluster_pb2.Cluster, ENDPOINT: endpoint_pb2.ClusterLoadAssignment,
            LISTENER: listener_pb2.Listener, ROUTE: route_pb2.RouteConfiguration,
            SECRET: secret_pb2.Secret}


def pipeline() -> Any:
    """The translate+build function under test (imported late: it may not exist yet)."""
    from kxds.envoy.build import build_resources
    from kxds.gc_policy import gc_paused
    from kxds.translators.config import TranslateConfig
    from kxds.translators.edge import translate

    config = TranslateConfig()

    def run(state: Any) -> tuple[float, float, float, Resources, int]:
        with gc_paused:
            t0 = time.perf_counter()
            tr = translate(state, config)
            t1 = time.perf_counter()
            res = build_resources(tr.ir)
            t2 = time.perf_counter()
        gc.collect()
        return t1 - t0, t2 - t1, time.perf_counter() - t2, res, len(tr.diagnostics)

    return run


def serialize_alone(resources: Resources, repeats: int) -> tuple[Summary, int, int]:
    """Time SerializeToString over the same output, as protobuf messages built once."""
    classes = _message_classes()
    msgs = [classes[t].FromString(r.body) for t, by_name in resources.items()
            for r in by_name.values()]
    total = sum(len(r.body) for by_name in resources.values() for r in by_name.values())
    samples = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        for m in msgs:
            m.SerializeToString()
        samples.append(time.perf_counter() - t0)
    return Summary.of(samples[1:]), len(msgs), total


def measure(n: int, repeats: int) -> dict[str, Any]:
    """Median and p99 of cold translate+build for a freshly built scenario of size ``n``."""
    run = pipeline()
    tr_s, build_s, total_s, gc_s = [], [], [], []
    res: Resources = {}
    diags = 0
    for r in range(repeats + 1):
        state = build_state(Spec(services=n))
        clear_memos()  # cold: nothing memoized from an earlier run
        a, b, c, res, diags = run(state)
        if r:  # the first run warms imports and code paths
            tr_s.append(a)
            build_s.append(b)
            total_s.append(a + b)
            gc_s.append(c)
        del state
    alone, count, nbytes = serialize_alone(res, max(3, repeats))
    return {
        "n": n, "total": Summary.of(total_s), "translate": Summary.of(tr_s),
        "build": Summary.of(build_s), "gc": Summary.of(gc_s), "serialize_alone": alone,
        "resources": count,
        "bytes": nbytes, "diagnostics": diags,
        "by_type": {t.rsplit(".", 1)[-1]: len(v) for t, v in res.items()},
    }


def profile(n: int, out: Path, top: int = 30) -> list[str]:
    """cProfile one cold run at size ``n``; writes the listing; returns the top self-time rows."""
    run = pipeline()
    state = build_state(Spec(services=n))
    clear_memos()
    prof = cProfile.Profile()
    prof.enable()
    run(state)
    prof.disable()
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(_without_roots(buf.getvalue()), encoding="utf-8")
    rows = []
    st: Any = stats
    for (file, line, fn), (_cc, nc, tt, ct, _callers) in sorted(
            st.stats.items(), key=lambda kv: -kv[1][2])[:12]:
        rows.append(f"{tt:.3f}s self, {ct:.3f}s cum, {nc} calls: {Path(file).name}:{line} {fn}")
    return rows


def _without_roots(text: str) -> str:
    """Profile rows name files relative to the checkout or the Python installation:
    the listing is committed, and says nothing of the machine it ran on."""
    roots = {str(Path(__file__).resolve().parent.parent), sys.prefix, sys.base_prefix}
    for root in sorted(roots, key=len, reverse=True):
        text = text.replace(root.rstrip("/") + "/", "")
    return text


def run_m3(sizes: tuple[int, ...], big: int, small: int, repeats: int, unit: float,
           results_dir: Path) -> list[Metric]:
    data = {n: measure(n, repeats) for n in sorted(set(sizes) | {big, small})}
    b, s = data[big], data[small]
    t_big = b["total"].median
    vs_alone = t_big / b["serialize_alone"].median
    scaling = t_big / s["total"].median
    rows = profile(big, results_dir / "profile-m3.txt")
    details: dict[str, Any] = {
        "sizes": {
            str(n): {
                "total_median_s": d["total"].median, "total_p99_s": d["total"].p99,
                "translate_median_s": d["translate"].median, "build_median_s": d["build"].median,
                "deferred_gc_median_s": d["gc"].median,
                "serialize_alone_median_s": d["serialize_alone"].median,
                "total_cal": d["total"].median / unit, "resources": d["resources"],
                "bytes": d["bytes"], "by_type": d["by_type"], "diagnostics": d["diagnostics"],
                "repeats": d["total"].n,
            } for n, d in data.items()
        },
        "ratio_to_serialize_alone": vs_alone,
        f"ratio_{big}_to_{small}": scaling,
        "profile_top_self_time": rows,
        "profile_file": "bench/results/profile-m3.txt",
    }
    met = t_big <= 1.0 and vs_alone <= 5.0 and scaling <= 11.0
    return [Metric(id="M3", title=f"cold translate + serialize, N={big}", value=t_big, unit="s",
                   target=TARGET, met=met, cal=t_big / unit, details=details)]
