"""A mock of the OpenAI Batch API (a real HTTP process) for tests and benchmarks.

Endpoints (all under ``/v1``): ``POST /files`` (multipart upload, ``purpose=batch``),
``GET /files/{id}/content``, ``POST /batches``, ``GET /batches/{id}``,
``POST /batches/{id}/cancel``. A batch is ``in_progress`` for ``--batch-latency-s`` after
it is created, then ``completed`` with an output file whose lines answer each request with
the fake backend's deterministic replies. ``--fail-rate P`` answers a share of requests
with an error line (``response.status_code`` 500) that a client must resubmit.
``POST /_control`` changes the latency and failure rate of later batches; ``GET /_stats``
counts batches, requests, cancellations and ``repeated_requests`` (a custom_id answered
successfully twice: a client that paid for the same call again).

Run it::

    python -m ultrachat.testing.mock_batch --port 8001 --batch-latency-s 2
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import time
from collections import Counter
from typing import Any

from .. import aio


class MockBatchAPI:
    def __init__(self, latency_s: float, fail_rate: float, seed: int = 0) -> None:
        from ..backends.fake import FakeBackend

        self.latency_s = latency_s
        self.fail_rate = fail_rate
        self.rng = random.Random(seed)
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.counts: Counter[str] = Counter()
        self.seen: set[str] = set()  # custom_ids answered successfully, to count repeats
        self.fail_next = 0  # the next N API requests get a 500 (a flaky provider)
        self.fake = FakeBackend(model_name="mock")

    def _id(self, prefix: str) -> str:
        self.counts[f"ids_{prefix}"] += 1
        return f"{prefix}-{self.counts[f'ids_{prefix}']:06d}"

    async def upload(self, request: Any) -> Any:
        from aiohttp import web

        form = await request.post()
        upload = form.get("file")
        if form.get("purpose") != "batch" or upload is None or not hasattr(upload, "file"):
            return web.json_response({"error": {"message": "need purpose=batch and a file"}}, status=400)
        file_id = self._id("file")
        self.files[file_id] = upload.file.read()
        return web.json_response({"id": file_id, "object": "file", "purpose": "batch",
                                  "bytes": len(self.files[file_id])})

    async def content(self, request: Any) -> Any:
        from aiohttp import web

        data = self.files.get(request.match_info["file_id"])
        if data is None:
            return web.json_response({"error": {"message": "no such file"}}, status=404)
        return web.Response(body=data, content_type="application/jsonl")

    async def create(self, request: Any) -> Any:
        from aiohttp import web

        body = await request.json()
        raw = self.files.get(body.get("input_file_id", ""))
        if raw is None or body.get("endpoint") != "/v1/chat/completions":
            return web.json_response({"error": {"message": "unknown input_file_id or endpoint"}}, status=400)
        lines = [json.loads(line) for line in raw.decode().splitlines() if line.strip()]
        batch_id = self._id("batch")
        self.counts["batches"] += 1
        self.counts["requests"] += len(lines)
        self.batches[batch_id] = {"id": batch_id, "object": "batch", "endpoint": body["endpoint"],
                                  "input_file_id": body["input_file_id"], "status": "in_progress",
                                  "created_at": int(time.time()), "output_file_id": None, "error_file_id": None,
                                  "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
                                  "_ready": time.monotonic() + self.latency_s, "_lines": lines}
        return web.json_response(self._public(batch_id))

    async def _finish(self, batch: dict[str, Any]) -> None:
        from ..backends.base import GenerationParams

        out = []
        for line in batch["_lines"]:
            body = line["body"]
            if self.rng.random() < self.fail_rate:
                out.append({"id": self._id("req"), "custom_id": line["custom_id"],
                            "response": {"status_code": 500, "body": {"error": {"message": "server error"}}},
                            "error": None})
                batch["request_counts"]["failed"] += 1
                continue
            params = GenerationParams(float(body.get("temperature", 0.7)), float(body.get("top_p", 1.0)),
                                      int(body.get("max_tokens") or 256), body.get("seed"))
            self.counts["repeated_requests"] += line["custom_id"] in self.seen
            self.seen.add(line["custom_id"])
            reply = await self.fake.complete(body["messages"], params)
            self.fake.calls.clear()
            usage = {"prompt_tokens": reply.usage.prompt_tokens, "completion_tokens": reply.usage.completion_tokens,
                     "total_tokens": reply.usage.total_tokens}
            completion = {"id": self._id("chatcmpl"), "object": "chat.completion", "model": body.get("model"),
                          "choices": [{"index": 0, "message": {"role": "assistant", "content": reply.text},
                                       "finish_reason": reply.finish_reason}], "usage": usage}
            out.append({"id": self._id("req"), "custom_id": line["custom_id"],
                        "response": {"status_code": 200, "body": completion}, "error": None})
            batch["request_counts"]["completed"] += 1
        file_id = self._id("file")
        self.files[file_id] = "".join(json.dumps(o) + "\n" for o in out).encode()
        batch["output_file_id"] = file_id
        batch["status"] = "completed"

    async def get(self, request: Any) -> Any:
        from aiohttp import web

        batch = self.batches.get(request.match_info["batch_id"])
        if batch is None:
            return web.json_response({"error": {"message": "no such batch"}}, status=404)
        self.counts["polls"] += 1
        if batch["status"] == "in_progress" and time.monotonic() >= batch["_ready"]:
            await self._finish(batch)
        return web.json_response(self._public(batch["id"]))

    async def cancel(self, request: Any) -> Any:
        from aiohttp import web

        batch = self.batches.get(request.match_info["batch_id"])
        if batch is None:
            return web.json_response({"error": {"message": "no such batch"}}, status=404)
        if batch["status"] == "in_progress":
            batch["status"] = "cancelled"
            self.counts["cancelled"] += 1
        return web.json_response(self._public(batch["id"]))

    def _public(self, batch_id: str) -> dict[str, Any]:
        return {k: v for k, v in self.batches[batch_id].items() if not k.startswith("_")}

    async def control(self, request: Any) -> Any:
        """``{"batch_latency_s": s, "fail_rate": p, "fail_next": n}``: later batches' latency and
        failed lines; the next ``n`` API requests answered with HTTP 500."""
        from aiohttp import web

        body = await request.json()
        self.latency_s = float(body.get("batch_latency_s", self.latency_s))
        self.fail_rate = float(body.get("fail_rate", self.fail_rate))
        self.fail_next = int(body.get("fail_next", self.fail_next))
        return web.json_response({"ok": True})

    async def stats(self, request: Any) -> Any:
        from aiohttp import web

        return web.json_response({"counts": dict(self.counts),
                                  "batches": {k: b["status"] for k, b in self.batches.items()}})

    def app(self) -> Any:
        from aiohttp import web

        @web.middleware
        async def flaky(request: Any, handler: Any) -> Any:
            if self.fail_next > 0 and request.path.startswith("/v1/"):
                self.fail_next -= 1
                self.counts["injected_500"] += 1
                return web.json_response({"error": {"message": "injected server error"}}, status=500)
            return await handler(request)

        app = web.Application(client_max_size=512 * 1024 * 1024, middlewares=[flaky])
        app.router.add_post("/v1/files", self.upload)
        app.router.add_get("/v1/files/{file_id}/content", self.content)
        app.router.add_post("/v1/batches", self.create)
        app.router.add_get("/v1/batches/{batch_id}", self.get)
        app.router.add_post("/v1/batches/{batch_id}/cancel", self.cancel)
        app.router.add_get("/_stats", self.stats)
        app.router.add_post("/_control", self.control)
        return app


async def serve(api: MockBatchAPI, host: str = "127.0.0.1", port: int = 0) -> None:
    from aiohttp import web

    runner = web.AppRunner(api.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    print(f"listening on http://{host}:{runner.addresses[0][1]}/v1", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m ultrachat.testing.mock_batch", description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8001, help="0 picks a free port (printed on start)")
    ap.add_argument("--batch-latency-s", type=float, default=1.0, help="how long a batch stays in progress")
    ap.add_argument("--fail-rate", type=float, default=0.0, help="share of requests answered with an error line")
    ap.add_argument("--seed", type=int, default=0)
    ns = ap.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        aio.run(serve(MockBatchAPI(ns.batch_latency_s, ns.fail_rate, ns.seed), ns.host, ns.port))


if __name__ == "__main__":
    main(sys.argv[1:])
