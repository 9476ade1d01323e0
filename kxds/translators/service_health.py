"""Health of a Service's endpoints: passive outlier detection and active health checks,
asked for by ``kxds.io/`` annotations on the Service itself (not on an Ingress).

ingress-nginx has no per-Service equivalent: nginx marks a server failed after
``max_fails`` errors within ``fail_timeout`` (ConfigMap ``upstream-max-fails``,
``upstream-fail-timeout``) and never probes it. kxds maps these annotations to the
Envoy cluster of every port of the Service (and of the twins routes ask for), at the
edge and on the per-node proxies:

* any ``kxds.io/outlier-*`` annotation turns on ``outlier_detection``; the ones not
  set keep Envoy's defaults (5 consecutive 5xx, 10 s interval, 30 s base ejection
  time, 10 % of the hosts at most, one host at least).
* ``kxds.io/health-check-path`` turns on an HTTP ``health_checks`` entry: ``GET path``
  to each host, 2xx is healthy. The other ``health-check-*`` annotations default as a
  Kubernetes readiness probe does (every 10 s, 1 s timeout, 1 success, 3 failures);
  set without a path they are reported and nothing is probed. UDP ports are not
  probed. A host starts unhealthy until its first probe passes (Envoy's rule).

A value kxds cannot use is reported naming the Service and the annotation, and that
annotation alone is left out; an unknown ``kxds.io/outlier-*`` or
``kxds.io/health-check-*`` annotation is reported too.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from kxds.diagnostics import Diagnostic, Reason, show
from kxds.ir import HealthCheck, OutlierDetection
from kxds.kube.models import Service
from kxds.translators.annotations.spec import KXDS
from kxds.translators.annotations.values import BadValue, Parser, integer

_DURATION = re.compile(r"^(\d+)(ms|s|m)?$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, None: 1000}


def duration(low_ms: int, high_ms: int) -> Parser[int]:
    """``10`` or ``10s`` (seconds), ``500ms``, ``2m``; returned in milliseconds."""
    def parse(text: str) -> int:
        m = _DURATION.match(text.strip())
        if m is None:
            raise BadValue("is not a duration (such as 10s, 500ms or 2m)")
        value = int(m.group(1)) * _UNIT_MS[m.group(2)]
        if not low_ms <= value <= high_ms:
            raise BadValue(f"is outside {low_ms}ms-{high_ms // 1000}s")
        return value
    return parse


def path(text: str) -> str:
    """An absolute HTTP path without spaces."""
    value = text.strip()
    if not value.startswith("/") or any(c.isspace() or ord(c) < 32 for c in value):
        raise BadValue("is not an absolute path (such as /healthz)")
    return value


@dataclass(frozen=True, slots=True)
class ServiceAnnotation:
    """One ``kxds.io/`` annotation read on Services."""

    name: str
    """The short name (``outlier-interval``)."""
    envoy: str
    """The Envoy field it sets."""
    note: str
    """Its default and what differs from ingress-nginx."""
    parse: Callable[[str], int | str]


_A = ServiceAnnotation
OUTLIER_5XX = _A("outlier-consecutive-5xx", "outlier_detection consecutive_5xx",
                 "default 5 (ingress-nginx: max_fails, default 1, counts errors "
                 "and timeouts, not 5xx)", integer(1, 1000))
OUTLIER_INTERVAL = _A("outlier-interval", "outlier_detection interval",
                      "default 10s", duration(100, 3_600_000))
OUTLIER_EJECTION = _A("outlier-base-ejection-time", "outlier_detection base_ejection_time",
                      "default 30s, multiplied by the host's ejections so far (nginx: "
                      "fail_timeout, fixed)", duration(100, 3_600_000))
OUTLIER_MAX_PERCENT = _A("outlier-max-ejection-percent",
                         "outlier_detection max_ejection_percent",
                         "default 10; Envoy ejects one host at least", integer(0, 100))
HC_PATH = _A("health-check-path", "health_checks http_health_check path",
             "turns active checks on: GET to each endpoint, 2xx is healthy (nginx does not "
             "probe)", path)
HC_INTERVAL = _A("health-check-interval", "health_checks interval, no_traffic_interval",
                 "default 10s", duration(100, 3_600_000))
HC_TIMEOUT = _A("health-check-timeout", "health_checks timeout", "default 1s",
                duration(10, 600_000))
HC_HEALTHY = _A("health-check-healthy-threshold", "health_checks healthy_threshold",
                "default 1", integer(1, 100))
HC_UNHEALTHY = _A("health-check-unhealthy-threshold", "health_checks unhealthy_threshold",
                  "default 3", integer(1, 100))

SERVICE_REGISTRY = {a.name: a for a in (OUTLIER_5XX, OUTLIER_INTERVAL, OUTLIER_EJECTION,
                                        OUTLIER_MAX_PERCENT, HC_PATH, HC_INTERVAL,
                                        HC_TIMEOUT, HC_HEALTHY, HC_UNHEALTHY)}
"""Every Service annotation, by short name (``docs/service-annotations.md`` lists them)."""

_OURS = ("outlier-", "health-check-")


@dataclass(frozen=True, slots=True)
class ServiceHealth:
    """What a Service's annotations ask of its clusters, and their problems."""

    outlier_detection: OutlierDetection | None = None
    health_check: HealthCheck | None = None
    diagnostics: tuple[Diagnostic, ...] = ()


NO_HEALTH = ServiceHealth()


def service_health(service: Service) -> ServiceHealth:
    """The outlier detection and health check ``service``'s annotations ask for."""
    annotations = service.meta.annotations
    if not any(k.startswith(KXDS + p) for k in annotations for p in _OURS):
        return NO_HEALTH  # the common case
    ref = service.meta.ref
    diags: list[Diagnostic] = []
    got: dict[str, int | str] = {}
    for key in sorted(annotations):
        short = key.removeprefix(KXDS)
        if short == key or not short.startswith(_OURS):
            continue
        field = f"metadata.annotations[{key}]"
        known = SERVICE_REGISTRY.get(short)
        if known is None:
            diags.append(Diagnostic(ref, field, Reason.UNSUPPORTED,
                                    f"unknown Service annotation {key}; it is ignored"))
            continue
        try:
            got[short] = known.parse(annotations[key])
        except BadValue as e:
            diags.append(Diagnostic(ref, field, Reason.INVALID_VALUE,
                                    f"{show(annotations[key])} {e}; the annotation is not "
                                    "applied"))
    outlier = _outlier(got)
    check = _check(got)
    if check is None and any(a.name in got for a in (HC_INTERVAL, HC_TIMEOUT, HC_HEALTHY,
                                                       HC_UNHEALTHY)):
        diags.append(Diagnostic(ref, f"metadata.annotations[{KXDS}{HC_PATH.name}]",
                                Reason.INVALID_VALUE,
                                "health-check-* annotations need a usable "
                                f"{KXDS}{HC_PATH.name}; the endpoints are not probed"))
    return ServiceHealth(outlier, check, tuple(diags))


def _int(got: dict[str, int | str], a: ServiceAnnotation, default: int) -> int:
    value = got.get(a.name, default)
    assert isinstance(value, int)
    return value


def _outlier(got: dict[str, int | str]) -> OutlierDetection | None:
    if not any(a.name in got for a in (OUTLIER_5XX, OUTLIER_INTERVAL, OUTLIER_EJECTION,
                                       OUTLIER_MAX_PERCENT)):
        return None
    d = OutlierDetection()
    return OutlierDetection(
        consecutive_5xx=_int(got, OUTLIER_5XX, d.consecutive_5xx),
        interval_ms=_int(got, OUTLIER_INTERVAL, d.interval_ms),
        base_ejection_time_ms=_int(got, OUTLIER_EJECTION, d.base_ejection_time_ms),
        max_ejection_percent=_int(got, OUTLIER_MAX_PERCENT, d.max_ejection_percent))


def _check(got: dict[str, int | str]) -> HealthCheck | None:
    probe = got.get(HC_PATH.name)
    if not isinstance(probe, str):
        return None
    d = HealthCheck(path=probe)
    return HealthCheck(
        path=probe, interval_ms=_int(got, HC_INTERVAL, d.interval_ms),
        timeout_ms=_int(got, HC_TIMEOUT, d.timeout_ms),
        healthy_threshold=_int(got, HC_HEALTHY, d.healthy_threshold),
        unhealthy_threshold=_int(got, HC_UNHEALTHY, d.unhealthy_threshold))


DOC_HEAD = """# Service annotations in kxds

kxds reads these annotations on a **Service** (not on an Ingress). They apply to the
Envoy cluster of every port of the Service, and so to every route, Ingress or
Gateway API, that sends traffic to it, and to the per-node proxies' listeners.
ingress-nginx has no per-Service equivalent: nginx marks a server failed after
`max_fails` errors within `fail_timeout` and never probes it. Any `kxds.io/outlier-*`
annotation turns outlier detection on (the ones not set keep the defaults below);
`kxds.io/health-check-path` turns active HTTP checks on (UDP ports are not probed; an
endpoint starts unhealthy until its first check passes).
A value kxds cannot use is reported (`InvalidValue`, naming the Service and the
annotation) and that annotation alone is left out; an unknown `kxds.io/outlier-*` or
`kxds.io/health-check-*` annotation is reported (`Unsupported`). Durations: `10s`,
`500ms`, `2m`, or whole seconds.

Generated from `kxds/translators/service_health.py`
(`python -m kxds.translators.service_health`); do not edit by hand.

| annotation | Envoy feature | notes |
| --- | --- | --- |
"""


def render_doc() -> str:
    """``docs/service-annotations.md``."""
    rows = [f"| `{KXDS}{a.name}` | {a.envoy} | {a.note} |"
            for a in SERVICE_REGISTRY.values()]
    return DOC_HEAD + "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(render_doc(), end="")
