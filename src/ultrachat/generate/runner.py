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
from collections.abc import Awaitable, Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ..backends import BackendPool, Usage
from ..backends.vllm import DIALOGUE
from ..prompts import PromptError, Prompts, load_list
from ..recipe import Recipe
from .accounting import Ledger, write_report
from .engine import DialogueEngine, EngineStats, Role
from .entities import EntitiesSector
from .materials import MaterialsSector
from .progress import RunProgress
from .sector import BudgetExhausted, Opening, PlanContext, Sector, TokenBudget
from .store import RunStore
from .world import WorldSector
from .writer import GroupCommit
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


#: ``(engine, todo, store, bars, budget, concurrency) -> stopped by the budget``
DialogueRunner = Callable[[DialogueEngine, list[Opening], RunStore, RunProgress, TokenBudget, int],
                          Awaitable[bool]]


async def generate_async(sector_name: str, recipe: Recipe, progress: bool = True,
                         console: Console | None = None, pool: BackendPool | None = None,
                         bars: RunProgress | None = None, dialogue_runner: DialogueRunner | None = None) -> RunSummary:
    """Plan and generate ``recipe.dialogues`` dialogues of one sector into its output folder.

    ``pool`` replaces the backends the recipe names (``ultrachat plan`` simulates with it);
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
            assigned = [Opening(**o) for o in store.load_openings()]
            try:
                new = await sector.plan(ctx, recipe.dialogues, assigned)
            except BudgetExhausted:
                new, summary.budget_stopped = [], True
            store.save_openings([o.to_json() for o in new])
            openings = sector.wanted(assigned + new, recipe.dialogues)
            summary.planned = len(openings)
            summary.plan_tokens = budget.usage.total_tokens
            if len(openings) < recipe.dialogues and not summary.budget_stopped:
                summary.notes.append(f"the planner found only {len(openings)} distinct opening lines; "
                                     "rerun to plan more, or raise world.max_plan_waves")
            done = store.done_ids()
            todo = [o for o in openings if o.id not in done]
            summary.already_done = len(openings) - len(todo)
            bars.add_total("dialogues", len(todo))
            summary.budget_stopped |= await (dialogue_runner or _run_dialogues)(
                engine, todo, store, bars, budget, recipe.concurrency)
            written = store.done_ids()
            for key in getattr(sector, "distribution_keys", ("topic",)):
                summary.distribution[key] = Counter(str(o.meta.get(key, "-")) for o in openings if o.id in written)
        finally:
            await pool.close()
        report = write_report(out, summary, ledger, time.monotonic() - started)
        summary.notes.append(f"model calls: {ledger.describe()}; details in {report}")
    if summary.budget_stopped:
        summary.notes.append(f"stopped at the token budget ({recipe.max_total_tokens:,}); rerun with a larger "
                             "--max-total-tokens to continue")
    summary.seconds = time.monotonic() - started
    return summary


async def _run_dialogues(engine: DialogueEngine, todo: list[Opening], store: RunStore, bars: RunProgress,
                         budget: TokenBudget, concurrency: int) -> bool:
    """Generate ``todo`` with at most ``concurrency`` dialogues in flight; True if the
    token budget stopped the run (dialogues already in flight still finish)."""
    queue: asyncio.Queue[Opening] = asyncio.Queue()
    for op in todo:
        queue.put_nowait(op)
    stopped = False
    commit = GroupCommit(store.save_dialogues)  # one fsync per group of finished dialogues

    async def worker() -> None:
        nonlocal stopped
        while not queue.empty():
            if budget.exhausted:
                stopped = True
                return
            op = queue.get_nowait()
            DIALOGUE.set(op.id)  # engines with per-replica caches keep a dialogue on one replica
            record = await engine.run(op)
            tokens = sum(v["prompt"] + v["completion"] for v in record["meta"]["tokens"].values())
            budget.add(Usage(tokens, 0))
            await commit.add(record)
            bars.advance("dialogues", 1, tokens)

    try:
        await asyncio.gather(*(worker() for _ in range(min(concurrency, len(todo)) or 1)))
    finally:
        await commit.flush()  # finished dialogues are kept even when a backend error stops the run
    return stopped


def generate(sector: str, recipe: Recipe, progress: bool = True, console: Console | None = None) -> RunSummary:
    """Synchronous wrapper of :func:`generate_async`."""
    return asyncio.run(generate_async(sector, recipe, progress, console))
