"""Scale simulation: the real planner, engine and writer on the fake backend at 10k and 100k
dialogues (1.5M with ``ULTRACHAT_SCALE_SIZES=10000,100000,1500000``): memory (RSS) over
the run and engine throughput in dialogues/s.

Each size runs in its own process (``python -m benchmarks.scale --child N OUT``) that
samples its own RSS and the dialogues written every 0.5 s from its start, so the curve
covers the planning phase (peak RSS while nothing is written yet, RSS when the first
dialogue is written) and the dialogue phase (RSS when 10k / 100k / 1.5M dialogues are
written, at 10/50/90%, and the peak). ``ULTRACHAT_SCALE_DIR`` picks the folder the runs
write to (default: the system's temporary folder; 1.5M dialogues need about 3 GB).
The fake backend answers instantly (yielding to the event loop once per call, as a real
backend does) and keeps no call history, so the figures are the
engine's own cost: planning, prompts, post-processing, accounting and crash-safe writes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

SIZES = [int(x) for x in os.environ.get("ULTRACHAT_SCALE_SIZES", "10000,100000").split(",")]
CONCURRENCY = 64
RECIPE = f"""concurrency = {CONCURRENCY}
[models.user]
backend = "fake"
[models.assistant]
backend = "fake"
"""


def _rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _sampler(path: Path, started: float, stop: threading.Event) -> None:
    """Print ``{"t", "written", "rss_mb"}`` every 0.5 s (counting lines incrementally)."""
    offset, written = 0, 0
    while not stop.wait(0.5):
        if path.exists():
            with open(path, "rb") as fh:
                fh.seek(offset)
                while chunk := fh.read(1 << 20):  # in blocks: the sampler must not weigh on RSS
                    offset += len(chunk)
                    written += chunk.count(b"\n")
        sample = {"t": round(time.monotonic() - started, 2), "written": written, "rss_mb": round(_rss_mb(), 1)}
        print(json.dumps(sample), flush=True)


def fake_pool() -> Any:
    """A backend pool whose every model is the fake backend, instant but yielding to the event
    loop once per call as any real backend does, and keeping no call history (the test fake
    records every call)."""
    import asyncio

    from ultrachat.backends import Backend, BackendPool, Completion, GenerationParams, Message
    from ultrachat.backends.fake import FakeBackend
    from ultrachat.recipe import ModelConfig

    class Fake(FakeBackend):
        async def complete(self, messages: list[Message], params: GenerationParams) -> Completion:
            await asyncio.sleep(0)
            out = await super().complete(messages, params)
            self.calls.clear()
            return out

    class Pool(BackendPool):
        def get(self, cfg: ModelConfig) -> Backend:
            return self._backends.setdefault((cfg.backend, cfg.model, cfg.base_url), Fake())

    return Pool()


def child(n: int, out: Path) -> None:
    """Generate ``n`` world dialogues with a history-free fake backend, printing samples."""
    from ultrachat import aio
    from ultrachat.generate.runner import generate_async
    from ultrachat.recipe import load_recipe

    recipe_path = out.parent / "recipe.toml"
    recipe_path.write_text(RECIPE, encoding="utf-8")
    recipe = load_recipe(recipe_path, {"dialogues": n, "out": str(out)})
    started = time.monotonic()
    stop = threading.Event()
    thread = threading.Thread(target=_sampler, args=(out / "dialogues.jsonl", started, stop), daemon=True)
    thread.start()
    summary = aio.run(generate_async("world", recipe, progress=False, pool=fake_pool()))  # uvloop, as the CLI runs
    stop.set()
    thread.join()
    print(json.dumps({"done": summary.stats.dialogues, "seconds": round(time.monotonic() - started, 2),
                      "rss_mb": round(_rss_mb(), 1)}), flush=True)


MILESTONES = (10_000, 100_000, 1_500_000)


def measure(n: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ultrachat-scale-", dir=os.environ.get("ULTRACHAT_SCALE_DIR")) as tmp:
        proc = subprocess.run([sys.executable, "-m", "benchmarks.scale", "--child", str(n), str(Path(tmp) / "out")],
                              capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
    if proc.returncode != 0:
        raise RuntimeError(f"scale run of {n:,} failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    samples = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    final = samples.pop()
    first = next((s for s in samples if s["written"] > 0), samples[-1] if samples else final)
    plan_s = first["t"]
    rss_at: dict[float, float | None] = {}
    for frac in (0.1, 0.5, 0.9, *MILESTONES):
        if frac > n:
            rss_at[frac] = None
            continue
        hit = next((s for s in samples if s["written"] >= (frac * n if frac < 1 else frac)), final)
        rss_at[frac] = hit["rss_mb"]  # the run's end when it finished between two samples
    return {"n": n, "seconds": final["seconds"], "plan_s": plan_s,
            "dialogues_per_s": final["done"] / max(1e-9, final["seconds"] - plan_s),
            "rss_plan_peak": max([s["rss_mb"] for s in samples if s["written"] == 0] or [first["rss_mb"]]),
            "rss_plan_done": first["rss_mb"], "rss_at": rss_at,
            "rss_peak": max([s["rss_mb"] for s in samples] + [final["rss_mb"]])}


def run() -> str:
    rows = [measure(n) for n in SIZES]

    def mb(v: float | None) -> str:
        return "-" if v is None else f"{v:.0f}"

    lines = [
        "## Scale simulation (fake backend, real planner, engine and writer)",
        "",
        f"Command: `ULTRACHAT_SCALE_SIZES={','.join(map(str, SIZES))} python -m benchmarks scale` "
        f"(world sector, concurrency {CONCURRENCY}, instant fake replies, one process per size).",
        "",
        "| dialogues | planning s | dialogue phase dialogues/s | peak RSS MB while planning | "
        "RSS MB when planning is done | RSS MB at 10% / 50% / 90% written | "
        "RSS MB at 10k / 100k / 1.5M written | peak RSS MB | total s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        at = r["rss_at"]
        lines.append(f"| {r['n']:,} | {r['plan_s']:.1f} | {r['dialogues_per_s']:.0f} | {mb(r['rss_plan_peak'])} | "
                     f"{mb(r['rss_plan_done'])} | {mb(at[0.1])} / {mb(at[0.5])} / {mb(at[0.9])} | "
                     f"{' / '.join(mb(at[m]) for m in MILESTONES)} | {mb(r['rss_peak'])} | {r['seconds']:.0f} |")
    if len(rows) >= 2:
        a, b = rows[0], rows[-1]
        per = (b["rss_peak"] - a["rss_peak"]) * 1024 * 1024 / (b["n"] - a["n"])
        lines += ["", f"Peak RSS grows by about {per:.0f} bytes per dialogue between {a['n']:,} and {b['n']:,} "
                  "(the plan streams through plan/openings.jsonl; what remains per dialogue is the 64-bit hash "
                  "of each id written, and the plan-call index, 16 bytes a planning call)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(int(sys.argv[2]), Path(sys.argv[3]))
    else:
        print(run())
