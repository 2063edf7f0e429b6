"""Verdict parsing with the shipped judge configs: the formats judges really write."""

from __future__ import annotations

import pytest

from ultrachat.evaluate.judges import JudgeConfigError, load_judge
from ultrachat.evaluate.parse import parse_verdict

PAIR = load_judge("pairwise").verdict
SCORE = load_judge("score").verdict


@pytest.mark.parametrize(("text", "expected"), [
    ("A is more detailed. [[A]]", "A"),
    ("Final verdict: [[B]]", "B"),
    ("They are equally good. [[C]]", "tie"),
    ("[[ b ]]", None),  # lower-case letters are not the format
    ("My verdict: B", "B"),
    ("Verdict - tie", "tie"),
    ("Overall, Assistant A is clearly better because it explains the steps.", "A"),
    ("Response B provides the better answer.", "B"),
    ("It's a tie: both miss the point.", "tie"),
    ("Both answers are equally helpful.", "tie"),
    ('Output "[[A]]" if assistant A is better, "[[B]]" if B is better', None),  # echoed instructions
    ("I like both of them a lot.", None),
    ("", None),
])
def test_pairwise_verdicts(text: str, expected: str | None) -> None:
    assert parse_verdict(text, PAIR) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("Good answer. Rating: [[8]]", 8.0),
    ("[[8]]", 8.0),
    ("Rating: 8", 8.0),
    ("rating is 7.5 because...", 7.5),
    ("I would give it 6/10.", 6.0),
    ("I'd say 9 out of 10", 9.0),
    ("Score: 3", 3.0),
    ("Rating: [[11]]", None),  # out of range
    ("Rating: [[0]]", None),
    ("[[4]] or maybe [[6]]", None),  # ambiguous
    ("A fine answer overall.", None),
])
def test_score_verdicts(text: str, expected: float | None) -> None:
    assert parse_verdict(text, SCORE) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("A", "A"), ("B.", "B"), ("**B**", "B"), ("A: A\n\nA trip to the island", "A"),
    ("Answer B is better.", "B"), ("A trip to Hawaii is lovely.", None), ("The capital is Canberra.", None),
])
def test_small_pairwise_judge(text: str, expected: str | None) -> None:
    assert parse_verdict(text, load_judge("pairwise-small").verdict) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("8", 8.0), ("8.", 8.0), ("7/10 because it is short", 7.0), ("The answer is 10.", 10.0),
    ("8\nA clear answer.", 8.0), ("Your answer is 10 out of 10.", 10.0),
    ("10 ways to see Hawaii", None), ("2023 was a good year", None), ("Zomagua: Culture", None),
    ("1. 100%  This answer is 100", None),  # a list marker, not a rating
])
def test_small_score_judge(text: str, expected: float | None) -> None:
    assert parse_verdict(text, load_judge("score-small").verdict) == expected


def test_default_judge_is_small_only_for_the_embedded_model() -> None:
    from ultrachat.evaluate.judges import default_judge
    from ultrachat.recipe import ModelConfig

    assert default_judge("pairwise", ModelConfig()) == "pairwise-small"
    assert default_judge("score", ModelConfig(backend="openai", model="gpt-4o", base_url="http://x")) == "score"


def test_first_matching_pattern_wins_over_later_ones() -> None:
    # the bracketed verdict is authoritative even when the prose mentions the other assistant
    assert parse_verdict("Assistant A is better in style, but for accuracy: [[B]]", PAIR) == "B"


def test_user_judge_config_with_own_patterns(tmp_path) -> None:
    (tmp_path / "t.txt").write_text("Q: {question}\nX: {answer_a}\nY: {answer_b}\nWinner?", encoding="utf-8")
    (tmp_path / "mine.toml").write_text(
        'kind = "pairwise"\ntemplate = "t.txt"\n[verdict]\npatterns = [\'WINNER=(X|Y|DRAW)\']\n'
        'labels = { X = "A", Y = "B", DRAW = "tie" }\n', encoding="utf-8")
    judge = load_judge(tmp_path / "mine.toml")
    assert parse_verdict("WINNER=Y", judge.verdict) == "B"
    assert parse_verdict("[[A]]", judge.verdict) is None
    msgs = judge.messages(question="q?", answer_a="one", answer_b="two")
    assert msgs == [{"role": "user", "content": "Q: q?\nX: one\nY: two\nWinner?"}]


@pytest.mark.parametrize(("toml", "message"), [
    ('kind = "pairwise"\n[verdict]\npatterns = []\n', "missing field 'template'"),
    ('kind = "vote"\ntemplate = "t.txt"\n[verdict]\npatterns = []\n', "field 'kind'"),
    ('kind = "score"\ntemplate = "nope.txt"\n[verdict]\npatterns = []\n', "template file 'nope.txt' not found"),
    ('kind = "score"\ntemplate = "t.txt"\n[verdict]\npatterns = [\'(unclosed\']\n', "missing )"),
])
def test_bad_judge_configs_name_file_and_field(tmp_path, toml: str, message: str) -> None:
    (tmp_path / "t.txt").write_text("{question}", encoding="utf-8")
    path = tmp_path / "bad.toml"
    path.write_text(toml, encoding="utf-8")
    with pytest.raises(JudgeConfigError) as err:
        load_judge(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_unknown_builtin_judge() -> None:
    with pytest.raises(JudgeConfigError, match="unknown judge 'nope'"):
        load_judge("nope")
