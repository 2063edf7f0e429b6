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

import csv
import math
import random
from array import array
from collections.abc import Awaitable, Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ..core.corpus import InvalidLine, json_values, read_text_file
from ..core.hashing import HashIndex, TextSpool, stable_seed
from ..core.text import clean_items, normalize, parse_list
from .planning import EMIT_BATCH, Assigned, PlanContext, ordered_map, round_robin
from .sector import Opening, Sector

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


def read_entities(path: str | Path) -> list[Entity]:
    """Entities from a TXT (one name a line, '#' comments), CSV (header with ``name``,
    optional ``type``, ``description``) or JSONL file (objects with the same fields, or
    strings). Bad rows raise :class:`InvalidLine` naming ``file:line``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: entities file not found")
    suffix = path.suffix.lower()
    out: list[Entity] = []
    read_text_file(path)  # bytes that are not UTF-8: an error naming file:line, before any parsing
    with open(path, encoding="utf-8-sig", newline="") as fh:
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
            for no, obj in json_values(path, fh):
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
    """Questions known so far, per kind, in a deterministic order. Compact: texts wait in
    a spool file; a question costs its spool index, the index of its meta question (or
    entity), a usable flag and a 64-bit hash of its normalised text."""

    def __init__(self, spool: TextSpool, used: Callable[[str], bool]) -> None:
        self.texts = spool
        self.used = used
        self.entities_done = 0
        self.expanded = {"specific": 0, "general": 0}
        self.text = {k: array("Q") for k in KINDS}  # spool index per question
        self.base = {k: array("Q") for k in KINDS}  # meta question index (entity index for metas)
        self.usable = {k: bytearray() for k in KINDS}
        self.available = dict.fromkeys(KINDS, 0)
        self.seen = HashIndex()

    def add(self, kind: str, texts: list[str], base: int) -> None:
        new = [t for t in texts if (key := normalize(t)) and self.seen.add(key)]
        for i, text in zip(self.texts.extend(new), new, strict=True):
            self.text[kind].append(i)
            self.base[kind].append(base)
            ok = not self.used(text)
            self.usable[kind].append(ok)
            self.available[kind] += ok


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
        firsts: dict[str, Entity] = {}
        for e in found:
            firsts.setdefault(normalize(e.name), e)
        unique = list(firsts.values())
        random.Random(stable_seed(self.recipe.seed, "entities")).shuffle(unique)
        return unique

    def quotas(self, dialogues: int) -> dict[str, int]:
        return house_quotas(dialogues, self.recipe.entities.ratio.model_dump())

    def _id(self, kind: str, k: int) -> str:
        return f"entities-s{self.recipe.seed}-{kind}-{k:06d}"

    def plan_group(self, opening: Opening) -> str:
        return str(opening.meta["kind"])

    def wanted(self, openings: Iterator[Opening], dialogues: int) -> Iterator[Opening]:
        quota = self.quotas(dialogues)
        return (op for op in openings if int(op.meta["k"]) < quota[op.meta["kind"]])

    async def plan(self, ctx: PlanContext, dialogues: int, assigned: Assigned) -> None:
        entities = self.entities()
        quota = self.quotas(dialogues)
        have = {k: assigned.count(k) for k in KINDS}

        def used(text: str) -> bool:
            return any(assigned.has_text(k, text) for k in KINDS)

        cut = assigned.pending.get(self.name)
        if cut:  # a kill cut the openings short: redo that plan, write only its rest
            start, end = cut["from"], cut["quota"]
            skip = {k: have[k] - start[k] for k in KINDS}
            have, picked = await self._plan_round(ctx, entities, start, end, skip, used)
            if all(quota[k] <= end[k] for k in KINDS):
                return

            # the rerun widens `used` by the redone plan's picks (same call signature)
            def used(text: str, earlier: Callable[[str], bool] = used) -> bool:  # type: ignore[misc]
                return earlier(text) or normalize(text) in picked

        await self._plan_round(ctx, entities, have, quota, dict.fromkeys(KINDS, 0), used)

    async def _plan_round(self, ctx: PlanContext, entities: list[Entity], start: dict[str, int],
                          quota: dict[str, int], skip: dict[str, int],
                          used: Callable[[str], bool]) -> tuple[dict[str, int], HashIndex]:
        """Plan openings ``start[kind] <= k < quota[kind]`` from questions not ``used``; write
        all but the first ``skip[kind]`` of each kind (a cut run wrote them). Returns the
        count of each kind after it and the picks' text hashes."""
        need = {k: quota[k] - start[k] for k in KINDS}
        ctx.begin(self.name, start, quota)
        counts, picked = dict(start), HashIndex()
        with closing(ctx.spool()) as spool:
            pool = _Pool(spool, used)
            await self._fill(ctx, entities, pool, need)
            for kind in KINDS:
                self._emit(ctx, entities, pool, kind, start[kind], need[kind], skip[kind], counts, picked)
        ctx.end(self.name)
        return counts, picked

    async def _fill(self, ctx: PlanContext, entities: list[Entity], pool: _Pool, need: dict[str, int]) -> None:
        """Ask for questions in waves until the pool holds ``need`` usable ones of each kind
        (or ``max_plan_waves`` runs out)."""
        cfg = self.recipe.entities
        metas = pool.text["meta"], pool.base["meta"]  # meta question -> (spool index, entity index)
        for _wave in range(cfg.max_plan_waves):
            deficit = {k: need[k] - pool.available[k] for k in KINDS}
            if all(d <= 0 for d in deficit.values()):
                break
            jobs = self._wave_jobs(pool, deficit, len(entities))
            if not jobs:
                break

            def ask(job: tuple[str, int]) -> Awaitable[list[str]]:
                kind, ref = job
                if kind == "meta":
                    return self._metas(ctx, entities[ref])
                entity = entities[metas[1][ref]]
                return self._children(ctx, kind, entity.name, pool.texts[metas[0][ref]])

            done = 0
            async for texts in ordered_map(ask, jobs, ctx.window):  # applied in job order
                kind, ref = jobs[done]
                pool.add(kind, texts, ref)
                done += 1

    def _wave_jobs(self, pool: _Pool, deficit: dict[str, int], n_entities: int) -> list[tuple[str, int]]:
        """The calls of one wave as ``(kind, meta question or entity index)``: results are
        applied in this order, whatever order the calls finish in, so the plan is the same on
        every run."""
        cfg = self.recipe.entities
        per_call = {"meta": cfg.meta_per_entity, "specific": cfg.specific_per_meta, "general": cfg.general_per_meta}
        jobs: list[tuple[str, int]] = []
        # Expand more meta questions into specific / general ones, about half a call's
        # worth of questions per missing one (dedupe and filtering lose some).
        starved = False
        for kind in ("specific", "general"):
            if deficit[kind] <= 0:
                continue
            first = pool.expanded[kind]
            step = math.ceil(deficit[kind] / max(1, per_call[kind] // 2))
            take = range(first, min(len(pool.text["meta"]), first + step))
            pool.expanded[kind] += len(take)
            starved |= not take
            jobs += [(kind, m) for m in take]
        if deficit["meta"] > 0 or starved:
            want = max(1, math.ceil(max(deficit["meta"], 0) / max(1, per_call["meta"] // 2)))
            take_e = range(pool.entities_done, min(n_entities, pool.entities_done + want))
            pool.entities_done += len(take_e)
            jobs += [("meta", e) for e in take_e]
        return jobs

    def _emit(self, ctx: PlanContext, entities: list[Entity], pool: _Pool, kind: str, start: int, need: int,
              skip: int, counts: dict[str, int], picked: HashIndex) -> None:
        """Pick ``need`` usable questions of ``kind`` round-robin over their entities and write
        them as openings ``start, start + 1, ...``, but the first ``skip``."""
        metas = pool.text["meta"], pool.base["meta"]

        def entity_of(i: int) -> int:  # the entity a pooled question is about
            return pool.base[kind][i] if kind == "meta" else metas[1][pool.base[kind][i]]

        usable = (i for i, ok in enumerate(pool.usable[kind]) if ok)
        batch: list[Opening] = []
        for k, i in enumerate(round_robin(usable, max(0, need), key=lambda i: entities[entity_of(i)].name), start):
            text = pool.texts[pool.text[kind][i]]
            picked.add(normalize(text))
            counts[kind] += 1
            if k < start + skip:
                continue
            entity = entities[entity_of(i)]
            meta: dict[str, Any] = {"entity": entity.name, "entity_type": entity.type or "-"}
            if kind != "meta":
                meta["meta_question"] = pool.texts[metas[0][pool.base[kind][i]]]
            meta.update(kind=kind, k=k)
            batch.append(self.make_opening(self._id(kind, k), text, meta))
            if len(batch) >= EMIT_BATCH:
                ctx.emit(batch)
                batch = []
        ctx.emit(batch)

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

    async def _children(self, ctx: PlanContext, kind: str, entity: str, meta_question: str) -> list[str]:
        cfg = self.recipe.entities
        n = cfg.specific_per_meta if kind == "specific" else cfg.general_per_meta
        key = f"{kind}|{normalize(entity)}|{normalize(meta_question)}"
        return await self._ask(ctx, kind, key, n, entity=entity, meta_question=meta_question)
