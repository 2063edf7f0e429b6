"""Kill storms of ``ultrachat generate``: the command line runs in a forked child (no
interpreter start-up per run), is SIGKILLed at random moments of real work, and is rerun
until it finishes; the final corpus is compared with an uninterrupted run's.

Cases (each ``(workdir, kills, seed=None, dialogues=None) -> StormResult``):

* :func:`world_storm`: ``generate world`` on the fake backend, killed in each planning stage
  (subtopics, questions, related questions, openings written) and while dialogues are written;
* :func:`entities_storm`, :func:`writing_storm`, :func:`materials_storm` and :func:`all_storm`:
  the sector (or ``generate all``) over the openai backend against the mock server, which
  mixes in 429s, 500s, dropped connections and malformed bodies; the kills land in the
  sector's planning stages and in dialogues.

The run grows with ``kills`` (``dialogues`` overrides it) so the last kill still leaves work
(materials reads the bundled sample passages: at most 90 dialogues, enough for 20 kills).
The uninterrupted run goes first, into ``workdir/reference``; the storm runs in
``workdir/killed``; ``detail`` holds the seconds taken and, over HTTP, the faults the server
injected during the storm by class. Example::

    from ultrachat.testing.storms.generate import materials_storm

    result = materials_storm(tmp_path, kills=3, seed=7)
    print(result.summary())  # ... 3 kills (instructions 2/5, dialogues 4/21, ...) ... KILL_SEED=7
    assert result.ok
"""

from __future__ import annotations

import importlib
import json
import os
import random
import re
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import Forked, StormResult, kill_when, storm_seed

#: faults the mock server mixes into its replies during the HTTP storms (rates per request)
FAULTS = ("--fault-429", "0.04", "--fault-500", "0.04", "--fault-drop", "0.03", "--fault-malformed", "0.03",
          "--retry-after", "0.01", "--latency-ms", "3")
SECTORS = ("world", "entities", "writing", "materials")
_FAKE = '[models.user]\nbackend = "fake"\nmodel = "fake;delay={d}"\n[models.assistant]\nbackend = "fake"\n' \
        'model = "fake;delay={d}"\n'
_STAGE = re.compile(rb'"stage": ?"([^"]+)"')
_RUN_TIMEOUT_S = 300.0
_JITTER_S = 0.02  # a kill lands up to this long after its kill point: at a random moment between writes


@dataclass
class _Case:
    """What a storm runs: the command (given its output folder) and where its files lie."""

    name: str
    argv: list[str]  # without --out
    sectors: tuple[str, ...]  # sector folders under the output ("" for the output itself)
    corpus: str = "dialogues.jsonl"  # the final corpus, relative to the output

    def command(self, out: Path) -> list[str]:
        return [*self.argv, "--out", str(out), "--no-progress"]


def world_storm(workdir: Path, kills: int, seed: int | None = None, dialogues: int | None = None) -> StormResult:
    """``generate world`` on the fake backend (deterministic: texts compared too)."""
    workdir.mkdir(parents=True, exist_ok=True)
    recipe = workdir / "recipe.toml"
    recipe.write_text(_FAKE.format(d=0.01), encoding="utf-8")
    n = dialogues or 32 + 4 * kills
    case = _Case("world, fake", ["generate", "world", "-r", str(recipe), "--dialogues", str(n), "--concurrency", "6",
                                 "--seed", "11"], ("",))
    return _storm(case, workdir, kills, seed)


def entities_storm(workdir: Path, kills: int, seed: int | None = None, dialogues: int | None = None) -> StormResult:
    """``generate entities`` over the openai backend against the faulty mock server."""
    return _http_storm("entities", workdir, kills, seed, dialogues or 12 + 5 * kills)


def writing_storm(workdir: Path, kills: int, seed: int | None = None, dialogues: int | None = None) -> StormResult:
    """``generate writing`` over the openai backend against the faulty mock server."""
    return _http_storm("writing", workdir, kills, seed, dialogues or 12 + 5 * kills)


def materials_storm(workdir: Path, kills: int, seed: int | None = None, dialogues: int | None = None) -> StormResult:
    """``generate materials`` over the openai backend against the faulty mock server."""
    return _http_storm("materials", workdir, kills, seed, dialogues or 12 + 5 * kills)


def all_storm(workdir: Path, kills: int, seed: int | None = None, dialogues: int | None = None) -> StormResult:
    """``generate all`` (every sector at once, then the merge into ``all.jsonl``) over the
    openai backend against the faulty mock server."""
    return _http_storm("all", workdir, kills, seed, dialogues or 16 + 8 * kills)


#: every case, by the name the benchmark and the docs use
STORMS = {"world": world_storm, "entities": entities_storm, "writing": writing_storm,
          "materials": materials_storm, "all": all_storm}


def _http_storm(sector: str, workdir: Path, kills: int, seed: int | None, n: int) -> StormResult:
    from .. import MockServer

    seed = storm_seed(seed)
    workdir.mkdir(parents=True, exist_ok=True)
    with MockServer(*FAULTS, "--seed", str(seed % 2**31)) as server:
        argv = ["generate", sector, "--base-url", server.url, "--model", "mock", "--dialogues", str(n),
                "--concurrency", "4", "--max-rounds", "2", "--seed", "5"]
        every = sector == "all"
        case = _Case(f"{sector}, openai + faults", argv, SECTORS if every else ("",),
                     "all.jsonl" if every else "dialogues.jsonl")
        return _storm(case, workdir, kills, seed, server)


def _storm(case: _Case, workdir: Path, kills: int, seed: int | None, server: Any = None) -> StormResult:
    result = StormResult(case.name, storm_seed(seed))
    rng = random.Random(result.seed)
    started = time.monotonic()
    _preload()
    ref, out = workdir / "reference", workdir / "killed"
    code, err = _run_to_end(case.command(ref), workdir / "reference.stderr")
    if code != 0:
        raise RuntimeError(f"{case.name}: the uninterrupted run failed (exit {code}): {err.strip()[-500:]}")
    expected = _corpus(ref / case.corpus)
    totals = _progress(ref, case.sectors)
    result.expected = len(expected.texts)
    faults_before = _faults(server)
    failures = _kill(case, workdir, kills, totals, result, rng)
    code, err = _run_to_end(case.command(out), workdir / "final.stderr")
    result.reruns += 1
    if code != 0:
        failures.append(f"the final run exited {code}: {err.strip()[-300:]}")
    got = _corpus(out / case.corpus) if (out / case.corpus).exists() else _Corpus()
    result.lost = len(set(expected.texts) - set(got.texts))
    result.duplicated = got.duplicated
    result.invalid += got.invalid
    result.equal = not failures and got.texts == expected.texts
    result.detail = _detail(server, faults_before, failures, time.monotonic() - started)
    return result


def _kill(case: _Case, workdir: Path, kills: int, totals: Counter[str], result: StormResult,
          rng: random.Random) -> list[str]:
    """Start the run in ``workdir/killed`` and SIGKILL it at each target until ``kills``
    landed (or it finished first); returns what went wrong (runs that failed)."""
    out, failures = workdir / "killed", list[str]()
    written = _Probe(out, case.sectors, "dialogues").count
    for key, goal in _targets(totals, kills, result.expected, rng, written, lambda: kills - result.kills):
        if result.kills >= kills:
            break
        probe = _Probe(out, case.sectors, key)
        now = probe.count()
        if key != "dialogues" and now >= totals[key]:
            continue  # an earlier run finished that stage
        probe.goal = max(goal, now + 1)
        stderr_path = workdir / f"run{result.reruns}.stderr"
        proc = Forked.start(_cli_child, case.command(out), str(stderr_path))
        result.reruns += 1
        if kill_when(proc, probe.reached, timeout_s=_RUN_TIMEOUT_S, jitter_s=_JITTER_S, rng=rng):
            result.kills += 1
            total = result.expected if key == "dialogues" else totals[key]
            result.kill_points.append(f"{key} {_Probe(out, case.sectors, key).count()}/{total}")
            result.invalid += _invalid_lines(out, case.sectors)
        elif proc.poll() != 0:
            failures.append(f"run {result.reruns} exited {proc.poll()}: {_last_error(stderr_path)}")
        else:
            break  # it finished before the kill point: no work is left for more kills
    return failures


def _targets(totals: Counter[str], kills: int, dialogues: int, rng: random.Random,
             written: Callable[[], int], left: Callable[[], int]) -> Iterator[tuple[str, int]]:
    """Kill targets ``(what, count to reach)`` in order: about half the kills in planning
    stages (every stage when there are kills enough, else a seeded choice of them), then
    dialogue counts: each a random step past the ``written()`` dialogues, a step of one
    share on average of what is left to write split over the ``left()`` kills and three
    shares more (the final run's, and the dialogues runs finish between kill point and kill),
    so the last kill still finds work."""
    stages = [key for key in totals if key != "dialogues" and totals[key]]
    n_plan = min(len(stages), (kills + 1) // 2) if kills > 1 else 0
    for i in sorted(rng.sample(range(len(stages)), n_plan)):
        yield stages[i], 0
    while True:
        share = (dialogues - written()) / (max(1, left()) + 3)
        yield "dialogues", written() + rng.randint(1, max(1, round(2 * share) - 1))


class _Probe:
    """Counts one kind of work on disk (see :func:`_progress`), rescanning only files whose
    size changed: the storm polls it every few milliseconds while the run works."""

    def __init__(self, out: Path, sectors: Sequence[str], key: str) -> None:
        sector, _, what = key.rpartition(":")
        folders = [out / s for s in (sectors if key == "dialogues" else [sector])]
        name = {"dialogues": "dialogues.jsonl", "openings": "plan/openings.jsonl"}.get(what, "plan/calls.jsonl")
        self.paths = [folder / name for folder in folders]
        self.stage = None if what in ("dialogues", "openings") else what.encode()
        self.sizes: list[int] = []
        self.last = 0
        self.goal = 0  # the count at which to kill

    def reached(self) -> bool:
        return self.count() >= self.goal

    def count(self) -> int:
        sizes = [p.stat().st_size if p.exists() else -1 for p in self.paths]
        if sizes != self.sizes:
            self.sizes = sizes
            self.last = sum(_count(_complete(p), self.stage) for p in self.paths)
        return self.last


def _count(data: bytes, stage: bytes | None) -> int:
    return data.count(b"\n") if stage is None else sum(s == stage for s in _STAGE.findall(data))


def _preload() -> None:
    """Import the command line and the backends once here, so each forked run starts warm."""
    for module in ("ultrachat.cli", "ultrachat.backends.openai", "ultrachat.generate.all_sectors"):
        importlib.import_module(module)


def _cli_child(argv: list[str], stderr_path: str) -> None:
    """The ``ultrachat`` command line inside a forked child."""
    from ultrachat.cli import app

    os.dup2(os.open(stderr_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 2)
    sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115 - the child exits right after
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115
    app(argv)


def _last_error(stderr_path: Path) -> str:
    text = stderr_path.read_text(encoding="utf-8", errors="replace").strip()
    return text.splitlines()[-1][:300] if text else ""


def _run_to_end(argv: list[str], stderr_path: Path) -> tuple[int, str]:
    proc = Forked.start(_cli_child, argv, str(stderr_path))
    code = proc.wait(_RUN_TIMEOUT_S)
    if code is None:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return -1, f"no end within {_RUN_TIMEOUT_S:.0f} s"
    return code, stderr_path.read_text(encoding="utf-8", errors="replace")


def _complete(path: Path) -> bytes:
    """The whole lines of a file (a killed writer may leave a torn last line)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return b""
    return data[: data.rfind(b"\n") + 1]


def _progress(out: Path, sectors: Sequence[str]) -> Counter[str]:
    """Work on disk: plan calls per stage, opening lines (per sector when several), and
    dialogues of all sectors together."""
    counts: Counter[str] = Counter()
    for sector in sectors:
        folder, prefix = out / sector, f"{sector}:" if sector else ""
        for stage in _STAGE.findall(_complete(folder / "plan" / "calls.jsonl")):
            counts[prefix + stage.decode()] += 1
        counts[prefix + "openings"] += _complete(folder / "plan" / "openings.jsonl").count(b"\n")
        counts["dialogues"] += _complete(folder / "dialogues.jsonl").count(b"\n")
    return counts


def _invalid_lines(out: Path, sectors: Sequence[str]) -> int:
    """Whole lines on disk that do not parse (plan files) or are not dialogues."""
    from ...core.records import validate_dialogue

    bad = 0
    for sector in sectors:
        folder = out / sector
        for path in (folder / "plan" / "calls.jsonl", folder / "plan" / "openings.jsonl", folder / "dialogues.jsonl"):
            for line in _complete(path).splitlines():
                try:
                    obj = json.loads(line)
                except ValueError:
                    bad += 1
                    continue
                bad += path.name == "dialogues.jsonl" and validate_dialogue(obj) is not None
    return bad


@dataclass
class _Corpus:
    texts: dict[str, list[str]] = field(default_factory=dict)  # id -> turns
    duplicated: int = 0
    invalid: int = 0


def _corpus(path: Path) -> _Corpus:
    from ...core.records import validate_dialogue

    corpus = _Corpus()
    for line in path.read_bytes().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            corpus.invalid += 1
            continue
        if validate_dialogue(row) is not None:
            corpus.invalid += 1
        elif str(row["id"]) in corpus.texts:
            corpus.duplicated += 1
        else:
            corpus.texts[str(row["id"])] = row["data"]
    return corpus


def _faults(server: Any) -> Counter[str]:
    if server is None:
        return Counter()
    return Counter({k.removeprefix("fault_"): v for k, v in server.stats()["counts"].items()
                    if k.startswith("fault_")})


def _detail(server: Any, before: Counter[str], failures: list[str], seconds: float) -> str:
    parts = [f"{seconds:.1f} s"]
    if server is not None:
        faults = _faults(server) - before
        parts.append("faults injected in the storm: " + (", ".join(f"{k} x{v}" for k, v in sorted(faults.items()))
                                                        or "none"))
    parts.extend(failures)
    return "; ".join(parts)
