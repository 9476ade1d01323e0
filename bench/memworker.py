"""kxds's control plane alone in a fresh process, for memory measurements (M6).

Reads one command per stdin line and answers one JSON line on stdout:
``load N`` (publish a scenario of N Services), ``empty`` (publish a state
with nothing in it: everything deleted), ``rss`` (current resident set size).
The first line it writes is ``{"port": P, "rss": ...}`` once it serves a
first scenario of ``--services`` Services.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
from pathlib import Path

from bench import scenario
from bench.live import ControlPlane
from kxds.kube.models import ClusterState


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def reply(obj: dict[str, object]) -> None:
    gc.collect()
    sys.stdout.write(json.dumps({**obj, "rss": rss_bytes()}) + "\n")
    sys.stdout.flush()


async def main_async(services: int) -> None:
    cp = ControlPlane(holdoff=0.0, max_holdoff=0.0)
    await cp.start(scenario.build_state(scenario.Spec(services=services)))
    reply({"port": cp.port})
    loop = asyncio.get_running_loop()
    try:
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                break
            cmd = line.split()
            if cmd[0] == "load":
                await cp.publish_and_wait(scenario.build_state(
                    scenario.Spec(services=int(cmd[1]))), timeout=600.0)
                reply({"loaded": int(cmd[1])})
            elif cmd[0] == "empty":
                await cp.publish_and_wait(ClusterState(), timeout=60.0)
                reply({"loaded": 0})
            elif cmd[0] == "wait":
                await asyncio.sleep(float(cmd[1]))
                reply({})
            else:
                reply({})
    finally:
        await cp.stop()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--services", type=int, default=100)
    asyncio.run(main_async(p.parse_args().services))


if __name__ == "__main__":
    main()
