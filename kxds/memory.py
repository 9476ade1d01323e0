"""Giving freed memory back to the system once the served state shrank.

When most of the state is deleted, what kxds held for it is freed, but not
all of that memory leaves the process. Two allocators keep it:

- glibc's heap, where serialized resources, large dicts and the protobuf
  library's buffers live: its free pages in the middle of the heap are
  returned only by ``malloc_trim``. This module calls it after a rebuild that
  serves less than half of what was served at the most since the last call
  (and at least :data:`MIN_DROP` resources less): a trim follows a large
  deletion, never a steady stream of small changes. Measured (bench M6, 5,000
  Services deleted) about 10 MB returned, in under a millisecond.
- Python's small-object allocator (pymalloc), which returns a 1 MiB arena only
  when every object in it is freed: the few long-lived objects allocated while
  the large state was alive (the new state's, the streams') keep many arenas
  otherwise empty. No call releases those; bench/README.md (M6) has the figures.
"""

from __future__ import annotations

import ctypes
import functools
from typing import Any

MIN_DROP = 1000
"""Resources fewer than the most served since the last trim, at least, for a trim."""


@functools.cache
def _malloc_trim() -> Any:
    """glibc's ``malloc_trim``, or None (another C library, or none found)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return getattr(libc, "malloc_trim", None)


def release_free_memory() -> bool:
    """Return the heap's free pages to the system; False when not possible here (no
    glibc) or nothing was returned. ctypes releases the GIL for the call."""
    trim = _malloc_trim()
    return trim is not None and bool(trim(0))


class ShrinkWatch:
    """Tells, after each rebuild, whether the served state shrank enough for a trim."""

    def __init__(self, min_drop: int = MIN_DROP) -> None:
        self.min_drop = min_drop
        self._most = 0
        """The most resources served since the last trim."""

    def shrank(self, served: int) -> bool:
        """Record that ``served`` resources are served now; True when a trim is due
        (then the count starts again from here)."""
        self._most = max(self._most, served)
        if self._most - served < self.min_drop or served * 2 > self._most:
            return False
        self._most = served
        return True
