"""The four commands as a user runs them (fake backend: fast; verdicts are unparseable, so
the reports must say so instead of counting them). The first runs the real console entry
point in a subprocess; the rest use Typer's in-process runner to keep the suite fast."""

from __future__ import annotations

import json
import subprocess

import pytest
from click.testing import Result
from typer.testing import CliRunner

from ultrachat.cli import app


def run(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


@pytest.fixture(scope="module")
def answered(tmp_path_factory, ultrachat_exe):
    tmp = tmp_path_factory.mktemp("cli")
    for name, system in (("mine", ""), ("theirs", "Be brief.")):  # the system prompt changes the fake's answers
        args = ["answer", "--per-class", "1", "--backend", "fake", "--model", name, "--system", system,
                "--generator", name, "--max-tokens", "40", "--out", str(tmp / f"{name}.json")]
        if name == "mine":
            res = subprocess.run([*ultrachat_exe, *args], capture_output=True, text=True, timeout=120)
            assert res.returncode == 0, res.stderr
        else:
            res = run(*args)
            assert res.exit_code == 0, res.output
        assert "10 answers (0 from cache" in res.stderr
    return tmp


def test_answer_writes_alpacaeval_json(answered) -> None:
    records = json.loads((answered / "mine.json").read_text())
    assert len(records) == 10
    assert set(records[0]) >= {"instruction", "output", "generator", "dataset"}
    assert records[0]["generator"] == "mine"


def test_pairwise_report_counts_unparseable(answered) -> None:
    out = answered / "pw"
    res = run("eval", "pairwise", str(answered / "mine.json"), "--reference",
              str(answered / "theirs.json"), "--judge-backend", "fake", "--out", str(out))
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    o = report["models"][0]["overall"]
    assert (o["unparseable"], o["judged"], o["win_rate"]) == (10, 0, None)
    assert "Leaderboard vs theirs" in res.stdout and "Vicuna" in res.stdout
    assert (out / "report.png").stat().st_size > 1000 and (out / "report.html").exists()
    lines = (out / "judgments.jsonl").read_text().splitlines()
    assert len(lines) == 20 and all(json.loads(x)["attempts"] == 3 for x in lines)  # 1 try + 2 retries


def test_score_and_best_of_n_commands(answered) -> None:
    res = run("eval", "score", str(answered / "mine.json"), str(answered / "theirs.json"),
              "--judge-backend", "fake", "--out", str(answered / "sc"))
    assert res.exit_code == 0, res.output
    report = json.loads((answered / "sc" / "report.json").read_text())
    assert [m["model"] for m in report["models"]] == ["mine", "theirs"]
    assert report["models"][0]["overall"]["unparseable"] == 10
    res = run("best-of-n", "--n", "2", "--limit", "2", "--backend", "fake", "--judge-backend",
              "fake", "--out", str(answered / "bon"))
    assert res.exit_code == 0, res.output
    assert "best-of-2 (best-of-N vs N=1 head to head)" in res.stderr
    assert len(json.loads((answered / "bon" / "answers-best-of-2.json").read_text())) == 2


def test_mismatched_answer_sets_one_line_error(answered, tmp_path) -> None:
    short = json.loads((answered / "theirs.json").read_text())[:-2]
    (tmp_path / "short.json").write_text(json.dumps(short))
    res = run("eval", "pairwise", str(answered / "mine.json"), "--reference",
              str(tmp_path / "short.json"), "--judge-backend", "fake", "--out", str(tmp_path / "o"))
    assert res.exit_code == 1
    err = " ".join(res.stderr.split())
    assert "short.json lacks 2 prompt(s)" in err and "Traceback" not in res.stderr
    assert not (tmp_path / "o" / "judgments.jsonl").exists()


def test_bad_judge_config_and_missing_file(answered, tmp_path) -> None:
    res = run("eval", "score", str(answered / "mine.json"), "--judge", "pairwise",
              "--judge-backend", "fake", "--out", str(tmp_path / "o"))
    assert res.exit_code == 1 and "needs a judge with kind" in res.stderr
    res = run("answer", str(tmp_path / "nope.json"), "--backend", "fake")
    assert res.exit_code == 1 and "nope.json not found" in res.stderr


def test_answers_and_judge_over_http_endpoint(tmp_path) -> None:
    """A real OpenAI-compatible server process on 127.0.0.1 as the answering model and the judge."""
    import sys

    server = subprocess.Popen([sys.executable, "-m", "ultrachat.testing.mock_openai", "--port", "0"],
                              stdout=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline() if server.stdout else ""
        assert line.startswith("listening on "), line
        url = line.split()[-1]
        res = run("answer", "--limit", "3", "--base-url", url, "--model", "mock", "--out", str(tmp_path / "m.json"))
        assert res.exit_code == 0, res.output
        records = json.loads((tmp_path / "m.json").read_text())
        assert [r["generator"] for r in records] == ["mock"] * 3 and all(r["output"] for r in records)
        res = run("eval", "score", str(tmp_path / "m.json"), "--judge-base-url", url, "--judge-model", "mock",
                  "--out", str(tmp_path / "sc"))
        assert res.exit_code == 0, res.output
        report = json.loads((tmp_path / "sc" / "report.json").read_text())
        assert report["judge"]["base_url"] == url and report["models"][0]["overall"]["n"] == 3
    finally:
        server.terminate()
        server.wait(timeout=10)
