"""Embedded model: ours (``LocalBackend``) vs plain transformers ``generate``, float32 and bfloat16.

Speed: both decode the same prompts on the same weights (theirs: the model as transformers
loads it; ours: the backend's copy, whose bfloat16 linears hold oneDNN-packed weights),
BATCHES rows at a time, exactly NEW_TOKENS new tokens each (end-of-sequence ignored),
sampling at temperature 0.7, top-p 0.95, top-k 64. Ours goes through ``LocalBackend.complete``
(the path the engine uses: concurrent calls meet in the continuous batcher). Runs interleave
ours/theirs for every dtype and batch size, ROUNDS times; each figure is the best round, so
load from other processes touches both sides alike.

Quality guard: the demo recipe (examples/demo.toml) generated once per dtype in a fresh
process (``ULTRACHAT_DTYPE``): rounds per dialogue, share of answers cut by max_tokens,
regenerations per simulated user turn, wall time.

    python -m benchmarks embedded
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

NEW_TOKENS = 64
BATCHES = (1, 8)
DTYPES = ("float32", "bfloat16")
ROUNDS = 3
COMMAND = "python -m benchmarks embedded"
REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "examples" / "demo.toml"
QUESTIONS = [
    "Why is the sky blue?", "How do vaccines work?", "What causes ocean tides?", "How does a rainbow form?",
    "Why do leaves change colour in autumn?", "How do airplanes stay in the air?", "What is inflation?",
    "How do bees make honey?",
]
INVARIANCE = [  # different lengths, so rows are padded differently in the batch than alone
    "Why?", "Name a red fruit.", "How do plants turn sunlight into sugar, step by step?",
    "Write two sentences about the history of the bicycle and why it became popular in cities.",
    "What is 7 times 8?", "Describe a quiet morning in a small fishing village by the sea, in detail.",
    "Give me a tip for learning French.", "Explain what a black hole is to a ten-year-old child who loves space.",
]


def _messages(batch: int) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}] for i in range(batch)]


def _ours(backend: Any, batch: int, loop: asyncio.AbstractEventLoop) -> float:
    from ultrachat.backends import GenerationParams

    async def go() -> int:
        outs = await asyncio.gather(*(
            backend.complete(m, GenerationParams(temperature=0.7, top_p=0.95, max_tokens=NEW_TOKENS, seed=i))
            for i, m in enumerate(_messages(batch))))
        return sum(o.usage.completion_tokens for o in outs)

    started = time.perf_counter()
    tokens = loop.run_until_complete(go())
    assert tokens == batch * NEW_TOKENS, tokens
    return tokens / (time.perf_counter() - started)


def _stock_model(dtype: str) -> Any:
    """The embedded model as plain transformers loads it, for ``generate``."""
    import torch
    from transformers import AutoModelForCausalLM

    from ultrachat.backends.local import EMBEDDED_MODEL, resolve_model_dir

    return AutoModelForCausalLM.from_pretrained(resolve_model_dir(EMBEDDED_MODEL), dtype=getattr(torch, dtype)).eval()


def _theirs(backend: Any, model: Any, batch: int) -> float:
    import torch

    tok = backend._tok
    enc = tok([backend.render(m) for m in _messages(batch)], return_tensors="pt", padding=True,
              add_special_tokens=False)
    started = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(**enc, do_sample=True, temperature=0.7, top_p=0.95, top_k=64,
                             max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, pad_token_id=tok.pad_token_id)
    tokens = (out.shape[1] - enc.input_ids.shape[1]) * batch
    assert tokens == batch * NEW_TOKENS, tokens
    return tokens / (time.perf_counter() - started)


def measure_invariance(backend: Any) -> int:
    """How many of len(INVARIANCE) seeded calls (prompts of different lengths) give the same text
    decoded alone as decoded all together in one batch."""
    from ultrachat.backends import GenerationParams

    msgs = [[{"role": "user", "content": q}] for q in INVARIANCE]
    params = [GenerationParams(temperature=0.7, top_p=0.95, max_tokens=48, seed=i) for i in range(len(msgs))]
    together = backend.generate_batch(msgs, params)
    alone = [backend.generate_batch([m], [p])[0] for m, p in zip(msgs, params, strict=True)]
    return sum(a.text == t.text for a, t in zip(alone, together, strict=True))


def measure_speed() -> tuple[dict[tuple[str, int, str], float], dict[str, int]]:
    """Best tokens/s per (dtype, batch, side), sides interleaved round by round; batch invariance per dtype."""
    from ultrachat.backends.local import LocalBackend

    loop = asyncio.new_event_loop()
    backends, stock = {}, {}
    for dtype in DTYPES:
        backends[dtype] = LocalBackend(max_batch=max(BATCHES), dtype=dtype)
        loop.run_until_complete(backends[dtype].start())
        stock[dtype] = _stock_model(dtype)
    invariant = {dtype: measure_invariance(backend) for dtype, backend in backends.items()}
    for backend in backends.values():
        backend.ignore_eos = True
    best: dict[tuple[str, int, str], float] = {}
    try:
        for rnd in range(ROUNDS + 1):  # round 0 warms up every path and is not counted
            for dtype, backend in backends.items():
                for batch in BATCHES:
                    for side in ("ours", "generate"):
                        rate = (_ours(backend, batch, loop) if side == "ours"
                                else _theirs(backend, stock[dtype], batch))
                        if rnd:
                            best[dtype, batch, side] = max(best.get((dtype, batch, side), 0.0), rate)
    finally:
        for backend in backends.values():
            loop.run_until_complete(backend.close())
        loop.close()
    return best, invariant


def measure_demos() -> dict[str, dict[str, float]]:
    """Generate the demo recipe once per dtype, all at the same time (so load touches them alike),
    each in a fresh process (``ULTRACHAT_DTYPE``); their quality figures."""
    with tempfile.TemporaryDirectory() as tmp:
        started, procs = time.perf_counter(), {}
        for dtype in DTYPES:
            env = dict(os.environ, ULTRACHAT_DTYPE=dtype, PYTHONPATH=str(REPO / "src"))
            procs[dtype] = subprocess.Popen(
                [sys.executable, "-m", "ultrachat.cli", "generate", "world", "--recipe", str(DEMO), "--out",
                 str(Path(tmp, dtype))], env=env, cwd=REPO, stdout=subprocess.DEVNULL)
        ended: dict[str, float] = {}
        while len(ended) < len(procs):  # each run's own end time
            for dtype, proc in procs.items():
                if dtype not in ended and proc.poll() is not None:
                    ended[dtype] = time.perf_counter() - started
            time.sleep(0.5)
        figures = {}
        for dtype, proc in procs.items():
            if proc.returncode != 0:
                raise RuntimeError(f"the {dtype} demo run failed (exit {proc.returncode})")
            figures[dtype] = {**_demo_figures(Path(tmp, dtype, "dialogues.jsonl")), "seconds": ended[dtype]}
    return figures


USER_REGENS = ("politeness", "role_confounding")  # user-turn retries (assistant ones: truncated, empty_reply)


def _demo_figures(path: Path) -> dict[str, float]:
    """Rounds per dialogue; share of sampled answers cut by max_tokens (kept, retried or dropped
    with on_truncated = "drop"); user-turn regenerations per user turn asked for."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    metas = [r["meta"] for r in rows]
    retried = sum(m["regenerations"].get("truncated", 0) for m in metas)
    # "drop" ends a dialogue before a reply cut twice: stopped as truncated with no cut turn kept.
    dropped = sum(m["stop_reason"] == "truncated" and not m["truncated_turns"] for m in metas)
    kept_cut = sum(len(m["truncated_turns"]) for m in metas)
    sampled = sum(len(r["data"]) // 2 for r in rows) + retried + dropped
    user_asked = sum((len(r["data"]) - 1) // 2 + (r["meta"]["stop_reason"] in USER_REGENS) for r in rows)
    regens = sum(m["regenerations"].get(k, 0) for m in metas for k in USER_REGENS)
    return {
        "dialogues": len(rows),
        "rounds": sum(m["rounds"] for m in metas) / max(1, len(rows)),
        "cut": (kept_cut + retried + dropped) / max(1, sampled),
        "regens": regens / max(1, user_asked),
    }


def _guard(value: float, base: float, higher_is_better: bool) -> str:
    """'yes' when ``value`` is no more than 10% worse than ``base`` (a gap under 0.02 is noise)."""
    worse = base - value if higher_is_better else value - base
    return "yes" if worse <= 0.1 * abs(base) or worse < 0.02 else "no"


def run() -> str:
    load_before = os.getloadavg()[0]
    speed, invariant = measure_speed()
    demo = measure_demos()
    load_after = os.getloadavg()[0]
    lines = [
        "## Embedded model: ours vs plain transformers `generate`",
        "",
        f"Command: `{COMMAND}`. SmolLM2-135M-Instruct on CPU ({os.cpu_count()} cores, load average "
        f"{load_before:.1f} before, {load_after:.1f} after), same prompts and weights on both sides, exactly "
        f"{NEW_TOKENS} new tokens per row, temperature 0.7, top-p 0.95, top-k 64. Ours: `LocalBackend.complete` "
        "(concurrent calls meet in the continuous batcher); theirs: `model.generate` on the same weights "
        "as transformers loads them (ours packs its bfloat16 linears for oneDNN once, at load). "
        f"Sides interleaved, best of {ROUNDS} rounds, completion tokens/s.",
        "",
        "| dtype | batch | ours | generate | ours / generate |",
        "|---|---:|---:|---:|---:|",
    ]
    for dtype in DTYPES:
        for batch in BATCHES:
            o, g = speed[dtype, batch, "ours"], speed[dtype, batch, "generate"]
            lines.append(f"| {dtype} | {batch} | {o:.1f} | {g:.1f} | {o / g:.2f}x |")
    lines += ["", "Target: ours at its best dtype >= `generate` at its best dtype:", ""]
    for batch in BATCHES:
        o = max(DTYPES, key=lambda d: speed[d, batch, "ours"])
        g = max(DTYPES, key=lambda d: speed[d, batch, "generate"])
        ratio = speed[o, batch, "ours"] / speed[g, batch, "generate"]
        lines.append(f"- batch {batch}: ours {o} {speed[o, batch, 'ours']:.1f} vs generate {g} "
                     f"{speed[g, batch, 'generate']:.1f} = {ratio:.2f}x ({'met' if ratio >= 1 else 'missed'})")
    lines += ["", f"Batch invariance: of {len(INVARIANCE)} seeded calls (prompts of 1 to 20 words, 48 tokens), "
                  "the same text decoded alone as in one batch of all of them: "
                  + ", ".join(f"{dtype} {invariant[dtype]}/{len(INVARIANCE)}" for dtype in DTYPES) + "."]
    base = demo["float32"]
    lines += [
        "",
        "Quality guard: `ultrachat generate world --recipe examples/demo.toml` once per dtype "
        "(`ULTRACHAT_DTYPE`), both at the same time. Target: bfloat16 no more than 10% worse than float32.",
        "",
        "| dtype | dialogues | rounds per dialogue | answers cut by max_tokens (kept, retried or dropped) "
        "| user-turn regenerations per user turn "
        "| wall time |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for dtype in DTYPES:
        d = demo[dtype]
        lines.append(f"| {dtype} | {d['dialogues']:.0f} | {d['rounds']:.2f} | {d['cut']:.0%} | {d['regens']:.2f} "
                     f"| {d['seconds']:.0f} s |")
    bf = demo["bfloat16"]
    lines += ["", f"bfloat16 no more than 10% worse than float32: rounds {_guard(bf['rounds'], base['rounds'], True)}, "
                  f"cut share {_guard(bf['cut'], base['cut'], False)}, regenerations per user turn "
                  f"{_guard(bf['regens'], base['regens'], False)} ({bf['dialogues']:.0f} dialogues per dtype: "
                  "sampling noise is large at this size)."]
    return "\n".join(lines)


if __name__ == "__main__":
    print(run())
