"""``ultrachat estimate RECIPE``: calls, tokens, time and cost of a run, before running it.

The estimate is a simulation, not a formula: the real planner and dialogue engine run a
sample of the recipe (up to ``sample`` dialogues, into a temporary folder) against a
sizing backend that answers instantly with replies of the expected length (``fill`` x
``max_tokens`` of each role; ~4 characters a token). The sample's calls and tokens per
stage are scaled to the requested number of dialogues and priced with the price table
(:mod:`ultrachat.generate.accounting`); time comes from the table's latency and speed
per model, the recipe's concurrency and, for in-process engines, their aggregate speed.

Example::

    est = estimate("world", load_recipe("recipe.toml"), dialogues=100_000)
    print(est.total_cost_usd, est.seconds)
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

from .. import aio
from ..backends import Backend, BackendPool, Completion, GenerationParams, Message, Usage
from ..backends.shaped import default_reply
from ..core.text import approx_tokens
from ..recipe import ModelConfig, Recipe
from .accounting import Prices


def _tokens(text: str) -> int:
    return max(1, approx_tokens(text))


class SizingBackend(Backend):
    """Instant replies of the expected size: list prompts get lists (so planners plan),
    other prompts ``fill`` x ``max_tokens`` tokens (user turns capped to a question)."""

    def __init__(self, cfg: ModelConfig, fill: float) -> None:
        self.model_name = cfg.model
        self.fill = fill

    async def complete(self, messages: list[Message], params: GenerationParams) -> Completion:
        prompt = sum(_tokens(m["content"]) for m in messages)
        reply = default_reply(messages, params)
        if "\n" not in reply:  # not a list: pad to the expected length with 2-token words
            words = max(1, int(self.fill * params.max_tokens - _tokens(reply)) // 2)
            if reply.endswith("?"):
                # The engine rejects long statements and repeated questions: keep one question,
                # led by the fake's per-call wording so each turn asks something new.
                reply = " ".join([reply[:-1], *["details"] * min(words, 90)]) + "?"
            else:
                reply = " ".join([reply, *["content"] * words])
        return Completion(reply, "stop", Usage(prompt, min(_tokens(reply), params.max_tokens)), self.model_name)


class _SizingPool(BackendPool):
    def __init__(self, fill: float) -> None:
        super().__init__()
        self.fill = fill

    def get(self, cfg: ModelConfig) -> Backend:
        return self._backends.setdefault((cfg.backend, cfg.model, cfg.base_url), SizingBackend(cfg, self.fill))


@dataclass
class StageEstimate:
    stage: str
    model: str
    calls: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None
    seconds: float


@dataclass
class Estimate:
    sector: str
    dialogues: int
    sampled: int
    stages: list[StageEstimate] = field(default_factory=list)
    batch_discount: float = 0.5
    notes: list[str] = field(default_factory=list)

    @property
    def total_cost_usd(self) -> float | None:
        costs = [s.cost_usd for s in self.stages]
        return None if any(c is None for c in costs) else sum(c for c in costs if c is not None)

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.stages)

    def to_json(self) -> dict[str, Any]:
        return {"sector": self.sector, "dialogues": self.dialogues, "sampled": self.sampled,
                "stages": [s.__dict__ for s in self.stages], "total_cost_usd": self.total_cost_usd,
                "batch_cost_usd": None if self.total_cost_usd is None else self.total_cost_usd * self.batch_discount,
                "seconds": self.seconds, "notes": self.notes}

    def table(self) -> Table:
        t = Table(title=f"ultrachat estimate: {self.dialogues:,} {self.sector} dialogues "
                        f"(simulated {self.sampled:,}, scaled)")
        for col in ("stage", "model", "calls", "prompt tok", "output tok", "cost", "time"):
            t.add_column(col, justify="left" if col in ("stage", "model") else "right")
        for s in self.stages:
            t.add_row(s.stage, s.model, _count(s.calls), _count(s.prompt_tokens), _count(s.completion_tokens),
                      _money(s.cost_usd), _duration(s.seconds))
        total = self.total_cost_usd
        t.add_row("total", "", _count(sum(s.calls for s in self.stages)),
                  _count(sum(s.prompt_tokens for s in self.stages)),
                  _count(sum(s.completion_tokens for s in self.stages)), _money(total), _duration(self.seconds))
        t.add_row("batch API", "", "", "", "", _money(None if total is None else total * self.batch_discount), "")
        return t


def _count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def _money(v: float | None) -> str:
    return "unknown price" if v is None else f"${v:,.2f}"


def _duration(s: float) -> str:
    if s < 120:
        return f"{s:.0f} s"
    return f"{s / 60:.0f} min" if s < 7200 else f"{s / 3600:.1f} h"


def estimate(sector: str, recipe: Recipe, dialogues: int | None = None, sample: int = 300, fill: float = 0.6,
             prices: Prices | None = None) -> Estimate:
    """Simulate ``min(dialogues, sample)`` dialogues of ``recipe`` and scale to ``dialogues``."""
    from .runner import generate_async

    prices = prices or Prices.load()
    wanted = dialogues or recipe.dialogues
    sampled = min(wanted, sample)
    with tempfile.TemporaryDirectory(prefix="ultrachat-plan-") as tmp:
        sim = recipe.model_copy(update={"dialogues": sampled, "out": str(Path(tmp) / "out"), "cache": False,
                                        "max_total_tokens": 0})
        aio.run(generate_async(sector, sim, progress=False, pool=_SizingPool(fill)))
        report = json.loads((Path(tmp) / "out" / "report.json").read_text(encoding="utf-8"))["runs"][-1]
    notes = []
    if 0 < report["dialogues_written"] < sampled:  # the inputs ran short (a small corpus or entity list)
        notes.append(f"the simulation planned only {report['dialogues_written']:,} of {sampled:,} dialogues "
                     "(too few passages or entities?); scaled from those")
        sampled = report["dialogues_written"]
    scale = wanted / sampled
    configs = {"plan": recipe.models.planner_config(), "user": recipe.models.user,
               "assistant": recipe.models.assistant}
    est = Estimate(sector, wanted, sampled, batch_discount=prices.batch_discount, notes=notes)
    for stage, models in report["stages"].items():
        cfg = configs[stage]
        price = prices.lookup(cfg.backend, cfg.model)
        discount = prices.batch_discount if cfg.backend == "openai_batch" else 1.0  # already a batch API
        for model, line in models.items():
            usage = Usage(round(line["prompt_tokens"] * scale), round(line["completion_tokens"] * scale))
            calls = round(line["calls"] * scale)
            # Calls of one dialogue are sequential; dialogues (or plan calls) run side by side.
            parallel = min(recipe.concurrency, cfg.max_in_flight)
            per_call = price.latency_s + (usage.completion_tokens / calls / price.tokens_per_s
                                          if price.tokens_per_s and calls else 0.0)
            seconds = calls * per_call / parallel
            if price.aggregate_tokens_per_s:
                seconds = max(seconds, usage.completion_tokens / price.aggregate_tokens_per_s)
            est.stages.append(StageEstimate(stage, model, calls, usage.prompt_tokens, usage.completion_tokens,
                                            price.cost(usage, discount), seconds))
    return est
