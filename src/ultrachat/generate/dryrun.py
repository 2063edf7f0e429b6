"""``ultrachat generate <sector> --dry-run``: the plan of a run, computed from the recipe alone.

No model is called. The counts follow each planner's own rules (quotas, call sizes, the
expanded share of writing instructions); materials reads as much of the corpus as the run
needs, so a bad input file fails here too. Token figures are estimates: completions at
their ``max_tokens`` (an upper bound) and prompts from the templates' length, growing with
each round's history. For a measured estimate with costs and time, see ``ultrachat estimate``.

Example::

    for plan in dry_run("writing", load_recipe(overrides={"dialogues": 1000})):
        print(plan.sector, plan.openings, plan.calls)
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from dataclasses import dataclass, field

from rich.table import Table

from ..core.text import approx_tokens
from ..prompts import Prompts
from ..recipe import Recipe, WorldConfig
from .engine import TRANSCRIPT_CHARS, TRANSCRIPT_TURNS
from .entities import EntitiesSector
from .materials import MaterialsSector, select_passages
from .runner import build_sector
from .world import WorldSector, quotas
from .writing import WritingSector, is_expanded


@dataclass
class PlanReport:
    """What a run of one sector will do."""

    sector: str
    dialogues: int
    openings: int
    rounds: tuple[int, int]
    calls: Counter[str] = field(default_factory=Counter)  # per stage / role
    prompt_tokens: Counter[str] = field(default_factory=Counter)
    completion_tokens: Counter[str] = field(default_factory=Counter)
    distribution: dict[str, Counter[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def total_tokens(self) -> int:
        return sum(self.prompt_tokens.values()) + sum(self.completion_tokens.values())

    def table(self) -> Table:
        t = Table(title=f"dry run: ultrachat generate {self.sector}", show_header=False)
        t.add_row("opening lines", f"{self.openings:,}")
        t.add_row("dialogues", f"{self.dialogues:,} ({self.rounds[0]}-{self.rounds[1]} rounds)")
        t.add_row("model calls", f"{sum(self.calls.values()):,} ("
                  + ", ".join(f"{k} {v:,}" for k, v in self.calls.items()) + ")")
        t.add_row("estimated tokens", f"≤ {self.total_tokens:,} (prompt ~{sum(self.prompt_tokens.values()):,}, "
                  f"completion ≤ {sum(self.completion_tokens.values()):,})")
        for key, counts in self.distribution.items():
            t.add_row(f"by {key}", ", ".join(f"{k}={v}" for k, v in counts.items()))
        for note in self.notes:
            t.add_row("note", note)
        return t


class _Estimator:
    """Adds planning and dialogue calls to a report with rough token counts."""

    def __init__(self, recipe: Recipe, report: PlanReport) -> None:
        self.recipe = recipe
        self.report = report
        self.prompts = Prompts(recipe.language, recipe.prompts_dir)

    def tokens(self, text_or_chars: str | float) -> int:
        return approx_tokens(text_or_chars, self.recipe.language)

    def plan_calls(self, stage: str, calls: int, file: str, extra_chars: float = 0) -> None:
        if calls <= 0:
            return
        cfg = self.recipe.models.planner_config()
        self.report.calls[stage] += calls
        self.report.prompt_tokens["plan"] += calls * self.tokens(len(self.prompts.get(file, stage)) + extra_chars)
        self.report.completion_tokens["plan"] += calls * cfg.max_tokens

    def dialogues(self, n: int, opening_tokens: float) -> None:
        """Calls and tokens of ``n`` dialogues, averaged over the round range."""
        lo, hi = self.report.rounds
        a_max = self.recipe.models.assistant.max_tokens
        u_max = self.recipe.models.user.max_tokens
        shown = min(self.tokens(TRANSCRIPT_CHARS), a_max)  # the task prompt clips long turns
        task = self.tokens(self.prompts.get("user", "task"))
        span = hi - lo + 1
        for rounds in range(lo, hi + 1):
            share = n / span
            self.report.calls["assistant"] += round(share * rounds)
            self.report.calls["user"] += round(share * (rounds - 1))
            history = sum(opening_tokens + i * (a_max + u_max) for i in range(rounds))
            transcript = sum(task + min(opening_tokens, self.tokens(TRANSCRIPT_CHARS))
                             + min(2 * i + 1, TRANSCRIPT_TURNS - 1) * (shown + u_max) / 2 for i in range(rounds - 1))
            self.report.prompt_tokens["assistant"] += round(share * history)
            self.report.prompt_tokens["user"] += round(share * transcript)
            self.report.completion_tokens["assistant"] += round(share * rounds * a_max)
            self.report.completion_tokens["user"] += round(share * (rounds - 1) * u_max)


def _half(n: int) -> int:
    return max(1, n // 2)


def world_waves(quota: int, target: int, cfg: WorldConfig) -> tuple[Counter[str], list[int], int]:
    """The waves of one topic's plan (as :meth:`WorldSector._plan_round` runs them) with
    half of each list usable: calls per stage, openings per depth, subtopics asked for."""
    calls: Counter[str] = Counter()
    found: list[int] = []  # questions per depth
    unexpanded: list[int] = []
    subs = expanded = 0
    for _wave in range(cfg.max_plan_waves):
        deficit = quota - sum(found)
        if deficit <= 0:
            break
        if expanded < subs:
            take = min(subs - expanded, math.ceil(deficit / 5))
            expanded += take
            calls["questions"] += take
            _grow(found, unexpanded, 0, take * _half(cfg.questions_per_subtopic))
        elif subs < target:
            until = min(target, subs + max(cfg.subtopics_per_request, math.ceil(deficit / cfg.questions_per_subtopic)))
            calls["subtopics"] += math.ceil((until - subs) / cfg.subtopics_per_request)
            subs = until
        elif any(unexpanded):
            depth = next(d for d, n in enumerate(unexpanded) if n)
            take = min(unexpanded[depth], math.ceil(deficit / 5))
            unexpanded[depth] -= take
            calls["related"] += take
            _grow(found, unexpanded, depth + 1, take * _half(cfg.related_per_question))
        else:
            break
    picks, left = [], quota
    for n in found:
        picks.append(min(n, left))
        left -= picks[-1]
    return calls, picks, subs


def _grow(found: list[int], unexpanded: list[int], depth: int, n: int) -> None:
    while len(found) <= depth:
        found.append(0)
        unexpanded.append(0)
    found[depth] += n
    unexpanded[depth] += n


def _world(sector: WorldSector, est: _Estimator, n: int) -> float:
    cfg = sector.recipe.world
    topics = sector.topics()
    counts = quotas(n, topics, sector.recipe.seed)
    levels: Counter[str] = Counter()
    for q, target in zip(counts, sector.subtopic_targets(topics), strict=True):
        if q <= 0:
            continue
        calls, picks, subs = world_waves(q, target, cfg)
        est.plan_calls("subtopics", calls["subtopics"], "world", 20)
        est.plan_calls("questions", calls["questions"], "world", 60)
        est.plan_calls("related", calls["related"], "world", 80)
        levels["subtopics"] += subs
        for depth, picked in enumerate(picks):
            levels[_DEPTHS[min(depth, len(_DEPTHS) - 1)]] += picked
    est.report.distribution["topic"] = Counter({t: q for t, q in zip(topics, counts, strict=True) if q})
    est.report.distribution["level"] = levels
    return 20


_DEPTHS = ("questions", "related", "related of related", "deeper")


def _entities(sector: EntitiesSector, est: _Estimator, n: int) -> float:
    cfg = sector.recipe.entities
    quota = sector.quotas(n)
    specific = math.ceil(quota["specific"] / _half(cfg.specific_per_meta))
    general = math.ceil(quota["general"] / _half(cfg.general_per_meta))
    metas = max(math.ceil(quota["meta"] / _half(cfg.meta_per_entity)),
                math.ceil(max(specific, general) / cfg.meta_per_entity))
    entities = len(sector.entities())
    if metas > entities:
        est.report.notes.append(f"needs about {metas:,} entities; the list has {entities:,}")
    est.plan_calls("meta", min(metas, entities), "entities", 40)
    est.plan_calls("specific", specific, "entities", 120)
    est.plan_calls("general", general, "entities", 120)
    est.report.distribution["kind"] = Counter({k: v for k, v in quota.items() if v})
    return 20


def _writing(sector: WritingSector, est: _Estimator, n: int) -> float:
    cfg = sector.recipe.writing
    types = sector.types()
    counts = quotas(n, types, sector.recipe.seed)
    rank = sector.ranks(types)
    expanded = 0
    openings = 0
    for i, q in enumerate(counts):
        target = sector.instruction_target(q)
        openings += target
        est.plan_calls("instructions", math.ceil(target / cfg.instructions_per_request), "writing", 90)
        expanded += sum(is_expanded(k * len(types) + rank[i], cfg.expand_share) for k in range(target))
    est.plan_calls("expand", expanded, "writing", 120)
    est.report.openings = openings
    if openings < n:
        est.report.notes.append(f"writing.instructions_per_type = {cfg.instructions_per_type} caps the run at "
                                f"{openings:,} dialogues (each instruction opens one)")
    est.report.distribution["writing_type"] = Counter({t: q for t, q in zip(types, counts, strict=True) if q})
    est.report.distribution["expanded"] = Counter({"True": expanded, "False": openings - expanded})
    return 25 + 40 * expanded / max(1, openings)


def _materials(sector: MaterialsSector, est: _Estimator, n: int) -> float:
    cfg = sector.recipe.materials
    need = math.ceil(n / cfg.instructions_per_passage)
    if cfg.max_passages:
        need = min(need, cfg.max_passages)
    if cfg.dataset:
        found, chars = need, float(cfg.max_chars + cfg.min_chars) / 2
        est.report.notes.append(f"passages are streamed from the hub dataset '{cfg.dataset}' (not read in a dry run)")
    else:
        passages = select_passages(cfg, sector.recipe.language, sector.recipe.seed, need)
        lengths = [len(p.text) for p in itertools.islice(passages, need)]
        found, chars = len(lengths), (sum(lengths) / len(lengths) if lengths else 0.0)
        if found < need:
            est.report.notes.append(f"the corpus holds only {found:,} usable passages; {need:,} are needed "
                                    "(check materials.files, min_chars/max_chars and sample_rate)")
    est.plan_calls("instructions", found, "materials", chars + 300)
    est.report.openings = min(n, found * cfg.instructions_per_passage)
    slots = [(p, j) for p in range(found) for j in range(cfg.instructions_per_passage)][:n]
    templates = sector.templates()
    est.report.distribution["task"] = Counter(sector.task_of(p, j) for p, j in slots)
    est.report.distribution["template"] = Counter(
        templates[(p * cfg.instructions_per_passage + j) % len(templates)][0] for p, j in slots)
    return est.tokens(chars) + 25


_PLANNERS = {WorldSector: _world, EntitiesSector: _entities, WritingSector: _writing, MaterialsSector: _materials}


def plan_report(sector_name: str, recipe: Recipe) -> PlanReport:
    """The dry-run plan of one sector for ``recipe.dialogues`` dialogues."""
    sector = build_sector(sector_name, recipe)
    n = recipe.dialogues
    report = PlanReport(sector_name, n, n, sector.round_range())
    est = _Estimator(recipe, report)
    opening_tokens = _PLANNERS[type(sector)](sector, est, n)  # type: ignore[operator]
    report.dialogues = min(n, report.openings)
    est.dialogues(report.dialogues, opening_tokens)
    return report


def dry_run(sector_name: str, recipe: Recipe) -> list[PlanReport]:
    """Plans of one sector, or of every sector of the mix for ``all``."""
    if sector_name != "all":
        return [plan_report(sector_name, recipe)]
    from .all_sectors import sector_recipes

    return [plan_report(name, sub) for name, sub in sector_recipes(recipe)]


def render(reports: list[PlanReport]) -> list[Table]:
    """Tables to print: one per sector, plus the totals when there are several."""
    tables = [r.table() for r in reports]
    if len(reports) > 1:
        t = Table(title="dry run: total", show_header=False)
        t.add_row("opening lines", f"{sum(r.openings for r in reports):,}")
        t.add_row("dialogues", f"{sum(r.dialogues for r in reports):,}")
        t.add_row("model calls", f"{sum(sum(r.calls.values()) for r in reports):,}")
        t.add_row("estimated tokens", f"≤ {sum(r.total_tokens for r in reports):,}")
        tables.append(t)
    return tables


def roles_table(recipe: Recipe) -> Table:
    """Each role's effective model, profile and caps, after the recipe, its profiles and
    the flags have been applied (so nothing falls back unseen)."""
    t = Table(title="dry run: roles")
    for col in ("role", "backend", "model", "endpoint", "profile", "max_tokens", "temperature"):
        t.add_column(col)
    profiles = recipe.models.profiles()
    models = recipe.models
    roles = {"user": models.user, "assistant": models.assistant, "planner": models.planner_config()}
    for name, cfg in roles.items():
        t.add_row(name, cfg.backend, cfg.model, cfg.base_url or "-", profiles[name], str(cfg.max_tokens),
                  f"{cfg.temperature:g}")
    notes = [f"user prompts: {recipe.dialogue.user_prompts}", f"cut replies: {recipe.dialogue.on_truncated}"]
    notes += [f"{name} context: {cfg.context_length:,} tokens" for name, cfg in roles.items() if cfg.context_length]
    if kept := [name for name, cfg in roles.items() if cfg.keep_reasoning]:
        notes.append(f"reasoning kept in meta: {', '.join(kept)}")
    t.caption = "; ".join(notes)
    return t
