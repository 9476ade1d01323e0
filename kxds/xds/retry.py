"""Rejected resource versions: remembered (bounded), and which may be offered again.

Most rejections are about the resource itself (an invalid field): sending the
same bytes again would be rejected again, so kxds never does. A few are about
the proxy's surroundings at that moment: a listener's port still held by the
process Envoy replaces (a restart, a hot upgrade), an address not yet on the
node, a file not yet written. Those resources are offered again, unchanged,
after 1 s, then 2, 4, ... up to 60 s (``--nack-retry-initial``,
``--nack-retry-max``), until Envoy accepts them or the view moves on.

Recognized by Envoy's error text: ``cannot bind '127.0.0.1:8080': Address
already in use`` (what Envoy 1.40 says, seen in the end-to-end tests),
``Cannot assign requested address`` (the ``strerror`` of ``EADDRNOTAVAIL``
after a failed bind), ``... does not exist`` and ``No such file or directory``
(a path a resource names is missing). A text matched by mistake costs one
resend per resource at most every 60 s.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

TRANSIENT = re.compile(
    r"address already in use|cannot assign requested address|does not exist"
    r"|no such file or directory", re.IGNORECASE)
"""Error texts that can pass without the resource changing."""

MAX_REJECTED_NAMES = 256
"""Per stream and type, how many resources' rejected versions are remembered."""
MAX_REJECTED_VERSIONS = 8
"""Per resource, how many rejected versions are remembered (the newest)."""


def remember_rejected(rejected: dict[str, list[str]], name: str, version: str) -> None:
    """Record a rejected version, keeping memory bounded however long the stream lives.

    The oldest resource (and, per resource, the oldest version) is forgotten
    first: at worst a long-gone rejected version would be offered once more.
    """
    versions = rejected.pop(name, [])  # re-inserted: dict order = least recently rejected
    if version not in versions:
        versions.append(version)
    rejected[name] = versions[-MAX_REJECTED_VERSIONS:]
    while len(rejected) > MAX_REJECTED_NAMES:
        del rejected[next(iter(rejected))]


def forget_rejected(rejected: dict[str, list[str]], name: str, version: str) -> bool:
    """Allow ``version`` of ``name`` again; False when it was not rejected."""
    versions = rejected.get(name)
    if not versions or version not in versions:
        return False
    versions.remove(version)
    if not versions:
        del rejected[name]
    return True


MAX_RETRIES_TRACKED = 256
"""Per stream and type, how many resources may wait for a retry (oldest dropped)."""


_NAME_CHARS = r"[\w./-]"


def find_name(error: str, name: str, start: int = 0) -> int:
    """Where ``name`` appears in ``error`` as a whole word (from ``start``), or -1.

    Envoy names what it rejects ("Error adding/updating cluster(s) default/web/80:
    ..."), so ``default/web/80`` must not match inside ``default/web/8080``.
    """
    if not name:
        return -1
    found = re.compile(rf"(?<!{_NAME_CHARS}){re.escape(name)}(?!{_NAME_CHARS})").search(
        error, start)
    return found.start() if found is not None else -1


def error_for(name: str, error: str, blamed: Iterable[str]) -> str:
    """The part of Envoy's error text about ``name``.

    Envoy joins the errors of one update (``Error adding/updating listener(s)
    a: ..., b: ...``): the part about ``name`` runs from where it is named to
    where the next blamed resource is. The whole text when it names nothing.
    """
    start = find_name(error, name)
    if start < 0:
        return error
    ends = [i for other in blamed if other != name
            and (i := find_name(error, other, start + len(name))) >= 0]
    return error[start:min(ends, default=len(error))]


def is_transient(error: str) -> bool:
    """Whether ``error`` may pass without the rejected resource changing."""
    return TRANSIENT.search(error) is not None


@dataclass(slots=True)
class Retry:
    """A rejected resource version that will be offered again at ``due``."""

    version: str
    attempts: int
    """How many times this version has been rejected so far."""
    due: float
    """``time.monotonic()`` of the next offer."""
    error: str
    """Envoy's last words about it."""

    def to_json(self, now: float | None = None) -> dict[str, Any]:
        """JSON-ready form; the due time as wall-clock seconds and as a delay."""
        now = time.monotonic() if now is None else now
        wait = max(0.0, self.due - now)
        return {"version": self.version, "attempts": self.attempts,
                "next_retry_at": round(time.time() + wait, 3),
                "next_retry_in_seconds": round(wait, 3), "last_error": self.error}


def schedule(retries: dict[str, Retry], name: str, version: str, error: str, now: float,
             initial: float, cap: float) -> Retry:
    """Record one more rejection of ``name`` at ``version``; returns its retry.

    The delay doubles with each rejection of the same version, from ``initial``
    up to ``cap``; a new version starts again from ``initial``.
    """
    previous = retries.pop(name, None)
    attempts = previous.attempts + 1 if previous is not None and previous.version == version else 1
    delay = min(initial * 2 ** min(attempts - 1, 32), cap)
    retry = retries[name] = Retry(version, attempts, now + delay, error)
    while len(retries) > MAX_RETRIES_TRACKED:
        del retries[next(iter(retries))]
    return retry
