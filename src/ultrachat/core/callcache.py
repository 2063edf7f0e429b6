"""Resumable, concurrent model calls: the call caches and a bounded gather.

* :class:`CallCache`: a run's own calls in an append-only JSONL file next to its outputs;
* :class:`SharedCallStore`: completed calls in SQLite (WAL), shared across runs and by
  several processes at once (the response cache behind ``cache = true``).

Every planning call, answer, judgment and reward score is stored under a key that names
everything shaping it (prompt, model, sampling, template), so a killed run loses at most
the calls in flight and a rerun repeats none of the finished ones. Only an index is kept
in memory (16 bytes a call, see :class:`~ultrachat.core.hashing.HashIndex`); a hit is read
back from its line, whose key is compared, so a hash collision can only cost a repeated
call. A torn last line (a killed writer) is a call to redo; any other unreadable line is
skipped too, or with ``damaged`` an error naming ``file:line``.

Example::

    cache = CallCache(Path("judgments.jsonl"))
    key = fingerprint({"prompt": "...", "model": "smollm2-135m"})
    if cache.get(key) is None:
        cache.put(key, {"verdict": "A"})
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from array import array
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import IO, Any, TypeVar

from .corpus import JsonlAppender, repair_tail
from .hashing import HashIndex, fingerprint, hash64
from .progress import RunProgress
from .sqlite import open_shared_db

__all__ = ["CallCache", "SharedCallStore", "fingerprint", "gather_limited"]

T = TypeVar("T")
R = TypeVar("R")


class CallCache:
    """``key -> record`` backed by a JSONL file of ``{"key": ..., **record}`` lines."""

    def __init__(self, path: Path, damaged: type[Exception] | None = None) -> None:
        self.path = path
        self._damaged = damaged
        self._index: HashIndex | None = None  # hash of a call's key -> its line's offset
        self._reader: IO[bytes] | None = None
        self._appender: JsonlAppender | None = None
        self.hits = 0

    def _loaded(self) -> HashIndex:
        if self._index is None:
            keys, offsets = array("Q"), array("Q")
            repair_tail(self.path)
            if self.path.exists():
                with open(self.path, "rb") as fh:
                    offset = 0
                    for no, line in enumerate(fh, 1):
                        key = _key_of(line)
                        if key is None and self._damaged is not None and line.strip():
                            raise self._damaged(f"{self.path}:{no}: damaged cache line (not a JSON call record); "
                                                "delete the line or the file to redo those calls")
                        if key is not None:
                            keys.append(hash64(key))
                            offsets.append(offset)
                        offset += len(line)
            self._index = HashIndex(keys, offsets)
        return self._index

    def __len__(self) -> int:
        return len(self._loaded())

    def get(self, key: str) -> dict[str, Any] | None:
        """The record stored under ``key`` (without the key), or ``None``."""
        offset = self._loaded().get(hash64(key))
        if offset is None:
            return None
        if self._reader is None:
            self._reader = open(self.path, "rb")  # noqa: SIM115 - closed in close()
        self._reader.seek(offset)
        record: dict[str, Any] = json.loads(self._reader.readline())
        if record.pop("key") != key:
            return None
        self.hits += 1
        return record

    def put(self, key: str, record: dict[str, Any]) -> None:
        index = self._loaded()
        if self._appender is None:
            self._appender = JsonlAppender(self.path)
        offset = self._appender.write([{"key": key, **record}])
        index.add(hash64(key), offset)

    def close(self) -> None:
        if self._appender is not None:
            self._appender.close()
            self._appender = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None


#: a stored completion: (model, text, finish reason, prompt tokens, completion tokens)
Row = tuple[str, str, str, int, int]

RESPONSES_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    text TEXT NOT NULL,
    finish TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    created REAL NOT NULL
)
"""


class SharedCallStore:
    """``key -> Row`` in SQLite (WAL, one connection guarded by a lock), so several processes
    (Ray workers, two runs of different sectors) share it; a crash loses at most the calls
    not yet committed."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        # The local backend resolves calls from its batcher thread: every access goes through self._lock.
        self._lock = threading.Lock()
        self._db = open_shared_db(self.path, RESPONSES_SCHEMA, "response cache", durable=False)

    def get(self, key: str) -> Row | None:
        with self._lock:
            row = self._db.execute(
                "SELECT model, text, finish, prompt_tokens, completion_tokens FROM responses WHERE key = ?", (key,)
            ).fetchone()
        return None if row is None else (row[0], row[1], row[2], int(row[3]), int(row[4]))

    def put(self, key: str, row: Row) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?, ?)", (key, *row, time.time()))

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _key_of(line: bytes) -> str | None:
    if not line.strip():
        return None
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    key = obj.get("key") if isinstance(obj, dict) else None
    return key if isinstance(key, str) else None


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
