"""Large requests take turns, so that a burst of long prompts does not stall the short ones behind it.

A front door hands every request to the core on the event loop. What a 1 MB prompt costs the router
(decoding it, the bounded signal scans, hashing its prefix blocks) is a few milliseconds, all of it on
that one thread: forty of them arriving at once would hold a short request queued behind them for
the sum. The gate lets one large request (over `large_bytes` on the wire) be worked on at a time; a
short request never waits for it, and when one large request is done, the short requests that arrived
meanwhile run before the next large one starts (asyncio wakes the next waiter after the tasks already
ready). The cost of a burst is then paid by the burst: a short request waits for at most one large one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

LARGE_REQUEST_BYTES = 64 * 1024


class LargeRequestGate:
    def __init__(self, large_bytes: int = LARGE_REQUEST_BYTES):
        self.large_bytes = large_bytes
        self._turn: asyncio.Lock | None = None  # made on first use, on the serving loop

    def turn(self, size: int) -> contextlib.AbstractAsyncContextManager[None]:
        """Hold while working on a request of `size` bytes (a shared no-op for a short one: nothing to wait for,
        and no generator to build per request)."""
        return _NO_WAIT if size <= self.large_bytes else self._large()

    @contextlib.asynccontextmanager
    async def _large(self) -> AsyncIterator[None]:
        if self._turn is None:
            self._turn = asyncio.Lock()
        async with self._turn:
            await asyncio.sleep(0)  # short requests that are ready run first
            yield


_NO_WAIT = contextlib.nullcontext()
