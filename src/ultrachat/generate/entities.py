"""Sector 1b, common real-world entities.

entities -> ``meta_per_entity`` meta questions each -> per meta question
``specific_per_meta`` specific and ``general_per_meta`` general (extended) questions ->
quota sampling across the three kinds (default ratio 200k specific : 250k general : 50k
meta, scaled to the requested total) -> one 3-7 round dialogue per question.

Entities come from the recipe (a list, or a TXT / CSV / JSONL file with one entity a row
and optional ``type`` / ``description`` columns) or from the bundled list. Planning is lazy
and in waves, like the world sector: only as many entities and meta questions are expanded
as the quotas need after deduplication.
"""

from __future__ import annotations

import asyncio
import csv
import json
import math
import random
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ..data.jsonl import InvalidLine
from .lists import clean_items, dedupe, normalize, parse_list
from .sector import Opening, PlanContext, Sector, stable_seed

KINDS = ("specific", "general", "meta")
def house_quotas(n: int, weights: dict[str, float]) -> dict[str, int]:
    """Split ``n`` in proportion to ``weights``, one unit at a time (Sainte-Laguë).

    Each share never shrinks when ``n`` grows, so a larger run extends a smaller one.

    >>> house_quotas(10, {"specific": 200, "general": 250, "meta": 50})
    {'specific': 4, 'general': 5, 'meta': 1}
    """
    counts = dict.fromkeys(weights, 0)
    live = [k for k, w in weights.items() if w > 0]
    for _ in range(n):
        best = max(live, key=lambda k: weights[k] / (2 * counts[k] + 1))
        counts[best] += 1
    return counts


def round_robin(items: list[dict[str, Any]], n: int, group: str) -> list[dict[str, Any]]:
    """Pick ``n`` items, alternating across values of ``group`` so small runs still vary."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for item in items:
        groups[item[group]].append(item)
    queues = list(groups.values())
    out: list[dict[str, Any]] = []
    while len(out) < n and any(queues):
        for q in queues:
            if q and len(out) < n:
                out.append(q.pop(0))
    return out


@dataclass(frozen=True)
class Entity:
    name: str
    type: str = ""
    description: str = ""


def _entity_from_row(row: dict[str, Any], where: str) -> Entity:
    name = str(row.get("name") or row.get("entity") or "").strip()
    if not name:
        raise InvalidLine(f"{where}: no entity name (expected a 'name' field)")
    return Entity(name, str(row.get("type") or "").strip(), str(row.get("description") or "").strip())


def jsonl_rows(path: Path, fh: Iterable[str]) -> Iterator[tuple[int, Any]]:
    """``(line number, value)`` of each non-blank JSON line; bad JSON raises ``file:line``."""
    for no, raw in enumerate(fh, 1):
        if not raw.strip():
            continue
        try:
            yield no, json.loads(raw)
        except json.JSONDecodeError as exc:
            raise InvalidLine(f"{path}:{no}: invalid JSON ({exc.msg} at column {exc.colno})") from None


def read_entities(path: str | Path) -> list[Entity]:
    """Entities from a TXT (one name a line, '#' comments), CSV (header with ``name``,
    optional ``type``, ``description``) or JSONL file (objects with the same fields, or
    strings). Bad rows raise :class:`InvalidLine` naming ``file:line``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: entities file not found")
    suffix = path.suffix.lower()
    out: list[Entity] = []
    with open(path, encoding="utf-8", newline="") as fh:
        if suffix == ".csv":
            reader = csv.DictReader(fh)
            fields = [f.strip().lower() for f in reader.fieldnames or []]
            if "name" not in fields and "entity" not in fields:
                raise InvalidLine(f"{path}:1: the CSV header needs a 'name' column (optional: type, description)")
            reader.fieldnames = fields
            for row in reader:
                if any((v or "").strip() for v in row.values() if isinstance(v, str)):
                    out.append(_entity_from_row(row, f"{path}:{reader.line_num}"))
        elif suffix in (".jsonl", ".json", ".ndjson"):
            for no, obj in jsonl_rows(path, fh):
                if isinstance(obj, str):
                    obj = {"name": obj}
                if not isinstance(obj, dict):
                    raise InvalidLine(f"{path}:{no}: expected an object with 'name' (or a string)")
                out.append(_entity_from_row(obj, f"{path}:{no}"))
        else:
            out = [Entity(line.strip()) for line in fh if line.strip() and not line.lstrip().startswith("#")]
    if not out:
        raise InvalidLine(f"{path}:1: no entities in the file")
    return out


def builtin_entities(language: str) -> list[Entity]:
    """The bundled list of well-known entities for ``language``."""
    text = (resources.files("ultrachat.resources") / language / "entities.csv").read_text(encoding="utf-8")
    return [_entity_from_row(row, "entities.csv") for row in csv.DictReader(text.splitlines())]


class _Pool:
    """Questions known so far, per kind, in a deterministic order."""

    def __init__(self) -> None:
        self.entities_done = 0
        self.metas: list[dict[str, Any]] = []
        self.expanded = {"specific": 0, "general": 0}
        self.items: dict[str, list[dict[str, Any]]] = {k: [] for k in KINDS}
        self.seen: set[str] = set()

    def add(self, kind: str, texts: list[str], base: dict[str, Any]) -> list[dict[str, Any]]:
        new = [{**base, "text": t, "kind": kind} for t in dedupe(texts, self.seen)]
        self.items[kind] += new
        return new


class EntitiesSector(Sector):
    """Common real-world entities: entity -> meta questions -> specific and general questions -> 3-7 rounds."""

    name = "entities"
    rounds = (3, 7)
    distribution_keys = ("kind", "entity_type")

    def entities(self) -> list[Entity]:
        cfg = self.recipe.entities
        if cfg.entities:
            found = [Entity(e) for e in cfg.entities]
        elif cfg.entities_file:
            found = read_entities(cfg.entities_file)
        else:
            found = builtin_entities(self.recipe.language)
        seen: set[str] = set()
        unique = [e for e in found if normalize(e.name) not in seen and not seen.add(normalize(e.name))]
        random.Random(stable_seed(self.recipe.seed, "entities")).shuffle(unique)
        return unique

    def quotas(self, dialogues: int) -> dict[str, int]:
        return house_quotas(dialogues, self.recipe.entities.ratio.model_dump())

    def _id(self, kind: str, k: int) -> str:
        return f"entities-s{self.recipe.seed}-{kind}-{k:06d}"

    def wanted(self, openings: list[Opening], dialogues: int) -> list[Opening]:
        quota = self.quotas(dialogues)
        return [op for op in openings if int(op.meta["k"]) < quota[op.meta["kind"]]]

    async def plan(self, ctx: PlanContext, dialogues: int, assigned: list[Opening]) -> list[Opening]:
        cfg = self.recipe.entities
        entities = self.entities()
        quota = self.quotas(dialogues)
        have = {k: sum(op.meta["kind"] == k for op in assigned) for k in KINDS}
        need = {k: quota[k] - have[k] for k in KINDS}
        used = {normalize(op.text) for op in assigned}
        pool = _Pool()

        def available(kind: str) -> list[dict[str, Any]]:
            return [q for q in pool.items[kind] if normalize(q["text"]) not in used]

        per_call = {"meta": cfg.meta_per_entity, "specific": cfg.specific_per_meta, "general": cfg.general_per_meta}
        for _wave in range(cfg.max_plan_waves):
            deficit = {k: need[k] - len(available(k)) for k in KINDS}
            if all(d <= 0 for d in deficit.values()):
                break
            # (kind, base meta, pending call): results are applied in this order, whatever
            # order the calls finish in, so the plan is the same on every run.
            jobs: list[tuple[str, dict[str, Any], Any]] = []
            # Expand more meta questions into specific / general ones, about half a call's
            # worth of questions per missing one (dedupe and filtering lose some).
            starved = False
            for kind in ("specific", "general"):
                if deficit[kind] <= 0:
                    continue
                start = pool.expanded[kind]
                take = pool.metas[start:start + math.ceil(deficit[kind] / max(1, per_call[kind] // 2))]
                pool.expanded[kind] += len(take)
                starved |= not take
                jobs += [(kind, {"entity": m["entity"], "entity_type": m["entity_type"], "meta_question": m["text"]},
                          self._children(ctx, kind, m)) for m in take]
            if deficit["meta"] > 0 or starved:
                want = max(1, math.ceil(max(deficit["meta"], 0) / max(1, per_call["meta"] // 2)))
                take_e = entities[pool.entities_done:pool.entities_done + want]
                pool.entities_done += len(take_e)
                jobs += [("meta", {"entity": e.name, "entity_type": e.type or "-"}, self._metas(ctx, e))
                         for e in take_e]
            if not jobs:
                break
            replies = await asyncio.gather(*(job for _, _, job in jobs))
            for (kind, base, _), texts in zip(jobs, replies, strict=True):
                added = pool.add(kind, texts, base)
                if kind == "meta":
                    pool.metas += added
        new: list[Opening] = []
        for kind in KINDS:
            chosen = round_robin(available(kind), max(0, need[kind]), "entity")
            for i, q in enumerate(chosen):
                k = have[kind] + i
                meta = {key: v for key, v in q.items() if key != "text"}
                new.append(self.make_opening(self._id(kind, k), q["text"], {**meta, "k": k}))
        return new

    def _details(self, entity: Entity) -> str:
        info = "; ".join(x for x in (entity.type, entity.description) if x)
        return self.prompts.render("entities", "entity", "details", info=info) if info else ""

    async def _ask(self, ctx: PlanContext, stage: str, key: str, n: int, **values: Any) -> list[str]:
        prompt = self.prompts.render("entities", stage, n=n, **values)
        text = await ctx.call(stage, key, prompt, stable_seed(self.recipe.seed, key))
        return clean_items(parse_list(text, n), question=True)

    async def _metas(self, ctx: PlanContext, entity: Entity) -> list[str]:
        return await self._ask(ctx, "meta", f"meta|{normalize(entity.name)}", self.recipe.entities.meta_per_entity,
                               entity=entity.name, details=self._details(entity))

    async def _children(self, ctx: PlanContext, kind: str, meta_q: dict[str, Any]) -> list[str]:
        cfg = self.recipe.entities
        n = cfg.specific_per_meta if kind == "specific" else cfg.general_per_meta
        key = f"{kind}|{normalize(meta_q['entity'])}|{normalize(meta_q['text'])}"
        return await self._ask(ctx, kind, key, n, entity=meta_q["entity"], meta_question=meta_q["text"])
