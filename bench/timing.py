"""Repeated timing, summary statistics and the calibration unit.

Every duration the benchmark reports is also given as a multiple of the
calibration unit: the time this machine takes to serialize 1,000 reference
Envoy clusters with protobuf, measured in the same run. The unit makes results
from different machines comparable (a faster CPU shrinks both).
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, config_source_pb2
from google.protobuf import duration_pb2


@dataclass(frozen=True, slots=True)
class Summary:
    """Median and p99 (nearest rank) of repeated samples, in seconds."""

    median: float
    p99: float
    n: int
    samples: tuple[float, ...]

    @classmethod
    def of(cls, samples: Sequence[float]) -> Summary:
        if not samples:
            return cls(math.nan, math.nan, 0, ())
        ordered = sorted(samples)
        rank = max(0, math.ceil(0.99 * len(ordered)) - 1)
        return cls(statistics.median(ordered), ordered[rank], len(ordered), tuple(samples))


def repeat(fn: Callable[[], object], *, repeats: int, warmup: int = 1) -> Summary:
    """Time ``fn`` ``repeats`` times after ``warmup`` untimed calls; GC runs between calls."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return Summary.of(samples)


def reference_cluster(i: int) -> cluster_pb2.Cluster:
    """One EDS cluster over ADS, shaped like the ones kxds serves for a Service port."""
    c = cluster_pb2.Cluster(
        name=f"ns-{i % 10}/svc-{i:05d}/80",
        type=cluster_pb2.Cluster.EDS,
        connect_timeout=duration_pb2.Duration(seconds=5),
        lb_policy=cluster_pb2.Cluster.ROUND_ROBIN,
    )
    c.eds_cluster_config.eds_config.ads.SetInParent()
    c.eds_cluster_config.eds_config.resource_api_version = config_source_pb2.ApiVersion.V3
    c.common_lb_config.healthy_panic_threshold.value = 50.0
    c.upstream_bind_config.source_address.CopyFrom(
        address_pb2.SocketAddress(address="0.0.0.0", port_value=0)
    )
    return c


def calibration_unit(repeats: int = 21) -> Summary:
    """Median time to serialize 1,000 reference clusters (built once, outside the timing)."""
    clusters = [reference_cluster(i) for i in range(1000)]

    def serialize_all() -> None:
        for c in clusters:
            c.SerializeToString()

    return repeat(serialize_all, repeats=repeats, warmup=3)


def clear_memos() -> int:
    """Empty every memo cache (``functools.lru_cache``) in kxds's modules, for cold timings.

    Returns how many caches were cleared.
    """
    import sys

    cleared = 0
    for name, module in list(sys.modules.items()):
        if not (name == "kxds" or name.startswith("kxds.")) or module is None:
            continue
        for value in list(vars(module).values()):
            clear = getattr(value, "cache_clear", None)
            if callable(clear) and getattr(value, "__module__", None) == name:
                clear()
                cleared += 1
    return cleared
