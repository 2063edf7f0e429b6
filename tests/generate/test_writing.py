"""Sector 2's diversity: distinct instructions scale with the quota, each batch's prompt is
varied (audience, length, tone; examples of earlier waves), seeded by its key so an
extended or resumed run replays the same calls, and no instruction is expanded twice."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

from ultrachat import aio
from ultrachat.generate.dryrun import plan_report
from ultrachat.generate.runner import generate_async
from ultrachat.generate.writing import wave_span
from ultrachat.recipe import Recipe, load_recipe


def item(prompt: str, h: str, i: int) -> str:
    """Requests unique to the prompt; a third repeat a fixed request (dedup at work)."""
    return "Write a limerick about a cat." if i % 3 == 0 else f"Write piece {h} number {chr(96 + i)}."


def recipe(path: Path, out: Path, dialogues: int, **writing: object) -> Recipe:
    settings = {"writing.types": ["Poems", "Emails"], "writing.instructions_per_request": 5,
                **{f"writing.{k}": v for k, v in writing.items()}}
    return load_recipe(path, {"dialogues": dialogues, "out": str(out), "dialogue.max_rounds": 2, **settings})


def run(rec: Recipe, list_pool) -> tuple[list[dict], object]:
    pool = list_pool(item)
    aio.run(generate_async("writing", rec, progress=False, pool=pool))
    lines = (Path(rec.out or "") / "plan" / "openings.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines], pool


def instruction_prompts(pool) -> list[str]:
    return [m[-1]["content"] for m in pool.fake.calls if m[-1]["content"].startswith("Write a numbered list")]


def test_instructions_scale_with_the_quota_and_none_is_used_twice(tmp_path: Path, fake_recipe_file, list_pool) -> None:
    openings, pool = run(recipe(fake_recipe_file(), tmp_path / "out", 400), list_pool)  # 200 a type, 40+ batches each
    assert len(openings) == 400
    for t in ("Poems", "Emails"):
        mine = [o for o in openings if o["meta"]["writing_type"] == t]
        assert len({o["meta"]["instruction"] for o in mine}) == 200
        assert sum(o["meta"]["expanded"] for o in mine) == 160  # expand_share 0.8, exact
    expand_keys = [c for c in pool.fake.calls if c[-1]["content"].startswith("Here is a request")]
    assert len(expand_keys) == 320 == len({c[-1]["content"] for c in expand_keys})  # no instruction expanded twice
    prompts = instruction_prompts(pool)
    assert len(set(prompts)) == len(prompts)  # every batch's prompt differs
    assert len({re.search(r"for (.+?), ask", p).group(1) for p in prompts}) >= 10  # audiences drawn
    assert sum("Requests collected so far include" in p for p in prompts) == len(prompts) - 2  # all but wave 0


def test_expanded_share_follows_the_recipe(tmp_path: Path, fake_recipe_file, list_pool) -> None:
    openings, _ = run(recipe(fake_recipe_file(), tmp_path / "out", 40, expand_share=0.25), list_pool)
    assert sum(o["meta"]["expanded"] for o in openings) == 10


def test_an_extended_run_replays_the_same_batches(tmp_path: Path, fake_recipe_file, list_pool) -> None:
    small, _ = run(recipe(fake_recipe_file(), tmp_path / "out", 60), list_pool)
    grown, _ = run(recipe(fake_recipe_file(), tmp_path / "out", 300), list_pool)
    assert grown[:60] == small  # the first run's openings stay as they were
    assert len({(o["meta"]["writing_type"], o["meta"]["instruction"]) for o in grown}) == 300  # none reused
    fresh, _ = run(recipe(fake_recipe_file(), tmp_path / "fresh", 300), list_pool)
    by_id = {o["id"]: o["text"] for o in fresh}
    assert all(by_id[o["id"]] == o["text"] for o in grown)  # the same plan as one run of 300


def test_waves_and_dry_run() -> None:
    assert [wave_span(b) for b in (0, 1, 8, 9, 72, 73)] == [(0, 1), (1, 9), (1, 9), (9, 73), (9, 73), (73, 585)]
    report = plan_report("writing", load_recipe(overrides={"dialogues": 562_000}))
    assert report.openings == 562_000 and report.calls["instructions"] == 56_200
    assert report.distribution["expanded"]["True"] == 449_600
    capped = plan_report("writing", load_recipe(overrides={"dialogues": 1000, "writing.instructions_per_type": 20}))
    assert capped.openings == 400 and any("caps the run" in n for n in capped.notes)
    assert Counter(capped.distribution["writing_type"].values()) == {50: 20}
