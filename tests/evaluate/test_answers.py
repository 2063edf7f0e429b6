"""Answer generation: input formats, AlpacaEval output, concurrency, caching and resume."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

import ultrachat.backends as backends
from ultrachat.backends.base import BackendError
from ultrachat.backends.fake import FakeBackend
from ultrachat.evaluate.answers import answer_eval_set, cache_path_for
from ultrachat.evaluate.evalset import EvalSetError, load_answers, load_eval_set
from ultrachat.recipe import ModelConfig

FAKE = ModelConfig(backend="fake", model="fake", max_tokens=32)


class CountingBackend(FakeBackend):
    """Fake backend that records how many calls overlap and can fail after N calls."""

    fail_after: int | None = None

    def __init__(self) -> None:
        super().__init__(model_name="fake")
        self.in_flight = 0
        self.max_in_flight = 0
        self.started = 0

    async def complete(self, messages, params):
        self.started += 1
        if self.fail_after is not None and self.started > self.fail_after:
            raise BackendError("model crashed")
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        await asyncio.sleep(0.01)
        try:
            return await super().complete(messages, params)
        finally:
            self.in_flight -= 1


@pytest.fixture
def made(monkeypatch):
    made: list[CountingBackend] = []

    def make(cfg):
        made.append(CountingBackend())
        return made[-1]

    monkeypatch.setattr(backends, "make_backend", make)
    return made


def test_builtin_ultra_eval() -> None:
    items = load_eval_set("ultra_eval")
    assert len(items) == 385
    assert {i.cls for i in items} >= {"Vicuna", "Ability Math", "Professional Knowledge-Biology"}
    assert len({i.id for i in items}) == 385
    small = load_eval_set("ultra_eval", per_class=2)
    assert len(small) == 20 and sum(i.cls == "Writing" for i in small) == 2
    assert len(load_eval_set("ultra_eval", limit=3)) == 3


def test_alpacaeval_and_mtbench_formats(tmp_path) -> None:
    alpaca = tmp_path / "alpaca.json"
    alpaca.write_text(json.dumps([{"instruction": "Name a colour.", "output": "x", "generator": "g",
                                   "dataset": "helpful_base"}]))
    [item] = load_eval_set(alpaca)
    assert item.turns == ["Name a colour."] and item.cls == "helpful_base"
    mt = tmp_path / "mt.jsonl"
    mt.write_text(json.dumps({"question_id": 81, "category": "math", "turns": ["2+2?", "Times 3?"],
                              "reference": ["4", "12"]}) + "\n")
    [item] = load_eval_set(mt)
    assert (item.id, item.turns, item.cls, item.reference) == ("mt-81", ["2+2?", "Times 3?"], "math", "12")


@pytest.mark.parametrize(("content", "message"), [
    ('{"instruction": "x"}', "expected a JSON list"),
    ('[{"instruction": "ok"}, {"class": "Math"}]', "record 2: needs a non-empty 'instruction'"),
    ('[{"instruction": "ok"', "bad.json:1: invalid JSON"),
])
def test_bad_eval_sets_name_the_record(tmp_path, content: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(EvalSetError, match=message):
        load_eval_set(path)


def test_answers_are_alpacaeval_json_and_concurrent(tmp_path, made) -> None:
    items = load_eval_set("ultra_eval", per_class=1)
    out = tmp_path / "answers.json"
    summary = answer_eval_set(items, FAKE, out, "my-model", concurrency=8)
    records = load_answers(out)
    assert summary.answered == len(records) == 10
    assert [r["instruction"] for r in records] == [i.instruction for i in items]
    assert {r["generator"] for r in records} == {"my-model"}
    assert all(r["output"] and r["dataset"] == r["class"] for r in records)
    assert made[0].max_in_flight > 1  # calls overlap, so the local micro-batcher can batch them


def test_multi_turn_answers_see_their_history(tmp_path, made) -> None:
    mt = tmp_path / "mt.jsonl"
    mt.write_text(json.dumps({"question_id": 1, "turns": ["First?", "Second?"]}) + "\n")
    out = tmp_path / "a.json"
    answer_eval_set(load_eval_set(mt), FAKE, out)
    [rec] = load_answers(out)
    assert rec["turns"] == ["First?", "Second?"] and len(rec["outputs"]) == 2 and rec["output"] == rec["outputs"][1]
    second_call = made[0].calls[1]
    assert [m["role"] for m in second_call] == ["user", "assistant", "user"]
    assert second_call[1]["content"] == rec["outputs"][0]


def test_resume_after_crash_repeats_nothing(tmp_path, made, monkeypatch) -> None:
    items = load_eval_set("ultra_eval", per_class=2)
    clean = tmp_path / "clean.json"
    answer_eval_set(items, FAKE, clean, concurrency=4)
    monkeypatch.setattr(CountingBackend, "fail_after", 7)
    crashed = tmp_path / "crashed.json"
    with pytest.raises(BackendError):
        answer_eval_set(items, FAKE, crashed, concurrency=4)
    assert not crashed.exists()  # no half-written output
    kept = len(cache_path_for(crashed).read_text().splitlines())
    assert 0 < kept <= 7
    monkeypatch.setattr(CountingBackend, "fail_after", None)
    summary = answer_eval_set(items, FAKE, crashed, concurrency=4)
    assert summary.from_cache == kept and len(made[-1].calls) == 20 - kept
    assert json.loads(crashed.read_text()) == json.loads(clean.read_text())
    # a changed sampling parameter is a different answer, not a cache hit
    again = answer_eval_set(items, FAKE.model_copy(update={"max_tokens": 5}), crashed)
    assert again.from_cache == 0


def test_rerun_is_served_from_cache(tmp_path, made) -> None:
    items = load_eval_set("ultra_eval", limit=3)
    out = tmp_path / "a.json"
    answer_eval_set(items, FAKE, out)
    summary = answer_eval_set(items, FAKE, out)
    assert summary.from_cache == 3 and made[-1].calls == []
    assert isinstance(cache_path_for(out), Path) and cache_path_for(out).name == "a.cache.jsonl"


def test_fastchat_answer_files_written_and_read(tmp_path, made) -> None:
    bench = tmp_path / "data" / "mt_bench"
    (bench / "model_answer").mkdir(parents=True)
    questions = [{"question_id": 81, "category": "writing", "turns": ["Write a haiku about rain.", "Now a limerick."]},
                 {"question_id": 101, "category": "reasoning", "turns": ["What is 2+2?", "And 3+3?"],
                  "reference": ["4", "6"]}]
    (bench / "question.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    out = bench / "model_answer" / "fake-model.jsonl"
    answer_eval_set(load_eval_set(bench / "question.jsonl"), FAKE, out, generator="fake-model")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["question_id"] for r in rows] == [81, 101]
    assert all(r["model_id"] == "fake-model" and len(r["choices"][0]["turns"]) == 2 for r in rows)
    assert set(rows[0]) == {"question_id", "answer_id", "model_id", "choices", "tstamp"}
    assert [p.name for p in (bench / "model_answer").glob("*.jsonl")] == ["fake-model.jsonl"]  # cache hidden

    # read back through FastChat's layout: question.jsonl beside model_answer/
    back = load_answers(out)
    assert back[0]["instruction"] == "Write a haiku about rain." and back[0]["turns"] == questions[0]["turns"]
    turns = rows[1]["choices"][0]["turns"]
    assert back[1]["outputs"] == turns and back[1]["output"] == turns[1]
    assert back[0]["generator"] == "fake-model" and back[1]["class"] == "reasoning"
    elsewhere = tmp_path / "answers.jsonl"
    elsewhere.write_text(out.read_text())
    with pytest.raises(EvalSetError, match=r"answers.jsonl: a FastChat answer file holds no questions; pass --quest"):
        load_answers(elsewhere)
    assert load_answers(elsewhere, bench / "question.jsonl") == back
    stray = tmp_path / "stray.jsonl"
    stray.write_text(json.dumps({"question_id": 999, "model_id": "m", "choices": [{"turns": ["x"]}]}) + "\n")
    with pytest.raises(EvalSetError, match=r"stray.jsonl: record 1: question_id 999 is not in"):
        load_answers(stray, bench / "question.jsonl")
