"""Pairwise and score judging with a scripted fake judge: position swap, ties, unparseable
verdicts, caching, resume after a crash, repeats, the coverage check and the reports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import ultrachat.backends as backends
from ultrachat.backends.base import BackendError
from ultrachat.backends.fake import FakeBackend
from ultrachat.evaluate.evalset import EvalSetError
from ultrachat.evaluate.judges import load_judge
from ultrachat.evaluate.pairwise import combine, pairwise_eval
from ultrachat.evaluate.report import leaderboard_rows, write_report
from ultrachat.evaluate.score import score_eval
from ultrachat.recipe import ModelConfig

FAKE_JUDGE = ModelConfig(backend="fake", model="judge")
CLASSES = ["Math", "Writing"]


def section(text: str, name: str) -> str:
    m = re.search(rf"\[The Start of {name}\]\n(.*?)\n\[The End of {name}\]", text, re.S)
    assert m, f"template lost its '{name}' section"
    return m.group(1)


def quality_judge(messages, params) -> str:
    """Prefers the answer containing more 'GOOD'; equal counts are a tie."""
    text = messages[-1]["content"]
    a = section(text, "Assistant A's Answer").count("GOOD")
    b = section(text, "Assistant B's Answer").count("GOOD")
    return "Explanation... [[A]]" if a > b else "Explanation... [[B]]" if b > a else "[[C]]"


def write_answers(path: Path, outputs: list[str], generator: str) -> Path:
    records = [{"instruction": f"Question {i}?", "output": out, "generator": generator, "dataset": "test",
                "class": CLASSES[i % 2]} for i, out in enumerate(outputs)]
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


@pytest.fixture
def judge_backend(monkeypatch):
    """Route ModelConfig(backend='fake') to a scripted FakeBackend; returns a setter for the script."""
    state: dict = {"script": quality_judge, "made": []}

    def make(cfg):
        backend = FakeBackend(script=state["script"], model_name=cfg.model)
        state["made"].append(backend)
        return backend

    monkeypatch.setattr(backends, "make_backend", make)
    return state


def calls(state) -> int:
    return sum(len(b.calls) for b in state["made"])


def test_combine_position_swap() -> None:
    # model is A in the first judgment, B in the second
    assert combine("A", "B") == "win"
    assert combine("B", "A") == "lose"
    assert combine("A", "A") == "tie"  # position bias: always picks the first answer
    assert combine("B", "B") == "tie"
    assert combine("tie", "B") == "tie"
    assert combine(None, "B") == "unparseable"
    assert combine("A", None) == "unparseable"


def test_pairwise_counts_both_orders_and_per_class(tmp_path, judge_backend) -> None:
    mine = write_answers(tmp_path / "mine.json", ["GOOD GOOD", "GOOD", "meh", "GOOD"], "mine")
    ref = write_answers(tmp_path / "ref.json", ["GOOD", "GOOD!", "GOOD", "bad"], "ref")
    report = pairwise_eval([mine], ref, load_judge("pairwise"), FAKE_JUDGE, tmp_path / "out")
    o = report["models"][0]["overall"]
    assert (o["wins"], o["ties"], o["losses"], o["unparseable"]) == (2, 1, 1, 0)
    assert o["win_rate"] == pytest.approx(62.5)
    assert o["win_rate_se"] == pytest.approx(100 * 0.4787 / 2, abs=0.01)  # sample sd / sqrt(n)
    assert report["models"][0]["per_class"]["Math"]["win_rate"] == pytest.approx(50.0)  # win + lose
    assert report["models"][0]["per_class"]["Writing"]["win_rate"] == pytest.approx(75.0)  # tie + win
    assert calls(judge_backend) == 8  # 4 pairs x 2 orders
    # both orders were really asked: each answer appears once as A and once as B
    firsts = {section(m[-1]["content"], "Assistant A's Answer") for b in judge_backend["made"] for m in b.calls}
    assert {"GOOD GOOD", "meh", "bad"} <= firsts


def test_position_biased_judge_gives_only_ties(tmp_path, judge_backend) -> None:
    judge_backend["script"] = lambda m, p: "[[A]]"
    mine = write_answers(tmp_path / "mine.json", ["x", "y", "z"], "mine")
    ref = write_answers(tmp_path / "ref.json", ["p", "q", "r"], "ref")
    o = pairwise_eval([mine], ref, load_judge("pairwise"), FAKE_JUDGE, tmp_path / "o")["models"][0]["overall"]
    assert (o["wins"], o["ties"], o["losses"], o["win_rate"]) == (0, 3, 0, 50.0)


def test_unparseable_retried_then_recorded_not_counted(tmp_path, judge_backend) -> None:
    temperatures: list[float] = []

    def judge(messages, params):  # never gives a verdict on question 1
        if "Question 1?" in messages[-1]["content"]:
            temperatures.append(params.temperature)
            return "I cannot decide."
        return quality_judge(messages, params)

    judge_backend["script"] = judge
    mine = write_answers(tmp_path / "mine.json", ["GOOD", "GOOD", "GOOD"], "mine")
    ref = write_answers(tmp_path / "ref.json", ["", "", ""], "ref")
    cfg = load_judge("pairwise")
    report = pairwise_eval([mine], ref, cfg, FAKE_JUDGE, tmp_path / "o")
    o = report["models"][0]["overall"]
    assert (o["wins"], o["unparseable"], o["judged"], o["win_rate"]) == (2, 1, 2, 100.0)
    assert calls(judge_backend) == 4 + 2 * (1 + cfg.retries)
    lines = [json.loads(x) for x in (tmp_path / "o" / "judgments.jsonl").read_text().splitlines()]
    failed = [x for x in lines if x["verdict"] is None]
    assert len(failed) == 2 and all(x["attempts"] == 1 + cfg.retries for x in failed)
    assert failed[0]["raw"] == ["I cannot decide."] * (1 + cfg.retries)
    # retries sample hotter than the greedy first try
    assert sorted(temperatures) == [0.0, 0.0] + [cfg.retry_temperature] * (2 * cfg.retries)


def test_rerun_is_free_and_resume_after_crash_matches(tmp_path, judge_backend) -> None:
    mine = write_answers(tmp_path / "mine.json", [f"GOOD {i}" * (i % 3) for i in range(12)], "mine")
    ref = write_answers(tmp_path / "ref.json", ["GOOD"] * 12, "ref")
    judge = load_judge("pairwise")
    full = pairwise_eval([mine], ref, judge, FAKE_JUDGE, tmp_path / "clean", concurrency=4)
    assert calls(judge_backend) == 24
    again = pairwise_eval([mine], ref, judge, FAKE_JUDGE, tmp_path / "clean", concurrency=4)
    assert calls(judge_backend) == 24 and again["models"] == full["models"]  # rerun costs nothing

    done = {"n": 0}

    def crashing(messages, params):
        done["n"] += 1
        if done["n"] > 9:
            raise BackendError("endpoint went away")
        return quality_judge(messages, params)

    judge_backend["script"] = crashing
    with pytest.raises(BackendError):
        pairwise_eval([mine], ref, judge, FAKE_JUDGE, tmp_path / "crash", concurrency=4)
    cache = tmp_path / "crash" / "judgments.jsonl"
    kept = len(cache.read_text().splitlines())
    assert 0 < kept <= 9
    with open(cache, "a", encoding="utf-8") as fh:
        fh.write('{"key": "torn')  # a write cut by the crash
    judge_backend["script"] = quality_judge
    before = calls(judge_backend)
    resumed = pairwise_eval([mine], ref, judge, FAKE_JUDGE, tmp_path / "crash", concurrency=4)
    assert calls(judge_backend) - before == 24 - kept
    assert resumed["models"] == full["models"]


def test_repeats_report_median_and_spread(tmp_path, judge_backend) -> None:
    def moody(messages, params):  # the seed (one per repeat) decides who wins
        return ("[[A]]", "[[B]]", "[[C]]")[(params.seed // 101) % 3]

    judge_backend["script"] = moody
    mine = write_answers(tmp_path / "mine.json", ["a", "b"], "mine")
    ref = write_answers(tmp_path / "ref.json", ["c", "d"], "ref")
    report = pairwise_eval([mine], ref, load_judge("pairwise"), FAKE_JUDGE, tmp_path / "o", repeats=3)
    o = report["models"][0]["overall"]
    # a seed-determined verdict is the same in both orders, so every repeat is all ties: 50%
    assert o["runs"] == [50.0, 50.0, 50.0] and o["spread"] == [50.0, 50.0] and o["ties"] == 6

    def by_seed(messages, params):  # repeat 0: model (GOOD) wins, repeat 1: ties, repeat 2: random order bias
        rep = (params.seed // 101)
        return quality_judge(messages, params) if rep == 0 else "[[C]]" if rep == 1 else "[[B]]"

    judge_backend["script"] = by_seed
    mine = write_answers(tmp_path / "m2.json", ["GOOD", "GOOD"], "mine")
    report = pairwise_eval([mine], ref, load_judge("pairwise"), FAKE_JUDGE, tmp_path / "o2", repeats=3)
    o = report["models"][0]["overall"]
    assert o["runs"] == [100.0, 50.0, 50.0]
    assert o["win_rate"] == 50.0 and o["spread"] == [50.0, 100.0] and o["stdev"] > 0
    assert leaderboard_rows(report)[0][-1] == "spread (min-max)"


def test_coverage_check_lists_missing_prompts(tmp_path, judge_backend) -> None:
    mine = write_answers(tmp_path / "mine.json", ["a", "b", "c"], "mine")
    ref = write_answers(tmp_path / "ref.json", ["a", "b"], "ref")
    with pytest.raises(EvalSetError) as err:
        pairwise_eval([mine], ref, load_judge("pairwise"), FAKE_JUDGE, tmp_path / "o")
    assert "ref.json lacks 1 prompt(s) that" in str(err.value) and "'Question 2?'" in str(err.value)
    assert calls(judge_backend) == 0  # checked before judging anything


def test_score_per_class_with_references_for_math(tmp_path, judge_backend) -> None:
    def scorer(messages, params):
        text = messages[-1]["content"]
        return "Rating: [[9]]" if "Reference Answer" in text else "ok. Rating: [[4]]"

    judge_backend["script"] = scorer
    mine = write_answers(tmp_path / "mine.json", ["1", "2", "3", "4"], "mine")
    refs = write_answers(tmp_path / "gpt4.json", ["r1", "r2", "r3", "r4"], "gpt4")
    report = score_eval([mine], load_judge("score"), FAKE_JUDGE, tmp_path / "o", references=refs)
    m = report["models"][0]
    assert m["per_class"]["Math"]["mean"] == 9.0  # graded against the reference
    assert m["per_class"]["Writing"]["mean"] == 4.0
    assert m["overall"]["mean"] == 6.5 and m["overall"]["unparseable"] == 0
    used = {j["class"]: j["used_reference"] for j in report["judgments"]}
    assert used == {"Math": True, "Writing": False}
    no_refs = score_eval([mine], load_judge("score"), FAKE_JUDGE, tmp_path / "o2")
    assert no_refs["models"][0]["overall"]["mean"] == 4.0


def test_reports_written_and_escaped(tmp_path, judge_backend) -> None:
    mine = write_answers(tmp_path / "mine.json", ["GOOD", "x"], "<script>alert(1)</script>")
    ref = write_answers(tmp_path / "ref.json", ["x", "GOOD"], "ref")
    report = pairwise_eval([mine], ref, load_judge("pairwise"), FAKE_JUDGE, tmp_path / "o")
    paths = write_report(report, tmp_path / "o")
    assert json.loads(paths["json"].read_text())["models"][0]["overall"]["win_rate"] == 50.0
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = paths["html"].read_text()
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "data:image/png;base64," in page


def test_report_without_matplotlib_skips_only_the_chart(tmp_path, judge_backend, monkeypatch) -> None:
    import sys

    mine = write_answers(tmp_path / "mine.json", ["GOOD"], "mine")
    ref = write_answers(tmp_path / "ref.json", ["x"], "ref")
    report = pairwise_eval([mine], ref, load_judge("pairwise"), FAKE_JUDGE, tmp_path / "o")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as on a core-only install
    paths = write_report(report, tmp_path / "o")
    assert paths["png"] is None and not (tmp_path / "o" / "report.png").exists()
    assert "matplotlib is not installed" in (tmp_path / "o" / "report.html").read_text()
    assert (tmp_path / "o" / "report.json").exists()


def test_lc_label_only_with_instruction_difficulties(tmp_path, judge_backend) -> None:
    outputs = ["GOOD " * (i % 3) + "x" * (5 * i) for i in range(12)]
    mine = write_answers(tmp_path / "mine.json", outputs, "mine")
    ref = write_answers(tmp_path / "ref.json", ["GOOD"] * 12, "ref")
    plain = pairwise_eval([mine], ref, load_judge("pairwise"), FAKE_JUDGE, tmp_path / "plain")
    header = leaderboard_rows(plain)[0]
    assert "len-adj win %" in header and not any("LC" in h for h in header)
    assert "lc_win_rate" not in plain["models"][0]["overall"]
    assert plain["length_control"]["glm"] == "length_controlled_minimal"

    gamed = tmp_path / "df_gamed.csv"
    gamed.write_text("model,index,preference,std_delta_len,instruction_difficulty,not_gamed_baseline\n" + "".join(
        f"{m},{i},{0.3 + 0.04 * i},{s * (0.5 + i / 10)},{(i - 6) / 4},False\n"
        for m, s in (("verbose", 1), ("concise", -1)) for i in range(12)), encoding="utf-8")
    lc = pairwise_eval([mine], ref, load_judge("pairwise"), FAKE_JUDGE, tmp_path / "lc", lc_gamed=gamed)
    assert "LC win %" in leaderboard_rows(lc)[0]
    assert lc["models"][0]["overall"]["lc_win_rate"] is not None
    assert lc["length_control"]["df_gamed"] == str(gamed)


def test_pairwise_reads_fastchat_answers(tmp_path, judge_backend) -> None:
    bench = tmp_path / "mt_bench"
    (bench / "model_answer").mkdir(parents=True)
    (bench / "question.jsonl").write_text("".join(json.dumps(
        {"question_id": i, "category": CLASSES[i % 2], "turns": [f"Question {i}?", f"Follow-up {i}?"]}) + "\n"
        for i in range(3)))
    for name, outs in (("mine", ["GOOD", "GOOD GOOD", "meh"]), ("ref", ["meh", "GOOD", "GOOD"])):
        (bench / "model_answer" / f"{name}.jsonl").write_text("".join(json.dumps(
            {"question_id": i, "answer_id": f"a{i}", "model_id": name, "choices": [{"index": 0, "turns": ["t1", o]}],
             "tstamp": 0}) + "\n" for i, o in enumerate(outs)))
    report = pairwise_eval([bench / "model_answer" / "mine.jsonl"], bench / "model_answer" / "ref.jsonl",
                           load_judge("pairwise"), FAKE_JUDGE, tmp_path / "out")
    o = report["models"][0]["overall"]
    assert (report["reference"], report["models"][0]["model"]) == ("ref", "mine")
    assert (o["wins"], o["ties"], o["losses"]) == (2, 0, 1)
    seen = [m[-1]["content"] for b in judge_backend["made"] for m in b.calls]
    assert any("[Turn 2] Follow-up 1?" in text for text in seen)  # the judge sees the questions' turns
