"""The token budget of a run (``max_total_tokens``): planning and dialogues count against it."""

from __future__ import annotations

from ..backends import Usage


class BudgetExhausted(RuntimeError):
    pass


class TokenBudget:
    """Counts this run's tokens against ``max_total_tokens`` (0 = unlimited)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.usage = Usage()

    def add(self, usage: Usage) -> None:
        self.usage.add(usage)

    @property
    def exhausted(self) -> bool:
        return bool(self.limit) and self.usage.total_tokens >= self.limit
