"""First contact: what a finished run holds, and the commands to try next.

``ultrachat demo`` (and ``make demo``) runs the small world recipe on the embedded model,
prints its longest dialogue, then this summary. The figures are read back from the
corpus itself, so a rerun of a finished demo reports the same corpus.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.table import Table

from ..core.corpus import iter_jsonl

NEXT_STEPS = [
    ("look at more dialogues", "ultrachat show {corpus} --n 3"),
    ("clean the corpus", "ultrachat filter {corpus} --out {out}/clean"),
    ("measure it (the paper's Table 4)", "ultrachat stats {corpus} --out {out}/stats"),
    ("browse it in the browser", "ultrachat explore {corpus}"),
    ("estimate a bigger run", "ultrachat estimate examples/demo.toml"),
    ("use a real model", "ultrachat generate world --dialogues 100 --base-url http://127.0.0.1:8000/v1 "
                         "--model Qwen/Qwen2.5-7B-Instruct"),
]


@dataclass
class CorpusSummary:
    """Counts over a generated corpus (``dialogues.jsonl``)."""

    dialogues: int = 0
    rounds: int = 0
    tokens: int = 0
    cut_kept: int = 0  # replies cut by max_tokens and kept (meta.truncated_turns)
    cut_dropped: int = 0  # replies cut and removed, or sampled again (on_truncated = "drop")
    answers: int = 0  # replies generated: kept in the corpus, dropped or sampled again

    @property
    def cut_answers(self) -> int:
        return self.cut_kept + self.cut_dropped

    @property
    def avg_rounds(self) -> float:
        return self.rounds / self.dialogues if self.dialogues else 0.0

    @property
    def cut_share(self) -> float:
        """Cut replies over replies generated (a dropped cut reply counts as one generated)."""
        return self.cut_answers / self.answers if self.answers else 0.0


def summarize_corpus(path: Path) -> CorpusSummary:
    s = CorpusSummary()
    for d in iter_jsonl(path):
        meta = d.get("meta", {})
        dropped = int(meta.get("stop_reason") == "truncated" and not meta.get("truncated_turns"))
        dropped += meta.get("regenerations", {}).get("truncated", 0)
        s.dialogues += 1
        s.rounds += len(d["data"]) // 2
        s.answers += len(d["data"]) // 2 + dropped
        s.cut_kept += len(meta.get("truncated_turns", []))
        s.cut_dropped += dropped
        s.tokens += sum(t.get("prompt", 0) + t.get("completion", 0) for t in meta.get("tokens", {}).values())
    return s


def summary_table(corpus: Path, seconds: float, written_now: int) -> Table:
    s = summarize_corpus(corpus)
    t = Table(title="demo summary", show_header=False, title_justify="left")
    t.add_row("dialogues", f"{s.dialogues} ({written_now} written by this run)")
    t.add_row("rounds", f"{s.rounds} (avg {s.avg_rounds:.2f} per dialogue)")
    t.add_row("answers cut by max_tokens", f"{s.cut_answers} of {s.answers} ({s.cut_share:.0%}); "
              f"{s.cut_kept} kept in the corpus")
    t.add_row("tokens", f"{s.tokens:,} (prompt + completion, both roles)")
    t.add_row("time", f"{seconds:.0f} s this run")
    t.add_row("output", str(corpus))
    out = corpus.parent
    for label, cmd in NEXT_STEPS:
        t.add_row(f"next: {label}", cmd.format(corpus=corpus, out=out))
    return t
