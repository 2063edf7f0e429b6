"""The one HTTP client for every endpoint call: chat completions (generate, answer, judges,
best-of-n, stats coherence), embeddings, the Batch API and streamed chat.

One :class:`HttpClient` per endpoint holds one :class:`aiohttp.ClientSession` (keep-alive
pool sized to ``max_in_flight``), the ``/v1``-normalised base URL and the auth header, and
enforces requests in flight, requests per minute and tokens per minute. Every request goes
through one retry loop:

* transient failures (429, 408/409/425, 5xx, timeouts, dropped or refused connections, a
  2xx body that ``parse`` rejects) are retried up to ``max_retries`` times with exponential
  backoff and jitter, waiting at least what ``Retry-After`` says (seconds or HTTP-date);
* an error the caller's ``fatal`` hook names (a rejected key, say) raises
  :class:`BackendError` at once and stops every later request of this client;
* another 4xx, or a transient failure that outlasts the retries, raises
  :class:`RequestFailed` (one-line ``reason``); callers decide what that means.

The hot path is what the measured backend always did (pre-encoded body, one session,
orjson, no per-call objects besides the request): about 0.5 ms client CPU per call with
256 in flight on uvloop (docs/benchmarks.md, orchestration). The API key is only ever put
in the ``Authorization`` header; it is never logged.

Example::

    async with HttpClient("http://127.0.0.1:8000", api_key=os.environ.get("KEY"), max_retries=3) as http:
        body = orjson.dumps({"model": "m", "input": ["a comet"]})
        rows = await http.call("POST", "/embeddings", body, orjson.loads)  # -> .../v1/embeddings
        async for event in http.stream("/chat/completions", chat_body):     # server-sent events
            print(event["choices"][0]["delta"].get("content", ""), end="")
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

import orjson

from .base import BackendError
from .ratelimit import RateLimiter

T = TypeVar("T")

DEFAULT_BASE_URL = "https://api.openai.com/v1"
RETRY_STATUS = frozenset({408, 409, 425, 429})  # plus every 5xx
MAX_RETRY_AFTER_S = 300.0
#: what a ``parse`` callback raises on a malformed body (retried like a dropped connection)
PARSE_ERRORS = (ValueError, KeyError, IndexError, TypeError, AttributeError)
#: one multipart field: a plain value, or ``(filename, content, content_type)``
FormField = str | tuple[str, bytes, str]
FatalCheck = Callable[[int, bytes], "str | None"]


class RequestFailed(Exception):
    """A request that got a non-retryable 4xx, or failed every retry; ``reason`` is one line
    (``HTTP 400: ...``, ``no reply within 5 s``), ``status`` 0 when no HTTP reply came,
    ``attempts`` how many were made."""

    def __init__(self, reason: str, status: int, attempts: int = 1) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.attempts = attempts


def normalize_base_url(url: str | None) -> str:
    """``http://host:8000`` -> ``http://host:8000/v1``; trailing slashes dropped. An unset URL
    is ``OPENAI_BASE_URL`` from the environment (the OpenAI clients' convention), else OpenAI's."""
    url = (url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
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


def one_line(raw: bytes | str, limit: int = 200) -> str:
    """An error body as one short line: the ``error.message`` of OpenAI-style JSON, else the text."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    try:
        err = json.loads(text).get("error", text)
        text = err.get("message", str(err)) if isinstance(err, dict) else str(err)
    except (ValueError, AttributeError):
        pass
    text = re.sub(r"\s+", " ", text).strip()
    return text[:limit] + ("..." if len(text) > limit else "")


def _form(fields: dict[str, FormField]) -> tuple[Any, dict[str, str]]:
    """A multipart body (built afresh for every attempt: aiohttp consumes it) and its header."""
    import aiohttp

    form = aiohttp.FormData()
    for name, value in fields.items():
        if isinstance(value, tuple):
            filename, content, content_type = value
            form.add_field(name, content, filename=filename, content_type=content_type)
        else:
            form.add_field(name, value)
    payload = form()
    return payload, {"Content-Type": payload.content_type}


class HttpClient:
    """Retries, limits and one connection pool for one endpoint; see the module docs.

    ``fatal(status, body)`` returns a message for errors no retry can fix (raised as
    :class:`BackendError`, and every later request of this client raises it too).
    """

    def __init__(self, base_url: str | None, *, api_key: str | None = None, timeout_s: float = 120.0,
                 max_in_flight: int = 64, requests_per_minute: int = 0, tokens_per_minute: int = 0,
                 max_retries: int = 6, backoff_base_s: float = 0.5, backoff_max_s: float = 30.0,
                 fatal: FatalCheck | None = None) -> None:
        self.base_url = normalize_base_url(base_url)
        self.api_key = api_key
        self.timeout_s = timeout_s
        self.max_in_flight = max_in_flight
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.fatal = fatal
        self._slots = asyncio.Semaphore(max_in_flight)
        self._rpm = RateLimiter(requests_per_minute) if requests_per_minute else None
        self._tpm = RateLimiter(tokens_per_minute) if tokens_per_minute else None
        self._session: Any = None
        self._fatal: str | None = None
        #: attempts, successes, retries and failures by reason (for summaries and tests)
        self.stats: Counter[str] = Counter()
        #: seconds slept between attempts, in all
        self.waited_s = 0.0

    # -- lifecycle -------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        return self._session is not None

    @property
    def counts_tokens(self) -> bool:
        """Whether a tokens-per-minute limit is set (callers skip estimating otherwise)."""
        return self._tpm is not None

    async def open(self) -> None:
        import aiohttp

        if self._session is not None:
            return
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        timeout = aiohttp.ClientTimeout(total=self.timeout_s, sock_connect=min(10.0, self.timeout_s))
        connector = aiohttp.TCPConnector(limit=self.max_in_flight, ttl_dns_cache=300, keepalive_timeout=60)
        self._session = aiohttp.ClientSession(headers=headers, timeout=timeout, connector=connector,
                                              skip_auto_headers=("User-Agent",))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> HttpClient:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def fail(self, message: str) -> BackendError:
        """Stop this client: every later request raises ``BackendError(message)``."""
        self._fatal = message
        return BackendError(message)

    def refund(self, tokens: float) -> None:
        """Correct a tokens-per-minute estimate once the reply says what was used."""
        if self._tpm:
            self._tpm.adjust(tokens)

    # -- requests --------------------------------------------------------------------
    async def call(self, method: str, path: str, body: bytes | None, parse: Callable[[bytes], T], *,
                   form: dict[str, FormField] | None = None, cost: int = 0, retries: int | None = None,
                   probe: bool = False, silent_retries: int | None = None, optional: bool = False) -> T:
        """``parse`` of the body of the first 2xx reply to ``method base_url+path`` (a ``path``
        that is a whole URL, ``http://...``, is used as it is: a server's root endpoints).

        ``body`` is sent as JSON (or ``form`` as multipart); ``cost`` is the estimated tokens
        for the tokens-per-minute limit; ``probe`` makes a refused connection fatal at once;
        ``silent_retries`` bounds the retries after attempts that got no reply at all (a
        timeout, a dropped connection), while a server that answers (429, 5xx, a cut body)
        gets them all; ``optional`` (a request the server may not serve) skips the ``fatal``
        hook, so its failure is a :class:`RequestFailed` that stops nothing else.
        """
        if self._session is None:
            await self.open()
        url = path if path.startswith(("http://", "https://")) else self.base_url + path
        retries = self.max_retries if retries is None else retries
        silent = 0  # attempts that got no reply
        for attempt in range(retries + 1):
            await self._admit(cost)
            data, headers = _form(form) if form is not None else (body, None)
            async with self._slots:
                status, raw, wait = await self._attempt(method, url, data, headers, probe)
            if 200 <= status < 300:
                try:
                    out = parse(raw)
                except PARSE_ERRORS:
                    reason = "malformed reply body"
                else:
                    self.stats["ok"] += 1
                    return out
            else:
                reason = self._failure(status, raw, optional)
            silent += not status
            hopeless = silent_retries is not None and silent > silent_retries  # a silent endpoint fails fast
            if await self._retry_or_stop(status, reason, attempt, attempt if hopeless else retries, wait, cost):
                raise RequestFailed(reason, status, attempt + 1)
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    async def stream(self, path: str, body: bytes, *, retries: int | None = None) -> AsyncIterator[dict[str, Any]]:
        """The server-sent events of one POST, parsed; a server that answers with one JSON
        body instead yields that body. Failures before the reply starts are retried like
        :meth:`call`; once events flowed, a failure raises :class:`RequestFailed`."""
        if self._session is None:
            await self.open()
        import aiohttp

        url = self.base_url + path
        retries = self.max_retries if retries is None else retries
        headers = {"Accept": "text/event-stream"}
        # The total timeout would cut a long answer: bound each read instead.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=min(10.0, self.timeout_s), sock_read=self.timeout_s)
        for attempt in range(retries + 1):
            await self._admit(0)
            try:
                resp = await self._session.post(url, data=body, headers=headers, timeout=timeout)
            except (aiohttp.ClientError, TimeoutError) as exc:
                status, raw, wait = 0, self._no_reply(exc), None
            else:
                if resp.status == 200:
                    async with resp:
                        async for event in _events(resp, self.timeout_s):
                            yield event
                    self.stats["ok"] += 1
                    return
                async with resp:
                    status, raw = resp.status, await resp.read()
                    wait = retry_after_seconds(resp.headers.get("Retry-After"))
            reason = self._failure(status, raw)
            if await self._retry_or_stop(status, reason, attempt, retries, wait, 0):
                raise RequestFailed(reason, status, attempt + 1)

    # -- the retry loop's steps ------------------------------------------------------
    async def _admit(self, cost: int) -> None:
        if self._fatal:
            raise BackendError(self._fatal)
        if self._rpm:
            await self._rpm.acquire()
        if self._tpm:
            await self._tpm.acquire(cost)
        self.stats["attempts"] += 1

    async def _attempt(self, method: str, url: str, data: Any, headers: dict[str, str] | None,
                       probe: bool) -> tuple[int, bytes, float | None]:
        """One request: ``(status, body, Retry-After seconds)``; status 0 when no reply came."""
        import aiohttp

        try:
            async with self._session.request(method, url, data=data, headers=headers) as resp:
                raw = await resp.read()
                status = resp.status
                if status in (429, 503):
                    return status, raw, retry_after_seconds(resp.headers.get("Retry-After"))
                return status, raw, None
        except aiohttp.ClientConnectorError as exc:
            if probe:
                raise BackendError(f"cannot reach {self.base_url}: {exc.os_error or exc}") from None
            return 0, self._no_reply(exc), None
        except (aiohttp.ClientError, TimeoutError) as exc:
            return 0, self._no_reply(exc), None

    def _no_reply(self, exc: BaseException) -> bytes:
        import aiohttp

        if isinstance(exc, aiohttp.ClientConnectorError):
            return f"cannot connect: {exc.os_error or exc}".encode()
        if isinstance(exc, TimeoutError):
            return f"no reply within {self.timeout_s:g} s".encode()
        return f"connection dropped ({type(exc).__name__})".encode()

    def _failure(self, status: int, raw: bytes, optional: bool = False) -> str:
        """The one-line reason of a failed attempt; raises at once on a fatal error."""
        if not status:
            return raw.decode()
        if self.fatal and not optional and (message := self.fatal(status, raw)):
            raise self.fail(message)
        return f"HTTP {status}: {one_line(raw)}"

    async def _retry_or_stop(self, status: int, reason: str, attempt: int, retries: int, wait: float | None,
                             cost: int) -> bool:
        """Count the failure and sleep before the next attempt; True when there is none."""
        if self._tpm:
            self._tpm.adjust(cost)  # nothing was generated
        self.stats[f"failed: {reason.split(':')[0]}"] += 1
        if (400 <= status < 500 and status not in RETRY_STATUS) or attempt >= retries:
            return True  # another 4xx will not succeed on retry
        self.stats["retries"] += 1
        delay = self._backoff(attempt, wait)
        self.waited_s += delay
        await asyncio.sleep(delay)
        return False

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        delay = min(self.backoff_max_s, self.backoff_base_s * 2**attempt)
        delay = random.uniform(delay / 2, delay)  # jitter spreads retries of calls that failed together
        if retry_after is not None:
            delay = max(delay, min(retry_after, MAX_RETRY_AFTER_S) * random.uniform(1.0, 1.1))
        return delay


async def _events(resp: Any, timeout_s: float) -> AsyncIterator[dict[str, Any]]:
    """The ``data:`` events of a server-sent event stream (or one JSON body) as dicts."""
    import aiohttp

    try:
        if not resp.headers.get("Content-Type", "").startswith("text/event-stream"):
            yield orjson.loads(await resp.read())
            return
        async for raw in resp.content:
            line = raw.strip()
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                return
            yield orjson.loads(data)
    except TimeoutError:
        raise RequestFailed(f"no data within {timeout_s:g} s", 200) from None
    except aiohttp.ClientError as exc:
        raise RequestFailed(f"connection dropped ({type(exc).__name__})", 200) from None
    except orjson.JSONDecodeError as exc:
        raise RequestFailed(f"malformed event ({exc})", 200) from None
