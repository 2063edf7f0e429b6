"""Group commit: records finished during a write share the next one; errors reach the caller."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from ultrachat.generate.group_commit import GroupCommit


async def test_records_finished_during_a_write_go_out_together() -> None:
    writes: list[list[int]] = []
    on_thread: list[bool] = []

    def slow_write(batch: list[dict]) -> None:
        on_thread.append(threading.current_thread() is not threading.main_thread())
        time.sleep(0.05)  # an fsync
        writes.append([r["i"] for r in batch])

    commit = GroupCommit(slow_write)
    await commit.add({"i": 0})
    await asyncio.sleep(0.01)  # the first write is under way
    for i in range(1, 6):
        await commit.add({"i": i})
    await commit.flush()
    assert writes == [[0], [1, 2, 3, 4, 5]] and commit.groups == 2 and all(on_thread)


async def test_back_pressure_bounds_what_waits_in_memory() -> None:
    sizes: list[int] = []
    commit = GroupCommit(lambda batch: sizes.append(len(batch)), max_pending=10)
    for i in range(95):  # a caller that never yields on its own
        await commit.add({"i": i})
    await commit.flush()
    assert sum(sizes) == 95 and max(sizes) <= 10


async def test_a_write_error_is_raised_by_flush_and_later_adds() -> None:
    def full_disk(batch: list[dict]) -> None:
        raise OSError(28, "No space left on device")

    commit = GroupCommit(full_disk)
    await commit.add({"i": 0})
    with pytest.raises(OSError, match="No space"):
        await commit.flush()
    with pytest.raises(OSError, match="No space"):
        await commit.add({"i": 1})
