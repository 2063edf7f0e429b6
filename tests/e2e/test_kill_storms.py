"""Kill storms of ``ultrachat generate``: SIGKILL at random moments of real work (planning
stages, dialogues), rerun the same command, and the final corpus equals an uninterrupted
run's: the same ids and texts, none lost, none duplicated, every line on disk whole and
valid after each kill. World runs on the fake backend; entities, writing, materials and
``all`` over the openai backend against the mock server with 429s, 500s, dropped
connections and malformed bodies mixed in. Three kills a case here; ``make bench`` runs 20.
``KILL_SEED=<seed>`` (printed in every summary) replays a storm's kill moments."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ultrachat.core.corpus import iter_jsonl
from ultrachat.testing.storms import StormResult
from ultrachat.testing.storms.generate import SECTORS, STORMS

KILLS = 3


def _storm(name: str, workdir: Path) -> StormResult:
    result = STORMS[name](workdir, kills=KILLS)
    print(result.summary())
    assert result.ok, result.summary()
    assert result.kills == KILLS and result.reruns == KILLS + 1, result.summary()  # every kill hit a running run
    # The first run of a fresh folder dies while planning; the last kill lands while dialogues are written.
    assert not result.kill_points[0].startswith("dialogues"), result.summary()
    assert result.kill_points[-1].startswith("dialogues"), result.summary()
    return result


def test_world_on_the_fake_backend(tmp_path: Path) -> None:
    result = _storm("world", tmp_path)
    stages = {"subtopics", "questions", "related", "openings"}
    assert {p.split()[0] for p in result.kill_points[:-1]} <= stages, result.summary()
    assert "faults" not in result.detail  # no endpoint here: the storm alone


@pytest.mark.parametrize("sector", ["entities", "writing", "materials", "all"])
def test_over_a_faulty_endpoint(tmp_path: Path, sector: str) -> None:
    result = _storm(sector, tmp_path)
    faults = re.search(r"faults injected in the storm: ([^;]+)", result.detail)
    assert faults and "x" in faults.group(1), result.summary()  # the endpoint misbehaved during the storm
    corpus = list(iter_jsonl(tmp_path / "killed" / ("all.jsonl" if sector == "all" else "dialogues.jsonl")))
    assert {d["meta"]["sector"] for d in corpus} == (set(SECTORS) if sector == "all" else {sector})
    assert {d["meta"]["models"]["assistant"]["backend"] for d in corpus} == {"openai"}
