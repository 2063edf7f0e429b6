"""Flat memory of the other data commands: filter, decontaminate, split-long, export, import.

Each command runs in its own process on the first fifth of the dedup benchmark's synthetic
corpus and on all of it; if memory is flat, peak RSS is about the same at both sizes.
split-long counts tokens with the embedded model's tokenizer (limit 2,048); export writes
Parquet with a 5% test split and import reads it back.

    python -m benchmarks datatools          # ULTRACHAT_BENCH_N=20000 for a quicker run
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from .dedup import ENV, TIMERS, N, synthetic_corpus

COMMAND = f"{ENV} python -m benchmarks datatools".strip()
COMMANDS = ("filter", "decontaminate", "split-long", "export", "import")

CHILD = TIMERS + r"""
from ultrachat.data.decontaminate import decontaminate
from ultrachat.data.filter import FilterConfig, filter_corpus
from ultrachat.data.formats import export_corpus, import_corpus
from ultrachat.data.split import split_long

src, limit, name, tmp = sys.argv[1], int(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
path = tmp / "corpus.jsonl"
with open(src, encoding="utf-8") as fin, open(path, "w", encoding="utf-8") as fout:
    for i, line in enumerate(fin):
        if i >= limit:
            break
        fout.write(line)
if name == "import":
    export_corpus(path, "parquet", tmp / "pq", test_fraction=0.05, progress=False)
run = {
    "filter": lambda: filter_corpus(path, tmp / "f", FilterConfig(), progress=False),
    "decontaminate": lambda: decontaminate(path, tmp / "d", progress=False),
    "split-long": lambda: split_long(path, tmp / "s", 2048, progress=False),
    "export": lambda: export_corpus(path, "parquet", tmp / "e", test_fraction=0.05, progress=False),
    "import": lambda: import_corpus(tmp / "pq", tmp / "back.jsonl", progress=False),
}[name]
t = time.perf_counter()
run()
wall = time.perf_counter() - t
print(json.dumps({"wall": wall, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _child(src: Path, limit: int, name: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        run = subprocess.run([sys.executable, "-c", CHILD, str(src), str(limit), name, tmp],
                             capture_output=True, text=True, check=True)
    return json.loads(run.stdout.strip().splitlines()[-1])


def run() -> str:
    src, _ = synthetic_corpus(N)
    small, big = N // 5, N
    rows = []
    for name in COMMANDS:
        a, b = _child(src, small, name), _child(src, big, name)
        rows.append(f"| {name} | {small / a['wall']:,.0f} | {big / b['wall']:,.0f} | {a['rss_mb']:,.0f} | "
                    f"{b['rss_mb']:,.0f} |")
    return "\n".join([
        "## Data commands: throughput and flat memory", "",
        f"Command: `{COMMAND}` (the dedup benchmark's synthetic corpus: its first {small:,} dialogues, then all "
        f"{big:,}; one process per cell).", "",
        f"| command | dialogues/s at {small:,} | dialogues/s at {big:,} | peak RSS MiB at {small:,} "
        f"| peak RSS MiB at {big:,} |",
        "|---|---|---|---|---|", *rows, "",
    ])
