"""AlpacaEval 2's length-controlled win rate, computed offline from a judged answer set.

The same GLM as ``alpaca_eval.metrics.get_length_controlled_winrate`` (``length_controlled_v1``):
a logistic regression of the preference (model wins 1, tie 0.5, loses 0) on

    tanh(standardised length difference) + instruction difficulty + not-gamed-baseline term

with no intercept, fitted by L1-penalised ``LogisticRegressionCV`` (liblinear, C chosen by
5-fold ``GroupKFold`` on the continuous log loss, ``random_state=123``) together with the
annotations of AlpacaEval's two length-gamed baselines, weighted 0.2 / 2, which regularise the
fit towards the baseline. The LC win rate is the mean predicted preference with the length
term set to zero. The gamed annotations and the instruction difficulties are AlpacaEval's
``df_gamed.csv``, which the user supplies (``--lc-gamed``): nothing is downloaded.

Without ``df_gamed.csv`` (ultra_eval or any set AlpacaEval has no instruction difficulties for)
there is no LC win rate. ``length_controlled_minimal`` (alpaca_eval's GLM without the
difficulty term and the regularisation) then gives a *length-adjusted* win rate, reported
under that name so it is never read as the leaderboard's figure.

Example::

    gamed = GamedBaselines.load(Path("df_gamed.csv"))
    lc = length_controlled_win_rate([1.0, 0.5, 0.0, ...], [120.0, -40.0, ...], [0, 1, 2, ...], gamed)
    lc["win_rate"], lc["standard_error"]
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

GAMED_COLUMNS = ("index", "preference", "std_delta_len", "instruction_difficulty", "not_gamed_baseline")


class LengthControlError(ValueError):
    """A ``df_gamed.csv`` that cannot be used, or answers it does not cover; names the file."""


@dataclass(frozen=True)
class GLM:
    """One of alpaca_eval's GLMs (``GLM_INFO`` in ``alpaca_eval/metrics/glm_winrate.py``)."""

    name: str
    difficulty: bool  # the instruction_difficulty term
    regularize_to_baseline: float | None  # weight of the gamed baselines' rows (None: not used)
    n_splits: int = 5


LC_V1 = GLM("length_controlled_v1", difficulty=True, regularize_to_baseline=0.2)
MINIMAL = GLM("length_controlled_minimal", difficulty=False, regularize_to_baseline=None)


@dataclass
class GamedBaselines:
    """AlpacaEval's ``df_gamed.csv``: the gamed baselines' annotations and every instruction's difficulty."""

    source: str
    index: np.ndarray
    preference: np.ndarray  # in [0, 1]
    std_delta_len: np.ndarray
    instruction_difficulty: np.ndarray
    not_gamed_baseline: np.ndarray  # bool

    @property
    def difficulty(self) -> dict[int, float]:
        """Instruction index -> difficulty (the first row of each index, as alpaca_eval reads it)."""
        out: dict[int, float] = {}
        for i, d in zip(self.index.tolist(), self.instruction_difficulty.tolist(), strict=True):
            out.setdefault(int(i), float(d))
        return out

    @classmethod
    def load(cls, path: Path) -> GamedBaselines:
        if not path.is_file():
            raise LengthControlError(f"{path}: no such file (AlpacaEval's df_gamed.csv)")
        with path.open(encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in GAMED_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise LengthControlError(f"{path}: not AlpacaEval's df_gamed.csv (no column {missing[0]!r})")
            rows: dict[str, list[Any]] = {c: [] for c in GAMED_COLUMNS}
            for line, rec in enumerate(reader, 2):
                try:
                    rows["index"].append(int(float(rec["index"])))
                    for c in ("preference", "std_delta_len", "instruction_difficulty"):
                        rows[c].append(float(rec[c]) if rec[c] != "" else math.nan)
                    rows["not_gamed_baseline"].append(_boolean(rec["not_gamed_baseline"]))
                except ValueError as exc:
                    raise LengthControlError(f"{path}:{line}: {exc}") from None
        if not rows["index"]:
            raise LengthControlError(f"{path}: no rows")
        return cls(str(path), np.array(rows["index"]), np.array(rows["preference"]), np.array(rows["std_delta_len"]),
                   np.array(rows["instruction_difficulty"]), np.array(rows["not_gamed_baseline"], dtype=bool))


def _boolean(text: str) -> bool:
    if text.strip().lower() in ("true", "1", "1.0"):
        return True
    if text.strip().lower() in ("false", "0", "0.0"):
        return False
    raise ValueError(f"not_gamed_baseline {text!r} is not True or False")


def _design(glm: GLM, std_delta_len: np.ndarray, difficulty: np.ndarray, not_gamed: np.ndarray) -> np.ndarray:
    """The design matrix of the GLM's formula, columns in the formula's order, no intercept."""
    cols = [np.tanh(std_delta_len), *([difficulty] if glm.difficulty else []), not_gamed.astype(float)]
    return np.column_stack(cols)


def _logloss_continuous(y_true: np.ndarray, y_pred: np.ndarray, true_prob: np.ndarray,
                        true_sample_weight: np.ndarray | None = None) -> float:
    """alpaca_eval's CV score: log loss against the continuous preference each duplicated row carries."""
    target = np.where(y_true == 1, true_prob, 1 - true_prob)
    pred = np.clip(y_pred, 1e-15, 1 - 1e-15)
    loss = target * np.log(pred) + (1 - target) * np.log(1 - pred)
    if true_sample_weight is not None:
        loss = loss * true_sample_weight
    return float(-np.mean(loss))


def _fit(x: np.ndarray, prefs: np.ndarray, weight: np.ndarray | None, n_splits: int) -> Any:
    """L1 logistic regression on continuous targets: each row twice (label 1 and 0), weighted by p and 1-p."""
    import sklearn
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.metrics import make_scorer
    from sklearn.model_selection import GroupKFold

    n = len(prefs)
    groups = np.r_[np.arange(n), np.arange(n)]
    prob = np.r_[prefs, 1 - prefs]
    true_weight = None if weight is None else np.r_[weight, weight]
    with sklearn.config_context(enable_metadata_routing=True):
        scorer = make_scorer(_logloss_continuous, response_method="predict_proba", greater_is_better=False)
        scorer = scorer.set_score_request(true_sample_weight=True, true_prob=True)
        # l1_ratios=(1,) is penalty="l1" in scikit-learn >= 1.8 (where `penalty` is deprecated)
        model = LogisticRegressionCV(cv=GroupKFold(n_splits=n_splits), scoring=scorer, random_state=123, dual=False,
                                     l1_ratios=(1.0,), solver="liblinear", n_jobs=None, fit_intercept=False,
                                     use_legacy_attributes=False)
        model.set_fit_request(sample_weight=True)
        model.fit(np.vstack([x, x]), np.r_[np.ones(n), np.zeros(n)],
                  sample_weight=prob if true_weight is None else prob * true_weight,
                  groups=groups, true_sample_weight=true_weight, true_prob=prob)
    return model


def length_controlled_win_rate(preferences: list[float], len_diffs: list[float], indices: list[int],
                               gamed: GamedBaselines | None = None, glm: GLM | None = None) -> dict[str, Any]:
    """The GLM's win rate at equal length (%), its standard error and the fitted weights.

    ``preferences``: the model's preference per prompt (1 win, 0.5 tie, 0 loss, NaN unjudged);
    ``len_diffs``: len(model answer) - len(reference answer) in characters; ``indices``: each
    prompt's position in the AlpacaEval set (the key of its instruction difficulty).
    """
    glm = glm or (LC_V1 if gamed is not None else MINIMAL)
    prefs = np.asarray(preferences, dtype=float)
    delta = -np.asarray(len_diffs, dtype=float)  # alpaca_eval: len(baseline) - len(model)
    judged = ~np.isnan(prefs)
    if judged.sum() < glm.n_splits:
        return {"glm": glm.name, "win_rate": None, "standard_error": None, "weights": None}
    spread = delta.std(ddof=1) if len(delta) > 1 else 0.0
    std_len = delta / spread if spread > 0 else np.zeros_like(delta)
    difficulty = _difficulties(gamed, indices) if glm.difficulty else np.zeros_like(prefs)
    mine = np.ones(len(prefs), dtype=bool)
    x = _design(glm, std_len, difficulty, mine)
    x_train, y_train, weight = x[judged], prefs[judged], None
    if glm.regularize_to_baseline:
        if gamed is None:
            raise LengthControlError(f"{glm.name} needs AlpacaEval's df_gamed.csv (--lc-gamed)")
        x_gamed = _design(glm, gamed.std_delta_len, gamed.instruction_difficulty, gamed.not_gamed_baseline)
        keep = ~np.isnan(gamed.preference)
        # the gamed rows weigh lambda / 2 (two gamed baselines), the model's own rows 1
        w_gamed = np.where(gamed.not_gamed_baseline, 1.0, glm.regularize_to_baseline / 2)
        x_train = np.vstack([x_gamed[keep], x_train])
        y_train = np.r_[gamed.preference[keep], y_train]
        weight = np.r_[w_gamed[keep], np.ones(len(y_train) - keep.sum())]
    model = _fit(x_train, y_train, weight, glm.n_splits)
    predicted = model.predict_proba(_design(glm, np.zeros_like(prefs), difficulty, mine))[:, 1]
    names = ["length", *(["instruction_difficulty"] if glm.difficulty else []), "not_gamed_baseline"]
    return {"glm": glm.name, "win_rate": float(predicted.mean() * 100),
            "standard_error": float(predicted.std(ddof=1) / math.sqrt(len(predicted)) * 100),
            "weights": dict(zip(names, (float(w) for w in model.coef_[0]), strict=True))}


def length_control_info(gamed: GamedBaselines | None) -> dict[str, Any]:
    """What the report's length-controlled column is, for readers of report.json."""
    if gamed is not None:
        return {"metric": "lc_win_rate", "label": "LC win %", "glm": "length_controlled_v1",
                "df_gamed": gamed.source}
    return {"metric": "len_adj_win_rate", "label": "len-adj win %", "glm": "length_controlled_minimal",
            "df_gamed": None,
            "note": "no instruction difficulties (--lc-gamed df_gamed.csv): not AlpacaEval's LC win rate"}


def _difficulties(gamed: GamedBaselines | None, indices: list[int]) -> np.ndarray:
    if gamed is None:
        raise LengthControlError("the LC win rate needs AlpacaEval's df_gamed.csv (--lc-gamed)")
    table = gamed.difficulty
    if len(indices) != len(table):  # e.g. ultra_eval answers: AlpacaEval's difficulties do not apply
        raise LengthControlError(f"{gamed.source} has instruction difficulties for {len(table)} AlpacaEval "
                                 f"instructions, the answers cover {len(indices)} prompts: the LC win rate needs "
                                 "answers to every AlpacaEval instruction, in AlpacaEval's order")
    missing = [i for i in indices if i not in table]
    if missing:
        raise LengthControlError(f"{gamed.source}: no instruction difficulty for prompt {missing[0]} "
                                 f"({len(missing)} of {len(indices)} prompts): it covers {len(table)} instructions; "
                                 "the answer file must follow AlpacaEval's order")
    return np.array([table[i] for i in indices], dtype=float)
