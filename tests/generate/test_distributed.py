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


class _Ref:
    def __init__(self, item):
        self.item = item

    def __await__(self):
        yield from ()
        return self.item


class _DyingTask:
    """Stands in for ``ray.remote(run_shard)``: each submission streams ``batches[k]`` (lists
    of ids) and then dies as a killed worker does, unless it is the last script entry."""

    def __init__(self, script: list[list[str]]) -> None:
        self.script, self.submitted = script, []

    def remote(self, data, sector, lines: bytes, count: int):
        ids = [json.loads(line)["id"] for line in lines.splitlines()]
        assert len(ids) == count
        self.submitted.append(ids)
        batch = self.script.pop(0) if self.script else None
        return self._stream(batch, ids)

    async def _stream(self, batch, ids):
        import ray.exceptions

        for i in batch if batch is not None else ids:
            yield _Ref([{"id": i, "meta": {"tokens": {}, "rounds": 1, "stop_reason": "rounds", "regenerations": {},
                                           "truncated_turns": []}}])
        if batch is not None:
            raise ray.exceptions.WorkerCrashedError()


def _shards(task, written: list[str]):
    from types import SimpleNamespace

    from ultrachat.core.progress import RunProgress
    from ultrachat.generate.budget import TokenBudget
    from ultrachat.generate.distributed import _Shards
    from ultrachat.generate.engine import EngineStats
    from ultrachat.generate.group_commit import GroupCommit

    engine = SimpleNamespace(assistant=SimpleNamespace(backend=None), stats=EngineStats())
    return _Shards(task, {}, "world", engine, GroupCommit(written.extend), RunProgress(enabled=False), TokenBudget(0))


def _shard_file(tmp_path: Path, ids: list[str]) -> Path:
    path = tmp_path / "0.jsonl"
    path.write_text("".join(json.dumps({"id": i}) + "\n" for i in ids), encoding="utf-8")
    return path


def test_a_dead_workers_shard_is_resubmitted_without_its_finished_dialogues(tmp_path: Path) -> None:
    import asyncio

    ids = [f"d{i}" for i in range(6)]
    task = _DyingTask([["d0", "d1"], [], ["d3"]])  # dies after 2, then at once, then after 1; then completes
    written: list[dict] = []
    shards = _shards(task, written)

    async def run() -> None:
        await shards.consume(0, _shard_file(tmp_path, ids))
        await shards.commit.flush()

    asyncio.run(run())
    assert task.submitted == [ids, ids[2:], ids[2:], ["d2", "d4", "d5"]]
    assert sorted(r["id"] for r in written) == ids  # each once
    assert shards.restarts == 3


def test_a_worker_that_keeps_dying_without_progress_stops_the_run_in_one_line(tmp_path: Path) -> None:
    import asyncio

    task = _DyingTask([["d0"], [], [], [], []])
    shards = _shards(task, [])
    with pytest.raises(RuntimeError, match=r"shard 0 died 3 times in a row without finishing a dialogue"):
        asyncio.run(shards.consume(0, _shard_file(tmp_path, ["d0", "d1", "d2"])))
    assert task.submitted == [["d0", "d1", "d2"], ["d1", "d2"], ["d1", "d2"], ["d1", "d2"]]


@pytest.mark.timeout(900)  # four local Ray instances start one after the other (5-40 s each with load)
def test_ray_run_survives_killed_workers_and_drivers(tmp_path: Path) -> None:
    from ultrachat.testing.storms.ray import driver_storm

    result = driver_storm(tmp_path, kills=3, workers_too=True)
    print(result.summary())
    assert result.ok, result.summary()
    points = " ".join(result.kill_points)
    assert points.count("worker at") >= 2 and points.count("driver at") >= 3, result.summary()
