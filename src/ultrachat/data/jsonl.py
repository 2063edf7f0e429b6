"""UltraChat JSONL: reading with file:line errors, and crash-safe appends.

A dialogue line is ``{"id": str, "data": [user, assistant, ...], "meta": {...}}``
(``meta`` optional). Appends write each batch of lines with one ``write`` on an
``O_APPEND`` descriptor, so a killed process loses nothing it wrote (the lines are in the
kernel's page cache) and can leave at most one partial last line, which :func:`repair_tail`
removes before the next append. ``fsync`` (which only matters for power loss) runs at most
once per ``fsync_interval_s`` and on close: fsyncing every line would block the event loop
for milliseconds per dialogue when hundreds are in flight.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


class InvalidLine(ValueError):
    """A malformed input line; the message is ``file:line: reason``."""


def validate_dialogue(obj: Any) -> str | None:
    """Return why ``obj`` is not an UltraChat dialogue, or ``None`` when it is one."""
    if not isinstance(obj, dict):
        return "not a JSON object"
    if "id" not in obj:
        return "missing field 'id'"
    data = obj.get("data")
    if not isinstance(data, list) or not data:
        return "field 'data' must be a non-empty list of strings"
    if not all(isinstance(t, str) for t in data):
        return "field 'data' must contain only strings"
    if "meta" in obj and not isinstance(obj["meta"], dict):
        return "field 'meta' must be an object"
    return None


def iter_jsonl(path: str | Path, validate: bool = True, skip_invalid: bool = False,
               rejects: list[tuple[int, str, str]] | None = None) -> Iterator[dict[str, Any]]:
    """Yield each object of a JSONL file, streaming.

    A malformed line raises :class:`InvalidLine` naming ``file:line``; with
    ``skip_invalid`` it is appended to ``rejects`` as ``(line_no, reason, raw)`` instead.
    """
    with open(path, encoding="utf-8") as fh:
        for no, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
                reason = validate_dialogue(obj) if validate else None
            except json.JSONDecodeError as exc:
                reason = f"invalid JSON ({exc.msg} at column {exc.colno})"
            if reason:
                if not skip_invalid:
                    raise InvalidLine(f"{path}:{no}: {reason}")
                if rejects is not None:
                    rejects.append((no, reason, raw.rstrip("\n")))
                continue
            yield obj


def repair_tail(path: Path) -> int:
    """Cut a partial last line left by a killed writer; returns the bytes removed."""
    if not path.exists():
        return 0
    with open(path, "rb+") as fh:
        size = fh.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return 0
        # Scan back for the last newline in chunks.
        pos = size
        while pos > 0:
            step = min(65536, pos)
            fh.seek(pos - step)
            chunk = fh.read(step)
            idx = chunk.rfind(b"\n")
            if idx >= 0:
                keep = pos - step + idx + 1
                break
            pos -= step
        else:
            keep = 0
        fh.truncate(keep)
        return size - keep


class JsonlAppender:
    """Crash-safe line appender: each :meth:`write` is one ``write``; ``fsync`` at most
    every ``fsync_interval_s`` (0 = after every write) and on :meth:`close`."""

    def __init__(self, path: Path, fsync: bool = True, fsync_interval_s: float = 1.0) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        repair_tail(path)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._fsync = fsync
        self._fsync_interval_s = fsync_interval_s
        self._next_fsync = 0.0  # the first write syncs at once
        self._unsynced = False

    def write(self, objs: Iterable[dict[str, Any]]) -> int:
        """Append ``objs``, one line each, with one ``write``; returns the offset of the first."""
        blob = "".join(json.dumps(o, ensure_ascii=False) + "\n" for o in objs).encode()
        start = os.fstat(self._fd).st_size
        if not blob:
            return start
        view = memoryview(blob)
        try:
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
            self._unsynced = self._fsync
            if self._fsync and time.monotonic() >= self._next_fsync:
                self._sync()
        except OSError as exc:  # disk full, file too large...: take back the partial lines
            os.ftruncate(self._fd, start)
            raise OSError(exc.errno, f"{exc.strerror}; nothing partial was kept", str(self.path)) from None
        return start

    def _sync(self) -> None:
        os.fsync(self._fd)
        self._unsynced = False
        self._next_fsync = time.monotonic() + self._fsync_interval_s

    def close(self) -> None:
        if self._fd >= 0:
            if self._unsynced:
                self._sync()
            os.close(self._fd)
            self._fd = -1


def read_json_object(path: Path, fields: tuple[str, ...] = ()) -> dict[str, Any]:
    """A JSON object file (a state file such as ``run.json``): an empty, damaged or
    non-UTF-8 file, or one lacking ``fields``, raises :class:`InvalidLine` naming the file."""
    raw = Path(path).read_bytes()
    try:
        obj = json.loads(raw.decode("utf-8")) if raw.strip() else None
    except UnicodeDecodeError as exc:
        raise InvalidLine(f"{path}: not UTF-8 (byte {exc.start}); the file is damaged") from None
    except json.JSONDecodeError as exc:
        raise InvalidLine(f"{path}:{exc.lineno}: invalid JSON ({exc.msg}); the file is damaged") from None
    if obj is None:
        raise InvalidLine(f"{path}: empty file; the file is damaged")
    if not isinstance(obj, dict):
        raise InvalidLine(f"{path}: not a JSON object; the file is damaged")
    missing = [f for f in fields if f not in obj]
    if missing:
        raise InvalidLine(f"{path}: missing field '{missing[0]}'; the file is damaged")
    return obj


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON via a temporary file and rename, so readers never see half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, ensure_ascii=False, indent=2), encoding="utf-8")
    os.replace(tmp, path)
