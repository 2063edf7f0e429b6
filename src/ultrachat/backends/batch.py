"""Provider batch APIs (the OpenAI Batch format): half the price of live calls, results
within the provider's completion window instead of seconds.

``backend = "openai_batch"`` in a role's recipe table. Calls are not sent one by one:
every call the engine makes goes into the next batch; once no new call has arrived for
``batch_wait_s`` the batch is uploaded (``POST /files``) and created (``POST /batches``),
then polled every ``batch_poll_s`` until its output file can be downloaded. Each dialogue
has one call in flight, so with ``concurrency`` at least the number of dialogues the engine
advances every dialogue by one turn per batch cycle.

A journal (SQLite, WAL; ``<cache root>/batches.sqlite``) records each submitted batch with
the fingerprint of every request in it (the response cache's key: model, messages,
sampling parameters, seed) and every result downloaded. After a crash the rerun asks for
the same calls again; those already answered return at once, those in a batch still
running wait for it (polling resumes on start) and nothing is submitted twice. Requests
that come back as errors are resubmitted in the next batch, up to ``max_retries`` times.
``ultrachat batch status|cancel`` lists or cancels the batches of the journal.

Example::

    cfg = ModelConfig(backend="openai_batch", model="gpt-4o-mini", batch_poll_s=60)
    backend = BatchBackend(cfg)
    await backend.start()
    out = await backend.complete([{"role": "user", "content": "Hi"}], GenerationParams(seed=1))
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from ..core.paths import batch_journal_path
from ..core.sqlite import open_shared_db
from .base import Backend, BackendError, Completion, GenerationParams, Message, Usage
from .config import ModelConfig
from .http import FormField, HttpClient, RequestFailed
from .openai import chat_body, parse_completion
from .response_cache import call_key

FINAL = frozenset({"completed", "failed", "expired", "cancelled"})
JOURNAL_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (id TEXT PRIMARY KEY, base_url TEXT, status TEXT, created REAL, requests INTEGER);
CREATE TABLE IF NOT EXISTS requests (key TEXT, batch_id TEXT, PRIMARY KEY (key, batch_id));
CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, text TEXT, finish TEXT, prompt_tokens INTEGER,
                                    completion_tokens INTEGER, model TEXT);
"""


class BatchJournal:
    """Submitted batches, the requests in each, and downloaded results (SQLite, WAL)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db = open_shared_db(self.path, JOURNAL_SCHEMA, "batch journal")

    def _q(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def add_batch(self, batch_id: str, base_url: str, keys: list[str]) -> None:
        with self._lock:
            self._db.execute("BEGIN")
            self._db.execute("INSERT OR REPLACE INTO batches VALUES (?, ?, 'in_progress', ?, ?)",
                             (batch_id, base_url, time.time(), len(keys)))
            self._db.executemany("INSERT OR IGNORE INTO requests VALUES (?, ?)", [(k, batch_id) for k in keys])
            self._db.execute("COMMIT")

    def set_status(self, batch_id: str, status: str) -> None:
        self._q("UPDATE batches SET status = ? WHERE id = ?", (status, batch_id))

    def live_batches(self, base_url: str | None = None) -> list[str]:
        rows = self._q("SELECT id, base_url, status FROM batches")
        return [i for i, url, status in rows if status not in FINAL and (base_url is None or url == base_url)]

    def batches(self) -> list[tuple[Any, ...]]:
        return self._q("SELECT id, base_url, status, created, requests FROM batches ORDER BY created")

    def live_batch_of(self, key: str) -> str | None:
        rows = self._q("SELECT r.batch_id FROM requests r JOIN batches b ON b.id = r.batch_id "
                       "WHERE r.key = ? AND b.status NOT IN ('completed', 'failed', 'expired', 'cancelled')", (key,))
        return rows[0][0] if rows else None

    def keys_of(self, batch_id: str) -> list[str]:
        return [r[0] for r in self._q("SELECT key FROM requests WHERE batch_id = ?", (batch_id,))]

    def save_results(self, rows: list[tuple[str, Completion]]) -> None:
        with self._lock:
            self._db.executemany("INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?, ?)",
                                 [(k, c.text, c.finish_reason, c.usage.prompt_tokens, c.usage.completion_tokens,
                                   c.model) for k, c in rows])

    def result(self, key: str) -> Completion | None:
        rows = self._q("SELECT text, finish, prompt_tokens, completion_tokens, model FROM results WHERE key = ?",
                       (key,))
        if not rows:
            return None
        text, finish, prompt, completion, model = rows[0]
        return Completion(text, finish, Usage(prompt, completion), model)

    def close(self) -> None:
        with self._lock:
            self._db.close()


class BatchBackend(Backend):
    """Chat completions through a provider's Batch API; see the module docs."""

    def __init__(self, cfg: ModelConfig, journal: str | Path | None = None) -> None:
        self.cfg = cfg
        self.model_name = cfg.model
        # A batch request stays cheap (a file, a poll): a handful in flight is plenty.
        self.http = HttpClient(cfg.base_url, api_key=os.environ.get(cfg.api_key_env), timeout_s=cfg.timeout_s,
                               max_in_flight=4, requests_per_minute=cfg.requests_per_minute,
                               max_retries=cfg.max_retries)
        self.base_url = self.http.base_url
        #: fields merged into every request body, as OpenAIBackend.extra_body
        self.extra_body: dict[str, Any] = {}
        self.model_id = f"openai_batch|{cfg.model}|{self.base_url}"
        self.journal = BatchJournal(journal or batch_journal_path())
        self._started = False
        self._queue: dict[str, dict[str, Any]] = {}  # key -> request body, for the next batch
        self._bodies: dict[str, dict[str, Any]] = {}  # key -> body of every call waiting (to resubmit)
        self._waiters: dict[str, list[asyncio.Future[Completion]]] = {}
        self._attempts: Counter[str] = Counter()
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._fatal: BaseException | None = None
        #: batches submitted and polls made by this process, results replayed from the journal
        self.stats: Counter[str] = Counter()

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        await self.http.open()
        self._spawn(self._submitter())
        for batch_id in self.journal.live_batches(self.base_url):  # resume polling after a crash
            self._spawn(self._poll(batch_id))

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.http.close()
        self._started = False
        self.journal.close()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- calls -----------------------------------------------------------------------
    async def complete(self, messages: list[Message], params: GenerationParams) -> Completion:
        await self.start()
        if self._fatal is not None:
            raise self._fatal
        key = call_key(self.model_id, messages, params)
        done = self.journal.result(key)
        if done is not None:
            self.stats["replayed"] += 1
            return done
        fut: asyncio.Future[Completion] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(key, []).append(fut)
        body = chat_body(self.cfg.model, messages, params, self.extra_body)
        self._bodies[key] = body
        if self.journal.live_batch_of(key) is None and key not in self._queue:
            self._queue[key] = body
            self._wake.set()
        return await fut

    def _fail_all(self, exc: BaseException) -> None:
        self._fatal = exc
        for futures in self._waiters.values():
            for fut in futures:
                if not fut.done():
                    fut.set_exception(exc)
        self._waiters.clear()

    def _resolve(self, key: str, out: Completion) -> None:
        self._bodies.pop(key, None)
        for fut in self._waiters.pop(key, []):
            if not fut.done():
                fut.set_result(out)

    async def _submitter(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            # Wait for a quiet moment: every dialogue whose turn just came back asks again.
            while True:
                size = len(self._queue)
                await asyncio.sleep(self.cfg.batch_wait_s)
                if len(self._queue) == size:
                    break
            batch, self._queue = self._queue, {}
            try:
                batch_id = await self._submit(batch)
            except BackendError as exc:
                self._fail_all(exc)
                return
            self._spawn(self._poll(batch_id))

    async def _request(self, method: str, path: str, body: Any = None, form: dict[str, FormField] | None = None) -> Any:
        """One API call's JSON reply (the raw bytes for ``/content``), through the shared client:
        transient failures are retried (``max_retries``), anything else raises BackendError."""
        parse = bytes if path.endswith("/content") else json.loads
        data = None if body is None else json.dumps(body).encode()
        try:
            return await self.http.call(method, path, data, parse, form=form)
        except RequestFailed as exc:
            retried = f" (after {exc.attempts - 1} retries)" if exc.attempts > 1 else ""
            raise BackendError(f"{self.base_url}{path}: {exc.reason}{retried}") from None

    async def _submit(self, batch: dict[str, dict[str, Any]]) -> str:
        lines = "".join(json.dumps({"custom_id": key, "method": "POST", "url": "/v1/chat/completions", "body": body})
                        + "\n" for key, body in batch.items())
        upload: dict[str, FormField] = {"purpose": "batch",
                                        "file": ("ultrachat-batch.jsonl", lines.encode(), "application/jsonl")}
        uploaded = await self._request("POST", "/files", form=upload)
        created = await self._request("POST", "/batches", {"input_file_id": uploaded["id"],
                                                           "endpoint": "/v1/chat/completions",
                                                           "completion_window": "24h"})
        self.journal.add_batch(created["id"], self.base_url, list(batch))
        self.stats["batches"] += 1
        self.stats["requests"] += len(batch)
        return str(created["id"])

    async def _poll(self, batch_id: str) -> None:
        while True:
            try:
                info = await self._request("GET", f"/batches/{batch_id}")
            except BackendError as exc:
                self._fail_all(exc)
                return
            self.stats["polls"] += 1
            status = info.get("status")
            if status in FINAL:
                break
            await asyncio.sleep(self.cfg.batch_poll_s)
        results: dict[str, Completion] = {}
        if status == "completed" and info.get("output_file_id"):
            try:
                raw = await self._request("GET", f"/files/{info['output_file_id']}/content")
            except BackendError as exc:
                self._fail_all(exc)
                return
            results = _parse_output(raw, self.model_name)
        self.journal.save_results(list(results.items()))
        self.journal.set_status(batch_id, status)
        for key in self.journal.keys_of(batch_id):
            if key in results:
                self._resolve(key, results[key])
            elif key in self._waiters:
                self._retry(key, status)

    def _retry(self, key: str, status: str) -> None:
        """Resubmit a request that came back as an error (or whose batch failed)."""
        if status == "cancelled":
            self._resolve(key, Completion("", "error", Usage(), self.model_name))
            return
        self._attempts[key] += 1
        if self._attempts[key] > self.cfg.max_retries:
            self._resolve(key, Completion("", "error", Usage(), self.model_name))
            return
        self._queue[key] = self._bodies[key]
        self._wake.set()

    async def cancel_all(self) -> list[str]:
        """Cancel every batch of the journal still running at this endpoint."""
        await self.start()
        cancelled = []
        for batch_id in self.journal.live_batches(self.base_url):
            info = await self._request("POST", f"/batches/{batch_id}/cancel")
            self.journal.set_status(batch_id, info.get("status", "cancelling"))
            cancelled.append(batch_id)
        return cancelled


def _parse_output(raw: bytes, model: str) -> dict[str, Completion]:
    """Successful lines of a batch output file, by custom_id; error lines are left out."""
    out: dict[str, Completion] = {}
    for line in raw.decode("utf-8", "replace").splitlines():
        try:
            item = json.loads(line)
            resp = item.get("response") or {}
            if item.get("error") or resp.get("status_code") != 200:
                continue
            out[item["custom_id"]] = parse_completion(resp["body"], model)
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            continue  # a malformed line counts as an error: its request is resubmitted
    return out
