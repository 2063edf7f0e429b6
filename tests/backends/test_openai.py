"""The OpenAI-compatible backend through real HTTP against the mock server (a subprocess)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from email.utils import formatdate

import pytest

from ultrachat.backends import BackendError, GenerationParams
from ultrachat.backends.openai import (
    OpenAIBackend,
    model_context_length,
    normalize_base_url,
    retry_after_seconds,
)
from ultrachat.recipe import ModelConfig
from ultrachat.testing import MockServer

HELLO = [{"role": "user", "content": "Hello there, how are you?"}]
PARAMS = GenerationParams(max_tokens=20)


@pytest.fixture(scope="module")
def server() -> Iterator[MockServer]:
    with MockServer("--hang-s", "5") as srv:
        yield srv


@pytest.fixture
def mock(server: MockServer) -> MockServer:
    server.control(reset=True, latency_ms=0, retry_after=1.0, retry_after_date=False, fail_after=0, reasoning="",
                   max_model_len=0)
    return server


def backend(url: str, **cfg: object) -> OpenAIBackend:
    settings = {"backend": "openai", "base_url": url, "model": "mock", "timeout_s": 1.0, "max_retries": 3, **cfg}
    return OpenAIBackend(ModelConfig(**settings), backoff_base_s=0.02)


@pytest.mark.parametrize("fault", ["429", "500", "timeout", "malformed", "drop"])
async def test_each_fault_is_retried_until_success(mock: MockServer, fault: str) -> None:
    mock.control(retry_after=0.1)
    b = backend(mock.url, timeout_s=0.5)
    await b.start()
    try:
        mock.control(queue=[fault])
        out = await b.complete(HELLO, PARAMS)
    finally:
        await b.close()
    assert out.finish_reason == "stop" and out.text.startswith("Here is an answer")
    assert out.usage.completion_tokens > 0
    counts = mock.stats()["counts"]
    assert counts[f"fault_{fault}"] == 1
    assert b.stats["retries"] == 1 and b.stats["ok"] == 2  # the start probe and the retried call


async def test_rejected_request_is_not_retried(mock: MockServer) -> None:
    b = backend(mock.url)
    await b.start()
    try:
        mock.control(queue=["400"])
        rejected = await b.complete(HELLO, PARAMS)  # one bad prompt: an empty error reply, the run goes on
        assert (await b.complete(HELLO, PARAMS)).finish_reason == "stop"
    finally:
        await b.close()
    assert rejected.finish_reason == "error" and rejected.text == ""
    assert b.stats["retries"] == 0 and mock.stats()["counts"]["400"] == 1


class VirtualClock:
    """Time that moves only when the code under test sleeps: waits become exact numbers,
    whatever the machine's load. ``slept`` lists every wait asked for."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []
        self._real_sleep = asyncio.sleep

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float, result: object = None) -> object:
        if seconds > 0:
            self.slept.append(seconds)
            self.now += max(seconds, 1e-6)  # no real sleep is shorter; float residues would never end
        await self._real_sleep(0)
        return result


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> VirtualClock:
    """The rate limiters' clock and sleeps, and the backend's retry sleeps, made virtual."""
    from types import SimpleNamespace

    from ultrachat.backends import ratelimit

    c = VirtualClock()
    monkeypatch.setattr(ratelimit, "time", SimpleNamespace(monotonic=c.monotonic))
    monkeypatch.setattr(ratelimit, "asyncio", SimpleNamespace(sleep=c.sleep, Lock=asyncio.Lock))
    monkeypatch.setattr(asyncio, "sleep", c.sleep)
    return c


@pytest.mark.parametrize("date_form", [False, True])
async def test_retry_after_is_honoured(mock: MockServer, clock: VirtualClock, date_form: bool) -> None:
    # An HTTP-date has whole-second resolution, so ask for 2 s and expect at least 1 s.
    wait, least = (2.0, 1.0) if date_form else (0.8, 0.8)
    mock.control(retry_after=wait, retry_after_date=date_form)
    b = backend(mock.url)
    await b.start()
    try:
        mock.control(queue=["429"])
        out = await b.complete(HELLO, PARAMS)
    finally:
        await b.close()
    assert out.finish_reason == "stop" and mock.stats()["counts"]["fault_429"] == 1
    assert len(clock.slept) == 1 and least <= clock.slept[0] <= wait * 1.1, clock.slept  # one wait, as asked


def test_retry_after_parsing() -> None:
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds("0.5") == 0.5
    assert 28 <= retry_after_seconds(formatdate(time.time() + 30, usegmt=True)) <= 30  # type: ignore[operator]
    assert retry_after_seconds(formatdate(time.time() - 30, usegmt=True)) == 0.0
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


def test_base_url_normalisation() -> None:
    assert normalize_base_url("http://h:8000") == "http://h:8000/v1"
    assert normalize_base_url("http://h:8000/v1/") == "http://h:8000/v1"
    assert normalize_base_url(None) == "https://api.openai.com/v1"
    with pytest.raises(BackendError, match="scheme"):
        normalize_base_url("localhost:8000")


async def test_exhausted_retries_then_circuit_breaker(mock: MockServer) -> None:
    b = backend(mock.url, max_retries=1)
    await b.start()
    try:
        mock.control(queue=["500", "500"])
        first = await b.complete(HELLO, PARAMS)  # one request failing: an error completion, the run goes on
        assert first.finish_reason == "error" and first.text == ""
        assert (await b.complete(HELLO, PARAMS)).finish_reason == "stop"  # a success resets the breaker
        mock.control(fail_after=1)  # from now on every request fails
        results = await asyncio.gather(*(b.complete(HELLO, PARAMS) for _ in range(6)), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BackendError)]
        assert errors, results
        assert "every request" in str(errors[0]) and "HTTP 500" in str(errors[0]) and "\n" not in str(errors[0])
        with pytest.raises(BackendError, match="every request"):  # tripped: later calls stop at once
            await b.complete(HELLO, PARAMS)
    finally:
        await b.close()


async def burst(mock: MockServer, calls: int, **cfg: object) -> list[int]:
    """Send ``calls`` at once through a backend with ``cfg``; returns the tokens of each
    request the server answered successfully."""
    b = backend(mock.url, **cfg)
    await b.start()
    try:
        mock.control(reset=True)  # forget the start probe
        await asyncio.gather(*(b.complete(HELLO, PARAMS) for _ in range(calls)))
    finally:
        await b.close()
    return [tok for _, status, tok in mock.stats()["log"] if status == 200]


async def test_requests_per_minute_is_measured(mock: MockServer, clock: VirtualClock) -> None:
    served = await burst(mock, 25, requests_per_minute=600)  # 10/s, bucket of 1 s (10 requests)
    assert len(served) == 25
    # The start probe took 1 of the 10; the other 9 pass at once and the remaining 16 wait
    # for the refill at exactly 10 a second.
    assert clock.now == pytest.approx(1.6) and (25 - 9) / clock.now == pytest.approx(10.0)


async def test_tokens_per_minute_is_measured(mock: MockServer, clock: VirtualClock) -> None:
    served = await burst(mock, 40, tokens_per_minute=12_000)  # 200 tokens/s, bucket of 1 s (200 tokens)
    total = sum(served)
    assert len(served) == 40 and total > 500  # the server counted the tokens it served
    # Each call is charged its estimate up front and refunded to its real size once answered;
    # answers take real time while the limiter's time is virtual, so the wait lies between
    # "every call at its real size" and "every call at its estimate" (the probe's tokens are
    # charged too), beyond the one free bucket.
    estimate = sum(len(m["content"]) for m in HELLO) // 4 + PARAMS.max_tokens
    least, most = (total - 200) / 200, (40 * estimate + max(served) - 200) / 200
    assert least <= clock.now <= most + 1e-3, (total, estimate, clock.now)


async def test_max_in_flight_is_measured() -> None:
    # A server of its own: earlier tests leave hung requests running on the shared one.
    with MockServer() as srv:
        srv.control(latency_ms=200)
        served = await burst(srv, 9, max_in_flight=3)
        assert len(served) == 9 and srv.stats()["counts"]["max_active"] == 3  # the server's own count


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_fail_fast_unreachable() -> None:
    b = backend(f"http://127.0.0.1:{_closed_port()}/v1")
    with pytest.raises(BackendError, match="cannot reach") as err:
        await b.start()
    assert b.stats["attempts"] == 1 and b.stats["retries"] == 0  # no retry of a refused connection
    assert "\n" not in str(err.value)


async def test_fail_fast_bad_key_and_unknown_model(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-test-SECRET-value"
    with MockServer("--api-key", secret, "--models", "good-model") as srv:
        monkeypatch.setenv("MY_KEY", "sk-wrong-key")
        with pytest.raises(BackendError, match=r"rejected the API key \(HTTP 401") as err:
            await backend(srv.url, model="good-model", api_key_env="MY_KEY").start()
        assert "sk-wrong-key" not in str(err.value) and "MY_KEY" in str(err.value)

        monkeypatch.setenv("MY_KEY", secret)
        with pytest.raises(BackendError, match=r"model 'nope' not found \(HTTP 404") as err:
            await backend(srv.url, model="nope", api_key_env="MY_KEY").start()
        assert secret not in str(err.value)

        ok = backend(srv.url, model="good-model", api_key_env="MY_KEY")
        await ok.start()  # the right key and model pass
        out = await ok.complete(HELLO, PARAMS)
        await ok.close()
        assert out.finish_reason == "stop"


async def test_start_probe_retries_a_server_that_answers_and_gives_up_on_silence(mock: MockServer) -> None:
    """The probe fails fast on silence (timeouts) but not on answered faults: a 429 and
    500 burst at start (a flaky or busy endpoint, a resumed run) is retried like any call."""
    mock.control(retry_after=0.01, queue=["429", "500", "malformed", "500"])
    b = backend(mock.url, max_retries=5)
    await b.start()  # four answered faults in a row, more than the silent limit of two retries
    await b.close()
    assert b.stats["retries"] == 4 and b.stats["ok"] == 1
    mock.control(reset=True, queue=["timeout", "500", "timeout", "timeout", "timeout"])
    silent = backend(mock.url, max_retries=5, timeout_s=0.3)
    with pytest.raises(BackendError, match="failed its first request: no reply"):
        await silent.start()
    assert silent.stats["attempts"] == 4  # three silent tries (the first and two retries) and the 500


@pytest.mark.parametrize("mode", ["field", "think"])
async def test_reasoning_is_read_only_when_asked(mock: MockServer, mode: str) -> None:
    mock.control(reasoning=mode)
    thought = "The user asks: Hello there, how are you?. I should answer clearly."
    plain, keeping = backend(mock.url), backend(mock.url, keep_reasoning=True)
    try:
        ignored, kept = await plain.complete(HELLO, PARAMS), await keeping.complete(HELLO, PARAMS)
    finally:
        await plain.close()
        await keeping.close()
    assert ignored.reasoning == ""
    if mode == "field":  # a separate field: kept on request, never in the text
        assert kept.reasoning == thought and thought not in kept.text + ignored.text
    else:  # a <think> block stays in the text: the dialogue engine takes it out (and keeps it on request)
        assert kept.reasoning == "" and kept.text.startswith(f"<think>\n{thought}\n</think>")


async def test_context_length_comes_from_the_models_listing_once(mock: MockServer) -> None:
    mock.control(max_model_len=4096)
    b = backend(mock.url)
    try:
        await b.start()
        before = b.stats["attempts"]
        assert await asyncio.gather(b.context_length(), b.context_length()) == [4096, 4096]
        assert b.stats["attempts"] - before == 1  # concurrent callers share one GET /models
        mock.control(max_model_len=0)
        unknown = backend(mock.url)
        assert await unknown.context_length() is None  # the server does not say: no bound
        await unknown.close()
    finally:
        await b.close()


def test_model_context_length_of_a_listing() -> None:
    two = {"data": [{"id": "a", "max_model_len": 8192}, {"id": "b", "max_model_len": 32768}]}
    assert model_context_length(two, "b") == 32768 and model_context_length(two, "c") is None
    # One model served whatever name is sent (llama.cpp-style): its figure counts.
    assert model_context_length({"data": [{"id": "served", "max_model_len": 4096}]}, "alias") == 4096
    assert model_context_length({"data": [{"id": "a"}]}, "a") is None  # OpenAI's own listing says nothing
    assert model_context_length({"object": "list"}, "a") is None


async def test_a_prompt_is_counted_by_the_servers_tokenize_until_it_has_none(mock: MockServer) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "How do the tides work?"}]
    b = backend(mock.url)
    try:
        assert await b.count_tokens(messages) == 7  # vLLM's POST /tokenize; the mock counts words
        assert mock.stats()["counts"]["tokenize"] == 1
        mock.control(tokenize=False)  # a server without it (OpenAI, llama.cpp): 404
        assert await b.count_tokens(messages) is None
        before = b.stats["attempts"]
        assert await b.count_tokens(messages) is None and b.stats["attempts"] == before  # not asked again
    finally:
        mock.control(tokenize=True)
        await b.close()
