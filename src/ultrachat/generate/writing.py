"""Sector 2, Writing and Creation.

writing types (the 20 built-in ones, or the recipe's) -> distinct instructions per type (as
many as the type's quota, or at most ``instructions_per_type``), planned in batches -> a
share (``expand_share``, default 80%) rewritten with concrete detail -> one 2-4 round
dialogue each, in which the user simulator is reminded of the writing goal on every turn.

The budget of N dialogues is spread evenly over the types (a seeded order of the types
decides who gets the remainder). Dialogue ``k`` of a type uses instruction ``k``: every
instruction opens one dialogue, so none is expanded twice. Its position in the whole run
is ``k * types + rank`` (the type's place in the seeded order), so the N dialogues of a run
hold positions 0..N-1, and position ``i`` is expanded when
``floor((i+1)*share) > floor(i*share)``: every run holds the configured share.

Batches are varied so a type's thousands of instructions are not one prompt's favourites:
each batch's prompt names an audience, a length and a tone drawn from ``[variety]`` in
``prompts/<lang>/writing.toml``, and from the second wave on it shows a few instructions of
earlier waves to steer away from. The draws are seeded by the batch key, and the batches
fall into fixed waves (1, 8, 64, ... batches) whose examples come only from earlier waves,
so batch ``b``'s prompt is the same whatever the quota: a resumed or extended run replays
the same calls and keeps every instruction at its place.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Iterator
from contextlib import closing
from functools import partial
from typing import Any

from ..core.hashing import HashIndex, TextSpool, stable_seed
from ..core.text import clean_items, normalize, parse_list, text_units
from ..core.turns import strip_role_prefix
from ..prompts import PromptError, load_list
from .planning import EMIT_BATCH, Assigned, PlanContext, ordered_map
from .sector import Opening, Sector
from .world import quotas


def is_expanded(k: int, share: float) -> bool:
    """Whether dialogue ``k`` of a type gets an expanded instruction.

    >>> [is_expanded(k, 0.8) for k in range(5)]
    [False, True, True, True, True]
    """
    return math.floor((k + 1) * share + 1e-9) > math.floor(k * share + 1e-9)


def one_request(reply: str) -> str:
    """The rewritten request in a planner reply: preamble lines ("Here is...:") dropped."""
    lines = [ln.strip() for ln in reply.strip().splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.endswith((":", "："))] or lines
    # Small models often open a quote they never close, or close one they never opened.
    return strip_role_prefix(" ".join(lines)).strip('"“”') if lines else ""


class WritingSector(Sector):
    """Writing and Creation: writing types -> instructions -> detailed instructions -> 2-4 rounds."""

    name = "writing"
    rounds = (2, 4)
    distribution_keys = ("writing_type", "expanded")

    def types(self) -> list[str]:
        cfg = self.recipe.writing
        return cfg.types or load_list("writing_types", self.recipe.language, cfg.types_file)

    def ranks(self, types: list[str]) -> list[int]:
        """Each type's place in the seeded order :func:`~.world.quotas` gives remainders in."""
        order = list(range(len(types)))
        random.Random(self.recipe.seed).shuffle(order)
        rank = [0] * len(types)
        for r, idx in enumerate(order):
            rank[idx] = r
        return rank

    def _id(self, type_index: int, k: int) -> str:
        return f"writing-s{self.recipe.seed}-w{type_index:02d}-{k:05d}"

    def plan_group(self, opening: Opening) -> str:
        return str(opening.meta["type_index"])

    def instruction_target(self, quota: int) -> int:
        """Distinct instructions a type with ``quota`` dialogues asks for."""
        cap = self.recipe.writing.instructions_per_type
        return min(quota, cap) if cap else quota

    def wanted(self, openings: Iterator[Opening], dialogues: int) -> Iterator[Opening]:
        wanted = quotas(dialogues, self.types(), self.recipe.seed)
        return (op for op in openings if int(op.meta["k"]) < wanted[int(op.meta["type_index"])])

    async def plan(self, ctx: PlanContext, dialogues: int, assigned: Assigned) -> None:
        types = self.types()
        wanted = quotas(dialogues, types, self.recipe.seed)
        rank = self.ranks(types)
        await asyncio.gather(*(self._plan_type(ctx, i, t, assigned.count(str(i)), wanted[i], len(types), rank[i])
                               for i, t in enumerate(types) if wanted[i] > assigned.count(str(i))))

    async def _instructions(self, ctx: PlanContext, writing_type: str, count: int, pool: TextSpool) -> None:
        """Fill ``pool`` with the first ``count`` distinct instructions of a type (fewer if
        the planner runs dry), batch by batch in key order."""
        cfg = self.recipe.writing
        seen = HashIndex()
        batch = 0
        earlier = 0  # instructions from the waves before the current batch's wave
        for _wave in range(cfg.max_plan_waves):
            missing = count - len(pool)
            if missing <= 0:
                break
            first, end = wave_span(batch)
            if batch == first:
                earlier = len(pool)
            take = range(batch, min(end, batch + math.ceil(missing / cfg.instructions_per_request)))
            replies = ordered_map(partial(self._batch, ctx, writing_type, pool=pool, earlier=earlier), take,
                                  ctx.window)
            async for items in replies:  # in batch order: the same pool every run
                new = [t for t in items if seen.add(normalize(t))]
                pool.extend(new[:count - len(pool)])
            batch = take.stop

    async def _batch(self, ctx: PlanContext, writing_type: str, batch: int, pool: TextSpool, earlier: int) -> list[str]:
        n = self.recipe.writing.instructions_per_request
        key = f"instructions|{writing_type}|{batch}"
        prompt = self.prompts.render("writing", "instructions", n=n, writing_type=writing_type)
        prompt += self._variety(random.Random(stable_seed(self.recipe.seed, key)), pool, earlier)
        reply = await ctx.call("instructions", key, prompt, stable_seed(self.recipe.seed, key))
        return clean_items(parse_list(reply, n), question=False)

    def _variety(self, rng: random.Random, pool: TextSpool, earlier: int) -> str:
        """The batch's audience, length and tone, and up to 3 examples of the ``earlier``
        instructions (none in the first wave). Empty when a prompt folder drops ``[variety]``."""
        try:
            picks = {name: rng.choice(self.prompts.get_list("writing", "variety", f"{name}s"))
                     for name in ("audience", "length", "tone")}
            text = self.prompts.render("writing", "instructions", "vary", **picks)
            if earlier:
                shown = "\n".join(f"- {pool[i]}" for i in sorted(rng.sample(range(earlier), min(3, earlier))))
                text += self.prompts.render("writing", "instructions", "examples", examples=shown)
        except PromptError:
            return ""
        return text

    async def _expand(self, ctx: PlanContext, writing_type: str, k: int, instruction: str) -> str | None:
        key = f"expand|{writing_type}|{k}|{normalize(instruction)}"
        prompt = self.prompts.render("writing", "expand", instruction=instruction, writing_type=writing_type)
        text = one_request(await ctx.call("expand", key, prompt, stable_seed(self.recipe.seed, key)))
        return text if 3 <= text_units(text) <= 200 and normalize(text) != normalize(instruction) else None

    async def _plan_type(self, ctx: PlanContext, index: int, writing_type: str, have: int,
                         quota: int, types: int, rank: int) -> None:
        """Openings ``have..quota-1`` of one type; dialogue ``k`` holds run position ``k * types + rank``."""
        cfg = self.recipe.writing
        with closing(ctx.spool()) as pool:
            await self._instructions(ctx, writing_type, self.instruction_target(quota), pool)

            async def opening(k: int) -> Opening:
                base = pool[k]
                text = await self._expand(ctx, writing_type, k, base) \
                    if is_expanded(k * types + rank, cfg.expand_share) else None
                meta: dict[str, Any] = {"writing_type": writing_type, "type_index": index, "k": k,
                                        "instruction": base, "expanded": text is not None}
                return self.make_opening(self._id(index, k), text or base, meta)

            batch: list[Opening] = []
            async for op in ordered_map(opening, range(have, min(quota, len(pool))), ctx.window):
                batch.append(op)
                if len(batch) >= EMIT_BATCH:
                    ctx.emit(batch)
                    batch = []
            ctx.emit(batch)


def wave_span(batch: int, growth: int = 8) -> tuple[int, int]:
    """The fixed wave ``[first, end)`` of instruction batches that ``batch`` belongs to:
    waves of 1, 8, 64... batches; a batch's examples come only from earlier waves.

    >>> [wave_span(b) for b in (0, 1, 8, 9, 73)]
    [(0, 1), (1, 9), (1, 9), (9, 73), (73, 585)]
    """
    first, size = 0, 1
    while batch >= first + size:
        first, size = first + size, size * growth
    return first, first + size
