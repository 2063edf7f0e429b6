"""AlpacaEval 2's length-controlled win rate: parity with the ``alpaca-eval`` package's own function.

The package downloads ``df_gamed.csv`` (gamed baselines + instruction difficulties) from the hub;
here its ``hf_hub_download`` returns a synthetic file of the same layout instead, and both
implementations see the same annotations.

alpaca-eval 0.6.6 imports ``pkg_resources`` at module level (for two version helpers that the
GLM never calls); setuptools >= 81 no longer ships it, so the test supplies a two-function
stand-in built on ``packaging`` and ``importlib.metadata``. The GLM code runs unchanged.
"""

from __future__ import annotations

import math
import sys
import types
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ultrachat.evaluate.lc import LC_V1, MINIMAL, GamedBaselines, LengthControlError, length_controlled_win_rate

N_PROMPTS = 160


def _pkg_resources_stand_in() -> types.ModuleType:
    from packaging.version import parse

    mod = types.ModuleType("pkg_resources")
    mod.parse_version = parse  # type: ignore[attr-defined]
    mod.get_distribution = lambda name: types.SimpleNamespace(version=version(name))  # type: ignore[attr-defined]
    return mod


@pytest.fixture
def alpaca_glm(monkeypatch):
    if "pkg_resources" not in sys.modules:
        try:
            import pkg_resources  # noqa: F401
        except ImportError:
            monkeypatch.setitem(sys.modules, "pkg_resources", _pkg_resources_stand_in())
    import alpaca_eval.metrics.glm_winrate as glm  # the test extra installs alpaca-eval

    return glm


def write_gamed(path: Path, rng: np.random.Generator) -> np.ndarray:
    """Two length-gamed baselines (verbose, concise) judged on every prompt, with difficulties."""
    difficulty = rng.normal(0, 1, N_PROMPTS)
    rows = []
    for model, shift in (("verbose", 1.0), ("concise", -1.0)):
        for i in range(N_PROMPTS):
            sdl = rng.normal(shift, 0.6)
            pref = 1 / (1 + math.exp(-(0.9 * math.tanh(sdl) - 0.7 * difficulty[i] + rng.normal(0, 0.3))))
            rows.append({"model": model, "index": i, "preference": round(pref, 6), "std_delta_len": round(sdl, 6),
                         "instruction_difficulty": round(difficulty[i], 6), "not_gamed_baseline": False})
    pd.DataFrame(rows).to_csv(path, index=False)
    return difficulty


def annotations(rng: np.random.Generator, difficulty: np.ndarray, length_bias: float, skill: float) -> pd.DataFrame:
    """A model judged against a baseline: preference 1 (baseline), 2 (model), 1.5 (tie), NaN (no verdict)."""
    rows = []
    for i in range(N_PROMPTS):
        len_base, len_model = int(rng.integers(200, 1500)), int(rng.integers(200, 2500))
        z = skill + length_bias * math.tanh((len_model - len_base) / 700) - 0.5 * difficulty[i]
        u = rng.random()
        p = 1 / (1 + math.exp(-z))
        pref = 2.0 if u < p - 0.05 else 1.5 if u < p + 0.05 else 1.0
        if i % 53 == 7:
            pref = float("nan")
        rows.append({"instruction": f"q{i}", "output_1": "b" * len_base, "output_2": "m" * len_model,
                     "generator_1": "baseline", "generator_2": "model", "annotator": "judge", "preference": pref})
    return pd.DataFrame(rows)


def ours(df: pd.DataFrame, gamed: GamedBaselines | None, glm) -> dict:
    return length_controlled_win_rate(list(df["preference"] - 1), list(df["output_2"].str.len()
                                                                       - df["output_1"].str.len()),
                                      list(df.index), gamed, glm)


@pytest.mark.parametrize(("seed", "length_bias", "skill"), [(0, 1.5, 0.0), (1, 0.3, 0.8), (2, 2.5, -0.6)])
def test_lc_win_rate_matches_alpaca_eval(tmp_path, monkeypatch, alpaca_glm, seed, length_bias, skill) -> None:
    rng = np.random.default_rng(seed)
    gamed_csv = tmp_path / "df_gamed.csv"
    difficulty = write_gamed(gamed_csv, rng)
    df = annotations(rng, difficulty, length_bias, skill)
    monkeypatch.setattr(alpaca_glm, "hf_hub_download", lambda **kw: str(gamed_csv))

    theirs = alpaca_glm.get_length_controlled_winrate(df.copy(), save_weights_dir=None,
                                                      is_warn_extreme_changes=False)
    mine = ours(df, GamedBaselines.load(gamed_csv), LC_V1)
    assert mine["win_rate"] == pytest.approx(theirs["length_controlled_winrate"], abs=0.1)
    assert mine["standard_error"] == pytest.approx(theirs["lc_standard_error"], abs=0.1)
    # the length term is doing something: LC differs from the raw win rate when length sways the judge
    if length_bias > 2:
        assert abs(theirs["length_controlled_winrate"] - theirs["win_rate"]) > 1.0

    theirs_min = alpaca_glm.get_length_controlled_winrate(df.copy(), glm_name="length_controlled_minimal",
                                                          save_weights_dir=None, is_warn_extreme_changes=False)
    mine_min = ours(df, None, MINIMAL)
    assert mine_min["win_rate"] == pytest.approx(theirs_min["length_controlled_winrate"], abs=0.1)


def test_length_adjusted_rate_discounts_length_without_difficulties() -> None:
    # wins come with much longer answers, losses with shorter ones: a length-driven judge
    diffs = [300.0] * 15 + [-300.0] * 5 + [0.0] * 10
    prefs = [1.0] * 15 + [0.0] * 5 + [1.0] * 5 + [0.0] * 5
    got = length_controlled_win_rate(prefs, diffs, list(range(30)))
    assert got["glm"] == "length_controlled_minimal"
    assert np.mean(prefs) * 100 == pytest.approx(66.67, abs=0.01)
    assert 40 < got["win_rate"] < 60  # at equal length the model is about an even match


def test_lc_needs_every_prompt_covered(tmp_path) -> None:
    rng = np.random.default_rng(3)
    csv = tmp_path / "df_gamed.csv"
    write_gamed(csv, rng)
    with pytest.raises(LengthControlError, match=r"for 160 AlpacaEval instructions, the answers cover 161"):
        length_controlled_win_rate([1.0] * 161, [0.0] * 161, list(range(161)), GamedBaselines.load(csv))
    with pytest.raises(LengthControlError, match=r"no instruction difficulty for prompt 200"):
        length_controlled_win_rate([1.0] * 160, [0.0] * 160, [*range(159), 200], GamedBaselines.load(csv))
    bad = tmp_path / "bad.csv"
    bad.write_text("index,preference\n0,1\n", encoding="utf-8")
    with pytest.raises(LengthControlError, match=r"bad.csv: not AlpacaEval's df_gamed.csv \(no column 'std_delta_len'"):
        GamedBaselines.load(bad)
