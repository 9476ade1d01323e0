"""Who holds Python's small objects at N Services, and what one cycle leaves behind (M6).

Run alone: ``.venv/bin/python -m bench.mem_split [--services 5000]``.

kxds's control plane in this process (as :mod:`bench.memworker` runs it) serves
100 Services, then N, then nothing. At N, the blocks Python's small-object
allocator holds (512 bytes or less: what its 1 MiB arenas are made of) are
summed by the part of kxds that allocated them, named by the innermost frame of
kxds (or of the benchmark, which builds the states as a source would). After
everything is deleted: the arenas before and after, and how many blocks
allocated since the first state are still alive. Each of those can keep a whole
arena from going back to the system; which parts a process split would move
out of the serving process is what the first table says.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import tracemalloc
from collections import Counter
from pathlib import Path

from bench import scenario
from bench.live import ControlPlane
from bench.m6 import BASE_SERVICES
from bench.memworker import pymalloc_stats, rss_bytes
from kxds.kube.models import ClusterState

SMALL = 512
ROOT = str(Path(__file__).resolve().parent.parent) + "/"
MB = 1024 * 1024


def owner(trace: tracemalloc.Trace) -> str:
    """The kxds package (or benchmark module) whose frame is innermost."""
    for frame in reversed(trace.traceback):  # oldest first: walk from the innermost
        name = frame.filename
        if name.startswith(ROOT + "kxds/") or name.startswith(ROOT + "bench/"):
            parts = name[len(ROOT):].split("/")
            return "/".join(parts[:2]) if len(parts) > 2 else parts[0] + "/" + parts[1]
    return "other (grpc, asyncio, the interpreter)"


async def main_async(services: int) -> None:
    cp = ControlPlane(holdoff=0.0, max_holdoff=0.0)
    await cp.start(scenario.build_state(scenario.Spec(services=BASE_SERVICES)))
    try:
        await asyncio.sleep(0.3)
        gc.collect()
        before = pymalloc_stats()
        rss0 = rss_bytes()
        tracemalloc.start(40)
        await cp.publish_and_wait(scenario.build_state(scenario.Spec(services=services)),
                                  timeout=600.0)
        gc.collect()
        small: Counter[str] = Counter()
        for trace in tracemalloc.take_snapshot().traces:
            if trace.size <= SMALL:
                small[owner(trace)] += trace.size
        total = sum(small.values())
        print(f"at {services:,} Services: {total / MB:.1f} MB in small blocks allocated since "
              f"the first state, by who allocated them:")
        for name, size in small.most_common():
            print(f"  {size / MB:7.2f} MB  {100 * size / total:4.1f} %  {name}")
        await cp.publish_and_wait(ClusterState(), timeout=60.0)
        await asyncio.sleep(0.5)
        gc.collect()
        alive = sum(1 for t in tracemalloc.take_snapshot().traces if t.size <= SMALL)
        tracemalloc.stop()
        gc.collect()
        after = pymalloc_stats()
        print(f"after deleting everything: {alive:,} small blocks allocated since the first "
              f"state still alive; arenas {before.get('arenas')} before the load, "
              f"{after.get('arenas')} now; RSS {rss0 / MB:.1f} -> {rss_bytes() / MB:.1f} MB "
              f"(tracemalloc's own blocks included)")
    finally:
        await cp.stop()


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.mem_split", description=__doc__)
    p.add_argument("--services", type=int, default=5000)
    asyncio.run(main_async(p.parse_args().services))


if __name__ == "__main__":
    main()
