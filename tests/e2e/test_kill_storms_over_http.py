"""Kill storms over HTTP: ``generate all`` (world, entities, writing, materials) over the
openai backend against the fault-injecting mock server (429s, 500s, dropped connections and
malformed bodies mixed in), SIGKILLed at random moments and rerun. The merged corpus must
equal the uninterrupted run's: the same ids and texts (the mock's replies are deterministic),
no dialogue lost, none duplicated. ``KILL_SEED=<seed>`` replays the kill moments."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

from ultrachat.testing import MockServer

SECTORS = ("world", "entities", "writing", "materials")
FAULTS = ("--fault-429", "0.04", "--fault-500", "0.04", "--fault-drop", "0.03", "--fault-malformed", "0.03",
          "--retry-after", "0.01", "--latency-ms", "3")


def _corpus(path: Path) -> dict[str, list[str]]:
    rows = [json.loads(ln) for ln in path.read_text(encoding="utf-8").splitlines()]
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)), f"duplicate ids in {path}"
    return {r["id"]: r["data"] for r in rows}


def _written(out: Path) -> int:
    return sum((out / s / "dialogues.jsonl").read_bytes().count(b"\n") for s in SECTORS
               if (out / s / "dialogues.jsonl").exists())


def test_generate_all_over_a_faulty_endpoint_survives_sigkills(tmp_path: Path, ultrachat_exe: list[str]) -> None:
    seed = int(os.environ.get("KILL_SEED") or random.randrange(2**32))
    print(f"kill storm seed: KILL_SEED={seed}")
    rng = random.Random(seed)
    with MockServer(*FAULTS) as server:
        def cmd(out: Path) -> list[str]:
            return [*ultrachat_exe, "generate", "all", "--base-url", server.url, "--model", "mock", "--dialogues",
                    "8", "--concurrency", "3", "--max-rounds", "2", "--out", str(out), "--no-progress"]

        ref = subprocess.run(cmd(tmp_path / "ref"), capture_output=True, text=True, timeout=300)
        assert ref.returncode == 0, ref.stderr
        expected = _corpus(tmp_path / "ref" / "all.jsonl")
        assert len(expected) == 8

        out, kills = tmp_path / "killed", []
        for _ in range(3):
            target = rng.randint(0, 6)
            proc = subprocess.Popen(cmd(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 120
            while proc.poll() is None and _written(out) < target and time.monotonic() < deadline:
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.1))
            proc.send_signal(signal.SIGKILL)
            if proc.wait() == -signal.SIGKILL:
                kills.append(_written(out))
        final = subprocess.run(cmd(out), capture_output=True, text=True, timeout=300)
        faults = {k: v for k, v in server.stats()["counts"].items() if k.startswith("fault_")}
    print(f"kills at {kills} dialogues written; faults injected {faults}")
    assert final.returncode == 0, (final.stderr, f"KILL_SEED={seed}")
    assert len(kills) >= 2 and min(kills) < 8, (kills, f"KILL_SEED={seed}")  # kills landed mid-run
    assert sum(faults.values()) > 0, faults  # the endpoint did misbehave
    got = _corpus(out / "all.jsonl")
    assert sorted(got) == sorted(expected), f"KILL_SEED={seed}"  # none lost, none duplicated
    assert got == expected, f"KILL_SEED={seed}"  # and the same texts
