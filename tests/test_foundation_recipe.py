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
