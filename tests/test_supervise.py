"""A failing long-running task is restarted with backoff, counted and reported."""

from __future__ import annotations

import asyncio
import itertools

from prometheus_client import CollectorRegistry

from kxds.supervise import Supervisor


def test_a_failing_task_is_restarted_with_backoff_and_reported() -> None:
    registry = CollectorRegistry()
    supervisor = Supervisor(registry, backoff=0.01, backoff_max=0.04)
    starts: list[float] = []

    async def flaky() -> None:
        starts.append(asyncio.get_running_loop().time())
        if len(starts) < 4:
            raise ValueError(f"bad input {len(starts)}")
        await asyncio.Event().wait()  # the fourth run lives on

    async def main() -> None:
        task = asyncio.create_task(supervisor.run("source", flaky))
        while len(starts) < 4:
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
    assert len(starts) == 4  # restarted three times, then it ran until cancelled
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert gaps[0] >= 0.01 and gaps[1] >= 0.02 and gaps[2] >= 0.04  # doubling, capped
    assert registry.get_sample_value("kxds_task_restarts_total", {"task": "source"}) == 3
    assert supervisor.health() == "ok; source restarted 3 times (last: ValueError: bad input 3)"


def test_a_task_that_returns_is_a_failure_too() -> None:
    supervisor = Supervisor(CollectorRegistry(), backoff=0.01)
    runs: list[int] = []

    async def ends() -> None:
        runs.append(1)

    async def main() -> None:
        task = asyncio.create_task(supervisor.run("controller", ends))
        while len(runs) < 2:
            await asyncio.sleep(0.005)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
    assert "controller restarted" in supervisor.health() and "returned" in supervisor.health()
    assert Supervisor(CollectorRegistry()).health() == "ok"
