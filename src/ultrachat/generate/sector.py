"""The sector plug-in interface and the planning context every sector plans through.

A sector supplies three things; the dialogue engine does the rest:

* :meth:`Sector.plan` yields :class:`Opening` lines (the first user turn plus metadata),
  making its model calls through :class:`PlanContext`, which caches each one in the
  output folder so an interrupted plan resumes where it stopped;
* ``rounds``: the default round range of its dialogues;
* :meth:`Sector.user_goal`: the reminder the user simulator gets on every turn.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from ..backends import Backend, GenerationParams, Usage
from ..prompts import Prompts
from ..recipe import ModelConfig, Recipe
from .progress import RunProgress
from .store import RunStore


def stable_seed(*parts: object) -> int:
    """A 63-bit seed derived from ``parts``, identical across processes and machines."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


@dataclass
class Opening:
    """One planned dialogue: its id, first user turn, metadata, round count and seed."""

    id: str
    text: str
    rounds: int
    seed: int
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class BudgetExhausted(RuntimeError):
    pass


class TokenBudget:
    """Counts this run's tokens against ``max_total_tokens`` (0 = unlimited)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.usage = Usage()

    def add(self, usage: Usage) -> None:
        self.usage.add(usage)

    @property
    def exhausted(self) -> bool:
        return bool(self.limit) and self.usage.total_tokens >= self.limit


class PlanContext:
    """Cached, progress-reporting model calls for planners."""

    def __init__(self, store: RunStore, backend: Backend, cfg: ModelConfig, progress: RunProgress,
                 budget: TokenBudget, concurrency: int) -> None:
        self.store = store
        self.backend = backend
        self.cfg = cfg
        self.progress = progress
        self.budget = budget
        self._cache = store.load_calls()
        self._sem = asyncio.Semaphore(concurrency)

    def cached(self, key: str) -> bool:
        return key in self._cache

    async def call(self, stage: str, key: str, prompt: str, seed: int) -> str:
        """The planner model's reply to ``prompt``; replayed from the cache when ``key`` is done."""
        if key in self._cache:
            return str(self._cache[key]["text"])
        self.progress.add_total(stage, 1)
        async with self._sem:
            if self.budget.exhausted:
                raise BudgetExhausted("token budget reached while planning")
            messages = [{"role": "system", "content": self.cfg.system}] if self.cfg.system else []
            messages.append({"role": "user", "content": prompt})
            params = GenerationParams(self.cfg.temperature, self.cfg.top_p, self.cfg.max_tokens, seed)
            out = await self.backend.complete(messages, params)
        self.budget.add(out.usage)
        record = {"key": key, "stage": stage, "text": out.text, "finish": out.finish_reason,
                  "usage": [out.usage.prompt_tokens, out.usage.completion_tokens]}
        self.store.save_call(record)
        self._cache[key] = record
        self.progress.advance(stage, 1, out.usage.total_tokens)
        return out.text


class Sector(ABC):
    """Base class of a sector plug-in. Subclasses set ``name`` and ``rounds`` and
    implement :meth:`plan`."""

    name: ClassVar[str]
    rounds: ClassVar[tuple[int, int]] = (3, 7)

    def __init__(self, recipe: Recipe, prompts: Prompts) -> None:
        self.recipe = recipe
        self.prompts = prompts

    def round_range(self) -> tuple[int, int]:
        lo = self.recipe.dialogue.min_rounds or self.rounds[0]
        hi = self.recipe.dialogue.max_rounds or max(self.rounds[1], lo)
        return lo, max(lo, hi)

    def make_opening(self, dialogue_id: str, text: str, meta: dict[str, Any]) -> Opening:
        seed = stable_seed(self.recipe.seed, dialogue_id)
        lo, hi = self.round_range()
        return Opening(dialogue_id, text, random.Random(seed).randint(lo, hi), seed, meta)

    def user_goal(self, opening: Opening) -> str:
        """Reminder for the user simulator, from the ``[goals]`` table of ``user.toml``."""
        try:
            return self.prompts.render("user", "goals", self.name, **opening.meta)
        except KeyError:
            return ""

    @abstractmethod
    async def plan(self, ctx: PlanContext, dialogues: int, assigned: list[Opening]) -> list[Opening]:
        """Return the new openings needed so that ``dialogues`` are planned in all.

        ``assigned`` holds the openings an earlier run already fixed; they keep their ids.
        """

    def wanted(self, openings: list[Opening], dialogues: int) -> list[Opening]:
        """The openings this run should turn into dialogues (default: the first N)."""
        return openings[:dialogues]
