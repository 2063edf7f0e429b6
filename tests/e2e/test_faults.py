"""Fault tests: a faulty HTTP endpoint, disk full and an unwritable output folder (the kill
storms are in test_kill_storms.py)."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ultrachat.cli import app
from ultrachat.core.corpus import iter_jsonl
from ultrachat.generate.runner import generate
from ultrachat.recipe import load_recipe
from ultrachat.testing import MockServer

FAKE = '[models.user]\nbackend = "fake"\nmodel = "fake;delay=0.005"\n' \
       '[models.assistant]\nbackend = "fake"\nmodel = "fake;delay=0.005"\n'


def _cli_child(argv: list[str], stderr_path: str | None = None, limit_file_size: bool = False) -> None:
    """The ``ultrachat`` command line inside a forked child (no interpreter start-up)."""
    if limit_file_size:
        _limit_file_size()
    if stderr_path:
        os.dup2(os.open(stderr_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 2)
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115 - the child exits right after
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115
    app(argv)


def run_cli(argv: list[str], tmp: Path, limit_file_size: bool = False) -> tuple[int, str]:
    """Run the command line to completion in a forked child: (exit code, stderr)."""
    err = tmp / "stderr.txt"
    child = multiprocessing.get_context("fork").Process(target=_cli_child, args=(argv, str(err), limit_file_size))
    child.start()
    child.join(120)
    return child.exitcode if child.exitcode is not None else -1, err.read_text(encoding="utf-8")


def _tree_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*.jsonl")) if folder.exists() else 0


def _sorted_lines(path: Path) -> list[str]:
    return sorted(path.read_text(encoding="utf-8").splitlines())


def test_fault_mix_from_the_endpoint_completes_with_valid_dialogues(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    faults = ["--fault-429", "0.10", "--fault-500", "0.05", "--fault-timeout", "0.02", "--fault-malformed", "0.03",
              "--fault-drop", "0.03", "--retry-after", "0.1", "--hang-s", "2", "--latency-ms", "5", "--seed", "10"]
    recipe = tmp_path / "recipe.toml"
    role = "max_retries = 10\ntimeout_s = 0.5\n"
    recipe.write_text(f"concurrency = 16\n[models.user]\n{role}[models.assistant]\n{role}", encoding="utf-8")
    out = tmp_path / "out"
    monkeypatch.setenv("OPENAI_API_KEY", "unused")
    with MockServer(*faults) as srv:
        code, err = run_cli(["generate", "world", "-r", str(recipe), "--base-url", srv.url, "--model", "mock",
                             "--dialogues", "24", "--max-rounds", "3", "--out", str(out), "--no-progress"], tmp_path)
        counts = srv.stats()["counts"]
    assert code == 0, err
    assert {k for k in counts if k.startswith("fault_")} == {f"fault_{k}" for k in
                                                             ("429", "500", "timeout", "malformed", "drop")}
    dialogues = list(iter_jsonl(out / "dialogues.jsonl"))
    assert len(dialogues) == len({d["id"] for d in dialogues}) == 24
    for d in dialogues:
        assert d["meta"]["stop_reason"] == "completed" and all(t.strip() for t in d["data"])
        assert len(d["data"]) == 2 * d["meta"]["rounds"]
    report = json.loads((out / "report.json").read_text())
    assert report["total"]["errors"] == 0  # every fault was absorbed by a retry


@contextlib.contextmanager
def _small_disk(path: Path, size: str = "128k", read_only: bool = False) -> Iterator[bool]:
    """Mount a tiny tmpfs at ``path`` when allowed (root); yields False when not mounted."""
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if read_only else "")
    mounted = os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)],
                                                   capture_output=True).returncode == 0
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], check=True)


def _limit_file_size() -> None:
    """Without a tiny disk, a file-size limit makes writes fail the same way (EFBIG)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (60_000, 60_000))


def test_disk_full_fails_in_one_line_and_keeps_every_file_whole(tmp_path: Path, fake_recipe_file) -> None:
    disk = tmp_path / "disk"
    with _small_disk(disk) as mounted:
        out = disk / "out"
        recipe = fake_recipe_file(";delay=0.002")  # dialogues finish one by one, as with a real model
        argv = ["generate", "world", "-r", str(recipe), "--dialogues", "100", "--out", str(out), "--no-progress"]
        code, err = run_cli(argv, tmp_path, limit_file_size=not mounted)
        assert code == 1
        err = err.strip()
        assert "\n" not in err and err.startswith("error:"), err
        assert ("No space left on device" if mounted else "File too large") in err and str(out) in err
        jsonl = list(out.rglob("*.jsonl"))
        assert (out / "dialogues.jsonl").stat().st_size > 0  # the disk filled up while dialogues were written
        for path in jsonl:  # no torn line anywhere: each file parses to the end
            assert path.stat().st_size == 0 or path.read_bytes().endswith(b"\n"), path
            list(iter_jsonl(path, validate=path.name == "dialogues.jsonl"))


def test_unwritable_output_fails_in_one_line(tmp_path: Path, fake_recipe_file) -> None:
    locked = tmp_path / "locked"
    with _small_disk(locked, read_only=True) as mounted:
        if not mounted:
            locked.chmod(0o555)  # enough for a non-root user
        code, err = run_cli(["generate", "world", "-r", str(fake_recipe_file()), "--dialogues", "3",
                             "--out", str(locked / "out"), "--no-progress"], tmp_path)
    assert code != 0
    assert "Traceback" not in err
    err = err.strip()
    assert "\n" not in err and err.startswith("error:") and str(locked / "out") in err, err
    assert not (locked / "out").exists()


def _pages(folder: Path, skip: str = "") -> int:
    """KiB a tmpfs needs for the files of ``folder`` (whole 4 KiB pages), leaving out ``skip``."""
    return sum(-(-p.stat().st_size // 4096) * 4 for p in folder.rglob("*") if p.is_file() and p.name != skip)


@pytest.mark.parametrize("phase", ["plan", "dialogues", "report"])
def test_disk_full_at_each_phase_then_resume_to_the_same_corpus(tmp_path: Path, phase: str) -> None:
    """The disk fills while planning, while writing dialogues, or when the last file
    (report.json) is written; after the space comes back, the same command finishes the
    run and the corpus equals an uninterrupted run's."""
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(FAKE, encoding="utf-8")
    generate("world", load_recipe(recipe, {"dialogues": 30, "out": str(tmp_path / "ref")}), progress=False)
    expected = _sorted_lines(tmp_path / "ref" / "dialogues.jsonl")
    plan_kib = _pages(tmp_path / "ref" / "plan") + 4  # + run.json
    size = {"plan": plan_kib // 2, "dialogues": plan_kib + 16, "report": _pages(tmp_path / "ref", "report.json")}
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size[phase]}k", "tmpfs",
                                            str(disk)], capture_output=True).returncode:
        pytest.skip("needs root to mount a small tmpfs (the file-size-limit variant is the test above)")
    try:
        out = disk / "out"
        argv = ["generate", "world", "-r", str(recipe), "--dialogues", "30", "--out", str(out), "--no-progress"]
        code, err = run_cli(argv, tmp_path)
        assert code == 1 and "No space left on device" in err and len(err.strip().splitlines()) == 1, err
        written = len(_sorted_lines(out / "dialogues.jsonl")) if (out / "dialogues.jsonl").exists() else 0
        assert {"plan": written == 0, "dialogues": 0 < written < 30,
                "report": written == 30 and not (out / "report.json").exists()}[phase], (phase, written, err)
        subprocess.run(["mount", "-o", "remount,size=16m", str(disk)], check=True)  # the space comes back
        code, err = run_cli(argv, tmp_path)
        assert code == 0, err
        assert _sorted_lines(out / "dialogues.jsonl") == expected  # none lost, none duplicated, same texts
        last = json.loads((out / "report.json").read_text())["runs"][-1]  # the resumed run found the rest done
        assert last["already_done"] + last["dialogues_written"] == 30 and last["already_done"] == written
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)
