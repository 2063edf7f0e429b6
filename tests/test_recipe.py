"""Recipe validation, overrides and fingerprints."""

from __future__ import annotations

from pathlib import Path

import pytest

from ultrachat.recipe import RecipeError, load_recipe


def test_defaults_and_role_defaults(tmp_path: Path) -> None:
    r = load_recipe()
    assert r.models.user.backend == "local" and r.models.user.max_tokens == 64
    p = tmp_path / "r.toml"
    p.write_text('[models.user]\nsystem = "x"\n')
    r = load_recipe(p)
    # A role table keeps that role's defaults for fields it does not set.
    assert r.models.user.system == "x" and r.models.user.temperature == 0.9 and r.models.user.max_tokens == 64


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("dialogues = 0", "dialogues"),
        ('[models.user]\ntemperature = "hot"', "models.user.temperature"),
        ("[dialogue]\nmin_rounds = 5\nmax_rounds = 2", "dialogue"),
        ("[world]\nbogus = 1", "world.bogus"),
        ('[models.assistant]\nbackend = "nope"', "models.assistant.backend"),
    ],
)
def test_bad_recipe_names_file_and_field(tmp_path: Path, body: str, field: str) -> None:
    p = tmp_path / "bad.toml"
    p.write_text(body)
    with pytest.raises(RecipeError) as err:
        load_recipe(p)
    msg = str(err.value)
    assert "\n" not in msg and str(p) in msg and f"field '{field}'" in msg


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "broken.toml"
    p.write_text("seed = = 3")
    with pytest.raises(RecipeError, match="invalid TOML"):
        load_recipe(p)
    with pytest.raises(RecipeError, match="file not found"):
        load_recipe(tmp_path / "absent.toml")


def test_overrides_and_fingerprint_ignores_runtime_fields() -> None:
    a = load_recipe(overrides={"dialogues": 5, "models.user.max_tokens": 40, "seed": None})
    assert a.dialogues == 5 and a.models.user.max_tokens == 40 and a.seed == 0
    b = load_recipe(overrides={"dialogues": 500, "concurrency": 3, "out": "x", "max_total_tokens": 9,
                               "models.user.max_tokens": 40, "models.user.max_in_flight": 7})
    assert a.fingerprint("world") == b.fingerprint("world")
    c = load_recipe(overrides={"models.user.max_tokens": 41})
    assert c.fingerprint("world") != a.fingerprint("world")
    assert a.fingerprint("world") != a.fingerprint("writing")


def _endpoint(role: str) -> dict[str, str]:
    return {f"models.{role}.backend": "openai", f"models.{role}.base_url": "http://127.0.0.1:9/v1",
            f"models.{role}.model": "qwen2.5-7b"}


def test_profiles_small_for_the_embedded_model_real_for_an_endpoint() -> None:
    r = load_recipe()
    assert r.models.profiles() == {"user": "small", "assistant": "small", "planner": "small"}
    assert (r.models.user.max_tokens, r.models.assistant.max_tokens, r.models.planner_config().max_tokens) == (
        64, 256, 200)
    assert r.dialogue.user_prompts == "task" and r.dialogue.on_truncated == "mark"
    r = load_recipe(None, {**_endpoint("user"), **_endpoint("assistant")})
    assert r.models.profiles() == {"user": "real", "assistant": "real", "planner": "real"}
    assert (r.models.user.max_tokens, r.models.assistant.max_tokens, r.models.planner_config().max_tokens) == (
        256, 2048, 1024)
    assert r.dialogue.user_prompts == "persona" and r.dialogue.on_truncated == "drop"
    # Everything stays overridable: a cap, the prompt set, the cut-reply mode, the profile itself.
    r = load_recipe(None, {**_endpoint("user"), **_endpoint("assistant"), "models.assistant.max_tokens": 900,
                           "dialogue.user_prompts": "task", "dialogue.on_truncated": "mark",
                           "models.user.profile": "small"})
    assert r.models.assistant.max_tokens == 900 and r.dialogue.user_prompts == "task"
    assert r.dialogue.on_truncated == "mark" and r.models.user.max_tokens == 64


def test_partial_planner_table_plans_on_the_user_roles_endpoint(tmp_path: Path) -> None:
    p = tmp_path / "r.toml"
    p.write_text("[models.planner]\nmax_retries = 1\n")
    r = load_recipe(p, {**_endpoint("user"), **_endpoint("assistant")})
    planner = r.models.planner_config()
    assert (planner.backend, planner.model, planner.base_url) == ("openai", "qwen2.5-7b", "http://127.0.0.1:9/v1")
    assert planner.max_retries == 1 and planner.max_tokens == 1024 and planner.temperature == 0.8


def test_profile_defaults_keep_old_fingerprints() -> None:
    payload = load_recipe().fingerprint_payload("world")
    assert all("profile" not in cfg and "extra_body" not in cfg for cfg in payload["models"].values() if cfg)
    explicit = load_recipe(None, {"models.user.profile": "real"}).fingerprint_payload("world")
    assert explicit["models"]["user"]["profile"] == "real"


def test_kept_reasoning_and_context_length_are_identity_only_when_set() -> None:
    base = load_recipe()
    assert all("keep_reasoning" not in cfg and "context_length" not in cfg
               for cfg in base.fingerprint_payload("world")["models"].values() if cfg)
    unchanged = load_recipe(None, {"models.assistant.keep_reasoning": False})
    assert unchanged.fingerprint("world") == base.fingerprint("world")
    # Both change what a run writes (meta.reasoning; the cap of a cut reply's retry): another run.
    kept = load_recipe(None, {"models.assistant.keep_reasoning": True})
    bounded = load_recipe(None, {"models.assistant.context_length": 4096})
    assert len({base.fingerprint("world"), kept.fingerprint("world"), bounded.fingerprint("world")}) == 3
    assert bounded.fingerprint_payload("world")["models"]["assistant"]["context_length"] == 4096


def test_dry_run_shows_profiles_and_caps_per_role(tmp_path: Path, ultrachat_exe: list[str]) -> None:
    import os
    import subprocess

    p = tmp_path / "r.toml"
    p.write_text("[models.planner]\nmax_retries = 1\n"
                 "[models.assistant]\ncontext_length = 32768\nkeep_reasoning = true\n")
    res = subprocess.run([*ultrachat_exe, "generate", "world", "--dry-run", "-r", str(p), "--base-url",
                          "http://127.0.0.1:9/v1", "--model", "qwen2.5-7b", "--dialogues", "10"],
                         capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert res.returncode == 0, res.stderr
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
            for line in res.stdout.splitlines() if line.count("│") >= 7}
    assert rows["user"][3:5] == ["real", "256"] and rows["assistant"][3:5] == ["real", "2048"]
    assert rows["planner"][:5] == ["openai", "qwen2.5-7b", "http://127.0.0.1:9/v1", "real", "1024"]
    assert "user prompts: persona" in res.stdout
    caption = " ".join(res.stdout.split())  # the caption wraps at the table's width
    assert "assistant context: 32,768 tokens; reasoning kept in meta: assistant" in caption
