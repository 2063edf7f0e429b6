"""The one error boundary of the ``ultrachat`` command line: each case a user can hit gives
one line ``error: ...`` naming the file, flag or field and a non-zero exit (1 for a runtime
error, 2 for a bad command line), never a traceback; data is never read as rich markup."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ultrachat.cli import app


def cli(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(app, list(args), env=env)


def one_line_error(res, code: int, *names: str) -> str:
    """Assert ``res`` failed with ``code`` and one ``error:`` line holding every name."""
    assert res.exit_code == code, (res.exit_code, res.output)
    assert isinstance(res.exception, SystemExit), repr(res.exception)  # no exception escaped
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Traceback" not in res.output
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_show_prints_markup_like_ids_and_topics_as_text(tmp_path: Path) -> None:
    row = {"id": "[/x]", "data": ["[bold]hi", "[/]yo"], "meta": {"topic": "[red]"}}
    path = write_jsonl(tmp_path / "d.jsonl", [row])
    res = cli("show", str(path))
    assert res.exit_code == 0, res.output
    assert "[/x]" in res.stdout and "[red]" in res.stdout and "[bold]hi" in res.stdout and "[/]yo" in res.stdout


def test_show_finds_integer_ids(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"id": 7, "data": ["a", "b"]}, {"id": 0, "data": ["zero?", "yes"]}])
    res = cli("show", str(path), "--id", "0")
    assert res.exit_code == 0, res.output
    assert "zero?" in res.stdout and "a" not in res.stdout.replace("Assistant", "")
    one_line_error(cli("show", str(path), "--id", "9"), 1, "d.jsonl", "'9'")


def test_recipe_scalar_where_a_table_belongs_names_the_field(tmp_path: Path) -> None:
    recipe = tmp_path / "r.toml"
    recipe.write_text("dialogue = 3\n", encoding="utf-8")
    line = one_line_error(cli("generate", "world", "-r", str(recipe), "--min-rounds", "2", "--out",
                              str(tmp_path / "o")), 1, "r.toml", "'dialogue'")
    assert "table" in line
    one_line_error(cli("generate", "world", "-r", str(recipe), "--out", str(tmp_path / "o")), 1, "r.toml", "dialogue")
    assert not (tmp_path / "o").exists()


def test_answer_limit_zero_is_refused() -> None:
    res = cli("answer", "--limit", "0", "--backend", "fake")
    assert res.exit_code == 2 and "--limit" in res.output and "Traceback" not in res.output, res.output
    from ultrachat.evaluate.evalset import EvalSetError, load_eval_set

    with pytest.raises(EvalSetError, match="limit must be at least 1"):
        load_eval_set("ultra_eval", limit=0)
    assert len(load_eval_set("ultra_eval", limit=1)) == 1


def test_import_refuses_an_existing_output_unless_overwrite(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "data": ["q", "r"]}])
    out = tmp_path / "out.jsonl"
    out.write_text("keep me\n", encoding="utf-8")
    one_line_error(cli("import", str(src), "-o", str(out), "--no-progress"), 1, "out.jsonl", "--overwrite")
    assert out.read_text() == "keep me\n"
    res = cli("import", str(src), "-o", str(out), "--no-progress", "--overwrite")
    assert res.exit_code == 0, res.output
    assert [json.loads(ln)["id"] for ln in out.read_text().splitlines()] == ["a"]


@pytest.mark.parametrize("content", ["", "{", "[]", "{}", "\xff"])
def test_damaged_run_json_names_the_file(tmp_path: Path, fake_recipe_file, content: str) -> None:
    out = tmp_path / "o"
    out.mkdir()
    (out / "run.json").write_bytes(content.encode("latin-1"))
    line = one_line_error(cli("generate", "world", "-r", str(fake_recipe_file()), "--dialogues", "1", "--out",
                              str(out), "--no-progress"), 1, str(out / "run.json"))
    assert "damaged" in line


@pytest.mark.parametrize("content", ["", "{", '{"runs": [{"x": 1}]}'])
def test_damaged_report_json_names_the_file(tmp_path: Path, fake_recipe_file, content: str) -> None:
    out = tmp_path / "o"
    args = ["generate", "world", "-r", str(fake_recipe_file()), "--dialogues", "2", "--out", str(out), "--no-progress"]
    assert cli(*args).exit_code == 0
    (out / "report.json").write_text(content, encoding="utf-8")
    one_line_error(cli(*args), 1, str(out / "report.json"))


def test_damaged_plan_cache_line_names_file_and_line(tmp_path: Path, fake_recipe_file) -> None:
    out = tmp_path / "o"
    args = ["generate", "world", "-r", str(fake_recipe_file()), "--dialogues", "2", "--out", str(out), "--no-progress"]
    assert cli(*args).exit_code == 0
    calls = out / "plan" / "calls.jsonl"
    lines = calls.read_text(encoding="utf-8").splitlines(keepends=True)
    calls.write_text(lines[0] + "not json\n" + "".join(lines[1:]), encoding="utf-8")
    for done in ("dialogues.jsonl", "plan/openings.jsonl", "plan/emissions.jsonl"):
        (out / done).unlink()  # so the run needs its cached planning calls again
    one_line_error(cli(*args), 1, f"{calls}:2")


def test_unexpected_error_is_one_line_with_the_traceback_saved(tmp_path: Path, monkeypatch) -> None:
    import ultrachat.data.show as show

    def boom(*_a, **_k):
        raise KeyError("surprise")

    monkeypatch.setattr(show, "show_dialogues", boom)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    path = write_jsonl(tmp_path / "d.jsonl", [{"id": "a", "data": ["q", "r"]}])
    line = one_line_error(cli("show", str(path)), 1, "internal error", "KeyError", "ULTRACHAT_DEBUG")
    saved = list(tmp_path.glob("ultrachat-error-*.txt"))
    assert len(saved) == 1 and str(saved[0]) in line
    assert "Traceback" in saved[0].read_text() and "surprise" in saved[0].read_text()
    res = cli("show", str(path), env={"ULTRACHAT_DEBUG": "1"})  # the traceback itself, for developers
    assert isinstance(res.exception, KeyError)


def test_usage_errors_exit_2_and_runtime_errors_exit_1(tmp_path: Path) -> None:
    res = cli("show", str(tmp_path / "x.jsonl"), "--no-such-flag")
    assert res.exit_code == 2 and "No such option" in res.output
    one_line_error(cli("dedup", str(tmp_path / "x.jsonl"), "--out", str(tmp_path / "o"), "--scope", "line"), 2,
                   "--scope")
    one_line_error(cli("dedup", str(tmp_path / "x.jsonl"), "--out", str(tmp_path / "o")), 1, "x.jsonl")


def test_real_process_prints_no_traceback(tmp_path: Path, ultrachat_exe: list[str]) -> None:
    """The same boundary in a real process (``python -m ultrachat.cli``)."""
    path = write_jsonl(tmp_path / "d.jsonl", [{"id": "[/x]", "data": ["q", "r"]}])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "data": ["q", "r"]}\n{"id": 1, "data": [}\n', encoding="utf-8")
    env = {**os.environ, "COLUMNS": "200"}
    ok = subprocess.run([*ultrachat_exe, "show", str(path)], capture_output=True, text=True, env=env)
    assert ok.returncode == 0 and "[/x]" in ok.stdout, ok.stderr
    res = subprocess.run([*ultrachat_exe, "show", str(bad), "--n", "2"], capture_output=True, text=True, env=env)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("error: ") and "bad.jsonl:2" in res.stderr


def test_paths_and_values_print_as_text(tmp_path: Path, fake_recipe_file) -> None:
    """Paths with brackets stay as typed in summaries, tables and errors."""
    src = write_jsonl(tmp_path / "[b]in.jsonl", [{"id": "[/x]", "data": ["q one two", "r"]}])
    res = cli("dedup", str(src), "--out", str(tmp_path / "[red]o"), "--no-progress")
    assert res.exit_code == 0 and "[red]o" in res.stdout, res.output
    out = tmp_path / "[bold]run"
    res = cli("generate", "world", "-r", str(fake_recipe_file()), "--dialogues", "1", "--out", str(out),
              "--no-progress", env={"COLUMNS": "400"})
    assert res.exit_code == 0 and str(out) in res.stdout, res.output
    one_line_error(cli("show", str(tmp_path / "[/x].jsonl")), 1, "[/x].jsonl")


def test_finished_outputs_are_refused_unless_overwrite(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": str(i), "data": [f"question {i} here", "answer"]}
                                              for i in range(6)])
    for args in (["filter", str(src), "--out"], ["dedup", str(src), "--out"], ["split-long", str(src), "--out"],
                 ["export", str(src), "-f", "parquet", "--out"], ["export", str(src), "-f", "openai", "--out"]):
        out = tmp_path / f"{args[0]}-{len(args)}"
        if args[-2:] == ["openai", "--out"]:
            out = out.with_suffix(".jsonl")
        first = cli(*args, str(out), "--no-progress")
        assert first.exit_code == 0, first.output
        before = {p: p.read_bytes() for p in ([out] if out.is_file() else sorted(out.rglob("*")))
                  if p.is_file()}
        one_line_error(cli(*args, str(out), "--no-progress"), 1, out.name, "--overwrite")
        assert {p: p.read_bytes() for p in before} == before  # untouched
        again = cli(*args, str(out), "--no-progress", "--overwrite")
        assert again.exit_code == 0, again.output
    assert not list(tmp_path.glob(".*part*")) and not list(tmp_path.glob(".*old*"))  # nothing left behind


def test_a_failed_export_publishes_nothing(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text('{"id": "a", "data": ["q", "r"]}\n{"id": "b", "data": [}\n', encoding="utf-8")
    for fmt in ("parquet", "hf", "sharegpt"):
        out = tmp_path / f"o-{fmt}"
        one_line_error(cli("export", str(src), "-f", fmt, "--out", str(out), "--no-progress"), 1, "in.jsonl:2")
        assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]  # no temporary folder left


def test_sigkilled_parquet_export_leaves_no_partial_output(tmp_path: Path, ultrachat_exe: list[str]) -> None:
    import random
    import signal
    import time

    import pyarrow.parquet as pq

    src = write_jsonl(tmp_path / "in.jsonl", [{"id": str(i), "data": [f"question {i} " * 20, "answer " * 50]}
                                              for i in range(20_000)])
    seed = int(os.environ.get("KILL_SEED") or random.randrange(2**32))
    print(f"KILL_SEED={seed}")
    rng = random.Random(seed)
    seen = {"absent": 0, "complete": 0}
    for i in range(3):
        out = tmp_path / f"o{i}"
        proc = subprocess.Popen([*ultrachat_exe, "export", str(src), "-f", "parquet", "--out", str(out),
                                 "--no-progress"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # Once the export is under way (its staging folder exists), a random moment later.
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob(f".o{i}.part-*")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(rng.uniform(0.0, 0.2))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if out.exists():  # then it is whole: every row, readable
            rows = sum(pq.ParquetFile(f).metadata.num_rows for f in (out / "data").glob("*.parquet"))
            assert rows == 20_000 and (out / "README.md").exists(), f"KILL_SEED={seed}"
            seen["complete"] += 1
        else:
            seen["absent"] += 1
    assert seen["absent"] >= 1, (seen, f"KILL_SEED={seed}")  # at least one kill landed mid-export


BAD_INPUTS = {
    "bytes": b'{"id": "a", "data": ["q", "r"]}\n{"id": "b", "data": ["caf\xe9", "r"]}\n',
    "json": b'{"id": "a", "data": ["q", "r"]}\n{"id": "b", "data": [}\n',
    "schema": b'{"id": "a", "data": ["q", "r"]}\n{"id": [1], "data": ["q", "r"]}\n',
}


@pytest.mark.parametrize("kind", sorted(BAD_INPUTS))
@pytest.mark.parametrize("command", [["filter"], ["dedup"], ["split-long", "--tokenizer", "whitespace"],
                                     ["export", "-f", "parquet"], ["decontaminate", "--against", "builtin"]])
def test_bad_lines_name_file_and_line_or_go_to_invalid(tmp_path: Path, kind: str, command: list[str]) -> None:
    """Bytes, JSON and schema errors: one line naming file:line; --skip-invalid moves the line aside."""
    src = tmp_path / "in.jsonl"
    src.write_bytes(BAD_INPUTS[kind])
    out = tmp_path / "o"
    one_line_error(cli(command[0], str(src), *command[1:], "--out", str(out), "--no-progress"), 1, "in.jsonl:2")
    assert not out.exists()  # a failed run leaves nothing: the same command can simply run again
    res = cli(command[0], str(src), *command[1:], "--out", str(out), "--no-progress", "--skip-invalid")
    assert res.exit_code == 0, res.output
    invalid = out.parent / "o.invalid" / "invalid.jsonl" if command[0] == "export" else out / "invalid.jsonl"
    rows = [json.loads(ln) for ln in invalid.read_text(encoding="utf-8").splitlines()]
    assert [(r["line"], r["file"]) for r in rows] == [(2, str(src))], rows


def test_empty_input_says_so(tmp_path: Path) -> None:
    src = tmp_path / "empty.jsonl"
    src.write_text("\n  \n", encoding="utf-8")
    for command in (["filter"], ["dedup"], ["export", "-f", "openai"]):
        out = tmp_path / f"o-{command[0]}"
        one_line_error(cli(command[0], str(src), *command[1:], "--out", str(out), "--no-progress"), 1,
                       "empty.jsonl", "empty input")
