"""Explorer benchmark: index time, peak memory and search latency at 100k and 1M dialogues.

    python -m benchmarks explore                 # 100k and 1M (about 5 minutes)
    python -m benchmarks.explore 20000           # one quick size, printed only

Synthetic dialogues with a Zipf word distribution (so common words are really common:
the most frequent words occur in nearly every dialogue) plus 30 topics with their own
vocabulary (so the map has structure). Each size is indexed in a child process (peak RSS
read from ``getrusage(RUSAGE_CHILDREN)``), then queries are timed in this process:
rare, mid-frequency and most-common words, two-word queries, and the same with a sector
filter, against the explorer's plan and the plain ``ORDER BY rank LIMIT 20`` baseline.
Latency is wall time; "CPU ms" is the querying thread's CPU time, i.e. the latency the
query would have on an idle machine (other jobs share this one).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

SIZES = (100_000, 1_000_000)
VOCAB = 50_000
TOPICS = 30
QUERIES_PER_CLASS = 40
BASELINE_QUERIES = 10
SECTORS = ("world", "writing", "assistance")


def _words(n: int, rng: np.random.Generator) -> list[str]:
    letters = np.array(list("etaoinshrdlcumwfgypbvkjxqz"))
    out, seen = [], set()
    while len(out) < n:
        w = "".join(letters[rng.zipf(1.6, size=int(rng.integers(2, 10))) % 26])
        if w not in seen:
            seen.add(w)
            out.append(w)
    return out


def write_corpus(path: Path, n: int, seed: int = 0) -> None:
    """``n`` synthetic dialogues as UltraChat JSONL with ``meta`` (sector, topic, model, rounds)."""
    rng = np.random.default_rng(seed)
    vocab = np.array(_words(VOCAB, rng))
    zipf = 1.0 / np.arange(1, VOCAB + 1) ** 1.07
    cdf = np.cumsum(zipf / zipf.sum())
    topic_words = rng.integers(2000, VOCAB, size=(TOPICS, 60))
    with open(path, "w", encoding="utf-8") as fh:
        block = 10_000
        for base in range(0, n, block):
            m = min(block, n - base)
            rounds = rng.integers(1, 4, size=m)
            topics = rng.integers(0, TOPICS, size=m)
            lengths = [[int(rng.integers(4, 13)) if t % 2 == 0 else int(rng.integers(10, 31)) for t in range(2 * r)]
                       for r in rounds]
            per_dialogue = np.array([sum(x) for x in lengths])
            words = np.searchsorted(cdf, rng.random(per_dialogue.sum()))
            # 15% of words come from the dialogue's topic vocabulary: what makes the map's islands.
            topical = rng.random(len(words)) < 0.15
            words[topical] = topic_words[np.repeat(topics, per_dialogue)[topical], words[topical] % 60]
            tokens = vocab[words].tolist()
            pos = 0
            lines = []
            for i in range(m):
                turns = []
                for length in lengths[i]:
                    turns.append(" ".join(tokens[pos:pos + length]).capitalize() + ".")
                    pos += length
                meta = {"sector": SECTORS[topics[i] % 3], "topic": f"topic {topics[i]}",
                        "models": {"assistant": {"model": f"model-{(base + i) % 2}"}},
                        "rounds": int(rounds[i]), "stop_reason": "completed"}
                lines.append(json.dumps({"id": f"syn-{base + i}", "data": turns, "meta": meta}))
            fh.write("\n".join(lines) + "\n")


def _index_child(data: Path, db: Path) -> tuple[float, float]:
    """Index in a child process; returns (seconds, peak RSS MiB of the child)."""
    code = ("import sys; from pathlib import Path; from ultrachat.explore.index import sync_index; "
            "sync_index([Path(sys.argv[1])], Path(sys.argv[2]), progress=False)")
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", code, str(data), str(db)], check=True)
    seconds = time.monotonic() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return seconds, max(peak, before) / 1024


def _query_words(db: Path) -> dict[str, list[str]]:
    from ultrachat.explore.index import connect

    conn = connect(db, readonly=True)
    terms = conn.execute("SELECT term, doc FROM fts_vocab ORDER BY doc DESC").fetchall()
    conn.close()
    n = len(terms)
    top = [t for t, _ in terms[:QUERIES_PER_CLASS]]
    mid = [t for t, _ in terms[n // 50: n // 50 + QUERIES_PER_CLASS]]
    rare = [t for t, _ in terms[n // 2: n // 2 + QUERIES_PER_CLASS]]
    pairs = [f"{a} {b}" for a, b in zip(top, top[1:] + top[:1], strict=True)]
    return {"rare word": rare, "mid word": mid, "most common words": top, "two common words": pairs}


def _pct(xs: list[float], p: float) -> float:
    return float(np.percentile(np.array(xs) * 1000, p))


def _timed(fn: Callable[[], object], wall: list[float], cpu: list[float]) -> None:
    """Wall time and this thread's CPU time (what the query costs without other jobs' load)."""
    w, c = time.perf_counter(), time.thread_time()
    fn()
    cpu.append(time.thread_time() - c)
    wall.append(time.perf_counter() - w)


def _time_queries(db: Path) -> list[tuple[str, str, float, float, float]]:
    from ultrachat.explore.index import connect
    from ultrachat.explore.search import Query, search

    conn = connect(db, readonly=True)
    rows = []
    for label, words in _query_words(db).items():
        for name, extra in (("explorer", {}), ("explorer + sector filter", {"sector": "writing"})):
            wall: list[float] = []
            cpu: list[float] = []
            for w in words:
                _timed(lambda w=w, extra=extra: search(conn, Query.parse({"q": w, **extra})), wall, cpu)
            rows.append((label, name, _pct(wall, 50), _pct(wall, 95), _pct(cpu, 95)))
        wall, cpu = [], []
        for w in words[:BASELINE_QUERIES]:  # the baseline takes seconds per common word: fewer samples
            match = " ".join(f'"{t}"' for t in w.split())
            _timed(lambda m=match: conn.execute("SELECT rowid FROM fts WHERE fts MATCH ? ORDER BY rank LIMIT 20",
                                                (m,)).fetchall(), wall, cpu)
        rows.append((label, "baseline: ORDER BY rank LIMIT 20", _pct(wall, 50), _pct(wall, 95), _pct(cpu, 95)))
    conn.close()
    return rows


def measure(n: int, workdir: Path) -> str:
    data = workdir / f"syn-{n}.jsonl"
    db = workdir / f"syn-{n}.sqlite"
    t = time.monotonic()
    write_corpus(data, n)
    gen = time.monotonic() - t
    seconds, rss = _index_child(data, db)
    lines = [f"### {n:,} dialogues\n",
             f"- corpus: {data.stat().st_size / 2**20:,.0f} MiB JSONL (generated in {gen:.0f} s); "
             f"index: {db.stat().st_size / 2**20:,.0f} MiB",
             f"- index time (full build incl. FTS optimize, stats and the 20k-point map): {seconds:.1f} s "
             f"({n / seconds:,.0f} dialogues/s); peak RSS of the indexing process: {rss:,.0f} MiB",
             "", "| query class | plan | p50 ms | p95 ms | p95 CPU ms |", "|---|---|---|---|---|"]
    lines += [f"| {c} | {plan} | {p50:.1f} | {p95:.1f} | {cpu:.1f} |" for c, plan, p50, p95, cpu in _time_queries(db)]
    with open(data, encoding="utf-8") as src:  # incremental: append 1% more (same ids: duplicates) and re-sync
        extra = "".join(line for _, line in zip(range(n // 100), src, strict=False))
    with open(data, "a", encoding="utf-8") as fh:
        fh.write(extra)
    seconds2, _ = _index_child(data, db)
    lines.append(f"\n- incremental re-run after appending {n // 100:,} dialogues: {seconds2:.1f} s")
    return "\n".join(lines) + "\n"


def run(sizes: tuple[int, ...] = SIZES) -> str:
    with tempfile.TemporaryDirectory(prefix="explore-bench-") as tmp:
        parts = [f"## Explorer (`ultrachat explore`)\n\nCommand: `python -m benchmarks explore` (sizes "
                 f"{', '.join(f'{n:,}' for n in sizes)}; {QUERIES_PER_CLASS} queries per class, "
                 f"{BASELINE_QUERIES} for the baseline; one search = ranked page of 20 with snippets read from "
                 f"the JSONL file). CPU cores: {os.cpu_count()}; load average at the start: "
                 f"{os.getloadavg()[0]:.1f} (other jobs share this machine: latencies are upper bounds).\n"]
        parts += [measure(n, Path(tmp)) for n in sizes]
    return "\n".join(parts)


if __name__ == "__main__":
    print(run(tuple(int(a) for a in sys.argv[1:]) or SIZES))
