"""Model backends behind one async interface (see :mod:`ultrachat.backends.base`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from .base import Backend, BackendError, Completion, GenerationParams, Message, Usage
from .config import ModelConfig

if TYPE_CHECKING:
    from .response_cache import ResponseCache

__all__ = ["Backend", "BackendError", "BackendPool", "Completion", "GenerationParams", "Message", "Usage",
           "make_backend"]


def make_backend(cfg: ModelConfig) -> Backend:
    """Build the backend a model config names."""
    if cfg.backend == "local":
        from .local import LocalBackend

        return LocalBackend(cfg.model)
    if cfg.backend == "fake":
        from .fake import FakeBackend

        return FakeBackend.from_model_string(cfg.model)
    if cfg.backend == "openai":
        from .openai import OpenAIBackend

        return OpenAIBackend(cfg)
    if cfg.backend == "openai_batch":
        from .batch import BatchBackend

        return BatchBackend(cfg)
    if cfg.backend == "vllm":
        from .vllm import VLLMBackend

        return VLLMBackend(cfg)
    raise BackendError(f"unknown backend '{cfg.backend}'")


class BackendPool:
    """One backend instance per distinct model, shared by every role that uses it, so the
    local micro-batcher batches user and assistant calls together."""

    def __init__(self, cache: str | Path | None = None) -> None:
        self._backends: dict[tuple[str | None, ...], Backend] = {}
        # A response cache (see .cache) wraps every backend when the recipe sets ``cache``.
        self.cache: ResponseCache | None = None
        if cache is not None:
            from .response_cache import ResponseCache

            self.cache = ResponseCache(cache)

    def get(self, cfg: ModelConfig) -> Backend:
        key: tuple[str | None, ...] = (cfg.backend, cfg.model, cfg.base_url)
        if cfg.extra_body:  # other request fields, other replies: its own backend and cache namespace
            key += (json.dumps(cfg.extra_body, sort_keys=True),)
        if cfg.keep_reasoning:  # its completions carry the reasoning (cached with it)
            key += ("keep_reasoning",)
        if key not in self._backends:
            backend = make_backend(cfg)
            if self.cache is not None:
                from .response_cache import CachingBackend

                backend = CachingBackend(backend, self.cache, "|".join(k or "" for k in key))
            self._backends[key] = backend
        return self._backends[key]

    async def start(self) -> None:
        for backend in self._backends.values():
            await backend.start()

    async def close(self) -> None:
        for backend in self._backends.values():
            await backend.close()
        if self.cache is not None:
            self.cache.close()
