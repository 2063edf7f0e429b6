"""Response cache: keys, hits, errors not cached, and a rerun of a recipe costing no calls."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from ultrachat.backends import BackendPool, Completion, GenerationParams, Usage
from ultrachat.backends.fake import FakeBackend
from ultrachat.backends.response_cache import CachingBackend, ResponseCache, call_key
from ultrachat.generate.runner import generate
from ultrachat.recipe import ModelConfig, load_recipe

MSGS = [{"role": "user", "content": "Tell me about tides."}]


def test_key_covers_what_changes_outputs() -> None:
    base = call_key("fake|fake|", MSGS, GenerationParams(seed=1))
    assert base == call_key("fake|fake|", [dict(m) for m in MSGS], GenerationParams(seed=1))
    changed = [
        call_key("fake|other|", MSGS, GenerationParams(seed=1)),
        call_key("fake|fake|", MSGS, GenerationParams(seed=2)),
        call_key("fake|fake|", MSGS, GenerationParams(seed=1, temperature=0.1)),
        call_key("fake|fake|", MSGS, GenerationParams(seed=1, max_tokens=12)),
        call_key("fake|fake|", MSGS, GenerationParams(seed=1, stop=("\n",))),
        call_key("fake|fake|", [{"role": "system", "content": "x"}, *MSGS], GenerationParams(seed=1)),
    ]
    assert base not in changed and len(set(changed)) == len(changed)


async def test_hits_replay_and_errors_are_not_cached(tmp_path: Path) -> None:
    replies = [Completion("", "error"), Completion("Tides follow the moon.", "stop", Usage(5, 4), "m")]
    inner = FakeBackend(script=replies)
    backend = CachingBackend(inner, ResponseCache(tmp_path / "c.sqlite"), "fake|m|")
    first = await backend.complete(MSGS, GenerationParams(seed=3))
    assert first.finish_reason == "error" and len(backend.cache) == 0
    second = await backend.complete(MSGS, GenerationParams(seed=3))
    third = await backend.complete(MSGS, GenerationParams(seed=3))
    assert (second.text, third.text) == ("Tides follow the moon.", "Tides follow the moon.")
    assert third.usage.total_tokens == 9 and len(inner.calls) == 2
    assert (backend.hits, backend.misses, backend.saved.total_tokens) == (1, 2, 9)
    backend.cache.close()
    # A new process (new connection) sees the same entry; the file is a WAL-mode SQLite db.
    db = sqlite3.connect(tmp_path / "c.sqlite")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("SELECT text FROM responses").fetchall() == [("Tides follow the moon.",)]


def test_pool_shares_one_cache_across_models(tmp_path: Path) -> None:
    pool = BackendPool(tmp_path / "c.sqlite")
    a = pool.get(ModelConfig(backend="fake", model="fake"))
    b = pool.get(ModelConfig(backend="fake", model="fake2"))
    assert isinstance(a, CachingBackend) and isinstance(b, CachingBackend)
    assert a.cache is b.cache and a.model_id != b.model_id
    assert not isinstance(BackendPool().get(ModelConfig(backend="fake")), CachingBackend)


def _lines(path: Path) -> list[str]:
    return sorted(path.read_text(encoding="utf-8").splitlines())


def test_rerun_costs_no_model_calls(tmp_path: Path, fake_recipe_file, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    original = FakeBackend.complete

    async def counting(self: FakeBackend, messages, params):  # type: ignore[no-untyped-def]
        calls.append(1)
        return await original(self, messages, params)

    monkeypatch.setattr(FakeBackend, "complete", counting)
    cache = tmp_path / "responses.sqlite"
    recipe = tmp_path / "cached.toml"
    recipe.write_text(f'cache = "{cache}"\n' + fake_recipe_file().read_text(), encoding="utf-8")
    first = generate("world", load_recipe(recipe, {"dialogues": 12, "out": str(tmp_path / "a")}), progress=False)
    made = len(calls)
    assert first.stats.dialogues == 12 and made > 12
    # Same recipe into a fresh folder with different runtime settings: every call is a hit.
    again = generate("world", load_recipe(recipe, {"dialogues": 12, "out": str(tmp_path / "b"), "concurrency": 3}),
                     progress=False)
    assert again.stats.dialogues == 12 and len(calls) == made
    assert _lines(tmp_path / "a" / "dialogues.jsonl") == _lines(tmp_path / "b" / "dialogues.jsonl")
    # A changed assistant temperature misses exactly the assistant's calls: planning and the
    # user simulator (the fake's replies ignore temperature, so its prompts are unchanged) hit.
    changed = load_recipe(recipe, {"dialogues": 12, "out": str(tmp_path / "c"), "models.assistant.temperature": 0.2})
    generate("world", changed, progress=False)
    metas = [json.loads(line)["meta"] for line in (tmp_path / "c" / "dialogues.jsonl").open()]
    assert all(m["params"]["assistant"]["temperature"] == 0.2 for m in metas)
    assert len(calls) - made == sum(m["rounds"] for m in metas)


def test_kept_reasoning_is_cached_with_its_reply_in_its_own_namespace(tmp_path: Path) -> None:
    from ultrachat.core.turns import split_think

    cache = ResponseCache(tmp_path / "r.sqlite")
    cache.put("k", Completion("The moon pulls the oceans.", "stop", Usage(3, 5), "m", reasoning="recall the moon"))
    hit = cache.get("k")
    cache.close()
    # Back as the <think> block the dialogue engine takes out of a turn, as it does a fresh reply's.
    assert hit is not None and split_think(hit.text) == ("The moon pulls the oceans.", "recall the moon")
    pool = BackendPool()
    plain = ModelConfig(backend="fake", model="fake")
    # A role keeping reasoning gets its own backend (its replies carry it): no replay of a reply stored without.
    assert pool.get(plain) is not pool.get(plain.model_copy(update={"keep_reasoning": True}))
    assert pool.get(plain) is pool.get(plain.model_copy(update={"context_length": 4096}))
