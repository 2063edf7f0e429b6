"""Group commit: many finished dialogues share one ``write`` + ``fsync``, off the event loop.

An fsync costs milliseconds (about 6 ms on this machine's disk); one per dialogue, on the
event loop, would cap a run near 150 dialogues/s and stall every call in flight. Here the
first record starts a background flush in a worker thread; records finished while it
runs wait and go out together in the next one. The crash guarantee is unchanged: a
record is durable once its group's fsync returns, and a record lost to a kill before
that is simply regenerated on the rerun (its id is not in the file yet).

Example::

    commit = GroupCommit(store.save_dialogues)
    await commit.add(record)  # returns at once (waits only when max_pending records queue up)
    await commit.flush()      # everything added is on disk (or the write error is raised)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


class GroupCommit:
    """Batches :meth:`add` calls into ``write(batch)`` calls run in a thread, one at a time."""

    def __init__(self, write: Callable[[list[dict[str, Any]]], None], max_pending: int = 4096) -> None:
        self._write = write
        self.max_pending = max_pending
        self._pending: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None
        self._error: BaseException | None = None
        self.groups = 0  # number of writes, for benchmarks

    async def add(self, record: dict[str, Any]) -> None:
        if self._error is not None:
            raise self._error
        self._pending.append(record)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain())
        if len(self._pending) >= self.max_pending:
            # Back-pressure: callers that never yield (an instant backend) would otherwise
            # queue the whole run in memory and write nothing until the end.
            await asyncio.wait({self._task})

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                await asyncio.to_thread(self._write, batch)
            except Exception as exc:  # kept for add()/flush() to raise in the caller's context
                self._error = exc
                return
            self.groups += 1

    async def flush(self) -> None:
        """Wait until every added record is written; re-raise a write error."""
        while self._task is not None and not self._task.done():
            await asyncio.wait({self._task})
        if self._error is not None:
            raise self._error
