"""A mock OpenAI-compatible chat server for tests and benchmarks (a real HTTP process).

It answers ``POST /v1/chat/completions`` with the deterministic replies of the fake
backend (numbered lists for list prompts, questions for the user simulator, short
answers otherwise; as server-sent events, a word a chunk, when the request says
``"stream": true``) and ``POST /v1/embeddings`` with 8-dimensional vectors hashed from each
input, after a configurable latency, and injects faults on demand (into both):

* ``429`` with ``Retry-After`` (seconds, or an HTTP-date with ``--retry-after-date``),
* ``500``, ``timeout`` (the reply hangs for ``--hang-s``), ``malformed`` (a cut-off JSON
  body with status 200), ``drop`` (the connection is closed without a reply) and ``400``
  (a request rejected for its content, which no retry fixes).

Faults come from probabilities (``--fault-429 0.1 ...``), from ``--fail-after N`` (every
request after the first N gets a 500), or from a queue set at run time with
``POST /_control {"queue": ["429", "drop"], "reset": true}`` (the next requests take them in order).
``GET /_stats`` returns counters and one ``[time, status, tokens]`` row per request, so tests
can measure the rate a client really sent, and one ``[prompt tokens, max_tokens, finish]`` row
per chat reply. With ``--api-key`` requests without that bearer token get 401; with
``--models a,b`` other model names get 404.

Like a reasoning model, ``--reasoning field`` adds a ``reasoning_content`` field to each reply
(streamed as ``reasoning_content`` deltas first) and ``--reasoning think`` puts the reasoning in
a ``<think>...</think>`` block before the content. Like vLLM, ``--max-model-len N`` reports
``max_model_len`` in ``GET /v1/models`` and rejects (400) a request whose prompt plus
``max_tokens`` exceeds it. Prompt tokens are words (the fake backend's usage). With
``--no-usage`` replies carry no ``usage`` (as some proxies and older servers send them).
``POST /tokenize`` (at the root, as vLLM serves it) counts a chat prompt's tokens (its words);
``--no-tokenize`` answers it 404, as servers without it do.

Run it::

    python -m ultrachat.testing.mock_openai --port 8000 --latency-ms 200 --fault-500 0.05
    ultrachat generate world --base-url http://127.0.0.1:8000/v1 --model mock --dialogues 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

from .. import aio

_STANDARD_FIELDS = {"model", "messages", "temperature", "top_p", "max_tokens", "max_completion_tokens", "seed",
                    "stop", "n", "stream"}
FAULTS = ("429", "500", "timeout", "malformed", "drop", "400")
EMBED_DIM = 8  # embeddings: the first bytes of each input's SHA-256, centred on 0 (out of order, as the API may)


@dataclass
class MockConfig:
    """Behaviour of the mock server (mirrors the command-line flags)."""

    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    fault_rates: dict[str, float] = field(default_factory=dict)
    retry_after: float = 1.0
    retry_after_date: bool = False
    hang_s: float = 30.0
    fail_after: int = 0
    api_key: str | None = None
    models: tuple[str, ...] = ()
    seed: int = 0
    reasoning: str = ""  # "field": a reasoning_content field; "think": a <think> block in the content
    max_model_len: int = 0  # reported by /v1/models and enforced, as vLLM does (0: neither)
    usage: bool = True  # replies report token usage
    tokenize: bool = True  # POST /tokenize counts a prompt's tokens


def _reply(body: dict[str, Any], fault: str | None) -> Any:
    """A JSON reply; cut in half under a ``malformed`` fault."""
    from aiohttp import web

    text = json.dumps(body)
    if fault == "malformed":
        text = text[: len(text) // 2]
    return web.Response(text=text, content_type="application/json")


def _words_with_spaces(text: str) -> list[str]:
    """``text`` in word-sized pieces that join back to it (a stream's chunks)."""
    words = text.split(" ")
    return [w + " " for w in words[:-1]] + [words[-1]]


def _error(status: int, message: str, kind: str, code: str | None = None) -> Any:
    from aiohttp import web

    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return web.json_response(body, status=status)


class MockOpenAI:
    """The server's state and handlers; :meth:`app` builds the aiohttp application."""

    def __init__(self, cfg: MockConfig) -> None:
        from ..backends.fake import FakeBackend

        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.queue: deque[str] = deque()
        self.counts: Counter[str] = Counter()
        self.log: list[tuple[float, int, int]] = []  # (monotonic time, status, total tokens)
        self.replies: list[tuple[int, int, str]] = []  # (prompt tokens, max_tokens, finish reason)
        self.fake = FakeBackend(model_name="mock")
        self.served = 0
        self.active = 0  # requests being handled now; ``max_active`` in the counters

    def _pick_fault(self) -> str | None:
        if self.queue:
            kind = self.queue.popleft()
            return None if kind == "ok" else kind
        if self.cfg.fail_after and self.served >= self.cfg.fail_after:
            return "500"
        roll = self.rng.random()
        for kind in FAULTS:
            rate = self.cfg.fault_rates.get(kind, 0.0)
            if roll < rate:
                return kind
            roll -= rate
        return None

    def _retry_after(self) -> str:
        if self.cfg.retry_after_date:
            return formatdate(time.time() + self.cfg.retry_after, usegmt=True)
        return f"{self.cfg.retry_after:g}"

    async def chat(self, request: Any) -> Any:
        self.counts["requests"] += 1
        self.counts[request.path] += 1  # the path a client used: /v1/chat/completions or /chat/completions
        self.active += 1
        self.counts["max_active"] = max(self.counts["max_active"], self.active)
        try:
            return await self._chat(request)
        finally:
            self.active -= 1

    async def _chat(self, request: Any) -> Any:

        from ..backends.base import GenerationParams

        if self.cfg.api_key and request.headers.get("Authorization") != f"Bearer {self.cfg.api_key}":
            return self._record(_error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key"))
        try:
            body = json.loads(await request.read())
            messages, model = body["messages"], body["model"]
        except (ValueError, KeyError, TypeError):
            return self._record(_error(400, "body must be JSON with 'model' and 'messages'", "invalid_request_error"))
        for name in body.keys() - _STANDARD_FIELDS:
            self.counts[f"field_{name}"] += 1  # server-specific fields a client sent (extra_body)
        if not isinstance(messages, list) or not messages:  # as OpenAI answers an empty conversation
            return self._record(_error(400, "'messages' must be a non-empty array", "invalid_request_error"))
        if self.cfg.models and model not in self.cfg.models:
            return self._record(_error(404, f"The model `{model}` does not exist.", "invalid_request_error",
                                       "model_not_found"))
        early, fault = await self._fault(request)
        if early is not None:
            return early
        params = GenerationParams(float(body.get("temperature", 0.7)), float(body.get("top_p", 1.0)),
                                  int(body.get("max_tokens") or body.get("max_completion_tokens") or 256),
                                  body.get("seed"))
        if too_long := self._over_context(messages, params.max_tokens):
            return self._record(too_long)
        out = await self.fake.complete(messages, params)
        self.fake.calls.clear()  # the mock keeps no history
        self.served += 1
        self.replies.append((out.usage.prompt_tokens, params.max_tokens, out.finish_reason))
        usage = {"prompt_tokens": out.usage.prompt_tokens, "completion_tokens": out.usage.completion_tokens,
                 "total_tokens": out.usage.total_tokens}
        reply = {"id": f"chatcmpl-{self.served}", "object": "chat.completion", "created": int(time.time()),
                 "model": model, **({"usage": usage} if self.cfg.usage else {}),
                 "choices": [{"index": 0, "message": self._message(messages, out.text),
                              "finish_reason": out.finish_reason}]}
        if body.get("stream") and fault != "malformed":
            return self._record(await self._stream(request, reply), out.usage.total_tokens)
        return self._record(_reply(reply, fault), out.usage.total_tokens)

    def _over_context(self, messages: list[Any], max_tokens: int) -> Any:
        """vLLM's 400 for a request that cannot fit the context window, else ``None``."""
        from ..backends.fake import prompt_words

        prompt = prompt_words(messages)
        if not self.cfg.max_model_len or prompt + max_tokens <= self.cfg.max_model_len:
            return None
        self.counts["over_context"] += 1
        return _error(400, f"This model's maximum context length is {self.cfg.max_model_len} tokens. However, you "
                      f"requested {prompt + max_tokens} tokens ({prompt} in the messages, {max_tokens} in the "
                      "completion). Please reduce the length of the messages or completion.", "BadRequestError")

    def _message(self, messages: list[Any], content: str) -> dict[str, str]:
        """The reply message, with a reasoning model's reasoning where ``--reasoning`` asks."""
        if not self.cfg.reasoning:
            return {"role": "assistant", "content": content}
        words = str(messages[-1].get("content", "")).split()[:6]
        thought = f"The user asks: {' '.join(words)}. I should answer clearly."
        if self.cfg.reasoning == "think":
            return {"role": "assistant", "content": f"<think>\n{thought}\n</think>\n\n{content}"}
        return {"role": "assistant", "content": content, "reasoning_content": thought}

    async def _fault(self, request: Any) -> tuple[Any, str | None]:
        """Apply the next fault: ``(a reply to send instead, None)``, or ``(None, fault)`` once
        the latency (and a timeout fault's hang) passed; ``malformed`` is left to the caller."""
        from aiohttp import web

        fault = self._pick_fault()
        if fault:
            self.counts[f"fault_{fault}"] += 1
        if fault == "drop":
            request.transport.abort()
            return self._record(web.Response(status=599)), fault
        if fault == "429":
            resp = _error(429, "Rate limit reached; retry later.", "requests", "rate_limit_exceeded")
            resp.headers["Retry-After"] = self._retry_after()
            return self._record(resp), fault
        if fault == "400":
            return self._record(_error(400, "The prompt was rejected by the content filter.", "invalid_request_error",
                                       "content_filter")), fault
        if fault == "500":
            return self._record(_error(500, "The server had an error while processing your request.",
                                       "server_error")), fault
        delay = self.cfg.latency_ms + (self.rng.uniform(-1, 1) * self.cfg.jitter_ms if self.cfg.jitter_ms else 0.0)
        await asyncio.sleep(max(0.0, delay) / 1000 + (self.cfg.hang_s if fault == "timeout" else 0.0))
        if request.transport is None or request.transport.is_closing():
            return self._record(web.Response(status=499)), fault  # the client gave up waiting
        return None, fault

    async def _stream(self, request: Any, reply: dict[str, Any]) -> Any:
        """The reply as server-sent ``chat.completion.chunk`` events, a word each, then ``[DONE]``."""
        from aiohttp import web

        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        message = reply["choices"][0]["message"]
        base = {k: reply[k] for k in ("id", "created", "model")} | {"object": "chat.completion.chunk"}
        # Reasoning first (its own delta field), then the content, as vLLM streams them.
        pieces = [(name, word) for name in ("reasoning_content", "content") if name in message
                  for word in _words_with_spaces(message[name])]
        for i, (name, word) in enumerate(pieces):
            delta = {"role": "assistant", name: word} if i == 0 else {name: word}
            chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
        end = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": reply["choices"][0]["finish_reason"]}],
               **{k: v for k, v in reply.items() if k == "usage"}}
        await resp.write(f"data: {json.dumps(end)}\n\ndata: [DONE]\n\n".encode())
        await resp.write_eof()
        self.counts["streamed"] += 1
        return resp

    async def embeddings(self, request: Any) -> Any:
        """``{"model", "input": str | [str]}`` -> one vector per input (faults apply as for chat)."""
        import hashlib

        self.counts["embedding_requests"] += 1
        self.counts[request.path] += 1
        if self.cfg.api_key and request.headers.get("Authorization") != f"Bearer {self.cfg.api_key}":
            return self._record(_error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key"))
        try:
            body = json.loads(await request.read())
            inputs = [body["input"]] if isinstance(body["input"], str) else list(body["input"])
            model = body["model"]
        except (ValueError, KeyError, TypeError):
            return self._record(_error(400, "body must be JSON with 'model' and 'input'", "invalid_request_error"))
        early, fault = await self._fault(request)
        if early is not None:
            return early
        self.counts["embedded_inputs"] += len(inputs) if fault != "malformed" else 0
        data = [{"object": "embedding", "index": i,
                 "embedding": [b - 128 for b in hashlib.sha256(str(t).encode()).digest()[:EMBED_DIM]]}
                for i, t in enumerate(inputs)]
        return self._record(_reply({"object": "list", "data": data[::-1], "model": model}, fault))

    def _record(self, resp: Any, tokens: int = 0) -> Any:
        self.counts[str(resp.status)] += 1
        self.log.append((time.monotonic(), resp.status, tokens))
        return resp

    async def list_models(self, request: Any) -> Any:
        from aiohttp import web

        if self.cfg.api_key and request.headers.get("Authorization") != f"Bearer {self.cfg.api_key}":
            return _error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
        names = self.cfg.models or ("mock",)
        window = {"max_model_len": self.cfg.max_model_len} if self.cfg.max_model_len else {}
        return web.json_response({"object": "list", "data": [{"id": n, "object": "model", **window} for n in names]})

    async def tokenize(self, request: Any) -> Any:
        """vLLM's ``POST /tokenize`` for chat messages: ``{"count", "max_model_len", "tokens"}``."""
        from aiohttp import web

        from ..backends.fake import prompt_words

        if not self.cfg.tokenize:
            return _error(404, "Not Found", "NotFoundError")
        if self.cfg.api_key and request.headers.get("Authorization") != f"Bearer {self.cfg.api_key}":
            return _error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
        self.counts["tokenize"] += 1
        count = prompt_words((await request.json())["messages"])
        return web.json_response({"count": count, "max_model_len": self.cfg.max_model_len, "tokens": [0] * count})

    async def control(self, request: Any) -> Any:
        from aiohttp import web

        body = await request.json()
        if body.get("reset"):
            self.counts.clear()
            self.log.clear()
            self.replies.clear()
            self.queue.clear()
        unknown = [k for k in body.get("queue", []) if k not in (*FAULTS, "ok")]
        if unknown:
            return _error(400, f"unknown fault(s) {unknown}", "invalid_request_error")
        self.queue.extend(body.get("queue", []))
        for key in ("latency_ms", "retry_after", "retry_after_date", "fail_after", "hang_s", "reasoning",
                    "max_model_len", "usage", "tokenize"):
            if key in body:
                setattr(self.cfg, key, body[key])
        return web.json_response({"ok": True})

    async def stats(self, request: Any) -> Any:
        from aiohttp import web

        return web.json_response({"counts": dict(self.counts), "log": self.log, "replies": self.replies,
                                  "now": time.monotonic()})

    def app(self) -> Any:
        from aiohttp import web

        app = web.Application()
        for prefix in ("/v1", ""):
            app.router.add_post(f"{prefix}/chat/completions", self.chat)
            app.router.add_get(f"{prefix}/models", self.list_models)
            app.router.add_post(f"{prefix}/embeddings", self.embeddings)
        app.router.add_post("/tokenize", self.tokenize)
        app.router.add_post("/_control", self.control)
        app.router.add_get("/_stats", self.stats)
        return app


async def serve(cfg: MockConfig, host: str = "127.0.0.1", port: int = 0) -> None:
    """Serve until cancelled; prints ``listening on http://HOST:PORT/v1`` once ready."""
    from aiohttp import web

    runner = web.AppRunner(MockOpenAI(cfg).app(), access_log=None, handle_signals=True)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    bound = runner.addresses[0][1]
    print(f"listening on http://{host}:{bound}/v1", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def parse_args(argv: list[str] | None = None) -> tuple[MockConfig, str, int]:
    ap = argparse.ArgumentParser(prog="python -m ultrachat.testing.mock_openai", description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000, help="0 picks a free port (printed on start)")
    ap.add_argument("--latency-ms", type=float, default=0.0)
    ap.add_argument("--jitter-ms", type=float, default=0.0, help="latency varies uniformly by +/- this much")
    for kind in FAULTS:
        ap.add_argument(f"--fault-{kind}", type=float, default=0.0, metavar="P", help=f"probability of a {kind} fault")
    ap.add_argument("--retry-after", type=float, default=1.0, help="Retry-After of 429 replies, seconds")
    ap.add_argument("--retry-after-date", action="store_true", help="send Retry-After as an HTTP-date")
    ap.add_argument("--hang-s", type=float, default=30.0, help="how long a timeout fault hangs")
    ap.add_argument("--fail-after", type=int, default=0, help="every request after the first N gets a 500")
    ap.add_argument("--api-key", default=None, help="require this bearer token (401 otherwise)")
    ap.add_argument("--models", default="", help="comma-separated model names (others get 404); default: any")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reasoning", choices=("field", "think"), default="",
                    help="reply like a reasoning model: a reasoning_content field, or a <think> block")
    ap.add_argument("--max-model-len", type=int, default=0,
                    help="context window reported by /v1/models and enforced (400), as vLLM does")
    ap.add_argument("--no-usage", action="store_true", help="replies carry no token usage")
    ap.add_argument("--no-tokenize", action="store_true", help="no POST /tokenize (404), as most servers")
    ns = ap.parse_args(argv)
    rates = {kind: getattr(ns, f"fault_{kind}") for kind in FAULTS}
    cfg = MockConfig(ns.latency_ms, ns.jitter_ms, rates, ns.retry_after, ns.retry_after_date, ns.hang_s,
                     ns.fail_after, ns.api_key, tuple(m for m in ns.models.split(",") if m), ns.seed,
                     ns.reasoning, ns.max_model_len, not ns.no_usage, not ns.no_tokenize)
    return cfg, ns.host, ns.port


def main(argv: list[str] | None = None) -> None:
    cfg, host, port = parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        aio.run(serve(cfg, host, port))


if __name__ == "__main__":
    main(sys.argv[1:])
