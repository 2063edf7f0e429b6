"""Kill storms: SIGKILL a real process at random moments, rerun the same command, and compare
the end result with an uninterrupted run's. The tests run a few kills per case; ``make bench``
(``python -m benchmarks reliability``) runs 20 per case and publishes the counts.

Each case is a function ``(workdir, kills, seed) -> StormResult`` in this package:
``generate`` (world on the fake backend; entities, writing, materials and ``all`` over
HTTP against the faulty mock server), ``ray`` (workers and driver killed),
``train`` (mid-step and mid-save). A result says how many kills landed, what was lost or
duplicated, and whether the outputs equal the uninterrupted run's; the caller asserts.

Example::

    from ultrachat.testing.storms.generate import world_storm

    result = world_storm(tmp_path, kills=3, seed=7)
    assert result.ok, result.summary()
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol


@dataclass
class StormResult:
    """The outcome of one kill storm (the ``seed`` replays its kill moments)."""

    case: str  # what was killed: "world, fake", "train, mid-save", ...
    seed: int
    kills: int = 0  # SIGKILLs that landed while the process was doing work
    reruns: int = 0  # runs started in all, the final one included
    expected: int = 0  # items of the uninterrupted run (dialogues, steps)
    lost: int = 0  # expected items missing from the final output
    duplicated: int = 0  # items present more than once
    invalid: int = 0  # whole lines on disk that do not parse or validate, after a kill or in the end
    equal: bool = False  # the final output equals the uninterrupted run's (texts, weights, losses)
    kill_points: list[str] = field(default_factory=list)  # where each kill landed, for the record
    detail: str = ""  # case-specific figures (faults injected, max weight difference, ...)

    @property
    def ok(self) -> bool:
        return self.kills > 0 and self.lost == 0 and self.duplicated == 0 and self.invalid == 0 and self.equal

    def summary(self) -> str:
        return (f"{self.case}: {self.kills} kills ({', '.join(self.kill_points[:30])}), {self.reruns} runs, "
                f"{self.expected} expected, {self.lost} lost, {self.duplicated} duplicated, {self.invalid} invalid, "
                f"equal={self.equal}; {self.detail} (KILL_SEED={self.seed})")


def storm_seed(seed: int | None = None) -> int:
    """``seed``, else ``$KILL_SEED``, else a fresh one (print it: it replays the storm)."""
    if seed is not None:
        return seed
    return int(os.environ.get("KILL_SEED") or random.randrange(2**32))


class Killable(Protocol):
    """What :func:`kill_when` needs of a process: ``subprocess.Popen``, or a forked child
    wrapped to look like one."""

    pid: int

    def poll(self) -> int | None: ...

    def wait(self) -> int | None: ...

    def kill(self) -> None: ...

    def send_signal(self, sig: int) -> None: ...


class Forked:
    """A forked child (``multiprocessing``'s fork context) seen through the part of
    ``subprocess.Popen`` that :func:`kill_when` uses. Storms fork runs from a process that
    imported the libraries once, so a run starts in milliseconds instead of seconds."""

    def __init__(self, proc: multiprocessing.process.BaseProcess) -> None:
        assert proc.pid is not None, "start the process first"
        self.proc = proc
        self.pid: int = proc.pid

    @classmethod
    def start(cls, target: Callable[..., object], *args: object) -> Forked:
        proc = multiprocessing.get_context("fork").Process(target=target, args=args)
        proc.start()
        return cls(proc)

    def poll(self) -> int | None:
        return self.proc.exitcode

    def send_signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int | None:
        """The exit code (negative: the signal), or None when ``timeout`` passed first."""
        self.proc.join(timeout)
        return self.proc.exitcode


def kill_when(proc: Killable, ready: Callable[[], bool], timeout_s: float = 120.0,
              jitter_s: float = 0.0, rng: random.Random | None = None) -> bool:
    """SIGKILL ``proc`` (and its process group when it leads one) once ``ready()`` holds,
    after a random ``0..jitter_s`` pause; False when it finished first."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        if proc.poll() is not None:
            return False
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise TimeoutError(f"the run reached no kill point within {timeout_s:.0f} s")
        time.sleep(0.002)
    if jitter_s and rng is not None:
        time.sleep(rng.uniform(0.0, jitter_s))
    if proc.poll() is not None:
        return False
    try:
        if os.getpgid(proc.pid) == proc.pid:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.send_signal(signal.SIGKILL)
    except ProcessLookupError:
        pass
    return proc.wait() == -signal.SIGKILL
