"""Training kill storms: ``ultrachat train`` SIGKILLed mid-step or mid-save, rerun until done,
compared with an uninterrupted run's final weights and per-step losses.

The run: a tiny Llama (:mod:`ultrachat.testing.tiny_model`) on 16 toy dialogues, CPU, fp32,
one thread, seed 42, ``STEPS`` steps of 2 sequences (so the second epoch's data order must be
restored too), a checkpoint every ``SAVE_STEPS`` steps and only the newest kept
(``save_total_limit = 1``, the strictest rotation), a loss logged every step.

Tolerance: every tensor of the final model within ``WEIGHT_TOL`` (max absolute difference)
and every step's logged loss and gradient norm within ``LOSS_TOL`` of the uninterrupted run's;
the measured maxima are in ``result.detail`` (on CPU, fp32, one thread they are 0: resume is
bit-exact). Lost steps are steps of the uninterrupted run missing from the final run's
``trainer_state.json`` log history; duplicated steps are steps logged twice there. A rerun that
resumes from an older checkpoint than the kill left complete (a complete checkpoint deleted
too early) makes ``equal`` false too, although retraining would reach the same weights.

Kill points:

- ``mid-step``: the parent SIGKILLs the child at a random moment of a random training step
  after its resume point (``kill_when``: once the step has begun, then a random pause of up to
  one step's duration), so kills land in forward, backward, optimizer and logging code alike.
  A kill that happens to land in a save is labelled so.
- ``mid-save``: a save is a few milliseconds on this model, too short for a kill from outside
  to land in it reliably, so the child SIGKILLs itself (``os.kill(getpid(), SIGKILL)``, the
  real training process, no clean-up) at a random stage of a random remaining save: after the
  weights, in the middle of writing ``optimizer.pt`` (a torn file), after optimizer and
  scheduler, after the RNG state, after ``trainer_state.json``, in the middle of writing our
  record (a torn temporary file), or after the final model is written into the output folder
  before its record. Every stage is one a crash can leave on disk.

Runs are forked from this process (which imports the training libraries once), so a storm
costs seconds per run instead of the ~10 s start-up of a fresh interpreter.

Example::

    result = train_storm(tmp_path, kills=3, seed=7, point="mid-save")
    assert result.ok, result.summary()
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import random
import signal
import sys
import time
from dataclasses import dataclass
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any

from . import Forked, StormResult, kill_when, storm_seed

POINTS = ("mid-step", "mid-save")
STEPS = 12
SAVE_STEPS = 2
WEIGHT_TOL = 1e-6
LOSS_TOL = 1e-6
SAVE_STAGES = ("weights", "optimizer torn", "optimizer", "rng", "trainer state", "record torn")
_RUN_TIMEOUT_S = 300.0

_CONFIG = f"""\
template = "chat"
max_steps = {STEPS}
save_steps = {SAVE_STEPS}
logging_steps = 1
learning_rate = 5e-3
batch_size = 2
eval_ratio = 0.0
max_length = 256
save_total_limit = 1
precision = "fp32"
seed = 42
report_to = []
"""


@dataclass
class _Plan:
    """Where the child kills itself: at ``stage`` of the save at step ``step`` (0: the final save)."""

    step: int
    stage: str


class _Shared:
    """What the child tells the parent: the step it is running and whether it is saving."""

    def __init__(self, ctx: Any) -> None:
        self.step: Synchronized[int] = ctx.Value("i", 0, lock=False)
        self.saving: Synchronized[int] = ctx.Value("i", 0, lock=False)


def _wait(child: Forked) -> int:
    """The exit code of a forked run; a run stuck past the timeout is killed and an error."""
    code = child.wait(_RUN_TIMEOUT_S)
    if code is None:
        child.kill()
        child.wait()
        raise TimeoutError(f"a training run took over {_RUN_TIMEOUT_S:.0f} s")
    return code


def train_storm(workdir: Path, kills: int, seed: int | None = None, point: str = "mid-step") -> StormResult:
    """Kill ``ultrachat train`` ``kills`` times at ``point`` (``mid-step`` or ``mid-save``),
    rerun it to the end, and compare it with an uninterrupted run (see the module doc)."""
    if point not in POINTS:
        raise ValueError(f"point: {point!r}; choose one of {', '.join(POINTS)}")
    seed = storm_seed(seed)
    rng = random.Random(seed)
    result = StormResult(case=f"train, {point}", seed=seed, expected=STEPS)
    _import_training()
    ctx = multiprocessing.get_context("fork")
    shared = _Shared(ctx)
    workdir.mkdir(parents=True, exist_ok=True)
    _check_exit(_run(ctx, _setup, (workdir,), workdir / "setup.log"), workdir / "setup.log")
    ref_out, out = workdir / "reference", workdir / "killed"
    step_s = _reference(ctx, workdir, ref_out, shared)
    plans = _plans(rng, point, kills)
    complete, went_back = 0, []  # the newest checkpoint complete at the last kill; reruns before it
    while result.reruns < 3 * kills + 5:
        resumed = _resume_step(out)
        if resumed < complete:
            went_back.append(f"run {result.reruns + 1} resumed from {resumed}, not {complete}")
        plan = plans[result.kills] if result.kills < kills else None
        if plan is not None and not plan.stage:  # a mid-step kill that landed late resumes late
            plan = _Plan(max(plan.step, resumed + 1), "")
        result.reruns += 1
        log = workdir / f"run-{result.reruns}.log"
        code, label, complete = _run_with_kill(ctx, workdir, out, plan, shared, rng, step_s, resumed, log)
        if code == -signal.SIGKILL:
            result.kills += 1
            result.kill_points.append(label)
            continue
        _check_exit(code, log)
        if plan is None or (out / "ultrachat-train.json").exists():
            break
    _compare(ref_out, out, result)
    if went_back:  # equal outputs, but a complete checkpoint was lost (trained again from an older one)
        result.equal = False
        result.detail += "; checkpoints lost: " + ", ".join(went_back)
    return result


# -- runs ---------------------------------------------------------------------------------------
def _import_training() -> None:
    """Import the training stack here once; forked runs inherit it."""
    import importlib

    for name in ("transformers.trainer", "trl", "ultrachat.cli", "ultrachat.train.sft"):
        importlib.import_module(name)


def _run(ctx: Any, target: Any, args: tuple[Any, ...], log: Path) -> int:
    child = ctx.Process(target=_in_child, args=(target, args, log))
    child.start()
    return _wait(Forked(child))


def _in_child(target: Any, args: tuple[Any, ...], log: Path) -> None:
    """Run ``target`` with stdout and stderr into ``log``, single-threaded."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 - the child exits right after
    sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
    import torch

    torch.set_num_threads(1)
    target(*args)


def _reference(ctx: Any, workdir: Path, out: Path, shared: _Shared) -> float:
    """Run the uninterrupted reference; the mean duration of its steps 2..STEPS (saves included)."""
    log = workdir / "reference.log"
    shared.step.value = 0
    proc = ctx.Process(target=_in_child, args=(_train_child, (_argv(workdir, out), None, shared), log))
    proc.start()
    marks: dict[int, float] = {}
    while proc.exitcode is None and len(marks) < 2:
        if shared.step.value in (2, STEPS):
            marks.setdefault(shared.step.value, time.monotonic())
        time.sleep(0.001)
    _check_exit(_wait(Forked(proc)), log)
    return (marks[STEPS] - marks[2]) / (STEPS - 2) if len(marks) == 2 else 0.05


def _check_exit(code: int, log: Path) -> None:
    if code != 0:
        tail = log.read_text(encoding="utf-8", errors="replace")[-3000:] if log.exists() else ""
        raise RuntimeError(f"a training run exited with {code}; {log}:\n{tail}")


def _setup(workdir: Path) -> None:
    from ..tiny_model import make_tiny_model, toy_dialogues

    dialogues = toy_dialogues(16)
    (workdir / "dialogues.jsonl").write_text("".join(json.dumps(d) + "\n" for d in dialogues), encoding="utf-8")
    make_tiny_model(workdir / "base", [str(t) for d in dialogues for t in d["data"]])  # type: ignore[attr-defined]
    (workdir / "train.toml").write_text(_CONFIG, encoding="utf-8")


def _argv(workdir: Path, out: Path) -> list[str]:
    return ["train", str(workdir / "base"), str(workdir / "dialogues.jsonl"), "--out", str(out),
            "--config", str(workdir / "train.toml"), "--no-progress"]


def _resume_step(out: Path) -> int:
    from ...train.sft import last_checkpoint

    ckpt = last_checkpoint(out)
    return int(ckpt.name.split("-")[1]) if ckpt else 0


def _plans(rng: random.Random, point: str, kills: int) -> list[_Plan]:
    """``kills`` random kill points in training order, so every one is still ahead of the resume
    point its predecessor leaves (a kill at step t or at save t resumes before t).

    mid-step: a step but the last (the run must outlive the jitter). mid-save: a save (step 0 is
    the final model's) and a stage of it; the last kill is always in the final save, the one a
    rerun finds with no step left to train.
    """
    if point == "mid-step":
        return [_Plan(step, "") for step in sorted(rng.randint(1, STEPS - 1) for _ in range(kills))]
    saves = [*range(SAVE_STEPS, STEPS + 1, SAVE_STEPS), 0]
    picks = [*sorted(rng.randrange(len(saves)) for _ in range(kills - 1)), len(saves) - 1]
    return [_Plan(saves[i], "final" if saves[i] == 0 else rng.choice(SAVE_STAGES)) for i in picks[:kills]]


def _run_with_kill(ctx: Any, workdir: Path, out: Path, plan: _Plan | None, shared: _Shared, rng: random.Random,
                   step_s: float, resumed: int, log: Path) -> tuple[int, str, int]:
    """Run once (killed by ``plan``); ``(exit code, where the kill landed, the newest checkpoint
    complete at that moment)``."""
    shared.step.value, shared.saving.value = 0, 0
    in_child = plan if plan is not None and plan.stage else None
    proc = ctx.Process(target=_in_child, args=(_train_child, (_argv(workdir, out), in_child, shared), log))
    proc.start()
    child = Forked(proc)
    if plan is None or plan.stage:
        code = _wait(child)
        if plan is None:
            return code, "", resumed
        if plan.step == 0:
            return code, f"final save (from {resumed})", STEPS
        return code, f"save {plan.step}: {plan.stage} (from {resumed})", plan.step - SAVE_STEPS

    def ready() -> bool:
        return shared.step.value >= plan.step and not shared.saving.value

    kill_when(child, ready, timeout_s=_RUN_TIMEOUT_S, jitter_s=step_s, rng=rng)
    code = _wait(child)
    step = shared.step.value  # its save (if "in a save") is the one cut short
    landed = f"step {step}" + (" (in a save)" if shared.saving.value else "")
    return code, f"{landed} (from {resumed})", max(resumed, (step - 1) // SAVE_STEPS * SAVE_STEPS)


# -- the child: hooks that report progress and kill at a save stage -----------------------------
def _train_child(argv: list[str], plan: _Plan | None, shared: _Shared) -> None:
    _hook_progress(shared)
    if plan is not None:
        _hook_save_kill(plan, Path(argv[argv.index("--out") + 1]))
    from ultrachat.cli import app

    app(argv)


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _hook_progress(shared: _Shared) -> None:
    from transformers import Trainer

    step, save = Trainer.training_step, Trainer._save_checkpoint

    def training_step(self: Any, *args: Any, **kwargs: Any) -> Any:
        shared.saving.value = 0
        shared.step.value = self.state.global_step + 1
        return step(self, *args, **kwargs)

    def save_checkpoint(self: Any, *args: Any, **kwargs: Any) -> Any:
        shared.saving.value = 1
        return save(self, *args, **kwargs)

    Trainer.training_step = training_step  # type: ignore[method-assign]
    Trainer._save_checkpoint = save_checkpoint  # type: ignore[method-assign]


def _hook_save_kill(plan: _Plan, out: Path) -> None:
    """Make the child SIGKILL itself at ``plan``'s stage of the save it names."""
    import torch
    from transformers import Trainer, TrainerState

    from ...train import sft

    target = out / (f"checkpoint-{plan.step}" if plan.step else "")
    record = target / "ultrachat-train.json"

    def after(name: str, cls: Any, method: str, folder: Any) -> None:
        """Kill right after ``cls.method`` when it wrote into the target folder."""
        original = getattr(cls, method)

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            value = original(*args, **kwargs)
            if plan.stage == name and Path(folder(*args, **kwargs)) == target:
                _die()
            return value

        setattr(cls, method, wrapped)

    after("weights", Trainer, "save_model", lambda self, output_dir=None, *a, **k: output_dir)
    after("optimizer", Trainer, "_save_optimizer_and_scheduler", lambda self, output_dir: output_dir)
    after("rng", Trainer, "_save_rng_state", lambda self, output_dir: output_dir)
    after("trainer state", TrainerState, "save_to_json", lambda self, json_path: Path(json_path).parent)

    save = torch.save

    def torn_save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> Any:
        if plan.stage == "optimizer torn" and isinstance(f, str | os.PathLike) and Path(f) == target / "optimizer.pt":
            buf = io.BytesIO()
            save(obj, buf, *args, **kwargs)
            Path(f).write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
            _die()
        return save(obj, f, *args, **kwargs)

    torch.save = torn_save
    write = sft.write_json_atomic

    def torn_record(path: Path, obj: Any) -> None:
        if Path(path) == record and plan.stage == "record torn":
            path.with_name(path.name + ".tmp").write_text(json.dumps(obj)[:20], encoding="utf-8")
            _die()
        if Path(path) == record and plan.stage == "final":
            _die()  # the final model is in the output folder; its record is not
        write(path, obj)

    sft.write_json_atomic = torn_record


# -- comparison ---------------------------------------------------------------------------------
def _compare(ref_out: Path, out: Path, result: StormResult) -> None:
    """Fill ``result``'s lost, duplicated, equal and detail from the two runs' outputs."""
    from safetensors.numpy import load_file

    notes: list[str] = []
    if not (out / "ultrachat-train.json").exists():
        result.detail = f"the killed run never finished ({result.reruns} runs)"
        return
    ref_w, w = load_file(ref_out / "model.safetensors"), load_file(out / "model.safetensors")
    if ref_w.keys() != w.keys() or any(ref_w[k].shape != w[k].shape for k in ref_w):
        notes.append("tensor names or shapes differ")
    common = [k for k in ref_w if k in w and ref_w[k].shape == w[k].shape]
    max_dw = max((float(abs(ref_w[k].astype("float64") - w[k].astype("float64")).max()) for k in common), default=0.0)
    ref_log, log = _step_logs(ref_out), _step_logs(out)
    steps = [e["step"] for e in log]
    result.lost = len({e["step"] for e in ref_log} - set(steps))
    result.duplicated = len(steps) - len(set(steps))
    extra = len(set(steps) - {e["step"] for e in ref_log})
    if extra:
        notes.append(f"{extra} steps past the uninterrupted run's {len(ref_log)}")
    by_step = {e["step"]: e for e in log}
    max_dl = max((abs(e["loss"] - by_step[e["step"]]["loss"]) for e in ref_log if e["step"] in by_step), default=0.0)
    max_dg = max((abs(e.get("grad_norm", 0.0) - by_step[e["step"]].get("grad_norm", 0.0))
                  for e in ref_log if e["step"] in by_step), default=0.0)
    ref_rec, rec = (json.loads((o / "ultrachat-train.json").read_text(encoding="utf-8")) for o in (ref_out, out))
    if rec["global_step"] != ref_rec["global_step"]:
        notes.append(f"ended at step {rec['global_step']}, not {ref_rec['global_step']}")
    max_dl = max(max_dl, abs(rec["train_loss"] - ref_rec["train_loss"]))  # the record's whole-run mean
    result.equal = not notes and max_dw <= WEIGHT_TOL and max(max_dl, max_dg) <= LOSS_TOL and len(ref_log) == STEPS
    result.detail = "; ".join([*notes, f"{len(common)} tensors, max |dw| {max_dw:.3g} (tol {WEIGHT_TOL:g}), "
                               f"max |dloss| {max_dl:.3g}, max |dgrad_norm| {max_dg:.3g} (tol {LOSS_TOL:g}) "
                               f"over {len(ref_log)} steps"])


def _step_logs(out: Path) -> list[dict[str, Any]]:
    """The per-step training log of the run's newest complete checkpoint."""
    from ...train.sft import last_checkpoint

    ckpt = last_checkpoint(out)
    if ckpt is None:
        return []
    state = json.loads((ckpt / "trainer_state.json").read_text(encoding="utf-8"))
    return [e for e in state["log_history"] if "loss" in e]
