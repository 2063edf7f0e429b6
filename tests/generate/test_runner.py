"""Whole runs on the fake backend: planning, ids, resume, lock, fingerprint, budget."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from ultrachat.core.corpus import iter_jsonl
from ultrachat.generate.runner import generate
from ultrachat.generate.store import RunStore, RunStoreError
from ultrachat.generate.world import quotas
from ultrachat.recipe import load_recipe


def _ids(out: Path) -> list[str]:
    return [d["id"] for d in iter_jsonl(out / "dialogues.jsonl")]


def test_quotas_spread_evenly_and_grow_monotonically() -> None:
    topics = [f"t{i}" for i in range(30)]
    q10 = quotas(10, topics, seed=1)
    assert sum(q10) == 10 and max(q10) == 1
    q95 = quotas(95, topics, seed=1)
    assert sum(q95) == 95 and set(q95) == {3, 4}
    q200 = quotas(200, topics, seed=1)
    assert all(a <= b for a, b in zip(q95, q200, strict=True))
    assert quotas(10, topics, seed=2) != q10  # the seed picks who gets the remainder


def test_generate_world_plans_exactly_n_with_unique_ids(tmp_path: Path, fake_recipe_file) -> None:
    recipe = load_recipe(fake_recipe_file(), {"dialogues": 37, "out": str(tmp_path / "o"), "seed": 5})
    summary = generate("world", recipe, progress=False)
    ids = _ids(tmp_path / "o")
    assert len(ids) == 37 == len(set(ids)) == summary.stats.dialogues
    assert all(i.startswith("world-s5-t") for i in ids)
    rows = list(iter_jsonl(tmp_path / "o" / "dialogues.jsonl"))
    assert len({r["data"][0] for r in rows}) == 37  # distinct opening lines
    assert Counter(r["meta"]["topic"] for r in rows).most_common(1)[0][1] == 2  # 37 over 30 topics
    for r in rows:
        assert 3 <= r["meta"]["rounds"] <= 7 and len(r["data"]) == 2 * r["meta"]["rounds"]
        assert "api_key" not in json.dumps(r).lower()


def test_plan_reproducible_from_seed(tmp_path: Path, fake_recipe_file) -> None:
    outs = []
    for name in ("a", "b"):
        recipe = load_recipe(fake_recipe_file(), {"dialogues": 12, "out": str(tmp_path / name), "seed": 9})
        generate("world", recipe, progress=False)
        outs.append(sorted(iter_jsonl(tmp_path / name / "dialogues.jsonl"), key=lambda d: d["id"]))
    assert outs[0] == outs[1]


def test_rerun_is_a_no_op_and_larger_n_extends(tmp_path: Path, fake_recipe_file) -> None:
    path = fake_recipe_file()
    out = str(tmp_path / "o")
    generate("world", load_recipe(path, {"dialogues": 8, "out": out}), progress=False)
    first = (tmp_path / "o" / "dialogues.jsonl").read_text()
    again = generate("world", load_recipe(path, {"dialogues": 8, "out": out}), progress=False)
    assert again.stats.dialogues == 0 and again.already_done == 8
    more = generate("world", load_recipe(path, {"dialogues": 20, "out": out}), progress=False)
    assert more.stats.dialogues == 12
    text = (tmp_path / "o" / "dialogues.jsonl").read_text()
    assert text.startswith(first)  # nothing rewritten
    ids = _ids(tmp_path / "o")
    assert len(ids) == len(set(ids)) == 20
    # The same 20 ids as a fresh run planned for 20 from the start.
    fresh = str(tmp_path / "fresh")
    generate("world", load_recipe(path, {"dialogues": 20, "out": fresh}), progress=False)
    assert set(_ids(Path(fresh))) == set(ids)


def test_changed_recipe_is_refused_with_the_changed_field(tmp_path: Path, fake_recipe_file) -> None:
    path = fake_recipe_file()
    out = str(tmp_path / "o")
    generate("world", load_recipe(path, {"dialogues": 3, "out": out}), progress=False)
    with pytest.raises(RunStoreError, match=r"changed: models\.assistant\.max_tokens"):
        generate("world", load_recipe(path, {"dialogues": 3, "out": out, "models.assistant.max_tokens": 9}),
                 progress=False)


def test_lock_stops_a_second_run(tmp_path: Path, fake_recipe_file) -> None:
    recipe = load_recipe(fake_recipe_file(), {"out": str(tmp_path / "o")})
    with RunStore(tmp_path / "o", recipe, "world"), pytest.raises(RunStoreError, match="in use by another"):
        generate("world", recipe, progress=False)
    generate("world", recipe, progress=False)  # lock released


def test_token_budget_stops_cleanly(tmp_path: Path, fake_recipe_file) -> None:
    path = fake_recipe_file()
    out = str(tmp_path / "o")
    summary = generate("world", load_recipe(path, {"dialogues": 40, "out": out, "max_total_tokens": 12000,
                                                   "concurrency": 2}), progress=False)
    assert summary.budget_stopped and 0 < summary.stats.dialogues < 40
    assert any("token budget" in n for n in summary.notes)
    done = len(_ids(tmp_path / "o"))
    summary = generate("world", load_recipe(path, {"dialogues": 40, "out": out}), progress=False)
    assert len(_ids(tmp_path / "o")) == 40 and summary.stats.dialogues == 40 - done


def test_cli_bad_recipe_is_one_line_naming_the_field(tmp_path: Path, ultrachat_exe: list[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[dialogue]\nmax_regenerations = -1\n")
    proc = subprocess.run([*ultrachat_exe, "generate", "world", "-r", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 1  # a bad input file (not a bad command line, which is 2)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "dialogue.max_regenerations" in lines[0] and str(bad) in lines[0]


def test_cli_runs_and_prints_summary(tmp_path: Path, fake_recipe_file, ultrachat_exe: list[str]) -> None:
    out = tmp_path / "o"
    proc = subprocess.run([*ultrachat_exe, "generate", "world", "-r", str(fake_recipe_file()), "--dialogues", "4",
                           "--out", str(out), "--max-rounds", "3", "--min-rounds", "3"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "stop reasons" in proc.stdout and "completed=4" in proc.stdout
    assert all(len(d["data"]) == 6 for d in iter_jsonl(out / "dialogues.jsonl"))


def test_chinese_world_run_plans_from_chinese_topics(tmp_path: Path, fake_recipe_file) -> None:
    recipe = load_recipe(fake_recipe_file(), {"dialogues": 4, "out": str(tmp_path / "o"), "language": "zh"})
    summary = generate("world", recipe, progress=False)
    assert summary.planned == 4 and summary.stats.dialogues == 4
    calls = [json.loads(line) for line in (tmp_path / "o" / "plan" / "calls.jsonl").read_text().splitlines()]
    assert all(any("\u4e00" <= ch <= "\u9fff" for ch in c["key"]) for c in calls)  # Chinese topics


@pytest.mark.parametrize("line", ['{"from": {"t0": 1}}', '{"plan": "p", "from": {"t0": "x"}}', '[1, 2]'])
def test_damaged_emissions_line_is_an_error_naming_the_line(tmp_path: Path, fake_recipe_file, line: str) -> None:
    recipe = load_recipe(fake_recipe_file(), {"dialogues": 4, "out": str(tmp_path / "o")})
    generate("world", recipe, progress=False)
    journal = tmp_path / "o" / "plan" / "emissions.jsonl"
    journal.write_text(line + "\n", encoding="utf-8")
    with pytest.raises(RunStoreError, match=r"emissions\.jsonl:1: damaged line"):
        generate("world", load_recipe(fake_recipe_file(), {"dialogues": 6, "out": str(tmp_path / "o")}),
                 progress=False)
