"""The shared HTTP client (backends/http.py) against the real mock server processes: chat
streaming with retries, stats embeddings, the batch API; attempts are counted, never timed."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson
import pytest

from ultrachat.backends import BackendError, GenerationParams
from ultrachat.backends.http import HttpClient, RequestFailed
from ultrachat.recipe import ModelConfig
from ultrachat.testing import MockServer

HELLO = [{"role": "user", "content": "Hello there, how are you?"}]


@pytest.fixture(scope="module")
def server() -> Iterator[MockServer]:
    with MockServer("--hang-s", "5", "--api-key", "k-test") as srv:
        yield srv


@pytest.fixture
def mock(server: MockServer, monkeypatch: pytest.MonkeyPatch) -> MockServer:
    server.control(reset=True, latency_ms=0, retry_after=0.05, retry_after_date=False, fail_after=0)
    monkeypatch.setenv("HTTP_TEST_KEY", "k-test")
    return server


def client(url: str, **kw: object) -> HttpClient:
    settings: dict[str, object] = {"api_key": "k-test", "timeout_s": 1.0, "max_retries": 3, "backoff_base_s": 0.01,
                                   **kw}
    return HttpClient(url, **settings)  # type: ignore[arg-type]


# -- chat streaming -----------------------------------------------------------------------
@pytest.mark.parametrize("fault", ["429", "500", "drop", "timeout"])
def test_chat_streams_after_a_retry(mock: MockServer, fault: str) -> None:
    from ultrachat.chat.session import ChatSession, EndpointChatModel

    reference = "".join(ChatSession(EndpointChatModel(mock.root, "mock", api_key="k-test")).send("What is a comet?"))
    mock.control(queue=[fault])
    model = EndpointChatModel(mock.root, "mock", api_key="k-test", timeout_s=1.0, backoff_base_s=0.01)
    pieces = list(ChatSession(model).send("What is a comet?"))
    assert len(pieces) > 3 and "".join(pieces) == reference  # streamed a word at a time, same answer
    assert model.stats["attempts"] == 2 and model.stats["retries"] == 1 and model.stats["ok"] == 1
    counts = mock.stats()["counts"]
    assert counts[f"fault_{fault}"] == 1 and counts["streamed"] == 2
    assert counts["/v1/chat/completions"] == 3  # the bare host got /v1
    if fault == "429":
        assert model.url == mock.url + "/chat/completions"


def test_chat_rejected_key_is_one_line_and_not_retried(mock: MockServer) -> None:
    from ultrachat.chat.session import ChatError, ChatSession, EndpointChatModel

    model = EndpointChatModel(mock.url, "mock", api_key="wrong", backoff_base_s=0.01)
    with pytest.raises(ChatError, match=r"HTTP 401: Incorrect API key") as err:
        "".join(ChatSession(model).send("x"))
    assert "\n" not in str(err.value) and "wrong" not in str(err.value)
    assert model.stats["attempts"] == 1 and mock.stats()["counts"]["401"] == 1


def test_chat_gives_up_after_its_retries(mock: MockServer) -> None:
    from ultrachat.chat.session import ChatError, ChatSession, EndpointChatModel

    mock.control(queue=["500"] * 3)
    model = EndpointChatModel(mock.url, "mock", api_key="k-test", max_retries=2, backoff_base_s=0.01)
    with pytest.raises(ChatError, match="HTTP 500"):
        "".join(ChatSession(model).send("x"))
    assert model.stats["attempts"] == 3 and mock.stats()["counts"]["fault_500"] == 3


def test_chat_ctrl_c_while_waiting_then_the_next_message_works(mock: MockServer) -> None:
    import os
    import signal
    import threading

    from ultrachat.chat.session import ChatSession, EndpointChatModel

    def interrupt_once_the_server_has_the_request() -> None:
        while not mock.stats()["counts"].get("requests"):
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGINT)

    model = EndpointChatModel(mock.url, "mock", api_key="k-test")
    session = ChatSession(model)
    mock.control(latency_ms=5000)
    with pytest.raises(KeyboardInterrupt):
        threading.Thread(target=interrupt_once_the_server_has_the_request).start()
        "".join(session.send("What is a comet?"))  # SIGINT lands while the reply is awaited
    assert model.http is not None and not model.http.is_open  # the connection was closed
    mock.control(latency_ms=0)
    partial = session.send("What is a tide?")
    assert next(partial)  # a reader that stops after one piece closes the stream too
    partial.close()
    assert not model.http.is_open
    assert "".join(session.send("What is a star?")) and len(session.history) == 2


# -- the client itself --------------------------------------------------------------------
async def test_retry_after_sets_the_wait(mock: MockServer) -> None:
    mock.control(retry_after=0.3, queue=["429", "429"])
    async with client(mock.url, backoff_base_s=0.001) as http:
        out = await http.call("POST", "/chat/completions", orjson.dumps({"model": "mock", "messages": HELLO}),
                              orjson.loads)
    assert out["choices"][0]["message"]["content"]
    assert http.stats["attempts"] == 3 and http.stats["failed: HTTP 429"] == 2
    assert http.waited_s >= 0.6  # slept what Retry-After asked twice, not the 1-2 ms backoff


async def test_fatal_hook_stops_every_later_call(mock: MockServer) -> None:
    calls: list[int] = []

    def fatal(status: int, raw: bytes) -> str | None:
        calls.append(status)
        return "key rejected" if status == 401 else None

    async with client(mock.url, api_key="bad", fatal=fatal) as http:
        body = orjson.dumps({"model": "mock", "messages": HELLO})
        with pytest.raises(BackendError, match="key rejected"):
            await http.call("POST", "/chat/completions", body, orjson.loads)
        with pytest.raises(BackendError, match="key rejected"):
            await http.call("POST", "/chat/completions", body, orjson.loads)
    assert calls == [401] and http.stats["attempts"] == 1


async def test_an_optional_request_fails_alone(mock: MockServer) -> None:
    """A request the server may not serve (GET /models on some servers) skips the fatal hook:
    its 404 stops nothing, where the hook would have stopped the client."""
    async with client(mock.url, fatal=lambda status, raw: "gone" if status == 404 else None) as http:
        with pytest.raises(RequestFailed, match="HTTP 404") as err:
            await http.call("GET", "/no-such-listing", None, orjson.loads, optional=True)
        assert err.value.attempts == 1
        body = orjson.dumps({"model": "mock", "messages": HELLO})
        assert (await http.call("POST", "/chat/completions", body, orjson.loads))["choices"]
        with pytest.raises(BackendError, match="gone"):
            await http.call("GET", "/no-such-listing", None, orjson.loads)


async def test_rejected_request_and_exhausted_retries_raise_request_failed(mock: MockServer) -> None:
    body = orjson.dumps({"model": "mock", "messages": HELLO})
    async with client(mock.url, max_retries=2) as http:
        mock.control(queue=["400"])
        with pytest.raises(RequestFailed, match="HTTP 400: The prompt was rejected") as err:
            await http.call("POST", "/chat/completions", body, orjson.loads)
        assert err.value.attempts == 1 and err.value.status == 400
        mock.control(queue=["malformed"] * 3)
        with pytest.raises(RequestFailed, match="malformed reply body") as err:
            await http.call("POST", "/chat/completions", body, orjson.loads)
        assert err.value.attempts == 3
    assert http.stats["attempts"] == 4 and http.stats["retries"] == 2


async def test_in_flight_limit_holds_across_callers() -> None:
    body = orjson.dumps({"model": "mock", "messages": HELLO})
    with MockServer("--latency-ms", "50") as srv:  # its own: a timed-out request may still hang in the shared one
        async with client(srv.url, max_in_flight=2) as http:
            await asyncio.gather(*(http.call("POST", "/chat/completions", body, orjson.loads) for _ in range(6)))
        assert srv.stats()["counts"]["max_active"] == 2 and http.stats["ok"] == 6


# -- the openai backend's callers: eval answers and stats coherence ------------------------
def test_eval_answers_and_stats_coherence_retry_through_the_client(tmp_path: Path, mock: MockServer) -> None:
    from ultrachat.data.stats import StatsConfig, corpus_stats
    from ultrachat.evaluate.answers import answer_eval_set
    from ultrachat.evaluate.evalset import load_eval_set

    role = {"backend": "openai", "base_url": mock.root, "model": "mock", "api_key_env": "HTTP_TEST_KEY",
            "max_retries": 3, "max_tokens": 32}
    mock.control(queue=["ok", "429", "500"])  # the start probe passes, then two answers are refused once
    summary = answer_eval_set(load_eval_set("ultra_eval", limit=4), ModelConfig(**role), tmp_path / "a.json")
    answers = json.loads((tmp_path / "a.json").read_text())
    assert summary.answered == 4 and all(a["output"] for a in answers)
    counts = mock.stats()["counts"]
    assert counts["fault_429"] == counts["fault_500"] == 1 and counts["/v1/chat/completions"] == 1 + 4 + 2

    src = tmp_path / "d.jsonl"
    src.write_text("".join(json.dumps({"id": str(i), "data": [f"q{i}?", "a."]}) + "\n" for i in range(3)))
    mock.control(reset=True, queue=["ok", "drop"])
    judge = ModelConfig(**{**role, "temperature": 0.0})
    r = corpus_stats(src, StatsConfig(tokenizer="whitespace", embedder="none", coherence_sample=3, judge=judge),
                     progress=False)
    assert "judge mock scored 3" in r["methods"]["coherence"]
    counts = mock.stats()["counts"]
    assert counts["fault_drop"] == 1 and counts["/v1/chat/completions"] == 1 + 3 + 1


# -- stats embeddings ---------------------------------------------------------------------
def _expected(texts: list[str]) -> np.ndarray:
    return np.array([[b - 128 for b in hashlib.sha256(t.encode()).digest()[:8]] for t in texts], dtype=np.float32)


def test_stats_embeddings_through_the_mock_with_retries(tmp_path: Path, mock: MockServer) -> None:
    from ultrachat.data.stats import StatsConfig, corpus_stats, mean_pairwise_cosine_similarity

    dialogues = [[f"Question number {i} about a topic?", f"Answer {i}."] for i in range(70)]  # two batches of 64
    src = tmp_path / "e.jsonl"
    src.write_text("".join(json.dumps({"id": str(i), "data": d}) + "\n" for i, d in enumerate(dialogues)))
    mock.control(queue=["429", "500", "malformed"])
    cfg = StatsConfig(tokenizer="whitespace", embedder="endpoint", embeddings_url=mock.root,
                      embeddings_model="emb-test", embeddings_key_env="HTTP_TEST_KEY")
    r = corpus_stats(src, cfg, progress=False)
    expected = mean_pairwise_cosine_similarity(_expected(["\n".join(d) for d in dialogues]))
    assert r["row"]["topic_diversity"] == pytest.approx(expected, rel=1e-5)
    counts = mock.stats()["counts"]
    assert counts["embedding_requests"] == 2 + 3 and counts["embedded_inputs"] == 70
    assert counts["/v1/embeddings"] == 5 and f"via {mock.url}/embeddings" in r["methods"]["topic_diversity"]


def test_stats_embeddings_error_is_one_line(tmp_path: Path, mock: MockServer, monkeypatch: pytest.MonkeyPatch) -> None:
    from ultrachat.data.stats import StatsConfig, corpus_stats

    src = tmp_path / "e.jsonl"
    src.write_text("".join(json.dumps({"id": str(i), "data": [f"q{i}", "a"]}) + "\n" for i in range(3)))
    monkeypatch.setenv("HTTP_TEST_KEY", "wrong")
    cfg = StatsConfig(tokenizer="whitespace", embedder="endpoint", embeddings_url=mock.url,
                      embeddings_key_env="HTTP_TEST_KEY")
    with pytest.raises(ValueError, match=r"/v1/embeddings: HTTP 401") as err:
        corpus_stats(src, cfg, progress=False)
    assert "wrong" not in str(err.value) and mock.stats()["counts"]["401"] == 1  # not retried
    with pytest.raises(ValueError, match=r"--embeddings-url: .* needs a scheme"):
        corpus_stats(src, StatsConfig(tokenizer="whitespace", embedder="endpoint", embeddings_url="localhost:1"),
                     progress=False)


# -- the batch API ------------------------------------------------------------------------
@pytest.fixture
def batch_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("ULTRACHAT_CACHE", str(tmp_path / "cache"))
    proc = subprocess.Popen([sys.executable, "-m", "ultrachat.testing.mock_batch", "--port", "0",
                             "--batch-latency-s", "0.05"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    try:
        assert line.startswith("listening on "), line
        yield line.split()[-1]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stdout.close()


def _batch_control(url: str, **body: object) -> None:
    import urllib.request

    req = urllib.request.Request(url.removesuffix("/v1") + "/_control", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=10).close()


async def test_batch_upload_is_rebuilt_and_retried(batch_server: str) -> None:
    from ultrachat.backends.batch import BatchBackend

    _batch_control(batch_server, fail_next=2)  # the multipart upload fails twice with 500
    cfg = ModelConfig(backend="openai_batch", model="mock", base_url=batch_server.removesuffix("/v1"),
                      batch_wait_s=0.01, batch_poll_s=0.05, max_retries=3)
    backend = BatchBackend(cfg)
    backend.http.backoff_base_s = 0.01
    try:
        out = await asyncio.wait_for(backend.complete(HELLO, GenerationParams(seed=3)), 30)
    finally:
        await backend.close()
    assert out.finish_reason == "stop" and out.text
    assert backend.base_url == batch_server  # /v1 added
    assert backend.http.stats["failed: HTTP 500"] == 2 and backend.http.stats["retries"] == 2
    assert backend.stats["batches"] == 1


async def test_batch_gives_up_with_one_line(batch_server: str) -> None:
    from ultrachat.backends.batch import BatchBackend

    _batch_control(batch_server, fail_next=3)
    cfg = ModelConfig(backend="openai_batch", model="mock", base_url=batch_server, batch_wait_s=0.01, max_retries=2)
    backend = BatchBackend(cfg)
    backend.http.backoff_base_s = 0.01
    try:
        with pytest.raises(BackendError, match=r"/files: HTTP 500: injected server error \(after 2 retries\)"):
            await asyncio.wait_for(backend.complete(HELLO, GenerationParams(seed=4)), 30)
    finally:
        await backend.close()
    assert backend.http.stats["attempts"] == 3


def test_one_module_opens_http_client_sessions() -> None:
    """Every endpoint call goes through backends/http.py; only the mock server's test helper
    (its control channel, stdlib) opens another client."""
    import re

    import ultrachat

    root = Path(ultrachat.__file__).parent
    opener = re.compile(r"ClientSession\(|urlopen\(|httpx\.|\b(Async)?OpenAI\(|http\.client|requests\.(get|post)")
    openers = {str(p.relative_to(root)) for p in root.rglob("*.py") if opener.search(p.read_text(encoding="utf-8"))}
    assert openers == {"backends/http.py", "testing/__init__.py"}
