"""`ultrachat train` SIGKILLed mid-step and mid-save, rerun until done: the final weights and
every step's loss equal the uninterrupted run's (bit for bit on CPU, fp32, one thread; the storm's
tolerance is 1e-6), no step lost or logged twice. Replay a storm with KILL_SEED=<seed>."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ultrachat.testing.storms.train import LOSS_TOL, STEPS, WEIGHT_TOL, train_storm
from ultrachat.train.formatting import TRAIN_RECORD
from ultrachat.train.sft import rotate_checkpoints, whole_run_loss


@pytest.mark.parametrize("point", ["mid-step", "mid-save"])
def test_killed_training_resumes_to_the_uninterrupted_weights_and_losses(tmp_path: Path, point: str) -> None:
    result = train_storm(tmp_path, kills=3, seed=None, point=point)
    print(result.summary())
    assert result.kills == 3, result.summary()
    assert result.ok, result.summary()
    assert result.expected == STEPS and WEIGHT_TOL <= 1e-6 and LOSS_TOL <= 1e-6
    if point == "mid-save":  # the last kill is in the final save: the rerun had no step left
        assert result.kill_points[-1].startswith("final save"), result.summary()


def _checkpoint(out: Path, step: int, complete: bool) -> Path:
    folder = out / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"w")
    if complete:
        (folder / TRAIN_RECORD).write_text("{}")
    return folder


def test_rotation_keeps_the_newest_complete_checkpoints_and_drops_stale_partial_ones(tmp_path: Path) -> None:
    for step, complete in [(2, True), (3, False), (4, True), (6, True), (8, False)]:
        _checkpoint(tmp_path, step, complete)
    deleted = rotate_checkpoints(tmp_path, keep=1)
    assert sorted(p.name for p in deleted) == ["checkpoint-2", "checkpoint-3", "checkpoint-4"]
    # checkpoint-8 is being written (its record comes last): it stays, and so does 6, the newest complete one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-6", "checkpoint-8"]


def test_rotation_without_a_complete_checkpoint_deletes_nothing(tmp_path: Path) -> None:
    _checkpoint(tmp_path, 2, False)
    assert rotate_checkpoints(tmp_path, keep=1) == []
    assert (tmp_path / "checkpoint-2").is_dir()


def test_whole_run_loss_weights_each_log_by_the_steps_it_covers() -> None:
    history = [{"loss": 4.0, "step": 1}, {"loss": 2.0, "step": 3}, {"eval_loss": 9.0, "step": 3},
               {"loss": 1.0, "step": 4}, {"train_loss": 0.0, "step": 4}]
    assert whole_run_loss(history, None) == pytest.approx((4.0 + 2 * 2.0 + 1.0) / 4)
    assert whole_run_loss([{"eval_loss": 1.0, "step": 2}], 0.5) == 0.5
    assert json.dumps(whole_run_loss([], None)) == "null"
