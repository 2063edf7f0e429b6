"""Progress displays, all on one stderr console: a command's bars and its messages.

* :func:`make_progress`: one bar per input with count, rate, elapsed time and ETA (the
  data commands); ``unit="bytes"`` counts bytes (indexing), ``transient`` bars vanish
  when done (weight deltas);
* :class:`RunProgress`: a run's stage bars with counts, rate, ETA and tokens, created on
  first use (generation, answers, judging).

``console`` is the stderr console every package prints status lines through, so the
CLI's one-line errors and a package's notes share one stream.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

#: the stderr console for progress and status lines (stdout stays for a command's output);
#: messages hold paths and data, so never markup (bars style their own columns)
console = Console(stderr=True, markup=False)
_STDERR = console


def make_progress(enabled: bool = True, console: Console | None = None, unit: Literal["items", "bytes"] = "items",
                  transient: bool = False, extra: tuple[ProgressColumn, ...] = ()) -> Progress:
    """A rich progress display: description, bar, count (or bytes and speed), ``extra``
    columns, ETA; item bars also show the share done and the elapsed time."""
    columns: list[ProgressColumn | str] = [TextColumn("[bold]{task.description:<14}"), BarColumn()]
    if unit == "bytes":
        columns += [DownloadColumn(), TransferSpeedColumn(), *extra, TimeRemainingColumn()]
    else:
        columns += [MofNCompleteColumn(), TaskProgressColumn(), *extra, TimeElapsedColumn(), TextColumn("eta"),
                    TimeRemainingColumn()]
    return Progress(*columns, console=console or _STDERR, disable=not enabled, transient=transient)


class RunProgress:
    """Stage bars created on first use. ``enabled=False`` keeps the counters silently."""

    def __init__(self, enabled: bool = True, console: Console | None = None) -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.description:<12}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("[cyan]{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("[magenta]{task.fields[tokens]:,} tok"),
            TextColumn("[green]{task.fields[note]}"),
            console=console,
            disable=not enabled,
        )
        self._tasks: dict[str, TaskID] = {}
        self.tokens: dict[str, int] = {}
        self.enabled = enabled
        self._shown: dict[str, float] = {}  # stage -> when its rate and note were last computed
        #: returns a short run-wide note (cost so far) shown on the bar that advances
        self.status: Callable[[], str] | None = None

    def __enter__(self) -> RunProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def _task(self, stage: str) -> TaskID:
        if stage not in self._tasks:
            self._tasks[stage] = self._progress.add_task(stage, total=0, tokens=0, rate="", note="")
            self.tokens[stage] = 0
        return self._tasks[stage]

    def log(self, message: str) -> None:
        """A line above the bars (printed with or without them: it is news, not progress)."""
        self._progress.console.print(message, markup=False, highlight=False, soft_wrap=True)

    def add_total(self, stage: str, n: int) -> None:
        task = self._task(stage)
        total = self._progress.tasks[task].total or 0
        self._progress.update(task, total=total + n)

    def advance(self, stage: str, n: int = 1, tokens: int = 0) -> None:
        task = self._task(stage)
        self.tokens[stage] += tokens
        now = time.monotonic()
        # rich's speed sums every sample of the last 30 s: at thousands of advances a second,
        # computing it on each advance would dominate the run, so the texts refresh 4x/s.
        if not self.enabled or now - self._shown.get(stage, 0.0) < 0.25:
            self._progress.update(task, advance=n, tokens=self.tokens[stage])
            return
        self._shown[stage] = now
        speed = self._progress.tasks[task].speed
        note = self.status() if self.status else ""
        self._progress.update(task, advance=n, tokens=self.tokens[stage],
                              rate=f"{speed:.2f}/s" if speed else "", note=note)
