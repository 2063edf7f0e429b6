"""SQLite files that threads and processes share (the response cache, the batch journal)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from .errors import UserError


def unreadable_database(path: object, what: str, exc: Exception) -> UserError:
    """The one-line error for an SQLite file that cannot be opened (not a database, damaged,
    an unwritable folder): it names the file and what it was for."""
    return UserError(f"{path}: not a usable {what} ({exc}); delete it to start a new one, or choose another file")


def open_shared_db(path: Path, schema: str, what: str, durable: bool = True) -> sqlite3.Connection:
    """An SQLite file that several threads (each access under the caller's lock) and
    processes share: WAL, autocommit, ``schema`` applied. ``durable=False`` commits with
    ``synchronous=NORMAL`` (a crash loses the last commits, never corrupts). A file that
    is not such a database is a one-line error naming it and ``what`` it was for."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        db = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        if not durable:
            db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(schema)
    except sqlite3.Error as exc:
        raise unreadable_database(path, what, exc) from None
    return db
