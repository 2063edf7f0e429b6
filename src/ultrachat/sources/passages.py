"""Passages streamed from a local corpus (or a hub dataset), one at a time, never loaded whole.

An input is a file, a glob or a folder:

* JSONL (``.jsonl``, ``.json``, ``.ndjson``), plain or compressed (``.gz``, ``.bz2``, ``.xz``):
  C4's shipped ``c4-train.00000-of-01024.json.gz`` is gzipped JSONL with ``text``,
  ``timestamp`` and ``url``; lines are parsed with orjson;
* Parquet, a batch at a time;
* plain text (``.txt``, ``.text``, ``.md`` or no suffix, plain or compressed): paragraphs
  separated by blank lines, short neighbours joined up to ``min_chars``;
* a ``datasets`` ``save_to_disk`` folder: memory-mapped Arrow, read in batches;
* any other folder: every file under it (sorted, hidden ones skipped), each of the kinds above.

Anything else stops with an error naming the input: nothing is skipped silently.
"""

from __future__ import annotations

import bz2
import glob
import gzip
import itertools
import lzma
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from ..core.corpus import InvalidLine

JSON_SUFFIXES = (".jsonl", ".json", ".ndjson")
TEXT_SUFFIXES = (".txt", ".text", ".md", "")
OPENERS: dict[str, Callable[..., IO[Any]]] = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
KNOWN = ("JSONL (.jsonl/.json/.ndjson), Parquet, text (.txt/.md), each optionally .gz/.bz2/.xz, "
         "a datasets save_to_disk folder or a folder of such files")


@dataclass(frozen=True)
class Passage:
    text: str
    source: str  # file:line (or file:row N, dataset:row N) it came from


def open_stream(path: Path, mode: str = "rb") -> IO[Any]:
    """``path`` opened for reading, decompressed by its suffix (``.gz``, ``.bz2``, ``.xz``)."""
    opener = OPENERS.get(path.suffix.lower())
    if opener is None:
        return open(path, mode, encoding=None if "b" in mode else "utf-8")  # the caller closes it
    return opener(path, mode) if "b" in mode else opener(path, mode, encoding="utf-8")


def inner_suffix(path: Path) -> str:
    """The suffix that says the format, under any compression suffix (``a.json.gz`` -> ``.json``)."""
    name = path.name.lower()
    if path.suffix.lower() in OPENERS:
        name = name[: -len(path.suffix)]
    return Path(name).suffix


def is_saved_dataset(path: Path) -> bool:
    """A folder written by ``datasets``' ``save_to_disk`` (a Dataset or a DatasetDict)."""
    return path.is_dir() and ((path / "dataset_dict.json").is_file()
                              or ((path / "state.json").is_file() and (path / "dataset_info.json").is_file()))


def file_kind(path: Path, what: str = "materials.files") -> str:
    """``json``, ``parquet`` or ``text``; any other file is a :class:`ValueError`."""
    suffix = inner_suffix(path)
    if suffix in JSON_SUFFIXES:
        return "json"
    if suffix == ".parquet" and path.suffix.lower() == ".parquet":
        return "parquet"
    if suffix in TEXT_SUFFIXES:
        return "text"
    raise ValueError(f"{what}: cannot read '{path}' (known inputs: {KNOWN})")


def corpus_inputs(patterns: list[str], what: str = "materials.files") -> list[Path]:
    """The inputs ``patterns`` name, in order: globs expanded and sorted, folders walked.
    Every input is checked here, before a passage is read."""
    out: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
        if not matches or not Path(matches[0]).exists():
            raise FileNotFoundError(f"{what}: no file matches '{pattern}'")
        for match in map(Path, matches):
            out += _walk(match, what)
    return out


def _walk(path: Path, what: str) -> list[Path]:
    if is_saved_dataset(path):
        return [path]
    if path.is_file():
        file_kind(path, what)
        return [path]
    if not path.is_dir():
        raise ValueError(f"{what}: '{path}' is neither a file nor a folder")
    found = [p for child in sorted(path.iterdir()) if not child.name.startswith(".") for p in _walk(child, what)]
    if not found:
        raise ValueError(f"{what}: the folder '{path}' holds no corpus files")
    return found


def read_passages(path: Path, text_field: str = "text", min_chars: int = 1, split: str = "train") -> Iterator[Passage]:
    """Every passage of one input (from :func:`corpus_inputs`) in order, streamed.
    Unreadable content raises :class:`InvalidLine` naming the file (and line)."""
    if is_saved_dataset(path):
        yield from _saved_passages(path, text_field, split)
        return
    kind = file_kind(path)
    reader = {"json": _json_passages, "parquet": _parquet_passages}.get(kind)
    try:
        yield from reader(path, text_field) if reader else _text_passages(path, min_chars)
    except (EOFError, zlib.error, lzma.LZMAError, OSError) as exc:
        if path.suffix.lower() not in OPENERS or isinstance(exc, PermissionError):
            raise
        raise InvalidLine(f"{path}: cannot decompress ({exc})") from None  # truncated or corrupt


def _json_passages(path: Path, field: str) -> Iterator[Passage]:
    with open_stream(path) as fh:
        for no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise InvalidLine(f"{path}:{no}: invalid JSON ({exc})") from None
            text = obj if isinstance(obj, str) else obj.get(field) if isinstance(obj, dict) else None
            if not isinstance(text, str):
                raise InvalidLine(f"{path}:{no}: no text field '{field}' (set materials.text_field)")
            yield Passage(text.strip(), f"{path}:{no}")


def _parquet_passages(path: Path, field: str) -> Iterator[Passage]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path, pre_buffer=False)  # pre-buffering caches every row group read
    except Exception as exc:  # pyarrow raises several types for a file that is not Parquet
        raise InvalidLine(f"{path}:1: not a readable Parquet file ({exc})") from None
    if field not in pf.schema_arrow.names:
        raise InvalidLine(f"{path}:1: no column '{field}' (columns: {', '.join(pf.schema_arrow.names)}; "
                          "set materials.text_field)")
    row = 0
    for batch in pf.iter_batches(columns=[field], batch_size=1024):
        for text in batch.column(0).to_pylist():
            row += 1
            if isinstance(text, str):
                yield Passage(text.strip(), f"{path}:row {row}")


def _text_passages(path: Path, min_chars: int) -> Iterator[Passage]:
    """Paragraphs separated by blank lines, short neighbours joined up to ``min_chars``."""
    parts: list[str] = []
    start = no = 1
    try:
        with open_stream(path, "rt") as fh:
            for no, line in enumerate(fh, 1):
                if line.strip():
                    parts.append(line.strip())
                    continue
                if parts and sum(map(len, parts)) >= min_chars:
                    yield Passage(" ".join(parts), f"{path}:{start}")
                    parts, start = [], no + 1
                elif not parts:
                    start = no + 1
    except UnicodeDecodeError:
        raise InvalidLine(f"{path}:{no + 1}: not UTF-8 text") from None
    if parts:
        yield Passage(" ".join(parts), f"{path}:{start}")


def _saved_passages(path: Path, field: str, split: str) -> Iterator[Passage]:
    from datasets import DatasetDict, load_from_disk

    try:
        ds = load_from_disk(str(path))  # memory-mapped: rows stay on disk
    except Exception as exc:  # datasets raises many kinds for a damaged folder
        raise InvalidLine(f"{path}: not a readable datasets folder ({type(exc).__name__}: {exc})") from None
    if isinstance(ds, DatasetDict):
        if split not in ds:
            raise InvalidLine(f"{path}: no split '{split}' (splits: {', '.join(ds)}; set materials.split)")
        ds = ds[split]
    if field not in ds.column_names:
        raise InvalidLine(f"{path}: no column '{field}' (columns: {', '.join(ds.column_names)}; "
                          "set materials.text_field)")
    row = 0
    for batch in ds.select_columns([field]).iter(batch_size=1024):
        for text in batch[field]:
            row += 1
            if isinstance(text, str):
                yield Passage(text.strip(), f"{path}:row {row}")


def hub_passages(dataset: str, config: str | None, split: str, field: str) -> Iterator[Passage]:
    """Passages of a Hugging Face dataset streamed from the hub (which must be reachable)."""
    try:
        from datasets import load_dataset

        stream = load_dataset(dataset, config, split=split, streaming=True)
        rows = iter(stream)
        first = next(rows, None)
    except Exception as exc:  # the hub client raises many kinds when offline or misnamed
        raise ValueError(f"materials.dataset: cannot stream '{dataset}' from the Hugging Face hub "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}); "
                         "the hub must be reachable, or use materials.files with local files") from None
    for i, row in enumerate(itertools.chain([first] if first is not None else [], rows), 1):
        yield Passage(str(row.get(field, "")).strip(), f"{dataset}:row {i}")
