"""Verdict parsing: turn a judge's free-form reply into a verdict, or ``None``.

The rules come from the judge's config (``[verdict]`` in ``judges/*.toml``): regular
expressions tried in order, whose first group is the verdict. A pattern that matches two
different verdicts makes the reply ambiguous, and an ambiguous or unmatched reply is
``None``: the caller retries it and finally records it as unparseable, never as a result.

Example::

    >>> spec = VerdictSpec(kind="pairwise", patterns=[r"\\[\\[([ABC])\\]\\]"], labels={"A": "A", "B": "B", "C": "tie"})
    >>> parse_verdict("Both are fine but A is clearer. [[A]]", spec)
    'A'
    >>> parse_verdict("[[A]] or [[B]]", spec) is None
    True
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

Verdict = str | float  # "A" / "B" / "tie" for pairwise judges, a rating for score judges


@dataclass(frozen=True)
class VerdictSpec:
    """How to read one judge's replies (the ``[verdict]`` table of its config)."""

    kind: Literal["pairwise", "score"]
    patterns: list[str]
    labels: dict[str, str] = field(default_factory=dict)  # pairwise: matched text -> A / B / tie
    min: float = 1.0  # score range; ratings outside it are ignored
    max: float = 10.0

    def compiled(self) -> list[re.Pattern[str]]:
        return [re.compile(p) for p in self.patterns]


def _as_verdict(raw: str, spec: VerdictSpec) -> Verdict | None:
    if spec.kind == "score":
        value = float(raw)
        return value if spec.min <= value <= spec.max else None
    labels = {k.upper(): v for k, v in spec.labels.items()}
    return labels.get(raw.strip().upper())


def parse_verdict(text: str, spec: VerdictSpec) -> Verdict | None:
    """The verdict in ``text`` by the first pattern that matches, or ``None``."""
    for pattern in spec.compiled():
        found = {v for m in pattern.finditer(text) if (v := _as_verdict(m.group(1) or "", spec)) is not None}
        if len(found) == 1:
            return found.pop()
        if len(found) > 1:
            return None  # e.g. the judge echoed "[[A]] ... [[B]]" from the instructions
    return None
