"""``ultrachat generate all``: a mixed run over several sectors, one progress display.

The ``[mix]`` recipe table names the sectors and each one's quota (a count, or a share of
``dialogues``; equal shares when nothing is given) and models (fields merged over the
recipe's ``[models]``). Each sector runs into ``<out>/<sector>/`` exactly as
``generate <sector>`` would (same ids, fingerprint, lock and resume). The sectors run at
the same time on one set of backends, so the embedded model's micro-batcher batches calls
of every sector together; ``max_total_tokens`` is split over the sectors in proportion to
their quotas. Then every sector's dialogues are merged into ``<out>/all.jsonl``.

Example recipe::

    dialogues = 100
    [mix.sectors.world]
    share = 2
    [mix.sectors.writing]
    share = 1
    [mix.sectors.materials]
    dialogues = 10
    [mix.sectors.writing.models.assistant]
    max_tokens = 512
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.table import Table

from .. import aio
from ..backends import Backend, BackendPool
from ..backends.config import ModelConfig
from ..core.progress import RunProgress
from ..recipe import MixConfig, MixSector, Models, Recipe
from .entities import house_quotas
from .runner import SECTORS, RunSummary, generate_async

MERGED = "all.jsonl"


def _merge_models(base: Models, overrides: Mapping[Any, ModelConfig]) -> Models:
    """``base`` with each role's override fields (only those the recipe set) applied."""
    data = base.model_dump()
    for role, cfg in overrides.items():
        start = data[role] if data.get(role) else base.planner_config().model_dump()
        if {"backend", "model"} & cfg.model_fields_set and "profile" not in cfg.model_fields_set:
            # Another model: its profile and caps follow it, not the base role's.
            start = {k: v for k, v in start.items() if k not in ("profile", "max_tokens")}
        data[role] = {**start, **cfg.model_dump(include=cfg.model_fields_set)}
    return Models.model_validate(data)


def sector_recipes(recipe: Recipe) -> list[tuple[str, Recipe]]:
    """The per-sector recipes of a mixed run, in ``[mix]`` order (default: every sector).

    >>> [(n, r.dialogues) for n, r in sector_recipes(Recipe(dialogues=8))]
    [('world', 2), ('entities', 2), ('writing', 2), ('materials', 2)]
    """
    chosen = recipe.mix.sectors or {name: MixSector() for name in SECTORS}
    unknown = [n for n in chosen if n not in SECTORS]
    if unknown:
        raise ValueError(f"mix.sectors: unknown sector '{unknown[0]}' (choose from {', '.join(SECTORS)})")
    shared = {n: (s.share if s.share is not None else 1.0) for n, s in chosen.items() if s.dialogues is None}
    counts = {n: s.dialogues for n, s in chosen.items() if s.dialogues is not None}
    if shared:
        counts.update(house_quotas(recipe.dialogues, shared) if sum(shared.values()) > 0 else dict.fromkeys(shared, 0))
    root = recipe.out_dir("all")
    out = []
    for name, part in chosen.items():
        if counts[name] <= 0:
            continue
        update: dict[str, Any] = {"dialogues": counts[name], "out": str(root / name), "mix": MixConfig()}
        if part.models:
            # Validated again: dialogue settings the recipe left unset follow this sector's profiles.
            data = {**recipe.model_dump(exclude_unset=True), "dialogues": counts[name], "out": str(root / name),
                    "mix": {}, "models": _merge_models(recipe.models, part.models).model_dump(exclude_none=True)}
            out.append((name, Recipe.model_validate(data)))
            continue
        out.append((name, recipe.model_copy(update=update)))
    if not out:
        raise ValueError("mix: every sector has a quota of 0 dialogues")
    return out


class _SectorBars(RunProgress):
    """One sector's view of the shared display: its stages are named ``sector/stage``."""

    def __init__(self, shared: RunProgress, sector: str) -> None:  # the shared display owns the bars
        self.shared = shared
        self.sector = sector
        self.status = None

    def add_total(self, stage: str, n: int) -> None:
        self.shared.add_total(f"{self.sector}/{stage}", n)

    def advance(self, stage: str, n: int = 1, tokens: int = 0) -> None:
        self.shared.status = self.status
        self.shared.advance(f"{self.sector}/{stage}", n, tokens)


@dataclass
class MixSummary:
    root: Path
    merged: Path
    merged_dialogues: int = 0
    sectors: list[RunSummary] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def table(self) -> Group:
        t = Table(title="ultrachat generate all", show_header=True)
        for col in ("sector", "output", "written now", "earlier", "planned", "tokens"):
            t.add_column(col)
        for s in self.sectors:
            tokens = s.plan_tokens + sum(u.total_tokens for u in s.stats.usage.values())
            t.add_row(s.sector, str(s.output), str(s.stats.dialogues), str(s.already_done),
                      f"{s.planned}/{s.requested}", f"{tokens:,}")
        t.add_row("all", str(self.merged), "", "", str(self.merged_dialogues), "")
        notes = Table.grid()
        for note in self.notes:
            notes.add_row(f"note: {note}")
        return Group(*(s.table() for s in self.sectors), t, notes)


def merge_outputs(target: Path, parts: list[Path]) -> int:
    """Concatenate the sector outputs into ``target`` (streamed; renamed into place at the end)."""
    tmp = target.with_name(target.name + ".part")
    lines = 0
    with open(tmp, "w", encoding="utf-8") as out:
        for part in parts:
            if not part.exists():
                continue
            with open(part, encoding="utf-8") as fh:
                for line in fh:
                    if line.endswith("\n"):  # a torn last line of a killed run is not a dialogue
                        out.write(line)
                        lines += 1
        out.flush()
        os.fsync(out.fileno())
    tmp.replace(target)
    return lines


class _SharedPool(BackendPool):
    """One set of backends for every sector of the mix. Each sector's run closes its pool
    when it ends; this one stays open for the others until the mix closes it."""

    async def close(self) -> None:
        return None

    async def close_shared(self) -> None:
        await super().close()


class _Borrowed(_SharedPool):
    """A caller's pool shared by every sector: its backends, opened and closed once."""

    def __init__(self, inner: BackendPool) -> None:
        super().__init__()
        self.inner = inner

    def get(self, cfg: ModelConfig) -> Backend:
        return self.inner.get(cfg)

    async def start(self) -> None:
        await self.inner.start()

    async def close_shared(self) -> None:
        await self.inner.close()


async def generate_all_async(recipe: Recipe, progress: bool = True, console: Console | None = None,
                             plan_only: bool = False, pool: BackendPool | None = None) -> MixSummary:
    """Run every sector of the mix at once under one progress display, then merge
    (``plan_only``: plan every sector, write their opening lines, no dialogue, no merge;
    ``pool``: backends replacing the recipe's, kept open for every sector, as benchmarks use)."""
    parts = sector_recipes(recipe)
    root = recipe.out_dir("all")
    root.mkdir(parents=True, exist_ok=True)
    summary = MixSummary(root, root / MERGED)
    if recipe.max_total_tokens:
        total = sum(sub.dialogues for _, sub in parts)
        parts = [(name, sub.model_copy(update={"max_total_tokens": max(1, recipe.max_total_tokens * sub.dialogues
                                                                          // total)}))
                 for name, sub in parts]
    shared = _SharedPool(recipe.cache_path()) if pool is None else _Borrowed(pool)
    try:
        with RunProgress(progress, console) as bars:
            runs = [generate_async(name, sub, progress, console, pool=shared, bars=_SectorBars(bars, name),
                                   plan_only=plan_only) for name, sub in parts]
            summary.sectors = list(await asyncio.gather(*runs))
    finally:
        await shared.close_shared()
    if plan_only:
        planned = sum(s.planned for s in summary.sectors)
        summary.notes.append(f"plan only: {planned:,} opening lines in the sectors' plan/openings.jsonl; "
                             f"{summary.merged} is not written")
        return summary
    outputs = [Path(sub.out_dir(name)) / "dialogues.jsonl" for name, sub in parts]
    summary.merged_dialogues = merge_outputs(summary.merged, outputs)
    return summary


def generate_all(recipe: Recipe, progress: bool = True, console: Console | None = None,
                 plan_only: bool = False) -> MixSummary:
    """Synchronous wrapper of :func:`generate_all_async`."""
    return aio.run(generate_all_async(recipe, progress, console, plan_only))
