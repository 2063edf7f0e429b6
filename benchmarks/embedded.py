"""Embedded model: tokens/s of one stream vs many calls through the micro-batcher.

Both measurements go through ``LocalBackend.complete`` (the path the engine uses) in the
same process, one after the other: first the calls one at a time, then ``BATCH`` calls at
once, which the micro-batcher decodes together.

    python -m benchmarks embedded
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ultrachat.backends import Completion

SINGLE_CALLS = 2
BATCH = 16
MAX_TOKENS = 32
COMMAND = "python -m benchmarks embedded"
QUESTIONS = [
    "Why is the sky blue?", "How do vaccines work?", "What causes ocean tides?", "How does a rainbow form?",
    "Why do leaves change colour in autumn?", "How do airplanes stay in the air?", "What is inflation?",
    "How do bees make honey?", "Why do we dream?", "How does a refrigerator keep food cold?",
    "What is photosynthesis?", "How do volcanoes erupt?", "Why is the ocean salty?", "How do magnets work?",
    "What makes thunder?", "How do plants drink water?",
]


async def _measure() -> dict[str, float]:
    from ultrachat.backends import GenerationParams
    from ultrachat.backends.local import LocalBackend

    backend = LocalBackend()
    await backend.start()

    def call(i: int) -> Coroutine[Any, Any, Completion]:
        params = GenerationParams(temperature=0.7, top_p=0.95, max_tokens=MAX_TOKENS, seed=i)
        return backend.complete([{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}], params)

    try:
        await call(0)  # warm-up: first-call allocations are not part of either figure
        started, tokens = time.perf_counter(), 0
        for i in range(SINGLE_CALLS):
            tokens += (await call(i)).usage.completion_tokens
        single = tokens / (time.perf_counter() - started)
        backend.batch_sizes.clear()
        started = time.perf_counter()
        outs = await asyncio.gather(*(call(i) for i in range(BATCH)))
        batched = sum(o.usage.completion_tokens for o in outs) / (time.perf_counter() - started)
        biggest = max(backend.batch_sizes)
    finally:
        await backend.close()
    return {"single": single, "batched": batched, "biggest_batch": biggest}


def run() -> str:
    r = asyncio.run(_measure())
    return "\n".join([
        "## Embedded model: single stream vs the micro-batcher",
        "",
        f"Command: `{COMMAND}`. SmolLM2-135M-Instruct (float32, CPU, {os.cpu_count()} cores) through "
        f"`LocalBackend.complete`, max_tokens={MAX_TOKENS}, temperature 0.7: {SINGLE_CALLS} calls one at a time, "
        f"then {BATCH} calls at once (largest batch decoded together: {r['biggest_batch']:.0f}).",
        "",
        "| mode | completion tokens/s | vs single |",
        "|---|---:|---:|",
        f"| single stream | {r['single']:.1f} | 1.00x |",
        f"| {BATCH} concurrent calls, micro-batched | {r['batched']:.1f} | {r['batched'] / r['single']:.2f}x |",
        "",
        "Target: batched aggregate >= 2x single stream.",
    ])


if __name__ == "__main__":
    print(run())
