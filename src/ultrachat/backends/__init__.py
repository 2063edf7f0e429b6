"""Model backends behind one async interface (see :mod:`ultrachat.backends.base`)."""

from __future__ import annotations

from ..recipe import ModelConfig
from .base import Backend, BackendError, Completion, GenerationParams, Message, Usage

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
    raise BackendError(f"unknown backend '{cfg.backend}'")


class BackendPool:
    """One backend instance per distinct model, shared by every role that uses it, so the
    local micro-batcher batches user and assistant calls together."""

    def __init__(self) -> None:
        self._backends: dict[tuple[str, str, str | None], Backend] = {}

    def get(self, cfg: ModelConfig) -> Backend:
        key = (cfg.backend, cfg.model, cfg.base_url)
        if key not in self._backends:
            self._backends[key] = make_backend(cfg)
        return self._backends[key]

    async def start(self) -> None:
        for backend in self._backends.values():
            await backend.start()

    async def close(self) -> None:
        for backend in self._backends.values():
            await backend.close()
