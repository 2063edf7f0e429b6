"""Provider batch API backend against our mock Batch API server (a real process):
one round per batch cycle, resubmitted errors, resume after a kill, cancel, batch pricing."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ultrachat.backends import GenerationParams
from ultrachat.backends.batch import BatchBackend, BatchJournal
from ultrachat.core.corpus import iter_jsonl
from ultrachat.generate.runner import generate
from ultrachat.recipe import ModelConfig, load_recipe


class BatchServer:
    def __init__(self, *args: str) -> None:
        cmd = [sys.executable, "-m", "ultrachat.testing.mock_batch", "--port", "0", *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith("listening on "), line
        self.url = line.split()[-1]

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url.removesuffix("/v1") + "/_stats", timeout=10) as resp:
            return dict(json.loads(resp.read()))

    def control(self, batch_latency_s: float, fail_rate: float = 0.0, fail_next: int = 0) -> None:
        body = json.dumps({"batch_latency_s": batch_latency_s, "fail_rate": fail_rate, "fail_next": fail_next}).encode()
        req = urllib.request.Request(self.url.removesuffix("/v1") + "/_control", data=body,
                                     headers={"Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=10).close()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


@pytest.fixture(scope="module")
def server() -> Iterator[BatchServer]:
    """One server for the module (it starts slowly); each test sets its latency and failures.
    Counters are compared as differences, since tests share them."""
    srv = BatchServer()
    yield srv
    srv.stop()


@pytest.fixture(autouse=True)
def _journal_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ULTRACHAT_CACHE", str(tmp_path / "cache"))
    prices = tmp_path / "prices.toml"
    prices.write_text('batch_discount = 0.5\n[models."mock"]\ninput = 1.0\noutput = 2.0\n', encoding="utf-8")
    monkeypatch.setenv("ULTRACHAT_PRICES", str(prices))


def batch_recipe(tmp_path: Path, url: str, seed: int = 0) -> Path:
    """Tests share one server: a distinct seed keeps their requests (custom_ids) distinct."""
    # profile "small", as the fake backend of the live runs compared with it gets (task prompts, small caps)
    role = (f'backend = "openai_batch"\nmodel = "mock"\nbase_url = "{url}"\nprofile = "small"\n'
            "batch_wait_s = 0.1\nbatch_poll_s = 0.1\n")
    path = tmp_path / "batch.toml"
    path.write_text(f"seed = {seed}\nconcurrency = 100\n[models.user]\n{role}[models.assistant]\n{role}",
                    encoding="utf-8")
    return path


def by_id(path: Path) -> dict[str, list[str]]:
    return {d["id"]: d["data"] for d in iter_jsonl(path)}


def test_batch_run_matches_live_run_one_round_per_cycle(tmp_path: Path, server: BatchServer,
                                                        fake_recipe_file) -> None:
    server.control(batch_latency_s=0.1, fail_rate=0.1)
    before = Counter(server.stats()["counts"])
    over = {"dialogues": 10, "dialogue.min_rounds": 3, "dialogue.max_rounds": 3}
    generate("world", load_recipe(fake_recipe_file(), {**over, "out": str(tmp_path / "live")}), progress=False)
    summary = generate("world", load_recipe(batch_recipe(tmp_path, server.url), {**over, "out": str(tmp_path / "b")}),
                       progress=False)
    assert summary.stats.stop_reasons == {"completed": 10}
    # The mock answers like the fake backend, so the batched corpus is the live one.
    assert by_id(tmp_path / "b" / "dialogues.jsonl") == by_id(tmp_path / "live" / "dialogues.jsonl")
    stats = Counter(server.stats()["counts"])
    stats.subtract(before)
    plan_calls = sum(1 for _ in (tmp_path / "b" / "plan" / "calls.jsonl").open())
    dialogue_calls = 10 * (3 + 2)
    # Every request answered once (errors were resubmitted, never a success twice) ...
    assert stats["repeated_requests"] == 0 and stats["requests"] > plan_calls + dialogue_calls
    # ... and the 5 turns of all 10 dialogues took 5 cycles, plus planning and resubmissions.
    assert stats["batches"] <= 5 + 3 + 4
    total = json.loads((tmp_path / "b" / "report.json").read_text())["total"]
    assert total["cost_usd"] == pytest.approx((total["prompt_tokens"] * 1 + total["completion_tokens"] * 2) / 2e6)


def _generate_child(recipe: str, out: str, cache: str) -> None:
    os.environ["ULTRACHAT_CACHE"] = cache
    generate("world", load_recipe(recipe, {"dialogues": 6, "out": out}), progress=False)


def test_a_killed_run_resumes_its_batches_without_paying_twice(tmp_path: Path, server: BatchServer) -> None:
    server.control(batch_latency_s=0.6)
    repeated = server.stats()["counts"].get("repeated_requests", 0)
    recipe, out = batch_recipe(tmp_path, server.url, seed=7), tmp_path / "out"
    journal = tmp_path / "cache" / "batches.sqlite"
    child = multiprocessing.get_context("fork").Process(
        target=_generate_child, args=(str(recipe), str(out), str(tmp_path / "cache")))
    child.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # kill once the dialogue phase has a batch in flight
        if out.joinpath("plan", "openings.jsonl").exists() and out.joinpath("plan", "openings.jsonl").stat().st_size \
                and journal.exists() and BatchJournal(journal).live_batches():
            break
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    live = BatchJournal(journal).live_batches()
    assert live, "the kill should land while a batch is running"
    summary = generate("world", load_recipe(recipe, {"dialogues": 6, "out": str(out)}), progress=False)
    assert summary.stats.dialogues + summary.already_done == 6
    assert len({d["id"] for d in iter_jsonl(out / "dialogues.jsonl")}) == 6
    stats = server.stats()
    # The rerun waited for the running batch instead of resubmitting its requests.
    assert stats["counts"].get("repeated_requests", 0) == repeated
    assert all(stats["batches"][b] == "completed" for b in live)


async def test_cancel_stops_running_batches(tmp_path: Path, server: BatchServer) -> None:
    server.control(batch_latency_s=30)
    cancelled = server.stats()["counts"].get("cancelled", 0)
    cfg = ModelConfig(backend="openai_batch", model="mock", base_url=server.url, batch_wait_s=0.05, batch_poll_s=0.1)
    backend = BatchBackend(cfg)
    call = asyncio.ensure_future(backend.complete([{"role": "user", "content": "Hi"}], GenerationParams(seed=1)))
    while not backend.journal.live_batches():
        await asyncio.sleep(0.05)
    running = backend.journal.live_batches()
    other = BatchBackend(cfg)  # e.g. `ultrachat batch cancel RECIPE` from another shell
    assert await other.cancel_all() == running and not backend.journal.live_batches()
    await other.close()
    out = await asyncio.wait_for(call, 10)
    assert out.finish_reason == "error"  # the engine ends such a dialogue; a rerun submits it again
    assert server.stats()["counts"]["cancelled"] == cancelled + 1
    await backend.close()


async def test_a_flaky_provider_is_retried(tmp_path: Path, server: BatchServer) -> None:
    server.control(batch_latency_s=0.1, fail_next=3)  # upload, create and a poll fail with 500
    injected = server.stats()["counts"].get("injected_500", 0)
    cfg = ModelConfig(backend="openai_batch", model="mock", base_url=server.url, batch_wait_s=0.05, batch_poll_s=0.1,
                      max_retries=4)
    backend = BatchBackend(cfg)
    try:
        out = await asyncio.wait_for(backend.complete([{"role": "user", "content": "Tides?"}],
                                                      GenerationParams(seed=5)), 30)
    finally:
        await backend.close()
    assert out.finish_reason == "stop" and out.text
    assert server.stats()["counts"]["injected_500"] == injected + 3
