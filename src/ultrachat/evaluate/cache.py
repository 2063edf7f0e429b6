"""Resumable, concurrent model calls: an append-only JSONL cache and a bounded gather.

Every answer, judgment and reward score is stored under a fingerprint of everything that
shapes it (prompt, model, sampling, template), so a killed run loses at most the calls in
flight and a rerun repeats none of the finished ones.

Example::

    cache = CallCache(Path("judgments.jsonl"))
    key = fingerprint({"prompt": "...", "model": "smollm2-135m"})
    if cache.get(key) is None:
        cache.put(key, {"verdict": "A"})
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from ..data.jsonl import JsonlAppender, iter_jsonl, repair_tail
from ..generate.progress import RunProgress

T = TypeVar("T")
R = TypeVar("R")


def fingerprint(payload: Any) -> str:
    """A stable hex key for a JSON-serialisable payload."""
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


class CallCache:
    """``key -> record`` backed by a JSONL file of ``{"key": ..., **record}`` lines."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._records: dict[str, dict[str, Any]] = {}
        if path.exists():
            repair_tail(path)  # a torn last line from a killed run is a call to redo
            for obj in iter_jsonl(path, validate=False, skip_invalid=True):
                if isinstance(obj, dict) and "key" in obj:
                    self._records[obj.pop("key")] = obj
        self._appender: JsonlAppender | None = None
        self.hits = 0

    def __len__(self) -> int:
        return len(self._records)

    def get(self, key: str) -> dict[str, Any] | None:
        record = self._records.get(key)
        if record is not None:
            self.hits += 1
        return record

    def put(self, key: str, record: dict[str, Any]) -> None:
        if self._appender is None:
            self._appender = JsonlAppender(self.path)
        self._appender.write([{"key": key, **record}])
        self._records[key] = record

    def close(self) -> None:
        if self._appender is not None:
            self._appender.close()
            self._appender = None


async def gather_limited(items: Iterable[T], fn: Callable[[T], Awaitable[R]], concurrency: int,
                         bars: RunProgress | None = None, stage: str = "") -> list[R]:
    """``[await fn(x) for x in items]`` with at most ``concurrency`` calls in flight, in order.

    Calls run concurrently so the local backend's micro-batcher can batch them.
    """
    items = list(items)
    sem = asyncio.Semaphore(max(1, concurrency))
    if bars is not None:
        bars.add_total(stage, len(items))

    async def one(item: T) -> R:
        async with sem:
            result = await fn(item)
        if bars is not None:
            bars.advance(stage)
        return result

    try:
        async with asyncio.TaskGroup() as group:  # one failure cancels the rest
            tasks = [group.create_task(one(x)) for x in items]
    except ExceptionGroup as eg:
        raise eg.exceptions[0] from None
    return [t.result() for t in tasks]
