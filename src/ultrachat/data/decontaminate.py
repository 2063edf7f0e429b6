"""Evaluation-set contamination check: ``ultrachat decontaminate IN --against FILE... --out DIR``.

A corpus turn is contaminated when it shares a word n-gram (13 by default, after the
same normalisation as dedup: lower case, punctuation dropped) with an evaluation prompt.
Prompts shorter than ``n`` words match only as a whole, and prompts under ``min_words``
are not checked (a 3-word prompt would match half of any corpus); the report counts them.

Evaluation sets: the shipped ``ultra_eval.json`` (``--against builtin``, the default) or
JSON / JSONL / Parquet files; ``--field`` picks the prompt (dotted path such as
``data.0`` or ``messages.0.content``), else the first of ``prompt``, ``instruction``,
``question``, ``turns``, ``input``, ``text``, ``data.0``, ``data``, ``messages.0.content``
present. A field holding a list of strings (MT-bench's ``turns``) checks every one of them.

Outputs: ``matches.jsonl`` (dialogue id, turn, the shared n-gram, both texts),
``report.json``; with ``remove=True`` also ``kept.jsonl`` and ``removed.jsonl``.

Example::

    report = decontaminate(Path("dialogues.jsonl"), Path("decon"), [BUILTIN], remove=True)
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

from ..core.corpus import OutputDir, json_lines, parquet_rows, read_corpus
from ..core.hashing import digest
from ..core.text import words

BUILTIN = "builtin"
AUTO_FIELDS = ("prompt", "instruction", "question", "turns", "input", "text", "data.0", "data", "messages.0.content")


def _get(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if isinstance(obj, list) and part.isdigit() and int(part) < len(obj):
            obj = obj[int(part)]
        elif isinstance(obj, dict) and part in obj:
            obj = obj[part]
        else:
            return None
    return obj


def _records(path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(location, record)`` for each record of an evaluation file."""
    if path == BUILTIN:
        text = (resources.files("ultrachat.resources") / "ultra_eval.json").read_text(encoding="utf-8")
        for i, rec in enumerate(json.loads(text)):
            yield f"ultra_eval.json[{i}]", rec
        return
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such evaluation file")
    if p.suffix == ".parquet":
        yield from parquet_rows(p)
    elif p.suffix == ".jsonl":
        for where, rec in json_lines(p):
            if isinstance(rec, ValueError):
                raise ValueError(f"{where}: {rec}")
            yield where, rec
    else:
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{p}:{exc.lineno}: invalid JSON ({exc.msg})") from None
        if isinstance(data, dict):  # {"split": [records]} or {"data": [records]}
            data = next((v for v in data.values() if isinstance(v, list)), [data])
        for i, rec in enumerate(data):
            yield f"{p}[{i}]", rec


class EvalIndex:
    """Hashed n-grams of every evaluation prompt, mapped to the prompts that contain them."""

    def __init__(self, files: list[str], field: str | None = None, n: int = 13, min_words: int = 8) -> None:
        self.n, self.min_words = n, min_words
        self.prompts: list[dict[str, Any]] = []
        self.grams: dict[int, dict[bytes, list[int]]] = {}  # gram length -> hash -> prompt indices
        self.skipped_short = 0
        for file in files:
            for where, rec in _records(file):
                label = str(rec.get("class", rec.get("category", ""))).strip() if isinstance(rec, dict) else ""
                texts = self._prompts(rec, field, where)
                for t, text in enumerate(texts):
                    self._add(f"{where} turn {t + 1}" if len(texts) > 1 else where, label, text)

    def _add(self, source: str, label: str, text: str) -> None:
        toks = words(text)
        if len(toks) < self.min_words:
            self.skipped_short += 1
            return
        k = min(self.n, len(toks))
        idx = len(self.prompts)
        self.prompts.append({"source": source, "class": label, "text": text})
        table = self.grams.setdefault(k, {})
        for g in {_hash(toks[i:i + k]) for i in range(len(toks) - k + 1)}:
            table.setdefault(g, []).append(idx)

    @staticmethod
    def _prompts(rec: Any, field: str | None, where: str) -> list[str]:
        """The prompt texts of a record: a string field, or every string of a list field (MT-bench ``turns``)."""
        if isinstance(rec, str):
            return [rec]
        for f in [field] if field else AUTO_FIELDS:
            value = _get(rec, f)
            if isinstance(value, str):
                return [value]
            if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
                return list(value)
        wanted = f"field '{field}'" if field else f"any of the fields {', '.join(AUTO_FIELDS)}"
        raise ValueError(f"{where}: no text in {wanted}; choose one with --field")

    def matches(self, text: str) -> Iterator[tuple[int, str]]:
        """``(prompt index, shared n-gram)`` for each evaluation prompt ``text`` overlaps."""
        toks = words(text)
        found: set[int] = set()
        for k, table in self.grams.items():
            for i in range(len(toks) - k + 1):
                hit = table.get(_hash(toks[i:i + k]))
                if hit:
                    for idx in hit:
                        if idx not in found:
                            found.add(idx)
                            yield idx, " ".join(toks[i:i + k])


def _hash(toks: list[str]) -> bytes:
    return digest(" ".join(toks))


def decontaminate(path: Path, out_dir: Path, against: list[str] | None = None, field: str | None = None,
                  n: int = 13, min_words: int = 8, scope: str = "all", remove: bool = False,
                  skip_invalid: bool = False, progress: bool = True) -> dict[str, Any]:
    """Find (and with ``remove`` drop) dialogues overlapping the evaluation prompts."""
    if n < 1:
        raise ValueError("--ngram must be at least 1")
    index = EvalIndex(against or [BUILTIN], field, n, min_words)
    contaminated = 0
    with OutputDir(out_dir, inputs=[path, *(Path(a) for a in against or [] if a != BUILTIN)]) as out:
        out.touch("matches", *(("kept", "removed") if remove else ()))
        with read_corpus(path, "decontaminate", out, skip_invalid, progress) as dialogues:
            for d in dialogues:
                hits = []
                for t, turn in enumerate(d["data"]):
                    if scope == "user" and t % 2:
                        continue
                    for idx, gram in index.matches(turn):
                        prompt = index.prompts[idx]
                        hits.append(idx)
                        out.write("matches", {"id": d["id"], "turn": t, "ngram": gram, "text": turn,
                                              "eval_source": prompt["source"], "eval_class": prompt["class"],
                                              "eval_text": prompt["text"]})
                contaminated += bool(hits)
                if remove:
                    out.write("removed" if hits else "kept", d)
        report = {"input": str(path), "against": against or [BUILTIN], "ngram": n, "min_words": min_words,
                  "scope": scope, "eval_prompts": len(index.prompts), "eval_prompts_too_short": index.skipped_short,
                  "contaminated_dialogues": contaminated, "matches": out.counts["matches"],
                  "removed": out.counts.get("removed", 0), "invalid": out.counts.get("invalid", 0),
                  "outputs": {name: str(out.file(name)) for name in out.counts}}
        out.write_json("report.json", report)
    return report
