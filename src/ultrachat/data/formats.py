"""Export UltraChat JSONL to training formats and import them back, losslessly.

Formats (``--format``):

* ``hf``: a Hugging Face ``DatasetDict`` folder (``save_to_disk``; load with
  ``datasets.load_from_disk``);
* ``parquet``: ``<out>/data/<split>-00000-of-00001.parquet`` and a ``README.md`` dataset
  card (load with ``datasets.load_dataset(out)``; ``load_dataset(out, "messages")`` reads the
  ``messages`` column alone, for TRL);
* ``sharegpt``: one JSON array of ``{"id", "conversations": [{"from": "human"|"gpt",
  "value"}], "meta"}``, one item a line;
* ``openai``: chat fine-tuning JSONL, ``{"messages": [...]}`` a line, upload-ready; ids
  and ``meta`` go to a sidecar ``<name>.meta.jsonl`` read back by ``import``.

The HF and Parquet rows have the UltraChat 200k columns ``prompt``, ``prompt_id`` (SHA-256
of the prompt) and ``messages`` (``[{"role", "content"}]``), plus ``id`` and ``meta`` (a
JSON string, since ``meta`` differs from dialogue to dialogue). TRL's SFTTrainer (1.16)
takes any row with a ``prompt`` column for a prompt-completion pair and fails looking for
``completion``, while it applies the chat template to ``messages`` of a row without one: the
Parquet export's ``messages`` config gives it that column alone, and ``layout="trl"``
leaves ``prompt`` out of the files (the way for ``hf``, whose ``load_from_disk`` has no
configs). Dialogues go to ``train``
or ``test`` by a seeded hash of their id (``test_fraction``), so a split is stable when the
corpus grows. Import reads the splits back in order: with ``test_fraction=0`` the round
trip gives the same file byte for byte; otherwise the same dialogues, split by split.

``import`` also reads the released UltraChat JSONL files and UltraChat 200k Parquet.

Example::

    export_corpus(Path("dialogues.jsonl"), "hf", Path("ds"), test_fraction=0.05)
    import_corpus(Path("ds"), Path("back.jsonl"))
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..core.atomic import fsync_path, refuse_existing, staged_dir
from ..core.corpus import OutputDir, count_lines, json_lines, parquet_rows, read_corpus
from ..core.hashing import hexdigest, uint64
from ..core.progress import make_progress
from ..core.records import turn_messages, validate_dialogue

FORMATS = ("hf", "parquet", "sharegpt", "openai")
LAYOUTS = ("200k", "trl")
ROLES = {"user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant", "chatgpt": "assistant",
         "bard": "assistant", "bing": "assistant", "model": "assistant", "system": "system"}
ROWS_PER_BATCH = 1000


def to_row(d: dict[str, Any]) -> dict[str, Any]:
    """An UltraChat 200k-style row, plus ``id`` and ``meta`` (JSON) for a lossless way back."""
    prompt = d["data"][0]
    return {"prompt": prompt, "prompt_id": hexdigest(prompt), "messages": turn_messages(d["data"]),
            "id": str(d["id"]), "meta": json.dumps(d["meta"], ensure_ascii=False) if "meta" in d else None}


def from_messages(messages: list[dict[str, Any]], dialogue_id: str, meta: dict[str, Any] | None,
                  role_key: str = "role", content_key: str = "content") -> dict[str, Any]:
    """Messages back to a dialogue; system messages go to ``meta["system"]``. Raises
    ``ValueError`` when the user/assistant turns do not alternate from the user."""
    turns: list[str] = []
    system: list[str] = []
    for m in messages:
        role = ROLES.get(str(m.get(role_key, "")).lower())
        content = m.get(content_key)
        if role is None or not isinstance(content, str):
            raise ValueError(f"message {len(turns) + len(system)} has role {m.get(role_key)!r} "
                             f"or no text in '{content_key}'")
        if role == "system":
            system.append(content)
            continue
        if role != ("user" if len(turns) % 2 == 0 else "assistant"):
            raise ValueError(f"turn {len(turns)} is from '{role}': turns must alternate user/assistant from the user")
        turns.append(content)
    if not turns:
        raise ValueError("no user or assistant messages")
    d: dict[str, Any] = {"id": dialogue_id, "data": turns}
    if meta is not None or system:
        d["meta"] = dict(meta or {})
        if system:
            d["meta"]["system"] = "\n".join(system)
    return d


def split_of(dialogue_id: str, test_fraction: float, seed: int) -> int:
    """0 (train) or 1 (test), stable for an id whatever else is in the corpus."""
    if test_fraction <= 0:
        return 0
    h = uint64(f"{seed}:{dialogue_id}")
    return int(h / 2**64 < test_fraction)


def export_corpus(path: Path, fmt: str, out: Path, test_fraction: float = 0.0, seed: int = 0,
                  splits: tuple[str, str] = ("train", "test"), skip_invalid: bool = False,
                  progress: bool = True, layout: str = "200k", overwrite: bool | None = None) -> dict[str, Any]:
    """Export ``path`` to ``fmt`` at ``out``; returns counts per split and the paths written.

    The output appears whole or not at all (a folder is built beside ``out`` and renamed into
    place); an existing ``out`` is refused unless ``overwrite`` (default: ``--overwrite``)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format '{fmt}' (choose {', '.join(FORMATS)})")
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout '{layout}' (choose {', '.join(LAYOUTS)})")
    if not 0 <= test_fraction < 1:
        raise ValueError(f"--test-fraction must be in [0, 1), got {test_fraction}")
    out = Path(out)
    refuse_existing(out, overwrite)
    invalid = OutputDir(out.parent / f"{out.name}.invalid", inputs=[path], overwrite=overwrite) \
        if skip_invalid else None
    with read_corpus(path, "export", invalid, skip_invalid, progress) as dialogues:
        if fmt in ("hf", "parquet"):
            with staged_dir(out, overwrite) as staged:
                report = _export_parquet(dialogues, staged, out, fmt, test_fraction, seed, splits, layout)
        else:
            report = _export_json(dialogues, out, fmt)
    if invalid:
        invalid.close()
        report["invalid"] = invalid.counts.get("invalid", 0)
    return {"input": str(path), "format": fmt, "out": str(out), **report}


def _export_parquet(dialogues: Iterator[dict[str, Any]], staged: Path, out: Path, fmt: str, test_fraction: float,
                    seed: int, splits: tuple[str, str], layout: str) -> dict[str, Any]:
    """Write the export into the empty folder ``staged`` (it becomes ``out`` afterwards)."""
    # hf: Parquet files first, in a scratch folder beside the output, then save_to_disk.
    work = Path(tempfile.mkdtemp(prefix=".export-", dir=staged.parent)) if fmt == "hf" else staged
    data_dir = work / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        counts = _write_splits(dialogues, data_dir, test_fraction, seed, splits, layout)
        written = [splits[k] for k in (0, 1) if counts[k]]
        if fmt == "parquet":
            _write_card(staged, out, written, layout)
        if fmt == "hf":
            _save_hf(staged, work, {s: str(data_dir / f"{s}-00000-of-00001.parquet") for s in written})
    finally:
        if fmt == "hf":
            shutil.rmtree(work, ignore_errors=True)
    return {"splits": {splits[k]: counts[k] for k in (0, 1) if counts[k]}}


def _write_splits(dialogues: Iterator[dict[str, Any]], data_dir: Path, test_fraction: float, seed: int,
                  splits: tuple[str, str], layout: str) -> list[int]:
    """One Parquet file per non-empty split in ``data_dir``; the rows of each split."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("prompt", pa.string()), ("prompt_id", pa.string()),
                        ("messages", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
                        ("id", pa.string()), ("meta", pa.string())])
    if layout == "trl":
        schema = schema.remove(0)
    writers: dict[int, Any] = {}
    pending: dict[int, list[dict[str, Any]]] = {0: [], 1: []}
    counts = [0, 0]

    def flush(k: int) -> None:
        if pending[k]:
            if k not in writers:
                writers[k] = pq.ParquetWriter(data_dir / f"{splits[k]}-00000-of-00001.parquet", schema)
            writers[k].write_table(pa.Table.from_pylist(pending[k], schema=schema))
            pending[k] = []

    for d in dialogues:
        k = split_of(str(d["id"]), test_fraction, seed)
        pending[k].append(to_row(d))
        counts[k] += 1
        if len(pending[k]) >= ROWS_PER_BATCH:
            flush(k)
    for k in (0, 1):
        flush(k)
    for w in writers.values():
        w.close()
    if not writers:
        raise ValueError("no dialogues to export")
    return counts


def _save_hf(staged: Path, work: Path, files: dict[str, str]) -> None:
    """``save_to_disk`` of the Parquet ``files`` (split -> path) into ``staged``."""
    import datasets
    import pyarrow.dataset as pads

    # pre_buffer=False, as in parquet_rows: pre-buffered, the Parquet builder's reads pile up.
    ds = datasets.load_dataset("parquet", data_files=files, cache_dir=str(work / "cache"),
                               fragment_scan_options=pads.ParquetFragmentScanOptions(pre_buffer=False))
    ds.save_to_disk(str(staged))


def _write_card(folder: Path, out: Path, split_names: list[str], layout: str) -> None:
    """``README.md`` with dataset configs for ``load_dataset(out[, name])``: ``default`` (every
    column) and, in the 200k layout, ``messages`` (that column alone, which TRL's SFTTrainer
    takes unchanged: it reads any row with a ``prompt`` column as prompt-completion)."""
    files = [f"  - split: {json.dumps(s)}\n    path: {json.dumps(f'data/{s}-00000-of-00001.parquet')}"
             for s in split_names]
    lines = ["---", "configs:", "- config_name: default", "  data_files:", *files]
    if layout == "200k":
        lines += ["- config_name: messages", "  data_files:", *files, "  columns: [messages]"]
    where = json.dumps(str(out))
    lines += ["---", "", "# UltraChat-format dialogues", "",
              "Written by `ultrachat export`: " + ("" if layout == "trl" else "`prompt` (the opening user turn), ")
              + "`prompt_id` (SHA-256 of the opening turn), `messages` (`role`/`content`), `id`, `meta` (JSON).", "",
              "```python", "import datasets", "", f"ds = datasets.load_dataset({where})  # every column"]
    if layout == "200k":
        lines += [f'sft = datasets.load_dataset({where}, "messages")  # for TRL SFTTrainer',
                  "```", "", "TRL's SFTTrainer reads a row with a `prompt` column as a prompt-completion pair; the "
                  "`messages` config leaves `prompt` out, so the trainer applies the chat template to `messages`."]
    else:
        lines += ["```"]
    (folder / "README.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _export_json(dialogues: Iterator[dict[str, Any]], out: Path, fmt: str) -> dict[str, Any]:
    out.parent.mkdir(parents=True, exist_ok=True)
    sidecar = out.with_name(out.stem + ".meta.jsonl")
    part = out.with_name(out.name + ".part")
    try:
        return _write_json_export(dialogues, out, part, sidecar, fmt)
    finally:  # a failed export leaves nothing behind (a finished one has renamed its parts)
        for leftover in (part, sidecar.with_name(sidecar.name + ".part")):
            leftover.unlink(missing_ok=True)


def _write_json_export(dialogues: Iterator[dict[str, Any]], out: Path, part: Path, sidecar: Path,
                       fmt: str) -> dict[str, Any]:
    n = 0
    with open(part, "w", encoding="utf-8") as fh:
        side = open(sidecar.with_name(sidecar.name + ".part"), "w", encoding="utf-8") if fmt == "openai" else None  # noqa: SIM115
        if fmt == "sharegpt":
            fh.write("[\n")
        for d in dialogues:
            if fmt == "sharegpt":
                item: dict[str, Any] = {"id": str(d["id"]), "conversations": [
                    {"from": "human" if i % 2 == 0 else "gpt", "value": t} for i, t in enumerate(d["data"])]}
                if "meta" in d:
                    item["meta"] = d["meta"]
                fh.write(("" if n == 0 else ",\n") + json.dumps(item, ensure_ascii=False))
            else:
                assert side is not None  # openai's layout always has its sidecar
                fh.write(json.dumps({"messages": turn_messages(d["data"])}, ensure_ascii=False) + "\n")
                side.write(json.dumps({"id": str(d["id"]), **({"meta": d["meta"]} if "meta" in d else {})},
                                      ensure_ascii=False) + "\n")
            n += 1
        if fmt == "sharegpt":
            fh.write("\n]\n")
        fh.flush()
        os.fsync(fh.fileno())
        if side:
            side.flush()
            os.fsync(side.fileno())
            side.close()
            Path(side.name).replace(sidecar)
    part.replace(out)
    fsync_path(out.parent)
    return {"dialogues": n, **({"sidecar": str(sidecar)} if fmt == "openai" else {})}


def detect_format(src: Path) -> str:
    """Guess the format of ``src``: ``hf``, ``parquet``, ``sharegpt``, ``openai`` or ``ultrachat``."""
    if src.is_dir():
        if (src / "dataset_dict.json").exists() or (src / "state.json").exists():
            return "hf"
        if any(src.rglob("*.parquet")):
            return "parquet"
        raise ValueError(f"{src}: neither a saved Hugging Face dataset nor a folder of Parquet files")
    if src.suffix == ".parquet":
        return "parquet"
    if src.suffix == ".json":
        return "sharegpt"
    with open(src, encoding="utf-8") as fh:
        first = next((line for line in fh if line.strip()), "")
    try:
        keys = json.loads(first).keys() if first else set()
    except (json.JSONDecodeError, AttributeError):
        raise ValueError(f"{src}:1: not a JSON object; cannot tell the format (use --format)") from None
    for key, fmt in (("messages", "openai"), ("conversations", "sharegpt"), ("data", "ultrachat")):
        if key in keys:
            return fmt
    raise ValueError(f"{src}:1: no 'messages', 'conversations' or 'data' field; cannot tell the format")


def _rows(src: Path, fmt: str) -> Iterator[tuple[str, Any]]:
    """``(location, record)`` pairs of any supported input, streaming."""
    if fmt == "hf":
        import datasets

        ds = datasets.load_from_disk(str(src))
        parts = ds.items() if isinstance(ds, datasets.DatasetDict) else [("train", ds)]
        for split, part in parts:
            for i, row in enumerate(part):
                yield f"{src}[{split}][{i}]", {**row, "_split": split}
    elif fmt == "parquet":
        files = sorted(src.rglob("*.parquet"), key=_train_first) if src.is_dir() else [src]
        for f in files:
            split = f.name.split("-")[0]
            for where, rec in parquet_rows(f, ROWS_PER_BATCH):
                yield where, {**rec, "_split": split}
    elif fmt == "sharegpt" and src.suffix == ".json":
        import ijson

        with open(src, "rb") as fh:
            try:
                for i, rec in enumerate(ijson.items(fh, "item", use_float=True)):
                    yield f"{src}[{i}]", rec
            except ijson.JSONError as exc:
                raise ValueError(f"{src}: invalid JSON ({exc})") from None
    else:
        yield from json_lines(src)


def _total(src: Path, fmt: str) -> int | None:
    """Records in ``src`` for the progress bar, when known without reading them (``None`` for ShareGPT)."""
    if fmt == "hf":
        import datasets

        ds = datasets.load_from_disk(str(src))
        return sum(ds.num_rows.values()) if isinstance(ds, datasets.DatasetDict) else ds.num_rows
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return sum(pq.ParquetFile(f).metadata.num_rows for f in (src.rglob("*.parquet") if src.is_dir() else [src]))
    return None if fmt == "sharegpt" and src.suffix == ".json" else count_lines(src)


def _train_first(p: Path) -> tuple[int, str]:
    return (0 if p.name.startswith("train") else 1, str(p))


def _to_dialogue(rec: Any, fmt: str, where: str, sidecar: dict[str, Any] | None) -> dict[str, Any]:
    if isinstance(rec, Exception):
        raise rec
    if not isinstance(rec, dict):
        raise ValueError("not a JSON object")
    if fmt == "ultrachat":
        d = {**rec, "id": str(rec.get("id", ""))} if "id" in rec else rec
        if reason := validate_dialogue(d):
            raise ValueError(reason)
        return d
    if fmt in ("hf", "parquet"):
        meta = json.loads(rec["meta"]) if rec.get("meta") else None
        if meta is None and "meta" not in rec:  # UltraChat 200k itself: remember where each row came from
            meta = {"source_split": rec["_split"]}
        return from_messages(rec.get("messages") or [], str(rec.get("id") or rec.get("prompt_id") or where), meta)
    if fmt == "sharegpt":
        return from_messages(rec.get("conversations") or [], str(rec.get("id", where)), rec.get("meta"),
                             "from", "value")
    side = sidecar or {}
    return from_messages(rec.get("messages") or [], str(side.get("id", where)), side.get("meta"))


def import_corpus(src: Path, out: Path, fmt: str | None = None, skip_invalid: bool = False,
                  progress: bool = True, overwrite: bool | None = None) -> dict[str, Any]:
    """Read ``src`` (any export format, or released UltraChat files) into UltraChat JSONL at ``out``.

    A record that cannot be converted stops the import with its location and reason; with
    ``skip_invalid`` it goes to ``<out stem>.invalid.jsonl`` instead. An existing ``out`` is
    refused unless ``overwrite``; it is replaced only once the new file is complete.
    """
    src, out = Path(src), Path(out)
    if not src.exists():
        raise FileNotFoundError(f"{src}: no such file or folder")
    refuse_existing(out, overwrite)
    fmt = fmt or detect_format(src)
    sidecar_path = src.with_name(src.stem + ".meta.jsonl")
    side = open(sidecar_path, encoding="utf-8") if fmt == "openai" and sidecar_path.exists() else None  # noqa: SIM115
    writer = OutputDir(out.parent, inputs=[src, sidecar_path], overwrite=True)  # out itself was checked above
    try:
        with writer, make_progress(progress) as bar:
            task = bar.add_task("import", total=_total(src, fmt))
            writer.touch(out.name)
            for where, rec in _rows(src, fmt):
                extra = json.loads(side.readline() or "{}") if side else None
                try:
                    d = _to_dialogue(rec, fmt, where, extra)
                except (ValueError, KeyError, TypeError) as exc:
                    if not skip_invalid:
                        raise ValueError(f"{where}: {exc}") from None
                    writer.write(f"{out.stem}.invalid.jsonl", {"where": where, "reason": str(exc)})
                    continue
                writer.write(out.name, d)
                bar.advance(task)
    finally:
        if side:
            side.close()
    return {"input": str(src), "format": fmt, "out": str(out), "dialogues": writer.counts[out.name],
            "invalid": writer.counts.get(f"{out.stem}.invalid.jsonl", 0)}
