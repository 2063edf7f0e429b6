"""Fixtures of the generate tests: a plan cut short after its n-th write of openings."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from ultrachat.generate.planning import PlanContext
from ultrachat.generate.sector import Opening


class Killed(BaseException):
    """Stands in for a SIGKILL: nothing after it runs (no end marker is written)."""


@pytest.fixture
def killed_after_emits(monkeypatch: pytest.MonkeyPatch) -> Callable[[int, Callable[[], Any]], None]:
    """``killed_after_emits(n, run)`` calls ``run()`` with the plan dying right after its
    ``n``-th write of openings (any later write dies before it writes), then restores it."""

    def cut(n: int, run: Callable[[], Any]) -> None:
        real, emits = PlanContext.emit, 0

        def dying(self: PlanContext, openings: list[Opening]) -> None:
            nonlocal emits
            if emits >= n:
                raise Killed  # the process is gone: nothing more is written
            real(self, openings)
            emits += bool(openings)
            if emits == n:
                raise Killed

        monkeypatch.setattr(PlanContext, "emit", dying)
        try:
            with pytest.raises(Killed):
                run()
        finally:
            monkeypatch.setattr(PlanContext, "emit", real)

    return cut
