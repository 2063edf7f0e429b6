"""vLLM backend: option parsing and dialogue -> replica affinity everywhere; generation with
prefix caching only where a GPU and vLLM are present (skipped with the reason elsewhere)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
from collections import Counter
from pathlib import Path

import pytest

from ultrachat.backends.base import BackendError
from ultrachat.backends.vllm import DIALOGUE, VLLMBackend, parse_model, replica_for
from ultrachat.recipe import ModelConfig


def test_model_options_and_errors() -> None:
    assert parse_model("/m/qwen;replicas=2;tp=1") == ("/m/qwen", {"replicas": "2", "tp": "1"})
    with pytest.raises(BackendError, match="unknown option"):
        parse_model("/m/qwen;replica=2")


def test_every_call_of_a_dialogue_goes_to_one_replica() -> None:
    backend = VLLMBackend(ModelConfig(backend="vllm", model="/m;replicas=4"))
    ids = [f"world-s0-t{t:03d}-{k:05d}" for t in range(30) for k in range(20)]
    spread = Counter(replica_for(i, 4) for i in ids)
    assert set(spread) == {0, 1, 2, 3} and min(spread.values()) > 100  # balanced

    async def calls_of(dialogue: str) -> set[int]:
        DIALOGUE.set(dialogue)
        return {backend._replica() for _ in range(7)}

    for dialogue in ids[:20]:
        assert asyncio.run(calls_of(dialogue)) == {replica_for(dialogue, 4)}


def test_context_length_is_the_engines_max_model_len() -> None:
    """What the engine says (vLLM's ``get_model_config().max_model_len``); a stand-in engine here,
    the real one in the GPU test below."""

    class Engine:
        async def get_model_config(self) -> object:
            return type("ModelConfig", (), {"max_model_len": 2048})()

    backend = VLLMBackend(ModelConfig(backend="vllm", model="/m;max_len=2048"))
    backend._engines = [Engine()]  # started
    assert asyncio.run(backend.context_length()) == 2048


def test_a_prompt_is_counted_as_the_engine_encodes_it() -> None:
    """The chat template's text, encoded with the tokenizer's defaults (special tokens added, as
    ``generate`` encodes a text prompt); a stand-in tokenizer here, the real one in the GPU test."""

    class Tokenizer:
        def apply_chat_template(self, messages: list[dict[str, str]], add_generation_prompt: bool,
                                tokenize: bool) -> str:
            assert add_generation_prompt and not tokenize
            return "".join(f"<{m['role']}> {m['content']} " for m in messages) + "<assistant>"

        def encode(self, text: str) -> list[int]:
            return [0, *range(len(text.split()))]  # a BOS token, then a token a word

    backend = VLLMBackend(ModelConfig(backend="vllm", model="/m"))
    backend._engines, backend._tokenizer = [object()], Tokenizer()  # started
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "How do tides work?"}]
    assert asyncio.run(backend.count_tokens(messages)) == 1 + 3 + 5 + 1


def _gpu_reason() -> str | None:
    if importlib.util.find_spec("vllm") is None:
        return "vLLM is not installed (GPU nodes: pip install vllm)"
    import torch

    return None if torch.cuda.is_available() else "no CUDA GPU on this machine"


@pytest.mark.skipif(_gpu_reason() is not None, reason=f"vLLM backend needs a GPU: {_gpu_reason()}")
def test_vllm_generation_hits_the_prefix_cache(tmp_path: Path, embedded_model_dir: Path) -> None:
    from ultrachat.generate.runner import generate
    from ultrachat.recipe import load_recipe

    model = f"{embedded_model_dir};gpu_memory=0.3;max_len=2048"
    recipe = tmp_path / "vllm.toml"
    recipe.write_text(f'[models.user]\nbackend = "vllm"\nmodel = "{model}"\nmax_tokens = 48\n'
                      f'[models.assistant]\nbackend = "vllm"\nmodel = "{model}"\nmax_tokens = 96\n', encoding="utf-8")
    summary = generate("world", load_recipe(recipe, {"dialogues": 8, "out": str(tmp_path / "out"),
                                                      "dialogue.min_rounds": 3, "dialogue.max_rounds": 3}),
                       progress=False)
    assert summary.stats.dialogues == 8
    engines = json.loads((tmp_path / "out" / "report.json").read_text())["runs"][0]["engines"]
    figures = engines[f"vllm:{model}"]
    # Round k re-sends rounds 1..k-1: with prefix caching most of those tokens are cached.
    assert figures["prompt_tokens_saved"] > 0 and figures["prefix_cache_hit_rate"] > 0.2

    async def window() -> int | None:
        backend = VLLMBackend(ModelConfig(backend="vllm", model=model))
        try:
            return await backend.context_length()
        finally:
            await backend.close()

    assert asyncio.run(window()) == 2048  # max_len, as the engine reports it

    async def counted() -> tuple[int | None, int]:
        from ultrachat.backends.base import GenerationParams

        backend = VLLMBackend(ModelConfig(backend="vllm", model=model))
        messages = [{"role": "user", "content": "How do the tides of the ocean work?"}]
        try:
            out = await backend.complete(messages, GenerationParams(max_tokens=4, seed=1))
            return await backend.count_tokens(messages), out.usage.prompt_tokens
        finally:
            await backend.close()

    count, used = asyncio.run(counted())
    assert count == used > 0  # the count the context bound uses is the engine's own
