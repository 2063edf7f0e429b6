"""Synthetic UltraChat-format corpora with planted duplicates, for benchmarks and tests.

Text is drawn from a Zipf-distributed vocabulary, so word n-grams behave like prose
(frequent function words, rare content words). A share of dialogues are planted copies of
earlier ones: exact copies (case and spacing changed) and near copies with 5-10% of their
words edited. Each copy records its source in ``meta.planted`` so recall can be measured.

Example::

    n = write_corpus(Path("synth.jsonl"), 1000, near_rate=0.1, exact_rate=0.02, seed=0)
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

_SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "ta", "shi", "po", "ve", "da", "en", "or", "is", "al", "um", "ex"]


def _vocabulary(size: int, rng: np.random.Generator) -> list[str]:
    vocab: set[str] = set()
    while len(vocab) < size:
        vocab.add("".join(rng.choice(_SYLLABLES, size=int(rng.integers(1, 5)))))
    return sorted(vocab)


def iter_corpus(n: int, near_rate: float = 0.1, exact_rate: float = 0.02, seed: int = 0,
                edit_range: tuple[float, float] = (0.05, 0.10)) -> Iterator[dict[str, Any]]:
    """Yield ``n`` dialogues; about ``near_rate`` of them are near copies, ``exact_rate`` exact copies."""
    rng = np.random.default_rng(seed)  # bulk word draws
    r = random.Random(seed)  # scalar draws (much cheaper per call than numpy's)
    vocab = _vocabulary(5000, rng)
    r.shuffle(vocab)
    cdf = np.cumsum(1.0 / np.arange(1, len(vocab) + 1))
    cdf /= cdf[-1]
    recent: list[dict[str, Any]] = []  # sources for copies: a bounded window keeps memory flat

    def turn_text(ws: list[str], question: bool) -> str:
        out, start = [], 0
        while start < len(ws):  # sentences of 8-20 words
            end = start + r.randint(8, 20)
            out.append(" ".join(ws[start:end]).capitalize())
            start = end
        return ". ".join(out) + ("?" if question else ".")

    for i in range(n):
        roll = r.random()
        if recent and roll < near_rate + exact_rate:
            src = r.choice(recent)
            if roll < exact_rate:
                data = [t.upper() if j == 0 else "  ".join(t.split()) for j, t in enumerate(src["data"])]
                kind = "exact"
            else:
                rate = r.uniform(*edit_range)
                data = [_edit(t, rate, r, vocab) for t in src["data"]]
                kind = "near"
            d = {"id": f"synth-{i}", "data": data, "meta": {"planted": {"of": src["id"], "kind": kind}}}
        else:
            lengths = [r.randint(12, 34) if j % 2 == 0 else r.randint(60, 219) for j in range(2 * r.randint(3, 7))]
            ws = [vocab[k] for k in np.searchsorted(cdf, rng.random(sum(lengths))).tolist()]
            data, pos = [], 0
            for j, k in enumerate(lengths):
                data.append(turn_text(ws[pos:pos + k], question=j % 2 == 0))
                pos += k
            d = {"id": f"synth-{i}", "data": data, "meta": {"sector": "synthetic"}}
            recent.append(d)
            if len(recent) > 1000:
                recent.pop(r.randrange(len(recent)))
        yield d


def _edit(text: str, rate: float, r: random.Random, vocab: list[str]) -> str:
    """Substitute, delete or insert ``rate`` of the words at random positions."""
    toks = text.split()
    for _ in range(max(1, round(len(toks) * rate))):
        pos = r.randrange(len(toks))
        op = r.random()
        if op < 0.5:
            toks[pos] = r.choice(vocab)
        elif op < 0.75 and len(toks) > 1:
            del toks[pos]
        else:
            toks.insert(pos, r.choice(vocab))
    return " ".join(toks)


def write_corpus(path: Path, n: int, **kwargs: Any) -> int:
    """Write :func:`iter_corpus` to ``path`` as JSONL; returns the number of dialogues."""
    with open(path, "w", encoding="utf-8") as fh:
        for d in iter_corpus(n, **kwargs):
            fh.write(json.dumps(d) + "\n")
    return n
