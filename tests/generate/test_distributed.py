"""The Ray scale-out on a local Ray instance: same corpus as a local run, resuming a killed
run's folder without loss or duplicates, worker accounting merged into the report."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from ultrachat.core.corpus import iter_jsonl
from ultrachat.generate.distributed import generate_ray, shard_of
from ultrachat.generate.runner import generate
from ultrachat.recipe import load_recipe

pytest.importorskip("ray", reason="the Ray scale-out needs the 'cluster' extra (pip install 'ultrachat[cluster]')")


def test_shards_are_stable_and_balanced() -> None:
    ids = [f"world-s0-t{t:03d}-{k:05d}" for t in range(30) for k in range(100)]
    counts = Counter(shard_of(i, 4) for i in ids)
    assert set(counts) == {0, 1, 2, 3} and min(counts.values()) > 600
    assert [shard_of(i, 4) for i in ids[:50]] == [shard_of(i, 4) for i in ids[:50]]


@pytest.mark.timeout(240)  # a local Ray instance starts in 5-40 s depending on the machine's load
def test_ray_run_resumes_a_killed_folder_into_the_local_corpus(tmp_path: Path, fake_recipe_file) -> None:
    recipe = fake_recipe_file(";delay=0.002")
    n = 40
    generate("world", load_recipe(recipe, {"dialogues": n, "out": str(tmp_path / "ref")}), progress=False)
    reference = (tmp_path / "ref" / "dialogues.jsonl").read_text(encoding="utf-8").splitlines()
    # A folder as a killed run leaves it: the plan, 15 dialogues and a torn last line.
    out = tmp_path / "ray"
    generate("world", load_recipe(recipe, {"dialogues": n, "out": str(out)}), progress=False)
    kept = (out / "dialogues.jsonl").read_text(encoding="utf-8").splitlines()[:15]
    (out / "dialogues.jsonl").write_text("\n".join(kept) + "\n" + kept[0][:40], encoding="utf-8")
    (out / "report.json").unlink()

    summary = generate_ray("world", load_recipe(recipe, {"dialogues": n, "out": str(out)}), "local", workers=2,
                           progress=False)
    assert summary.stats.dialogues == n - 15 and summary.already_done == 15
    lines = (out / "dialogues.jsonl").read_text(encoding="utf-8").splitlines()
    ids = [d["id"] for d in iter_jsonl(out / "dialogues.jsonl")]
    assert len(ids) == len(set(ids)) == n
    assert sorted(lines) == sorted(reference)  # the same dialogues, whichever worker made them
    report = json.loads((out / "report.json").read_text())["runs"][0]
    new = [json.loads(line)["meta"] for line in lines[15:]]
    assert report["stages"]["assistant"]["fake:fake;delay=0.002"]["calls"] == sum(m["rounds"] for m in new)
