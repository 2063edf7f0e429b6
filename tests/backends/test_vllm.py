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
