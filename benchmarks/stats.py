"""Stats throughput and memory: ``corpus_stats`` with its defaults on the synthetic corpus.

Defaults: the embedded model's tokenizer over every utterance, MTLD and MiniLM topic
diversity on a 10,000-dialogue reservoir sample, coherence off. Each size runs in its own
process; peak RSS at 20% of the corpus and at the whole corpus shows whether memory stays
flat as the corpus grows (the sample is the same size in both). "Pass" is the streaming
pass (read, tokenise, histogram, sample); MTLD and embedding run on the sample afterwards.

    python -m benchmarks stats   # ULTRACHAT_BENCH_N=20000 ULTRACHAT_BENCH_SAMPLE=2000 for a quicker run
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from .dedup import ENV, TIMERS, N, synthetic_corpus

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


def _child(src: Path, limit: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        run = subprocess.run([sys.executable, "-c", CHILD, str(src), str(limit), str(SAMPLE), tmp],
                             capture_output=True, text=True, check=True)
    return json.loads(run.stdout.strip().splitlines()[-1])


def run() -> str:
    src, _ = synthetic_corpus(N)
    rows = []
    for n in (N // 5, N):
        r = _child(src, n)
        r = {"mtld": 0.0, "embed": 0.0, **r}
        passed = r["wall"] - r["mtld"] - r["embed"]
        row = r["row"]
        rows.append(f"| {n:,} | {r['wall']:.0f} | {passed:.0f} ({n / passed:,.0f} dialogues/s) | {r['mtld']:.0f} | "
                    f"{r['embed']:.0f} | {r['rss_mb']:,.0f} | {row['avg_turns']:.2f} / "
                    f"{row['avg_dialogue_tokens']:.0f} / {row['avg_utterance_tokens']:.0f} / {row['mtld']:.1f} / "
                    f"{row['topic_diversity']:.3f} |")
    return "\n".join([
        "## Stats: throughput and memory", "",
        f"Command: `{COMMAND}` (the dedup benchmark's synthetic corpus and its first fifth; tokenizer: SmolLM2-135M "
        f"(embedded); sample {SAMPLE:,} dialogues, seed 0; topic diversity from the offline MiniLM).", "",
        "| dialogues | wall s | streaming pass s | MTLD s | embedding s | peak RSS MiB "
        "| turns / dialogue tok / utterance tok / MTLD / topic |",
        "|---|---|---|---|---|---|---|", *rows, "",
        "The synthetic text is made-up words, so its MTLD and topic diversity say nothing about real data; "
        "the figures here are about speed and memory.", "",
    ])
