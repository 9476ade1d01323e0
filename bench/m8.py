"""M8: control-plane time vs Envoy apply time.

For CDS with 1,000 and 5,000 clusters (each Service routed to by one path; the
edge builds clusters only for what routes use) and for a
route table of 1,000 virtual hosts (1,000 Ingresses with one host each), a
fresh Envoy connects to kxds holding that snapshot. The control-plane time is
the controller's rebuild (translate, check, build and serialize) of the
snapshot; the Envoy time is the sum of every ``update_duration`` histogram
of Envoy's (CDS, LDS, RDS, each cluster's EDS: the time it spent applying the
whole snapshot), and, in the details, that of the CDS or RDS update alone.
Ratio = kxds / Envoy.

Then the same ratio for one change of each scenario of M1, M2 (per N) and M9
(:mod:`bench.m8_scenarios`); the value is the worst ratio over these changes,
the issue's definition of M8; the cold cases are in the details.
"""

from __future__ import annotations

import re
from typing import Any

from bench import scenario
from bench.live import ControlPlane
from bench.m8_scenarios import settled_totals
from bench.procs import Envoy
from bench.report import Metric
from bench.scenario import Spec
from bench.timing import Summary, clear_memos

TARGET = "kxds time / Envoy apply time <= 1"
P50 = 2
"""Index of P50 in Envoy's default supported quantiles (0, 25, 50, ...)."""


async def envoy_apply_ms(envoy: Envoy, pattern: str, timeout: float = 180.0) -> float:
    """The P50 of the first histogram matching ``pattern`` once it has a sample."""
    found: dict[str, float] = {}

    async def ready() -> bool:
        hists = await envoy.histograms("update_duration")
        for name, values in hists.items():
            cum = values[P50].get("cumulative") if len(values) > P50 else None
            if re.search(pattern, name) and cum:
                found[name] = float(cum)
        return bool(found)

    await envoy.wait_until(ready, timeout, interval=0.1)
    return max(found.values())


async def one_case(label: str, spec: Spec, pattern: str, repeats: int) -> dict[str, Any]:
    state = scenario.build_state(spec)
    cp_s: list[float] = []
    envoy_s: list[float] = []
    whole_s: list[float] = []
    for r in range(repeats):
        clear_memos()  # a cold rebuild, as at start-up
        cp = ControlPlane(holdoff=0.0, max_holdoff=0.0)
        envoy: Envoy | None = None
        try:
            await cp.start(state)
            rebuild = cp.last_rebuild_seconds()
            assert rebuild is not None
            envoy = Envoy(f"m8-{label}-{r}", cp.port, flush_on_admin=True)
            envoy_ms = await envoy_apply_ms(envoy, pattern)
            whole_ms = sum(ms for ms, _ in (await settled_totals(envoy)).values())
            cp_s.append(rebuild)
            envoy_s.append(envoy_ms / 1e3)
            whole_s.append(whole_ms / 1e3)
        finally:
            if envoy is not None:
                envoy.stop()
            await cp.stop()
    cp_sum, envoy_sum, whole = Summary.of(cp_s), Summary.of(envoy_s), Summary.of(whole_s)
    return {"case": label, "kxds_s": cp_sum, "envoy_s": envoy_sum, "whole_s": whole,
            "ratio": cp_sum.median / whole.median,
            "ratio_to_that_update_alone": cp_sum.median / envoy_sum.median}


async def run_m8(unit: float, repeats: int = 3, quick: bool = False) -> list[Metric]:
    from bench.m8_scenarios import run_scenarios

    cases = [
        # Clusters exist for what routes use: every Service is routed to (one path
        # each, four per Ingress), and a Service's change sends its cluster by CDS.
        ("cds-1k", Spec(services=1000, policy_every=0),
         r"^cluster_manager\.cds\.update_duration$"),
        ("cds-5k", Spec(services=5000, policy_every=0),
         r"^cluster_manager\.cds\.update_duration$"),
        ("rds-1k-hosts", Spec(services=1000, paths_per_ingress=1, policy_every=0),
         r"\.rds\..*update_duration$"),
    ]
    if quick:  # one of each, 5,000 clusters left out: the quick run stays under 2 minutes
        cases = [c for c in cases if c[0] != "cds-5k"]
    results = [await one_case(label, spec, pat, 1 if quick else max(1, min(repeats, 3)))
               for label, spec, pat in cases]
    changes = await run_scenarios(repeats=2 if quick else 10, nodes=500)
    worst = max(c["ratio"] for c in changes.values())
    details: dict[str, Any] = {r["case"]: {"kxds_rebuild_p50_s": r["kxds_s"].median,
                           "envoy_apply_whole_p50_s": r["whole_s"].median,
                           "envoy_apply_that_update_p50_s": r["envoy_s"].median,
                           "kxds_cal": r["kxds_s"].median / unit, "ratio": r["ratio"],
                           "ratio_to_that_update_alone": r["ratio_to_that_update_alone"],
                           "repeats": r["kxds_s"].n} for r in results}
    details["note"] = ("cold cases (not in the value): kxds time is the whole rebuild of the "
                       "snapshot (every resource), Envoy time the sum of all its update_duration "
                       "histograms (whole ms each), and in '..._that_update' the CDS or RDS "
                       "update alone; per_change: one change from publish to the rebuilt views "
                       "vs what Envoy's update_duration histograms gained (whole ms)")
    details["worst_cold_ratio"] = max(r["ratio"] for r in results)
    details["per_change"] = changes
    return [Metric(id="M8", title="kxds time / Envoy apply time (worst change of M1, M2, M9)",
                   value=worst, unit="ratio", target=TARGET, met=worst <= 1.0, details=details)]
