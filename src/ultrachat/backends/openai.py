"""Any OpenAI-compatible chat endpoint (vLLM, llama.cpp server, hosted APIs) over aiohttp.

The hot path is one :class:`aiohttp.ClientSession` per backend, a pre-built URL and
headers, and orjson: about a tenth of the official client's CPU per call, which
matters when hundreds of calls are in flight on a small machine (see docs/benchmarks.md).

Per model config it enforces requests in flight (``max_in_flight``), requests per minute
and tokens per minute. Failures are handled in three tiers:

* transient (429, 408/409/425, 5xx, timeouts, dropped or refused connections, malformed
  bodies): retried up to ``max_retries`` times with exponential backoff and jitter, waiting
  at least what ``Retry-After`` says (seconds or HTTP-date);
* fatal (key rejected 401/403, model missing 404, quota exhausted, endpoint unreachable
  at start): :class:`BackendError` at once, with a one-line message;
* a request that still fails (or gets another 4xx, such as a content filter's 400)
  returns an empty ``finish_reason="error"`` completion so one bad prompt does not stop a
  long run, while a circuit breaker raises :class:`BackendError` once
  ``BREAKER_REQUESTS`` requests in a row have failed that way with no success in between:
  every request is failing, so the run stops and says why instead of retrying forever.

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
import json
import os
import random
import re
import time
from collections import Counter
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import orjson

from ..recipe import ModelConfig
from .base import Backend, BackendError, Completion, FinishReason, GenerationParams, Message, Usage
from .ratelimit import RateLimiter

DEFAULT_BASE_URL = "https://api.openai.com/v1"
RETRY_STATUS = frozenset({408, 409, 425, 429})  # plus every 5xx
BREAKER_REQUESTS = 3
PROBE_RETRIES = 2  # the start probe gives up sooner: a dead endpoint should fail fast
MAX_RETRY_AFTER_S = 300.0
FINISH: dict[str | None, FinishReason] = {"length": "length", "content_filter": "error"}


def normalize_base_url(url: str | None) -> str:
    """``http://host:8000`` -> ``http://host:8000/v1``; trailing slashes dropped."""
    url = (url or DEFAULT_BASE_URL).rstrip("/")
    if urlsplit(url).scheme not in ("http", "https"):
        raise BackendError(f"base_url '{url}' needs a scheme, e.g. http://{url}")
    return url if urlsplit(url).path else url + "/v1"


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (delta-seconds or HTTP-date form)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError):
        return None


def _one_line(raw: bytes | str, limit: int = 200) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    try:
        err = json.loads(text).get("error", text)
        text = err.get("message", str(err)) if isinstance(err, dict) else str(err)
    except (ValueError, AttributeError):
        pass
    text = re.sub(r"\s+", " ", text).strip()
    return text[:limit] + ("..." if len(text) > limit else "")


class OpenAIBackend(Backend):
    """Chat completions from an OpenAI-compatible endpoint; see the module docs."""

    def __init__(self, cfg: ModelConfig, backoff_base_s: float = 0.5, backoff_max_s: float = 30.0) -> None:
        self.cfg = cfg
        self.model_name = cfg.model
        self.base_url = normalize_base_url(cfg.base_url)
        self._url = self.base_url + "/chat/completions"
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self._session: Any = None
        self._start_lock = asyncio.Lock()
        self._slots = asyncio.Semaphore(cfg.max_in_flight)
        self._rpm = RateLimiter(cfg.requests_per_minute) if cfg.requests_per_minute else None
        self._tpm = RateLimiter(cfg.tokens_per_minute) if cfg.tokens_per_minute else None
        self._failed_in_a_row = 0
        self._fatal: str | None = None
        self._last_error = ""
        #: attempts, successes, retries and failures by reason (for summaries and tests)
        self.stats: Counter[str] = Counter()

    # -- lifecycle -------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = os.environ.get(self.cfg.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    async def start(self) -> None:
        """Open the connection pool and send one tiny request, so an unreachable endpoint,
        a rejected key or an unknown model stops the run before any work is done."""
        async with self._start_lock:
            if self._session is None:
                await self._open()

    async def _open(self) -> None:
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=self.cfg.timeout_s, sock_connect=min(10.0, self.cfg.timeout_s))
        connector = aiohttp.TCPConnector(limit=self.cfg.max_in_flight, ttl_dns_cache=300, keepalive_timeout=60)
        self._session = aiohttp.ClientSession(headers=self._headers(), timeout=timeout, connector=connector,
                                              skip_auto_headers=("User-Agent",))
        probe = {"model": self.cfg.model, "messages": [{"role": "user", "content": "Say OK."}], "max_tokens": 1}
        try:
            out = await self._send(orjson.dumps(probe), 0, probe=True)
        except BaseException:
            await self.close()
            raise
        if out.finish_reason == "error":
            await self.close()
            raise BackendError(f"{self.base_url} failed its first request: {self._last_error}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- calls -----------------------------------------------------------------------
    async def complete(self, messages: list[Message], params: GenerationParams) -> Completion:
        if self._session is None:
            await self.start()
        payload: dict[str, Any] = {"model": self.cfg.model, "messages": messages, "temperature": params.temperature,
                                   "top_p": params.top_p, "max_tokens": params.max_tokens}
        if params.seed is not None:
            payload["seed"] = params.seed % 2**31  # servers differ on the seed's integer width
        if params.stop:
            payload["stop"] = list(params.stop)
        estimate = sum(len(m["content"]) for m in messages) // 4 + params.max_tokens if self._tpm else 0
        return await self._send(orjson.dumps(payload), estimate)

    async def _send(self, body: bytes, estimate: int, probe: bool = False) -> Completion:
        import aiohttp

        retries = min(self.cfg.max_retries, PROBE_RETRIES) if probe else self.cfg.max_retries
        for attempt in range(retries + 1):
            if self._fatal:
                raise BackendError(self._fatal)
            if self._rpm:
                await self._rpm.acquire()
            if self._tpm:
                await self._tpm.acquire(estimate)
            wait: float | None = None
            self.stats["attempts"] += 1
            async with self._slots:
                try:
                    async with self._session.post(self._url, data=body) as resp:
                        raw = await resp.read()
                        status = resp.status
                        if status in (429, 503):
                            wait = retry_after_seconds(resp.headers.get("Retry-After"))
                except aiohttp.ClientConnectorError as exc:
                    if probe:
                        raise BackendError(f"cannot reach {self.base_url}: {exc.os_error or exc}") from None
                    status, raw = 0, f"cannot connect: {exc.os_error or exc}".encode()
                except TimeoutError:
                    status, raw = 0, f"no reply within {self.cfg.timeout_s:g} s".encode()
                except aiohttp.ClientError as exc:
                    status, raw = 0, f"connection dropped ({type(exc).__name__})".encode()
            if self._tpm and status != 200:
                self._tpm.adjust(estimate)  # nothing was generated
            if status == 200:
                try:
                    return self._success(raw, estimate)
                except (ValueError, KeyError, IndexError, TypeError, AttributeError):
                    reason = "malformed reply body"
            else:
                reason = f"HTTP {status}: {_one_line(raw)}" if status else raw.decode()
                self._check_fatal(status, raw)
            self._last_error = reason
            self.stats[f"failed: {reason.split(':')[0]}"] += 1
            if 400 <= status < 500 and status not in RETRY_STATUS:
                break  # another 4xx: this request will not succeed on retry
            if attempt < retries:
                self.stats["retries"] += 1
                await asyncio.sleep(self._backoff(attempt, wait))
        return self._give_up(probe)

    def _success(self, raw: bytes, estimate: int) -> Completion:
        data = orjson.loads(raw)
        choice = data["choices"][0]
        text = choice["message"].get("content") or ""
        u = data.get("usage") or {}
        usage = Usage(int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or len(text) // 4))
        if self._tpm:
            self._tpm.adjust(estimate - usage.total_tokens)
        self._failed_in_a_row = 0
        self.stats["ok"] += 1
        finish = FINISH.get(choice.get("finish_reason"), "stop")
        return Completion(text, finish, usage, data.get("model") or self.model_name)

    def _check_fatal(self, status: int, raw: bytes) -> None:
        """Raise (and stop every other call) on errors that no retry can fix."""
        detail = _one_line(raw)
        if status in (401, 403):
            self._fatal = (f"{self.base_url} rejected the API key (HTTP {status}: {detail}); "
                           f"check the {self.cfg.api_key_env} environment variable")
        elif status == 404:
            self._fatal = (f"{self.base_url}: model '{self.cfg.model}' not found (HTTP 404: {detail}); "
                           "check the model name (GET /models lists what the server has) and base_url")
        elif status == 429 and b"insufficient_quota" in raw:
            self._fatal = f"{self.base_url}: quota exhausted (HTTP 429: {detail})"
        if self._fatal:
            raise BackendError(self._fatal)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        delay = min(self.backoff_max_s, self.backoff_base_s * 2**attempt)
        delay = random.uniform(delay / 2, delay)  # jitter spreads retries of calls that failed together
        if retry_after is not None:
            delay = max(delay, min(retry_after, MAX_RETRY_AFTER_S) * random.uniform(1.0, 1.1))
        return delay

    def _give_up(self, probe: bool) -> Completion:
        self._failed_in_a_row += 1
        self.stats["gave_up"] += 1
        if not probe and self._failed_in_a_row >= BREAKER_REQUESTS:
            self._fatal = (f"every request to {self.base_url} is failing ({self._failed_in_a_row} requests in a "
                           f"row failed, each after up to {self.cfg.max_retries} retries; last: {self._last_error}); "
                           "stopping")
            raise BackendError(self._fatal)
        return Completion("", "error", Usage(), self.model_name)
