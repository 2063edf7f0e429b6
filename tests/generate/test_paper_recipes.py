"""The paper recipes (examples/ultrachat-paper*.toml) and ``ultrachat estimate`` on a mixed
recipe: every sector and the total, GPU-hours and cost at the figures it names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ultrachat.cli import app
from ultrachat.generate.all_sectors import sector_recipes
from ultrachat.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[2]
PAPER = ROOT / "examples" / "ultrachat-paper.toml"


@pytest.mark.parametrize(("name", "language"), [("ultrachat-paper.toml", "en"), ("ultrachat-paper-zh.toml", "zh")])
def test_paper_recipes_hold_the_papers_split(name: str, language: str) -> None:
    rec = load_recipe(ROOT / "examples" / name)
    parts = dict(sector_recipes(rec))
    counts = {n: r.dialogues for n, r in parts.items()}
    assert counts == {"world": 280_000, "entities": 290_000, "writing": 562_000, "materials": 336_000}
    assert sum(counts.values()) == rec.dialogues == 1_468_000  # the paper's table: 1,468,352
    assert rec.language == language and rec.world.subtopics == 1_100 and rec.writing.expand_share == 0.8
    assert rec.dialogue.min_rounds is None and rec.dialogue.max_rounds is None  # each sector's own range


def plan(*args: str) -> dict:
    res = CliRunner().invoke(app, ["estimate", str(PAPER), "--sample", "30", "--json", *args])
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


def test_plan_estimates_every_sector_and_the_total() -> None:
    base = plan()
    sectors = {s["sector"]: s for s in base["sectors"]}
    assert set(sectors) == {"world", "entities", "writing", "materials"}
    total = base["total"]
    assert total["dialogues"] == 1_468_000
    for key in ("prompt_tokens", "completion_tokens"):
        assert total[key] == sum(s[key] for e in base["sectors"] for s in e["stages"]) > 0
    assert total["gpu_hours"] == pytest.approx(sum(s["gpu_hours"] for s in base["sectors"]))
    assert total["gpu_cost_usd"] == pytest.approx(total["gpu_hours"] * base["gpu_usd_per_hour"])
    assert sectors["world"]["asked"]["subtopics"] == 1_100
    assert sectors["writing"]["asked"]["instructions"] == 562_000
    # Twice the throughput on both phases halves the GPU-hours; the price scales the cost.
    fast = plan("--gpu-tokens-per-s", str(2 * base["gpu_tokens_per_s"]),
                "--gpu-prompt-tokens-per-s", str(2 * base["gpu_prompt_tokens_per_s"]), "--gpu-usd-per-hour", "3")
    assert fast["total"]["gpu_hours"] == pytest.approx(total["gpu_hours"] / 2)
    assert fast["total"]["gpu_cost_usd"] == pytest.approx(total["gpu_hours"] / 2 * 3)


def test_plan_table_names_its_figures() -> None:
    res = CliRunner().invoke(app, ["estimate", str(PAPER), "--sample", "30"])
    assert res.exit_code == 0, res.output
    for text in ("world", "entities", "writing", "materials", "total", "2,500 generated", "$2.00 per GPU-hour"):
        assert text in res.output
