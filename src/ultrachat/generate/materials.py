"""Sector 3, Assistance on Existent Materials.

passages streamed from the user's corpus (JSONL, Parquet or plain-text files, or a Hugging
Face dataset streamed from the hub) -> selected by length bounds, deduplication and a seeded
sample rate -> up to 5 instructions per passage spanning rewriting, continuation,
summarisation, inference, question answering and translation -> each combined with its
passage by one of the editable templates (``prompts/<lang>/materials.toml``) -> one 2-4
round dialogue each, in which the user keeps referring to the material.

Nothing is loaded whole: passages are read one at a time and only as many as the requested
dialogues need. Passage ``p``'s instruction slot ``j`` becomes dialogue
``materials-s<seed>-p<p>-<j>``; a larger ``--dialogues`` reads further into the corpus.
"""

from __future__ import annotations

import glob
import hashlib
import itertools
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ..data.jsonl import InvalidLine
from ..prompts import PromptError
from ..recipe import MaterialsConfig
from .compact import HashIndex
from .entities import jsonl_rows
from .lists import clean_items, normalize, parse_list
from .sector import Assigned, Opening, PlanContext, Sector, ordered_map, stable_seed

PASSAGE_HEAD_CHARS = 160  # of the passage, quoted in the user simulator's goal


@dataclass(frozen=True)
class Passage:
    text: str
    source: str  # file:line (or dataset:row) it came from


def _jsonl_passages(path: Path, field: str) -> Iterator[Passage]:
    with open(path, encoding="utf-8") as fh:
        for no, obj in jsonl_rows(path, fh):
            text = obj if isinstance(obj, str) else obj.get(field) if isinstance(obj, dict) else None
            if not isinstance(text, str):
                raise InvalidLine(f"{path}:{no}: no text field '{field}' (set materials.text_field)")
            yield Passage(text.strip(), f"{path}:{no}")


def _parquet_passages(path: Path, field: str) -> Iterator[Passage]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
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
    start = 1
    with open(path, encoding="utf-8") as fh:
        for no, line in enumerate(fh, 1):
            if line.strip():
                parts.append(line.strip())
                continue
            if parts and sum(map(len, parts)) >= min_chars:
                yield Passage(" ".join(parts), f"{path}:{start}")
                parts, start = [], no + 1
            elif not parts:
                start = no + 1
    if parts:
        yield Passage(" ".join(parts), f"{path}:{start}")


def _dataset_passages(cfg: MaterialsConfig) -> Iterator[Passage]:
    try:
        from datasets import load_dataset

        stream = load_dataset(cfg.dataset, cfg.dataset_config, split=cfg.split, streaming=True)
        rows = iter(stream)
        first = next(rows, None)
    except Exception as exc:  # the hub client raises many kinds when offline or misnamed
        raise ValueError(f"materials.dataset: cannot stream '{cfg.dataset}' from the Hugging Face hub "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}); "
                         "the hub must be reachable, or use materials.files with local JSONL/Parquet/text") from None
    for i, row in enumerate(itertools.chain([first] if first is not None else [], rows), 1):
        yield Passage(str(row.get(cfg.text_field, "")).strip(), f"{cfg.dataset}:row {i}")


def source_files(cfg: MaterialsConfig, language: str) -> list[Path]:
    """The corpus files the recipe names (globs expanded, sorted), or the bundled sample."""
    if not cfg.files:
        return [Path(str(resources.files("ultrachat.resources") / language / "sample_passages.jsonl"))]
    out: list[Path] = []
    for pattern in cfg.files:
        matches = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
        if not matches or not Path(matches[0]).exists():
            raise FileNotFoundError(f"materials.files: no file matches '{pattern}'")
        out += [Path(m) for m in matches if Path(m).is_file()]
    return out


def raw_passages(cfg: MaterialsConfig, language: str) -> Iterator[Passage]:
    """Every passage of the corpus in order, streamed."""
    if cfg.dataset:
        yield from _dataset_passages(cfg)
        return
    for path in source_files(cfg, language):
        suffix = path.suffix.lower()
        if suffix in (".jsonl", ".json", ".ndjson"):
            yield from _jsonl_passages(path, cfg.text_field)
        elif suffix == ".parquet":
            yield from _parquet_passages(path, cfg.text_field)
        else:
            yield from _text_passages(path, cfg.min_chars)


def select_passages(cfg: MaterialsConfig, language: str, seed: int) -> Iterator[Passage]:
    """Passages within the length bounds, first occurrence of each (after normalisation),
    kept with probability ``sample_rate`` decided by a seeded hash of the text."""
    seen = HashIndex()  # 8 bytes a passage
    for passage in raw_passages(cfg, language):
        if not cfg.min_chars <= len(passage.text) <= cfg.max_chars:
            continue
        digest = hashlib.blake2b(normalize(passage.text).encode(), digest_size=12).digest()
        if not seen.add(int.from_bytes(digest[:8], "little")):
            continue
        if cfg.sample_rate < 1.0 and stable_seed(seed, digest.hex()) / 2**63 >= cfg.sample_rate:
            continue
        yield passage


class MaterialsSector(Sector):
    """Assistance on Existent Materials: passages -> instructions -> templated openings -> 2-4 rounds."""

    name = "materials"
    rounds = (2, 4)
    distribution_keys = ("task", "template")

    def templates(self) -> list[tuple[str, str]]:
        """(name, template) pairs in play, in a seeded order."""
        names = [n.strip() for n in self.prompts.get("materials", "templates", "use").split(",") if n.strip()]
        out = [(n, self.prompts.get("materials", "templates", n)) for n in names]
        random.Random(stable_seed(self.recipe.seed, "templates")).shuffle(out)
        return out

    def _id(self, p: int, j: int) -> str:
        return f"materials-s{self.recipe.seed}-p{p:06d}-{j}"

    def wanted(self, openings: Iterator[Opening], dialogues: int) -> Iterator[Opening]:
        """The first N openings by (passage, slot): the plan file holds them in that order."""
        last = (-1, -1)
        for op in itertools.islice(openings, dialogues):
            at = (int(op.meta["passage_index"]), int(op.meta["slot"]))
            if at <= last:
                raise RuntimeError(f"plan/openings.jsonl is out of passage order at {op.id}; "
                                   "plan again into a new --out folder")
            last = at
            yield op

    def task_of(self, p: int, j: int) -> str:
        tasks = self.recipe.materials.tasks
        return tasks[(p * self.recipe.materials.instructions_per_passage + j) % len(tasks)]

    async def plan(self, ctx: PlanContext, dialogues: int, assigned: Assigned) -> None:
        cfg = self.recipe.materials
        passages = select_passages(cfg, self.recipe.language, self.recipe.seed)
        templates = self.templates()
        planned = 0  # openings of the passages read so far, earlier runs' included
        p = 0

        async def instructions(item: tuple[int, Passage]) -> tuple[int, Passage, list[str]]:
            return item[0], item[1], await self._instructions(ctx, item[0], item[1])

        for _wave in range(64):
            missing = dialogues - planned
            if missing <= 0:
                break
            take = math.ceil(missing / cfg.instructions_per_passage)
            if cfg.max_passages:
                take = min(take, cfg.max_passages - p)
            batch = zip(itertools.count(p), itertools.islice(passages, take))  # read as the calls go
            read = 0
            async for i, passage, items in ordered_map(instructions, batch, ctx.window):
                openings = self._openings(i, passage, items, templates)
                planned += len(openings)
                ctx.emit([op for op in openings if op.id not in assigned])
                read += 1
            if not read:
                break
            p += read

    async def _instructions(self, ctx: PlanContext, p: int, passage: Passage) -> list[str]:
        n = self.recipe.materials.instructions_per_passage
        tasks = "\n".join(self.prompts.render("materials", "instructions", "task_line", i=j + 1,
                                              task=self.prompts.get("materials", "tasks", self.task_of(p, j)))
                          for j in range(n))
        key = f"instructions|p{p}|{hashlib.blake2b(passage.text.encode(), digest_size=8).hexdigest()}"
        prompt = self.prompts.render("materials", "instructions", n=n, tasks=tasks, text=passage.text)
        reply = await ctx.call("instructions", key, prompt, stable_seed(self.recipe.seed, key))
        return clean_items(parse_list(reply, n), question=False, max_units=120)

    def _openings(self, p: int, passage: Passage, items: list[str],
                  templates: list[tuple[str, str]]) -> list[Opening]:
        out = []
        n = self.recipe.materials.instructions_per_passage
        for j, instruction in enumerate(items):
            name, template = templates[(p * n + j) % len(templates)]
            lc = instruction[:1].lower() + instruction[1:] if instruction[1:2].islower() else instruction
            try:
                text = template.format(text=passage.text, instruction=instruction, instruction_lc=lc).strip()
            except (KeyError, IndexError, ValueError) as exc:
                raise PromptError(f"materials template '{name}': bad placeholder ({exc}); use {{text}}, "
                                  "{instruction} or {instruction_lc}") from None
            meta: dict[str, Any] = {"task": self.task_of(p, j), "template": name, "instruction": instruction,
                                    "passage_index": p, "slot": j, "source": passage.source,
                                    "passage_head": passage.text[:PASSAGE_HEAD_CHARS]}
            out.append(self.make_opening(self._id(p, j), text, meta))
        return out
