"""The vLLM backend: an in-process vLLM engine (continuous batching) per GPU replica.

``backend = "vllm"`` in a role's recipe table; ``model`` is a Hugging Face model
directory or name, with engine options after ``;``::

    model = "/models/Qwen2.5-7B-Instruct;replicas=4;tp=1;gpu_memory=0.9;max_len=8192"

Multi-round generation re-sends the whole growing dialogue on every call (about 9B prompt
tokens for UltraChat's 2.2B generated ones), so the engine keeps prefix caching on and
every call of one dialogue goes to the same replica: the dialogue runner names the
dialogue in :data:`DIALOGUE`, and :func:`replica_for` maps it to a replica, so each round
finds the previous rounds' KV blocks cached. :meth:`VLLMBackend.report` gives the prefix
cache hit rate and the prompt tokens it saved (also in ``report.json``). On a cluster use
``--ray``: one worker per GPU, each with its own engine, and dialogues never move.

vLLM is imported only when this backend starts (``pip install vllm`` on GPU nodes).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
from collections.abc import Iterator
from typing import Any

from ..core.hashing import uint64
from .base import DIALOGUE, Backend, BackendError, Completion, FinishReason, GenerationParams, Message, Usage
from .config import ModelConfig


def parse_model(model: str) -> tuple[str, dict[str, str]]:
    """``"path;replicas=2;tp=1"`` -> ``("path", {"replicas": "2", "tp": "1"})``."""
    name, *opts = model.split(";")
    options = dict(o.split("=", 1) for o in opts if "=" in o)
    unknown = set(options) - {"replicas", "tp", "gpu_memory", "max_len", "dtype"}
    if unknown:
        raise BackendError(f"vllm model '{model}': unknown option(s) {', '.join(sorted(unknown))} "
                           "(use replicas, tp, gpu_memory, max_len, dtype)")
    return name, options


def replica_for(key: str, replicas: int) -> int:
    """The replica that serves every call of the dialogue ``key`` (stable across processes)."""
    return uint64(key) % replicas


@contextlib.contextmanager
def _visible_gpus(ids: list[int]) -> Iterator[None]:
    """vLLM's engine process picks its GPUs from CUDA_VISIBLE_DEVICES when it starts."""
    old = os.environ.get("CUDA_VISIBLE_DEVICES")
    visible = old.split(",") if old else [str(i) for i in range(max(ids) + 1)]
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(visible[i] for i in ids)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = old


class VLLMBackend(Backend):
    """vLLM engines with prefix caching and dialogue -> replica affinity; see the module docs."""

    def __init__(self, cfg: ModelConfig) -> None:
        self.cfg = cfg
        self.path, self.options = parse_model(cfg.model)
        self.model_name = self.path
        self.replicas = int(self.options.get("replicas", 1))
        self.tp = int(self.options.get("tp", 1))
        self._engines: list[Any] = []
        self._tokenizer: Any = None
        self._ids = itertools.count()
        self._start_lock = asyncio.Lock()
        self._spread = itertools.count()  # calls with no dialogue (planning) rotate over replicas
        self.prompt_tokens = 0
        self.cached_prompt_tokens = 0
        self.calls_per_replica = [0] * self.replicas

    async def start(self) -> None:
        async with self._start_lock:
            if self._engines:
                return
            try:
                from vllm import AsyncEngineArgs, AsyncLLMEngine
            except ImportError:
                raise BackendError("the vllm backend needs vLLM on a GPU machine: pip install vllm") from None
            max_len = int(self.options["max_len"]) if "max_len" in self.options else None
            for r in range(self.replicas):
                args = AsyncEngineArgs(model=self.path, tensor_parallel_size=self.tp, enable_prefix_caching=True,
                                       gpu_memory_utilization=float(self.options.get("gpu_memory", 0.9)),
                                       max_model_len=max_len, dtype=self.options.get("dtype", "auto"))
                with _visible_gpus(list(range(r * self.tp, (r + 1) * self.tp))):
                    self._engines.append(AsyncLLMEngine.from_engine_args(args))
            self._tokenizer = await self._engines[0].get_tokenizer()

    async def context_length(self) -> int | None:
        """The engine's ``max_model_len`` (the ``max_len`` option, else the model's own)."""
        await self.start()
        config = await self._engines[0].get_model_config()
        return int(config.max_model_len)

    async def count_tokens(self, messages: list[Message]) -> int | None:
        """The prompt's tokens as the engine will see them: the chat template's text, encoded as
        ``generate`` encodes a text prompt (so the count equals its ``prompt_token_ids``)."""
        await self.start()
        return len(self._tokenizer.encode(self._render(messages)))

    def _render(self, messages: list[Message]) -> str:
        return self._tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    async def close(self) -> None:
        for engine in self._engines:
            with contextlib.suppress(Exception):
                engine.shutdown()
        self._engines = []

    def _replica(self) -> int:
        key = DIALOGUE.get()
        return replica_for(key, self.replicas) if key else next(self._spread) % self.replicas

    async def complete(self, messages: list[Message], params: GenerationParams) -> Completion:
        from vllm import SamplingParams

        await self.start()
        prompt = self._render(messages)
        sampling = SamplingParams(temperature=params.temperature, top_p=params.top_p, max_tokens=params.max_tokens,
                                  seed=params.seed, stop=list(params.stop) or None)
        replica = self._replica()
        self.calls_per_replica[replica] += 1
        final = None
        async for output in self._engines[replica].generate(prompt, sampling, f"uc-{next(self._ids)}"):
            final = output
        if final is None or not final.outputs:
            return Completion("", "error", Usage(), self.model_name)
        choice = final.outputs[0]
        prompt_tokens = len(final.prompt_token_ids or [])
        self.prompt_tokens += prompt_tokens
        self.cached_prompt_tokens += int(getattr(final, "num_cached_tokens", 0) or 0)
        finish: FinishReason = "length" if choice.finish_reason == "length" else "stop"
        return Completion(choice.text.strip(), finish, Usage(prompt_tokens, len(choice.token_ids)), self.model_name)

    def report(self) -> dict[str, Any]:
        """Prefix cache figures for the run report."""
        rate = self.cached_prompt_tokens / self.prompt_tokens if self.prompt_tokens else 0.0
        return {"replicas": self.replicas, "calls_per_replica": self.calls_per_replica,
                "prompt_tokens": self.prompt_tokens, "prompt_tokens_saved": self.cached_prompt_tokens,
                "prefix_cache_hit_rate": round(rate, 4)}
