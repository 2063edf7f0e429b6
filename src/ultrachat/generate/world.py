"""Sector 1, Questions about the World.

meta topics -> subtopics -> questions per subtopic -> related questions per question ->
one dialogue per question. The budget of N dialogues is spread evenly over the topics
(a seeded order decides which topics get the remainder); each topic plans lazily, in
waves, only as many model calls as it needs to reach its quota after deduplication.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections import defaultdict
from typing import Any

from ..prompts import load_list
from .lists import clean_items, dedupe, normalize, parse_list
from .sector import Opening, PlanContext, Sector, stable_seed


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
    """Questions known for one topic, in a deterministic order, with their provenance."""

    def __init__(self) -> None:
        self.subtopics: list[str] = []
        self.questions: list[dict[str, Any]] = []  # {"text", "subtopic", "kind"}
        self.seen: set[str] = set()
        self.expanded_subtopics = 0
        self.expanded_questions = 0
        self.subtopic_batches = 0

    def add_questions(self, items: list[str], subtopic: str, kind: str, parent: str | None = None) -> None:
        for text in dedupe(items, self.seen):
            entry = {"text": text, "subtopic": subtopic, "kind": kind}
            if parent:
                entry["parent"] = parent
            self.questions.append(entry)


class WorldSector(Sector):
    """Questions about the World: meta topics -> subtopics -> questions -> 3-7 round dialogues."""

    name = "world"
    rounds = (3, 7)

    def topics(self) -> list[str]:
        cfg = self.recipe.world
        if cfg.topics:
            return cfg.topics
        return load_list("topics", self.recipe.language, cfg.topics_file)

    def _id(self, topic_index: int, k: int) -> str:
        return f"world-s{self.recipe.seed}-t{topic_index:03d}-{k:05d}"

    async def plan(self, ctx: PlanContext, dialogues: int, assigned: list[Opening]) -> list[Opening]:
        topics = self.topics()
        wanted = quotas(dialogues, topics, self.recipe.seed)
        by_topic: dict[int, list[Opening]] = defaultdict(list)
        for op in assigned:
            by_topic[int(op.meta["topic_index"])].append(op)
        jobs = [
            self._plan_topic(ctx, i, topic, wanted[i], by_topic[i])
            for i, topic in enumerate(topics)
            if wanted[i] > len(by_topic[i])
        ]
        results = await asyncio.gather(*jobs)
        return [op for ops in results for op in ops]

    def wanted(self, openings: list[Opening], dialogues: int) -> list[Opening]:
        topics = self.topics()
        wanted = quotas(dialogues, topics, self.recipe.seed)
        return [op for op in openings if int(op.meta["k"]) < wanted[int(op.meta["topic_index"])]]

    async def _plan_topic(self, ctx: PlanContext, index: int, topic: str, quota: int,
                          assigned: list[Opening]) -> list[Opening]:
        cfg = self.recipe.world
        pool = _TopicPool()
        used = {normalize(op.text) for op in assigned}
        need = quota - len(assigned)

        def available() -> list[dict[str, Any]]:
            return [q for q in pool.questions if normalize(q["text"]) not in used]

        for _wave in range(cfg.max_plan_waves):
            deficit = need - len(available())
            if deficit <= 0:
                break
            if pool.expanded_subtopics < len(pool.subtopics):
                take = pool.subtopics[pool.expanded_subtopics:pool.expanded_subtopics + math.ceil(deficit / 5)]
                pool.expanded_subtopics += len(take)
                replies = await asyncio.gather(*(self._questions(ctx, topic, s) for s in take))
                for sub, items in zip(take, replies, strict=True):
                    pool.add_questions(items, sub, "question")
            elif pool.expanded_questions < len(pool.questions):
                start = pool.expanded_questions
                take = pool.questions[start:start + math.ceil(deficit / 5)]
                pool.expanded_questions += len(take)
                replies = await asyncio.gather(*(self._related(ctx, topic, q["text"]) for q in take))
                for q, items in zip(take, replies, strict=True):
                    pool.add_questions(items, q["subtopic"], "related", parent=q["text"])
            else:
                batch = pool.subtopic_batches
                pool.subtopic_batches += 1
                prompt = self.prompts.render("world", "subtopics", n=cfg.subtopics_per_request, topic=topic)
                key = f"subtopics|{topic}|{batch}"
                text = await ctx.call("subtopics", key, prompt, stable_seed(self.recipe.seed, key))
                known = {normalize(s) for s in pool.subtopics}
                items = [_label(s) for s in parse_list(text, cfg.subtopics_per_request)]
                pool.subtopics += dedupe(items, known)
        chosen = _round_robin(available(), need)
        return [
            self.make_opening(
                self._id(index, len(assigned) + k),
                q["text"],
                {"topic": topic, "topic_index": index, "k": len(assigned) + k,
                 **{key: v for key, v in q.items() if key != "text"}},
            )
            for k, q in enumerate(chosen)
        ]

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


def _label(item: str) -> str:
    """A subtopic's name without the explanation models add ("Sleep: how rest affects...")."""
    head, sep, _ = item.partition(": ")
    return head.strip() if sep and len(head.split()) <= 8 else item


def _round_robin(items: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """Pick ``n`` items, alternating across subtopics so small runs still vary."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for item in items:
        groups[item["subtopic"]].append(item)
    out: list[dict[str, Any]] = []
    queues = list(groups.values())
    while len(out) < n and any(queues):
        for q in queues:
            if q and len(out) < n:
                out.append(q.pop(0))
    return out
