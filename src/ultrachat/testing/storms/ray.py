"""Kill storms of ``generate world --ray local``: Ray workers SIGKILLed in the middle of their
shards (the driver resubmits what they left: the run finishes without a rerun), and the
driver's whole process group SIGKILLed (a job scheduler's kill; the same command resumes).
Both end with the corpus of an uninterrupted local run: the fake backend's replies are
deterministic, so ids and texts must be equal. Linux only (workers are found in ``/proc``).

Example::

    result = worker_storm(tmp_path, kills=3, seed=7)
    assert result.ok, result.summary()
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from . import StormResult, kill_when, storm_seed

RECIPE = """concurrency = 2
[models.user]
backend = "fake"
model = "fake;delay=0.02"
[models.assistant]
backend = "fake"
model = "fake;delay=0.02"
"""
WORKERS = 2
TIMEOUT_S = 600.0


def _command(recipe: Path, out: Path, dialogues: int, ray: bool) -> list[str]:
    cmd = [sys.executable, "-m", "ultrachat.cli", "generate", "world", "-r", str(recipe), "--dialogues",
           str(dialogues), "--seed", "5", "--out", str(out), "--no-progress"]
    return [*cmd, "--ray", "local", "--ray-workers", str(WORKERS)] if ray else cmd


def _start(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    """A run leading its own session, so a storm can kill it with every process it started."""
    with log.open("ab") as err:
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _reached(path: Path, lines: int) -> bool:
    return _lines(path) >= lines


def _corpus(path: Path) -> tuple[dict[str, list[str]], int]:
    """``id -> turns`` of a corpus file, and how many ids it holds more than once."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []
    counts = Counter(r["id"] for r in rows)
    return {r["id"]: r["data"] for r in rows}, sum(c - 1 for c in counts.values())


def _session_processes(sid: int) -> dict[int, str]:
    """``pid -> command line`` of the live processes in session ``sid`` (Ray's workers rename
    themselves ``ray::run_shard`` while they run a shard)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getsid(int(entry.name)) != sid:
                continue
            found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ProcessLookupError):
            continue
    return found


def _reap(sid: int) -> int:
    """SIGKILL what a killed run's session left behind (Ray's agents outlive a killed driver
    for a while); returns how many there were."""
    left = [pid for pid, cmd in _session_processes(sid).items() if cmd.strip()]
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return len(left)


def _reference(workdir: Path, recipe: Path, dialogues: int) -> dict[str, list[str]]:
    ref = workdir / "reference"
    done = subprocess.run(_command(recipe, ref, dialogues, ray=False), capture_output=True, text=True,
                          timeout=TIMEOUT_S)
    if done.returncode:
        raise RuntimeError(f"the reference run failed: {done.stderr[-2000:]}")
    return _corpus(ref / "dialogues.jsonl")[0]


def _finish(result: StormResult, expected: dict[str, list[str]], out: Path) -> StormResult:
    got, result.duplicated = _corpus(out / "dialogues.jsonl")
    result.expected = len(expected)
    result.lost = len(set(expected) - set(got))
    result.equal = got == expected
    return result


def _setup(workdir: Path, kills: int) -> tuple[Path, int]:
    workdir.mkdir(parents=True, exist_ok=True)
    recipe = workdir / "recipe.toml"
    recipe.write_text(RECIPE, encoding="utf-8")
    return recipe, 60 + 8 * kills  # enough dialogues left for every kill to land mid-run


def worker_storm(workdir: Path, kills: int, seed: int | None = None) -> StormResult:
    """Kill ``kills`` Ray workers of one run, each while it runs a shard and after the run
    wrote 1-4 more dialogues; the run itself must finish (exit 0) with the reference corpus."""
    result = StormResult("world --ray, workers killed", storm_seed(seed))
    rng = random.Random(result.seed)
    recipe, n = _setup(workdir, kills)
    expected = _reference(workdir, recipe, n)
    out, log = workdir / "ray", workdir / "ray.log"
    dialogues = out / "dialogues.jsonl"
    proc = _start(_command(recipe, out, n, ray=True), log)
    result.reruns = 1
    try:
        for _ in range(kills):
            if not _kill_worker(proc, dialogues, rng, result, n):
                break
        proc.wait(timeout=TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
        left = _reap(proc.pid)
    restarts = log.read_text(encoding="utf-8", errors="replace").count("resubmitted")
    result.detail = (f"run exit {proc.returncode}; {restarts} shards resubmitted by the driver; "
                     f"{left} processes left after the run")
    if proc.returncode:
        result.detail += f"; stderr: {log.read_text(errors='replace')[-500:]}"
    return _finish(result, expected, out)


def _kill_worker(proc: subprocess.Popen[bytes], dialogues: Path, rng: random.Random, result: StormResult,
                 n: int) -> bool:
    """SIGKILL the longest-running shard worker once 1-4 more dialogues are written; False
    when the run ended (or came near its end) first."""
    target = _lines(dialogues) + rng.randint(1, 4)
    deadline = time.monotonic() + TIMEOUT_S
    while proc.poll() is None and time.monotonic() < deadline:
        written = _lines(dialogues)
        shards = sorted(pid for pid, cmd in _session_processes(proc.pid).items() if cmd.startswith("ray::run_shard"))
        if written >= target and shards and written < n:
            time.sleep(rng.uniform(0.0, 0.05))
            try:
                os.kill(shards[0], signal.SIGKILL)  # the oldest pid: the worker that has run longest
            except ProcessLookupError:
                continue
            result.kills += 1
            result.kill_points.append(f"worker at {written}/{n}")
            return True
        time.sleep(0.005)
    return False


def driver_storm(workdir: Path, kills: int, seed: int | None = None, workers_too: bool = False) -> StormResult:
    """SIGKILL the driver's whole process group (driver, local Ray instance, workers) ``kills``
    times at random dialogue counts, rerunning the same command each time; the last run
    finishes with the reference corpus. ``workers_too``: each killed run first loses a
    worker (so one short storm covers both kinds of kill)."""
    result = StormResult("world --ray, driver killed" + (" (and a worker first)" if workers_too else ""),
                         storm_seed(seed))
    rng = random.Random(result.seed)
    recipe, n = _setup(workdir, kills * (2 if workers_too else 1))
    expected = _reference(workdir, recipe, n)
    out, log = workdir / "ray", workdir / "ray.log"
    dialogues = out / "dialogues.jsonl"
    cmd = _command(recipe, out, n, ray=True)
    reaped = 0
    for _ in range(kills):
        proc = _start(cmd, log)
        result.reruns += 1
        if workers_too:
            _kill_worker(proc, dialogues, rng, result, n)
        left = n - _lines(dialogues)
        target = min(n - 1, _lines(dialogues) + rng.randint(1, max(1, left // (kills + 1))))
        if kill_when(proc, functools.partial(_reached, dialogues, target), TIMEOUT_S, 0.05, rng):
            result.kills += 1
            result.kill_points.append(f"driver at {_lines(dialogues)}/{n}")
        reaped += _reap(proc.pid)
    final = _start(cmd, log)
    result.reruns += 1
    code = final.wait(timeout=TIMEOUT_S)
    reaped += _reap(final.pid)
    restarts = log.read_text(encoding="utf-8", errors="replace").count("resubmitted")
    result.detail = (f"final run exit {code}; {restarts} shards resubmitted after a worker died; "
                     f"{reaped} Ray processes outlived their killed driver and were reaped")
    return _finish(result, expected, out) if code == 0 else result
