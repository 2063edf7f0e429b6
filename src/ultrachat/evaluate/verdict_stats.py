"""Statistics over judge verdicts: win rates, mean scores, standard errors, folding repeats (the
length-controlled win rate is in ``lc``).

Example::

    >>> s = pairwise_stats(["win", "tie", "lose", "win"])
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


def preference(outcome: str) -> float:
    """The model's preference: win 1, tie 0.5, loss 0, unparseable NaN."""
    return PREFERENCE.get(outcome, math.nan)


def pairwise_stats(outcomes: list[str]) -> dict[str, Any]:
    """Win / tie / loss counts and the win rate (%) with its standard error."""
    judged = [o for o in outcomes if o != UNPARSEABLE]
    rate, se = mean_se(np.array([PREFERENCE[o] for o in judged]))
    return {
        "n": len(outcomes), "judged": len(judged),
        "wins": judged.count("win"), "ties": judged.count("tie"), "losses": judged.count("lose"),
        "unparseable": len(outcomes) - len(judged),
        "win_rate": _clean(rate * 100), "win_rate_se": _clean(se * 100),
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
