"""A run's identity is the contents of what it reads, not the paths: an edited topic, entity
or prompt file is another run; the prompt text sent is part of every cached planning call's
key; a folder started with other built-in prompts (an upgrade) resumes only when asked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ultrachat.generate.runner import generate
from ultrachat.generate.store import RunStoreError
from ultrachat.recipe import load_recipe


def _recipe(fake_recipe_file, tmp_path: Path, **over):
    topics = tmp_path / "topics.txt"
    if not topics.exists():
        topics.write_text("Astronomy\nCooking\n", encoding="utf-8")
    base = {"dialogues": 2, "out": str(tmp_path / "o"), "world.topics_file": str(topics)}
    return load_recipe(fake_recipe_file(), {**base, **over})


def _calls(out: Path) -> list[dict]:
    return [json.loads(ln) for ln in (out / "plan" / "calls.jsonl").read_text(encoding="utf-8").splitlines()]


def test_edited_topic_file_is_another_run(fake_recipe_file, tmp_path: Path) -> None:
    rec = _recipe(fake_recipe_file, tmp_path)
    generate("world", rec, progress=False)
    assert generate("world", rec, progress=False).stats.dialogues == 0  # the same contents resume
    (tmp_path / "topics.txt").write_text("Astronomy\nGardening\n", encoding="utf-8")  # same path, new contents
    with pytest.raises(RunStoreError, match=r"changed: inputs\.world\.topics_file"):
        generate("world", _recipe(fake_recipe_file, tmp_path), progress=False)


def test_prompt_dir_contents_are_identity_and_keys(fake_recipe_file, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "world.toml").write_text('[subtopics]\ntemplate = "Subtopics of {topic}, {n} of them."\n')
    rec = _recipe(fake_recipe_file, tmp_path, prompts_dir=str(prompts))
    generate("world", rec, progress=False)
    before = _calls(tmp_path / "o")
    subtopic_calls = [c for c in before if c["stage"] == "subtopics"]
    assert subtopic_calls
    (prompts / "world.toml").write_text('[subtopics]\ntemplate = "Name {n} subtopics of {topic}."\n')
    with pytest.raises(RunStoreError, match=r"changed: inputs\.prompts_dir"):
        generate("world", _recipe(fake_recipe_file, tmp_path, prompts_dir=str(prompts)), progress=False)
    # Even past the fingerprint (a user deleting run.json), the cache never replays a reply made
    # for the old text: the subtopic calls are made again under new keys, with the same stage prefix.
    (tmp_path / "o" / "run.json").unlink()
    (tmp_path / "o" / "dialogues.jsonl").unlink()
    for name in ("openings.jsonl", "emissions.jsonl"):
        (tmp_path / "o" / "plan" / name).unlink()
    generate("world", _recipe(fake_recipe_file, tmp_path, prompts_dir=str(prompts)), progress=False)
    after = _calls(tmp_path / "o")
    redone = [c for c in after[len(before):] if c["stage"] == "subtopics"]
    # (How many subtopic calls a plan needs depends on the replies; the logical calls overlap.)
    assert redone and {c["key"].rsplit("|", 1)[0] for c in redone} & {c["key"].rsplit("|", 1)[0]
                                                                       for c in subtopic_calls}
    assert not {c["key"] for c in redone} & {c["key"] for c in subtopic_calls}


def test_builtin_prompt_upgrade_resumes_only_when_asked(fake_recipe_file, tmp_path: Path) -> None:
    rec = _recipe(fake_recipe_file, tmp_path)
    generate("world", rec, progress=False)
    run_json = tmp_path / "o" / "run.json"
    state = json.loads(run_json.read_text())
    state["recipe"]["builtin"], state["fingerprint"] = "0" * 16, "f" * 16  # as an older ultrachat wrote it
    run_json.write_text(json.dumps(state))
    with pytest.raises(RunStoreError, match=r"other built-in prompts.*--upgrade-prompts"):
        generate("world", _recipe(fake_recipe_file, tmp_path, dialogues=3), progress=False)
    calls = len(_calls(tmp_path / "o"))
    summary = generate("world", _recipe(fake_recipe_file, tmp_path, dialogues=3, upgrade_prompts=True),
                       progress=False)
    assert summary.already_done == 2 and summary.stats.dialogues == 1
    upgraded = json.loads(run_json.read_text())
    assert upgraded["fingerprint"] == rec.fingerprint("world") and upgraded["recipe"]["upgraded_from"] == "f" * 16
    assert len(_calls(tmp_path / "o")) >= calls  # unchanged prompts: their cached calls replay
    # Resumes plainly from now on.
    assert generate("world", _recipe(fake_recipe_file, tmp_path, dialogues=3), progress=False).stats.dialogues == 0


def test_a_pre_identity_run_json_counts_as_an_upgrade(fake_recipe_file, tmp_path: Path) -> None:
    rec = _recipe(fake_recipe_file, tmp_path)
    generate("world", rec, progress=False)
    run_json = tmp_path / "o" / "run.json"
    state = json.loads(run_json.read_text())
    for key in ("builtin", "inputs"):
        del state["recipe"][key]
    state["fingerprint"] = "e" * 16
    run_json.write_text(json.dumps(state))
    with pytest.raises(RunStoreError, match="--upgrade-prompts"):
        generate("world", rec, progress=False)
