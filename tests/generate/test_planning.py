"""The streaming plan: openings go to plan/openings.jsonl as they are planned and are read
back through a bounded queue; the compact state (64-bit hash sets, the plan-call index,
the text spool) behaves like the sets and lists it replaces."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import pytest

from ultrachat.core.corpus import iter_jsonl
from ultrachat.core.hashing import HashIndex, TextSpool, hash64
from ultrachat.core.progress import RunProgress
from ultrachat.generate import runner
from ultrachat.generate.budget import TokenBudget
from ultrachat.generate.planning import ordered_map, round_robin
from ultrachat.generate.runner import generate
from ultrachat.generate.sector import Opening
from ultrachat.generate.world import WorldSector
from ultrachat.recipe import load_recipe


def test_hash_index_is_a_set_and_a_map_across_merges(monkeypatch) -> None:
    monkeypatch.setattr(HashIndex, "TAIL", 7)  # merge the recent additions often
    rng = random.Random(1)
    keys = [f"id-{rng.random()}" for _ in range(300)]
    index = HashIndex(keys[:100], range(100))
    assert len(index) == 100
    for i, key in enumerate(keys[100:], 100):
        assert index.add(key, i)
        assert not index.add(key, -1 % 2**64)  # the first value stays
    assert len(index) == 300
    assert all(index.get(k) == i for i, k in enumerate(keys))
    assert all(k in index and hash64(k) in index for k in keys)
    assert "id-absent" not in index and index.get("id-absent") is None and None not in index
    dup = HashIndex(["a", "b", "a"], [1, 2, 3])
    assert len(dup) == 2 and dup.get("a") == 1  # duplicates: the first one wins


def test_text_spool_gives_back_what_it_was_given(tmp_path: Path) -> None:
    spool = TextSpool(tmp_path)
    assert list(spool.extend(["one", "", "深度学习是什么？"])) == [0, 1, 2]
    assert list(spool.extend(["é" * 1000])) == [3]
    assert [spool[i] for i in range(len(spool))] == ["one", "", "深度学习是什么？", "é" * 1000]
    assert list(tmp_path.iterdir()) == []  # the file is unlinked: nothing is left behind
    spool.close()


async def test_ordered_map_keeps_input_order_and_its_limit() -> None:
    running = peak = 0

    async def slow(i: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(random.random() / 200)
        running -= 1
        return i * i

    assert [r async for r in ordered_map(slow, range(60), 8)] == [i * i for i in range(60)]
    assert peak == 8
    peak = 0
    shared = asyncio.Semaphore(6)  # one budget for several maps, as the topics of a plan share one

    async def collect(start: int) -> list[int]:
        return [r async for r in ordered_map(slow, range(start, start + 40), shared)]

    a, b = await asyncio.gather(collect(0), collect(100))
    assert a == [i * i for i in range(40)] and b == [i * i for i in range(100, 140)]
    assert peak == 6


def test_round_robin_alternates_groups_in_first_appearance_order() -> None:
    items = ["a1", "b1", "a2", "a3", "c1", "b2"]
    assert list(round_robin(items, 5, key=lambda s: s[0])) == ["a1", "b1", "c1", "a2", "b2"]
    assert list(round_robin(items, 99, key=lambda s: s[0])) == ["a1", "b1", "c1", "a2", "b2", "a3"]


async def test_dialogue_phase_reads_the_plan_through_a_bounded_queue() -> None:
    """The feeder never runs more than the queue's length ahead of the workers."""
    taken = 0
    ahead = 0

    class Stream:
        def __iter__(self):
            nonlocal taken
            for i in range(500):
                taken += 1
                yield Opening(f"d{i}", "q?", 1, i)

        def __len__(self) -> int:
            return 500

    started = 0

    class Engine:
        async def run(self, op: Opening) -> dict:
            nonlocal started, ahead
            started += 1
            ahead = max(ahead, taken - started)
            await asyncio.sleep(0)
            return {"id": op.id, "data": [op.text, "a"], "meta": {"tokens": {}}}

    written: list[str] = []

    class Store:
        def save_dialogues(self, batch: list[dict]) -> None:
            written.extend(d["id"] for d in batch)

    stopped = await runner._run_dialogues(Engine(), Stream(), Store(), RunProgress(enabled=False),  # type: ignore[arg-type]
                                          TokenBudget(0), concurrency=4)
    assert not stopped and sorted(written) == sorted(f"d{i}" for i in range(500))
    assert ahead <= 2 * 4 + 1  # the queue (2 x workers) plus the one being put


def _world(tmp_path: Path, fake_recipe_file, out: str, n: int):
    recipe = load_recipe(fake_recipe_file(), {"dialogues": n, "out": str(tmp_path / out), "seed": 3})
    return generate("world", recipe, progress=False)


def test_world_plan_window_does_not_change_the_plan(tmp_path: Path, fake_recipe_file, monkeypatch) -> None:
    """Topics planned a few at a time (a window of 40 dialogues instead of all at once)
    give the same openings and dialogues, and each topic's openings are written as its
    pool completes, in k order."""
    wide = _world(tmp_path, fake_recipe_file, "wide", 150)
    monkeypatch.setattr(WorldSector, "plan_window", 40)
    narrow = _world(tmp_path, fake_recipe_file, "narrow", 150)
    assert wide.planned == narrow.planned == 150 and narrow.distribution == wide.distribution

    def lines(out: str, name: str) -> list[str]:
        return sorted((tmp_path / out / name).read_text(encoding="utf-8").splitlines())

    for name in ("plan/openings.jsonl", "dialogues.jsonl"):
        assert lines("wide", name) == lines("narrow", name)
    ks: dict[int, list[int]] = {}
    for op in iter_jsonl(tmp_path / "narrow" / "plan" / "openings.jsonl", validate=False):
        ks.setdefault(op["meta"]["topic_index"], []).append(op["meta"]["k"])
    assert all(k == list(range(len(k))) for k in ks.values())


def test_plan_calls_are_read_back_from_disk_and_checked(tmp_path: Path, fake_recipe_file) -> None:
    """A rerun replays every plan call from calls.jsonl (no planner call at all), and
    growing the run extends the plan: earlier openings keep their ids and texts."""
    first = _world(tmp_path, fake_recipe_file, "out", 60)
    plan = tmp_path / "out" / "plan"
    before = (plan / "openings.jsonl").read_text(encoding="utf-8").splitlines()
    calls = len((plan / "calls.jsonl").read_text(encoding="utf-8").splitlines())
    again = _world(tmp_path, fake_recipe_file, "out", 60)
    assert again.plan_tokens == 0 and again.stats.dialogues == 0 and again.already_done == 60
    assert len((plan / "calls.jsonl").read_text(encoding="utf-8").splitlines()) == calls
    grown = _world(tmp_path, fake_recipe_file, "out", 130)
    after = (plan / "openings.jsonl").read_text(encoding="utf-8").splitlines()
    assert after[:len(before)] == before and len(after) == 130
    assert grown.already_done == 60 and grown.stats.dialogues == 70 and first.stats.dialogues == 60
    ids = [json.loads(line)["id"] for line in (tmp_path / "out" / "dialogues.jsonl").read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 130


def test_a_plan_cut_mid_way_keeps_what_it_emitted(tmp_path: Path, fake_recipe_file, monkeypatch) -> None:
    """Openings are on disk as soon as a topic is planned: a plan that stops part way (here
    the token budget) leaves complete topics in openings.jsonl, and the rerun plans only
    the rest, to the same result as an uninterrupted run."""
    monkeypatch.setattr(WorldSector, "plan_window", 10)  # topics one after another
    ref = _world(tmp_path, fake_recipe_file, "ref", 90)
    recipe = load_recipe(fake_recipe_file(), {"dialogues": 90, "out": str(tmp_path / "cut"), "seed": 3,
                                              "max_total_tokens": 3000})
    cut = generate("world", recipe, progress=False)
    assert cut.budget_stopped
    partial = (tmp_path / "cut" / "plan" / "openings.jsonl").read_text(encoding="utf-8").splitlines()
    assert 0 < len(partial) < 90
    done = _world(tmp_path, fake_recipe_file, "cut", 90)
    assert done.planned == ref.planned == 90
    for name in ("plan/openings.jsonl", "dialogues.jsonl"):
        got = sorted((tmp_path / "cut" / name).read_text(encoding="utf-8").splitlines())
        assert got == sorted((tmp_path / "ref" / name).read_text(encoding="utf-8").splitlines())


def test_materials_refuses_a_plan_file_out_of_passage_order(tmp_path: Path, fake_recipe_file) -> None:
    recipe = load_recipe(fake_recipe_file(), {"dialogues": 12, "out": str(tmp_path / "m")})
    generate("materials", recipe, progress=False)
    path = tmp_path / "m" / "plan" / "openings.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines()
    path.write_text("\n".join([lines[1], lines[0], *lines[2:]]) + "\n", encoding="utf-8")
    with pytest.raises(RuntimeError, match="out of passage order"):
        generate("materials", recipe, progress=False)


@pytest.mark.parametrize(("sector", "n"), [("world", 360), ("entities", 120)])
def test_a_kill_while_openings_are_written_resumes_to_the_same_plan(tmp_path: Path, fake_recipe_file, monkeypatch,
                                                                     killed_after_emits, sector: str, n: int) -> None:
    """A topic's (or kind's) openings go out in several writes; a kill between two of them
    leaves a prefix on disk. The rerun redoes that plan and writes only the rest, so ids,
    texts and dialogues equal an uninterrupted run's (picking afresh from the unused
    questions would give the same set of texts under other ids)."""
    from ultrachat.generate import entities, world

    for module in (world, entities):
        monkeypatch.setattr(module, "EMIT_BATCH", 2)

    def run(out: str):
        recipe = load_recipe(fake_recipe_file(), {"dialogues": n, "out": str(tmp_path / out), "seed": 5})
        return generate(sector, recipe, progress=False)

    run("ref")
    killed_after_emits(7, lambda: run("cut"))
    written = (tmp_path / "cut" / "plan" / "openings.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(written) == 14  # seven writes of two, the last one part of a group
    assert run("cut").planned == n
    for name in ("plan/openings.jsonl", "dialogues.jsonl"):
        got = sorted((tmp_path / "cut" / name).read_text(encoding="utf-8").splitlines())
        assert got == sorted((tmp_path / "ref" / name).read_text(encoding="utf-8").splitlines())
