"""The benchmark run: calibration, then each metric, then the report.

A metric that fails to run is reported as "not measured" with the error; the
others still run. Every process started is stopped by pid at the end, also on
error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import shutil
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import procs
from bench.report import Metric, machine, write
from bench.timing import calibration_unit

ALL = ("M1", "M2", "M3", "M5", "M6", "M7", "M8", "M9", "M10")
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True, slots=True)
class Settings:
    quick: bool
    full: bool
    churn_seconds: float
    repeats: int
    m3_sizes: tuple[int, ...]
    m2_sizes: tuple[int, ...]
    m5_streams: tuple[int, ...]
    m6_services: int

    @classmethod
    def of(cls, args: argparse.Namespace) -> Settings:
        sizes = (100, 500, 1000, 5000) + ((10000,) if args.full else ())
        if args.quick:
            return cls(True, args.full, args.churn_seconds if args.churn_seconds is not None
                       else 5.0, args.repeats or 3, sizes, (100, 1000, 3000), (10, 100, 1000),
                       5000)
        return cls(False, args.full, args.churn_seconds if args.churn_seconds is not None
                   else 300.0, args.repeats or 5, sizes, (100, 1000, 3000), (10, 100, 1000),
                   5000)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="fewer repeats and a 5 s churn")
    p.add_argument("--full", action="store_true", help="also N=10,000")
    p.add_argument("--churn-seconds", type=float, default=None,
                   help="M2 route churn duration (default 300, 5 with --quick)")
    p.add_argument("--repeats", type=int, default=0, help="timed repeats per measurement")
    p.add_argument("--only", default=",".join(ALL), help="comma-separated metric ids")
    p.add_argument("--results", type=Path, default=RESULTS, help="output directory")
    return p.parse_args(argv)


async def run_all(s: Settings, only: set[str], results: Path) -> list[Metric]:
    def mod(name: str) -> Any:
        # Imported per metric, so one whose dependencies are missing fails alone.
        return importlib.import_module(f"bench.{name}")

    steps: dict[str, Callable[[float], Awaitable[list[Metric]]]] = {
        "M3": lambda u: asyncio.to_thread(mod("m3").run_m3, s.m3_sizes, 5000, 500, s.repeats,
                                          u, results),
        "M1": lambda u: mod("m1").run_m1(1000, 30 if s.quick else 100, 5, u,
                                         through_api=not s.quick),
        "M7": lambda u: mod("m7").run_m7(u, quick=s.quick),
        "M5": lambda u: mod("m5").run_m5(s.m5_streams, u, repeats=3 if s.quick else 5),
        "M8": lambda u: mod("m8").run_m8(u, repeats=s.repeats, quick=s.quick),
        "M6": lambda u: mod("m6").run_m6(s.m6_services, u, quick=s.quick),
        "M9": lambda u: mod("m9").run_m9(u, quick=s.quick, results=results),
        "M10": lambda u: mod("m10").run_m10(u, quick=s.quick),
        "M2": lambda u: mod("m2").run_m2(s.m2_sizes, s.churn_seconds, u,
                                         repeats=10 if s.quick else 20),
    }
    out: list[Metric] = []
    for mid, step in steps.items():
        if mid not in only:
            continue
        t0 = time.monotonic()
        # The unit is measured again right before each metric, so that load from
        # other processes during the run shows up in both the unit and the metric.
        local = calibration_unit().median
        print(f"[bench] {mid} ... (unit {local * 1e3:.2f} ms)", flush=True)
        try:
            got = await step(local)
            for m in got:
                m.details["calibration_unit_s"] = local
            out += got
        except Exception as e:  # one metric failing must not lose the others
            traceback.print_exc()
            out.append(Metric(id=mid, title="(failed)", value=None, unit="", target="",
                              met=None, error=f"{type(e).__name__}: {e}"[:300]))
        finally:
            procs.stop_all()
        print(f"[bench] {mid} done in {time.monotonic() - t0:.1f} s", flush=True)
    return sorted(out, key=lambda m: m.id)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    s = Settings.of(args)
    only = {x.strip().upper() for x in args.only.split(",") if x.strip()}
    started = time.monotonic()
    cal = calibration_unit()
    print(f"[bench] calibration unit: {cal.median * 1e3:.2f} ms "
          "(serialize 1,000 reference clusters)", flush=True)
    try:
        metrics = asyncio.run(run_all(s, only, args.results))
    finally:
        procs.stop_all()
    run: dict[str, Any] = {
        "quick": s.quick, "full": s.full, "churn_seconds": s.churn_seconds,
        "repeats": s.repeats, "only": sorted(only),
        "calibration_unit_s": cal.median, "calibration_unit_p99_s": cal.p99,
        "wall_seconds": round(time.monotonic() - started, 1),
    }
    write(metrics, machine(), run, args.results)
    if any(m.error for m in metrics):
        print(f"[bench] process logs kept in {procs.WORKDIR}", flush=True)
    else:
        shutil.rmtree(procs.WORKDIR, ignore_errors=True)
    return 0
