"""`ultrachat train` killed with SIGKILL continues from its last checkpoint when the same command reruns."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from ultrachat.testing.tiny_model import make_tiny_model, toy_dialogues
from ultrachat.train.formatting import TRAIN_RECORD

STEPS = 10


def test_a_killed_run_resumes_from_its_last_checkpoint(tmp_path):
    dialogues = toy_dialogues(16)
    corpus = tmp_path / "dialogues.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in dialogues))
    model = make_tiny_model(tmp_path / "base", [t for d in dialogues for t in d["data"]])
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "ultrachat.cli", "train", str(model), str(corpus), "--out", str(out),
           "--max-steps", str(STEPS), "--save-steps", "2", "--logging-steps", "1", "--lr", "5e-3",
           "--batch-size", "2", "--eval-ratio", "0", "--max-length", "256", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    first = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not list(out.glob(f"checkpoint-*/{TRAIN_RECORD}")):
        assert first.poll() is None, "training ended before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint within 240 s"
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert not (out / TRAIN_RECORD).exists(), "the run finished before it was killed"
    saved = sorted(int(p.parent.name.split("-")[1]) for p in out.glob(f"checkpoint-*/{TRAIN_RECORD}"))
    assert saved and saved[-1] < STEPS

    # The same command again, in this process (the training libraries are imported once per test session).
    import torch
    from typer.testing import CliRunner

    from ultrachat.cli import app

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        again = CliRunner().invoke(app, cmd[3:])
    finally:
        torch.set_num_threads(threads)
    assert again.exit_code == 0, again.output[-2000:]
    assert f"resumed from {out / f'checkpoint-{saved[-1]}'}" in again.output.replace("\n", "")
    record = json.loads((out / TRAIN_RECORD).read_text())
    assert record["global_step"] == STEPS
    # The step count continued: one loss entry per step, none repeated, none missing.
    state = json.loads((out / f"checkpoint-{STEPS}" / "trainer_state.json").read_text())
    steps = [e["step"] for e in state["log_history"] if "loss" in e]
    assert steps == list(range(1, STEPS + 1))
