"""List parsing, normalisation/dedup and turn post-processing."""

from __future__ import annotations

import json

import pytest

from conftest import FIXTURES
from ultrachat.core.text import dedupe, normalize, parse_list
from ultrachat.core.turns import (
    confounding_reason,
    is_politeness_only,
    repair_user_turn,
    split_think,
    strip_role_prefix,
)


@pytest.mark.parametrize(
    "text",
    [
        "1. What is X?\n2. Why is Y?\n3) How does Z work?",
        "Here are three questions:\n- What is X?\n- Why is Y?\n- How does Z work?",
        '["What is X?", "Why is Y?", "How does Z work?"]',
        "Sure! ```json\n[\"What is X?\", \"Why is Y?\", \"How does Z work?\"]\n```",
        "* **What is X?**\n* **Why is Y?**\n* **How does Z work?**",
        "1. \"What is X?\"\n2. \"Why is Y?\"\n3. \"How does Z work?\"",
    ],
)
def test_parse_list_formats(text: str) -> None:
    assert parse_list(text) == ["What is X?", "Why is Y?", "How does Z work?"]


def test_parse_list_caps_and_drops_noise() -> None:
    text = "1. A long item one\n2. ok\n3. Another item\n4. Third item"
    assert parse_list(text, max_items=2) == ["A long item one", "Another item"]


def test_normalize_and_dedupe() -> None:
    assert normalize("  What's  the Capital of FRANCE?? ") == normalize("what s the capital of france")
    seen: set[str] = set()
    assert dedupe(["What is AI?", "what is ai", "Why?"], seen) == ["What is AI?", "Why?"]
    assert dedupe(["WHY?", "How?"], seen) == ["How?"]  # state carries across calls


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("User: What is the speed of light?", "What is the speed of light?"),
        ("**Question:** What is DNA?", "What is DNA?"),
        ('"How do volcanoes form?"', "How do volcanoes form?"),
        ('"What makes lava hot?', "What makes lava hot?"),
        ("Person: Follow-up question: Why?", "Why?"),
        ("What is rain?\nAssistant: Rain is water.", "What is rain?"),
        ("Plain question?", "Plain question?"),
    ],
)
def test_strip_role_prefix(raw: str, clean: str) -> None:
    assert strip_role_prefix(raw) == clean


@pytest.mark.parametrize("text", ["Thank you!", "Thanks a lot.", "You're welcome", "Great, thanks!", "ok thanks bye"])
def test_politeness_only(text: str) -> None:
    assert is_politeness_only(text)


@pytest.mark.parametrize("text", ["Thanks! What about Mars?", "Can you thank them for me?", "Why is it thankless?"])
def test_not_politeness_only(text: str) -> None:
    assert not is_politeness_only(text)


def test_confounding_rules() -> None:
    assert confounding_reason("Sure! Here is how photosynthesis works: plants use light.") == "assistant opener"
    answer = "Photosynthesis happens in leaves.\n1. Light is absorbed\n2. Water is split\n3. Sugar is made"
    assert confounding_reason(answer) == "structured answer"
    assert confounding_reason(" ".join(["word"] * 70) + ".") == "long statement without a question"
    assert confounding_reason("How do leaves absorb light?") is None
    assert confounding_reason("Tell me more about chlorophyll.") is None
    assert confounding_reason("") == "empty"


def test_user_turn_repair_agrees_with_human_verdicts_on_real_embedded_outputs() -> None:
    """54 real replies of the embedded SmolLM2-135M acting as the user simulator (three
    prompt drafts), each with a human verdict: is it, or does it contain, a sensible next
    user turn? The cheap rules must agree with the verdicts and rarely let a bad one through."""
    rows = [json.loads(line) for line in (FIXTURES / "confounding.jsonl").read_text().splitlines()]
    agree = accepted = accepted_bad = missed = 0
    for row in rows:
        text, why = repair_user_turn(row["user_raw"], row["finish"], [row["opening"], row["assistant"]])
        ok = why is None
        agree += ok == row["usable"]
        accepted += ok
        accepted_bad += ok and not row["usable"]
        missed += row["usable"] and not ok
        if ok:
            assert "?" in text and len(text.split()) <= 40
    assert len(rows) == 54
    assert agree / len(rows) >= 0.88, (agree, len(rows))
    # Measured: 49/54 agree; 5 of 18 accepted are off-topic or vague questions (relevance is
    # beyond cheap rules), and no usable reply is thrown away.
    assert accepted_bad / accepted <= 0.3 and missed == 0, (accepted, accepted_bad, missed)


def test_a_list_item_cut_by_the_cap_is_dropped() -> None:
    from ultrachat.generate.planning import whole_lines

    cut = "1. What is a tide?\n2. Why does the moon matter?\n3. What is the difference between"
    assert parse_list(whole_lines(cut, "length")) == ["What is a tide?", "Why does the moon matter?"]
    assert parse_list(whole_lines(cut, "stop"))[-1] == "What is the difference between"
    assert whole_lines("1. What is the differ", "length") == ""


def test_think_blocks_are_stripped_from_list_replies() -> None:
    from ultrachat.generate.planning import whole_lines

    assert parse_list(whole_lines("<think>list tides</think>\n1. What is a tide?\n2. Why twice a day?", "stop")) == [
        "What is a tide?", "Why twice a day?"]
    assert whole_lines("<think>still thinking when the cap hit", "length") == ""


@pytest.mark.parametrize(("reply", "visible", "reasoning"), [
    ("<think>\nThe moon.\n</think>\n\nTides come from the moon.", "Tides come from the moon.", "The moon."),
    # The chat template opened the block (DeepSeek-R1, Qwen3): only its end is in the reply.
    ("Recall the moon.\n</think>\n\nTides come from the moon.", "Tides come from the moon.", "Recall the moon."),
    ("<think>cut while thinking", "", "cut while thinking"),
    ("<THINK>a</THINK>One. <think>b</think>Two.", "One. Two.", "a\n\nb"),
    ("No reasoning here.", "No reasoning here.", ""),
])
def test_split_think_separates_reply_and_reasoning(reply: str, visible: str, reasoning: str) -> None:
    assert split_think(reply) == (visible, reasoning)


def test_a_user_turn_that_parrots_the_reply_is_not_usable() -> None:
    reply = "The moon's gravity pulls the oceans, so the tides rise and fall twice a day. Why do you ask?"
    turns = ["How do tides work?", reply]
    parrot = "The moon's gravity pulls the oceans, so tides rise and fall twice a day?"
    assert repair_user_turn(parrot, "stop", turns) == (parrot, "repeats the assistant")
    follow_up = "Why twice a day and not once, if the moon goes around only once?"
    assert repair_user_turn(follow_up, "stop", turns) == (follow_up, None)


def test_offers_of_help_are_the_assistants_voice() -> None:
    for text in ("Please let me know how I can help.", "What can I do for you today?",
                 "I'm ready to help. What's on your mind?", "How may I assist you with that?"):
        assert confounding_reason(text) is not None, text
    assert confounding_reason("Can you help me plan a trip to Kyoto?") is None
