"""A smooth per-minute rate limiter for HTTP backends (requests or tokens per minute)."""

from __future__ import annotations

import asyncio
import time


class RateLimiter:
    """Token bucket that lets at most ``per_minute`` units through per minute.

    The bucket holds ``burst_s`` seconds' worth of units, so a limit is spread evenly over
    the minute instead of being spent in one burst at its start (servers often enforce
    their per-minute limits over shorter windows too). A cost larger than the bucket waits
    for a full bucket and then leaves it in debt, so every cost passes and the long-run rate
    still holds. Waiters are served in arrival order.

    Example::

        rpm = RateLimiter(600)          # 10 requests a second
        await rpm.acquire()             # before each request
        tpm = RateLimiter(90_000)
        await tpm.acquire(estimate)     # estimated tokens of the request ...
        tpm.adjust(estimate - actual)   # ... corrected once the reply says what it used
    """

    def __init__(self, per_minute: float, burst_s: float = 1.0) -> None:
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * burst_s)
        self.level = self.capacity
        self._stamp = time.monotonic()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self._stamp) * self.rate)
        self._stamp = now

    async def acquire(self, cost: float = 1.0) -> None:
        """Wait until ``cost`` units may pass, then take them."""
        async with self._lock:
            need = min(cost, self.capacity)
            self._refill()
            while self.level < need:
                await asyncio.sleep((need - self.level) / self.rate)
                self._refill()
            self.level -= cost

    def adjust(self, units: float) -> None:
        """Give back ``units`` (or take more when negative) after the real cost is known."""
        self._refill()
        self.level = min(self.capacity, self.level + units)
