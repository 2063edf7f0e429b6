"""Token and cost accounting (ledger, report.json, live note) and `ultrachat estimate`."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from ultrachat.backends import Completion, GenerationParams, Usage
from ultrachat.backends.fake import FakeBackend
from ultrachat.backends.response_cache import CachedCompletion
from ultrachat.generate.accounting import Ledger, Prices
from ultrachat.generate.estimate import estimate
from ultrachat.generate.runner import generate
from ultrachat.recipe import ModelConfig, load_recipe

PRICES = """
batch_discount = 0.5
[models."fake:fake"]
input = 2.0
output = 10.0
[models."fake:*"]
input = 0.0
output = 0.0
[models."gpt-*"]
input = 1.0
output = 1.0
"""


@pytest.fixture
def prices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Prices:
    path = tmp_path / "prices.toml"
    path.write_text(PRICES, encoding="utf-8")
    monkeypatch.setenv("ULTRACHAT_PRICES", str(path))
    return Prices.load()


def test_price_lookup_exact_then_patterns(prices: Prices) -> None:
    assert prices.lookup("fake", "fake").output == 10.0  # exact beats the earlier-matching pattern
    assert prices.lookup("fake", "other").output == 0.0
    assert prices.lookup("openai", "gpt-4o").input == 1.0
    assert prices.lookup("openai", "mystery").cost(Usage(10, 10)) is None
    shipped = Prices.load(Path(__file__).parents[2] / "src/ultrachat/backends/prices.toml")
    assert shipped.lookup("openai", "gpt-4o-mini").input == 0.15 and shipped.lookup("local", "x").output == 0.0


async def test_ledger_books_tokens_cost_and_free_cache_hits(prices: Prices) -> None:
    replies = [Completion("a", "stop", Usage(1000, 100), "fake"), CachedCompletion("b", "stop", Usage(500, 50)),
               Completion("", "error", Usage(0, 0))]
    ledger = Ledger(prices)
    backend = ledger.meter(FakeBackend(script=replies), "assistant", ModelConfig(backend="fake", model="fake"))
    for _ in range(3):
        await backend.complete([{"role": "user", "content": "x"}], GenerationParams())
    line = ledger.lines[("assistant", "fake:fake")]
    assert (line.calls, line.cached_calls, line.errors) == (3, 1, 1)
    assert (line.prompt_tokens, line.completion_tokens, line.cached_tokens) == (1000, 100, 550)
    assert line.cost_usd == pytest.approx((1000 * 2.0 + 100 * 10.0) / 1e6)
    unknown = Ledger(prices).meter(FakeBackend(), "user", ModelConfig(backend="openai", model="mystery"))
    await unknown.complete([{"role": "user", "content": "x"}], GenerationParams())
    assert unknown.ledger.total().cost_usd is None and "cost ?" in unknown.ledger.describe()


def test_report_json_matches_the_corpus(tmp_path: Path, fake_recipe_file, prices: Prices) -> None:
    out = tmp_path / "out"
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=220)
    generate("world", load_recipe(fake_recipe_file(), {"dialogues": 10, "out": str(out)}), progress=True,
             console=console)
    assert "$0.0" in buf.getvalue()  # the live display shows the running cost
    generate("world", load_recipe(fake_recipe_file(), {"dialogues": 16, "out": str(out)}), progress=False)
    report = json.loads((out / "report.json").read_text())
    assert [r["dialogues_written"] for r in report["runs"]] == [10, 6] and report["dialogues_written"] == 16
    metas = [json.loads(line)["meta"] for line in (out / "dialogues.jsonl").open()]
    calls = [json.loads(line) for line in (out / "plan" / "calls.jsonl").open()]
    for role in ("user", "assistant"):
        booked = [r["stages"][role]["fake:fake"] for r in report["runs"]]
        assert sum(b["prompt_tokens"] for b in booked) == sum(m["tokens"][role]["prompt"] for m in metas)
        assert sum(b["completion_tokens"] for b in booked) == sum(m["tokens"][role]["completion"] for m in metas)
    plan = [r["stages"]["plan"]["fake:fake"] for r in report["runs"] if "plan" in r["stages"]]
    assert sum(p["calls"] for p in plan) == len(calls)
    total = report["total"]
    assert total["cost_usd"] == pytest.approx((total["prompt_tokens"] * 2 + total["completion_tokens"] * 10) / 1e6)


def test_plan_estimate_matches_a_real_run_and_scales(tmp_path: Path, fake_recipe_file, prices: Prices) -> None:
    recipe = load_recipe(fake_recipe_file(), {"dialogues": 30, "out": str(tmp_path / "real")})
    generate("world", recipe, progress=False)
    real = json.loads((tmp_path / "real" / "report.json").read_text())["runs"][0]["stages"]
    est = estimate("world", recipe, sample=30)
    assert {(s.stage, s.calls) for s in est.stages} == {(k, v["fake:fake"]["calls"]) for k, v in real.items()}
    assert (tmp_path / "real" / "plan" / "calls.jsonl").read_text().count("\n") == real["plan"]["fake:fake"]["calls"]
    big = estimate("world", recipe, dialogues=3000, sample=30)
    for small, large in zip(est.stages, big.stages, strict=True):
        assert large.calls == small.calls * 100 and large.cost_usd == pytest.approx(small.cost_usd * 100)
    assert big.total_cost_usd and big.to_json()["batch_cost_usd"] == pytest.approx(big.total_cost_usd / 2)


def test_plan_command_prints_json(tmp_path: Path, fake_recipe_file) -> None:
    from typer.testing import CliRunner

    from ultrachat.cli import app

    res = CliRunner().invoke(app, ["estimate", str(fake_recipe_file()), "--dialogues", "1000", "--sample", "20",
                                   "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["dialogues"] == 1000 and data["sampled"] == 20
    assert {s["stage"] for s in data["stages"]} == {"plan", "user", "assistant"}
    bad = CliRunner().invoke(app, ["plan", str(tmp_path / "nope.toml")])  # the first name still works
    # A one-line error naming the file, not a traceback.
    assert bad.exit_code == 1 and isinstance(bad.exception, SystemExit), bad.output
    assert "nope.toml" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
