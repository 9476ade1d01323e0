"""Coalescing bursts of source states into one rebuild (STYLE.md "Debounce events").

A holdoff after the last state, capped since the first pending one: a burst of
changes becomes one rebuild of the latest state, and a steady stream of
changes still rebuilds every ``max_holdoff``. The first state after a calm (a
``holdoff`` without any) is not held at all: a lone change is served at once,
and only the changes that follow it within the holdoff are coalesced, into the
next rebuild (leading and trailing edge).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Generic, TypeVar

T = TypeVar("T")


class Debounce(Generic[T]):
    """The latest item put, handed out once per burst; one consumer at a time."""

    def __init__(self, holdoff: float, max_holdoff: float) -> None:
        self.holdoff = holdoff
        self.max_holdoff = max_holdoff
        self._item: T | None = None
        self._first: float | None = None
        """When the burst's first item came (None: no burst pending)."""
        self._last = float("-inf")
        """When the last item came (of this burst, or of the one before)."""
        self._calm = False
        """The burst's first item came after ``holdoff`` without any: hand it out at once."""
        self._wake = asyncio.Event()

    def put(self, item: T) -> None:
        """Accept a new item, replacing the one pending."""
        now = time.monotonic()
        if self._first is None:
            self._first = now
            self._calm = now - self._last >= self.holdoff
        self._item = item
        self._last = now
        self._wake.set()

    async def wait(self, timeout: float | None = None) -> bool:
        """Wait for an item (at most ``timeout`` seconds); True when one came."""
        if timeout is None:
            await self._wake.wait()
            return True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._wake.wait()
            return True
        return False

    async def take(self) -> T | None:
        """After the holdoff, the latest item put (None when there is none)."""
        await self._holdoff()
        item, self._item, self._first = self._item, None, None
        self._wake.clear()
        return item

    async def _holdoff(self) -> None:
        """Wait until ``holdoff`` passed since the last item or ``max_holdoff`` since the
        first; not at all for the first item after a calm."""
        if self._calm:
            self._calm = False
            return
        while True:
            assert self._first is not None
            deadline = min(self._last + self.holdoff, self._first + self.max_holdoff)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._wake.wait()
