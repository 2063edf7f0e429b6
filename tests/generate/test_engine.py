"""The dialogue engine on the scripted fake backend."""

from __future__ import annotations

from typing import Any

import pytest

from ultrachat.backends import Completion, GenerationParams, Message, Usage
from ultrachat.backends.fake import FakeBackend
from ultrachat.generate.engine import DialogueEngine, Role
from ultrachat.generate.world import WorldSector
from ultrachat.prompts import Prompts
from ultrachat.recipe import DialogueConfig, ModelConfig, load_recipe


def _engine(user_script: Any, assistant_script: Any = None, **dialogue: Any) -> tuple[DialogueEngine, FakeBackend]:
    recipe = load_recipe()
    prompts = Prompts("en")
    sector = WorldSector(recipe, prompts)
    user_backend = FakeBackend(user_script)
    assistant = FakeBackend(assistant_script)
    engine = DialogueEngine(
        sector,
        Role(user_backend, ModelConfig(backend="fake", model="fake", max_tokens=64)),
        Role(assistant, ModelConfig(backend="fake", model="fake", max_tokens=256)),
        prompts,
        DialogueConfig(**dialogue),
        ["a curious tester"],
    )
    return engine, user_backend


def _opening(rounds: int = 3) -> Any:
    sector = WorldSector(load_recipe(), Prompts("en"))
    op = sector.make_opening("world-s0-t000-00000", "How do tides work?", {"topic": "Nature", "subtopic": "Oceans"})
    op.rounds = rounds
    return op


def _asker(prefix: str = "") -> Any:
    count = iter(range(1000))
    return lambda m, p: f"{prefix}And why is that, point {next(count)}?"


async def test_roles_alternate_for_the_planned_rounds() -> None:
    engine, user = _engine(_asker("User: "))
    record = await engine.run(_opening(3))
    data = record["data"]
    assert len(data) == 6 and data[0] == "How do tides work?"
    assert data[2:5:2] == ["And why is that, point 0?", "And why is that, point 1?"]  # role prefix stripped
    meta = record["meta"]
    assert meta["stop_reason"] == "completed" and meta["rounds"] == 3 and meta["sector"] == "world"
    assert meta["topic"] == "Nature" and meta["tokens"]["assistant"]["completion"] > 0
    # Task-framed prompt: one message quoting the latest answer, not a role-play chat.
    assert len(user.calls[0]) == 1 and data[1] in user.calls[0][0]["content"]
    assert engine.assistant_messages(data[:3])[-1] == {"role": "user", "content": data[2]}
    assert "Nature" in user.calls[0][0]["content"]  # the sector's goal reminder


async def test_politeness_is_regenerated() -> None:
    replies = iter(["Thank you!", "Thanks a lot.", "What causes spring tides?", "And neap tides?"])
    engine, _ = _engine(lambda m, p: next(replies))
    record = await engine.run(_opening(3))
    assert record["data"][2] == "What causes spring tides?"
    assert record["meta"]["regenerations"] == {"politeness": 2}


async def test_confounding_regenerated_then_dialogue_ends_keeping_completed_rounds() -> None:
    answer = "Sure! Tides are caused by the moon's gravity pulling on the oceans."
    engine, user = _engine(lambda m, p: answer, max_regenerations=2)
    record = await engine.run(_opening(4))
    assert record["meta"]["stop_reason"] == "role_confounding"
    assert record["meta"]["regenerations"] == {"role_confounding": 3}
    assert len(record["data"]) == 2 and record["meta"]["rounds"] == 1  # the completed round is kept
    assert len(user.calls) == 3
    assert engine.stats.confounded == 3 and engine.stats.user_attempts == 3


async def test_truncated_assistant_reply_is_marked_or_ends() -> None:
    cut = Completion("The moon pulls the", "length", Usage(10, 256), "fake")
    engine, _ = _engine(lambda m, p: "Why?", lambda m, p: cut)
    record = await engine.run(_opening(2))
    assert record["meta"]["truncated_turns"] == [1, 3] and record["meta"]["stop_reason"] == "completed"
    engine, _ = _engine(lambda m, p: "Why?", lambda m, p: cut, on_truncated="end")
    record = await engine.run(_opening(2))
    assert record["meta"]["stop_reason"] == "truncated" and len(record["data"]) == 2


async def test_truncated_reply_is_dropped_with_its_question() -> None:
    full = Completion("The moon pulls the oceans.", "stop", Usage(10, 20), "fake")
    cut = Completion("Spring tides happen when the", "length", Usage(10, 256), "fake")
    replies = iter([full, cut, cut])  # the second reply is cut, and so is its one retry
    engine, _ = _engine(lambda m, p: "Why?", lambda m, p: next(replies), on_truncated="drop")
    record = await engine.run(_opening(3))
    meta = record["meta"]
    assert record["data"] == ["How do tides work?", "The moon pulls the oceans."]
    assert meta["stop_reason"] == "truncated" and meta["rounds"] == 1 and meta["truncated_turns"] == []
    assert meta["regenerations"] == {"truncated": 1} and engine.stats.truncated == 0


async def test_a_cut_reply_is_sampled_again_before_it_is_dropped() -> None:
    cut = Completion("Spring tides happen when the", "length", Usage(10, 256), "fake")
    replies = iter([cut, Completion("The moon pulls the oceans.", "stop", Usage(10, 20), "fake")])
    seeds: list[int | None] = []

    def assistant(m: list[Message], p: GenerationParams) -> Completion:
        seeds.append(p.seed)
        return next(replies)

    engine, _ = _engine(lambda m, p: "Why?", assistant, on_truncated="drop")
    record = await engine.run(_opening(1))
    assert record["data"][1] == "The moon pulls the oceans." and record["meta"]["stop_reason"] == "completed"
    assert len(seeds) == 2 and seeds[0] != seeds[1]  # the retry is a new sample, not a replay


async def test_user_turn_cut_by_max_tokens_is_not_kept() -> None:
    long_user = Completion("What about the", "length", Usage(5, 64), "fake")
    engine, _ = _engine(lambda m, p: long_user, max_regenerations=1)
    record = await engine.run(_opening(3))
    assert record["meta"]["stop_reason"] == "role_confounding" and len(record["data"]) == 2


async def test_empty_assistant_reply_ends_dialogue() -> None:
    engine, _ = _engine(lambda m, p: "Why?", lambda m, p: "   ", max_regenerations=1)
    record = await engine.run(_opening(3))
    assert record["meta"]["stop_reason"] == "empty_reply"
    assert record["meta"]["regenerations"] == {"empty_reply": 2}


async def test_persona_prompts_flip_roles_and_sample_a_persona() -> None:
    seen: list[list[Message]] = []

    def user(m: list[Message], p: GenerationParams) -> str:
        seen.append(m)
        return "Could you give an example?"

    engine, _ = _engine(user, user_prompts="persona")
    record = await engine.run(_opening(2))
    assert record["meta"]["persona"] == "a curious tester"
    msgs = seen[0]
    assert msgs[0]["role"] == "system" and "a curious tester" in msgs[0]["content"]
    assert [m["role"] for m in msgs[1:]] == ["assistant", "user"]  # flipped history


async def test_calls_are_seeded_per_turn() -> None:
    params: list[GenerationParams] = []

    def user(m: list[Message], p: GenerationParams) -> str:
        params.append(p)
        return f"Why is that, number {len(params)}?"

    engine, _ = _engine(user)
    await engine.run(_opening(3))
    again, _ = _engine(user)
    await again.run(_opening(3))
    assert [p.seed for p in params[:2]] == [p.seed for p in params[2:]]
    assert params[0].seed != params[1].seed and params[0].temperature == 0.7


@pytest.mark.parametrize("mode", ["task", "persona"])
async def test_prompt_sets_render(mode: str) -> None:
    engine, _ = _engine(lambda m, p: "Why?", user_prompts=mode)
    msgs = engine.user_messages(["Q?", "A." * 400, "Q2?", "A2"], _opening(), "a tester")
    text = " ".join(m["content"] for m in msgs)
    assert "{" not in text  # every placeholder filled


def _always_cut(prompt_tokens: int = 10) -> tuple[Any, list[int]]:
    """An assistant script whose every reply is cut at its cap, and the caps it was asked for."""
    caps: list[int] = []

    def assistant(m: list[Message], p: GenerationParams) -> Completion:
        caps.append(p.max_tokens)
        return Completion("Spring tides happen when the", "length", Usage(prompt_tokens, p.max_tokens), "fake")

    return assistant, caps


def _real_assistant_engine(assistant: Any, **cfg: Any) -> DialogueEngine:
    prompts = Prompts("en")
    return DialogueEngine(
        WorldSector(load_recipe(), prompts),
        Role(FakeBackend(lambda m, p: "Why?"), ModelConfig(backend="fake", model="fake", max_tokens=64)),
        Role(FakeBackend(assistant), ModelConfig(backend="fake", model="fake", profile="real", **cfg)),
        prompts, DialogueConfig(on_truncated="drop"), ["a curious tester"])


async def test_real_profile_retries_a_cut_reply_with_twice_the_cap_then_drops_it() -> None:
    assistant, caps = _always_cut()
    record = await _real_assistant_engine(assistant, max_tokens=300).run(_opening(2))
    assert caps[:2] == [300, 600]  # the retry asks for twice the cap
    # The second cut ends the dialogue before it: no cut turn is kept, no round completed.
    assert record["meta"]["stop_reason"] == "truncated" and record["data"] == ["How do tides work?"]
    assert record["meta"]["profiles"] == {"user": "small", "assistant": "real"}
    assert record["meta"]["rounds"] == len(record["data"]) // 2


async def test_think_blocks_never_reach_a_turn() -> None:
    def assistant(m: list[Message], p: GenerationParams) -> str:
        return "<think>The user asks about tides; recall the moon.</think>\nThe moon pulls the oceans."

    engine, _ = _engine(lambda m, p: "<think>ask something new</think>Why twice a day?", assistant)
    record = await engine.run(_opening(2))
    assert record["data"][1:] == ["The moon pulls the oceans.", "Why twice a day?", "The moon pulls the oceans."]


async def test_real_profile_asks_a_cut_user_turn_again_with_twice_the_cap() -> None:
    caps: list[int] = []

    def user(m: list[Message], p: GenerationParams) -> Completion:
        caps.append(p.max_tokens)
        if len(caps) == 1:
            return Completion("I wonder whether the moon", "length", Usage(10, p.max_tokens), "fake")
        return Completion("Why are there two tides a day?", "stop", Usage(10, 8), "fake")

    recipe = load_recipe()
    prompts = Prompts("en")
    engine = DialogueEngine(
        WorldSector(recipe, prompts),
        Role(FakeBackend(user), ModelConfig(backend="fake", model="fake", max_tokens=50, profile="real")),
        Role(FakeBackend(lambda m, p: "The moon pulls the oceans."), ModelConfig(backend="fake", model="fake")),
        prompts, DialogueConfig(), ["a curious tester"])
    record = await engine.run(_opening(2))
    assert caps == [50, 100] and record["data"][2] == "Why are there two tides a day?"
    assert record["meta"]["rounds"] == 2 and record["meta"]["stop_reason"] == "completed"


@pytest.mark.parametrize(("context_length", "prompt_tokens", "caps"), [
    (10 + 450, 10, [300, 450]),   # the doubled cap (600) would overflow: what the context leaves
    (10 + 900, 10, [300, 600]),   # room for twice the cap
    (10 + 300, 10, [300]),        # no more room than the cap: no retry, the cut reply is dropped
    (None, 10, [300, 600]),       # no window known (the fake backend reports none): twice the cap
])
async def test_a_cut_replys_retry_cap_is_bounded_by_the_context_length(
        context_length: int | None, prompt_tokens: int, caps: list[int]) -> None:
    assistant, seen = _always_cut(prompt_tokens)
    engine = _real_assistant_engine(assistant, max_tokens=300, context_length=context_length)
    record = await engine.run(_opening(1))
    assert seen == caps
    assert record["meta"]["stop_reason"] == "truncated" and record["data"] == ["How do tides work?"]
    assert record["meta"]["regenerations"].get("truncated", 0) == len(caps) - 1


async def test_without_a_reported_prompt_size_the_retry_cap_uses_the_estimate() -> None:
    from ultrachat.backends.base import prompt_tokens_estimate

    assistant, seen = _always_cut(prompt_tokens=0)  # a server that reports no usage
    engine = _real_assistant_engine(assistant, max_tokens=300, context_length=400)
    await engine.run(_opening(1))
    estimate = prompt_tokens_estimate(engine.assistant_messages(["How do tides work?"]))
    assert 300 < 400 - estimate < 600 and seen == [300, 400 - estimate]


def test_the_prompt_estimate_errs_high() -> None:
    from ultrachat.backends.base import prompt_tokens_estimate

    english = [{"role": "user", "content": "How do the tides work along the coast of Brittany in winter?"}]
    chinese = [{"role": "user", "content": "请解释一下潮汐是怎样形成的"}]  # 13 characters, about 13 tokens or fewer
    assert prompt_tokens_estimate(english) >= 14 + 4  # 14 words: a tokenizer needs at least that many
    assert prompt_tokens_estimate(chinese) == 13 + 4


async def test_reasoning_is_kept_per_turn_in_meta_only_for_roles_that_ask() -> None:
    def assistant(m: list[Message], p: GenerationParams) -> Completion:
        # One reasoning field beside a <think> block: both are kept, the field first.
        return Completion("<think>recall the moon</think>\nThe moon pulls the oceans.", "stop", Usage(5, 6), "fake",
                          reasoning="the user asks about tides")

    prompts = Prompts("en")
    engine = DialogueEngine(
        WorldSector(load_recipe(), prompts),
        Role(FakeBackend(lambda m, p: "<think>ask something new</think>Why twice a day?"),
             ModelConfig(backend="fake", model="fake", max_tokens=64)),
        Role(FakeBackend(assistant), ModelConfig(backend="fake", model="fake", keep_reasoning=True)),
        prompts, DialogueConfig(), ["a curious tester"])
    record = await engine.run(_opening(2))
    assert record["data"][1:] == ["The moon pulls the oceans.", "Why twice a day?", "The moon pulls the oceans."]
    kept = "the user asks about tides\n\nrecall the moon"
    # The user role did not ask: its <think> block is gone from its turn and kept nowhere.
    assert record["meta"]["reasoning"] == [{"turn": 1, "text": kept}, {"turn": 3, "text": kept}]
    engine.assistant.cfg = ModelConfig(backend="fake", model="fake")
    assert "reasoning" not in (await engine.run(_opening(2)))["meta"]  # no role asks: meta as before


async def test_a_dropped_turns_reasoning_goes_with_it() -> None:
    replies = iter([Completion("Tides rise twice a day.", "stop", Usage(5, 5), "fake", reasoning="first"),
                    Completion("Because the", "length", Usage(5, 2), "fake", reasoning="second, cut"),
                    Completion("Because the", "length", Usage(5, 2), "fake", reasoning="second, cut again")])
    prompts = Prompts("en")
    engine = DialogueEngine(
        WorldSector(load_recipe(), prompts),
        Role(FakeBackend(lambda m, p: Completion("Why twice?", "stop", Usage(5, 2), "fake", reasoning="ask why")),
             ModelConfig(backend="fake", model="fake", keep_reasoning=True)),
        Role(FakeBackend(lambda m, p: next(replies)), ModelConfig(backend="fake", model="fake", keep_reasoning=True)),
        prompts, DialogueConfig(on_truncated="drop"), ["a curious tester"])
    record = await engine.run(_opening(2))
    # Round 2's answer was cut twice: it and the question it answered are gone, with their reasoning.
    assert record["data"] == ["How do tides work?", "Tides rise twice a day."]
    assert record["meta"]["reasoning"] == [{"turn": 1, "text": "first"}]


def _bounded_engine(window: int | None, seen: list[tuple[str, int, int]]) -> DialogueEngine:
    """Fake user and assistant (usage counts the prompt's words, as the mock server does) with
    one context window; ``seen`` gets (role, prompt tokens, max_tokens) per call."""
    from ultrachat.backends.fake import prompt_words
    from ultrachat.backends.shaped import default_reply

    def recording(role: str) -> Any:
        def script(m: list[Message], p: GenerationParams) -> str:
            seen.append((role, prompt_words(m), p.max_tokens))
            return default_reply(m, p)
        return script

    prompts = Prompts("en")
    return DialogueEngine(
        WorldSector(load_recipe(), prompts),
        Role(FakeBackend(recording("user")), ModelConfig(backend="fake", model="fake", max_tokens=32,
                                                         context_length=window)),
        Role(FakeBackend(recording("assistant")), ModelConfig(backend="fake", model="fake", max_tokens=64,
                                                              context_length=window)),
        prompts, DialogueConfig(), ["a curious tester"])


async def test_every_call_fits_the_context_and_a_full_one_ends_the_dialogue_on_an_answer() -> None:
    seen: list[tuple[str, int, int]] = []
    record = await _bounded_engine(400, seen).run(_opening(20))
    meta = record["meta"]
    assert meta["stop_reason"] == "context_full" and 2 <= meta["rounds"] < 20
    assert len(record["data"]) == 2 * meta["rounds"]  # the last turn is an answer
    assert all(prompt + max_tokens <= 400 for _, prompt, max_tokens in seen)  # no request a server would refuse
    # Calls near the end asked for what the window left, less than the cap but at least a quarter of it.
    bounded = [(role, cap) for role, _, cap in seen if cap < {"user": 32, "assistant": 64}[role]]
    assert bounded and all(cap >= {"user": 8, "assistant": 16}[role] for role, cap in bounded)
    # The dialogue ended before a round it had no room for: every call made a kept turn.
    assert len(seen) == len(record["data"]) - 1


@pytest.mark.parametrize("window", [None, 10**6])
async def test_an_unknown_or_ample_window_changes_nothing(window: int | None) -> None:
    seen: list[tuple[str, int, int]] = []
    record = await _bounded_engine(window, seen).run(_opening(20))
    unbounded: list[tuple[str, int, int]] = []
    assert record == await _bounded_engine(None, unbounded).run(_opening(20))
    assert record["meta"]["stop_reason"] == "completed" and record["meta"]["rounds"] == 20
    assert {cap for _, _, cap in seen} == {32, 64} and seen == unbounded


async def test_an_opening_too_long_for_the_window_gets_no_call() -> None:
    seen: list[tuple[str, int, int]] = []
    engine = _bounded_engine(60, seen)  # the assistant needs 16 tokens of room at least
    opening = _opening(3)
    opening.text = "How do tides work? " * 12  # 48 words, estimated higher still
    record = await engine.run(opening)
    assert seen == [] and record["data"] == [opening.text]
    assert record["meta"]["stop_reason"] == "context_full" and record["meta"]["rounds"] == 0


def test_a_prompts_size_is_the_servers_count_plus_an_estimate_of_what_was_added() -> None:
    from ultrachat.backends.base import prompt_tokens_estimate
    from ultrachat.generate.engine import _Dialogue

    d = _Dialogue(["How do tides work?"])
    first = [{"role": "user", "content": "How do tides work?"}]
    assert d.prompt_tokens("assistant", first) == prompt_tokens_estimate(first)  # nothing counted yet
    d.counted["assistant"] = (31, prompt_tokens_estimate(first))  # e.g. a template's default system prompt
    longer = [*first, {"role": "assistant", "content": "The moon pulls the oceans."},
              {"role": "user", "content": "Why twice a day?"}]
    added = prompt_tokens_estimate(longer) - prompt_tokens_estimate(first)
    assert d.prompt_tokens("assistant", longer) == 31 + added
    assert d.prompt_tokens("assistant", []) == 31  # a shorter transcript is counted as long as the last
    assert d.prompt_tokens("user", longer) == prompt_tokens_estimate(longer)  # counts are per role
