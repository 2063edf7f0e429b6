"""Run a sector end to end: plan (cached, resumable), generate dialogues, write, summarise.

The Python API behind ``ultrachat generate``::

    from ultrachat import load_recipe, generate
    summary = generate("world", load_recipe(overrides={"dialogues": 5}))
    print(summary.output, summary.stats.dialogues)
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from rich.console import Console
from rich.table import Table

from .. import aio
from ..backends import BackendPool, Usage
from ..backends.base import DIALOGUE
from ..core.hashing import HashIndex
from ..core.progress import RunProgress
from ..prompts import PromptError, Prompts, load_list
from ..recipe import Recipe
from .accounting import Ledger, write_report
from .budget import BudgetExhausted, TokenBudget
from .engine import DialogueEngine, EngineStats, Role
from .entities import EntitiesSector
from .group_commit import GroupCommit
from .materials import MaterialsSector
from .planning import Assigned, PlanContext
from .sector import Opening, Sector
from .store import RunStore
from .variety import describe as describe_variety
from .variety import measure as measure_variety
from .variety import stage_calls
from .world import WorldSector
from .writing import WritingSector

SECTORS: dict[str, type[Sector]] = {"world": WorldSector, "entities": EntitiesSector, "writing": WritingSector,
                                    "materials": MaterialsSector}


@dataclass
class RunSummary:
    sector: str
    output: Path
    planned: int
    requested: int
    already_done: int
    stats: EngineStats
    plan_tokens: int = 0
    seconds: float = 0.0
    budget_stopped: bool = False
    notes: list[str] = field(default_factory=list)
    # Dialogues in the output by each meta key the sector names in ``distribution_keys``.
    distribution: dict[str, Counter[str]] = field(default_factory=dict)
    # Distinct openings, subtopics, instructions... planned, next to what was asked (variety.py).
    variety: dict[str, dict[str, int]] = field(default_factory=dict)
    plan_only: bool = False

    def table(self) -> Table:
        s = self.stats
        t = Table(title=f"ultrachat generate {self.sector}", show_header=False)
        t.add_row("output", str(self.output))
        t.add_row("dialogues written now",
                  f"{s.dialogues} (earlier runs: {self.already_done}, planned: {self.planned}/{self.requested})")
        t.add_row("rounds", f"{s.rounds} (avg {s.rounds / s.dialogues:.2f})" if s.dialogues else "0")
        t.add_row("stop reasons", ", ".join(f"{k}={v}" for k, v in s.stop_reasons.most_common()) or "-")
        t.add_row("regenerations", ", ".join(f"{k}={v}" for k, v in s.regenerations.most_common()) or "0")
        rate = s.confounded / s.user_attempts if s.user_attempts else 0.0
        t.add_row("role confounding", f"{rate:.1%} of {s.user_attempts} user-turn attempts")
        t.add_row("truncated replies", str(s.truncated))
        tok = {k: u.total_tokens for k, u in s.usage.items()}
        t.add_row("tokens", f"plan {self.plan_tokens:,}, user {tok['user']:,}, assistant {tok['assistant']:,}")
        t.add_row("time", f"{self.seconds:.1f} s")
        if self.variety:
            t.add_row("distinct", describe_variety(self.variety))
        for key, counts in self.distribution.items():
            t.add_row(f"by {key}", ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
        for note in self.notes:
            t.add_row("note", note)
        return t


def build_sector(name: str, recipe: Recipe) -> Sector:
    if name not in SECTORS:
        raise ValueError(f"unknown sector '{name}' (choose from {', '.join(SECTORS)})")
    return SECTORS[name](recipe, Prompts(recipe.language, recipe.prompts_dir))


def _language_system(prompts: Prompts) -> str:
    """The prompt set's default assistant system prompt (``prompts/<lang>/assistant.toml``), if any."""
    try:
        return prompts.get("assistant", "assistant", "system")
    except PromptError:
        return ""


def build_engine(sector: Sector, recipe: Recipe, pool: BackendPool, ledger: Ledger,
                 stats: EngineStats) -> DialogueEngine:
    """The dialogue engine of ``recipe`` on ``pool``'s backends (each Ray worker builds one too)."""
    user = Role(ledger.meter(pool.get(recipe.models.user), "user", recipe.models.user), recipe.models.user)
    assistant = Role(ledger.meter(pool.get(recipe.models.assistant), "assistant", recipe.models.assistant),
                     recipe.models.assistant)
    if not assistant.cfg.system:  # e.g. Chinese prompts ask the assistant to answer in Chinese
        assistant.cfg = assistant.cfg.model_copy(update={"system": _language_system(sector.prompts)})
    personas = load_list("personas", recipe.language, recipe.dialogue.personas_file) \
        if recipe.dialogue.user_prompts == "persona" else []
    return DialogueEngine(sector, user, assistant, sector.prompts, recipe.dialogue, personas, stats)


class Openings(Protocol):
    """Openings to generate: iterable (a :class:`Todo` streams them from the plan file) with
    a known length. A plain list is one too."""

    def __iter__(self) -> Iterator[Opening]: ...

    def __len__(self) -> int: ...


class Todo:
    """The openings of this run not yet in ``dialogues.jsonl``, streamed from
    ``plan/openings.jsonl`` on each iteration; nothing per dialogue is kept in memory."""

    def __init__(self, sector: Sector, store: RunStore, dialogues: int, count: int) -> None:
        self.sector, self.store, self.dialogues, self.count = sector, store, dialogues, count

    def __iter__(self) -> Iterator[Opening]:
        done = self.store.done_ids()
        return (op for op in wanted_openings(self.sector, self.store, self.dialogues) if op.id not in done)

    def __len__(self) -> int:
        return self.count


def wanted_openings(sector: Sector, store: RunStore, dialogues: int) -> Iterator[Opening]:
    """The openings a run of ``dialogues`` turns into dialogues, streamed from the plan file."""
    return sector.wanted(store.load_openings(Opening), dialogues)


#: ``(engine, todo, store, bars, budget, concurrency) -> stopped by the budget``
DialogueRunner = Callable[[DialogueEngine, Openings, RunStore, RunProgress, TokenBudget, int], Awaitable[bool]]


async def generate_async(sector_name: str, recipe: Recipe, progress: bool = True,
                         console: Console | None = None, pool: BackendPool | None = None,
                         bars: RunProgress | None = None, dialogue_runner: DialogueRunner | None = None,
                         plan_only: bool = False) -> RunSummary:
    """Plan and generate ``recipe.dialogues`` dialogues of one sector into its output folder
    (``plan_only``: plan and write the opening lines, generate no dialogue).

    ``pool`` replaces the backends the recipe names (``ultrachat estimate`` simulates with it);
    ``bars`` is a progress display shared with other runs (``generate all``);
    ``dialogue_runner`` replaces the local dialogue loop (``--ray`` shards it over a cluster)."""
    started = time.monotonic()
    sector = build_sector(sector_name, recipe)
    out = recipe.out_dir(sector_name)
    pool = pool or BackendPool(recipe.cache_path())
    ledger = Ledger()  # tokens and cost per stage and model -> live display and report.json
    stats = EngineStats()
    engine = build_engine(sector, recipe, pool, ledger, stats)
    planner_cfg = recipe.models.planner_config()
    planner = ledger.meter(pool.get(planner_cfg), "plan", planner_cfg)
    budget = TokenBudget(recipe.max_total_tokens)
    summary = RunSummary(sector_name, out / "dialogues.jsonl", 0, recipe.dialogues, 0, stats)
    display = nullcontext(bars) if bars else RunProgress(progress, console)
    with RunStore(out, recipe, sector_name) as store, display as bars:
        bars.status = ledger.describe
        try:
            await pool.start()
            ctx = PlanContext(store, planner, planner_cfg, bars, budget, recipe.concurrency)
            done = await _plan(sector, recipe, store, ctx, summary)
            summary.plan_tokens = budget.usage.total_tokens
            if plan_only:
                summary.plan_only = True
                summary.notes.append(f"plan only: {summary.planned:,} opening lines in "
                                     f"{out / 'plan' / 'openings.jsonl'}; rerun without --plan-only to generate "
                                     "their dialogues")
            else:
                todo = Todo(sector, store, recipe.dialogues, summary.planned - summary.already_done)
                bars.add_total("dialogues", len(todo))
                summary.budget_stopped |= await (dialogue_runner or _run_dialogues)(
                    engine, todo, store, bars, budget, recipe.concurrency)
            if not plan_only:  # a plan-only run wrote no dialogue: no pass for the dialogues' spread
                summary.distribution = _distribution(sector, store, recipe.dialogues, done)
        finally:
            await pool.close()
        report = write_report(out, summary, ledger, time.monotonic() - started)
        summary.notes.append(f"model calls: {ledger.describe()}; details in {report}")
    if summary.budget_stopped:
        summary.notes.append(f"stopped at the token budget ({recipe.max_total_tokens:,}); rerun with a larger "
                             "--max-total-tokens to continue")
    if full := stats.stop_reasons["context_full"]:
        summary.notes.append(f"{full:,} dialogue(s) ended before their planned rounds with the model's context "
                             "window full (stop reason context_full); a longer context_length or fewer rounds "
                             "keep more of them")
    summary.seconds = time.monotonic() - started
    return summary


async def _plan(sector: Sector, recipe: Recipe, store: RunStore, ctx: PlanContext, summary: RunSummary) -> HashIndex:
    """Plan the run's openings (counted into ``summary``, with their variety); the ids of the
    dialogues already written."""
    # The plan streams: each batch of openings goes to plan/openings.jsonl as it is
    # fixed, and the dialogue phase reads them back (three passes over the file).
    assigned = Assigned(store.load_openings(Opening), sector.plan_group,
                        store.iter_emissions())
    try:
        ctx.emit(await sector.plan(ctx, recipe.dialogues, assigned) or [])
    except BudgetExhausted:
        summary.budget_stopped = True
    del assigned
    done = store.done_ids()

    def counted() -> Iterator[Opening]:
        for op in wanted_openings(sector, store, recipe.dialogues):
            summary.planned += 1
            summary.already_done += op.id in done
            yield op

    summary.variety = measure_variety(sector, counted(), recipe.dialogues,
                                      stage_calls(store.out / "plan" / "calls.jsonl"))
    if summary.planned < recipe.dialogues and not summary.budget_stopped:
        summary.notes.append(f"the planner found only {summary.planned} distinct opening lines; "
                             "rerun to plan more, or raise world.max_plan_waves")
    return done


def _distribution(sector: Sector, store: RunStore, dialogues: int, done: HashIndex) -> dict[str, Counter[str]]:
    """The run's dialogues counted by each of the sector's distribution keys (topic, ...)."""
    keys = getattr(sector, "distribution_keys", ("topic",))
    out: dict[str, Counter[str]] = {key: Counter() for key in keys}
    for op in wanted_openings(sector, store, dialogues):
        if op.id in done:  # done_ids() also holds the ids written by this run
            for key in keys:
                out[key][str(op.meta.get(key, "-"))] += 1
    return out


async def _run_dialogues(engine: DialogueEngine, todo: Openings, store: RunStore, bars: RunProgress,
                         budget: TokenBudget, concurrency: int) -> bool:
    """Generate ``todo`` with at most ``concurrency`` dialogues in flight; True if the
    token budget stopped the run (dialogues already in flight still finish). ``todo`` is
    streamed into a bounded queue, so only the openings in flight are in memory."""
    workers = min(concurrency, len(todo)) or 1
    queue: asyncio.Queue[Opening | None] = asyncio.Queue(maxsize=2 * workers)
    stopped = False
    commit = GroupCommit(store.save_dialogues)  # one fsync per group of finished dialogues

    feed_error: list[Exception] = []

    async def feed() -> None:
        try:
            for op in todo:
                await queue.put(op)
        except Exception as exc:  # reading the plan failed: the workers finish what they hold
            feed_error.append(exc)
        for _ in range(workers):
            await queue.put(None)  # one end mark per worker

    async def worker() -> None:
        nonlocal stopped
        while (op := await queue.get()) is not None:
            if budget.exhausted:
                stopped = True
                return
            DIALOGUE.set(op.id)  # engines with per-replica caches keep a dialogue on one replica
            record = await engine.run(op)
            tokens = sum(v["prompt"] + v["completion"] for v in record["meta"]["tokens"].values())
            budget.add(Usage(tokens, 0))
            await commit.add(record)
            bars.advance("dialogues", 1, tokens)

    feeder = asyncio.create_task(feed())
    try:
        await asyncio.gather(*(worker() for _ in range(workers)))
        if feed_error:
            raise feed_error[0]
    finally:
        feeder.cancel()  # workers stopped by the budget leave it waiting on a full queue
        await commit.flush()  # finished dialogues are kept even when a backend error stops the run
    return stopped


def generate(sector: str, recipe: Recipe, progress: bool = True, console: Console | None = None,
             plan_only: bool = False) -> RunSummary:
    """Synchronous wrapper of :func:`generate_async`."""
    return aio.run(generate_async(sector, recipe, progress, console, plan_only=plan_only))
