"""Run benchmarks and rebuild docs/benchmarks.md.

    python -m benchmarks            # every benchmark
    python -m benchmarks dedup      # only the named ones; other sections are kept

Each module in SECTIONS has ``run() -> str`` returning a Markdown section (figures plus
the command that produced them); it is saved as docs/benchmarks/<name>.md and the
sections are concatenated into docs/benchmarks.md.
"""

from __future__ import annotations

import importlib
import platform
import sys
import time
from pathlib import Path

# name -> module; each team adds its line here.
SECTIONS: dict[str, str] = {
    "orchestration": "benchmarks.orchestration",  # engine + writer + aiohttp backend vs the openai client
    "embedded": "benchmarks.embedded",  # embedded model: single stream vs micro-batched tokens/s
    "scale": "benchmarks.scale",  # 10k/100k-dialogue simulation: RSS and engine dialogues/s
    "plan_scale": "benchmarks.plan_scale",  # generate all --plan-only at the paper's 1.47M: time, peak RSS, variety
    "distilabel": "benchmarks.distilabel",  # side by side with distilabel 1.5.3 (throwaway venv)
    "explore": "benchmarks.explore",  # explorer index time, RSS, search p50/p95 at 100k and 1M dialogues
    "training": "benchmarks.training",  # SFT tokens/s: packed vs unpacked, ours vs plain TRL SFTTrainer
    "dedup": "benchmarks.dedup",  # rensa vs datasketch: throughput, recall on planted copies, RSS (100k)
    "dedup_real": "benchmarks.dedup_real",  # banding on real ShareGPT text: planted-copy recall vs false positives
    "stats": "benchmarks.stats",  # corpus stats throughput and peak RSS at 20k vs 100k dialogues
    "datatools": "benchmarks.datatools",  # filter/decontaminate/split-long/export/import: dialogues/s, RSS
    "sources": "benchmarks.sources",  # entities build on a Wikidata-format dump; hash-order C4 sampling
    "install": "benchmarks.install",  # cold `make install`: base (pip) vs pip + lock vs uv + lock
    "user_turns": "benchmarks.user_turns",  # the user-turn checker on real chats: held-out accept/flag rates
    "reliability": "benchmarks.reliability",  # kill storms, 20 SIGKILLs per case: lost/duplicated/equal
}

DOCS = Path(__file__).resolve().parent.parent / "docs"


def main(argv: list[str]) -> int:
    chosen = argv or list(SECTIONS)
    unknown = [n for n in chosen if n not in SECTIONS]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    (DOCS / "benchmarks").mkdir(parents=True, exist_ok=True)
    for name in chosen:
        print(f"== benchmark {name}", flush=True)
        started = time.monotonic()
        section = importlib.import_module(SECTIONS[name]).run()
        (DOCS / "benchmarks" / f"{name}.md").write_text(section.rstrip() + "\n", encoding="utf-8")
        print(section, f"\n({time.monotonic() - started:.0f} s)", flush=True)
    assemble()
    return 0


def assemble() -> None:
    """Rebuild docs/benchmarks.md from the saved sections (after a run, or after editing one)."""
    parts = ["# Benchmarks\n",
             "Produced by `make bench` (or `python -m benchmarks NAME`). This machine is noisy: every figure is "
             "a ratio measured side by side in one run.\n",
             f"Machine of the last run: {platform.machine()}, {platform.python_version()}.\n"]
    for name in SECTIONS:
        path = DOCS / "benchmarks" / f"{name}.md"
        if path.exists():
            parts.append(path.read_text(encoding="utf-8"))
    (DOCS / "benchmarks.md").write_text("\n".join(parts), encoding="utf-8")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
