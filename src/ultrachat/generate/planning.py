"""What a sector plans through: :class:`PlanContext` makes its model calls, caching each
one in the output folder so an interrupted plan resumes where it stopped, and takes its
openings in batches as they are fixed (:meth:`PlanContext.emit` appends them to
``plan/openings.jsonl`` at once, so a plan of millions of dialogues is never held in
memory); :class:`Assigned` is what earlier runs already planned; :func:`ordered_map` and
:func:`round_robin` keep a plan the same on every run whatever order calls finish in.
"""

from __future__ import annotations

import asyncio
import json
from array import array
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import Any, TypeVar

from ..backends import Backend, GenerationParams, Message
from ..backends.base import fitted_cap, min_room, prompt_tokens_estimate
from ..core.errors import UserError
from ..core.hashing import HashIndex, TextSpool, hash64, hexdigest
from ..core.progress import RunProgress
from ..core.text import normalize
from ..core.turns import strip_think
from ..recipe import ModelConfig
from .budget import BudgetExhausted, TokenBudget
from .sector import Opening
from .store import RunStore

T = TypeVar("T")
R = TypeVar("R")
EMIT_BATCH = 1000  # openings a planner hands to PlanContext.emit at once


class Assigned:
    """What earlier runs already planned into ``plan/openings.jsonl``, read in one pass and
    kept compact: the count per planning group (a topic, a kind...), and the 64-bit hashes
    of the ids and of each opening's normalised text within its group.

    ``emissions`` are the records of ``plan/emissions.jsonl`` (see
    :meth:`PlanContext.begin`): a plan a kill cut short while it was writing its openings is
    in :attr:`pending`, and the openings it wrote (``k`` at or past its ``from``) do not
    count as used texts, since the rerun redoes that plan and keeps only its rest."""

    def __init__(self, openings: Iterable[Opening] = (), group: Callable[[Opening], str] = lambda op: "",
                 emissions: Iterable[dict[str, Any]] = ()) -> None:
        self.pending: dict[str, dict[str, Any]] = {}
        for record in emissions:
            if "done" in record:
                self.pending.pop(record["done"], None)
            else:
                self.pending[record["plan"]] = record
        cut = {g: k for record in self.pending.values() for g, k in record["from"].items()}
        self.counts: Counter[str] = Counter()
        ids, texts = array("Q"), array("Q")
        for op in openings:
            g = group(op)
            self.counts[g] += 1
            ids.append(hash64(op.id))
            if g not in cut or int(op.meta["k"]) < cut[g]:
                texts.append(hash64(f"{g}\x1f{normalize(op.text)}"))
        self._ids = HashIndex(ids)
        self._texts = HashIndex(texts)

    def __len__(self) -> int:
        return self.counts.total()

    def __contains__(self, dialogue_id: object) -> bool:
        return dialogue_id in self._ids

    def count(self, group: str) -> int:
        return self.counts[group]

    def has_text(self, group: str, text: str) -> bool:
        """Whether an opening of ``group`` already uses ``text`` (after normalisation)."""
        return bool(self.counts[group]) and f"{group}\x1f{normalize(text)}" in self._texts


async def ordered_map(fn: Callable[[T], Awaitable[R]], items: Iterable[T],
                      limit: int | asyncio.Semaphore) -> AsyncIterator[R]:
    """``fn(item)`` for each item, results in input order, with at most ``limit`` tasks
    alive at once: a plan wave of 100k calls keeps a few hundred tasks, not 100k coroutines.
    A semaphore as ``limit`` is a budget shared with other maps (every topic of a plan)."""
    slots = asyncio.Semaphore(limit) if isinstance(limit, int) else limit
    pending: deque[asyncio.Task[R]] = deque()
    it = iter(items)
    more = True
    try:
        while True:
            # Start tasks while slots are free; wait for a slot only when none of ours runs.
            while more and (not pending or not slots.locked()):
                item = next(it, _END)
                if item is _END:
                    more = False
                    break
                await slots.acquire()
                task = asyncio.ensure_future(fn(item))
                task.add_done_callback(lambda _: slots.release())
                pending.append(task)
            if not pending:
                return
            yield await pending.popleft()
    finally:
        for task in pending:
            task.cancel()


_END: Any = object()


def round_robin(items: Iterable[T], n: int, key: Callable[[T], object]) -> Iterator[T]:
    """Pick ``n`` of ``items``, alternating across their groups (``key``, in order of first
    appearance) so small runs still vary; within a group, in input order."""
    groups: dict[object, list[T]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    queues = list(groups.values())
    picked, turn = 0, 0
    while picked < n and any(turn < len(q) for q in queues):
        for q in queues:
            if turn < len(q) and picked < n:
                picked += 1
                yield q[turn]
        turn += 1


class PlanContext:
    """Cached, progress-reporting model calls for planners."""

    def __init__(self, store: RunStore, backend: Backend, cfg: ModelConfig, progress: RunProgress,
                 budget: TokenBudget, concurrency: int) -> None:
        self.store = store
        self.backend = backend
        self.cfg = cfg
        self.progress = progress
        self.budget = budget
        # Planning tasks alive at once, all planners together (see ordered_map).
        self.window = asyncio.Semaphore(max(256, 4 * concurrency))
        self.emitted = 0
        self._sem = asyncio.Semaphore(concurrency)

    def spool(self) -> TextSpool:
        """A scratch store for a planner's texts (an unlinked file in ``plan/``)."""
        return TextSpool(self.store.out / "plan")

    def begin(self, plan: str, start: dict[str, int], quota: dict[str, int]) -> None:
        """Record that ``plan`` now writes the openings ``start[g] <= k < quota[g]`` of its
        groups. A planner whose picks depend on what is already used (round robin over a
        pool) writes this before its first :meth:`emit` and calls :meth:`end` after the
        last, so a rerun after a kill in between redoes the same picks and writes only the
        rest (:attr:`Assigned.pending`): the result equals an uninterrupted run's."""
        self.store.save_emission({"plan": plan, "from": start, "quota": quota})

    def end(self, plan: str) -> None:
        self.store.save_emission({"done": plan})

    def emit(self, openings: list[Opening]) -> None:
        """Fix ``openings``: they are appended to ``plan/openings.jsonl`` now."""
        if openings:
            self.store.save_openings([op.to_json() for op in openings])
            self.emitted += len(openings)

    async def call(self, stage: str, key: str, prompt: str, seed: int) -> str:
        """The planner model's reply to ``prompt``; replayed from the cache when the same
        ``key`` was asked with the same messages (the text sent is part of the cache key, so
        an edited prompt is a new call, never an old reply)."""
        messages = [{"role": "system", "content": self.cfg.system}] if self.cfg.system else []
        messages.append({"role": "user", "content": prompt})
        key = f"{key}|{hexdigest(json.dumps(messages, ensure_ascii=False))[:16]}"
        cached = self.store.get_call(key)
        if cached is not None:
            return whole_lines(str(cached["text"]), str(cached.get("finish", "stop")))
        self.progress.add_total(stage, 1)
        async with self._sem:
            if self.budget.exhausted:
                raise BudgetExhausted("token budget reached while planning")
            params = GenerationParams(self.cfg.temperature, self.cfg.top_p, await self._cap(messages), seed)
            out = await self.backend.complete(messages, params)
        self.budget.add(out.usage)
        record = {"key": key, "stage": stage, "text": out.text, "finish": out.finish_reason,
                  "usage": [out.usage.prompt_tokens, out.usage.completion_tokens]}
        self.store.save_call(record)
        self.progress.advance(stage, 1, out.usage.total_tokens)
        return whole_lines(out.text, out.finish_reason)

    async def _cap(self, messages: list[Message]) -> int:
        """The call's ``max_tokens``: the planner's cap within what its context window leaves
        after the prompt; a window too small for a list is the recipe's to fix."""
        window = self.cfg.context_length or await self.backend.context_length()
        prompt = prompt_tokens_estimate(messages)
        cap = await fitted_cap(self.backend, self.cfg.max_tokens, window, messages, prompt)
        if cap is None:
            cfg = self.cfg
            prompt = await self.backend.count_tokens(messages) or prompt
            raise UserError(f"planner: a prompt of about {prompt:,} tokens and a list of at least "
                            f"{min_room(cfg.max_tokens):,} (a quarter of its max_tokens {cfg.max_tokens:,}) do not fit "
                            f"its context_length of {window:,} tokens; use a model with a longer context "
                            "or lower [models.planner] max_tokens")
        return cap


def whole_lines(text: str, finish_reason: str) -> str:
    """A list reply without a reasoning model's ``<think>`` block, and without its last line
    when the cap cut it there: a half-written item ("What is the difference between") must
    never become an opening line."""
    text = strip_think(text)
    if finish_reason != "length":
        return text
    body = text.rstrip()
    return body.rsplit("\n", 1)[0] if "\n" in body else ""
