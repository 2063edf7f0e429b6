"""``ultrachat estimate`` on a mixed recipe: every sector of ``[mix]`` estimated (each by its own
simulation, :func:`~.estimate.estimate`), then the total, in one table.

Besides calls and tokens it prices the run two ways, each naming its figures:

* **GPU-hours** on your own endpoint: completion tokens at ``gpu_tokens_per_s`` generated
  tokens a second per GPU plus prompt tokens at ``gpu_prompt_tokens_per_s`` (prefill) a
  second per GPU, and their cost at ``gpu_usd_per_hour``;
* **API cost** at the price table's per-token prices for the models the recipe names
  (``unknown`` for a model the table does not list; ``--prices FILE`` adds it).

It also names what each sector asks for (the targets of :mod:`.variety`): opening lines,
and for world the subtopics, for writing the distinct instructions.

Example::

    mix = estimate_mix(load_recipe("examples/ultrachat-paper.toml"))
    print(mix.total_gpu_hours, mix.gpu_cost_usd)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rich.table import Table

from ..recipe import Recipe
from .accounting import Prices
from .all_sectors import sector_recipes
from .estimate import Estimate, _count, _money, estimate
from .runner import build_sector
from .variety import targets

#: generated tokens a second per GPU: a 7-8B model on vLLM with a few hundred sequences batched
#: on one A100/H100 (the price table's ``vllm:*`` aggregate speed)
GPU_TOKENS_PER_S = 2500.0
#: prompt tokens a second per GPU (prefill; cached prefixes of a dialogue's history make it cheaper)
GPU_PROMPT_TOKENS_PER_S = 25000.0
#: USD per GPU-hour (an on-demand cloud A100/H100, order of magnitude)
GPU_USD_PER_HOUR = 2.0


@dataclass
class MixEstimate:
    sectors: list[Estimate]
    asked: dict[str, dict[str, int]] = field(default_factory=dict)  # per sector: variety.targets
    gpu_tokens_per_s: float = GPU_TOKENS_PER_S
    gpu_prompt_tokens_per_s: float = GPU_PROMPT_TOKENS_PER_S
    gpu_usd_per_hour: float = GPU_USD_PER_HOUR

    def gpu_hours(self, est: Estimate) -> float:
        completion = sum(s.completion_tokens for s in est.stages)
        prompt = sum(s.prompt_tokens for s in est.stages)
        return (completion / self.gpu_tokens_per_s + prompt / self.gpu_prompt_tokens_per_s) / 3600

    @property
    def total_gpu_hours(self) -> float:
        return sum(self.gpu_hours(e) for e in self.sectors)

    @property
    def gpu_cost_usd(self) -> float:
        return self.total_gpu_hours * self.gpu_usd_per_hour

    @property
    def api_cost_usd(self) -> float | None:
        costs = [e.total_cost_usd for e in self.sectors]
        return None if any(c is None for c in costs) else sum(c for c in costs if c is not None)

    def figures(self) -> str:
        return (f"GPU-hours at {self.gpu_tokens_per_s:,.0f} generated and {self.gpu_prompt_tokens_per_s:,.0f} "
                f"prompt tokens/s per GPU; GPU cost at ${self.gpu_usd_per_hour:,.2f} per GPU-hour; API cost at the "
                "price table's prices of the recipe's models")

    def to_json(self) -> dict[str, Any]:
        return {"sectors": [{**e.to_json(), "gpu_hours": self.gpu_hours(e), "asked": self.asked.get(e.sector, {})}
                            for e in self.sectors],
                "total": {"dialogues": sum(e.dialogues for e in self.sectors),
                          "calls": sum(s.calls for e in self.sectors for s in e.stages),
                          "prompt_tokens": sum(s.prompt_tokens for e in self.sectors for s in e.stages),
                          "completion_tokens": sum(s.completion_tokens for e in self.sectors for s in e.stages),
                          "gpu_hours": self.total_gpu_hours, "gpu_cost_usd": self.gpu_cost_usd,
                          "api_cost_usd": self.api_cost_usd},
                "gpu_tokens_per_s": self.gpu_tokens_per_s, "gpu_prompt_tokens_per_s": self.gpu_prompt_tokens_per_s,
                "gpu_usd_per_hour": self.gpu_usd_per_hour}

    def table(self) -> Table:
        t = Table(title=f"ultrachat estimate: {sum(e.dialogues for e in self.sectors):,} dialogues, "
                        f"{len(self.sectors)} sectors", caption=self.figures())
        for col in ("sector", "dialogues", "asks for", "calls", "prompt tok", "output tok", "GPU-h", "GPU cost",
                    "API cost"):
            t.add_column(col, justify="left" if col in ("sector", "asks for") else "right")
        for e in self.sectors:
            asked = ", ".join(f"{k} {v:,}" for k, v in self.asked.get(e.sector, {}).items() if k != "openings")
            t.add_row(e.sector, f"{e.dialogues:,}", asked or "-", _count(sum(s.calls for s in e.stages)),
                      _count(sum(s.prompt_tokens for s in e.stages)),
                      _count(sum(s.completion_tokens for s in e.stages)),
                      f"{self.gpu_hours(e):,.0f}", _money(self.gpu_hours(e) * self.gpu_usd_per_hour),
                      _money(e.total_cost_usd))
        total = self.to_json()["total"]
        t.add_row("total", f"{total['dialogues']:,}", "", _count(total["calls"]), _count(total["prompt_tokens"]),
                  _count(total["completion_tokens"]), f"{self.total_gpu_hours:,.0f}", _money(self.gpu_cost_usd),
                  _money(self.api_cost_usd))
        return t

    def notes(self) -> list[str]:
        return [f"{e.sector}: {note}" for e in self.sectors for note in e.notes]


def estimate_mix(recipe: Recipe, sample: int = 300, fill: float = 0.6, prices: Prices | None = None,
                 gpu_tokens_per_s: float = GPU_TOKENS_PER_S, gpu_prompt_tokens_per_s: float = GPU_PROMPT_TOKENS_PER_S,
                 gpu_usd_per_hour: float = GPU_USD_PER_HOUR) -> MixEstimate:
    """Estimate every sector of ``recipe``'s mix (each simulated on ``sample`` dialogues)."""
    prices = prices or Prices.load()
    parts = sector_recipes(recipe)
    out = MixEstimate([estimate(name, sub, None, sample, fill, prices) for name, sub in parts],
                      gpu_tokens_per_s=gpu_tokens_per_s, gpu_prompt_tokens_per_s=gpu_prompt_tokens_per_s,
                      gpu_usd_per_hour=gpu_usd_per_hour)
    out.asked = {name: targets(build_sector(name, sub), sub.dialogues) for name, sub in parts}
    return out
