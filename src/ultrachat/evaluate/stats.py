"""Win rates, standard errors, the length-controlled win rate, and folding repeats.

The length-controlled win rate follows AlpacaEval 2: fit a logistic regression of the
preference (win 1, tie 0.5, loss 0) on the normalised length difference of the two answers,
then report the predicted win rate with the length term set to zero, i.e. the win rate the
model would have if its answers were as long as the reference's.

Example::

    >>> s = pairwise_stats(["win", "tie", "lose", "win"], [10.0, 0.0, -5.0, 20.0])
    >>> s["win_rate"], s["wins"], s["ties"], s["losses"]
    (62.5, 2, 1, 1)
"""

from __future__ import annotations

import math
import statistics
from typing import Any

import numpy as np

PREFERENCE = {"win": 1.0, "tie": 0.5, "lose": 0.0}
UNPARSEABLE = "unparseable"


def _clean(x: float) -> float | None:
    """JSON has no NaN: undefined figures are ``null``."""
    return None if x is None or math.isnan(x) else round(float(x), 3)


def mean_se(values: np.ndarray) -> tuple[float, float]:
    """Mean and its standard error (NaN when undefined)."""
    n = len(values)
    mean = float(values.mean()) if n else math.nan
    se = float(values.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    return mean, se


def length_controlled(prefs: np.ndarray, len_diff: np.ndarray, l2: float = 1e-2, steps: int = 50) -> float:
    """Win probability with the length effect removed (Newton's method on a 2-parameter logit)."""
    if len(prefs) == 0:
        return math.nan
    scale = float(len_diff.std()) or 1.0
    x = np.stack([np.ones_like(len_diff), np.tanh(len_diff / scale)], axis=1)
    w = np.zeros(2)
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-(x @ w)))
        grad = x.T @ (p - prefs) + l2 * w
        hess = (x.T * (p * (1 - p))) @ x + l2 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return float(1.0 / (1.0 + math.exp(-w[0])))


def pairwise_stats(outcomes: list[str], len_diffs: list[float]) -> dict[str, Any]:
    """Win / tie / loss counts, win rate (%) with standard error and length-controlled win rate."""
    judged = [(o, d) for o, d in zip(outcomes, len_diffs, strict=True) if o != UNPARSEABLE]
    prefs = np.array([PREFERENCE[o] for o, _ in judged])
    diffs = np.array([d for _, d in judged], dtype=float)
    rate, se = mean_se(prefs)
    return {
        "n": len(outcomes), "judged": len(judged),
        "wins": sum(o == "win" for o, _ in judged), "ties": sum(o == "tie" for o, _ in judged),
        "losses": sum(o == "lose" for o, _ in judged), "unparseable": len(outcomes) - len(judged),
        "win_rate": _clean(rate * 100), "win_rate_se": _clean(se * 100),
        "lc_win_rate": _clean(length_controlled(prefs, diffs) * 100),
    }


def score_stats(scores: list[float | None]) -> dict[str, Any]:
    """Mean 1-10 score with standard error; ``None`` scores are counted as unparseable."""
    got = np.array([s for s in scores if s is not None], dtype=float)
    mean, se = mean_se(got)
    return {"n": len(scores), "judged": len(got), "unparseable": len(scores) - len(got),
            "mean": _clean(mean), "mean_se": _clean(se)}


def fold_repeats(runs: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """Repeated runs as one: counts summed, figures the median, ``spread`` = [min, max] of ``metric``."""
    if len(runs) == 1:
        return dict(runs[0])
    out: dict[str, Any] = {}
    for key in runs[0]:
        values = [r[key] for r in runs if r[key] is not None]
        if isinstance(runs[0][key], int):
            out[key] = sum(values)
        else:
            out[key] = _clean(statistics.median(values)) if values else None
    values = [r[metric] for r in runs if r[metric] is not None]
    out["spread"] = [min(values), max(values)] if values else None
    out["stdev"] = _clean(statistics.stdev(values)) if len(values) > 1 else None
    return out
