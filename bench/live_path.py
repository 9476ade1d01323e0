"""Where the time of one change goes in the live process, stage by stage.

Run alone: ``.venv/bin/python -m bench.live_path [--repeats 30] [--services 1000]
[--change slice|path] [--policy-every N]``.

The M1 change (one EndpointSlice at 1,000 Services; ``--change path``: M2's, an
Exact path added to one Ingress, one route per Service) published to the live
controller with ``kxds serve``'s defaults (leading-edge debounce, worker
threads on), one real Envoy on SotW ADS. Each stage's instant is taken inside
kxds, by wrapping the functions that mark it for the run (nothing is polled):
the rebuild entered, the edge view's build started and ended (in a worker
thread or on the loop), the view set on the cache, the rebuild finished, the
stream's writer woken, its replies planned, the response written (gRPC's write
returned) and Envoy's ACK read. Printed: each instant after ``publish`` (p50,
p25, max), and the CPU time of the build. A calm of 0.2 s separates changes,
as in M1 and M8: the build then runs with cold caches, and costs about twice
what ``bench.per_change`` (changes back to back) measures.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import statistics
import time
from collections.abc import Callable
from typing import Any

from bench import scenario
from bench.live import ControlPlane
from bench.m1 import wait_loaded
from bench.m2 import with_path
from bench.procs import Envoy
from bench.scenario import Spec
from kxds import controller
from kxds.kube.models import ClusterState, EndpointSlice
from kxds.xds import protocol, server
from kxds.xds.cache import SnapshotCache

STAGES = ("rebuild entered", "build started", "build ended", "view set", "rebuild done",
          "writer woken", "replies planned", "response written", "ACK read")


class Stamps:
    """The first instant of each stage of the current change."""

    def __init__(self) -> None:
        self.now: dict[str, float] = {}
        self.build_cpu: list[float] = []

    def mark(self, stage: str) -> None:
        self.now.setdefault(stage, time.perf_counter())

    def around(self, fn: Callable[..., Any], before: str | None, after: str | None,
               is_async: bool = False) -> Callable[..., Any]:
        if is_async:
            @functools.wraps(fn)
            async def wrapped_async(*args: Any, **kwargs: Any) -> Any:
                if before:
                    self.mark(before)
                out = await fn(*args, **kwargs)
                if after:
                    self.mark(after)
                return out
            return wrapped_async

        @functools.wraps(fn)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if before:
                self.mark(before)
            out = fn(*args, **kwargs)
            if after:
                self.mark(after)
            return out
        return wrapped

    def install(self) -> None:
        """Wrap the functions that mark the stages (for this process's run only)."""
        build = controller.build_edge

        def timed_build(*args: Any) -> Any:
            self.mark("build started")
            c0 = time.thread_time()
            out = build(*args)
            self.build_cpu.append(time.thread_time() - c0)
            self.mark("build ended")
            return out
        controller.build_edge = timed_build  # type: ignore[assignment]
        c = controller.Controller
        c.rebuild = self.around(c.rebuild, "rebuild entered", "rebuild done",  # type: ignore
                                is_async=True)
        SnapshotCache.set_view = self.around(SnapshotCache.set_view, None,  # type: ignore
                                             "view set")
        s = server._Stream
        s._flush = self.around(s._flush, "writer woken", None, is_async=True)  # type: ignore
        p = protocol.ProtocolStream
        p.next_replies = self.around(p.next_replies, None, "replies planned")  # type: ignore
        m = server.XdsMetrics
        m.observe_response = self.around(m.observe_response,  # type: ignore
                                         "response written", None)
        p.ack = self.around(p.ack, "ACK read", None)  # type: ignore


async def run(repeats: int, services: int, change: str = "slice",
              policy_every: int | None = None) -> None:
    stamps = Stamps()
    stamps.install()
    spec = Spec(services=services) if policy_every is None else Spec(
        services=services, policy_every=policy_every)
    state = scenario.build_state(spec)
    cp = ControlPlane()  # kxds serve's debounce defaults
    await cp.start(state)
    envoy = Envoy("live-path", cp.port)
    rows: list[dict[str, float]] = []
    try:
        await wait_loaded(envoy, spec.services)
        for r in range(repeats + 1):  # the first change warms up
            state = _changed(spec, state, change, r)
            await asyncio.sleep(0.2)
            stamps.now = {}
            t0 = time.perf_counter()
            cp.publish(state)
            async with asyncio.timeout(10.0):
                while "ACK read" not in stamps.now:
                    await asyncio.sleep(0.01)
            if r:
                rows.append({k: (v - t0) * 1e3 for k, v in stamps.now.items()})
    finally:
        envoy.stop()
        await cp.stop()
    what = (f"one EndpointSlice at {services:,} Services" if change == "slice"
            else f"a path added to an Ingress at {services:,} routes")
    policies = (f"a NetworkPolicy on every {spec.policy_every}th Service" if spec.policy_every
                else "no NetworkPolicy")
    print(f"{what} ({policies}), {repeats} changes, ms after publish:")
    for stage in STAGES:
        values = [row[stage] for row in rows if stage in row]
        if len(values) >= 2:
            print(f"  {stage:17s} p50 {statistics.median(values):6.2f}  "
                  f"p25 {statistics.quantiles(values, n=4)[0]:6.2f}  max {max(values):6.2f}")
    cpu = stamps.build_cpu[2:]  # the first sync and the warm-up
    print(f"  build CPU time p50 {statistics.median(cpu) * 1e3:.2f} ms")


def _changed(spec: Spec, state: ClusterState, change: str, r: int) -> ClusterState:
    """M1's change (an EndpointSlice) or M2's (an Exact path added to one Ingress)."""
    if change == "path":
        j = (r * 7) % spec.ingresses
        return with_path(spec, state, j, ((f"/live-{r}", j * spec.paths_per_ingress),))
    new = scenario.parse(scenario.slice_doc(spec, (r * 37) % spec.services, generation=r + 1))
    assert isinstance(new, EndpointSlice)
    return scenario.with_slice(state, new)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.live_path", description=__doc__)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--services", type=int, default=1000,
                   help="Services (and so routes: one path each)")
    p.add_argument("--change", choices=("slice", "path"), default="slice",
                   help="M1's change (default) or M2's")
    p.add_argument("--policy-every", type=int, default=None,
                   help="a NetworkPolicy on every Nth Service (the scenario's default: 10; "
                        "0: none)")
    args = p.parse_args()
    asyncio.run(run(args.repeats, args.services, args.change, args.policy_every))


if __name__ == "__main__":
    main()
