"""Explorer index and search: incremental and resumable indexing, query safety, filters, snippets."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from ultrachat.explore import search as s
from ultrachat.explore.index import ExploreError, compute_stats, connect, expand_inputs, sync_index

TOPICS = {
    "Nature": ["Why do ocean tides rise twice a day?", "Tides follow the moon's gravity and the earth's rotation."],
    "Food": ["How do I bake sourdough bread?", "Feed the starter, mix flour and water, then bake the bread hot."],
    "Code": ["How do I reverse a list in Python?", "Use `items[::-1]` or:\n```python\nitems.reverse()\n```"],
}


def dialogue(i: int, topic: str = "Nature", sector: str = "world", rounds: int = 1, model: str = "m1") -> dict:
    user, answer = TOPICS[topic]
    data = [f"{user} (case {i})", answer] * rounds
    return {"id": f"d{i}", "data": data, "meta": {"sector": sector, "topic": topic, "rounds": rounds,
                                                  "models": {"user": {"model": "u"}, "assistant": {"model": model}},
                                                  "stop_reason": "completed"}}


def write(path: Path, items: list[dict], mode: str = "w") -> None:
    with open(path, mode, encoding="utf-8") as fh:
        fh.writelines(json.dumps(d) + "\n" for d in items)


def ids(conn: sqlite3.Connection) -> list[str]:
    return [r[0] for r in conn.execute("SELECT id FROM dialogues ORDER BY rowid")]


def test_incremental_indexes_only_new_lines_and_waits_for_partial_ones(tmp_path: Path) -> None:
    data, db = tmp_path / "a.jsonl", tmp_path / "i.sqlite"
    write(data, [dialogue(i) for i in range(5)])
    first = sync_index([data], db, progress=False)
    assert (first.added, first.total) == (5, 5)
    again = sync_index([data], db, progress=False)
    assert (again.added, again.total, again.rebuilt) == (0, 5, "")

    # A writer is mid-line: the partial line is left for later, then picked up once complete.
    line = json.dumps(dialogue(6, "Food"))
    write(data, [dialogue(5, "Code")], "a")
    with open(data, "a", encoding="utf-8") as fh:
        fh.write(line[:20])
    assert sync_index([data], db, progress=False).added == 1
    with open(data, "a", encoding="utf-8") as fh:
        fh.write(line[20:] + "\n")
    last = sync_index([data], db, progress=False)
    assert (last.added, last.total) == (1, 7)
    conn = connect(db, readonly=True)
    assert ids(conn) == [f"d{i}" for i in range(7)]
    hit = s.search(conn, s.Query.parse({"q": "sourdough"}))
    assert [r["id"] for r in hit["results"]] == ["d6"]


def test_replaced_file_rebuilds_and_new_files_in_a_folder_are_added(tmp_path: Path) -> None:
    folder, db = tmp_path / "out", tmp_path / "i.sqlite"
    (folder / "plan").mkdir(parents=True)
    write(folder / "a.jsonl", [dialogue(i) for i in range(3)])
    (folder / "plan" / "calls.jsonl").write_text('{"stage": "topics"}\n', encoding="utf-8")
    assert expand_inputs([folder]) == [(folder / "a.jsonl").resolve()]  # non-dialogue JSONL left out
    assert sync_index([folder], db, progress=False).total == 3
    write(folder / "b.jsonl", [dialogue(10, "Food")])
    report = sync_index([folder], db, progress=False)
    assert (report.added, report.total, report.rebuilt) == (1, 4, "")
    write(folder / "a.jsonl", [dialogue(20, "Code")])  # rewritten: offsets no longer valid
    report = sync_index([folder], db, progress=False)
    assert "changed" in report.rebuilt
    assert sorted(ids(connect(db, readonly=True))) == ["d10", "d20"]
    with pytest.raises(ExploreError, match="no such file"):
        sync_index([tmp_path / "missing.jsonl"], db, progress=False)


def test_sigkill_during_indexing_resumes_without_loss_or_duplicates(tmp_path: Path) -> None:
    data, db = tmp_path / "a.jsonl", tmp_path / "i.sqlite"
    write(data, [dialogue(i, ["Nature", "Food", "Code"][i % 3]) for i in range(95)])
    code = ("import os, sys; from pathlib import Path; import ultrachat.explore.index as ix; ix.BATCH_LINES = 10; "
            "ix.sync_index([Path(sys.argv[1])], Path(sys.argv[2]), progress=False, "
            "on_batch=lambda n: os.kill(os.getpid(), 9) if n >= 30 else None)")
    killed = subprocess.run([sys.executable, "-c", code, str(data), str(db)], check=False)
    assert killed.returncode == -9
    conn = connect(db, readonly=True)
    assert 30 <= len(ids(conn)) < 95
    conn.close()
    report = sync_index([data], db, progress=False)
    conn = connect(db, readonly=True)
    assert report.total == 95 and ids(conn) == [f"d{i}" for i in range(95)]
    assert conn.execute("SELECT max(dup) FROM dialogues").fetchone()[0] == 0
    assert s.search(conn, s.Query.parse({"q": "reverse"}))["total"] == sum(1 for i in range(95) if i % 3 == 2)


def test_plain_lines_duplicate_ids_and_bad_lines(tmp_path: Path) -> None:
    data, db = tmp_path / "plain.jsonl", tmp_path / "i.sqlite"
    data.write_text('{"id": "0", "data": ["Tides?", "The moon."]}\n'
                    "not json\n"
                    '{"id": "0", "data": ["Bread?", "Flour.", "More?"]}\n'
                    '{"id": "x", "data": []}\n', encoding="utf-8")
    report = sync_index([data], db, progress=False)
    assert (report.total, report.skipped_count) == (2, 2)
    assert report.skipped[0].startswith(f"{data.resolve()}:2: invalid JSON")
    conn = connect(db, readonly=True)
    second = s.dialogue(conn, "0", 1)
    assert second["data"][0] == "Bread?" and second["same_id"] == 2 and second["line"] == 3
    assert conn.execute("SELECT rounds, sector FROM dialogues WHERE dup = 1").fetchone() == (2, None)
    with pytest.raises(s.NotFound):
        s.dialogue(conn, "0", 2)
    stats = compute_stats(conn)
    assert stats["dialogues"] == 2 and stats["sectors"] == [[None, 2]] and stats["turns"] == 5


ITEMS = [dialogue(i, ["Nature", "Food", "Code"][i % 3], ["world", "writing"][i % 2], 1 + i % 4, f"m{i % 2}")
         for i in range(60)]


@pytest.fixture
def corpus(tmp_path: Path) -> sqlite3.Connection:
    data, db = tmp_path / "c.jsonl", tmp_path / "i.sqlite"
    write(data, ITEMS)
    sync_index([data], db, progress=False, map_points=0)
    return connect(db, readonly=True)


def test_filters_pagination_and_snippets(corpus: sqlite3.Connection) -> None:
    res = s.search(corpus, s.Query.parse({"q": "tides", "sector": "writing", "min_rounds": "2", "per_page": "3"}))
    expected = [i for i in range(0, 60, 3) if i % 2 == 1 and 1 + i % 4 >= 2]
    assert res["total"] == len(expected) and not res["more"]
    assert all(r["sector"] == "writing" and r["rounds"] >= 2 and r["topic"] == "Nature" for r in res["results"])
    page2 = s.search(corpus, s.Query.parse({"q": "tides", "sector": "writing", "min_rounds": "2", "per_page": "3",
                                            "page": "2"}))
    seen = {r["id"] for r in res["results"]} | {r["id"] for r in page2["results"]}
    assert len(seen) == 6
    marked = [t for t, hit in res["results"][0]["snippet"] if hit]
    assert len(marked) >= 2 and {t.lower() for t in marked} == {"tides"}
    assert "".join(t for t, _ in res["results"][0]["snippet"]).startswith("Why do ocean tides")
    browse = s.search(corpus, s.Query.parse({"model": "m1", "max_chars": "200"}))
    assert browse["total"] == sum(1 for d in ITEMS if d["meta"]["models"]["assistant"]["model"] == "m1"
                                  and sum(map(len, d["data"])) <= 200) > 0
    prefix = s.search(corpus, s.Query.parse({"q": "sourd*"}))
    assert prefix["total"] == 20
    phrase = s.search(corpus, s.Query.parse({"q": '"sourdough bake"'}))
    assert phrase["total"] == 0
    assert s.search(corpus, s.Query.parse({"q": '"bake the bread"'}))["total"] == 20


@pytest.mark.parametrize("q", ['"', "AND", "tides OR", "NEAR(", "*", "col:tides", "tides -bread", "^x", "')--"])
def test_any_text_is_a_valid_query(corpus: sqlite3.Connection, q: str) -> None:
    try:
        query = s.Query.parse({"q": q})
    except s.QueryError:
        return  # nothing searchable: a 400, never an FTS5 syntax error
    assert isinstance(s.search(corpus, query)["total"], int)


@pytest.mark.parametrize("params", [{"page": "0"}, {"page": "x"}, {"min_rounds": "-1"}, {"per_page": "1000"},
                                    {"q": "tides", "page": "999"}, {"q": "x" * 600}, {"q": "!!!"},
                                    {"color": "red"}, {"q": " ".join(["w"] * 20)}])
def test_bad_parameters_are_query_errors(params: dict[str, str]) -> None:
    with pytest.raises(s.QueryError):
        s.Query.parse(params)


def test_cli_index_only_and_one_line_errors(tmp_path: Path, ultrachat_exe: list[str]) -> None:
    data, db = tmp_path / "a.jsonl", tmp_path / "i.sqlite"
    write(data, [dialogue(i) for i in range(3)])
    ok = subprocess.run([*ultrachat_exe, "explore", str(data), "--index", str(db), "--index-only"],
                        capture_output=True, text=True, check=False)
    assert ok.returncode == 0 and "3 dialogues (3 new" in ok.stderr
    assert connect(db, readonly=True).execute("SELECT count(*) FROM map").fetchone()[0] == 3
    bad = subprocess.run([*ultrachat_exe, "explore", str(tmp_path / "nope.jsonl"), "--index-only"],
                         capture_output=True, text=True, check=False)
    assert bad.returncode == 1 and "nope.jsonl: no such file or folder" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_map_added_to_an_index_built_without_one(tmp_path: Path) -> None:
    data, db = tmp_path / "a.jsonl", tmp_path / "i.sqlite"
    write(data, ITEMS)
    sync_index([data], db, progress=False, map_points=0)
    assert connect(db, readonly=True).execute("SELECT count(*) FROM map").fetchone()[0] == 0
    assert sync_index([data], db, progress=False, map_points=25).added == 0
    conn = connect(db, readonly=True)
    points = s.map_points(conn)
    assert points["count"] == 25 and points["total"] == 60 and len(set(points["id"])) == 25
    # Same-topic dialogues sit closer together than dialogues of different topics.
    xy = {i: (x, y) for i, x, y in zip(points["id"], points["x"], points["y"], strict=True)}
    topic = {d["id"]: d["meta"]["topic"] for d in ITEMS}
    same, other = [], []
    for a in xy:
        for b in xy:
            if a < b:
                dist = ((xy[a][0] - xy[b][0]) ** 2 + (xy[a][1] - xy[b][1]) ** 2) ** 0.5
                (same if topic[a] == topic[b] else other).append(dist)
    assert sum(same) / len(same) < 0.5 * sum(other) / len(other)


def test_default_index_lives_under_ultrachat_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ultrachat.explore.index import default_index_path

    monkeypatch.setenv("ULTRACHAT_CACHE", str(tmp_path / "cache"))
    first = default_index_path([tmp_path / "a.jsonl"])
    assert first.parent == tmp_path / "cache" / "explore" and first.suffix == ".sqlite"
    assert default_index_path([tmp_path / "b.jsonl"]) != first  # one index per set of inputs
