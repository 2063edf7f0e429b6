"""First contact: the demo's corpus summary, the demo command's errors, --version."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from ultrachat import __version__
from ultrachat.cli import app
from ultrachat.generate.demo import summarize_corpus, summary_table


def _dialogue(i: int, turns: int, truncated: list[int], stop: str) -> dict:
    return {"id": f"d{i}", "data": [f"turn {k}" for k in range(turns)],
            "meta": {"stop_reason": stop, "truncated_turns": truncated,
                     "tokens": {"user": {"prompt": 10, "completion": 5}, "assistant": {"prompt": 20, "completion": 7}}}}


def test_summary_counts_rounds_tokens_and_cut_replies(tmp_path: Path) -> None:
    corpus = tmp_path / "dialogues.jsonl"
    rows = [_dialogue(0, 6, [], "completed"),  # 3 rounds
            _dialogue(1, 4, [3], "completed"),  # 2 rounds, the last reply cut and kept
            _dialogue(2, 2, [], "truncated")]  # 1 round, then a cut reply sampled again, cut again, dropped
    rows[2]["meta"]["regenerations"] = {"truncated": 1}
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    s = summarize_corpus(corpus)
    assert (s.dialogues, s.rounds, s.tokens) == (3, 6, 3 * 42)
    assert (s.cut_kept, s.cut_dropped, s.answers) == (1, 2, 8)
    assert abs(s.avg_rounds - 2.0) < 1e-9 and abs(s.cut_share - 3 / 8) < 1e-9
    rendered = " ".join(str(c) for col in summary_table(corpus, 12.0, 3).columns for c in col._cells)
    assert str(corpus) in rendered and "ultrachat show" in rendered and "1 kept in the corpus" in rendered


def test_demo_without_its_recipe_is_a_one_line_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["demo", "--recipe", str(tmp_path / "nope.toml"), "--out", str(tmp_path)])
    assert result.exit_code != 0 and "nope.toml: no such recipe" in result.output
    assert "Traceback" not in result.output


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"ultrachat {__version__}"
