"""A response cache in SQLite: rerunning a recipe replays finished model calls for free.

Each call is keyed by a fingerprint of everything that decides its output: the model's
identity (backend, model name, endpoint), the messages and the sampling parameters
(temperature, top_p, max_tokens, stop strings and seed). Settings that do not change
outputs (concurrency, batch size, limits, timeouts, progress) never reach the key, so
changing them keeps every hit. Only completed calls are stored; errors are retried.

The file uses WAL mode so several processes (Ray workers, two runs of different
sectors) can share one cache; a crash loses at most the calls not yet committed.

Example::

    backend = CachingBackend(FakeBackend(), ResponseCache("/tmp/responses.sqlite"), "fake|fake")
    out = await backend.complete([{"role": "user", "content": "Hi"}], GenerationParams(seed=1))
    again = await backend.complete([{"role": "user", "content": "Hi"}], GenerationParams(seed=1))
    assert backend.hits == 1 and again.text == out.text
"""

from __future__ import annotations

import json
from pathlib import Path

from ..core.callcache import SharedCallStore
from ..core.hashing import hexdigest
from .base import Backend, Completion, GenerationParams, Message, Usage


class CachedCompletion(Completion):
    """A completion replayed from the cache (cost accounting counts it as free)."""


def call_key(model_id: str, messages: list[Message], params: GenerationParams) -> str:
    """The fingerprint of one call: identical inputs give the same key on any machine."""
    payload = {
        "model": model_id,
        "messages": [[m["role"], m["content"]] for m in messages],
        "params": [params.temperature, params.top_p, params.max_tokens, params.seed, list(params.stop)],
    }
    return hexdigest(json.dumps(payload, ensure_ascii=False, separators=(",", ":")))


class ResponseCache:
    """Completed calls as :class:`Completion` objects, kept in the shared SQLite call store
    (:class:`~ultrachat.core.callcache.SharedCallStore`)."""

    def __init__(self, path: str | Path) -> None:
        self._store = SharedCallStore(path)
        self.path = self._store.path

    def get(self, key: str) -> Completion | None:
        row = self._store.get(key)
        if row is None:
            return None
        model, text, finish, prompt, completion = row
        return CachedCompletion(text, finish, Usage(prompt, completion), model)  # type: ignore[arg-type]

    def put(self, key: str, out: Completion) -> None:
        # Reasoning a backend kept comes back as the <think> block it would have been in the
        # text: the dialogue engine takes both out of a turn the same way.
        text = f"<think>{out.reasoning}</think>\n{out.text}" if out.reasoning else out.text
        self._store.put(key, (out.model, text, out.finish_reason, out.usage.prompt_tokens,
                              out.usage.completion_tokens))

    def __len__(self) -> int:
        return len(self._store)

    def close(self) -> None:
        self._store.close()


class CachingBackend(Backend):
    """Wraps a backend: a call whose key is cached is answered from SQLite.

    ``model_id`` names the model (``backend|model|base_url``); it is part of the key, so
    two models never share entries. ``hits``/``misses`` and ``saved`` (the usage the hits
    would have cost) feed the run report.
    """

    def __init__(self, inner: Backend, cache: ResponseCache, model_id: str) -> None:
        self.inner = inner
        self.cache = cache
        self.model_id = model_id
        self.model_name = inner.model_name
        self.hits = 0
        self.misses = 0
        self.saved = Usage()

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    async def complete(self, messages: list[Message], params: GenerationParams) -> Completion:
        key = call_key(self.model_id, messages, params)
        hit = self.cache.get(key)
        if hit is not None:
            self.hits += 1
            self.saved.add(hit.usage)
            return hit
        self.misses += 1
        out = await self.inner.complete(messages, params)
        if out.finish_reason != "error":
            self.cache.put(key, out)
        return out
