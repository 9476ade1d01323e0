"""Long-running tasks restarted when they fail, so no bug in one of them ends kxds.

``kxds serve`` runs its source and its controller under a :class:`Supervisor`:
a task that raises (or returns, which a forever-task must not) is logged with
its traceback, counted in ``kxds_task_restarts_total``, and started again
after a backoff that doubles from 1 s to 60 s (and resets once the task has
run for a minute), so a failure that repeats costs a log line a minute, not a
crash loop. The last good configuration keeps being served meanwhile: the
xDS cache keeps its views. ``/healthz`` reports the restarts in its body.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter

log = logging.getLogger("kxds.supervise")

BACKOFF_INITIAL = 1.0
BACKOFF_MAX = 60.0
HEALTHY_AFTER = 60.0
"""A task that ran this long before failing starts again after the initial backoff."""


@dataclass(slots=True)
class _Record:
    restarts: int = 0
    last_error: str = ""


class Supervisor:
    """Runs named forever-tasks, restarting each one that ends or fails."""

    def __init__(self, registry: CollectorRegistry, *, backoff: float = BACKOFF_INITIAL,
                 backoff_max: float = BACKOFF_MAX) -> None:
        self.backoff, self.backoff_max = backoff, backoff_max
        self._records: dict[str, _Record] = {}
        self._restarts = Counter("kxds_task_restarts", "Long-running tasks started again "
                                 "after they failed", ["task"], registry=registry)

    async def run(self, name: str, start: Callable[[], Coroutine[Any, Any, object]]) -> None:
        """Run ``start()`` until cancelled, again after every failure (with backoff)."""
        record = self._records.setdefault(name, _Record())
        delay = self.backoff
        while True:
            started = time.monotonic()
            try:
                await start()
                record.last_error = "returned"
                log.error("event=task_failed task=%s error=returned", name)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                record.last_error = f"{type(e).__name__}: {e}"[:200]
                log.exception("event=task_failed task=%s", name)
            if time.monotonic() - started >= HEALTHY_AFTER:
                delay = self.backoff
            record.restarts += 1
            self._restarts.labels(name).inc()
            log.warning("event=task_restart task=%s restarts=%d in_seconds=%.1f",
                        name, record.restarts, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.backoff_max)

    def health(self) -> str:
        """``ok``, or what was restarted and why (the body of ``/healthz``)."""
        failed = [f"{name} restarted {r.restarts} times (last: {r.last_error})"
                  for name, r in sorted(self._records.items()) if r.restarts]
        return "ok" if not failed else "ok; " + "; ".join(failed)
