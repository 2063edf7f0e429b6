"""Exact and near-duplicate removal: ``ultrachat dedup IN --out DIR``.

* exact: an 8-byte BLAKE2 hash of the normalised text (lower case, words only), so case,
  spacing and punctuation changes still count as the same dialogue;
* near: MinHash over word n-gram shingles (5-grams by default) with LSH banding. A
  dialogue whose signature shares a band with an earlier kept dialogue is removed.

The first occurrence is kept. ``kept.jsonl`` holds survivors, ``removed.jsonl`` each removed
dialogue with ``{"of": kept_id, "kind": "exact"|"near"}`` under ``duplicate``, and
``clusters.jsonl`` one line per kept dialogue that had duplicates.

Banding decides recall and false positives. The default, 120 permutations in 24 bands x 5
rows, flags pairs above a Jaccard similarity of about 0.53 (the S-curve's midpoint
``(1/b)**(1/r)``): on real ShareGPT conversations with planted near-copies it had the best
F1 of the bandings measured (benchmark *dedup_real* in ``docs/benchmarks.md``): 90-95% of
copies with 5% of their words edited found, 1-1.2% of dialogues flagged against a
dissimilar one (5-gram Jaccard under 0.5). The previous 32 x 4 (0.42) flagged 3.1-3.3%;
datatrove's 14 x 8 (0.72) under 0.1%, but finds only 36-51% of those copies.
``--threshold`` picks the banding whose midpoint is closest to the given similarity.

The MinHash engine is rensa (Rust) by default; datasketch gives the same kind of result
more slowly and stays selectable (``--engine datasketch``).

Example::

    report = dedup_corpus(Path("dialogues.jsonl"), Path("dedup"), DedupConfig(scope="opening"))
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from contextlib import closing
from dataclasses import asdict, dataclass
from itertools import groupby
from pathlib import Path
from typing import Any, Literal

from ..core.corpus import OutputDir, read_corpus
from ..core.hashing import digest
from ..core.text import batches, words

BATCH = 512  # dialogues per MinHash bulk call; their shingles are the peak of transient memory


@dataclass
class DedupConfig:
    """How duplicates are found. ``bands=0`` derives the banding from ``threshold``."""

    scope: Literal["dialogue", "opening"] = "dialogue"
    near: bool = True
    ngram: int = 5
    num_perm: int = 120  # 24 x 5: chosen on real text (benchmarks/dedup_real.py)
    bands: int = 24
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
    return digest(" ".join(tokens))


def shingles(tokens: list[str], n: int) -> list[str]:
    """Word ``n``-grams (repeats left in: MinHash is a set sketch); a text shorter than
    ``n`` words is one shingle."""
    if len(tokens) <= n:
        return [" ".join(tokens)] if tokens else []
    return list(map(" ".join, zip(*(tokens[i:] for i in range(n)), strict=False)))


def scratch_db() -> sqlite3.Connection:
    """A private temporary SQLite database (deleted on close): what dedup has kept so far
    lives there, not in memory, so memory stays flat whatever the corpus size."""
    db = sqlite3.connect("")
    db.executescript("""
        PRAGMA journal_mode = OFF;
        PRAGMA synchronous = OFF;
        CREATE TABLE kept (pos INTEGER PRIMARY KEY, id TEXT NOT NULL);
        CREATE TABLE exact (key BLOB PRIMARY KEY, pos INTEGER NOT NULL) WITHOUT ROWID;
        CREATE TABLE band (key INTEGER PRIMARY KEY, pos INTEGER NOT NULL);
        CREATE TABLE removed (pos INTEGER NOT NULL, id TEXT NOT NULL, kind TEXT NOT NULL);
    """)
    return db


class LshIndex:
    """MinHash signatures (rensa or datasketch) and LSH bands kept in ``db``'s ``band`` table:
    one row per band key, holding the first kept dialogue with that band."""

    def __init__(self, engine: str, num_perm: int, bands: int, rows: int, seed: int,
                 db: sqlite3.Connection) -> None:
        self.engine, self.num_perm, self.seed = engine, num_perm, seed
        self.bands, self.rows, self.db = bands, rows, db
        if engine == "rensa":
            from rensa import RMinHash

            self._minhash = RMinHash
        elif engine == "datasketch":
            import datasketch  # noqa: F401  (fail here, with the engine named, if missing)
        else:
            raise ValueError(f"unknown MinHash engine '{engine}' (choose rensa or datasketch)")
        self._query = f"SELECT min(pos) FROM band WHERE key IN ({','.join('?' * bands)})"

    def signatures(self, shingle_sets: list[list[str]]) -> list[list[int]]:
        if self.engine == "rensa":
            return [m.digest() for m in
                    self._minhash.from_token_sets(shingle_sets, num_perm=self.num_perm, seed=self.seed)]
        from datasketch import MinHash

        return [m.hashvalues.tolist() for m in MinHash.bulk([[s.encode() for s in ss] for ss in shingle_sets],
                                                            num_perm=self.num_perm, seed=self.seed)]

    def band_keys(self, sig: list[int]) -> list[int]:
        """One 64-bit key per band: two signatures share a key when they agree on all its rows."""
        r = self.rows
        return [hash((b, *sig[b * r:(b + 1) * r])) for b in range(self.bands)]

    def query(self, keys: list[int]) -> int | None:
        """The first kept dialogue sharing a band with ``keys``, if any."""
        return self.db.execute(self._query, keys).fetchone()[0]

    def insert(self, pos: int, keys: list[int]) -> None:
        self.db.executemany("INSERT OR IGNORE INTO band VALUES (?, ?)", [(k, pos) for k in keys])


def dedup_corpus(path: Path, out_dir: Path, cfg: DedupConfig | None = None, skip_invalid: bool = False,
                 progress: bool = True) -> dict[str, Any]:
    """Remove duplicates from ``path`` into ``out_dir``; returns (and writes) the report.

    Dialogues stream through in batches of 512; the exact keys, ids and LSH bands of kept
    dialogues go to a temporary SQLite database, so memory does not grow with the corpus.
    """
    cfg = cfg or DedupConfig()
    bands, rows = cfg.banding()
    db = scratch_db()
    index = LshIndex(cfg.engine, cfg.num_perm, bands, rows, cfg.seed, db) if cfg.near else None
    total = 0

    with closing(db), OutputDir(out_dir, inputs=[path]) as out:
        out.touch("kept", "removed")

        def flush(batch: list[dict[str, Any]]) -> None:
            nonlocal total
            tokens = [dedup_text(d, cfg.scope) for d in batch]
            sigs = index.signatures([shingles(t, cfg.ngram) for t in tokens]) if index else None
            for i, d in enumerate(batch):
                key = exact_key(tokens[i])
                row = db.execute("SELECT pos FROM exact WHERE key = ?", (key,)).fetchone()
                match, kind = (row[0] if row else None), "exact"
                bkeys = index.band_keys(sigs[i]) if index and sigs and tokens[i] else None
                if match is None and index and bkeys:
                    match, kind = index.query(bkeys), "near"
                if match is not None:
                    db.execute("INSERT INTO removed VALUES (?, ?, ?)", (match, str(d["id"]), kind))
                    of = db.execute("SELECT id FROM kept WHERE pos = ?", (match,)).fetchone()[0]
                    out.write("removed", {**d, "duplicate": {"of": of, "kind": kind}})
                    continue
                pos = total
                total += 1
                db.execute("INSERT INTO kept VALUES (?, ?)", (pos, str(d["id"])))
                db.execute("INSERT OR IGNORE INTO exact VALUES (?, ?)", (key, pos))
                if index and bkeys:
                    index.insert(pos, bkeys)
                out.write("kept", d)

        with read_corpus(path, "dedup", out, skip_invalid, progress) as dialogues:
            for batch in batches(dialogues, BATCH):
                flush(batch)
        kinds, clusters = _write_clusters(db, out)
        n_removed = sum(kinds.values())
        report = {"input": str(path), "total": total + n_removed, "kept": total,
                  "removed": n_removed, "exact": kinds["exact"], "near": kinds["near"],
                  "clusters": clusters, "invalid": out.counts.get("invalid", 0),
                  "config": {**asdict(cfg), "bands": bands, "rows": rows,
                             "approx_threshold": round((1 / bands) ** (1 / rows), 3)},
                  "outputs": {name: str(out.file(name)) for name in out.counts}}
        out.write_json("report.json", report)
    return report


def _write_clusters(db: sqlite3.Connection, out: OutputDir) -> tuple[Counter[str], int]:
    """``clusters.jsonl``: each kept dialogue with the duplicates removed for it; the removals
    by kind and the number of clusters."""
    out.touch("clusters")
    joined = db.execute("SELECT k.id, r.id, r.kind FROM removed r JOIN kept k USING (pos) "
                        "ORDER BY r.pos, r.rowid")
    kinds: Counter[str] = Counter()
    clusters = 0
    for kept_id, members in groupby(joined, key=lambda row: row[0]):
        removed = list(members)
        kinds.update(k for _, _, k in removed)
        clusters += 1
        out.write("clusters", {"kept": kept_id, "removed": [m for _, m, _ in removed],
                               "kinds": sorted({k for _, _, k in removed})})
    return kinds, clusters


def planted_recall(removed_path: Path) -> dict[str, Any]:
    """Recall on a :mod:`~ultrachat.testing.synthetic_corpus` corpus: planted copies found among ``removed.jsonl``."""
    from ..core.corpus import iter_jsonl

    found = {"exact": 0, "near": 0}
    false_pos = 0
    for d in iter_jsonl(removed_path):
        planted = (d.get("meta") or {}).get("planted")
        if planted:
            found[planted["kind"]] += 1
        else:
            false_pos += 1
    return {**found, "false_positives": false_pos}
