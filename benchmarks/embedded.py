"""Embedded model: ours (``LocalBackend``) vs plain transformers ``generate``, float32 and bfloat16.

Speed: both decode the same prompts on the same weights (the very model object the backend
loaded), BATCHES rows at a time, exactly NEW_TOKENS new tokens each (end-of-sequence ignored),
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


def _theirs(backend: Any, batch: int) -> float:
    import torch

    tok, model = backend._tok, backend._model
    enc = tok([backend.render(m) for m in _messages(batch)], return_tensors="pt", padding=True,
              add_special_tokens=False)
    started = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(**enc, do_sample=True, temperature=0.7, top_p=0.95, top_k=64,
                             max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, pad_token_id=tok.pad_token_id)
    tokens = (out.shape[1] - enc.input_ids.shape[1]) * batch
    assert tokens == batch * NEW_TOKENS, tokens
    return tokens / (time.perf_counter() - started)


def measure_speed() -> dict[tuple[str, int, str], float]:
    """Best tokens/s per (dtype, batch, side), sides interleaved round by round."""
    from ultrachat.backends.local import LocalBackend

    loop = asyncio.new_event_loop()
    backends = {}
    for dtype in DTYPES:
        backend = LocalBackend(max_batch=max(BATCHES), dtype=dtype)
        backend.ignore_eos = True
        loop.run_until_complete(backend.start())
        backends[dtype] = backend
    best: dict[tuple[str, int, str], float] = {}
    try:
        for rnd in range(ROUNDS + 1):  # round 0 warms up every path and is not counted
            for dtype, backend in backends.items():
                for batch in BATCHES:
                    for side in ("ours", "generate"):
                        rate = _ours(backend, batch, loop) if side == "ours" else _theirs(backend, batch)
                        if rnd:
                            best[dtype, batch, side] = max(best.get((dtype, batch, side), 0.0), rate)
    finally:
        for backend in backends.values():
            loop.run_until_complete(backend.close())
        loop.close()
    return best


def measure_demo(dtype: str) -> dict[str, float]:
    """Generate the demo recipe in a fresh process with ``dtype``; its quality figures."""
    with tempfile.TemporaryDirectory() as out:
        env = dict(os.environ, ULTRACHAT_DTYPE=dtype, PYTHONPATH=str(REPO / "src"))
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "ultrachat.cli", "generate", "world", "--recipe", str(DEMO),
                        "--out", out], check=True, env=env, cwd=REPO, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - started
        rows = [json.loads(line) for line in Path(out, "dialogues.jsonl").read_text(encoding="utf-8").splitlines()]
    answers = sum(len(r["data"]) // 2 for r in rows)
    user_turns = sum((len(r["data"]) - 1) // 2 for r in rows)  # simulated turns kept (not the opening)
    regens = sum(sum(r["meta"]["regenerations"].values()) for r in rows)
    return {
        "dialogues": len(rows),
        "rounds": sum(r["meta"]["rounds"] for r in rows) / max(1, len(rows)),
        "cut": sum(len(r["meta"]["truncated_turns"]) for r in rows) / max(1, answers),
        "regens": regens / max(1, user_turns),
        "seconds": seconds,
    }


def _within(value: float, base: float) -> str:
    """'yes' when ``value`` is within 10% of ``base`` (both near zero counts as within)."""
    return "yes" if abs(value - base) <= 0.1 * abs(base) or abs(value - base) < 0.02 else "no"


def run() -> str:
    load_before = os.getloadavg()[0]
    speed = measure_speed()
    demo = {dtype: measure_demo(dtype) for dtype in DTYPES}
    load_after = os.getloadavg()[0]
    lines = [
        "## Embedded model: ours vs plain transformers `generate`",
        "",
        f"Command: `{COMMAND}`. SmolLM2-135M-Instruct on CPU ({os.cpu_count()} cores, load average "
        f"{load_before:.1f} before, {load_after:.1f} after), same prompts and weights on both sides, exactly "
        f"{NEW_TOKENS} new tokens per row, temperature 0.7, top-p 0.95, top-k 64. Ours: `LocalBackend.complete` "
        f"(concurrent calls meet in the continuous batcher); theirs: `model.generate` on the same model object. "
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
    base = demo["float32"]
    lines += [
        "",
        "Quality guard: `ultrachat generate world --recipe examples/demo.toml` once per dtype "
        "(`ULTRACHAT_DTYPE`), one after the other. Target: bfloat16 within 10% of float32.",
        "",
        "| dtype | dialogues | rounds per dialogue | answers cut by max_tokens | regenerations per user turn "
        "| wall time |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for dtype in DTYPES:
        d = demo[dtype]
        lines.append(f"| {dtype} | {d['dialogues']:.0f} | {d['rounds']:.2f} | {d['cut']:.0%} | {d['regens']:.2f} "
                     f"| {d['seconds']:.0f} s |")
    bf = demo["bfloat16"]
    lines += ["", f"bfloat16 within 10% of float32: rounds {_within(bf['rounds'], base['rounds'])}, cut share "
                  f"{_within(bf['cut'], base['cut'])}, regenerations {_within(bf['regens'], base['regens'])}."]
    return "\n".join(lines)


if __name__ == "__main__":
    print(run())
