"""Incremental SQLite index of UltraChat JSONL files: metadata table + contentless FTS5.

The index stores, per dialogue, where its line lives (file, byte offset, length) and the
metadata the explorer filters on; the text itself stays in the JSONL files and only its
full-text index goes into SQLite (``content=''``), so the index is a fraction of the data.

Incremental and resumable: ``files`` records how many bytes of each file are indexed.
Rows and the new offset are committed in one transaction every few thousand lines, so a
killed run loses at most one batch and a rerun starts where the last commit ended; new
lines appended to a file (or new files in a folder) are all a rerun reads. A file that
shrank or whose first bytes changed was replaced: the index is rebuilt from scratch
(contentless FTS5 rows cannot be deleted without their original text).

Example::

    >>> report = sync_index([Path("ultrachat-out")], Path("/tmp/explore.sqlite"))  # doctest: +SKIP
    >>> report.added, report.total                                                  # doctest: +SKIP
    (1200, 1200)
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.hashing import hexdigest
from ..core.paths import cache_root

SCHEMA_VERSION = "2"
HEAD_BYTES = 4096  # bytes hashed to recognise a replaced file
BATCH_LINES = 4000  # lines per transaction: bounds memory and the work a kill can lose
TITLE_CHARS = 160

SCHEMA = """
CREATE TABLE IF NOT EXISTS kv(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files(
    id INTEGER PRIMARY KEY, path TEXT UNIQUE NOT NULL,
    offset INTEGER NOT NULL DEFAULT 0,  -- bytes indexed so far (whole lines only)
    lines INTEGER NOT NULL DEFAULT 0,
    head TEXT NOT NULL DEFAULT '', head_len INTEGER NOT NULL DEFAULT 0);  -- hash of the first head_len bytes
CREATE TABLE IF NOT EXISTS dialogues(
    rowid INTEGER PRIMARY KEY, id TEXT NOT NULL,
    dup INTEGER NOT NULL,  -- 0 for the first dialogue with this id, 1 for the next...
    file INTEGER NOT NULL, offset INTEGER NOT NULL, length INTEGER NOT NULL, line INTEGER NOT NULL,
    sector TEXT, topic TEXT, subtopic TEXT, model TEXT, stop_reason TEXT,
    rounds INTEGER NOT NULL, turns INTEGER NOT NULL, chars INTEGER NOT NULL, title TEXT NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS dialogues_id ON dialogues(id, dup);
CREATE INDEX IF NOT EXISTS dialogues_sector ON dialogues(sector);
CREATE INDEX IF NOT EXISTS dialogues_topic ON dialogues(topic);
CREATE INDEX IF NOT EXISTS dialogues_model ON dialogues(model);
CREATE INDEX IF NOT EXISTS dialogues_rounds ON dialogues(rounds);
CREATE INDEX IF NOT EXISTS dialogues_chars ON dialogues(chars);
CREATE VIRTUAL TABLE IF NOT EXISTS fts USING fts5(text, content='', tokenize='unicode61 remove_diacritics 2');
CREATE VIRTUAL TABLE IF NOT EXISTS fts_vocab USING fts5vocab(fts, 'row');
CREATE TABLE IF NOT EXISTS map(rowid INTEGER PRIMARY KEY, x REAL NOT NULL, y REAL NOT NULL);
"""

INSERT = """INSERT INTO dialogues(id, dup, file, offset, length, line, sector, topic, subtopic, model, stop_reason,
    rounds, turns, chars, title)
    VALUES (?1, (SELECT count(*) FROM dialogues WHERE id = ?1),
            ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"""


class ExploreError(ValueError):
    """A problem with the inputs of the index (missing file, no JSONL found)."""


@dataclass
class SyncReport:
    """What one :func:`sync_index` run did."""

    added: int = 0
    total: int = 0
    skipped: list[str] = field(default_factory=list)  # "file:line: reason" of unreadable lines (first few)
    skipped_count: int = 0
    rebuilt: str = ""  # why the index was rebuilt from scratch, if it was
    seconds: float = 0.0


def _holds_dialogues(path: Path) -> bool:
    """Whether a file found in a folder is dialogues (its first line is one; an empty file may become one).

    Generation folders also hold other JSONL (plans, call logs): those are left out.
    """
    with open(path, "rb") as fh:
        for raw in fh:
            if raw.strip():
                try:
                    return not isinstance(dialogue_row(json.loads(raw)), str)
                except ValueError:
                    return False
    return True


def expand_inputs(paths: list[Path]) -> list[Path]:
    """Files to index: each file as given, each folder's ``*.jsonl`` files of dialogues recursively (sorted)."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted(q for q in p.rglob("*.jsonl") if q.is_file() and _holds_dialogues(q))
            if not found:
                raise ExploreError(f"{p}: no *.jsonl files of dialogues in this folder")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise ExploreError(f"{p}: no such file or folder")
    return list(dict.fromkeys(q.resolve() for q in out))


def default_index_path(paths: list[Path]) -> Path:
    """One index per set of DATA arguments, under ``$ULTRACHAT_CACHE/explore/`` (default ~/.cache/ultrachat)."""
    key = "\n".join(sorted(str(p.resolve()) for p in paths))
    return cache_root() / "explore" / f"{hexdigest(key, 'sha1')[:16]}.sqlite"


def connect(path: Path, readonly: bool = False) -> sqlite3.Connection:
    """Open the index; read-only connections are what the web server uses."""
    try:
        if readonly:
            conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a crash can lose the last commits, never corrupt
        conn.execute("PRAGMA cache_size=-65536")  # 64 MiB page cache, whatever the corpus size
    except sqlite3.DatabaseError as exc:  # not an index (a corpus given as --index), or a damaged one
        raise ExploreError(f"{path}: not a readable explore index ({exc}); delete it to rebuild, "
                           "or choose another --index") from None
    return conn


def _head(path: Path, size: int) -> str:
    with open(path, "rb") as fh:
        return hexdigest(fh.read(size), "sha1")


def _model_name(meta: dict[str, Any]) -> str | None:
    """The assistant's model: what the dialogue's answers came from."""
    models = meta.get("models")
    if isinstance(models, dict):
        role = models.get("assistant")
        if isinstance(role, dict):
            return str(role.get("model")) if role.get("model") is not None else None
        if isinstance(role, str):
            return role
    if isinstance(models, str):
        return models
    model = meta.get("model")
    return str(model) if model is not None else None


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def dialogue_row(obj: Any) -> tuple[tuple[Any, ...], str] | str:
    """``(metadata values, full text)`` of one parsed line, or why it is not a dialogue."""
    if not isinstance(obj, dict) or "id" not in obj:
        return "not an object with an 'id'"
    data = obj.get("data")
    if not isinstance(data, list) or not data or not all(isinstance(t, str) for t in data):
        return "field 'data' must be a non-empty list of strings"
    meta = obj["meta"] if isinstance(obj.get("meta"), dict) else {}
    rounds = meta.get("rounds")
    if not isinstance(rounds, int) or isinstance(rounds, bool):
        rounds = (len(data) + 1) // 2
    title = " ".join(data[0].split())[:TITLE_CHARS]
    values = (str(obj["id"]), _text(meta.get("sector")), _text(meta.get("topic")), _text(meta.get("subtopic")),
              _model_name(meta), _text(meta.get("stop_reason")), rounds, len(data), sum(map(len, data)), title)
    return values, "\n".join(data)


def _iter_lines(path: Path, offset: int) -> Iterator[tuple[int, bytes]]:
    """``(offset, line)`` for each complete line from ``offset``; a partial last line is left for later."""
    with open(path, "rb") as fh:
        fh.seek(offset)
        for raw in fh:
            if not raw.endswith(b"\n"):
                return  # still being written: index it on the next run
            yield offset, raw
            offset += len(raw)


class _Batch:
    """Rows of one transaction."""

    def __init__(self) -> None:
        self.rows: list[tuple[Any, ...]] = []
        self.texts: list[str] = []
        self.bytes = 0


def _flush(conn: sqlite3.Connection, batch: _Batch, file_id: int, offset: int, lines: int) -> None:
    with conn:
        first = conn.execute("SELECT coalesce(max(rowid), 0) + 1 FROM dialogues").fetchone()[0]
        conn.executemany(INSERT, batch.rows)
        conn.executemany("INSERT INTO fts(rowid, text) VALUES (?, ?)", zip(range(first, first + len(batch.texts)),
                                                                          batch.texts, strict=True))
        conn.execute("UPDATE files SET offset = ?, lines = ? WHERE id = ?", (offset, lines, file_id))


def _reset(conn: sqlite3.Connection) -> None:
    for table in ("fts_vocab", "fts", "map", "dialogues", "files", "kv"):
        conn.execute(f"DROP TABLE IF EXISTS {table}")
    conn.executescript(SCHEMA)
    conn.execute("INSERT INTO kv VALUES ('schema', ?)", (SCHEMA_VERSION,))
    conn.commit()


def _stale(conn: sqlite3.Connection, files: list[Path]) -> str:
    """Why the index can no longer be extended (a file replaced, removed or truncated), or ''."""
    if conn.execute("SELECT value FROM kv WHERE key = 'schema'").fetchone() != (SCHEMA_VERSION,):
        return "new index format"
    wanted = {str(p) for p in files}
    for path, offset, head, head_len in conn.execute("SELECT path, offset, head, head_len FROM files"):
        if path not in wanted:
            return f"{path} is no longer among the inputs"
        p = Path(path)
        if offset and (p.stat().st_size < offset or _head(p, head_len) != head):
            return f"{path} changed since it was indexed"
    return ""


def sync_index(paths: list[Path], index: Path, progress: bool = True, map_points: int = 20000,
               on_batch: Callable[[int], None] | None = None) -> SyncReport:
    """Index what is new in ``paths`` (files or folders of ``*.jsonl``) into ``index``.

    Then refresh the cached statistics and, when dialogues were added, the topic map
    (computed on at most ``map_points`` sampled dialogues).
    """
    started = time.monotonic()
    files = expand_inputs(paths)
    report = SyncReport()
    conn = connect(index)
    try:
        conn.executescript(SCHEMA)
        has_schema = conn.execute("SELECT value FROM kv WHERE key = 'schema'").fetchone()
        if has_schema is None:
            _reset(conn)
        else:
            report.rebuilt = _stale(conn, files)
            if report.rebuilt:
                _reset(conn)
        for p in files:
            conn.execute("INSERT OR IGNORE INTO files(path) VALUES (?)", (str(p),))
        conn.commit()
        todo = [(fid, Path(path), offset, lines) for fid, path, offset, lines in
                conn.execute("SELECT id, path, offset, lines FROM files ORDER BY id")]
        pending = sum(max(0, p.stat().st_size - off) for _, p, off, _ in todo)
        with _progress_bar(progress, pending) as advance:
            for fid, p, offset, lines in todo:
                report.added += _index_file(conn, fid, p, offset, lines, report, advance, on_batch)
        report.total = conn.execute("SELECT count(*) FROM dialogues").fetchone()[0]
        cached = {k for k, in conn.execute("SELECT key FROM kv WHERE key IN ('stats', 'map_total')")}
        if report.added or "stats" not in cached or (map_points > 0 and "map_total" not in cached):
            _finish(conn, report, map_points, progress)
    finally:
        conn.close()
    report.seconds = time.monotonic() - started
    return report


def _index_file(conn: sqlite3.Connection, fid: int, path: Path, offset: int, lines: int, report: SyncReport,
                advance: Callable[[int], None], on_batch: Callable[[int], None] | None) -> int:
    if offset == 0:
        size = min(HEAD_BYTES, path.stat().st_size)
        conn.execute("UPDATE files SET head = ?, head_len = ? WHERE id = ?", (_head(path, size), size, fid))
    added = 0
    batch = _Batch()
    end = offset
    for start, raw in _iter_lines(path, offset):
        lines += 1
        end = start + len(raw)
        batch.bytes += len(raw)
        if raw.strip():
            try:
                parsed = dialogue_row(json.loads(raw))
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                parsed = f"invalid JSON ({exc})"
            if isinstance(parsed, str):
                report.skipped_count += 1
                if len(report.skipped) < 5:
                    report.skipped.append(f"{path}:{lines}: {parsed}")
            else:
                values, text = parsed
                batch.rows.append((values[0], fid, start, len(raw), lines, *values[1:]))
                batch.texts.append(text)
        if len(batch.rows) >= BATCH_LINES or batch.bytes >= 64 << 20:
            _flush(conn, batch, fid, end, lines)
            added += len(batch.rows)
            advance(batch.bytes)
            if on_batch:
                on_batch(added)
            batch = _Batch()
    _flush(conn, batch, fid, end, lines)
    advance(batch.bytes)
    return added + len(batch.rows)


class _progress_bar:
    """A rich bar over bytes to index (silent when disabled or nothing is new)."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled = enabled and total > 0
        self.total = total

    def __enter__(self) -> Callable[[int], None]:
        if not self.enabled:
            return lambda n: None
        from ..core.progress import make_progress

        self._bar = make_progress(unit="bytes")
        self._bar.start()
        task = self._bar.add_task("indexing", total=self.total)
        return lambda n: self._bar.advance(task, n)

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self._bar.stop()


def _finish(conn: sqlite3.Connection, report: SyncReport, map_points: int, progress: bool) -> None:
    """Merge FTS segments after a full build, cache statistics, refresh the map when it is stale."""
    from .map import compute_map

    if report.added and report.added == report.total:
        # A fresh build: merge into one segment (fastest queries). Incremental runs rely on
        # FTS5's automerge instead, so they cost what they add, not what is already there.
        conn.execute("INSERT INTO fts(fts) VALUES ('optimize')")
    conn.execute("INSERT OR REPLACE INTO kv VALUES ('stats', ?)", (json.dumps(compute_stats(conn)),))
    conn.commit()
    mapped = conn.execute("SELECT value FROM kv WHERE key = 'map_total'").fetchone()
    # The map is a sample: it is recomputed once the corpus grew by a tenth since it was drawn.
    if map_points > 0 and (mapped is None or report.total > int(mapped[0]) * 1.1):
        compute_map(conn, map_points, progress)
        with conn:
            conn.execute("INSERT OR REPLACE INTO kv VALUES ('map_total', ?)", (str(report.total),))
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


HIST_ROUNDS = list(range(1, 11))  # 1..9 and "10+"
HIST_CHARS = [0, 250, 500, 1000, 2000, 4000, 8000, 16000, 32000]


def compute_stats(conn: sqlite3.Connection) -> dict[str, Any]:
    """Counts, metadata breakdowns and rounds/length histograms (cached in ``kv``)."""
    def counts(col: str, limit: int = 500) -> list[list[Any]]:
        rows = conn.execute(f"SELECT {col}, count(*) c FROM dialogues GROUP BY {col} ORDER BY c DESC, {col} "
                            f"LIMIT {limit}").fetchall()
        return [[k, c] for k, c in rows]

    total, turns, chars = conn.execute("SELECT count(*), coalesce(sum(turns), 0), coalesce(sum(chars), 0) "
                                       "FROM dialogues").fetchone()
    rounds = Counter(dict(conn.execute("SELECT min(rounds, 10), count(*) FROM dialogues GROUP BY 1")))
    edges = HIST_CHARS
    case = " ".join(f"WHEN chars < {hi} THEN {i}" for i, hi in enumerate(edges[1:]))
    lengths = Counter(dict(conn.execute(f"SELECT CASE {case} ELSE {len(edges) - 1} END, count(*) FROM dialogues "
                                        "GROUP BY 1")))
    return {
        "dialogues": total, "turns": turns, "chars": chars,
        "files": [[p, n] for p, n in conn.execute(
            "SELECT f.path, count(d.rowid) FROM files f LEFT JOIN dialogues d ON d.file = f.id GROUP BY f.id")],
        "sectors": counts("sector"), "topics": counts("topic"), "models": counts("model"),
        "stop_reasons": counts("stop_reason"),
        "rounds_hist": [[str(r) if r < 10 else "10+", rounds.get(r, 0)] for r in HIST_ROUNDS],
        "chars_hist": [[f"{lo}-{hi}" if i < len(edges) - 1 else f"{lo}+", lengths.get(i, 0)]
                       for i, (lo, hi) in enumerate(zip(edges, [*edges[1:], None], strict=True))],
    }

