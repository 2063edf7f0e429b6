"""`ultrachat generate world --base-url ...` as a subprocess against the mock server."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

import pytest

from ultrachat.core.corpus import iter_jsonl
from ultrachat.testing import MockServer

SECRET = "sk-endpoint-test-SECRET-4242"


def run_cli(exe: list[str], *args: str, recipe: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OPENAI_API_KEY": SECRET}
    cmd = [*exe, "generate", "world", "--model", "mock", "--no-progress", "--min-rounds", "2", "--max-rounds", "2",
           "--concurrency", "4", *args, *(["-r", str(recipe)] if recipe else [])]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)


def short_retries(tmp_path: Path, retries: int, timeout_s: float = 1.0) -> Path:
    path = tmp_path / "recipe.toml"
    role = f"max_retries = {retries}\ntimeout_s = {timeout_s}\n"
    path.write_text(f"[models.user]\n{role}[models.assistant]\n{role}", encoding="utf-8")
    return path


def test_generate_world_survives_fault_mix(tmp_path: Path, ultrachat_exe: list[str]) -> None:
    faults = ["--fault-429", "0.06", "--fault-500", "0.06", "--fault-timeout", "0.03", "--fault-malformed", "0.04",
              "--fault-drop", "0.04", "--retry-after", "0.2", "--hang-s", "3", "--latency-ms", "10", "--seed", "3"]
    out = tmp_path / "out"
    with MockServer("--api-key", SECRET, *faults) as srv:
        res = run_cli(ultrachat_exe, "--base-url", srv.url, "--dialogues", "12", "--out", str(out),
                      recipe=short_retries(tmp_path, 6))
        counts = srv.stats()["counts"]
    assert res.returncode == 0, res.stderr
    injected = {k: v for k, v in counts.items() if k.startswith("fault_")}
    assert len(injected) == 5, injected  # every kind of fault happened during the run
    dialogues = list(iter_jsonl(out / "dialogues.jsonl"))  # raises on any invalid line
    assert len(dialogues) == 12 and len({d["id"] for d in dialogues}) == 12
    for d in dialogues:
        assert d["meta"]["stop_reason"] == "completed" and len(d["data"]) == 4 and all(d["data"])
        assert d["meta"]["models"]["assistant"] == {"backend": "openai", "model": "mock"}
    # The key travels only in the Authorization header: never printed, never written.
    assert SECRET not in res.stdout + res.stderr
    for path in out.rglob("*"):
        if path.is_file():
            assert SECRET not in path.read_text(encoding="utf-8", errors="replace"), path


def test_generate_world_stops_when_every_request_fails(tmp_path: Path, ultrachat_exe: list[str]) -> None:
    out = tmp_path / "out"
    # 1 probe + 24 planning calls, then room for a few dialogues before every request gets a 500.
    with MockServer("--api-key", SECRET, "--fail-after", "40") as srv:
        res = run_cli(ultrachat_exe, "--base-url", srv.url, "--dialogues", "12", "--out", str(out),
                      recipe=short_retries(tmp_path, 1))
    assert res.returncode != 0
    err = res.stderr.strip()
    assert err.startswith("error:") and "every request to" in err and "HTTP 500" in err
    assert len(err.splitlines()) == 1, err
    kept = list(iter_jsonl(out / "dialogues.jsonl"))  # dialogues finished before the outage are kept, intact
    assert 1 <= len(kept) < 12
    assert all(d["meta"]["stop_reason"] == "completed" for d in kept)


def test_generate_world_fails_fast_when_unreachable(tmp_path: Path, ultrachat_exe: list[str]) -> None:
    res = run_cli(ultrachat_exe, "--base-url", "http://127.0.0.1:9/v1", "--dialogues", "3",
                  "--out", str(tmp_path / "out"))
    assert res.returncode != 0
    assert res.stderr.strip().startswith("error: cannot reach http://127.0.0.1:9/v1")
    assert len(res.stderr.strip().splitlines()) == 1


def test_roles_on_different_endpoints_and_models(tmp_path: Path) -> None:
    from ultrachat.generate.runner import generate_async
    from ultrachat.recipe import load_recipe

    with MockServer("--models", "user-model") as users, MockServer("--models", "assistant-model") as assistants:
        overrides = {"dialogues": 3, "out": str(tmp_path / "out"), "dialogue.min_rounds": 2,
                     "dialogue.max_rounds": 2}
        for role, srv, model in (("user", users, "user-model"), ("assistant", assistants, "assistant-model")):
            overrides.update({f"models.{role}.backend": "openai", f"models.{role}.base_url": srv.url,
                              f"models.{role}.model": model})
        summary = asyncio.run(generate_async("world", load_recipe(None, overrides), progress=False))
        served = {name: srv.stats()["counts"].get("200", 0) for name, srv in (("user", users), ("a", assistants))}
    assert summary.stats.dialogues == 3, served
    # 3 dialogues x 2 rounds: 6 assistant turns on one server; 3 user turns (+ planning) on the other.
    assert served["a"] == 6 + 1 and served["user"] >= 3 + 1  # + each backend's start probe
    for d in iter_jsonl(tmp_path / "out" / "dialogues.jsonl"):
        assert d["meta"]["models"] == {"user": {"backend": "openai", "model": "user-model"},
                                       "assistant": {"backend": "openai", "model": "assistant-model"}}


def test_chinese_world_on_the_mock_server_keeps_planned_rounds(tmp_path: Path) -> None:
    """The mock server answers Chinese prompts in Chinese (？ questions, 请/能否 requests
    without a question mark); every dialogue keeps its planned rounds."""
    from ultrachat.generate.runner import generate_async
    from ultrachat.recipe import load_recipe

    with MockServer() as srv:
        overrides = {"dialogues": 6, "out": str(tmp_path / "out"), "language": "zh", "dialogue.min_rounds": 3,
                     "dialogue.max_rounds": 3}
        for role in ("user", "assistant"):
            overrides.update({f"models.{role}.backend": "openai", f"models.{role}.base_url": srv.url,
                              f"models.{role}.model": "mock"})
        summary = asyncio.run(generate_async("world", load_recipe(None, overrides), progress=False))
    assert summary.stats.dialogues == 6
    for d in iter_jsonl(tmp_path / "out" / "dialogues.jsonl"):
        assert d["meta"]["stop_reason"] == "completed", d["meta"]
        assert d["meta"]["rounds"] == d["meta"]["rounds_planned"] == 3 == len(d["data"]) // 2
        assert all("\u4e00" <= ch <= "\u9fff" for t in d["data"] for ch in t[:1] if ch.isalpha()), d["data"]


def test_openai_base_url_from_the_environment_fills_only_an_unset_openai_role(tmp_path: Path, monkeypatch) -> None:
    from ultrachat.generate.runner import generate_async
    from ultrachat.recipe import load_recipe

    with MockServer() as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.url)
        # The environment never switches the embedded default...
        assert load_recipe().models.user.backend == "local"
        # ...but fills the endpoint of an openai role that names none.
        overrides = {"dialogues": 2, "out": str(tmp_path / "out"), "dialogue.min_rounds": 2, "dialogue.max_rounds": 2,
                     "models.user.backend": "openai", "models.user.model": "mock",
                     "models.assistant.backend": "openai", "models.assistant.model": "mock"}
        summary = asyncio.run(generate_async("world", load_recipe(None, overrides), progress=False))
        served = srv.stats()["counts"].get("200", 0)
    assert summary.stats.dialogues == 2 and served >= 2 * 3  # 2 dialogues x (2 answers + 1 question), + planning


def test_extra_body_fields_reach_the_server_per_role(tmp_path: Path) -> None:
    from ultrachat.generate.runner import generate_async
    from ultrachat.recipe import load_recipe

    recipe = tmp_path / "r.toml"
    recipe.write_text('[models.assistant.extra_body]\ntop_k = 20\nchat_template_kwargs = {enable_thinking = false}\n',
                      encoding="utf-8")
    with MockServer() as srv:
        overrides = {"dialogues": 2, "out": str(tmp_path / "out"), "dialogue.min_rounds": 2, "dialogue.max_rounds": 2}
        for role in ("user", "assistant"):
            overrides.update({f"models.{role}.backend": "openai", f"models.{role}.base_url": srv.url,
                              f"models.{role}.model": "mock"})
        summary = asyncio.run(generate_async("world", load_recipe(recipe, overrides), progress=False))
        counts = srv.stats()["counts"]
    assert summary.stats.dialogues == 2
    # Only the assistant's 4 answers (2 dialogues x 2 rounds) carry the fields.
    assert counts["field_top_k"] == counts["field_chat_template_kwargs"] == 4, counts


def _thought(asked: str) -> str:
    """The mock server's reasoning for a reply to ``asked`` (``--reasoning``)."""
    return f"The user asks: {' '.join(asked.split()[:6])}. I should answer clearly."


@pytest.mark.parametrize("mode", ["field", "think"])
def test_reasoning_is_kept_in_meta_never_in_turns_or_exports(tmp_path: Path, mode: str) -> None:
    from ultrachat.data.formats import export_corpus
    from ultrachat.generate.runner import generate_async
    from ultrachat.recipe import load_recipe

    recipe = tmp_path / "r.toml"
    recipe.write_text(f'cache = "{tmp_path / "responses.sqlite"}"\n[models.assistant]\nkeep_reasoning = true\n',
                      encoding="utf-8")
    with MockServer("--reasoning", mode) as srv:
        overrides = {"dialogues": 3, "dialogue.min_rounds": 2, "dialogue.max_rounds": 2}
        for role in ("user", "assistant"):
            overrides.update({f"models.{role}.backend": "openai", f"models.{role}.base_url": srv.url,
                              f"models.{role}.model": "mock"})
        runs = []
        for name in ("first", "replayed"):  # the second run replays every call from the response cache
            out = tmp_path / name
            asyncio.run(generate_async("world", load_recipe(recipe, {**overrides, "out": str(out)}), progress=False))
            runs.append(sorted(iter_jsonl(out / "dialogues.jsonl"), key=lambda d: d["id"]))
            served = [r for r in srv.stats()["replies"] if r[1] != 1]  # the start probe asks for 1 token
            if name == "first":
                first_served = len(served)
    assert len(served) == first_served  # nothing asked again: the kept reasoning came from the cache
    assert runs[0] == runs[1] and len(runs[0]) == 3
    for d in runs[0]:
        data = d["data"]
        assert len(data) == 4 and not any("<think>" in t or "The user asks" in t for t in data)
        # Only the assistant asked: its turns (1 and 3), each with the reasoning of its own reply.
        assert d["meta"]["reasoning"] == [{"turn": i, "text": _thought(data[i - 1])} for i in (1, 3)]
    exports = {fmt: tmp_path / f"export.{fmt}" for fmt in ("openai", "sharegpt", "parquet")}
    for fmt, path in exports.items():
        export_corpus(tmp_path / "first" / "dialogues.jsonl", fmt, path, progress=False)
    import pyarrow.parquet as pq

    messages = [m for line in iter_jsonl(exports["openai"], validate=False) for m in line["messages"]]
    messages += [m for row in pq.read_table(next(exports["parquet"].rglob("*.parquet"))).to_pylist()
                 for m in row["messages"]]
    assert len(messages) == 2 * 3 * 4
    assert not any("The user asks" in m["content"] for m in messages)
    sharegpt = json.loads(exports["sharegpt"].read_text(encoding="utf-8"))
    assert not any("The user asks" in turn["value"] for item in sharegpt for turn in item["conversations"])


@pytest.mark.parametrize(("room", "own", "caps"), [
    (15, None, [8, 15]),    # the server's window leaves 15 tokens: the retry asks for 15, not 16, and finishes
    (8, None, [8]),         # no more room than the cap: no retry, the cut reply is dropped
    (None, None, [8, 16]),  # the server reports no window: twice the cap
    (15, 12, [8, 12]),      # the role's own context_length wins over the server's (and 12 cuts it again)
])
def test_a_cut_replys_retry_fits_the_servers_context(room: int | None, own: int | None, caps: list[int]) -> None:
    from ultrachat.backends.fake import prompt_words
    from ultrachat.backends.openai import OpenAIBackend
    from ultrachat.generate.engine import DialogueEngine, Role
    from ultrachat.generate.world import WorldSector
    from ultrachat.prompts import Prompts
    from ultrachat.recipe import DialogueConfig, ModelConfig, load_recipe

    prompts = Prompts("en")
    sector = WorldSector(load_recipe(), prompts)
    opening = sector.make_opening("world-s0-t000-00000", "How do tides work?", {"topic": "Nature"})
    opening.rounds = 1
    with MockServer() as srv:
        cfg = ModelConfig(backend="openai", base_url=srv.url, model="mock", max_tokens=8, profile="real")
        engine = DialogueEngine(sector, Role(OpenAIBackend(cfg), cfg), Role(OpenAIBackend(cfg), cfg), prompts,
                                DialogueConfig(on_truncated="drop"), ["a tester"])
        prompt = prompt_words(engine.assistant_messages([opening.text]))  # the mock counts words
        srv.control(max_model_len=prompt + room if room else 0)
        if own:
            engine.assistant.cfg = cfg.model_copy(update={"context_length": prompt + own})

        async def run() -> dict:
            try:
                return await engine.run(opening)
            finally:
                await engine.assistant.backend.close()

        record = asyncio.run(run())
        stats = srv.stats()
    assert [max_tokens for _, max_tokens, _ in stats["replies"] if max_tokens != 1] == caps
    assert "over_context" not in stats["counts"]  # no request the server had to refuse
    finished = caps[-1] >= 15  # the mock's answer is 15 words
    assert record["meta"]["stop_reason"] == ("completed" if finished else "truncated")
    assert len(record["data"]) == (2 if finished else 1) and record["meta"]["truncated_turns"] == []


@pytest.mark.parametrize("usage", ["counted", "estimated"])
def test_a_long_dialogue_ends_when_the_context_is_full_never_on_a_refused_request(tmp_path: Path, usage: str) -> None:
    """12 planned rounds in a 250-token window (the mock counts words): each call asks for what
    the window leaves, and the dialogue ends on an answer before a round it has no room for.
    ``counted``: the server reports each prompt's tokens and counts one near the edge (vLLM's
    /tokenize); ``estimated``: it does neither, so every prompt's size is the high estimate."""
    from ultrachat.generate.runner import generate_async
    from ultrachat.recipe import load_recipe

    caps = {"user": 32, "assistant": 64, "planner": 200}
    blind = ["--no-usage", "--no-tokenize"] if usage == "estimated" else []
    with MockServer("--max-model-len", "250", *blind) as srv:
        overrides = {"dialogues": 4, "out": str(tmp_path / "out"), "dialogue.min_rounds": 12,
                     "dialogue.max_rounds": 12, **{f"models.{role}.max_tokens": cap for role, cap in caps.items()}}
        for role in ("user", "assistant"):
            overrides.update({f"models.{role}.backend": "openai", f"models.{role}.base_url": srv.url,
                              f"models.{role}.model": "mock"})
        summary = asyncio.run(generate_async("world", load_recipe(None, overrides), progress=False))
        stats = srv.stats()
    # No request went over the window: the mock refused none (vLLM's 400) and nothing failed.
    assert "over_context" not in stats["counts"] and set(stats["counts"]) >= {"200"}, stats["counts"]
    assert stats["counts"]["200"] == stats["counts"]["requests"]
    assert all(prompt + max_tokens <= 250 for prompt, max_tokens, _ in stats["replies"])
    assert summary.stats.stop_reasons == {"context_full": 4}
    assert any(note.startswith("4 dialogue(s) ended before their planned rounds") for note in summary.notes)
    dialogues = list(iter_jsonl(tmp_path / "out" / "dialogues.jsonl"))
    for d in dialogues:
        meta = d["meta"]
        assert meta["stop_reason"] == "context_full" and 1 <= meta["rounds"] < 12
        assert len(d["data"]) == 2 * meta["rounds"] and meta["truncated_turns"] == []  # ends on a whole answer
    if usage == "counted":  # the server's counts let the dialogues run up to the window
        assert min(d["meta"]["rounds"] for d in dialogues) >= 5 and stats["counts"]["tokenize"] > 0
        assert any(max_tokens < caps["user"] and prompt + max_tokens == 250  # bounded, to the last token
                   for prompt, max_tokens, _ in stats["replies"])
    else:
        assert "tokenize" not in stats["counts"]


def test_a_planner_without_room_in_its_context_is_a_one_line_error(tmp_path: Path, ultrachat_exe: list[str]) -> None:
    # The planner's real-profile cap is 1,024: it needs 256 tokens of room, more than the window.
    with MockServer("--api-key", SECRET, "--max-model-len", "200") as srv:
        res = run_cli(ultrachat_exe, "--base-url", srv.url, "--dialogues", "2", "--out", str(tmp_path / "out"))
        counts = srv.stats()["counts"]
    err = res.stderr.strip()
    assert res.returncode != 0 and len(err.splitlines()) == 1, err
    assert err.startswith("error: planner: a prompt of about ") and "context_length of 200 tokens" in err, err
    assert "max_tokens 1,024" in err and "over_context" not in counts  # refused here, not by the server
