"""End to end with the embedded model (SmolLM2-135M on CPU): one tiny mixed run over the
three new sectors (they run at once, so the micro-batcher batches them together), and a
Chinese run. Outputs are copied to test-artifacts/ for inspection."""

from __future__ import annotations

import json
import re
import shutil

from conftest import ARTIFACTS
from ultrachat.core.corpus import iter_jsonl
from ultrachat.generate.all_sectors import generate_all
from ultrachat.generate.runner import generate
from ultrachat.recipe import load_recipe

CJK = re.compile(r"[\u4e00-\u9fff]")

TINY = {
    "seed": 1, "concurrency": 4,
    "models.user.max_tokens": 32, "models.assistant.max_tokens": 32,
    "models.planner.max_tokens": 96, "models.planner.temperature": 0.7,
    "dialogue.min_rounds": 2, "dialogue.max_rounds": 2, "dialogue.max_regenerations": 1,
}


def test_embedded_mixed_run_of_the_three_new_sectors(tmp_path, embedded_model_dir):
    rec = load_recipe(overrides={
        **TINY, "out": str(tmp_path / "mix"),
        "entities.entities": ["Mount Fuji"], "entities.meta_per_entity": 3, "entities.specific_per_meta": 3,
        "entities.general_per_meta": 3, "entities.max_plan_waves": 3,
        "writing.types": ["Poems"], "writing.instructions_per_request": 3, "writing.expand_share": 1.0,
        "materials.instructions_per_passage": 2, "materials.max_passages": 2,
        "mix.sectors.entities.dialogues": 1, "mix.sectors.writing.dialogues": 1, "mix.sectors.materials.dialogues": 1,
    })
    summary = generate_all(rec, progress=False)
    shutil.copy(tmp_path / "mix" / "all.jsonl", ARTIFACTS / "sectors_embedded_mix.jsonl")
    assert [s.sector for s in summary.sectors] == ["entities", "writing", "materials"]
    merged = list(iter_jsonl(tmp_path / "mix" / "all.jsonl"))
    assert summary.merged_dialogues == len(merged) == 3
    by_sector = {d["meta"]["sector"]: d for d in merged}
    assert set(by_sector) == {"entities", "writing", "materials"}
    for name, d in by_sector.items():
        assert d["id"].startswith(f"{name}-s1-")
        assert len(d["data"]) >= 2 and all(t.strip() for t in d["data"]), d
        assert d["meta"]["models"]["assistant"]["model"] == "smollm2-135m"
    assert by_sector["entities"]["meta"]["entity"] == "Mount Fuji"
    assert by_sector["writing"]["meta"]["writing_type"] == "Poems"
    material = by_sector["materials"]
    assert material["meta"]["passage_head"][:60] in material["data"][0]


def test_embedded_chinese_run(tmp_path, embedded_model_dir):
    """Chinese prompts and a Chinese opening line; what the 135M model writes back is
    recorded (it writes poor Chinese), not asserted."""
    rec = load_recipe(overrides={**TINY, "out": str(tmp_path / "zh"), "language": "zh", "dialogues": 1,
                                 "materials.instructions_per_passage": 2, "materials.max_passages": 2})
    summary = generate("materials", rec, progress=False)
    shutil.copy(tmp_path / "zh" / "dialogues.jsonl", ARTIFACTS / "sectors_embedded_zh.jsonl")
    assert summary.stats.dialogues == 1
    [d] = list(iter_jsonl(tmp_path / "zh" / "dialogues.jsonl"))
    opening = d["data"][0]
    assert d["meta"]["passage_head"][:40] in opening and len(CJK.findall(opening)) > 100
    assert len(d["data"]) >= 2
    # What the model wrote: the share of Chinese characters in each model-written turn.
    written = [d["meta"]["instruction"], *d["data"][1:]]
    shares = [round(len(CJK.findall(t)) / max(1, len(t.replace(" ", ""))), 2) for t in written]
    (ARTIFACTS / "sectors_embedded_zh_cjk_share.json").write_text(json.dumps(
        {"instruction_then_turns": written, "cjk_share": shares}, ensure_ascii=False, indent=1), encoding="utf-8")
