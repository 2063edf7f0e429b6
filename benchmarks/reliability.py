"""Kill storms at 20 kills per case: every sector over the faulty HTTP endpoint, world on the
fake backend, ``--ray`` with workers and with the driver killed, training mid-step and mid-save.
Each case SIGKILLs a real run at random moments (printed seed: ``KILL_SEED``), reruns the same
command, and compares the end result with an uninterrupted run's (``ultrachat.testing.storms``;
``make test`` runs the same storms with 3 kills).

    python -m benchmarks reliability            # 20 kills per case
    ULTRACHAT_BENCH_KILLS=5 ULTRACHAT_BENCH_CASES=world,ray-worker python -m benchmarks reliability
"""

from __future__ import annotations

import os
import random
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from ultrachat.testing.storms import StormResult
from ultrachat.testing.storms.generate import all_storm, entities_storm, materials_storm, world_storm, writing_storm
from ultrachat.testing.storms.ray import driver_storm, worker_storm
from ultrachat.testing.storms.train import train_storm

KILLS = int(os.environ.get("ULTRACHAT_BENCH_KILLS", "20"))
SEED = int(os.environ.get("KILL_SEED") or random.randrange(2**32))

Storm = Callable[[Path, int, int], StormResult]
CASES: dict[str, tuple[str, Storm]] = {
    "world": ("generate world, fake backend", world_storm),
    "entities": ("generate entities, openai backend vs faulty mock", entities_storm),
    "writing": ("generate writing, openai backend vs faulty mock", writing_storm),
    "materials": ("generate materials, openai backend vs faulty mock", materials_storm),
    "all": ("generate all, openai backend vs faulty mock", all_storm),
    "ray-worker": ("generate world --ray local, a worker killed (no rerun)", worker_storm),
    "ray-driver": ("generate world --ray local, driver's process group killed", driver_storm),
    "train-step": ("train, killed mid-step", partial(train_storm, point="mid-step")),
    "train-save": ("train, killed mid-save", partial(train_storm, point="mid-save")),
}
CHOSEN = [c for c in os.environ.get("ULTRACHAT_BENCH_CASES", ",".join(CASES)).split(",") if c]


def _row(name: str, label: str, result: StormResult, seconds: float) -> str:
    verdict = "yes" if result.ok else "**NO**"
    return (f"| {name} | {label} | {result.kills} | {result.reruns} | {result.expected} | {result.lost} | "
            f"{result.duplicated} | {result.invalid} | {'yes' if result.equal else 'no'} | {verdict} | "
            f"{seconds:.0f} s | {result.detail.replace('|', chr(92) + '|')} |")  # a cell's own bars escaped


def run() -> str:
    env = " ".join(f"{k}={os.environ[k]}" for k in ("ULTRACHAT_BENCH_KILLS", "ULTRACHAT_BENCH_CASES")
                   if k in os.environ)
    rows, failed = [], []
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="ultrachat-storms-") as tmp:
        for name in CHOSEN:
            label, storm = CASES[name]
            started = time.monotonic()
            result = storm(Path(tmp) / name, KILLS, SEED)
            rows.append(_row(name, label, result, time.monotonic() - started))
            print(result.summary(), flush=True)
            if not result.ok:
                failed.append(name)
    return "\n".join([
        f"## Kill storms: {KILLS} SIGKILLs per case\n",
        f"Command: `{env + ' ' if env else ''}KILL_SEED={SEED} python -m benchmarks reliability` (the seed replays "
        f"the kill moments). Load average {load:.1f} at the start, 2 cores. Each case kills a real run at random "
        "moments of real work, reruns the same command until it finishes, and compares with an uninterrupted "
        "run: *expected* items (dialogues, or training steps), *lost* and *duplicated* ones, *invalid* whole lines "
        "left on disk, *equal* = same ids and texts (dialogues) or weights and per-step losses within 1e-6 "
        "(training). `--ray` worker kills need no rerun: the driver resubmits the dead worker's shard.\n",
        "| case | what is killed | kills landed | runs | expected | lost | duplicated | invalid | equal | ok "
        "| time | detail |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---|---:|---|",
        *rows,
        "",
        f"All cases ok: {'yes' if not failed else 'no (' + ', '.join(failed) + ')'}.",
    ])
