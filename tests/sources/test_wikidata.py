"""``ultrachat entities build``: top-N entities by sitelinks from a dump in Wikidata's real
line format (gz, bz2, stdin), their types from P31, bounded memory, malformed lines; the
CSV then feeds ``generate entities`` on the fake backend."""

from __future__ import annotations

import bz2
import csv
import gzip
import json
import random
import subprocess
from pathlib import Path

import pytest

from ultrachat.core.corpus import InvalidLine, iter_jsonl
from ultrachat.generate.entities import read_entities
from ultrachat.sources.wikidata import TopEntities, WikidataEntity, load_classes, top_entities


def item(qid: str, labels: dict[str, str], sitelinks: int, p31: list[str | tuple[str, str]] = (),
         descriptions: dict[str, str] | None = None) -> dict:
    """An item as the dump writes it (labels, descriptions, P31 claims with ranks, sitelinks)."""
    sites = [f"lang{n}wiki" for n in range(sitelinks)]
    claims = [{"mainsnak": {"snaktype": "value", "property": "P31", "datatype": "wikibase-item",
                            "datavalue": {"value": {"entity-type": "item", "numeric-id": int(c[1:]), "id": c},
                                          "type": "wikibase-entityid"}},
               "type": "statement", "id": f"{qid}$x{i}", "rank": rank}
              for i, (c, rank) in enumerate((c, "normal") if isinstance(c, str) else c for c in p31)]
    return {"type": "item", "id": qid,
            "labels": {k: {"language": k, "value": v} for k, v in labels.items()},
            "descriptions": {k: {"language": k, "value": v} for k, v in (descriptions or {}).items()},
            "aliases": {}, "claims": {"P31": claims} if claims else {},
            "sitelinks": {s: {"site": s, "title": labels.get("en", qid), "badges": []} for s in sites}}


def write_dump(path: Path, entities: list[dict | str]) -> Path:
    """The dump's line format: '[', one entity a line with a trailing comma but the last, ']'."""
    lines = [e if isinstance(e, str) else json.dumps(e, separators=(",", ":")) for e in entities]
    data = ("[\n" + ",\n".join(lines) + "\n]\n").encode()
    opener = {".gz": gzip.open, ".bz2": bz2.open}.get(path.suffix, open)
    with opener(path, "wb") as fh:
        fh.write(data)
    return path


ENTITIES = [
    {"type": "property", "id": "P31", "labels": {"en": {"language": "en", "value": "instance of"}}},
    item("Q90", {"en": "Paris", "fr": "Paris"}, 200, [("Q515", "normal"), ("Q5119", "preferred")],
         {"en": 'capital of France, "City of Light"'}),
    item("Q167646", {"en": "Paris"}, 30, ["Q22988604"], {"en": "son of Priam"}),  # a namesake: dropped
    item("Q7", {"en": "Alan Turing"}, 80, ["Q5"], {"en": "English computer scientist"}),
    item("Q2", {"en": "Ada Lovelace"}, 50, ["Q5"]),
    item("Q95", {"en": "Google"}, 120, [("Q5", "deprecated"), "Q43229"], {"en": "technology company"}),
    item("Q362", {"en": "World War II"}, 170, ["Q103495"]),
    item("Q132689", {"en": "Casablanca"}, 60, ["Q11424"], {"en": "1942 film"}),
    item("Q16", {"en": "Mercury"}, 150, ["Q4167410"]),  # a disambiguation page
    item("Q4", {"en": "Category:Living people"}, 300, ["Q4167836"]),
    item("Q2064", {"en": "1990"}, 250, ["Q577"]),
    item("Q9", {"fr": "Bonjour"}, 100, ["Q151885"]),  # no English label
    item("Q11", {"en": "Something odd"}, 90, ["Q999999999"]),  # an unmapped class: no type
    item("Q12", {"en": "No class at all"}, 40),
]


def test_top_entities_from_a_gz_dump(tmp_path):
    dump = write_dump(tmp_path / "latest-all.json.gz", ENTITIES)
    report = top_entities(dump, 6, ["en"], load_classes())
    got = [(e.name, e.type, e.description, e.qid, e.sitelinks) for e in report.kept]
    assert got == [("Paris", "place", 'capital of France, "City of Light"', "Q90", 200),
                   ("World War II", "event", "", "Q362", 170),
                   ("Google", "organisation", "technology company", "Q95", 120),
                   ("Something odd", "", "", "Q11", 90),
                   ("Alan Turing", "person", "English computer scientist", "Q7", 80),
                   ("Casablanca", "work", "1942 film", "Q132689", 60)]
    assert report.skipped_class == 3 and report.no_label == 1 and report.lines == len(ENTITIES) + 1
    fr = top_entities(dump, 2, ["de", "fr"], load_classes()).kept  # a fallback chain of languages
    assert [(e.name, e.type) for e in fr] == [("Paris", "place"), ("Bonjour", "concept")]


def test_older_dump_shapes(tmp_path):
    """Dumps of 2015 give P31 values by numeric-id only; empty maps may be PHP's empty array []."""
    old = {"type": "item", "id": "Q3", "labels": {"en": {"language": "en", "value": "Tiger"}}, "descriptions": [],
           "aliases": [], "claims": {"P31": [{"mainsnak": {"snaktype": "value", "property": "P31", "datavalue": {
               "value": {"entity-type": "item", "numeric-id": 16521}, "type": "wikibase-entityid"}},
               "type": "statement", "rank": "normal"}]},
           "sitelinks": {"enwiki": {"site": "enwiki", "title": "Tiger", "badges": []}}}
    bare = {"type": "item", "id": "Q8", "labels": {"en": {"language": "en", "value": "Bare"}}, "descriptions": [],
            "aliases": [], "claims": [], "sitelinks": []}
    kept = top_entities(write_dump(tmp_path / "old.json.gz", [old, bare]), 5, ["en"], load_classes()).kept
    assert [(e.name, e.type, e.sitelinks) for e in kept] == [("Tiger", "concept", 1), ("Bare", "", 0)]


def _expected(items: list[dict], n: int) -> list[WikidataEntity]:
    """The top ``n`` by a full sort, the better of namesakes kept."""
    best: dict[str, WikidataEntity] = {}
    for raw in items:
        e = WikidataEntity(raw["labels"]["en"]["value"], "person", "", raw["id"], len(raw["sitelinks"]))
        key = e.name.casefold()
        if key not in best or e.rank > best[key].rank:
            best[key] = e
    return sorted(best.values(), key=lambda e: e.rank, reverse=True)[:n]


def test_bounded_top_n_matches_a_full_sort_and_skips_parsing(tmp_path):
    rng = random.Random(3)
    raw = [item(f"Q{i}", {"en": f"Name {rng.randrange(400)}"}, min(300, int(rng.paretovariate(1.2)) - 1), ["Q5"])
           for i in rng.sample(range(1, 10**6), 1500)]
    dump = write_dump(tmp_path / "many.json.bz2", raw)
    everything = top_entities(dump, 10**6, ["en"], load_classes())
    assert everything.parsed == 1500 and everything.kept == _expected(raw, 10**6)
    for n in (1, 7, 50, 300):
        report = top_entities(dump, n, ["en"], load_classes())
        assert report.kept == _expected(raw, n)
    assert report.parsed < 1500  # lines that cannot enter the top N are never parsed
    assert top_entities(dump, 7, ["en"], load_classes()).parsed < 300


def test_top_heap_holds_at_most_twice_n_with_namesakes():
    top = TopEntities(5)
    rng = random.Random(0)
    for i in range(5000):
        top.offer(WikidataEntity(f"n{rng.randrange(8)}", "", "", f"Q{i}", rng.randrange(10**6)))
        assert len(top._heap) < 10
    assert len(top.best()) == 5


def test_malformed_lines_stop_or_are_skipped(tmp_path):
    entities = [*ENTITIES[:3], '{"type":"item","id":"Q77","labels":{"en"', "garbage", *ENTITIES[3:]]
    dump = write_dump(tmp_path / "bad.json.gz", entities)
    with pytest.raises(InvalidLine, match=r"bad\.json\.gz:5: invalid JSON .*--skip-invalid"):
        top_entities(dump, 5, ["en"], load_classes())
    report = top_entities(dump, 5, ["en"], load_classes(), skip_invalid=True)
    assert report.invalid == 2 and report.first_invalid.startswith(f"{dump}:5: invalid JSON")
    assert [e.name for e in report.kept][:2] == ["Paris", "World War II"]
    cut = tmp_path / "cut.json.gz"
    cut.write_bytes(write_dump(tmp_path / "good.json.gz", ENTITIES).read_bytes()[:-20])
    with pytest.raises(InvalidLine, match=r"cut\.json\.gz:\d+: cannot decompress"):
        top_entities(cut, 5, ["en"], load_classes())
    classes = tmp_path / "classes.toml"
    classes.write_text('[types]\nperson = ["human"]\n')
    with pytest.raises(ValueError, match="'human' is not a QID"):
        load_classes(classes)


def test_cli_builds_a_list_that_generate_entities_uses(tmp_path, fake_recipe_file, ultrachat_exe):
    dump = write_dump(tmp_path / "latest-all.json.bz2", ENTITIES)
    out = tmp_path / "entities.csv"
    res = subprocess.run([*ultrachat_exe, "entities", "build", str(dump), "--top", "4", "--out", str(out),
                          "--no-progress"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "kept 4 entities" in res.stdout
    with open(out, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["name"] for r in rows] == ["Paris", "World War II", "Google", "Something odd"]
    assert rows[0]["description"] == 'capital of France, "City of Light"' and rows[0]["sitelinks"] == "200"
    assert [(e.name, e.type) for e in read_entities(out)][:3] == [("Paris", "place"), ("World War II", "event"),
                                                                   ("Google", "organisation")]
    # stdin: an uncompressed stream, as from `lbzip2 -dc latest-all.json.bz2 |`
    res = subprocess.run([*ultrachat_exe, "entities", "build", "-", "--top", "4", "--out", str(tmp_path / "s.csv"),
                          "--no-progress"], input=bz2.decompress(dump.read_bytes()), capture_output=True,
                         timeout=120)
    assert res.returncode == 0 and (tmp_path / "s.csv").read_bytes() == out.read_bytes()

    res = subprocess.run([*ultrachat_exe, "generate", "entities", "-r", str(fake_recipe_file()), "--entities", str(out),
                          "--dialogues", "12", "--out", str(tmp_path / "gen"), "--no-progress"],
                         capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr
    dialogues = list(iter_jsonl(tmp_path / "gen" / "dialogues.jsonl"))
    assert len(dialogues) == 12
    used = {(d["meta"]["entity"], d["meta"]["entity_type"]) for d in dialogues}
    assert used <= {("Paris", "place"), ("World War II", "event"), ("Google", "organisation"), ("Something odd", "-")}
    assert used  # the planner expands only as many entities as the quotas need

    bad = write_dump(tmp_path / "bad.json.gz", [*ENTITIES[:2], "{broken"])
    res = subprocess.run([*ultrachat_exe, "entities", "build", str(bad), "--out", str(tmp_path / "b.csv"),
                          "--no-progress"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 1 and "bad.json.gz:4: invalid JSON" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "b.csv").exists()
