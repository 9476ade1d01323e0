"""M2: a new Ingress path -> its first 200 through the real Envoy; and route churn.

For N = 100 / 1,000 / 3,000 routes (one Prefix path per Service, four per
Ingress, every Service backed by one local HTTP backend), an Exact path is
added to one Ingress at a time; the sample is the time from publishing the
new state until a GET of that path through Envoy first answers 200 (polled
1 ms apart by ``bench.prober``, a process of its own, as a real client is
not inside kxds's process; a calm of ``CALM`` before each change). Then, at
the middle size, routes churn (paths added to and removed from Ingresses
several times a second) for ``--churn-seconds`` while
a load generator in another process sends steady traffic to stable routes:
every response must be a 2xx.
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import time
from typing import Any

from bench import scenario
from bench.live import ControlPlane
from bench.m1 import wait_loaded
from bench.procs import WORKDIR, Envoy, close_child, free_port, http_get, start_backend, stop
from bench.report import Metric
from bench.scenario import Spec
from bench.timing import Summary
from kxds.kube.models import ClusterState, Ingress
from kxds.translators.config import TranslateConfig

TARGET = "p50 <= 50 ms; p50(3000)/p50(100) <= 1.5; 0 errors during churn"
HOLDOFF = 0.01
CALM = 0.1
"""Before each timed change, as in M1 and M8: a lone change is served at once (the
debounce's leading edge), where one that came within ``HOLDOFF`` of the last (the
last one's first 200 can come sooner) was held for the holdoff."""
CHURN_INTERVAL = 0.25
LOAD_RPS = 150.0


async def first_200(port: int, host: str, path: str, timeout: float = 20.0) -> float:
    """Poll until GET answers 200; returns time.perf_counter() of that response."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status, _ = await http_get(port, path, host=host, timeout=2.0)
        except (OSError, TimeoutError):
            status = 0
        if status == 200:
            return time.perf_counter()
    raise TimeoutError(f"no 200 from {host}{path} in {timeout}s")


class Prober:
    """``bench.prober`` in a process of its own: the first 200 of a path, on request."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with open(WORKDIR / "prober.log", "ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.prober", str(self.port),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log)

    async def first_200(self, host: str, path: str) -> float:
        """Starts polling at once; ``time.monotonic()`` of the first 200."""
        assert self.proc is not None and self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(f"{host} {path}\n".encode())
        await self.proc.stdin.drain()
        answer = json.loads(await self.proc.stdout.readline() or b'{"error": "exited"}')
        if "t" not in answer:
            raise TimeoutError(f"prober: {answer.get('error')}")
        return float(answer["t"])

    async def stop(self) -> None:
        if self.proc is not None:
            await close_child(self.proc, 5.0)
            self.proc = None


def with_path(spec: Spec, state: ClusterState, j: int, extra: tuple[tuple[str, int], ...]
              ) -> ClusterState:
    ing = scenario.parse(scenario.ingress_doc(spec, j, extra_paths=extra))
    assert isinstance(ing, Ingress)
    return scenario.with_objects(state, ing)


async def latency(spec: Spec, state: ClusterState, cp: ControlPlane, prober: Prober,
                  repeats: int, warmup: int = 2) -> tuple[ClusterState, dict[str, Any]]:
    total: list[float] = []
    to_view: list[float] = []
    for r in range(warmup + repeats):
        j = (r * 7) % spec.ingresses
        path = f"/new-{r}"
        host = scenario.host_of(j)
        state = with_path(spec, state, j, ((path, j * spec.paths_per_ingress),))
        status, _ = await http_get(prober.port, path, host=host)
        assert status == 404, f"{host}{path} answered {status} before it was added"
        await asyncio.sleep(CALM)
        seq = cp.rebuild_seq
        t0, t0_view = time.monotonic(), time.perf_counter()
        cp.publish(state)
        t1 = await prober.first_200(host, path)
        tv = await cp.rebuilds.finished(seq + 1, 20.0)
        if r >= warmup:
            total.append(t1 - t0)
            to_view.append(tv - t0_view)
    s, v = Summary.of(total), Summary.of(to_view)
    return state, {"p50_s": s.median, "p99_s": s.p99, "samples": s.n,
                   "publish_to_view_p50_s": v.median, "summary": s}


async def churn(spec: Spec, state: ClusterState, cp: ControlPlane, port: int,
                seconds: float) -> dict[str, Any]:
    rng = random.Random(8)
    stable = [f"{scenario.host_of(i // spec.paths_per_ingress)}{scenario.path_of(i)}"
              for i in rng.sample(range(spec.services), min(50, spec.services))]
    out = WORKDIR / "loadgen.out"
    with open(out, "wb") as f:
        gen = subprocess.Popen([sys.executable, "-m", "bench.loadgen", str(port), str(seconds),
                                str(LOAD_RPS), *stable], stdout=f, stderr=subprocess.STDOUT)
    ops = 0
    added: dict[int, tuple[tuple[str, int], ...]] = {}
    try:
        while gen.poll() is None:
            j = rng.randrange(spec.ingresses)
            if j in added:
                del added[j]
                extra: tuple[tuple[str, int], ...] = ()
            else:
                extra = ((f"/churn-{ops}", j * spec.paths_per_ingress),)
                added[j] = extra
            state = with_path(spec, state, j, extra)
            cp.publish(state)
            ops += 1
            await asyncio.sleep(CHURN_INTERVAL)
        result: dict[str, Any] = json.loads(out.read_text().strip().splitlines()[-1])
    finally:
        if gen.poll() is None:
            gen.kill()
            gen.wait()
    counts = result["counts"]
    ok = sum(v for k, v in counts.items() if k.startswith("2"))
    return {"seconds": seconds, "route_changes": ops, "requests": result["requests"],
            "status_counts": counts, "errors": result["requests"] - ok,
            "first_failures": result["failures"], "load_rps": LOAD_RPS,
            "stable_routes": len(stable), "churn_interval_s": CHURN_INTERVAL}


async def one_size(n: int, backend_port: int, repeats: int, churn_seconds: float | None
                   ) -> dict[str, Any]:
    spec = Spec(services=n, endpoints=1, address=lambda i, e: ("127.0.0.1", backend_port))
    state = scenario.build_state(spec)
    port = free_port()
    cp = ControlPlane(holdoff=HOLDOFF, max_holdoff=0.1,
                      config=TranslateConfig(http_port=port, listen_address="127.0.0.1"))
    envoy: Envoy | None = None
    prober = Prober(port)
    try:
        await cp.start(state)
        envoy = Envoy(f"m2-{n}", cp.port, node_id=f"m2-{n}")
        await wait_loaded(envoy, n, timeout=300.0)
        await first_200(port, scenario.host_of(0), scenario.path_of(0), timeout=60.0)
        await prober.start()
        state, lat = await latency(spec, state, cp, prober, repeats)
        out: dict[str, Any] = {"routes": n, **lat}
        if churn_seconds:
            out["churn"] = await churn(spec, state, cp, port, churn_seconds)
        return out
    finally:
        await prober.stop()
        if envoy is not None:
            envoy.stop()
        await cp.stop()


async def run_m2(sizes: tuple[int, ...], churn_seconds: float, unit: float,
                 repeats: int = 20) -> list[Metric]:
    backend, backend_port = start_backend("m2-backend")
    try:
        churn_at = sorted(sizes)[len(sizes) // 2]
        results = [await one_size(n, backend_port, repeats,
                                  churn_seconds if n == churn_at else None) for n in sizes]
    finally:
        stop(backend)
    by_n = {r["routes"]: r for r in results}
    small, big = by_n[min(sizes)], by_n[max(sizes)]
    scaling = big["p50_s"] / small["p50_s"]
    worst = max(r["p50_s"] for r in results)
    ch = by_n[churn_at].get("churn", {})
    errors = ch.get("errors")
    details: dict[str, Any] = {
        str(r["routes"]): {k: v for k, v in r.items() if k not in ("summary", "churn")}
        | {"p50_cal": r["p50_s"] / unit} for r in results}
    details.update({"scaling_p50_largest_over_smallest": scaling, "holdoff_s": HOLDOFF,
                    f"churn_at_{churn_at}_routes": ch})
    met = worst <= 0.050 and scaling <= 1.5 and errors == 0
    return [Metric(id="M2", title="new Ingress path -> first 200 (worst p50 over N)",
                   value=worst, unit="s", target=TARGET, met=met, cal=worst / unit,
                   details=details)]

