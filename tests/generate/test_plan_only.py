"""``generate ... --plan-only``: the planners run (real calls, here the fake backend) and the
opening lines are written, no dialogue; a later run without the flag replays the plan and
generates the dialogues. The run report counts distinct openings, subtopics and
instructions used next to what was asked and targeted."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from ultrachat.cli import app


def cli(*args: str):
    return CliRunner().invoke(app, list(args))


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def test_plan_only_writes_openings_then_a_full_run_replays_them(tmp_path: Path, fake_recipe_file) -> None:
    out = tmp_path / "w"
    res = cli("generate", "writing", "-r", str(fake_recipe_file()), "--dialogues", "60", "--out", str(out),
              "--plan-only", "--no-progress")
    assert res.exit_code == 0, res.output
    assert "plan only: 60 opening lines" in res.output
    openings = lines(out / "plan" / "openings.jsonl")
    calls = lines(out / "plan" / "calls.jsonl")
    assert len(openings) == 60 and calls and not lines(out / "dialogues.jsonl")
    run = json.loads((out / "report.json").read_text())["runs"][-1]
    assert run["plan_only"] and run["dialogues_written"] == 0
    assert run["variety"]["openings"] == {"used": 60, "target": 60}
    instructions = run["variety"]["instructions"]
    assert instructions["used"] == 60 == instructions["target"] and instructions["asked"] >= 60
    calls_by_stage = {stage: sum(m["calls"] for m in models.values()) for stage, models in run["stages"].items()}
    assert calls_by_stage["plan"] == len(calls)
    assert not calls_by_stage.get("user") and not calls_by_stage.get("assistant")  # no dialogue call

    res = cli("generate", "writing", "-r", str(fake_recipe_file()), "--dialogues", "60", "--out", str(out),
              "--no-progress")
    assert res.exit_code == 0, res.output
    assert lines(out / "plan" / "openings.jsonl") == openings  # the plan is kept, not redone
    assert lines(out / "plan" / "calls.jsonl") == calls  # no planning call made again
    dialogues = [json.loads(line) for line in lines(out / "dialogues.jsonl")]
    assert sorted(d["id"] for d in dialogues) == sorted(json.loads(o)["id"] for o in openings)


def test_plan_only_on_a_mix_plans_every_sector_and_merges_nothing(tmp_path: Path, fake_recipe_file) -> None:
    recipe = fake_recipe_file(extra="\n[mix.sectors.world]\nshare = 2\n[mix.sectors.writing]\nshare = 1\n")
    res = cli("generate", "all", "-r", str(recipe), "--dialogues", "90", "--out", str(tmp_path / "all"),
              "--plan-only", "--no-progress")
    assert res.exit_code == 0, res.output
    assert len(lines(tmp_path / "all" / "world" / "plan" / "openings.jsonl")) == 60
    assert len(lines(tmp_path / "all" / "writing" / "plan" / "openings.jsonl")) == 30
    assert not (tmp_path / "all" / "all.jsonl").exists()
    world = json.loads((tmp_path / "all" / "world" / "report.json").read_text())["runs"][-1]["variety"]
    assert world["subtopics"]["target"] == 1_100 and 0 < world["subtopics"]["used"] <= world["subtopics"]["asked"]


def test_plan_only_refuses_ray(tmp_path: Path, fake_recipe_file) -> None:
    res = cli("generate", "world", "-r", str(fake_recipe_file()), "--plan-only", "--ray", "local")
    assert res.exit_code != 0 and "drop --ray" in res.output
