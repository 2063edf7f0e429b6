"""Exact and near-duplicate removal: ``ultrachat dedup IN --out DIR``.

* exact: an 8-byte BLAKE2 hash of the normalised text (lower case, words only), so case,
  spacing and punctuation changes still count as the same dialogue;
* near: MinHash over word n-gram shingles (5-grams by default) with LSH banding. A
  dialogue whose signature shares a band with an earlier kept dialogue is removed.

The first occurrence is kept. ``kept.jsonl`` holds survivors, ``removed.jsonl`` each removed
dialogue with ``{"of": kept_id, "kind": "exact"|"near"}`` under ``duplicate``, and
``clusters.jsonl`` one line per kept dialogue that had duplicates.

Banding decides recall. With 128 permutations, 32 bands x 4 rows flags pairs whose
Jaccard similarity is above about 0.42 (the S-curve's midpoint ``(1/b)**(1/r)``), which
catches copies with 5-10% of words edited (their 5-gram Jaccard is ~0.3-0.9); a banding
tuned for 0.8 misses nearly all of them (measured in ``docs/benchmarks.md``).
``--threshold`` picks the banding whose midpoint is closest to the given similarity.

The MinHash engine is rensa (Rust) by default; datasketch gives the same kind of result
more slowly and stays selectable (``--engine datasketch``).

Example::

    report = dedup_corpus(Path("dialogues.jsonl"), Path("dedup"), DedupConfig(scope="opening"))
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from .stream import OutputDir, batches, read_corpus, words

BATCH = 512  # dialogues per MinHash bulk call; their shingles are the peak of transient memory


@dataclass
class DedupConfig:
    """How duplicates are found. ``bands=0`` derives the banding from ``threshold``."""

    scope: Literal["dialogue", "opening"] = "dialogue"
    near: bool = True
    ngram: int = 5
    num_perm: int = 128
    bands: int = 32
    threshold: float | None = None
    engine: Literal["rensa", "datasketch"] = "rensa"
    seed: int = 1

    def banding(self) -> tuple[int, int]:
        """``(bands, rows)``; from ``threshold`` when given, else ``bands`` x ``num_perm // bands``."""
        if self.threshold is not None:
            if not 0 < self.threshold < 1:
                raise ValueError(f"--threshold must be between 0 and 1, got {self.threshold}")
            options = [(b, self.num_perm // b) for b in range(1, self.num_perm + 1) if self.num_perm % b == 0]
            return min(options, key=lambda br: abs((1 / br[0]) ** (1 / br[1]) - self.threshold))
        if self.bands < 1 or self.num_perm % self.bands:
            raise ValueError(f"--bands must divide --num-perm ({self.num_perm}), got {self.bands}")
        return self.bands, self.num_perm // self.bands


def dedup_text(d: dict[str, Any], scope: str) -> list[str]:
    """The normalised words compared for ``d``: its opening line or the whole dialogue."""
    return words(d["data"][0] if scope == "opening" else "\n".join(d["data"]))


def exact_key(tokens: list[str]) -> bytes:
    return hashlib.blake2b(" ".join(tokens).encode(), digest_size=8).digest()


def shingles(tokens: list[str], n: int) -> list[str]:
    """Word ``n``-grams (repeats left in: MinHash is a set sketch); a text shorter than
    ``n`` words is one shingle."""
    if len(tokens) <= n:
        return [" ".join(tokens)] if tokens else []
    return list(map(" ".join, zip(*(tokens[i:] for i in range(n)), strict=False)))


class LshIndex:
    """MinHash signatures plus an LSH index, on rensa or datasketch."""

    def __init__(self, engine: str, num_perm: int, bands: int, rows: int, seed: int) -> None:
        self.engine, self.num_perm, self.seed = engine, num_perm, seed
        if engine == "rensa":
            from rensa import RMinHash, RMinHashLSH

            self._minhash = RMinHash
            # rensa's threshold only serves its is_similar(); candidates come from the bands.
            self._lsh = RMinHashLSH(threshold=0.5, num_perm=num_perm, num_bands=bands)
        elif engine == "datasketch":
            from datasketch import MinHashLSH

            self._lsh = MinHashLSH(num_perm=num_perm, params=(bands, rows))
        else:
            raise ValueError(f"unknown MinHash engine '{engine}' (choose rensa or datasketch)")

    def signatures(self, shingle_sets: list[list[str]]) -> list[Any]:
        if self.engine == "rensa":
            return self._minhash.from_token_sets(shingle_sets, num_perm=self.num_perm, seed=self.seed)
        from datasketch import MinHash

        return MinHash.bulk([[s.encode() for s in ss] for ss in shingle_sets], num_perm=self.num_perm,
                            seed=self.seed)

    def query(self, sig: Any) -> list[int]:
        return list(self._lsh.query(sig))

    def insert(self, key: int, sig: Any) -> None:
        self._lsh.insert(key, sig)


def dedup_corpus(path: Path, out_dir: Path, cfg: DedupConfig | None = None, skip_invalid: bool = False,
                 progress: bool = True) -> dict[str, Any]:
    """Remove duplicates from ``path`` into ``out_dir``; returns (and writes) the report.

    Memory grows with the kept dialogues' keys (8-byte hashes, ids and LSH bands), never
    with their text: dialogues stream through in batches of 512.
    """
    cfg = cfg or DedupConfig()
    bands, rows = cfg.banding()
    index = LshIndex(cfg.engine, cfg.num_perm, bands, rows, cfg.seed) if cfg.near else None
    seen: dict[bytes, int] = {}  # exact key -> position in kept_ids
    kept_ids: list[str] = []
    clusters: dict[int, list[tuple[str, str]]] = defaultdict(list)

    with OutputDir(out_dir, inputs=[path]) as out:
        out.touch("kept", "removed")

        def flush(batch: list[dict[str, Any]]) -> None:
            tokens = [dedup_text(d, cfg.scope) for d in batch]
            sigs = index.signatures([shingles(t, cfg.ngram) for t in tokens]) if index else None
            for i, d in enumerate(batch):
                key = exact_key(tokens[i])
                match, kind = seen.get(key), "exact"
                if match is None and index and tokens[i]:
                    cands = index.query(sigs[i])
                    match, kind = (min(cands), "near") if cands else (None, "")
                if match is not None:
                    clusters[match].append((str(d["id"]), kind))
                    out.write("removed", {**d, "duplicate": {"of": kept_ids[match], "kind": kind}})
                    continue
                pos = len(kept_ids)
                kept_ids.append(str(d["id"]))
                seen[key] = pos
                if index and tokens[i]:
                    index.insert(pos, sigs[i])
                out.write("kept", d)

        with read_corpus(path, "dedup", out, skip_invalid, progress) as dialogues:
            for batch in batches(dialogues, BATCH):
                flush(batch)
        out.touch("clusters")
        for pos, members in clusters.items():
            out.write("clusters", {"kept": kept_ids[pos], "removed": [m for m, _ in members],
                                   "kinds": sorted({k for _, k in members})})
        kinds = [k for members in clusters.values() for _, k in members]
        report = {"input": str(path), "total": len(kept_ids) + len(kinds), "kept": len(kept_ids),
                  "removed": len(kinds), "exact": kinds.count("exact"), "near": kinds.count("near"),
                  "clusters": len(clusters), "invalid": out.counts.get("invalid", 0),
                  "config": {**asdict(cfg), "bands": bands, "rows": rows,
                             "approx_threshold": round((1 / bands) ** (1 / rows), 3)},
                  "outputs": {name: str(out.file(name)) for name in out.counts}}
        out.write_json("report.json", report)
    return report


def planted_recall(removed_path: Path) -> dict[str, Any]:
    """Recall on a :mod:`~ultrachat.data.synth` corpus: planted copies found among ``removed.jsonl``."""
    from .jsonl import iter_jsonl

    found = {"exact": 0, "near": 0}
    false_pos = 0
    for d in iter_jsonl(removed_path):
        planted = (d.get("meta") or {}).get("planted")
        if planted:
            found[planted["kind"]] += 1
        else:
            false_pos += 1
    return {**found, "false_positives": false_pos}
