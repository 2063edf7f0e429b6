"""Passages from real corpora: C4's gzipped JSONL, compressed files, folders of text files,
``datasets`` save_to_disk folders; unknown inputs are errors; the hash order is a seeded
bottom-k that a larger run extends; ``generate materials --materials``."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import subprocess
from pathlib import Path

import pytest

from ultrachat.core.corpus import InvalidLine, iter_jsonl
from ultrachat.generate.materials import select_passages
from ultrachat.generate.runner import generate
from ultrachat.recipe import MaterialsConfig, load_recipe
from ultrachat.sources.passages import corpus_inputs, read_passages


def _doc(i: int) -> str:
    return f"Document {i} begins here. " + "It holds ordinary sentences about ordinary things. " * 4


def write_c4(path: Path, n: int, start: int = 0) -> Path:
    """A file in C4's shipped format: gzipped JSONL with text, timestamp and url."""
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for i in range(start, start + n):
            fh.write(json.dumps({"text": _doc(i), "timestamp": "2019-04-25T12:57:54Z",
                                 "url": f"https://example.org/{i}"}) + "\n")
    return path


def heads(passages) -> list[str]:
    return [p.text.split(" begins")[0] for p in passages]


def test_c4_json_gz_compressed_jsonl_text_and_folders(tmp_path):
    c4 = write_c4(tmp_path / "c4-train.00000-of-01024.json.gz", 3)
    with bz2.open(tmp_path / "more.jsonl.bz2", "wt", encoding="utf-8") as fh:
        fh.write(json.dumps({"text": _doc(3)}) + "\n\n" + json.dumps({"text": _doc(4)}) + "\n")
    with lzma.open(tmp_path / "notes.txt.xz", "wt", encoding="utf-8") as fh:
        fh.write(_doc(5) + "\n\n" + _doc(6) + "\n")
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "a.txt").write_text(_doc(7) + "\n")
    (docs / "b.md").write_text(_doc(8) + "\n")
    (docs / "sub" / "README").write_text(_doc(9) + "\n")
    (docs / ".DS_Store").write_bytes(b"\x00\x01hidden files are not corpus files")
    inputs = corpus_inputs([str(c4), str(tmp_path / "*.bz2"), str(tmp_path / "notes.txt.xz"), str(docs)])
    assert [p.name for p in inputs] == [c4.name, "more.jsonl.bz2", "notes.txt.xz", "a.txt", "b.md", "README"]
    cfg = MaterialsConfig(files=[str(c4), str(tmp_path / "*.bz2"), str(tmp_path / "notes.txt.xz"), str(docs)],
                          order="file")
    got = list(select_passages(cfg, "en", 0))
    assert heads(got) == [f"Document {i}" for i in range(10)]
    assert got[1].source == f"{c4}:2" and got[4].source.endswith("more.jsonl.bz2:3")
    assert got[6].source.endswith("notes.txt.xz:3") and got[9].source.endswith("README:1")
    assert got[0].text == _doc(0).strip()


def test_saved_dataset_folders(tmp_path):
    from datasets import Dataset, DatasetDict

    ds = Dataset.from_dict({"content": [_doc(i) for i in range(2500)], "id": list(range(2500))})
    ds.save_to_disk(str(tmp_path / "ds"))
    got = list(read_passages(tmp_path / "ds", "content"))
    assert heads(got) == [f"Document {i}" for i in range(2500)]  # several batches of 1024
    assert got[2499].source == f"{tmp_path / 'ds'}:row 2500"
    DatasetDict({"train": ds.select(range(3)), "validation": ds.select(range(5, 7))}).save_to_disk(
        str(tmp_path / "dd"))
    assert heads(read_passages(tmp_path / "dd", "content", split="validation")) == ["Document 5", "Document 6"]
    assert corpus_inputs([str(tmp_path / "d*")]) == [tmp_path / "dd", tmp_path / "ds"]  # taken whole, not walked
    with pytest.raises(InvalidLine, match=r"dd: no split 'test' \(splits: train, validation"):
        list(read_passages(tmp_path / "dd", "content", split="test"))
    with pytest.raises(InvalidLine, match=r"ds: no column 'text' \(columns: content, id"):
        list(read_passages(tmp_path / "ds", "text"))


def test_unknown_and_broken_inputs_are_errors(tmp_path):
    (tmp_path / "paper.pdf").write_bytes(b"%PDF-1.4")
    with pytest.raises(ValueError, match=r"cannot read '.*paper\.pdf' \(known inputs: JSONL"):
        corpus_inputs([str(tmp_path / "paper.pdf")])
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "a.txt").write_text(_doc(1))
    (folder / "archive.zip").write_bytes(b"PK")
    with pytest.raises(ValueError, match=r"cannot read '.*archive\.zip'"):
        corpus_inputs([str(folder)])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"the folder '.*empty' holds no corpus files"):
        corpus_inputs([str(tmp_path / "empty")])
    cut = tmp_path / "cut.json.gz"
    cut.write_bytes(gzip.compress((json.dumps({"text": _doc(1)}) + "\n").encode() * 50)[:-30])
    with pytest.raises(InvalidLine, match=r"cut\.json\.gz: cannot decompress"):
        list(read_passages(cut))
    (tmp_path / "latin1.txt").write_bytes(b"line one\nna\xefve caf\xe9\n")
    with pytest.raises(InvalidLine, match=r"latin1\.txt:\d+: not UTF-8 text"):
        list(read_passages(tmp_path / "latin1.txt"))
    bad = tmp_path / "bad.jsonl.gz"
    bad.write_bytes(gzip.compress(b'{"text": "fine"}\n{"text": \n'))
    with pytest.raises(InvalidLine, match=r"bad\.jsonl\.gz:2: invalid JSON"):
        list(read_passages(bad))


def test_hash_order_is_a_bottom_k_that_a_larger_ask_extends(tmp_path):
    cfg = MaterialsConfig(files=[str(write_c4(tmp_path / "c4.json.gz", 100))])
    full = list(select_passages(cfg, "en", 7, want=1000))
    assert sorted(heads(full)) == sorted(f"Document {i}" for i in range(100))
    assert heads(full) != [f"Document {i}" for i in range(100)]  # not corpus order
    # A small hint reads the corpus again for more: the same sequence, never reshuffled.
    assert list(select_passages(cfg, "en", 7, want=3))[:70] == full[:70]
    assert heads(select_passages(cfg, "en", 8, want=1000))[:10] != heads(full)[:10]  # the seed matters
    # More corpus can only push passages down the ranking, never reorder the rest.
    cfg2 = cfg.model_copy(update={"files": [*cfg.files, str(write_c4(tmp_path / "c4b.json.gz", 100, 100))]})
    both = heads(select_passages(cfg2, "en", 7, want=1000))
    assert [h for h in both if int(h.split()[1]) < 100] == heads(full)


def test_hash_order_is_refused_for_a_hub_dataset():
    from ultrachat.recipe import RecipeError

    assert MaterialsConfig(dataset="allenai/c4").passage_order == "file"
    assert MaterialsConfig().passage_order == "hash"
    with pytest.raises(RecipeError, match="order = 'hash' reads the whole corpus"):
        load_recipe(overrides={"materials.dataset": "allenai/c4", "materials.order": "hash"})


def _run(recipe: Path, out: Path, dialogues: int, files: list[str]) -> list[dict]:
    rec = load_recipe(recipe, {"out": str(out), "dialogues": dialogues, "materials.files": files})
    generate("materials", rec, progress=False)
    return list(iter_jsonl(out / "dialogues.jsonl"))


def _passages_by_index(dialogues: list[dict]) -> list[str]:
    by_index = {d["meta"]["passage_index"]: d["meta"]["source"] for d in dialogues}
    assert sorted(by_index) == list(range(len(by_index)))
    return [by_index[i] for i in range(len(by_index))]


def test_a_larger_run_extends_a_smaller_one_with_the_same_passages(tmp_path, fake_recipe_file):
    files = [str(write_c4(tmp_path / "c4-train.00000-of-01024.json.gz", 60))]
    small = _run(fake_recipe_file(), tmp_path / "small", 20, files)
    large = _run(fake_recipe_file(), tmp_path / "large", 40, files)
    assert len(small) == 20 and len(large) == 40
    small_p, large_p = _passages_by_index(small), _passages_by_index(large)
    assert len(small_p) == 4 and len(large_p) == 8 and large_p[:4] == small_p  # a subset, in order
    lines = [int(s.rsplit(":", 1)[1]) for s in large_p]
    assert lines != sorted(lines) or max(lines) > 8  # drawn from the whole file, not its head
    # Extending the small folder gives the large run's dialogues, earlier ones untouched.
    extended = _run(fake_recipe_file(), tmp_path / "small", 40, files)
    assert extended[:20] == small
    assert {d["id"]: d["data"] for d in extended} == {d["id"]: d["data"] for d in large}


def test_cli_generate_materials_from_c4_and_a_folder(tmp_path, fake_recipe_file, ultrachat_exe):
    c4 = write_c4(tmp_path / "c4-train.00000-of-01024.json.gz", 5)
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(5, 8):
        (docs / f"{i}.txt").write_text(_doc(i))
    out = tmp_path / "out"
    res = subprocess.run([*ultrachat_exe, "generate", "materials", "-r", str(fake_recipe_file()), "--materials",
                          str(c4), "--materials", str(docs), "--dialogues", "40", "--out", str(out),
                          "--no-progress"], capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr
    sources = {d["meta"]["source"].rsplit(":", 1)[0] for d in iter_jsonl(out / "dialogues.jsonl")}
    assert sources == {str(c4), *(str(docs / f"{i}.txt") for i in range(5, 8))}
    (tmp_path / "x.pdf").write_bytes(b"%PDF")
    res = subprocess.run([*ultrachat_exe, "generate", "materials", "-r", str(fake_recipe_file()), "--materials",
                          str(tmp_path / "x.pdf"), "--out", str(tmp_path / "bad")], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 1 and "cannot read" in res.stderr and "Traceback" not in res.stderr


def test_the_corpus_scan_runs_off_the_event_loop():
    import asyncio
    import threading

    from ultrachat.generate.materials import off_loop

    release = threading.Event()
    ticks = 0

    def scan() -> str:
        release.wait(10)  # stands for a long corpus read
        return "done"

    async def main() -> str:
        nonlocal ticks

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                if ticks == 5:
                    release.set()  # the loop ran while the scan was waiting
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        try:
            return await off_loop(scan)
        finally:
            task.cancel()

    assert asyncio.run(main()) == "done" and ticks >= 5

    async def failing() -> None:
        await off_loop(lambda: list(read_passages(Path("missing.jsonl"))))

    with pytest.raises(FileNotFoundError):
        asyncio.run(failing())
