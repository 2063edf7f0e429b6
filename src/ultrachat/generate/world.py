"""Sector 1, Questions about the World.

meta topics -> subtopics -> questions per subtopic -> related questions per question ->
one dialogue per question. The budget of N dialogues is spread evenly over the topics
(a seeded order decides which topics get the remainder); each topic plans lazily, in
waves, only as many model calls as it needs to reach its quota after deduplication, and
emits its openings when its pool is complete. Topics plan side by side while their quotas
sum to at most ``plan_window`` dialogues, so memory does not grow with the run.

Breadth before depth: a topic asks for more subtopics (each request listing the ones it
has, so the model names new ones) until its share of ``world.subtopics`` (the paper's
~1,100 over 30 topics) is reached or its quota is covered, expands every subtopic into
questions, and only then goes into related questions, one level at a time and taking
turns over the subtopics, so no subtopic goes deep while another stays shallow.
"""

from __future__ import annotations

import asyncio
import math
import random
from array import array
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import closing
from typing import Any

from ..core.hashing import HashIndex, TextSpool, stable_seed
from ..core.text import clean_items, dedupe, normalize, parse_list
from ..prompts import PromptError, load_list
from .planning import EMIT_BATCH, Assigned, PlanContext, ordered_map, round_robin
from .sector import Opening, Sector


def quotas(n: int, topics: list[str], seed: int) -> list[int]:
    """Split ``n`` evenly over ``topics``; a seeded order picks who gets the remainder.
    Each topic's quota never shrinks when ``n`` grows."""
    order = list(range(len(topics)))
    random.Random(seed).shuffle(order)
    base, extra = divmod(n, len(topics))
    out = [base] * len(topics)
    for rank, idx in enumerate(order):
        if rank < extra:
            out[idx] += 1
    return out


class _TopicPool:
    """Questions known for one topic, in a deterministic order, with their provenance.

    Compact: the texts wait in a spool file and each question costs about 30 bytes of
    memory (offsets, subtopic and parent indices, a 64-bit hash of its normalised text)."""

    def __init__(self, spool: TextSpool, used: Callable[[str], bool]) -> None:
        self.subtopics: list[str] = []
        self.texts = spool
        self.subtopic = array("I")  # index into subtopics, per question
        self.parent = array("q")  # index of the question it was derived from, or -1
        self.depth = array("B")  # 0: asked about its subtopic, 1: related to one, 2: related to a related...
        # Questions not yet expanded into related ones, per subtopic, in the order they came.
        self.frontier: list[array[int]] = []
        self.head: list[int] = []
        self.cursor = 0  # the subtopic whose turn it is to have a question expanded
        self.usable = bytearray()  # 1 where no earlier run's opening uses the question
        self.available = 0
        self.replies = 0  # question lists applied (subtopic and related requests)
        self.seen = HashIndex()
        self.used = used  # whether an earlier opening of the topic has this text
        self.expanded_subtopics = 0
        self.subtopic_batches = 0
        self.subtopics_dry = False  # a subtopic request brought nothing new: stop asking before depth

    def __len__(self) -> int:
        return len(self.subtopic)

    def add_subtopics(self, names: list[str]) -> int:
        for _ in names:
            self.frontier.append(array("I"))
            self.head.append(0)
        self.subtopics += names
        return len(names)

    def per_reply(self) -> float:
        """Usable new questions a list request brought so far, between 1 and 5 (5 before any
        reply): how many requests a wave needs for its deficit, so a model that lists few
        questions gets more requests per wave instead of running out of waves."""
        if not self.replies:
            return 5.0
        return min(5.0, max(1.0, self.available / self.replies))

    def add_questions(self, items: list[str], subtopic: int, parent: int = -1) -> None:
        self.replies += 1
        new = [t for t in items if (key := normalize(t)) and self.seen.add(key)]
        self.texts.extend(new)
        depth = 0 if parent < 0 else min(255, self.depth[parent] + 1)
        for text in new:
            self.frontier[subtopic].append(len(self.subtopic))
            self.subtopic.append(subtopic)
            self.parent.append(parent)
            self.depth.append(depth)
            ok = not self.used(text)
            self.usable.append(ok)
            self.available += ok

    @property
    def unexpanded(self) -> bool:
        return any(h < len(f) for f, h in zip(self.frontier, self.head, strict=True))

    def next_to_expand(self, n: int) -> list[int]:
        """Up to ``n`` questions to expand into related ones: the shallowest first, the
        subtopics taking turns (a cursor carried over waves), each in the order they came."""
        out: list[int] = []
        subs = len(self.frontier)
        while len(out) < n:
            heads = [(self.depth[f[h]], s) for s, (f, h) in enumerate(zip(self.frontier, self.head, strict=True))
                     if h < len(f)]
            if not heads:
                break
            level = min(d for d, _ in heads)
            ready = {s for d, s in heads if d == level}
            start = self.cursor
            for step in range(subs):
                s = (start + step) % subs
                if s in ready and len(out) < n:
                    out.append(self.frontier[s][self.head[s]])
                    self.head[s] += 1
                    self.cursor = (s + 1) % subs
        return out


class WorldSector(Sector):
    """Questions about the World: meta topics -> subtopics -> questions -> 3-7 round dialogues."""

    name = "world"
    rounds = (3, 7)
    #: Topics are planned at once while their quotas sum to at most this many dialogues
    #: (always at least one), so the planner's pools stay small however large the run.
    plan_window = 200_000

    def topics(self) -> list[str]:
        cfg = self.recipe.world
        if cfg.topics:
            return cfg.topics
        return load_list("topics", self.recipe.language, cfg.topics_file)

    def subtopic_targets(self, topics: list[str]) -> list[int]:
        """Subtopics each topic asks for before going into related questions: the recipe's
        ``world.subtopics`` spread over the topics (at least one each)."""
        return [max(1, t) for t in quotas(self.recipe.world.subtopics, topics, self.recipe.seed)]

    def _id(self, topic_index: int, k: int) -> str:
        return f"world-s{self.recipe.seed}-t{topic_index:03d}-{k:05d}"

    def plan_group(self, opening: Opening) -> str:
        return str(opening.meta["topic_index"])

    async def plan(self, ctx: PlanContext, dialogues: int, assigned: Assigned) -> None:
        topics = self.topics()
        wanted = quotas(dialogues, topics, self.recipe.seed)
        jobs = [(i, topic, max(1, wanted[i] - assigned.count(str(i)))) for i, topic in enumerate(topics)
                if wanted[i] > assigned.count(str(i)) or f"world/{i}" in assigned.pending]
        running: dict[asyncio.Task[None], int] = {}
        try:
            for i, topic, need in jobs:
                while running and sum(running.values()) + need > self.plan_window:
                    finished, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                    for task in finished:
                        del running[task]
                        task.result()
                running[asyncio.create_task(self._plan_topic(ctx, i, topic, wanted[i], assigned))] = need
            for task in list(running):
                await task
                del running[task]
        finally:
            for task in running:
                task.cancel()

    def wanted(self, openings: Iterator[Opening], dialogues: int) -> Iterator[Opening]:
        topics = self.topics()
        wanted = quotas(dialogues, topics, self.recipe.seed)
        return (op for op in openings if int(op.meta["k"]) < wanted[int(op.meta["topic_index"])])

    async def _plan_topic(self, ctx: PlanContext, index: int, topic: str, quota: int, assigned: Assigned) -> None:
        group, name = str(index), f"world/{index}"
        have = assigned.count(group)

        def used(text: str) -> bool:
            return assigned.has_text(group, text)

        cut = assigned.pending.get(name)
        if cut:  # a kill cut this topic's openings short: redo that plan, write only its rest
            start, end = cut["from"][group], cut["quota"][group]
            picked = await self._plan_round(ctx, index, topic, start, end, have - start, used)
            if quota <= end:
                return
            have = start + len(picked)

            # the rerun widens `used` by the redone plan's picks (same call signature)
            def used(text: str, earlier: Callable[[str], bool] = used) -> bool:  # type: ignore[misc]
                return earlier(text) or normalize(text) in picked

        await self._plan_round(ctx, index, topic, have, quota, 0, used)

    async def _plan_round(self, ctx: PlanContext, index: int, topic: str, start: int, quota: int, skip: int,
                          used: Callable[[str], bool]) -> HashIndex:
        """Plan openings ``start <= k < quota`` of a topic from questions not ``used``; write
        all but the first ``skip`` (a cut run wrote them). Returns the picks' text hashes."""
        group, name = str(index), f"world/{index}"
        ctx.begin(name, {group: start}, {group: quota})
        with closing(ctx.spool()) as spool:
            pool = _TopicPool(spool, used)
            await self._fill(ctx, index, topic, pool, quota - start)
            picked = self._emit(ctx, index, topic, pool, start, quota - start, skip)
        ctx.end(name)
        return picked

    async def _fill(self, ctx: PlanContext, index: int, topic: str, pool: _TopicPool, need: int) -> None:
        """Grow the topic's pool in waves until it holds ``need`` usable questions (or
        ``max_plan_waves`` runs out)."""
        cfg = self.recipe.world
        target = self.subtopic_targets(self.topics())[index]
        for _wave in range(cfg.max_plan_waves):
            deficit = need - pool.available
            if deficit <= 0:
                break
            if pool.expanded_subtopics < len(pool.subtopics):
                first = pool.expanded_subtopics
                take = range(first, min(len(pool.subtopics), first + math.ceil(deficit / pool.per_reply())))
                pool.expanded_subtopics += len(take)
                replies = ordered_map(lambda s: self._questions(ctx, topic, pool.subtopics[s]), take, ctx.window)
                for sub, items in zip(take, [r async for r in replies], strict=True):
                    pool.add_questions(items, sub)
            elif len(pool.subtopics) < target and not pool.subtopics_dry:
                # Breadth first: enough new subtopics for the deficit, up to the topic's target.
                want = max(cfg.subtopics_per_request, math.ceil(deficit / cfg.questions_per_subtopic))
                await self._more_subtopics(ctx, topic, pool, min(target, len(pool.subtopics) + want))
            elif pool.unexpanded:
                asked = pool.next_to_expand(math.ceil(deficit / pool.per_reply()))
                related = ordered_map(lambda q: self._related(ctx, topic, pool.texts[q]), asked, ctx.window)
                async for q, items in _zip_async(asked, related):  # in order as they come: the same pool every run
                    pool.add_questions(items, pool.subtopic[q], parent=q)
            else:  # everything expanded and still short: past the target, one batch at a time
                pool.subtopics_dry = False
                await self._more_subtopics(ctx, topic, pool, len(pool.subtopics) + cfg.subtopics_per_request)

    def _emit(self, ctx: PlanContext, index: int, topic: str, pool: _TopicPool, start: int, need: int,
              skip: int) -> HashIndex:
        """Pick ``need`` usable questions round-robin over the subtopics and write them as
        openings ``start, start + 1, ...``, but the first ``skip``; the picks' text hashes."""
        picked = HashIndex()
        out: list[Opening] = []
        usable = (i for i, ok in enumerate(pool.usable) if ok)
        for k, q in enumerate(round_robin(usable, need, key=pool.subtopic.__getitem__), start):
            text = pool.texts[q]
            picked.add(normalize(text))
            if k < start + skip:
                continue
            meta: dict[str, Any] = {"topic": topic, "topic_index": index, "k": k,
                                    "subtopic": pool.subtopics[pool.subtopic[q]],
                                    "kind": "question" if pool.parent[q] < 0 else "related",
                                    "depth": pool.depth[q]}
            if pool.parent[q] >= 0:
                meta["parent"] = pool.texts[pool.parent[q]]
            out.append(self.make_opening(self._id(index, k), text, meta))
            if len(out) >= EMIT_BATCH:
                ctx.emit(out)
                out = []
        ctx.emit(out)
        return picked

    async def _more_subtopics(self, ctx: PlanContext, topic: str, pool: _TopicPool, until: int) -> None:
        """Ask for subtopics, one request at a time (each names the ones known so far, so the
        model lists new ones), until the topic has ``until`` or a request brings nothing new."""
        cfg = self.recipe.world
        while len(pool.subtopics) < until:
            batch = pool.subtopic_batches
            pool.subtopic_batches += 1
            prompt = self.prompts.render("world", "subtopics", n=cfg.subtopics_per_request, topic=topic)
            if pool.subtopics:
                prompt += self._known_subtopics(pool.subtopics)
            key = f"subtopics|{topic}|{batch}"
            text = await ctx.call("subtopics", key, prompt, stable_seed(self.recipe.seed, key))
            known = {normalize(s) for s in pool.subtopics}
            items = [_label(s) for s in parse_list(text, cfg.subtopics_per_request)]
            if not pool.add_subtopics(dedupe(items, known)[:until - len(pool.subtopics)]):
                pool.subtopics_dry = True
                return

    def _known_subtopics(self, known: list[str]) -> str:
        """The ``[subtopics] more`` line listing the subtopics a topic has (empty when a
        prompt folder does not define it)."""
        try:
            return self.prompts.render("world", "subtopics", "more", known="; ".join(known))
        except PromptError:
            return ""

    async def _questions(self, ctx: PlanContext, topic: str, subtopic: str) -> list[str]:
        return await self._ask(ctx, "questions", topic, subtopic, self.recipe.world.questions_per_subtopic,
                               subtopic=subtopic)

    async def _related(self, ctx: PlanContext, topic: str, question: str) -> list[str]:
        return await self._ask(ctx, "related", topic, question, self.recipe.world.related_per_question,
                               question=question)

    async def _ask(self, ctx: PlanContext, stage: str, topic: str, subject: str, n: int, **values: str) -> list[str]:
        """One cached list request of ``stage`` about ``subject``; returns the questions in the reply."""
        key = f"{stage}|{topic}|{normalize(subject)}"
        prompt = self.prompts.render("world", stage, n=n, topic=topic, **values)
        text = await ctx.call(stage, key, prompt, stable_seed(self.recipe.seed, key))
        return clean_items(parse_list(text, n), question=True, max_units=60)


async def _zip_async(items: list[int], results: AsyncIterator[list[str]]) -> AsyncIterator[tuple[int, list[str]]]:
    i = 0
    async for r in results:
        yield items[i], r
        i += 1


def _label(item: str) -> str:
    """A subtopic's name without the explanation models add ("Sleep: how rest affects...")."""
    head, sep, _ = item.partition(": ")
    return head.strip() if sep and len(head.split()) <= 8 else item
