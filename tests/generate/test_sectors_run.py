"""Mixed runs, dry runs, the Chinese prompt set and crash safety of the new sectors
(fake backend)."""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from ultrachat.backends import BackendPool
from ultrachat.core.corpus import iter_jsonl
from ultrachat.generate.all_sectors import generate_all, sector_recipes
from ultrachat.generate.commands import recipe_overrides
from ultrachat.generate.dryrun import dry_run
from ultrachat.generate.runner import generate
from ultrachat.recipe import load_recipe

CJK = re.compile(r"[\u4e00-\u9fff]")


def test_mix_quotas_and_per_sector_models(fake_recipe_file, tmp_path):
    extra = """
[mix.sectors.world]
share = 3
[mix.sectors.writing]
share = 1
[mix.sectors.materials]
dialogues = 4
[mix.sectors.writing.models.assistant]
max_tokens = 17
"""
    rec = load_recipe(fake_recipe_file(extra=extra), {"out": str(tmp_path / "mix"), "dialogues": 10})
    parts = dict(sector_recipes(rec))
    assert {k: r.dialogues for k, r in parts.items()} == {"world": 8, "writing": 2, "materials": 4}
    assert parts["writing"].models.assistant.max_tokens == 17
    assert parts["writing"].models.assistant.backend == "fake"  # fields not overridden are kept
    assert parts["world"].models.assistant.max_tokens == rec.models.assistant.max_tokens
    assert parts["materials"].out == str(tmp_path / "mix" / "materials")
    with pytest.raises(ValueError, match="unknown sector 'poetry'"):
        sector_recipes(load_recipe(overrides={"mix.sectors.poetry.share": 1}))


def test_generate_all_writes_each_sector_and_the_merged_corpus(fake_recipe_file, tmp_path):
    rec = load_recipe(fake_recipe_file(), {"out": str(tmp_path / "all"), "dialogues": 8})
    summary = generate_all(rec, progress=False)
    assert [s.sector for s in summary.sectors] == ["world", "entities", "writing", "materials"]
    merged = list(iter_jsonl(tmp_path / "all" / "all.jsonl"))
    assert summary.merged_dialogues == len(merged) == 8
    ids = [d["id"] for d in merged]
    assert len(set(ids)) == 8
    assert Counter(i.split("-")[0] for i in ids) == {"world": 2, "entities": 2, "writing": 2, "materials": 2}
    for name in ("world", "entities", "writing", "materials"):
        lines = list(iter_jsonl(tmp_path / "all" / name / "dialogues.jsonl"))
        assert {d["meta"]["sector"] for d in lines} == {name}
    # The same folders work with the single-sector command, and a rerun adds nothing.
    again = generate("writing", rec.model_copy(update={"out": str(tmp_path / "all" / "writing"), "dialogues": 2}),
                     progress=False)
    assert again.stats.dialogues == 0 and again.already_done == 2


def cli(*args: str):
    """The CLI in process (as a subprocess it would spend most of its time starting Python)."""
    from typer.testing import CliRunner

    from ultrachat.cli import app

    return CliRunner().invoke(app, list(args))


def test_cli_generate_all_and_dry_run(fake_recipe_file, tmp_path):
    recipe = str(fake_recipe_file())
    res = cli("generate", "all", "-r", recipe, "--dialogues", "4", "--out", str(tmp_path / "o"), "--no-progress")
    assert res.exit_code == 0, res.output
    for shown in ("ultrachat generate all", "by kind", "by template", "by writing_type", "by topic"):
        assert shown in res.stdout, res.stdout[-3000:]
    assert len((tmp_path / "o" / "all.jsonl").read_text().splitlines()) == 4
    res = cli("generate", "writing", "-r", recipe, "--dialogues", "40", "--out", str(tmp_path / "d"), "--dry-run")
    assert res.exit_code == 0, res.output
    for shown in ("opening lines", "estimated tokens", "expand 32"):
        assert shown in res.stdout, res.stdout
    assert not (tmp_path / "d").exists()
    bad = tmp_path / "bad.csv"
    bad.write_text("name,type\nAda Lovelace,person\n,place\n", encoding="utf-8")
    res = cli("generate", "entities", "-r", str(fake_recipe_file(extra=f'[entities]\nentities_file = "{bad}"\n')),
              "--dry-run")
    assert res.exit_code == 1 and "bad.csv:3: no entity name" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr


def _forbid_models(monkeypatch):
    def refuse(self, cfg):
        raise AssertionError("a dry run must not build a model backend")

    monkeypatch.setattr(BackendPool, "get", refuse)


@pytest.mark.parametrize("sector", ["writing", "materials"])
def test_dry_run_counts_match_a_real_run(fake_recipe_file, tmp_path, monkeypatch, sector):
    rec = load_recipe(fake_recipe_file(), {"out": str(tmp_path / sector), "dialogues": 23,
                                           "dialogue.min_rounds": 2, "dialogue.max_rounds": 2})
    with monkeypatch.context() as m:
        _forbid_models(m)
        [plan] = dry_run(sector, rec)
    generate(sector, rec, progress=False)
    calls = Counter(c["stage"] for c in iter_jsonl(tmp_path / sector / "plan" / "calls.jsonl", validate=False))
    planned = {k: v for k, v in plan.calls.items() if k not in ("user", "assistant")}
    assert planned == dict(calls)
    assert plan.openings == plan.dialogues == 23
    assert plan.calls["assistant"] == 46 and plan.calls["user"] == 23
    written = list(iter_jsonl(tmp_path / sector / "dialogues.jsonl"))
    for key, counts in plan.distribution.items():
        assert Counter(str(d["meta"][key]) for d in written) == counts


def test_dry_run_all_and_entities_and_world(fake_recipe_file, monkeypatch):
    _forbid_models(monkeypatch)
    rec = load_recipe(fake_recipe_file(), {"dialogues": 1000})
    plans = {p.sector: p for p in dry_run("all", rec)}
    assert set(plans) == {"world", "entities", "writing", "materials"}
    assert plans["entities"].distribution["kind"] == {"specific": 100, "general": 125, "meta": 25}
    assert plans["world"].calls["questions"] > 0 and plans["entities"].calls["meta"] > 0
    # The bundled sample corpus is small: the dry run says so.
    assert any("usable passages" in n for n in plans["materials"].notes)
    assert plans["materials"].openings < 250
    for p in plans.values():
        assert p.total_tokens > 0 and p.calls["assistant"] >= p.dialogues


# -- Chinese --------------------------------------------------------------------------
@pytest.mark.parametrize("sector", ["world", "entities", "writing", "materials"])
def test_chinese_run_uses_chinese_prompts_lists_and_openings(fake_recipe_file, tmp_path, sector):
    """The fake backend answers Chinese prompts in Chinese (full-width question marks, and
    requests with 请/能否 and no question mark): every dialogue keeps its planned rounds."""
    from ultrachat.backends.fake import FakeBackend

    seen: list[list[dict]] = []
    original = FakeBackend.complete

    async def spy(self, messages, params):
        seen.append(messages)
        return await original(self, messages, params)

    rec = load_recipe(fake_recipe_file(), {"out": str(tmp_path / sector), "dialogues": 6, "language": "zh",
                                           "dialogue.min_rounds": 3, "dialogue.max_rounds": 3})
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(FakeBackend, "complete", spy)
        summary = generate(sector, rec, progress=False)
    assert summary.stats.dialogues == 6
    dialogues = list(iter_jsonl(tmp_path / sector / "dialogues.jsonl"))
    user_turns = [t for d in dialogues for t in d["data"][2::2]]
    for d in dialogues:
        assert all(CJK.search(turn) for turn in d["data"]), d
        assert d["meta"]["stop_reason"] == "completed", d["meta"]
        assert d["meta"]["rounds"] == d["meta"]["rounds_planned"] == 3 == len(d["data"]) // 2
    # Chinese follow-ups in both forms were accepted: questions with ？ and requests without one.
    assert any("？" in t for t in user_turns) and any("？" not in t and "?" not in t for t in user_turns)
    prompts = [m for messages in seen for m in messages]
    assert prompts and all(CJK.search(m["content"]) for m in prompts)
    systems = {m["content"] for m in prompts if m["role"] == "system"}
    assert systems == {"你是一个乐于助人的AI助手。请始终用简体中文回答。"}
    if sector == "writing":
        assert all(CJK.search(d["meta"]["writing_type"]) for d in dialogues)  # the translated type list
    if sector == "entities":
        assert all(CJK.search(d["meta"]["entity"]) for d in dialogues)
    if sector == "materials":
        assert all(CJK.search(d["meta"]["passage_head"]) for d in dialogues)


# -- crash safety -----------------------------------------------------------------------
def _ids_and_data(path: Path) -> dict[str, list[str]]:
    lines = list(iter_jsonl(path))
    ids = [d["id"] for d in lines]
    assert len(ids) == len(set(ids)), "duplicate dialogue ids"
    return {d["id"]: d["data"] for d in lines}


def test_every_new_sector_over_http(tmp_path, ultrachat_exe):
    """A real OpenAI-compatible server process on 127.0.0.1 serves every role of a mixed run
    set up by the quick flags (``--base-url URL --model NAME``)."""
    server = subprocess.Popen([*ultrachat_exe[:-1], "ultrachat.testing.mock_openai", "--port", "0"],
                              stdout=subprocess.PIPE, text=True)
    out = tmp_path / "http"
    try:
        line = server.stdout.readline() if server.stdout else ""
        assert line.startswith("listening on "), line
        flags = recipe_overrides(dialogues=6, out=out, base_url=line.split()[-1], model="mock")
        summary = generate_all(load_recipe(overrides=flags), progress=False)
    finally:
        server.terminate()
        server.wait(timeout=10)
    merged = list(iter_jsonl(out / "all.jsonl"))
    assert summary.merged_dialogues == len(merged) == 6 and len({d["id"] for d in merged}) == 6
    for name in ("entities", "writing", "materials"):
        lines = list(iter_jsonl(out / name / "dialogues.jsonl"))
        assert lines and all(d["meta"]["models"]["assistant"] == {"backend": "openai", "model": "mock"}
                             for d in lines)
        assert all(len(d["data"]) >= 2 for d in lines)


def test_a_mix_sector_on_another_model_follows_that_models_profile() -> None:
    rec = load_recipe(None, {"dialogues": 8, "mix.sectors.writing.share": 1,
                             "mix.sectors.world.models.assistant.backend": "openai",
                             "mix.sectors.world.models.assistant.model": "qwen2.5-7b",
                             "mix.sectors.world.models.assistant.base_url": "http://127.0.0.1:9/v1"})
    subs = dict(sector_recipes(rec))
    world, writing = subs["world"], subs["writing"]
    assert world.models.profiles()["assistant"] == "real" and world.models.assistant.max_tokens == 2048
    assert world.dialogue.on_truncated == "drop" and world.dialogues == 4
    assert writing.models.profiles()["assistant"] == "small" and writing.dialogue.on_truncated == "mark"
