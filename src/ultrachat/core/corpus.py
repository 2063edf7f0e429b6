"""Corpus files: the one JSONL reader, crash-safe appends, and a command's output folder.

Every command that reads a corpus goes through :func:`read_corpus` (or :func:`iter_jsonl`
beneath it), and every other JSONL reader (:func:`json_lines`, :func:`json_values`)
parses through the same line loop, so a bad line is always reported as ``file:line: reason``.

Appends write each batch of lines with one ``write`` on an ``O_APPEND`` descriptor, so a
killed process loses nothing it wrote (the lines are in the kernel's page cache) and can
leave at most one partial last line, which :func:`repair_tail` removes before the next
append. ``fsync`` (which only matters for power loss) runs at most once per
``fsync_interval_s`` and on close: fsyncing every line would block the event loop for
milliseconds per dialogue when hundreds are in flight.

Outputs of a command are written through ``.part`` files renamed into place when the
command finishes, so an interrupted run never leaves a complete-looking but truncated
output::

    with OutputDir(Path("clean"), inputs=[src]) as out, read_corpus(src, "filter", out) as dialogues:
        for d in dialogues:
            out.write("kept", d)
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.progress import Progress

from .atomic import OVERWRITE, fsync_path, is_taken, refuse_existing
from .errors import UserError
from .progress import make_progress
from .records import validate_dialogue


class InvalidLine(UserError, ValueError):
    """A malformed input line; the message is ``file:line: reason``."""


class BadJson(ValueError):
    """A line that is not JSON, yielded in place of its value; ``str()`` is the reason."""


def _parse_lines(path: str | Path, fh: Iterable[str | bytes]) -> Iterator[tuple[int, str, Any]]:
    """``(line number, raw line, value)`` for each non-blank line; bad JSON, or bytes that
    are not UTF-8, give a :class:`BadJson` (the raw line then has the bad bytes replaced).
    Files opened in binary (``"rb"``) are decoded a line at a time, so one bad byte costs
    one line, named, instead of stopping the read with no place; a leading BOM is ignored."""
    for no, line in enumerate(fh, 1):
        value: Any = None
        if isinstance(line, bytes):
            try:
                raw = line.decode("utf-8-sig" if no == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raw = line.decode("utf-8", "replace")
                value = BadJson(f"not UTF-8 (byte 0x{line[exc.start]:02x} at byte {exc.start + 1} of the line)")
        else:
            raw = line
        if not raw.strip():
            continue
        if value is None:
            try:
                value = json.loads(raw)
            except json.JSONDecodeError as exc:
                value = BadJson(f"invalid JSON ({exc.msg} at column {exc.colno})")
        yield no, raw, value


def iter_jsonl(path: str | Path, validate: bool = True, skip_invalid: bool = False,
               rejects: list[tuple[int, str, str]] | None = None) -> Iterator[dict[str, Any]]:
    """Yield each object of a JSONL file (each dialogue, with ``validate``), streaming.

    A malformed line raises :class:`InvalidLine` naming ``file:line``; with
    ``skip_invalid`` it is appended to ``rejects`` as ``(line_no, reason, raw)`` instead.
    """
    with open(path, "rb") as fh:
        for no, raw, obj in _parse_lines(path, fh):
            if isinstance(obj, BadJson):
                reason: str | None = str(obj)
            else:
                reason = validate_dialogue(obj) if validate else None
            if reason:
                if not skip_invalid:
                    raise InvalidLine(f"{path}:{no}: {reason}")
                if rejects is not None:
                    rejects.append((no, reason, raw.rstrip("\n")))
                continue
            yield obj


def json_lines(path: Path) -> Iterator[tuple[str, Any]]:
    """``(file:line, value)`` for each non-blank line of any JSONL file; a line that is not
    JSON yields a :class:`BadJson` (a ``ValueError``) in place of the value, so callers
    choose to stop or to skip it."""
    with open(path, "rb") as fh:
        for no, _, value in _parse_lines(path, fh):
            yield f"{path}:{no}", value


def json_values(path: Path, fh: Iterable[str]) -> Iterator[tuple[int, Any]]:
    """``(line number, value)`` of each non-blank JSON line of ``fh`` (opened from ``path``);
    bad JSON raises :class:`InvalidLine` naming ``file:line``."""
    for no, _, value in _parse_lines(path, fh):
        if isinstance(value, BadJson):
            raise InvalidLine(f"{path}:{no}: {value}")
        yield no, value


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


def read_text_file(path: str | Path) -> str:
    """A whole UTF-8 text file (a topic or entity list); bytes that are not UTF-8 raise
    :class:`InvalidLine` naming ``file:line`` (a missing file stays ``FileNotFoundError``)."""
    raw = Path(path).read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise InvalidLine(f"{path}:{line}: not UTF-8 (byte 0x{raw[exc.start]:02x})") from None


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
    """Write JSON via a fsynced temporary file and rename, so readers never see half a file
    (and, after a power loss, either the old file or the new one)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(obj, ensure_ascii=False, indent=2))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def parquet_rows(path: Path, batch_size: int = 1024) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(file[row], record)`` for each row of a Parquet file, a batch at a time.

    ``pre_buffer=False``: with pre-buffering on (pyarrow's default), ``iter_batches`` keeps
    every row group it has read cached until the file is closed, so memory grows with the
    file (measured: 0.3 GiB more Arrow memory after 95k dialogues); off, it stays at one
    batch.
    """
    import pyarrow.parquet as pq

    row = 0
    with pq.ParquetFile(path, pre_buffer=False) as pf:
        for batch in pf.iter_batches(batch_size=batch_size):
            for rec in batch.to_pylist():
                yield f"{path}[{row}]", rec
                row += 1


def count_lines(path: Path) -> int:
    """Count newline-terminated lines fast (for progress totals), reading 1 MiB at a time."""
    n = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            n += chunk.count(b"\n")
    return n


class OutputDir:
    """The output folder of one command. Files are written as ``NAME.part``, fsynced and
    renamed on a clean exit (see :mod:`.atomic`); writing over an input file is refused
    (nothing is written in place), and so is a folder that already holds something, unless
    ``overwrite`` (default: the CLI's ``--overwrite``, :data:`.atomic.OVERWRITE`); then only
    the files this command writes are replaced, each whole."""

    def __init__(self, path: Path, inputs: list[Path] | tuple[Path, ...] = (), overwrite: bool | None = None) -> None:
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"{self.path}: --out must be a folder, not a file")
        self._inputs = {Path(p).resolve() for p in inputs}
        if any(self.path.resolve() in p.parents for p in self._inputs) and is_taken(self.path) \
                and not (OVERWRITE.get() if overwrite is None else overwrite):
            raise ValueError(f"{self.path}: holds the input; refusing to overwrite an input's folder, choose "
                             "another --out")
        refuse_existing(self.path, overwrite)
        self._created = not self.path.exists()  # removed again if the command fails
        self._files: dict[str, IO[str]] = {}
        self.counts: dict[str, int] = {}

    def file(self, name: str) -> Path:
        """Final path of output ``name`` (``kept`` -> ``<out>/kept.jsonl``)."""
        path = self.path / (name if "." in name else f"{name}.jsonl")
        if path.resolve() in self._inputs:
            raise ValueError(f"{path}: refusing to overwrite an input file; choose another --out")
        return path

    def write(self, name: str, obj: dict[str, Any]) -> None:
        fh = self._files.get(name)
        if fh is None:
            path = self.file(name)
            self.path.mkdir(parents=True, exist_ok=True)
            fh = self._files[name] = open(path.with_name(path.name + ".part"), "w", encoding="utf-8")  # noqa: SIM115
            self.counts[name] = 0
        fh.write(json.dumps(obj, ensure_ascii=False) + "\n")
        self.counts[name] += 1

    def touch(self, *names: str) -> None:
        """Make sure ``names`` exist even when nothing was written to them (an empty file says "none")."""
        for name in names:
            if name not in self._files:
                path = self.file(name)
                self.path.mkdir(parents=True, exist_ok=True)
                self._files[name] = open(path.with_name(path.name + ".part"), "w", encoding="utf-8")  # noqa: SIM115
                self.counts[name] = 0

    def write_json(self, name: str, obj: Any) -> Path:
        path = self.file(name)
        self.path.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, obj)
        return path

    def write_bytes(self, name: str, data: bytes) -> Path:
        """Write a whole file (a chart, a page) through a fsynced temporary file and rename."""
        path = self.file(name)
        self.path.mkdir(parents=True, exist_ok=True)
        part = path.with_name(path.name + ".part")
        part.write_bytes(data)
        fsync_path(part)
        part.replace(path)
        return path

    def close(self, commit: bool = True) -> None:
        """Publish the outputs (``commit``), or drop them: a failed run leaves no trace, so
        the same command can simply be run again."""
        for name, fh in self._files.items():
            if commit:
                fh.flush()
                os.fsync(fh.fileno())
            fh.close()
            part = Path(fh.name)
            if commit:
                part.replace(self.file(name))
            else:
                part.unlink(missing_ok=True)
        if commit and self._files:
            fsync_path(self.path)
        if not commit and self._created and self.path.is_dir() and not any(self.path.iterdir()):
            self.path.rmdir()
        self._files.clear()

    def __enter__(self) -> OutputDir:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.close(commit=exc_type is None)


@contextmanager
def read_corpus(path: Path, description: str, out: OutputDir | None = None, skip_invalid: bool = False,
                progress: bool = True, console: Console | None = None) -> Iterator[Iterator[dict[str, Any]]]:
    """Stream the dialogues of ``path`` under a progress bar.

    A malformed line raises :class:`InvalidLine` (``file:line: reason``);
    with ``skip_invalid`` it goes to ``<out>/invalid.jsonl`` as ``{"line", "reason", "raw"}``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    total = count_lines(path)
    rejects: list[tuple[int, str, str]] = []

    def dialogues(bar: Progress) -> Iterator[dict[str, Any]]:
        task = bar.add_task(description, total=total)
        lines = 0
        for obj in iter_jsonl(path, skip_invalid=skip_invalid, rejects=rejects):
            # Drain after every line so a file full of bad lines never piles up in memory.
            lines += 1 + len(rejects)
            bar.advance(task, 1 + len(rejects))
            _drain(rejects, out, path)
            yield obj
        lines += len(rejects)
        bar.advance(task, len(rejects))
        _drain(rejects, out, path)
        if not lines:  # an empty input is a mistake (a wrong file, a failed download), not 0 dialogues
            raise InvalidLine(f"{path}: empty input (no lines); nothing to read")

    with make_progress(progress, console) as bar:
        yield dialogues(bar)


def _drain(rejects: list[tuple[int, str, str]], out: OutputDir | None, path: Path) -> None:
    if out is not None:
        for line, reason, raw in rejects:
            out.write("invalid", {"file": str(path), "line": line, "reason": reason, "raw": raw})
    rejects.clear()
