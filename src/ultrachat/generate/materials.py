"""Sector 3, Assistance on Existent Materials.

passages streamed from the user's corpus (C4's ``*.json.gz``, JSONL, Parquet, text, a
``datasets`` folder: :mod:`ultrachat.sources.passages`; or a Hugging Face dataset streamed
from the hub) -> selected by length bounds, deduplication and a seeded sample rate, taken
in a seeded hash order (or corpus order) -> up to 5 instructions per passage spanning rewriting, continuation,
summarisation, inference, question answering and translation -> each combined with its
passage by one of the editable templates (``prompts/<lang>/materials.toml``) -> one 2-4
round dialogue each, in which the user keeps referring to the material.

Nothing is loaded whole: passages are streamed, and the hash order keeps only the keys of
the passages it needs in memory (their texts wait in a spool file). Passage ``p``'s
instruction slot ``j`` becomes dialogue ``materials-s<seed>-p<p>-<j>``; a larger
``--dialogues`` keeps every earlier passage at its index and adds the next ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import math
import random
import threading
from collections.abc import Callable, Iterable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from ..core.hashing import HashIndex, TextSpool, digest, stable_seed
from ..core.text import clean_items, parse_list, words
from ..prompts import PromptError
from ..recipe import MaterialsConfig
from ..sources.passages import Passage, corpus_inputs, hub_passages, read_passages
from .planning import Assigned, PlanContext, ordered_map
from .sector import Opening, Sector

T = TypeVar("T")

PASSAGE_HEAD_CHARS = 160  # of the passage, quoted in the user simulator's goal


def source_files(cfg: MaterialsConfig, language: str) -> list[Path]:
    """The corpus inputs the recipe names (globs expanded, folders walked), or the bundled sample."""
    if not cfg.files:
        return [Path(str(resources.files("ultrachat.resources") / language / "sample_passages.jsonl"))]
    return corpus_inputs(cfg.files)


def raw_passages(cfg: MaterialsConfig, language: str) -> Iterator[Passage]:
    """Every passage of the corpus in order, streamed."""
    if cfg.dataset:
        yield from hub_passages(cfg.dataset, cfg.dataset_config, cfg.split, cfg.text_field)
        return
    for path in source_files(cfg, language):
        yield from read_passages(path, cfg.text_field, cfg.min_chars, cfg.split)


def eligible_passages(cfg: MaterialsConfig, language: str, seed: int) -> Iterator[tuple[int, Passage]]:
    """``(rank key, passage)`` of the passages within the length bounds and kept by the
    seeded ``sample_rate``; the key is a seeded 63-bit hash of the text's words (lower
    case, punctuation dropped), so duplicates up to case, punctuation and spacing share it.
    ``words`` (str.translate) rather than ``normalize`` (a regex): 5x faster on C4-size
    passages, where it was half the time of a scan."""
    for passage in raw_passages(cfg, language):
        if not cfg.min_chars <= len(passage.text) <= cfg.max_chars:
            continue
        text = " ".join(words(passage.text))
        key = stable_seed(seed, digest(text, 12).hex())
        if key / 2**63 < cfg.sample_rate:
            yield key, passage


def select_passages(cfg: MaterialsConfig, language: str, seed: int, want: int = 0) -> Iterator[Passage]:
    """The passages a run uses, in the order it uses them, each distinct text once.

    ``order = "file"``: corpus order, read only as far as the consumer goes. ``"hash"``: the
    passages with the smallest rank keys (a seeded bottom-k), smallest first, so a sample
    is spread over the whole corpus and the first ``k`` never change when more are asked
    for: a larger run extends a smaller one. The whole corpus is read once per ``want``
    (a hint of how many will be taken; asking past it reads it again for twice as many).
    """
    if cfg.passage_order == "file":
        seen = HashIndex()  # 8 bytes a passage
        yield from (p for key, p in eligible_passages(cfg, language, seed) if seen.add(key))
        return
    done, k = 0, max(want, 16)
    while True:
        with contextlib.closing(TextSpool()) as spool:
            ranked = bottom_k(eligible_passages(cfg, language, seed), k, spool)
            for i in ranked[done:]:
                yield Passage(spool[i + 1], spool[i])
        if len(ranked) < k:
            return
        done, k = len(ranked), 2 * k


def bottom_k(items: Iterable[tuple[int, Passage]], k: int, spool: TextSpool) -> list[int]:
    """The ``k`` passages of distinct keys with the smallest keys, ascending, as spool
    indices (source at ``i``, text at ``i + 1``). Memory: ``k`` keys; the texts of kept
    candidates go to ``spool`` (on disk)."""
    heap: list[tuple[int, int]] = []  # (-key, spool index): the largest kept key on top
    kept: set[int] = set()
    for key, passage in items:
        if key in kept or (len(heap) >= k and key >= -heap[0][0]):
            continue
        entry = (-key, spool.extend([passage.source, passage.text])[0])
        if len(heap) < k:
            heapq.heappush(heap, entry)
        else:
            kept.discard(-heapq.heapreplace(heap, entry)[0])
        kept.add(key)
    return [i for _, i in sorted(heap, reverse=True)]


async def off_loop(fn: Callable[[], T]) -> T:
    """``fn()`` in a daemon thread. A corpus scan can take minutes: it must not stall the
    event loop (in ``generate all`` other sectors' dialogues share it), and an interrupted
    run must not wait for it at exit (``asyncio.to_thread``'s threads are joined then)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if done.cancelled():
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)  # type: ignore[arg-type]

    def target() -> None:
        result, error = None, None
        try:
            result = fn()
        except BaseException as exc:  # handed to the awaiting task
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile (an interrupted run)
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=target, name="materials-scan", daemon=True).start()
    return await done


class MaterialsSector(Sector):
    """Assistance on Existent Materials: passages -> instructions -> templated openings -> 2-4 rounds."""

    name = "materials"
    rounds = (2, 4)
    distribution_keys = ("task", "template")

    def templates(self) -> list[tuple[str, str]]:
        """(name, template) pairs in play, in a seeded order."""
        names = [n.strip() for n in self.prompts.get("materials", "templates", "use").split(",") if n.strip()]
        out = [(n, self.prompts.get("materials", "templates", n)) for n in names]
        random.Random(stable_seed(self.recipe.seed, "templates")).shuffle(out)
        return out

    def _id(self, p: int, j: int) -> str:
        return f"materials-s{self.recipe.seed}-p{p:06d}-{j}"

    def wanted(self, openings: Iterator[Opening], dialogues: int) -> Iterator[Opening]:
        """The first N openings by (passage, slot): the plan file holds them in that order."""
        last = (-1, -1)
        for op in itertools.islice(openings, dialogues):
            at = (int(op.meta["passage_index"]), int(op.meta["slot"]))
            if at <= last:
                raise RuntimeError(f"plan/openings.jsonl is out of passage order at {op.id}; "
                                   "plan again into a new --out folder")
            last = at
            yield op

    def task_of(self, p: int, j: int) -> str:
        tasks = self.recipe.materials.tasks
        return tasks[(p * self.recipe.materials.instructions_per_passage + j) % len(tasks)]

    async def plan(self, ctx: PlanContext, dialogues: int, assigned: Assigned) -> None:
        cfg = self.recipe.materials
        # A quarter spare for replies with fewer instructions: asking past ``want`` reads the
        # corpus again (on the event loop; the first read is off it).
        want = math.ceil(1.25 * dialogues / cfg.instructions_per_passage) + 16
        passages = select_passages(cfg, self.recipe.language, self.recipe.seed, want)
        first = await off_loop(lambda: next(passages, None))  # the hash order reads the whole corpus here
        passages = itertools.chain([] if first is None else [first], passages)
        templates = self.templates()
        planned = 0  # openings of the passages read so far, earlier runs' included
        p = 0

        async def instructions(item: tuple[int, Passage]) -> tuple[int, Passage, list[str]]:
            return item[0], item[1], await self._instructions(ctx, item[0], item[1])

        for _wave in range(64):
            missing = dialogues - planned
            if missing <= 0:
                break
            take = math.ceil(missing / cfg.instructions_per_passage)
            if cfg.max_passages:
                take = min(take, cfg.max_passages - p)
            batch = zip(itertools.count(p), itertools.islice(passages, take))  # read as the calls go
            read = 0
            async for i, passage, items in ordered_map(instructions, batch, ctx.window):
                openings = self._openings(i, passage, items, templates)
                planned += len(openings)
                ctx.emit([op for op in openings if op.id not in assigned])
                read += 1
            if not read:
                break
            p += read

    async def _instructions(self, ctx: PlanContext, p: int, passage: Passage) -> list[str]:
        n = self.recipe.materials.instructions_per_passage
        tasks = "\n".join(self.prompts.render("materials", "instructions", "task_line", i=j + 1,
                                              task=self.prompts.get("materials", "tasks", self.task_of(p, j)))
                          for j in range(n))
        key = f"instructions|p{p}|{digest(passage.text).hex()}"
        prompt = self.prompts.render("materials", "instructions", n=n, tasks=tasks, text=passage.text)
        reply = await ctx.call("instructions", key, prompt, stable_seed(self.recipe.seed, key))
        return clean_items(parse_list(reply, n), question=False, max_units=120)

    def _openings(self, p: int, passage: Passage, items: list[str],
                  templates: list[tuple[str, str]]) -> list[Opening]:
        out = []
        n = self.recipe.materials.instructions_per_passage
        for j, instruction in enumerate(items):
            name, template = templates[(p * n + j) % len(templates)]
            lc = instruction[:1].lower() + instruction[1:] if instruction[1:2].islower() else instruction
            try:
                text = template.format(text=passage.text, instruction=instruction, instruction_lc=lc).strip()
            except (KeyError, IndexError, ValueError) as exc:
                raise PromptError(f"materials template '{name}': bad placeholder ({exc}); use {{text}}, "
                                  "{instruction} or {instruction_lc}") from None
            meta: dict[str, Any] = {"task": self.task_of(p, j), "template": name, "instruction": instruction,
                                    "passage_index": p, "slot": j, "source": passage.source,
                                    "passage_head": passage.text[:PASSAGE_HEAD_CHARS]}
            out.append(self.make_opening(self._id(p, j), text, meta))
        return out
