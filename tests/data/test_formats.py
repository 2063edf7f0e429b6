"""export/import round trips, loading with datasets and TRL, released-file import, split-long."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ultrachat.cli import app
from ultrachat.data.formats import _total, export_corpus, import_corpus
from ultrachat.data.split import ROUND_TEMPLATE, plan_pieces, split_long

DIALOGUES = [
    {"id": "w-1", "data": ["What is a tide?", "The periodic rise and fall of the sea.", "Why twice a day?",
                           "Earth rotates through two tidal bulges."],
     "meta": {"sector": "world", "topic": "Nature", "rounds": 2, "nested": {"a": [1, 2.5, None]}}},
    {"id": "w-2", "data": ["Écris un haïku 🌊", "Vagues sur la grève\nle sel garde la mémoire\ndu vent de la nuit"]},
    {"id": "w-3", "data": ["Explain \"quotes\" and\ttabs", "Sure: `code`, \\ backslash, </s> tokens."],
     "meta": {}},
] + [{"id": f"n-{i}", "data": [f"Question {i}?", f"Answer {i}."], "meta": {"i": i}} for i in range(20)]


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in DIALOGUES), encoding="utf-8")
    return path


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("fmt,name", [("hf", "ds"), ("parquet", "pq"), ("sharegpt", "s.json"), ("openai", "o.jsonl")])
def test_round_trip_is_byte_identical(corpus: Path, tmp_path: Path, fmt: str, name: str) -> None:
    export_corpus(corpus, fmt, tmp_path / name, progress=False)
    report = import_corpus(tmp_path / name, tmp_path / "back.jsonl", progress=False)
    assert report["format"] == fmt and report["dialogues"] == len(DIALOGUES)
    assert (tmp_path / "back.jsonl").read_bytes() == corpus.read_bytes()
    # The progress bar's total, known before reading except for a ShareGPT JSON array.
    assert _total(tmp_path / name, fmt) == (None if fmt == "sharegpt" else len(DIALOGUES))


def test_hf_splits_load_and_round_trip(corpus: Path, tmp_path: Path) -> None:
    import datasets

    report = export_corpus(corpus, "hf", tmp_path / "ds", test_fraction=0.3, splits=("train_sft", "test_sft"),
                           progress=False)
    ds = datasets.load_from_disk(str(tmp_path / "ds"))
    assert set(ds) == {"train_sft", "test_sft"} and ds["test_sft"].num_rows == report["splits"]["test_sft"] > 0
    row = ds["train_sft"][0]
    assert set(ds["train_sft"].column_names) == {"prompt", "prompt_id", "messages", "id", "meta"}
    assert row["messages"][0] == {"role": "user", "content": row["prompt"]} and len(row["prompt_id"]) == 64
    import_corpus(tmp_path / "ds", tmp_path / "back.jsonl", progress=False)
    assert sorted(read(tmp_path / "back.jsonl"), key=lambda d: d["id"]) == sorted(DIALOGUES, key=lambda d: d["id"])
    # The split of a dialogue depends only on its id and the seed.
    again = export_corpus(corpus, "parquet", tmp_path / "pq", test_fraction=0.3, progress=False)
    assert again["splits"] == {"train": report["splits"]["train_sft"], "test": report["splits"]["test_sft"]}
    loaded = datasets.load_dataset(str(tmp_path / "pq"))
    assert {s: loaded[s].num_rows for s in loaded} == again["splits"]


def _trl_sft(dataset, tok, tmp_path: Path):
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl import SFTConfig, SFTTrainer

    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2))
    args = SFTConfig(output_dir=str(tmp_path / "trl"), max_length=128, report_to=[], use_cpu=True, bf16=False)
    return SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tok)


@pytest.mark.parametrize("fmt,layout", [("parquet", "200k"), ("hf", "trl")])
def test_trl_sft_takes_the_export_unchanged(corpus: Path, tmp_path: Path, embedded_model_dir: Path, fmt: str,
                                           layout: str) -> None:
    """TRL's SFTTrainer applies the embedded tokenizer's chat template to ``messages`` as exported:
    the Parquet export's ``messages`` config (200k columns by default) and the hf ``trl`` layout."""
    import datasets
    from transformers import AutoTokenizer

    out = tmp_path / "ds"
    export_corpus(corpus, fmt, out, test_fraction=0.2, layout=layout, progress=False)
    ds = datasets.load_dataset(str(out), "messages") if fmt == "parquet" else datasets.load_from_disk(str(out))
    tok = AutoTokenizer.from_pretrained(str(embedded_model_dir))
    trainer = _trl_sft(ds["train"], tok, tmp_path)
    assert trainer.train_dataset.num_rows == ds["train"].num_rows
    first = trainer.train_dataset[0]
    expected = tok.apply_chat_template(ds["train"][0]["messages"], tokenize=False)
    assert tok.decode(first["input_ids"]) == expected
    if fmt == "parquet":  # why the config exists: with the prompt column TRL takes rows for prompt-completion
        assert "prompt" in datasets.load_dataset(str(out))["train"].column_names
        with pytest.raises(KeyError, match="completion"):
            _trl_sft(datasets.load_dataset(str(out))["train"], tok, tmp_path)


def test_import_released_and_foreign_files(tmp_path: Path) -> None:
    released = tmp_path / "ultrachat_release.jsonl"
    released.write_text('{"id": 0, "data": ["Hi, what is rain?", "Water falling from clouds."]}\n')
    import_corpus(released, tmp_path / "a.jsonl", progress=False)
    assert read(tmp_path / "a.jsonl") == [{"id": "0", "data": ["Hi, what is rain?", "Water falling from clouds."]}]

    share = tmp_path / "share.json"
    good = [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Hi"},
            {"from": "gpt", "value": "Hello"}]
    bad = [{"from": "gpt", "value": "I start"}]
    share.write_text(json.dumps([{"conversations": good}, {"id": "bad", "conversations": bad}], indent=2))
    with pytest.raises(ValueError, match=r"share.json\[1\]: turn 0 is from 'assistant'"):
        import_corpus(share, tmp_path / "b.jsonl", progress=False)
    report = import_corpus(share, tmp_path / "c.jsonl", skip_invalid=True, progress=False)
    assert report["dialogues"] == 1 and report["invalid"] == 1
    assert read(tmp_path / "c.jsonl")[0]["meta"] == {"system": "Be brief."}
    assert read(tmp_path / "c.invalid.jsonl")[0]["where"].endswith("share.json[1]")

    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "u200k" / "data").mkdir(parents=True)  # the UltraChat 200k layout: no id or meta columns
    messages = [[{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]]
    pq.write_table(pa.table({"prompt": ["Hi?"], "prompt_id": ["abc"], "messages": messages}),
                   tmp_path / "u200k" / "data" / "test_sft-00000-of-00001.parquet")
    import_corpus(tmp_path / "u200k", tmp_path / "d.jsonl", progress=False)
    expected = {"id": "abc", "data": ["Hi?", "Hello."], "meta": {"source_split": "test_sft"}}
    assert read(tmp_path / "d.jsonl") == [expected]


def test_export_refuses_existing_output_and_cli_round_trip(corpus: Path, tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("keep me")
    runner = CliRunner()
    res = runner.invoke(app, ["export", str(corpus), "--format", "parquet", "--out", str(tmp_path / "taken")])
    assert res.exit_code == 1 and "already exists" in res.output
    assert (tmp_path / "taken" / "x").read_text() == "keep me"
    res = runner.invoke(app, ["export", str(corpus), "-f", "openai", "-o", str(tmp_path / "o.jsonl"), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert f"exported {len(DIALOGUES)} dialogues" in res.output
    assert set(read(tmp_path / "o.jsonl")[0]) == {"messages"}  # upload-ready: ids and meta live in the sidecar
    res = runner.invoke(app, ["import", str(tmp_path / "o.jsonl"), "-o", str(tmp_path / "back.jsonl"), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert read(tmp_path / "back.jsonl") == DIALOGUES


def test_parquet_rows_hold_one_batch_not_the_file(tmp_path: Path) -> None:
    """Arrow memory while streaming a 24-row-group file stays near one row group's size
    (pyarrow's default pre-buffering keeps every row group read so far: ~24x)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ultrachat.core.corpus import parquet_rows

    path = tmp_path / "big.parquet"
    text = "x" * 4000
    with pq.ParquetWriter(path, pa.schema([("t", pa.string())]), compression="none") as writer:
        for g in range(24):
            writer.write_table(pa.table({"t": [f"{g}-{i}{text}" for i in range(250)]}))  # ~1 MB a row group
    start, peak, last = pa.total_allocated_bytes(), 0, []
    for where, rec in parquet_rows(path, batch_size=250):
        last = [where, rec["t"][:6]]
        peak = max(peak, pa.total_allocated_bytes() - start)
    assert last == [f"{path}[5999]", "23-249"]
    assert peak < 6 * 2**20, f"{peak / 2**20:.1f} MiB of Arrow memory held"


def test_plan_pieces_respects_round_boundaries() -> None:
    assert plan_pieces([500, 600, 700, 800], 2048) == [(0, 3), (3, 4)]
    assert plan_pieces([3000, 10], 2048) == [(0, 1), (1, 2)]
    assert plan_pieces([10, 10], 2048) == [(0, 2)]


def test_split_long_with_embedded_tokenizer(tmp_path: Path, embedded_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    long_answer = " ".join(f"Point {i} explains one more detail of the topic." for i in range(12))
    d = {"id": "long", "data": [x for i in range(6) for x in (f"Question {i}: tell me more?", long_answer)],
         "meta": {"topic": "t"}}
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps(d) + "\n" + json.dumps({"id": "short", "data": ["Hi?", "Hello."]}) + "\n")
    report = split_long(src, tmp_path / "out", max_tokens=400, progress=False)
    pieces = read(tmp_path / "out" / "split.jsonl")
    assert report["split"] == 1 and report["pieces"] == len(pieces) and pieces[-1]["id"] == "short"
    long_pieces = pieces[:-1]
    assert len(long_pieces) >= 2 and [x for p in long_pieces for x in p["data"]] == d["data"]
    tok = AutoTokenizer.from_pretrained(str(embedded_model_dir))
    for k, p in enumerate(long_pieces):
        assert p["id"] == f"long_{k}" and len(p["data"]) % 2 == 0 and p["meta"]["topic"] == "t"
        assert p["meta"]["split"]["of"] == "long" and p["meta"]["split"]["parts"] == len(long_pieces)
        rendered = "".join(ROUND_TEMPLATE.format(user=p["data"][i], assistant=p["data"][i + 1])
                           for i in range(0, len(p["data"]), 2))
        assert len(tok(rendered, add_special_tokens=False)["input_ids"]) + 1 <= 400
    tight = split_long(src, tmp_path / "tight", max_tokens=60, progress=False)
    assert tight["oversize_rounds"] == 6 and len(read(tmp_path / "tight" / "oversize.jsonl")) == 6


def test_export_json_is_one_unwrapped_line(corpus: Path, tmp_path: Path, ultrachat_exe: list[str]) -> None:
    """Piped, with a narrow terminal width: the report is still one parseable JSON line."""
    import os
    import subprocess

    deep = tmp_path / ("a-very-long-folder-name-" * 4) / "export.jsonl"
    deep.parent.mkdir()
    res = subprocess.run([*ultrachat_exe, "export", str(corpus), "-f", "openai", "-o", str(deep), "--no-progress",
                          "--json"], capture_output=True, text=True, env={**os.environ, "COLUMNS": "40"}, timeout=120)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["out"] == str(deep)
