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
    rng = np.random.default_rng(seed)
    vocab = np.array(_vocabulary(5000, rng))
    rng.shuffle(vocab)
    cdf = np.cumsum(1.0 / np.arange(1, len(vocab) + 1))
    cdf /= cdf[-1]
    recent: list[dict[str, Any]] = []  # sources for copies: a bounded window keeps memory flat

    def sentence_text(k: int) -> str:
        idx = np.searchsorted(cdf, rng.random(k))
        out, start = [], 0
        while start < k:  # sentences of 8-20 words
            end = min(k, start + int(rng.integers(8, 21)))
            out.append(" ".join(vocab[idx[start:end]]).capitalize() + ".")
            start = end
        return " ".join(out)

    for i in range(n):
        roll = rng.random()
        if recent and roll < near_rate + exact_rate:
            src = recent[int(rng.integers(len(recent)))]
            if roll < exact_rate:
                data = [t.upper() if j == 0 else "  ".join(t.split()) for j, t in enumerate(src["data"])]
                kind = "exact"
            else:
                rate = float(rng.uniform(*edit_range))
                data = [_edit(t, rate, rng, vocab) for t in src["data"]]
                kind = "near"
            d = {"id": f"synth-{i}", "data": data, "meta": {"planted": {"of": src["id"], "kind": kind}}}
        else:
            rounds = int(rng.integers(3, 8))
            data = []
            for _ in range(rounds):
                data.append(sentence_text(int(rng.integers(12, 35))).rstrip(".") + "?")
                data.append(sentence_text(int(rng.integers(60, 220))))
            d = {"id": f"synth-{i}", "data": data, "meta": {"sector": "synthetic"}}
            recent.append(d)
            if len(recent) > 1000:
                recent.pop(int(rng.integers(len(recent))))
        yield d


def _edit(text: str, rate: float, rng: np.random.Generator, vocab: np.ndarray) -> str:
    """Substitute, delete or insert ``rate`` of the words at random positions."""
    toks = text.split()
    for _ in range(max(1, round(len(toks) * rate))):
        pos = int(rng.integers(len(toks)))
        op = rng.random()
        if op < 0.5:
            toks[pos] = str(vocab[int(rng.integers(len(vocab)))])
        elif op < 0.75 and len(toks) > 1:
            del toks[pos]
        else:
            toks.insert(pos, str(vocab[int(rng.integers(len(vocab)))]))
    return " ".join(toks)


def write_corpus(path: Path, n: int, **kwargs: Any) -> int:
    """Write :func:`iter_corpus` to ``path`` as JSONL; returns the number of dialogues."""
    with open(path, "w", encoding="utf-8") as fh:
        for d in iter_corpus(n, **kwargs):
            fh.write(json.dumps(d) + "\n")
    return n
