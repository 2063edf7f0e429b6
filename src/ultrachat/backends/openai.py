"""Any OpenAI-compatible chat endpoint (vLLM, llama.cpp server, hosted APIs).

Calls go through the shared :class:`~ultrachat.backends.http.HttpClient` (one aiohttp
session per backend, a pre-encoded orjson body): about a tenth of the official client's
CPU per call, which matters when hundreds of calls are in flight on a small machine (see
docs/benchmarks.md). The client enforces the model config's ``max_in_flight``, requests
per minute and tokens per minute, and retries transient failures (429, 408/409/425, 5xx,
timeouts, dropped or refused connections, malformed bodies) up to ``max_retries`` times,
honouring ``Retry-After``. On top of it this backend decides:

* fatal (key rejected 401/403, model missing 404, quota exhausted, endpoint unreachable
  at start): :class:`BackendError` at once, with a one-line message;
* a request that still fails (or gets another 4xx, such as a content filter's 400)
  returns an empty ``finish_reason="error"`` completion so one bad prompt does not stop a
  long run, while a circuit breaker raises :class:`BackendError` once
  ``BREAKER_REQUESTS`` requests in a row have failed that way with no success in between:
  every request is failing, so the run stops and says why instead of retrying forever.

Request bodies come from :func:`chat_body`; ``extra_body`` (a dict) is merged into every
request's JSON, for server-specific fields. With ``keep_reasoning`` a reasoning model's
``reasoning_content`` (or ``reasoning``) field is kept in :attr:`Completion.reasoning`;
otherwise it is not read. :meth:`OpenAIBackend.context_length` asks ``GET /models`` once for
the model's ``max_model_len`` (vLLM reports it; a server that does not gives ``None``), and
:meth:`OpenAIBackend.count_tokens` asks vLLM's ``POST /tokenize`` (at the server's root) how
many tokens a prompt is; a server without it is not asked again.

The API key is read from the environment variable the config names and is only ever
put in the ``Authorization`` header; it is never logged or written.

Example::

    cfg = ModelConfig(backend="openai", base_url="http://127.0.0.1:8080/v1", model="qwen2.5-7b")
    backend = OpenAIBackend(cfg)
    await backend.start()          # fails fast: unreachable, bad key, unknown model
    out = await backend.complete([{"role": "user", "content": "Hi"}], GenerationParams(max_tokens=64))
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import Mapping
from typing import Any

import orjson

from .base import Backend, BackendError, Completion, FinishReason, GenerationParams, Message, Usage
from .config import ModelConfig
from .http import HttpClient, RequestFailed, normalize_base_url, one_line, retry_after_seconds

__all__ = ["FINISH", "OpenAIBackend", "chat_body", "model_context_length", "normalize_base_url", "parse_completion",
           "reasoning_of", "retry_after_seconds"]

BREAKER_REQUESTS = 3
PROBE_RETRIES = 2  # a start probe that gets no reply gives up sooner: a dead endpoint should fail fast
FINISH: dict[str | None, FinishReason] = {"length": "length", "content_filter": "error"}


def chat_body(model: str, messages: list[Message], params: GenerationParams,
              extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The JSON of one ``/chat/completions`` request; ``extra`` fields are merged in last."""
    body: dict[str, Any] = {"model": model, "messages": messages, "temperature": params.temperature,
                            "top_p": params.top_p, "max_tokens": params.max_tokens}
    if params.seed is not None:
        body["seed"] = params.seed % 2**31  # servers differ on the seed's integer width
    if params.stop:
        body["stop"] = list(params.stop)
    if extra:
        body.update(extra)
    return body


def parse_completion(data: dict[str, Any], model: str, keep_reasoning: bool = False) -> Completion:
    """A chat completion's JSON as a :class:`Completion` (raises on a malformed one); with
    ``keep_reasoning`` the message's reasoning field too."""
    choice = data["choices"][0]
    text = choice["message"].get("content") or ""
    u = data.get("usage") or {}
    usage = Usage(int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or len(text) // 4))
    out = Completion(text, FINISH.get(choice.get("finish_reason"), "stop"), usage, data.get("model") or model)
    if keep_reasoning:
        out.reasoning = reasoning_of(choice["message"])
    return out


def reasoning_of(message: Mapping[str, Any]) -> str:
    """The reasoning a server returns beside the content: ``reasoning_content`` (vLLM's and
    llama.cpp's reasoning parsers, DeepSeek's API) or ``reasoning`` (newer vLLM, OpenRouter)."""
    for name in ("reasoning_content", "reasoning"):
        value = message.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return ""


def model_context_length(listing: dict[str, Any], model: str) -> int | None:
    """The ``max_model_len`` a ``GET /models`` listing reports for ``model`` (the only model
    listed counts too: llama.cpp-style servers serve one model whatever name is sent)."""
    rows = [row for row in listing.get("data") or [] if isinstance(row, dict)]
    row = next((r for r in rows if r.get("id") == model), rows[0] if len(rows) == 1 else None)
    value = row.get("max_model_len") if row else None
    return value if isinstance(value, int) and value > 0 else None


class OpenAIBackend(Backend):
    """Chat completions from an OpenAI-compatible endpoint; see the module docs."""

    def __init__(self, cfg: ModelConfig, backoff_base_s: float = 0.5, backoff_max_s: float = 30.0) -> None:
        self.cfg = cfg
        self.model_name = cfg.model
        self.http = HttpClient(cfg.base_url, api_key=os.environ.get(cfg.api_key_env), timeout_s=cfg.timeout_s,
                               max_in_flight=cfg.max_in_flight, requests_per_minute=cfg.requests_per_minute,
                               tokens_per_minute=cfg.tokens_per_minute, max_retries=cfg.max_retries,
                               backoff_base_s=backoff_base_s, backoff_max_s=backoff_max_s, fatal=self._fatal_reason)
        self.base_url = self.http.base_url
        #: fields merged into every request body (server-specific options)
        self.extra_body: dict[str, Any] = dict(cfg.extra_body)
        self._started = False
        self._start_lock = asyncio.Lock()
        self._failed_in_a_row = 0
        self._last_error = ""
        self._context: asyncio.Task[int | None] | None = None
        self._tokenize = True  # until the server shows it has no /tokenize

    @property
    def stats(self) -> Counter[str]:
        """Attempts, successes, retries and failures by reason (for summaries and tests)."""
        return self.http.stats

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        """Open the connection pool and send one tiny request, so an unreachable endpoint,
        a rejected key or an unknown model stops the run before any work is done."""
        async with self._start_lock:
            if not self._started:
                await self._open()
                self._started = True

    async def _open(self) -> None:
        await self.http.open()
        probe = {"model": self.cfg.model, "messages": [{"role": "user", "content": "Say OK."}], "max_tokens": 1}
        try:
            out = await self._send(orjson.dumps(probe), 0, probe=True)
        except BaseException:
            await self.http.close()
            raise
        if out.finish_reason == "error":
            await self.http.close()
            raise BackendError(f"{self.base_url} failed its first request: {self._last_error}")

    async def close(self) -> None:
        await self.http.close()
        self._started = False

    async def context_length(self) -> int | None:
        """The model's ``max_model_len`` from ``GET /models``, asked once (concurrent callers
        share the request); ``None`` when the server does not say or does not serve the list.
        The backend starts first, so an unreachable endpoint fails on its probe, as a call would."""
        if not self._started:
            await self.start()
        if self._context is None:
            self._context = asyncio.ensure_future(self._ask_context_length())
        return await asyncio.shield(self._context)

    async def _ask_context_length(self) -> int | None:
        def parse(raw: bytes) -> int | None:
            return model_context_length(orjson.loads(raw), self.cfg.model)

        try:
            return await self.http.call("GET", "/models", None, parse, retries=1, optional=True)
        except RequestFailed:
            return None

    async def count_tokens(self, messages: list[Message]) -> int | None:
        """The prompt's tokens as the server counts them (chat template and generation prompt
        included): vLLM's ``POST /tokenize``; ``None`` from a server that does not serve it."""
        if not self._tokenize:
            return None
        if not self._started:
            await self.start()
        body: dict[str, Any] = {"model": self.cfg.model, "messages": messages, "add_generation_prompt": True}
        if "chat_template_kwargs" in self.extra_body:  # e.g. enable_thinking: it changes the template
            body["chat_template_kwargs"] = self.extra_body["chat_template_kwargs"]

        def parse(raw: bytes) -> int:
            count = orjson.loads(raw)["count"]
            if not isinstance(count, int):
                raise TypeError("count is not an integer")
            return count

        root = self.http.base_url.removesuffix("/v1")
        try:
            return await self.http.call("POST", f"{root}/tokenize", orjson.dumps(body), parse, retries=0,
                                        optional=True)
        except RequestFailed:
            self._tokenize = False  # OpenAI, llama.cpp (another body): the estimate it is
            return None

    # -- calls -----------------------------------------------------------------------
    async def complete(self, messages: list[Message], params: GenerationParams) -> Completion:
        if not self._started:
            await self.start()
        payload = chat_body(self.cfg.model, messages, params, self.extra_body)
        estimate = sum(len(m["content"]) for m in messages) // 4 + params.max_tokens if self.http.counts_tokens else 0
        return await self._send(orjson.dumps(payload), estimate)

    async def _send(self, body: bytes, estimate: int, probe: bool = False) -> Completion:
        try:
            out = await self.http.call("POST", "/chat/completions", body, self._parse, cost=estimate,
                                       silent_retries=PROBE_RETRIES if probe else None, probe=probe)
        except RequestFailed as exc:
            self._last_error = exc.reason
            return self._give_up(probe)
        if estimate:
            self.http.refund(estimate - out.usage.total_tokens)
        self._failed_in_a_row = 0
        return out

    def _parse(self, raw: bytes) -> Completion:
        return parse_completion(orjson.loads(raw), self.model_name, self.cfg.keep_reasoning)

    def _fatal_reason(self, status: int, raw: bytes) -> str | None:
        """The message of errors that no retry can fix (they stop every other call)."""
        if status in (401, 403):
            return (f"{self.base_url} rejected the API key (HTTP {status}: {one_line(raw)}); "
                    f"check the {self.cfg.api_key_env} environment variable")
        if status == 404:
            return (f"{self.base_url}: model '{self.cfg.model}' not found (HTTP 404: {one_line(raw)}); "
                    "check the model name (GET /models lists what the server has) and base_url")
        if status == 429 and b"insufficient_quota" in raw:
            return f"{self.base_url}: quota exhausted (HTTP 429: {one_line(raw)})"
        return None

    def _give_up(self, probe: bool) -> Completion:
        self._failed_in_a_row += 1
        self.stats["gave_up"] += 1
        if not probe and self._failed_in_a_row >= BREAKER_REQUESTS:
            raise self.http.fail(
                f"every request to {self.base_url} is failing ({self._failed_in_a_row} requests in a row failed, "
                f"each after up to {self.cfg.max_retries} retries; last: {self._last_error}); stopping")
        return Completion("", "error", Usage(), self.model_name)
