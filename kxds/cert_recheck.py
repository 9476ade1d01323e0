"""Rebuilding an unchanged state when one of its certificates starts or stops being valid.

Translators read no clock: each rebuild checks certificates against its own
instant (:func:`config_at_now`, unless the config pins one). When one of the
served state's certificates becomes valid or expires later, the controller
rebuilds the same state at that instant (:func:`next_recheck`), so an expired
certificate fails closed on time rather than at the next unrelated change.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from kxds.certs.check import next_validity_change
from kxds.translators.config import TranslateConfig

MAX_WAIT = 3600.0
"""Seconds waited for a recheck at most at a time: the wall clock may be set meanwhile."""


def config_at_now(config: TranslateConfig) -> TranslateConfig:
    """``config`` with the instant certificates are checked against: now, unless
    ``config`` pins one."""
    if config.tls_now is not None:
        return config
    return dataclasses.replace(config, tls_now=dt.datetime.now(dt.UTC))


def next_recheck(configured: TranslateConfig, used: TranslateConfig,
                 bounds: frozenset[dt.datetime]) -> dt.datetime | None:
    """Just after the next instant a certificate of the served view starts or stops
    being valid (``bounds``, checked at ``used.tls_now``); None when the
    ``configured`` config pins the instant or nothing changes."""
    if configured.tls_now is not None or used.tls_now is None:
        return None
    edge = next_validity_change(bounds, used.tls_now)
    return None if edge is None else edge + dt.timedelta(seconds=1)


def seconds_until(recheck: dt.datetime) -> float:
    """How long to wait for ``recheck`` now: never less than 0 nor more than
    :data:`MAX_WAIT`."""
    return min(max((recheck - dt.datetime.now(dt.UTC)).total_seconds(), 0.0), MAX_WAIT)


def due(recheck: dt.datetime) -> bool:
    """Whether the wall clock has reached ``recheck``."""
    return dt.datetime.now(dt.UTC) >= recheck
