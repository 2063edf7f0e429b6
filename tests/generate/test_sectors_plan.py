"""Sectors 1b (entities), 2 (writing) and 3 (materials) with the fake backend: quotas,
planning, ids, input files and their errors."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ultrachat.backends.fake import FakeBackend
from ultrachat.core.corpus import InvalidLine, iter_jsonl
from ultrachat.generate.engine import DialogueEngine, Role
from ultrachat.generate.entities import clean_items, house_quotas, read_entities
from ultrachat.generate.materials import MaterialsSector, select_passages
from ultrachat.generate.runner import build_sector, generate
from ultrachat.generate.writing import is_expanded
from ultrachat.recipe import MaterialsConfig, RecipeError, load_recipe


def run(sector: str, recipe_file: Path, out: Path, **overrides) -> tuple[list[dict], object]:
    rec = load_recipe(recipe_file, {"out": str(out), **overrides})
    summary = generate(sector, rec, progress=False)
    return list(iter_jsonl(out / "dialogues.jsonl")), summary


# -- quotas ------------------------------------------------------------------------------
def test_house_quotas_follow_ratio_and_never_shrink():
    ratio = {"specific": 200_000, "general": 250_000, "meta": 50_000}
    assert house_quotas(5000, ratio) == {"specific": 2000, "general": 2500, "meta": 500}
    assert house_quotas(1000, ratio) == {"specific": 400, "general": 500, "meta": 100}
    prev = dict.fromkeys(ratio, 0)
    for n in range(60):
        cur = house_quotas(n, ratio)
        assert sum(cur.values()) == n and all(cur[k] >= prev[k] for k in ratio)
        prev = cur
    assert house_quotas(7, {"a": 1, "b": 0}) == {"a": 7, "b": 0}


def test_expanded_share_is_exact_on_every_prefix():
    for share in (0.0, 0.3, 0.8, 1.0):
        for n in (1, 7, 20, 101):
            assert sum(is_expanded(i, share) for i in range(n)) == int(n * share + 1e-9)


def test_clean_items_keeps_questions_in_english_and_chinese():
    items = ["What is the capital of France?", "Paris", "Why?", "巴黎为什么被称为光之城？", "巴黎。",
             "Q: How tall is it?", "How to climb Mount Fuji.", "The best way to visit.", "富士山有多高"]
    assert clean_items(items, question=True) == ["What is the capital of France?", "巴黎为什么被称为光之城？",
                                                  "How tall is it?", "How to climb Mount Fuji?", "富士山有多高？"]
    assert clean_items(["Write a poem about rain", "ok", "写一首关于雨的诗"], question=False) == [
        "Write a poem about rain", "写一首关于雨的诗"]


# -- entities ----------------------------------------------------------------------------
def test_entities_quota_sampling_ids_and_extension(tmp_path, fake_recipe_file):
    recipe = fake_recipe_file()
    out = tmp_path / "ent"
    first, summary = run("entities", recipe, out, dialogues=20)
    kinds = Counter(d["meta"]["kind"] for d in first)
    assert kinds == Counter({"specific": 8, "general": 10, "meta": 2})
    assert summary.distribution["kind"] == kinds
    for d in first:
        assert d["id"] == f"entities-s0-{d['meta']['kind']}-{int(d['id'].rsplit('-', 1)[1]):06d}"
        assert d["meta"]["sector"] == "entities" and d["meta"]["entity"]
        if d["meta"]["kind"] != "meta":
            assert d["meta"]["meta_question"]
    assert len({d["data"][0] for d in first}) == 20  # no opening line twice
    # A larger run keeps every earlier dialogue and id, and only adds.
    second, summary2 = run("entities", recipe, out, dialogues=50)
    assert summary2.already_done == 20 and summary2.stats.dialogues == 30
    ids = [d["id"] for d in second]
    assert len(ids) == len(set(ids)) == 50
    assert [d["id"] for d in second[:20]] == [d["id"] for d in first]
    assert Counter(d["meta"]["kind"] for d in second) == Counter(house_quotas(50, {"specific": 4, "general": 5,
                                                                                   "meta": 1}))


def test_entities_same_seed_same_plan_other_seed_other_ids(tmp_path, fake_recipe_file):
    recipe = fake_recipe_file()
    a, _ = run("entities", recipe, tmp_path / "a", dialogues=6)
    b, _ = run("entities", recipe, tmp_path / "b", dialogues=6)
    c, _ = run("entities", recipe, tmp_path / "c", dialogues=6, seed=3)
    key = sorted((d["id"], d["data"][0]) for d in a)
    assert key == sorted((d["id"], d["data"][0]) for d in b)
    assert all(d["id"].startswith("entities-s3-") for d in c)


def test_entity_files_txt_csv_jsonl(tmp_path):
    (tmp_path / "e.txt").write_text("# comment\nAda Lovelace\n\nMount Fuji\n", encoding="utf-8")
    (tmp_path / "e.csv").write_text("Name,Type,Description\nAda Lovelace,person,first programmer\nNile,place,\n",
                                    encoding="utf-8")
    (tmp_path / "e.jsonl").write_text('{"name": "CERN", "type": "organisation"}\n"Jazz"\n', encoding="utf-8")
    assert [e.name for e in read_entities(tmp_path / "e.txt")] == ["Ada Lovelace", "Mount Fuji"]
    csv_rows = read_entities(tmp_path / "e.csv")
    assert (csv_rows[0].name, csv_rows[0].type, csv_rows[0].description) == ("Ada Lovelace", "person",
                                                                              "first programmer")
    assert [(e.name, e.type) for e in read_entities(tmp_path / "e.jsonl")] == [("CERN", "organisation"), ("Jazz", "")]


@pytest.mark.parametrize(("name", "content", "where"), [
    ("bad.csv", "title,type\nx,y\n", "bad.csv:1: the CSV header needs a 'name' column"),
    ("bad2.csv", "name,type\nAda,person\n,place\n", "bad2.csv:3: no entity name"),
    ("bad.jsonl", '{"name": "a"}\n\n{"name": \n', "bad.jsonl:3: invalid JSON"),
    ("bad2.jsonl", '{"name": "a"}\n{"type": "place"}\n', "bad2.jsonl:2: no entity name"),
    ("empty.txt", "# nothing\n", "empty.txt:1: no entities"),
])
def test_entity_file_errors_name_file_and_line(tmp_path, fake_recipe_file, name, content, where):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InvalidLine, match=where.replace(".", r"\.")):
        run("entities", fake_recipe_file(), tmp_path / "out", dialogues=2, **{"entities.entities_file": str(path)})


def test_entities_use_the_entity_file_and_its_details(tmp_path, fake_recipe_file):
    path = tmp_path / "e.csv"
    path.write_text("name,type,description\nZanzibar,place,an island off East Africa\n", encoding="utf-8")
    dialogues, _ = run("entities", fake_recipe_file(), tmp_path / "out", dialogues=3,
                       **{"entities.entities_file": str(path)})
    assert {d["meta"]["entity"] for d in dialogues} == {"Zanzibar"}
    calls = [json.loads(line) for line in (tmp_path / "out" / "plan" / "calls.jsonl").open()]
    assert {c["stage"] for c in calls} >= {"meta", "specific", "general"}


def test_recipe_rejects_bad_sector_settings():
    with pytest.raises(RecipeError, match=r"entities\.ratio"):
        load_recipe(overrides={"entities.ratio": {"specific": 0, "general": 0, "meta": 0}})
    with pytest.raises(RecipeError, match=r"materials\.tasks"):
        load_recipe(overrides={"materials.tasks": ["poetry"]})
    with pytest.raises(RecipeError, match=r"writing\.expand_share"):
        load_recipe(overrides={"writing.expand_share": 1.5})


# -- writing -----------------------------------------------------------------------------
def test_writing_types_share_and_ids(tmp_path, fake_recipe_file):
    dialogues, summary = run("writing", fake_recipe_file(), tmp_path / "w", dialogues=45)
    types = Counter(d["meta"]["writing_type"] for d in dialogues)
    assert len(types) == 20 and set(types.values()) == {2, 3}  # 45 spread evenly over the 20 types
    assert sum(d["meta"]["expanded"] for d in dialogues) == 36  # 80% of 45
    assert summary.distribution["writing_type"] == types
    for d in dialogues:
        assert d["meta"]["instruction"] and 2 <= d["meta"]["rounds"] <= 4
        assert (d["data"][0] != d["meta"]["instruction"]) == d["meta"]["expanded"]
    assert len({d["id"] for d in dialogues}) == 45


def test_writing_cap_limits_the_type_and_never_reuses_an_instruction(tmp_path, fake_recipe_file):
    dialogues, summary = run("writing", fake_recipe_file(), tmp_path / "w", dialogues=6,
                             **{"writing.types": ["Poems"], "writing.instructions_per_type": 2,
                                "writing.instructions_per_request": 2, "writing.expand_share": 0.0})
    assert len(dialogues) == 2
    assert len({d["meta"]["instruction"] for d in dialogues}) == 2
    assert any("only 2 distinct opening lines" in note for note in summary.notes)


async def test_writing_goal_reaches_the_user_simulator_on_every_turn(fake_recipe_file):
    rec = load_recipe(fake_recipe_file(), {"dialogue.min_rounds": 4, "dialogue.max_rounds": 4})
    sector = build_sector("writing", rec)
    user, assistant = FakeBackend(), FakeBackend()
    engine = DialogueEngine(sector, Role(user, rec.models.user), Role(assistant, rec.models.assistant),
                            sector.prompts, rec.dialogue, [])
    opening = sector.make_opening("writing-test", "Write a haiku about autumn rain.",
                                  {"writing_type": "Poems", "instruction": "Write a haiku about autumn rain.",
                                   "k": 0, "type_index": 2, "expanded": False})
    record = await engine.run(opening)
    assert record["meta"]["rounds"] == 4 and len(user.calls) == 3
    for messages in user.calls:
        prompt = messages[-1]["content"]
        assert 'writing (Poems): "Write a haiku about autumn rain."' in prompt
        assert "revision" in prompt and "continuation" in prompt and "variation" in prompt


# -- materials ---------------------------------------------------------------------------
def test_materials_templates_tasks_and_openings(tmp_path, fake_recipe_file):
    rec = load_recipe(fake_recipe_file())
    sector = build_sector("materials", rec)
    assert isinstance(sector, MaterialsSector)
    templates = sector.templates()
    assert len(templates) >= 7
    for name, text in templates:
        assert "{text}" in text and ("{instruction}" in text or "{instruction_lc}" in text), name
    dialogues, summary = run("materials", fake_recipe_file(), tmp_path / "m", dialogues=24)
    by_template = Counter(d["meta"]["template"] for d in dialogues)
    by_task = Counter(d["meta"]["task"] for d in dialogues)
    assert len(by_template) == len(templates) and max(by_template.values()) - min(by_template.values()) <= 1
    assert set(by_task) == {"rewriting", "continuation", "summarisation", "inference", "question answering",
                            "translation"} and set(by_task.values()) == {4}
    assert summary.distribution["template"] == by_template
    for d in dialogues:
        m = d["meta"]
        assert d["id"] == f"materials-s0-p{m['passage_index']:06d}-{m['slot']}"
        assert m["passage_head"][:40] in d["data"][0] and m["instruction"][1:] in d["data"][0]
        assert 2 <= m["rounds"] <= 4 and m["slot"] < 5
    assert max(d["meta"]["passage_index"] for d in dialogues) == 4  # 24 dialogues / 5 per passage


def _passage(i: int, extra: str = "") -> str:
    return f"Passage number {i}. " + "This sentence fills the passage with ordinary words. " * 5 + extra


def test_materials_reads_jsonl_parquet_text_with_bounds_and_dedup(tmp_path):
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps({"body": t}) for t in
                                                [_passage(1), "too short", _passage(1), _passage(2)]) + "\n")
    pq.write_table(pa.table({"body": [_passage(3), _passage(2).upper(), _passage(4, "x" * 5000)]}),
                   tmp_path / "b.parquet")
    (tmp_path / "c.txt").write_text(f"{_passage(5)}\n\nshort\nlines\n\n{_passage(6)}\n", encoding="utf-8")
    cfg = MaterialsConfig(files=[str(tmp_path / "a.jsonl"), str(tmp_path / "*.parquet"), str(tmp_path / "c.txt")],
                          text_field="body", min_chars=100, max_chars=1000, order="file")
    got = list(select_passages(cfg, "en", 0))
    # Dropped: the short line, the duplicate of 1, the upper-cased duplicate of 2, the over-long 4;
    # the short paragraph of the text file is joined to the next one.
    assert [p.text.split(".")[0] for p in got] == ["Passage number 1", "Passage number 2", "Passage number 3",
                                                   "Passage number 5", "short lines Passage number 6"]
    assert got[0].source.endswith("a.jsonl:1") and got[2].source.endswith("b.parquet:row 1")
    sampled = list(select_passages(cfg.model_copy(update={"sample_rate": 0.5}), "en", 0))
    assert 0 < len(sampled) < len(got)
    # The hash order takes the same passages, smallest seeded hash first.
    hashed = list(select_passages(cfg.model_copy(update={"order": "hash"}), "en", 0))
    assert sorted(hashed, key=lambda p: p.source) == sorted(got, key=lambda p: p.source) and hashed != got


def test_materials_streams_only_what_it_needs(tmp_path, fake_recipe_file):
    # Line 4 is broken: a run needing 2 passages never reads it; one needing more stops there.
    path = tmp_path / "corpus.jsonl"
    path.write_text("\n".join([json.dumps({"text": _passage(i)}) for i in range(3)] + ["{broken"]) + "\n")
    files = {"materials.files": [str(path)], "materials.instructions_per_passage": 2, "materials.order": "file"}
    dialogues, _ = run("materials", fake_recipe_file(), tmp_path / "m", dialogues=4, **files)
    assert len(dialogues) == 4 and {d["meta"]["passage_index"] for d in dialogues} == {0, 1}
    with pytest.raises(InvalidLine, match=r"corpus\.jsonl:4: invalid JSON"):
        run("materials", fake_recipe_file(), tmp_path / "m2", dialogues=10, **files)


def test_materials_input_errors(tmp_path, fake_recipe_file):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"content": "x"}) + "\n")
    with pytest.raises(InvalidLine, match=r"c\.jsonl:1: no text field 'text'"):
        run("materials", fake_recipe_file(), tmp_path / "m", dialogues=1, **{"materials.files": [str(path)]})
    with pytest.raises(FileNotFoundError, match="no file matches"):
        run("materials", fake_recipe_file(), tmp_path / "m2", dialogues=1,
            **{"materials.files": [str(tmp_path / "missing-*.jsonl")]})


def test_materials_hub_dataset_offline_gives_a_clear_error(tmp_path, fake_recipe_file, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(ValueError, match="cannot stream 'allenai/c4' from the Hugging Face hub"):
        run("materials", fake_recipe_file(), tmp_path / "m", dialogues=1,
            **{"materials.dataset": "allenai/c4", "materials.dataset_config": "en"})
