"""Stats throughput and memory: ``corpus_stats`` with its defaults on the synthetic corpus.

Defaults: the embedded model's tokenizer over every utterance, MTLD and MiniLM topic
diversity on a 10,000-dialogue reservoir sample, coherence off. Each size runs in its own
process; peak RSS at 20% of the corpus and at the whole corpus shows whether memory stays
flat as the corpus grows (the sample is the same size in both). "Pass" is the streaming
pass (read, tokenise, histogram, sample); MTLD and embedding run on the sample afterwards.
Sizes: the first tenth of the corpus and all of it.

    python -m benchmarks stats   # ULTRACHAT_BENCH_N=20000 ULTRACHAT_BENCH_SAMPLE=2000 for a quicker run
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from ultrachat.data import stats as st

from .dedup import ENV, TIMERS, N, load, synthetic_corpus

COMMAND = f"{ENV} python -m benchmarks stats".strip()
SAMPLE = int(os.environ.get("ULTRACHAT_BENCH_SAMPLE", "10000"))

CHILD = TIMERS + r"""
from ultrachat.data import stats as st

st._add_mtld = timed("mtld", st._add_mtld)
st._topic_diversity = timed("embed", st._topic_diversity)

src, limit, sample = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
path = Path(sys.argv[4]) / "corpus.jsonl"
with open(src, encoding="utf-8") as fin, open(path, "w", encoding="utf-8") as fout:
    for i, line in enumerate(fin):
        if i >= limit:
            break
        fout.write(line)
t = time.perf_counter()
r = st.corpus_stats(path, st.StatsConfig(sample=sample), progress=False)
wall = time.perf_counter() - t
print(json.dumps({"wall": wall, **timers, "row": r["row"],
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


RATIO = r"""
import json, resource, sys, time
from ultrachat.data import stats as st

texts = []
with open(sys.argv[1], encoding="utf-8") as fh:
    for line in fh:
        texts.append(st._dialogue_text(json.loads(line)))
        if len(texts) >= int(sys.argv[2]):
            break
model = st._minilm()
out = {}
for rep in range(2):  # alternate, so both settings see the same load
    for tokens, batch in ((256, 64), (128, 16)):
        model.max_seq_length = tokens
        t = time.perf_counter()
        model.encode(texts, batch_size=batch, convert_to_numpy=True)
        out[f"{tokens}/{batch}"] = out.get(f"{tokens}/{batch}", 0.0) + time.perf_counter() - t
print(json.dumps({k: 2 * len(texts) / v for k, v in out.items()}))
"""


def embedding_ratio(n: int = 500) -> str:
    """MiniLM dialogues/s, old setting (256 word pieces, batches of 64) vs new (128, 16), side by side."""
    src, _ = synthetic_corpus(N)
    before = load()
    run = subprocess.run([sys.executable, "-c", RATIO, str(src), str(n)], capture_output=True, text=True, check=True)
    r = json.loads(run.stdout.strip().splitlines()[-1])
    return (f"Embedding alone, side by side in one process on {n} of these dialogues, the two settings alternating "
            f"twice (`python -c 'from benchmarks.stats import embedding_ratio; print(embedding_ratio())'`; load "
            f"{before} before, {load()} after): 256 word pieces in batches of 64 (the previous default) "
            f"{r['256/64']:.1f} dialogues/s, 128 in batches of 16 (now) {r['128/16']:.1f} dialogues/s: "
            f"{r['128/16'] / r['256/64']:.1f}x.")


def _child(src: Path, limit: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        run = subprocess.run([sys.executable, "-c", CHILD, str(src), str(limit), str(SAMPLE), tmp],
                             capture_output=True, text=True, check=True)
    return json.loads(run.stdout.strip().splitlines()[-1])


def run() -> str:
    src, _ = synthetic_corpus(N)
    load_before = load()
    rows = []
    for n in (N // 10, N):
        r = _child(src, n)
        r = {"mtld": 0.0, "embed": 0.0, **r}
        passed = r["wall"] - r["mtld"] - r["embed"]
        row = r["row"]
        rows.append(f"| {n:,} | {r['wall']:.0f} | {passed:.0f} ({n / passed:,.0f} dialogues/s) | {r['mtld']:.0f} | "
                    f"{r['embed']:.0f} ({min(n, SAMPLE) / max(r['embed'], 1e-9):.1f} dialogues/s) | "
                    f"{r['rss_mb']:,.0f} | {row['avg_turns']:.2f} / "
                    f"{row['avg_dialogue_tokens']:.0f} / {row['avg_utterance_tokens']:.0f} / {row['mtld']:.1f} / "
                    f"{row['topic_diversity']:.3f} |")
    return "\n".join([
        "## Stats: throughput and memory", "",
        f"Command: `{COMMAND}` (the dedup benchmark's synthetic corpus and its first tenth; tokenizer: SmolLM2-135M "
        f"(embedded); sample {SAMPLE:,} dialogues, seed 0; topic diversity from the offline MiniLM reading the first "
        f"{st.StatsConfig().embed_tokens} word pieces of each sampled dialogue, batches of {st.EMBED_BATCH}; "
        f"load average (1/5/15 min) {load_before} before, {load()} after).", "",
        "| dialogues | wall s | streaming pass s | MTLD s | embedding s (with model load) | peak RSS MiB "
        "| turns / dialogue tok / utterance tok / MTLD / topic (mean cos sim) |",
        "|---|---|---|---|---|---|---|", *rows, "",
        "The synthetic text is made-up words, so its MTLD and topic diversity say nothing about real data; "
        "the figures here are about speed and memory.", "",
    ])
