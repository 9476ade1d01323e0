"""M10: restart. kxds killed (SIGKILL) and started again; its proxies reconnect.

A fake Kubernetes API server (``tests/fakeapi.py``, in this process) holds the
scenario's 5,000 Services with their EndpointSlices, Ingresses and
NetworkPolicies; ``kxds serve --kubeconfig`` runs as its own process with the
API source. 200 proxies connect: two real Envoys (SotW and delta ADS) and 198
light ADS clients (``bench/adsclient.py --reconnect``, half SotW, half delta,
each subscribed to ten endpoint resources and every listener). Once all have
ACKed, kxds is killed with SIGKILL and the same command started again on the
same ports. Measured, per restart:

- the time from the new process's start until every proxy is connected again
  and kxds's tracker shows it holding exactly the versions it ACKed before the
  kill (``/debug/config_dump``, compared per node, type and resource);
- what the new process sent: its own ``kxds_xds_resources_sent_total`` (a fresh
  process: every count is a resend, nothing changed in the cluster), the
  Envoys' ``update_success`` counters and the light clients' responses.

kxds's versions are content hashes, so a reconnecting SotW client whose
``version_info`` matches gets nothing and a delta client's
``initial_resource_versions`` skip every unchanged resource: the target is no
resend at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import scenario
from bench.live import LightClients
from bench.m1 import wait_loaded
from bench.procs import WORKDIR, Envoy, free_port, http_get, log_tail, start, stop
from bench.report import Metric
from bench.scenario import Spec
from kxds import names

TARGET = "every proxy holds the versions it had within 3 s of the start; 0 resent"
SERVICES = 5000
LIGHT = 198
"""Light clients: with the two Envoys, 200 proxies."""
NAMES_PER_CLIENT = 10
SETTLE = 2.0
"""Seconds to keep watching after every proxy is back (late pushes count too)."""
ROOT = Path(__file__).resolve().parent.parent


def fake_api() -> Any:
    """The test suite's fake API server (``tests/`` is no package: imported by path)."""
    tests = str(ROOT / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    import fakeapi

    return fakeapi


class KxdsProcess:
    """``kxds serve`` with the API source on fixed ports, restartable."""

    def __init__(self, kubeconfig: str, xds_port: int, admin_port: int) -> None:
        self.argv = [sys.executable, "-m", "kxds.cli", "serve", "--kubeconfig", kubeconfig,
                     "--xds-address", f"127.0.0.1:{xds_port}",
                     "--admin-address", f"127.0.0.1:{admin_port}",
                     "--no-events", "--log-level", "warning",
                     # Every simulated proxy connects from 127.0.0.1, which kxds counts
                     # as one client: lift the per-client caps.
                     "--max-streams-per-client", "100000", "--max-groups-per-client", "100000"]
        self.xds_port, self.admin_port = xds_port, admin_port
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    def start(self) -> float:
        """Start the process; returns time.perf_counter() just before the spawn."""
        self.runs += 1
        t0 = time.perf_counter()
        self.proc = start(self.argv, f"m10-kxds-{self.runs}")
        return t0

    def kill(self) -> None:
        """SIGKILL, as an OOM kill or a node loss does: nothing is flushed or closed."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        stop(self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)

    async def get(self, path: str, timeout: float = 30.0) -> tuple[int, bytes]:
        try:
            return await http_get(self.admin_port, path, timeout=timeout)
        except (OSError, TimeoutError):
            return 0, b""

    async def json(self, path: str) -> Any:
        status, body = await self.get(path)
        if status != 200:
            raise RuntimeError(f"kxds {path}: {status}")
        return json.loads(body)

    def cpu_seconds(self) -> float | None:
        """CPU time the process has used so far (user and system, all threads), from
        ``/proc`` (None where there is none)."""
        assert self.proc is not None
        try:
            with open(f"/proc/{self.proc.pid}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    async def wait_ready(self, timeout: float = 300.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"kxds exited:\n{log_tail(f'm10-kxds-{self.runs}')}")
            if (await self.get("/readyz", 5.0))[0] == 200:
                return time.perf_counter()
            await asyncio.sleep(0.02)
        raise TimeoutError(f"kxds not ready in {timeout}s")

    async def first_rebuild_seconds(self) -> float | None:
        """The new process's first rebuild (its ``kxds_rebuild_duration_seconds_sum``)."""
        _, body = await self.get("/metrics")
        for line in body.decode().splitlines():
            if line.startswith("kxds_rebuild_duration_seconds_sum"):
                return float(line.rpartition(" ")[2])
        return None

    async def sent(self) -> dict[str, float]:
        """``kxds_xds_resources_sent_total`` and ``kxds_xds_responses_total`` by labels."""
        _, body = await self.get("/metrics")
        out: dict[str, float] = {}
        for line in body.decode().splitlines():
            if line.startswith(("kxds_xds_resources_sent_total", "kxds_xds_responses_total")):
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
        return out


def held_versions(dump: dict[str, Any]) -> dict[str, dict[str, dict[str, str | None]]]:
    """Per node, per type, per resource: the version the node has ACKed."""
    out: dict[str, dict[str, dict[str, str | None]]] = {}
    for node in dump["nodes"]:
        by_type: dict[str, dict[str, str | None]] = {}
        for short, t in node.get("types", {}).items():
            by_type[short] = {n: r.get("acked_version") or r.get("version")
                              for n, r in t.get("resources", {}).items()}
        out[node["node"]] = by_type
    return out


async def envoy_updates(envoys: list[Envoy]) -> dict[str, int]:
    """Per Envoy, the sum of every subscription's ``update_success`` (responses applied)."""
    out: dict[str, int] = {}
    for e in envoys:
        stats = await e.stats(r"update_success$")
        out[e.name] = sum(stats.values())
    return out


async def one_restart(kx: KxdsProcess, proxies: set[str], before: dict[str, Any],
                      envoys: list[Envoy], clients: list[LightClients],
                      timeout: float) -> dict[str, Any]:
    updates_before = await envoy_updates(envoys)
    events_before = [len(c.events) for c in clients]
    kx.kill()
    t_kill = time.perf_counter()
    # The proxies notice the stream ending; kxds is away for a moment, as when a
    # Pod is replaced.
    await asyncio.sleep(1.0)
    t0 = kx.start()
    t_ready = await kx.wait_ready()
    ready_cpu = kx.cpu_seconds()
    first_rebuild = await kx.first_rebuild_seconds()
    deadline = time.monotonic() + timeout
    t_connected: float | None = None
    t_same: float | None = None
    dump_s: float | None = None
    now: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status, body = await kx.get("/debug/nodes", 5.0)
        if status == 200:
            connected = {n["node"] for n in json.loads(body) if n["connected"]}
            if proxies <= connected:
                t_connected = t_connected or time.perf_counter()
                t_dump = time.perf_counter()
                dump = await kx.json("/debug/config_dump")
                now = held_versions(dump)
                dump_s = time.perf_counter() - t_dump
                if all(now.get(p) == before[p] for p in proxies):
                    # The moment kxds took the dump that shows it (its clock, this
                    # machine's), not the moment this check had fetched and parsed it.
                    t_same = dump["time"] - (time.time() - time.perf_counter())
                    break
        await asyncio.sleep(0.05)
    await asyncio.sleep(SETTLE)
    sent = await kx.sent()
    updates_after = await envoy_updates(envoys)
    light = [e for c, n in zip(clients, events_before, strict=True) for e in c.events[n:]]
    differing = sorted(p for p in proxies if now.get(p) != before[p])
    resources_sent = sum(v for k, v in sent.items() if k.startswith("kxds_xds_resources_sent"))
    responses = sum(v for k, v in sent.items() if k.startswith("kxds_xds_responses"))
    return {
        "kill_to_start_s": t0 - t_kill,
        "start_to_ready_s": t_ready - t0, "first_rebuild_s": first_rebuild,
        # kxds's own CPU time until ready: the rest of start_to_ready_s it waited
        # (for the API server, or for a core on a busy machine).
        "start_to_ready_cpu_s": ready_cpu,
        # The check's own cost: the last /debug/config_dump's fetch and parse (after
        # start_to_same_versions_s, which ends when kxds took that dump).
        "last_config_dump_s": dump_s,
        "start_to_all_connected_s": None if t_connected is None else t_connected - t0,
        "start_to_same_versions_s": None if t_same is None else t_same - t0,
        "ready_to_same_versions_s": None if t_same is None else t_same - t_ready,
        "proxies_differing": differing[:10], "proxies_differing_count": len(differing),
        "resources_resent": resources_sent, "responses_sent": responses,
        "sent_by_label": {k: v for k, v in sent.items() if v},
        "envoy_updates_applied": {k: updates_after[k] - updates_before.get(k, 0)
                                  for k in updates_after},
        "light_client_responses": sum(1 for e in light if "v" in e),
        "light_client_resources": sum(int(e.get("n", 0)) for e in light if "v" in e),
        "light_client_reconnects": sum(1 for e in light if "reconnected" in e),
    }


async def run_m10(unit: float, quick: bool = False) -> list[Metric]:
    fakeapi = fake_api()
    spec = Spec(services=SERVICES)
    api = fakeapi.FakeApi(history=100_000).start()
    envoys: list[Envoy] = []
    clients: list[LightClients] = []
    kx: KxdsProcess | None = None
    try:
        for doc in scenario.documents(spec):
            api.apply(doc)
        config = fakeapi.kubeconfig(api.url, str(WORKDIR / "m10-kubeconfig"))
        kx = KxdsProcess(config, free_port(), free_port())
        t0 = kx.start()
        cold_ready = await kx.wait_ready() - t0
        cold_cpu = kx.cpu_seconds()
        envoys = [Envoy("m10-sotw", kx.xds_port, node_id="m10-sotw"),
                  Envoy("m10-delta", kx.xds_port, node_id="m10-delta", delta=True)]
        for e in envoys:
            await wait_loaded(e, SERVICES, timeout=300.0)
        half = LIGHT // 2
        for k, protocol in enumerate(("sotw", "delta")):
            picked = [names.service_cluster(scenario.namespace_of(spec, i),
                                            scenario.service_name(i), scenario.SERVICE_PORT)
                      for i in range(k, SERVICES, SERVICES // NAMES_PER_CLIENT)]
            c = LightClients(kx.xds_port, half, picked[:NAMES_PER_CLIENT], protocol=protocol,
                             prefix=f"m10-{protocol}", listeners=True, reconnect=True)
            await c.start(timeout=300.0)
            clients.append(c)
        proxies = {"m10-sotw", "m10-delta",
                   *(f"m10-{p}-{i}" for p in ("sotw", "delta") for i in range(half))}
        await asyncio.sleep(SETTLE)
        before = held_versions(await kx.json("/debug/config_dump"))
        missing = sorted(proxies - before.keys())
        if missing:
            raise RuntimeError(f"proxies unknown to kxds before the kill: {missing[:5]}")
        held = {p: sum(len(r) for r in before[p].values()) for p in ("m10-sotw", "m10-delta")}
        restarts = [await one_restart(kx, proxies, before, envoys, clients, timeout=120.0)
                    for _ in range(1 if quick else 3)]
    finally:
        for c in clients:
            await c.stop()
        for e in envoys:
            e.stop()
        if kx is not None:
            kx.stop()
        with contextlib.suppress(Exception):
            api.stop()
    times = [r["start_to_same_versions_s"] for r in restarts]
    worst = None if None in times else max(t for t in times if t is not None)
    resent = sum(r["resources_resent"] for r in restarts)
    details: dict[str, Any] = {
        "services": SERVICES, "proxies": len(proxies),
        "envoy_resources_held": held, "cold_start_to_ready_s": cold_ready,
        "cold_start_to_ready_cpu_s": cold_cpu,
        "restarts": restarts,
        "note": ("times from the new process's spawn (Python start-up, the API list of "
                 "every kind, the first rebuild); 'same versions': kxds's tracker shows "
                 "every proxy holding what it ACKed before the kill"),
    }
    met = worst is not None and worst <= 3.0 and resent == 0
    return [Metric(id="M10", title="restart: start -> every proxy holds its versions (worst)",
                   value=worst, unit="s", target=TARGET, met=met,
                   cal=None if worst is None else worst / unit, details=details)]
