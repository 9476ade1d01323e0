"""The soak run: ``make soak`` (``python -m bench.soak``), outside ``make test``.

``kxds serve`` (a real process, on a manifest directory) feeds a real Envoy
while a load generator sends steady traffic to stable routes and the
manifests churn for ``--minutes`` (30 by default): EndpointSlices move between
two backends, paths come and go on Ingresses, whole Services with their
slices and Ingresses are created and deleted, and the TLS Secret of an
HTTPS host is rotated. Every ``--sample-seconds`` kxds's resident memory,
open file descriptors, threads and event-loop tasks are read (from /proc and
its metrics). It passes when, after a warm-up, memory stays within 10% of
its warm value, file descriptors and tasks do not grow, and every request
answered 2xx. Results go to bench/results/soak.{json,md}, like the benchmark's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from bench import scenario
from bench.procs import WORKDIR, Envoy, free_port, log_tail, start, start_backend, stop, stop_all
from bench.scenario import Spec
from kxds.certs.make import make_ca, make_leaf, tls_secret_yaml

RESULTS = Path(__file__).parent / "results"
SERVICES = 200
STABLE_ROUTES = 50
LOAD_RPS = 100.0
CHURN_INTERVAL = 0.2
WARMUP_FRACTION = 0.1
RSS_TOLERANCE = 0.10


def proc_status(pid: int) -> dict[str, int]:
    """Resident memory (bytes), threads and open file descriptors of ``pid``."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "Threads"):
            fields[key] = int(value.split()[0])
    fds = len(list(Path(f"/proc/{pid}/fd").iterdir()))
    return {"rss_bytes": fields["VmRSS"] * 1024, "threads": fields["Threads"], "fds": fds}


def metric(admin_port: int, name: str) -> float | None:
    """One unlabelled value from kxds's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return None


class Churn:
    """Changes to the manifest directory, one at a time, as an operator's cluster would."""

    def __init__(self, spec: Spec, directory: Path, backends: tuple[int, int]) -> None:
        self.spec, self.dir, self.backends = spec, directory, backends
        self.rng = random.Random(30)
        self.extra_paths: dict[int, int] = {}
        self.extra_services: set[int] = set()
        self.counts: dict[str, int] = {}
        self.ca = make_ca("kxds soak CA")
        self.rotations = 0

    def step(self, n: int) -> None:
        kind = self.rng.choice(("endpoints", "endpoints", "path", "service")) \
            if n % 150 else "certificate"
        getattr(self, f"_{kind}")(n)
        self.counts[kind] = self.counts.get(kind, 0) + 1

    def _endpoints(self, n: int) -> None:
        i = self.rng.randrange(self.spec.services)
        port = self.backends[n % 2]
        doc = scenario.slice_doc(dataclassed(self.spec, port), i)  # the other backend
        scenario.write_doc(self.dir, file_of(doc), doc)

    def _path(self, n: int) -> None:
        j = self.rng.randrange(self.spec.ingresses)
        if j in self.extra_paths:
            del self.extra_paths[j]
            extra: tuple[tuple[str, int], ...] = ()
        else:
            self.extra_paths[j] = n
            extra = ((f"/churn-{n}", j * self.spec.paths_per_ingress),)
        doc = scenario.ingress_doc(self.spec, j, extra)
        scenario.write_doc(self.dir, file_of(doc), doc)

    def _service(self, n: int) -> None:
        i = 10_000 + self.rng.randrange(20)
        name = f"extra-{i}"
        if i in self.extra_services:
            self.extra_services.discard(i)
            (self.dir / f"{name}.yaml").unlink(missing_ok=True)
            return
        self.extra_services.add(i)
        spec = dataclassed(self.spec, self.backends[0])
        docs = [scenario.service_doc(spec, i), scenario.slice_doc(spec, i)]
        (self.dir / f"{name}.yaml").write_text(yaml.safe_dump_all(docs), encoding="utf-8")

    def _certificate(self, n: int) -> None:
        self.rotations += 1
        leaf = make_leaf(self.ca, ["secure.soak.test"], days=30)
        ingress = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                   "metadata": {"name": "secure", "namespace": scenario.namespace_of(self.spec, 0)},
                   "spec": {"ingressClassName": scenario.INGRESS_CLASS,
                            "tls": [{"hosts": ["secure.soak.test"], "secretName": "soak-cert"}],
                            "rules": [{"host": "secure.soak.test", "http": {"paths": [
                                {"path": "/", "pathType": "Prefix", "backend": {"service": {
                                    "name": scenario.service_name(0),
                                    "port": {"number": scenario.SERVICE_PORT}}}}]}}]}}
        (self.dir / "secure.yaml").write_text(
            tls_secret_yaml(scenario.namespace_of(self.spec, 0), "soak-cert", leaf)
            + "---\n" + yaml.safe_dump(ingress), encoding="utf-8")


def file_of(doc: dict[str, Any]) -> str:
    """One file per object, named after it: a change rewrites that file alone."""
    meta = doc["metadata"]
    return f"{doc['kind'].lower()}-{meta.get('namespace', '')}-{meta['name']}"


def dataclassed(spec: Spec, port: int) -> Spec:
    """``spec`` with every endpoint on the local backend at ``port``."""
    return dataclasses.replace(spec, address=lambda i, e: ("127.0.0.1", port))


def run(minutes: float, sample_seconds: float) -> dict[str, Any]:
    (a, port_a), (b, port_b) = start_backend("soak-a"), start_backend("soak-b")
    spec = Spec(services=SERVICES, endpoints=1, address=lambda i, e: ("127.0.0.1", port_a))
    manifests = WORKDIR / "soak-manifests"
    manifests.mkdir()
    for doc in scenario.documents(spec):
        scenario.write_doc(manifests, file_of(doc), doc)
    xds, admin, http = free_port(), free_port(), free_port()
    kxds = start([sys.executable, "-m", "kxds.cli", "serve", "--manifests", str(manifests),
                  "--xds-address", f"127.0.0.1:{xds}", "--admin-address", f"127.0.0.1:{admin}",
                  "--http-port", str(http), "--listen-address", "127.0.0.1",
                  "--log-level", "warning"], "soak-kxds")
    envoy = Envoy("soak-envoy", xds)
    rng = random.Random(8)
    stable = [f"{scenario.host_of(i // spec.paths_per_ingress)}{scenario.path_of(i)}"
              for i in rng.sample(range(spec.services), STABLE_ROUTES)]
    wait_served(http, stable[0], kxds)
    seconds = minutes * 60
    out = WORKDIR / "soak-loadgen.out"
    with open(out, "wb") as f:
        gen = subprocess.Popen([sys.executable, "-m", "bench.loadgen", str(http), str(seconds),
                                str(LOAD_RPS), *stable], stdout=f, stderr=subprocess.STDOUT)
    churn = Churn(spec, manifests, (port_a, port_b))
    samples: list[dict[str, Any]] = []
    start_at = time.monotonic()
    next_sample, n = start_at, 0
    try:
        while gen.poll() is None:
            if kxds.poll() is not None:
                raise RuntimeError(f"kxds exited {kxds.returncode}:\n{log_tail('soak-kxds')}")
            churn.step(n)
            n += 1
            now = time.monotonic()
            if now >= next_sample:
                samples.append({"t_s": round(now - start_at, 1), **proc_status(kxds.pid),
                                "tasks": metric(admin, "kxds_event_loop_tasks"),
                                "rebuilds": metric(admin, "kxds_rebuild_sequence")})
                next_sample += sample_seconds
            time.sleep(CHURN_INTERVAL)
        load = json.loads(out.read_text().strip().splitlines()[-1])
    finally:
        envoy.stop()
        for p in (kxds, a, b):
            stop(p)
        if gen.poll() is None:
            gen.kill()
    return summarize(samples, load, churn, minutes)


def wait_served(port: int, route: str, kxds: subprocess.Popen[bytes]) -> None:
    host, _, path = route.partition("/")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if kxds.poll() is not None:
            raise RuntimeError(f"kxds exited:\n{log_tail('soak-kxds')}")
        try:
            req = urllib.request.Request(f"http://127.0.0.1:{port}/{path}", headers={"Host": host})
            with urllib.request.urlopen(req, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{route} not served:\n{log_tail('soak-kxds')}")


def summarize(samples: list[dict[str, Any]], load: dict[str, Any], churn: Churn,
              minutes: float) -> dict[str, Any]:
    warm = samples[max(1, int(len(samples) * WARMUP_FRACTION))]
    after = samples[samples.index(warm):]
    rss_growth = max(s["rss_bytes"] for s in after) / warm["rss_bytes"] - 1
    ok = sum(v for k, v in load["counts"].items() if k.startswith("2"))
    checks = {
        "rss_within_10_percent": rss_growth <= RSS_TOLERANCE,
        "no_fd_growth": samples[-1]["fds"] <= warm["fds"] + 2,
        "no_task_growth": (samples[-1]["tasks"] or 0) <= (warm["tasks"] or 0) + 2,
        "no_request_errors": ok == load["requests"],
    }
    return {"minutes": minutes, "services": SERVICES, "load_rps": LOAD_RPS,
            "churn_interval_s": CHURN_INTERVAL, "changes": churn.counts,
            "requests": load["requests"], "status_counts": load["counts"],
            "first_failures": load["failures"], "rss_warm_mb": warm["rss_bytes"] / 2**20,
            "rss_max_mb": max(s["rss_bytes"] for s in after) / 2**20,
            "rss_last_mb": samples[-1]["rss_bytes"] / 2**20, "rss_growth": rss_growth,
            "fds_warm": warm["fds"], "fds_last": samples[-1]["fds"],
            "tasks_warm": warm["tasks"], "tasks_last": samples[-1]["tasks"],
            "threads_last": samples[-1]["threads"], "checks": checks,
            "passed": all(checks.values()), "samples": samples}


def write(result: dict[str, Any], directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "soak.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# kxds soak run", "",
             f"{result['minutes']:g} minutes, {result['services']} Services, churn every "
             f"{result['churn_interval_s']} s ({result['changes']}), "
             f"{result['load_rps']:g} requests/s to stable routes.", "",
             "| check | value | passed |", "| --- | --- | --- |",
             f"| RSS after warm-up within 10% | {result['rss_warm_mb']:.1f} MB warm, "
             f"{result['rss_max_mb']:.1f} MB max, {result['rss_last_mb']:.1f} MB last "
             f"({result['rss_growth']:+.1%}) | {result['checks']['rss_within_10_percent']} |",
             f"| file descriptors | {result['fds_warm']} warm, {result['fds_last']} last | "
             f"{result['checks']['no_fd_growth']} |",
             f"| event-loop tasks | {result['tasks_warm']} warm, {result['tasks_last']} last | "
             f"{result['checks']['no_task_growth']} |",
             f"| requests | {result['requests']}, {result['status_counts']} | "
             f"{result['checks']['no_request_errors']} |", "",
             f"Passed: {result['passed']}."]
    (directory / "soak.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--sample-seconds", type=float, default=10.0)
    p.add_argument("--results", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    try:
        result = run(args.minutes, args.sample_seconds)
    finally:
        stop_all()
    write(result, args.results)
    print((args.results / "soak.md").read_text())
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
