"""Sector 1's breadth: subtopics asked for up to the recipe's total before related questions,
questions spread over the subtopics level by level, the dry run's counts per level, and a
kill while a deep plan is written resuming to the same plan."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from ultrachat import aio
from ultrachat.generate.dryrun import plan_report, world_waves
from ultrachat.generate.runner import generate, generate_async
from ultrachat.recipe import Recipe, WorldConfig, load_recipe


def item(prompt: str, h: str, i: int) -> str:
    """Items unique to the prompt: subtopics for a subtopic request, else questions."""
    kind = "subtopic" if "subtopics" in prompt.split("\n")[0] else "question"
    return f"A {kind} {h} number {chr(96 + i)}?"


def run_world(recipe: Recipe, list_pool) -> tuple[list[dict], list[dict], object]:
    pool = list_pool(item)
    aio.run(generate_async("world", recipe, progress=False, pool=pool))
    out = Path(recipe.out or "")
    openings = [json.loads(line) for line in (out / "plan" / "openings.jsonl").read_text().splitlines()]
    calls = [json.loads(line) for line in (out / "plan" / "calls.jsonl").read_text().splitlines()]
    return openings, calls, pool


def small_recipe(path: Path, out: Path, dialogues: int, **world: object) -> Recipe:
    settings = {"world.topics": ["Oceans", "Music"], "world.subtopics": 6, "world.subtopics_per_request": 2,
                "world.questions_per_subtopic": 2, "world.related_per_question": 2,
                **{f"world.{k}": v for k, v in world.items()}}
    return load_recipe(path, {"dialogues": dialogues, "out": str(out), "dialogue.max_rounds": 1, **settings})


def test_subtopics_reach_the_target_before_related_questions(tmp_path: Path, fake_recipe_file, list_pool) -> None:
    # 20 a topic: 3 subtopics x 2 questions = 6, then related questions for the other 14
    openings, calls, pool = run_world(small_recipe(fake_recipe_file(), tmp_path / "out", 40), list_pool)
    assert len(openings) == 40
    for topic in ("Oceans", "Music"):
        mine = [o["meta"] for o in openings if o["meta"]["topic"] == topic]
        per_sub = Counter(m["subtopic"] for m in mine)
        assert len(per_sub) == 3  # its share of 6; the second request's extra subtopic is not used
        assert max(per_sub.values()) - min(per_sub.values()) <= 2  # at most one related request apart
        depths = Counter(m["depth"] for m in mine)
        assert depths[0] == 6 and depths[1] == 12 and depths[2] == 2  # shallowest first
        assert all((m["kind"] == "question") == (m["depth"] == 0) for m in mine)
    stages = Counter(c["stage"] for c in calls)
    assert stages["subtopics"] == 4 and stages["questions"] == 6
    # The later subtopic request names the ones the topic has, so the model lists new ones.
    prompts = [m[-1]["content"] for m in pool.fake.calls if "subtopics" in m[-1]["content"].split("\n")[0]]
    assert sum("It already has these subtopics" in p for p in prompts) == 2


def test_a_small_run_asks_only_for_what_it_needs(tmp_path: Path, fake_recipe_file, list_pool) -> None:
    openings, calls, _ = run_world(small_recipe(fake_recipe_file(), tmp_path / "out", 4, subtopics=1100), list_pool)
    assert len(openings) == 4
    assert Counter(c["stage"] for c in calls) == {"subtopics": 2, "questions": 2}  # one request each a topic


def test_related_questions_take_turns_over_subtopics(tmp_path: Path, fake_recipe_file, list_pool) -> None:
    # 3 subtopics a topic with 2 questions each; 4 more openings than that need 2 related requests
    # that come from two different subtopics rather than the first subtopic's two questions.
    openings, _, _ = run_world(small_recipe(fake_recipe_file(), tmp_path / "out", 20), list_pool)
    related = [o["meta"] for o in openings if o["meta"]["depth"] == 1 and o["meta"]["topic"] == "Oceans"]
    assert len(related) == 4
    assert len({m["subtopic"] for m in related}) == 2


def test_a_model_listing_two_questions_a_time_still_fills_the_quota(tmp_path: Path, fake_recipe_file,
                                                                    list_pool) -> None:
    # Requests per wave follow the questions a request brought (here 2), not a fixed 5 a request.
    rec = small_recipe(fake_recipe_file(), tmp_path / "out", 200, questions_per_subtopic=10, related_per_question=10,
                       max_plan_waves=6)  # a fixed 5 a request plans 160 in 6 waves
    pool = list_pool(item, short=2)
    summary = aio.run(generate_async("world", rec, progress=False, pool=pool))
    assert summary.planned == 200


def test_dry_run_counts_per_level() -> None:
    paper = WorldConfig()
    calls, picks, subtopics = world_waves(9_334, 37, paper)  # a paper topic: 280k world dialogues / 30
    assert subtopics == 37 and calls["subtopics"] == 4
    assert picks[0] == 37 * 5 and sum(picks) == 9_334 and len(picks) == 4  # three levels of related questions
    small, small_picks, small_subs = world_waves(30, 37, paper)
    assert small_subs == 10 and small["related"] == 0 and small_picks == [30]

    report = plan_report("world", load_recipe(overrides={"dialogues": 280_000}))
    assert report.distribution["level"]["subtopics"] == 1_100
    assert sum(v for k, v in report.distribution["level"].items() if k != "subtopics") == 280_000
    assert report.distribution["level"]["related of related"] > 0


def test_a_kill_in_a_deep_plan_resumes_to_the_same_plan(tmp_path: Path, fake_recipe_file, monkeypatch,
                                                         killed_after_emits) -> None:
    from ultrachat.generate import world

    monkeypatch.setattr(world, "EMIT_BATCH", 3)

    def run(out: str):
        return generate("world", small_recipe(fake_recipe_file(), tmp_path / out, 60, subtopics=2), progress=False)

    run("ref")
    killed_after_emits(5, lambda: run("cut"))
    assert run("cut").planned == 60
    ref = (tmp_path / "ref" / "plan" / "openings.jsonl").read_text().splitlines()
    assert max(json.loads(line)["meta"]["depth"] for line in ref) >= 2
    for name in ("plan/openings.jsonl", "dialogues.jsonl"):
        got = sorted((tmp_path / "cut" / name).read_text(encoding="utf-8").splitlines())
        assert got == sorted((tmp_path / "ref" / name).read_text(encoding="utf-8").splitlines())
