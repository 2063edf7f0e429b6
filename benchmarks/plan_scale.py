"""Planning only at the paper's scale: ``generate all --plan-only`` on
examples/ultrachat-paper.toml (1,468,000 dialogues over four sectors) with every model on
the fake backend: time, peak RSS and the distinct openings, subtopics and instructions.

Each size runs in its own process (``python -m benchmarks.plan_scale --child SCALE DIR``)
that reports its peak RSS (``ru_maxrss``) and the plan's figures; a tenth of the paper's
size runs beside the full size, so the growth of memory per opening is measured in the same
run. The inputs the recipe leaves to the user are synthetic and sized to the run: 10,000
entity names (as `entities build --top 10000` gives) and as many 40-80 word passages as
materials needs (so every sector plans its full quota). ``ULTRACHAT_PLAN_SCALES`` picks the
sizes (default ``0.1,1``), ``ULTRACHAT_SCALE_DIR`` the folder (default: the system's
temporary folder; the full plan writes about 1 GB).
"""

from __future__ import annotations

import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "examples" / "ultrachat-paper.toml"
SCALES = [float(x) for x in os.environ.get("ULTRACHAT_PLAN_SCALES", "0.1,1").split(",")]
SECTORS = ("world", "entities", "writing", "materials")


def _inputs(folder: Path, passages: int) -> tuple[Path, Path]:
    """Synthetic entity list and passage corpus (seeded, distinct)."""
    rng = random.Random(0)
    words = [f"w{rng.randrange(36 ** 4):x}" for _ in range(20_000)]
    entities = folder / "entities.csv"
    with open(entities, "w", encoding="utf-8") as fh:
        fh.write("name,type\n")
        fh.writelines(f"Entity {i:05d},concept\n" for i in range(10_000))
    corpus = folder / "passages.jsonl"
    with open(corpus, "w", encoding="utf-8") as fh:
        for i in range(passages):
            text = f"Passage {i}. " + " ".join(rng.choice(words) for _ in range(rng.randint(40, 80))) + "."
            fh.write(json.dumps({"text": text}) + "\n")
    return entities, corpus


def child(scale: float, folder: Path) -> None:
    from benchmarks.scale import fake_pool
    from ultrachat import aio
    from ultrachat.generate.all_sectors import generate_all_async
    from ultrachat.recipe import load_recipe

    base = load_recipe(RECIPE)
    counts = {name: round(part.dialogues * scale) for name, part in base.mix.sectors.items()
              if part.dialogues is not None}
    entities, corpus = _inputs(folder, counts["materials"] // 5 * 3 // 2)
    overrides: dict[str, Any] = {"out": str(folder / "out"), "dialogues": sum(counts.values()),
                                 "entities.entities_file": str(entities), "materials.files": [str(corpus)]}
    overrides.update({f"mix.sectors.{name}.dialogues": n for name, n in counts.items()})
    recipe = load_recipe(RECIPE, overrides)
    started = time.monotonic()
    summary = aio.run(generate_all_async(recipe, progress=False, plan_only=True, pool=fake_pool()))
    seconds = time.monotonic() - started
    print(json.dumps({
        "dialogues": recipe.dialogues, "seconds": round(seconds, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "sectors": {s.sector: {"planned": s.planned, "plan_tokens": s.plan_tokens, "variety": s.variety}
                    for s in summary.sectors},
        "plan_mb": round(sum(f.stat().st_size for f in (folder / "out").rglob("*") if f.is_file()) / 2 ** 20)}),
        flush=True)


def measure(scale: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ultrachat-plan-", dir=os.environ.get("ULTRACHAT_SCALE_DIR")) as tmp:
        proc = subprocess.run([sys.executable, "-m", "benchmarks.plan_scale", "--child", str(scale), tmp],
                              capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"plan at scale {scale} failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _variety(v: dict[str, dict[str, int]]) -> str:
    from ultrachat.generate.variety import describe

    return describe({k: x for k, x in v.items() if k != "openings"}) or "-"


def run() -> str:
    rows = [measure(s) for s in SCALES]
    lines = [
        "## Planning only at the paper's scale (fake backend)",
        "",
        f"Command: `ULTRACHAT_PLAN_SCALES={','.join(map(str, SCALES))} python -m benchmarks plan_scale`: "
        "`generate all --plan-only` on `examples/ultrachat-paper.toml` (scaled), every model on the fake "
        "backend (instant, no call history), synthetic entity list and passages sized to the run, one process "
        "per size. The fake ignores seeds, so its distinct counts show prompt variety only.",
        "",
        "| dialogues planned | time s | peak RSS MB | plan folder MB | openings/s |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        planned = sum(s["planned"] for s in r["sectors"].values())
        lines.append(f"| {planned:,} of {r['dialogues']:,} | {r['seconds']:.0f} | {r['peak_rss_mb']:.0f} | "
                     f"{r['plan_mb']:,} | {planned / max(r['seconds'], 1e-9):,.0f} |")
    last = rows[-1]
    lines += ["", f"Per sector at {last['dialogues']:,} (distinct used / asked of the model / the recipe's target):",
              "", "| sector | openings planned | distinct openings | distinct |", "|---|---:|---:|---|"]
    for name in SECTORS:
        s = last["sectors"].get(name)
        if s:
            lines.append(f"| {name} | {s['planned']:,} | {s['variety']['openings']['used']:,} | "
                         f"{_variety(s['variety'])} |")
    if len(rows) >= 2:
        a, b = rows[0], rows[-1]
        per = (b["peak_rss_mb"] - a["peak_rss_mb"]) * 2 ** 20 / max(1, b["dialogues"] - a["dialogues"])
        lines += ["", f"Peak RSS grows by about {per:.0f} bytes per planned dialogue between {a['dialogues']:,} "
                  f"and {b['dialogues']:,}: the openings stream to plan/openings.jsonl, each topic's or type's "
                  "texts wait in a spool file, and what stays in memory per opening is a few 64-bit hashes."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(float(sys.argv[2]), Path(sys.argv[3]))
    else:
        print(run())
