"""The user-turn checker measured on real conversations (held-out part), per language.

The ``real`` profile's targets: accept >= 90% of real human follow-ups and flag >= 90%
of real assistant replies, in English and in Chinese (docs/benchmarks.md, user_turns)."""

from __future__ import annotations

import pytest

from conftest import FIXTURES
from ultrachat.core.turns import confounding_reason, is_politeness_only
from ultrachat.testing.real_turns import is_paste_only, language, load_turns, measure, wilson


@pytest.mark.slow
def test_real_profile_meets_targets_on_held_out_real_turns() -> None:
    turns = load_turns(FIXTURES / "crosswoz_zh_turns.jsonl")
    held = [t for t in turns if t.held_out]
    cells = {(c.lang, c.label): c for c in measure(held, lambda t: confounding_reason(t, profile="real") is not None)}
    assert set(cells) == {("en", "user"), ("en", "assistant"), ("zh", "user"), ("zh", "assistant")}
    assert cells["zh", "user"].n >= 200 and cells["en", "user"].n >= 10_000, {k: c.n for k, c in cells.items()}
    for key, cell in cells.items():
        assert cell.rate >= 0.90, (key, cell.n, cell.rate)
    # The small profile stays strict: it rejects most real English follow-ups (no question).
    small = measure([t for t in held if t.lang == "en"], lambda t: confounding_reason(t) is not None)
    assert {c.label: c.rate for c in small}["user"] < 0.7


def test_labelled_set_helpers() -> None:
    assert language("How do I sort a list?") == "en"
    assert language("怎么给列表排序") == "zh"
    assert language("Как отсортировать список?") is None
    assert is_paste_only("def f(x):\n    return x\n\nclass A:\n    pass\n")
    assert not is_paste_only("Fix this:\ndef f(x):\n    return x\n\nclass A:\n    pass\n")
    assert not is_paste_only("make it shorter")
    lo, hi = wilson(90, 100)
    assert lo < 0.9 < hi and round(lo, 3) == 0.826


@pytest.mark.parametrize("text", ["谢谢！", "好的，谢谢。", "好的，非常感谢！", "收到，谢谢"])
def test_chinese_politeness_only(text: str) -> None:
    assert is_politeness_only(text)


@pytest.mark.parametrize(("text", "profile"), [
    ("光合作用是怎么进行的？", "small"), ("请介绍一下光合作用", "small"), ("能否再详细说说叶绿素", "small"),
    ("叶绿素为什么是绿色的", "small"), ("光合作用是怎么进行的？", "real"), ("请介绍一下光合作用", "real"),
    ("风力发电机中的动态失速", "real"), ("make it shorter", "real"), ("Colorado seems too far west.", "real"),
])
def test_user_turns_accepted(text: str, profile: str) -> None:
    assert confounding_reason(text, profile=profile) is None


@pytest.mark.parametrize(("text", "profile"), [
    ("当然！以下是光合作用的步骤：\n1. 吸收光能\n2. 分解水\n3. 合成糖", "small"),
    ("光合作用发生在叶绿体中。植物吸收光能，把水和二氧化碳变成糖。", "small"),
    ("当然！以下是光合作用的步骤：\n1. 吸收光能\n2. 分解水\n3. 合成糖", "real"),
    ("光合作用发生在叶绿体中。植物吸收光能，把水和二氧化碳变成糖。", "real"),
    ("Sure! Photosynthesis turns light into sugar.", "real"),
    ("I hope this helps. Let me know if you have any other questions.", "real"),
    ("```python\nprint('hi')\n```", "real"),
])
def test_assistant_like_turns_flagged(text: str, profile: str) -> None:
    assert confounding_reason(text, profile=profile) is not None
