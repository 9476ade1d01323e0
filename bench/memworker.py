"""kxds's control plane alone in a fresh process, for memory measurements (M6).

Reads one command per stdin line and answers one JSON line on stdout:
``load N`` (publish a scenario of N Services), ``empty`` (publish a state
with nothing in it: everything deleted), ``clear`` (empty kxds's memo
caches and hand free heap pages back), ``wait S``; every answer carries the
resident set size and what Python's small-object allocator holds: its 1 MiB
arenas and the bytes of the blocks in use in them (an arena goes back to the
system only once every block in it is free).
The first line it writes is ``{"port": P, "rss": ...}`` once it serves a
first scenario of ``--services`` Services.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import json
import os
import sys
import tempfile
from pathlib import Path

from bench import scenario
from bench.live import ControlPlane
from bench.timing import clear_memos
from kxds.kube.models import ClusterState


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def pymalloc_stats() -> dict[str, int]:
    """Arenas and bytes in allocated blocks, from ``sys._debugmallocstats`` (which
    writes to the C-level stderr: captured through a temporary file)."""
    with tempfile.TemporaryFile() as f:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(f.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        f.seek(0)
        text = f.read().decode(errors="replace")
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key.startswith("# arenas allocated current"):
            out["arenas"] = int(value.strip().replace(",", ""))
        elif key.startswith("# bytes in allocated blocks"):
            out["allocated_bytes"] = int(value.strip().replace(",", ""))
    return out


def _malloc_trim() -> bool:
    """Ask glibc to hand free heap pages back to the OS (diagnostic: allocator vs. leak)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.malloc_trim(0))


def reply(obj: dict[str, object]) -> None:
    gc.collect()
    sys.stdout.write(json.dumps({**obj, "rss": rss_bytes(), "pymalloc": pymalloc_stats()})
                     + "\n")
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
            elif cmd[0] == "clear":
                # Diagnostic only: what the memo caches retain after everything is deleted.
                cleared = clear_memos()
                gc.collect()
                trimmed = _malloc_trim()
                reply({"cleared": cleared, "malloc_trim": trimmed})
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
