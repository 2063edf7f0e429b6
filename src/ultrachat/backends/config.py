"""One model's config: which backend serves it, how it samples, and its endpoint limits.

A recipe names one per role (``[models.user]``, ``[models.assistant]``); commands that call
one model build it from the shared model flags (:mod:`ultrachat.modelflags`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from ..core.config import Strict


class ModelConfig(Strict):
    """One role's model: which backend serves it and how it samples."""

    backend: Literal["local", "openai", "openai_batch", "vllm", "fake"] = "local"
    model: str = "smollm2-135m"
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    system: str = ""
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    max_tokens: int = Field(256, ge=1)
    # "small": the embedded 135M model's tuned behaviour (task-framed user prompts, short caps,
    # a strict user-turn check); "real": a real model's (the paper's persona user simulator,
    # caps sized for real answers, a user-turn check measured on real chats). Unset: "small"
    # for the embedded model and the fake backend, "real" for every other model.
    profile: Literal["small", "real"] | None = None
    # Server-specific request fields merged into every chat request of this role (openai
    # backend), e.g. {top_k = 20, chat_template_kwargs = {enable_thinking = false}}.
    extra_body: dict[str, Any] = Field(default_factory=dict)
    # Keep a reasoning model's reasoning (``reasoning_content``, ``<think>`` blocks) in each
    # dialogue's meta.reasoning; it never enters a turn.
    keep_reasoning: bool = False
    # The model's context window in tokens: bounds the doubled cap of a cut reply's retry.
    # Unset: what the backend reports (a local model's config, vLLM's max_model_len, an
    # endpoint's /v1/models max_model_len), else no bound.
    context_length: int | None = Field(None, ge=1)
    # Limits for HTTP backends (ignored by in-process ones).
    max_in_flight: int = Field(64, ge=1)
    requests_per_minute: int = Field(0, ge=0)
    tokens_per_minute: int = Field(0, ge=0)
    timeout_s: float = Field(120.0, gt=0)
    max_retries: int = Field(6, ge=0)
    # Batch APIs (backend = "openai_batch"): quiet time before a batch is sent, poll interval.
    batch_wait_s: float = Field(2.0, ge=0)
    batch_poll_s: float = Field(30.0, gt=0)


EMBEDDED_NAMES = ("smollm2-135m",)


def auto_profile(backend: str, model: str) -> Literal["small", "real"]:
    """The profile a model gets when its table does not name one."""
    if backend == "fake" or (backend == "local" and model in EMBEDDED_NAMES):
        return "small"
    return "real"
