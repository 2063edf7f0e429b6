"""Stable hashing (the same value in every process and on every machine) and the compact
state built on it: 64-bit hash sets and maps, and a spool that keeps strings on disk.

Every stable hash in the package comes from here: :func:`hash64` (ids, cache keys),
:func:`uint64` (buckets: replicas, shards, splits), :func:`stable_seed` (seeds),
:func:`digest` (n-gram and passage keys), :func:`hexdigest` (content ids, call keys) and
:func:`fingerprint` (a JSON payload's key).

A plan of 1.5M dialogues must not hold a Python object per dialogue for the whole run.
The ids already written, the planner's dedupe sets and the index of cached planning calls
are 64-bit hashes in sorted numpy arrays (8 bytes a key, 16 with a value), with a small
dict of recent additions merged in every :attr:`HashIndex.TAIL` entries. Two different
strings share a hash with probability about n^2 / 2^65 (3e-8 for 1.5M ids); where a
collision would change an output, callers verify the stored record (the plan-call cache
compares the key it reads back).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from array import array
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np


def digest(data: str | bytes, size: int = 8) -> bytes:
    """A stable ``size``-byte BLAKE2b digest of ``data``."""
    return hashlib.blake2b(data.encode() if isinstance(data, str) else data, digest_size=size).digest()


def hexdigest(data: str | bytes | memoryview, algorithm: str = "sha256") -> str:
    """The hex digest of ``data`` (SHA-256 unless another ``hashlib`` algorithm is named)."""
    return hashlib.new(algorithm, data.encode() if isinstance(data, str) else data).hexdigest()


def hash64(text: str) -> int:
    """A stable 64-bit hash of ``text`` (the same in every process and on every machine)."""
    return int.from_bytes(digest(text), "little")


def uint64(text: str, algorithm: str = "blake2b") -> int:
    """The first 8 bytes of ``text``'s digest as a big-endian integer: ``uint64(k) % n``
    puts ``k`` in one of ``n`` buckets, the same on every machine."""
    raw = digest(text) if algorithm == "blake2b" else hashlib.new(algorithm, text.encode()).digest()[:8]
    return int.from_bytes(raw, "big")


def stable_seed(*parts: object) -> int:
    """A 63-bit seed derived from ``parts``, identical across processes and machines."""
    return uint64("\x1f".join(map(str, parts)), "sha256") >> 1


def named_digest(items: Iterable[tuple[str, bytes]]) -> str:
    """SHA-256 (16 hex) of named blobs, each fed as ``name NUL bytes NUL`` in the given order
    (a folder's files: its contents, not its path)."""
    h = hashlib.sha256()
    for name, blob in items:
        h.update(name.encode() + b"\0" + blob + b"\0")
    return h.hexdigest()[:16]


def fingerprint(payload: Any) -> str:
    """A stable hex key for a JSON-serialisable payload."""
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, default=str)
    return hexdigest(blob)[:32]


def _key(key: int | str) -> int:
    return hash64(key) if isinstance(key, str) else key


def _array(items: Iterable[int]) -> np.ndarray:
    return np.frombuffer(items, np.uint64) if isinstance(items, array) else np.fromiter(items, np.uint64)


class HashIndex:
    """A growing set of 64-bit keys (8 bytes each), or with ``values`` a map to 64-bit values
    (16 bytes an entry; the first value added for a key wins); a string key stands for its
    :func:`hash64`. Thread-safe: the run store adds written ids from the writer thread."""

    TAIL = 1024

    def __init__(self, keys: Iterable[int | str] = (), values: Iterable[int] | None = None) -> None:
        k = _array(keys if isinstance(keys, array) else map(_key, keys))
        self._keys, first = np.unique(k, return_index=True)  # sorted; the first of duplicates
        self._values = _array(values)[first] if values is not None else None  # None: a set
        self._tail: dict[int, int] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._keys) + len(self._tail)

    def _find(self, key: int) -> int:
        i = int(np.searchsorted(self._keys, np.uint64(key)))
        return i if i < len(self._keys) and int(self._keys[i]) == key else -1

    def get(self, key: int | str) -> int | None:
        key = _key(key)
        with self._lock:
            if key in self._tail:
                return self._tail[key]
            i = self._find(key)
            return None if i < 0 else 0 if self._values is None else int(self._values[i])

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, int | str):
            return False
        return self.get(key) is not None

    def add(self, key: int | str, value: int = 0) -> bool:
        """Add ``key`` (with ``value``); False when it was already there."""
        key = _key(key)
        with self._lock:
            if key in self._tail or self._find(key) >= 0:
                return False
            self._tail[key] = value
            if len(self._tail) >= self.TAIL:
                self._merge()
            return True

    def _merge(self) -> None:
        keys = np.fromiter(self._tail, np.uint64, len(self._tail))
        order = np.argsort(keys)
        at = np.searchsorted(self._keys, keys[order])
        if self._values is not None:
            values = np.fromiter(self._tail.values(), np.uint64, len(self._tail))
            self._values = np.insert(self._values, at, values[order])
        self._keys = np.insert(self._keys, at, keys[order])
        self._tail = {}


class TextSpool:
    """Strings kept in an unlinked temporary file, 8 bytes of memory each; ``spool[i]``
    reads string ``i`` back. The file disappears when the spool is closed or collected."""

    def __init__(self, folder: Path | None = None) -> None:
        self._fh = tempfile.TemporaryFile(dir=folder, buffering=0)  # noqa: SIM115 - closed in close()
        self._ends = array("Q", [0])

    def __len__(self) -> int:
        return len(self._ends) - 1

    def extend(self, texts: Iterable[str]) -> range:
        """Append ``texts`` with one write; returns their indices."""
        first = len(self)
        blobs = [t.encode() for t in texts]
        end = self._ends[-1]
        for b in blobs:
            end += len(b)
            self._ends.append(end)
        data = memoryview(b"".join(blobs))
        while data:
            data = data[os.write(self._fh.fileno(), data):]
        return range(first, len(self))

    def __getitem__(self, i: int) -> str:
        start, end = self._ends[i], self._ends[i + 1]
        return os.pread(self._fh.fileno(), end - start, start).decode()

    def close(self) -> None:
        self._fh.close()
