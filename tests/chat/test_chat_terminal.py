"""`ultrachat chat` driven through a real pseudo-terminal: a trained local model and an
OpenAI-compatible streaming endpoint; plus the embedded model and a non-streaming server."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from ultrachat.testing.tiny_model import make_tiny_model, toy_dialogues
from ultrachat.train.formatting import ULTRALM_SYSTEM


class Terminal:
    """A command on a pseudo-terminal; ``expect`` reads until a pattern shows up."""

    def __init__(self, cmd: list[str]) -> None:
        master, slave = pty.openpty()
        env = {**os.environ, "OMP_NUM_THREADS": "1", "TERM": "dumb", "COLUMNS": "200"}
        self.proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
        os.close(slave)
        self.fd, self.buffer = master, ""
        self.arrivals: list[tuple[float, str]] = []  # when each chunk of output arrived

    def expect(self, pattern: str, timeout: float = 120) -> str:
        """Return the output up to the end of ``pattern`` (a regex) and drop it from the buffer."""
        deadline = time.monotonic() + timeout
        while not (m := re.search(pattern, self.buffer)):
            left = deadline - time.monotonic()
            assert left > 0, f"no {pattern!r} within {timeout} s; got {self.buffer[-2000:]!r}"
            if select.select([self.fd], [], [], min(left, 0.5))[0]:
                try:
                    chunk = os.read(self.fd, 4096).decode("utf-8", "replace").replace("\r\n", "\n")
                except OSError:  # the child closed the terminal
                    chunk = ""
                assert chunk or self.proc.poll() is None, f"exited; got {self.buffer[-2000:]!r}"
                self.arrivals.append((time.monotonic(), chunk))
                self.buffer += chunk
        text, self.buffer = self.buffer[: m.end()], self.buffer[m.end():]
        return text

    def send(self, line: str) -> None:
        os.write(self.fd, (line + "\n").encode())

    def reply(self, line: str) -> str:
        """Send a chat line and return the streamed answer."""
        self.send(line)
        self.expect(r"Assistant: ")
        return self.expect(r"\nYou: ")[: -len("\nYou: ")]

    def close(self) -> int:
        try:
            return self.proc.wait(timeout=30)
        finally:
            os.close(self.fd)


def chat_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "ultrachat.cli", "chat", *args]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model fine-tuned for a few steps with the UltraLM template."""
    import torch

    from ultrachat.train.config import load_train_config
    from ultrachat.train.sft import train

    root = tmp_path_factory.mktemp("chat")
    dialogues = toy_dialogues(8)
    (root / "d.jsonl").write_text("".join(json.dumps(d) + "\n" for d in dialogues))
    base = make_tiny_model(root / "base", [t for d in dialogues for t in d["data"]])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(load_train_config(None, {"model": str(base), "data": [str(root / "d.jsonl")], "out": str(root / "m"),
                                       "max_steps": 2, "eval_ratio": 0, "learning_rate": 5e-3, "batch_size": 4}),
              progress=False)
    finally:
        torch.set_num_threads(threads)
    return root / "m"


def test_local_model_chat_with_commands(trained, tmp_path):
    from ultrachat.chat.session import LocalChatModel

    term = Terminal(chat_cmd(str(trained), "--temperature", "0", "--max-new-tokens", "12"))
    assert "template ultralm" in term.expect(r"You: ")
    first = term.reply("What is the capital of France?").strip()
    term.send(f"/save {tmp_path / 'a.jsonl'}")
    term.expect(r"\[saved 1 rounds")
    term.send("/system Be brief.")
    term.expect(r"\[system prompt set\]")
    second = term.reply("And of Spain?").strip()
    term.send(f"/save {tmp_path / 'b.jsonl'}")
    term.expect(r"\[saved 2 rounds")
    term.send("/reset")
    term.expect(r"\[conversation reset\]")
    term.send(f"/save {tmp_path / 'c.jsonl'}")
    term.expect(r"\[saved 0 rounds")
    term.send("/exit")
    assert term.close() == 0

    a = json.loads((tmp_path / "a.jsonl").read_text())
    b = json.loads((tmp_path / "b.jsonl").read_text())
    assert a["data"] == ["What is the capital of France?", first]
    assert a["meta"]["system"] == ULTRALM_SYSTEM  # the UltraLM default for a model trained with that template
    assert b["data"] == ["What is the capital of France?", first, "And of Spain?", second]
    assert b["meta"]["system"] == "Be brief." and b["meta"]["template"] == "ultralm"
    assert json.loads((tmp_path / "c.jsonl").read_text())["data"] == []
    # What streamed to the terminal is the model's greedy answer to the UltraLM-formatted history.
    model = LocalChatModel(str(trained))
    history = [{"role": "system", "content": ULTRALM_SYSTEM}, {"role": "user", "content": a["data"][0]}]
    assert "".join(model.stream(history, 0.0, 1.0, 12)).strip() == first


class _SSE(BaseHTTPRequestHandler):
    """An OpenAI-compatible endpoint that streams each reply word by word. In the first reply it
    holds the last word back until the test has seen the first ones on the terminal, so
    streaming is proven by order, not by timing."""

    requests: ClassVar[list[dict]] = []
    shown = threading.Event()  # set by the test once the first words reached the terminal
    held: ClassVar[list[bool]] = []  # whether they had, when the last word was due

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(body)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        words = ["Hello", " from", " the", f" stream {len(self.requests)}."]
        for i, word in enumerate(words):
            if i == len(words) - 1 and len(self.requests) == 1:
                type(self).held.append(type(self).shown.wait(timeout=60))
            chunk = {"choices": [{"index": 0, "delta": {"content": word}}]}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()
        self.wfile.write(b"data: [DONE]\n\n")

    def log_message(self, *args: object) -> None:
        pass


def test_endpoint_chat_streams_and_keeps_history():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SSE)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        term = Terminal(chat_cmd("--base-url", url, "--model", "tiny", "--system", "Be kind."))
        term.expect(r"You: ")
        term.send("Hi")
        term.expect(r"Assistant: ")
        term.expect(r"Hello")
        _SSE.shown.set()
        assert term.expect(r"\nYou: ").startswith(" from the stream 1.")
        assert _SSE.held == [True], "the first words were not shown before the last was sent"
        assert term.reply("More?").strip() == "Hello from the stream 2."
        term.send("/exit")
        assert term.close() == 0
    finally:
        server.shutdown()
    last = _SSE.requests[-1]
    assert last["stream"] is True and last["model"] == "tiny" and last["temperature"] == 0.7
    assert last["max_tokens"] == 2000
    assert last["messages"] == [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"},
                                {"role": "assistant", "content": "Hello from the stream 1."},
                                {"role": "user", "content": "More?"}]


def test_endpoint_without_streaming_and_errors_are_reported():
    from ultrachat.chat.session import ChatError, ChatSession, EndpointChatModel
    from ultrachat.testing import MockServer

    with MockServer("--api-key", "k") as server:
        session = ChatSession(EndpointChatModel(server.url, "mock", api_key="k"), max_new_tokens=32)
        answer = "".join(session.send("What is a comet?"))
        assert answer and session.history[-1] == {"role": "assistant", "content": answer.strip()}
        with pytest.raises(ChatError, match="HTTP 401"):
            "".join(ChatSession(EndpointChatModel(server.url, "mock", api_key="bad")).send("x"))


def test_embedded_default_model_answers(embedded_model_dir):
    import torch

    from ultrachat.chat.session import ChatSession, LocalChatModel

    session = ChatSession(LocalChatModel("smollm2-135m"), temperature=0, max_new_tokens=4)
    assert session.model.template == "chat" and session.system == ""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    question = "What is the capital of France?"
    try:
        pieces = list(session.send(question))
        # The streamed reply is the model's own greedy continuation of the formatted prompt.
        ids = session.model._prompt_ids([{"role": "user", "content": question}], 4)
        with torch.no_grad():
            tok = session.model.tok
            direct = session.model.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=4,
                                                  do_sample=False, eos_token_id=tok.eos_token_id,
                                                  pad_token_id=tok.pad_token_id or tok.eos_token_id)
    finally:
        torch.set_num_threads(threads)
    expected = tok.decode(direct[0, ids.shape[1]:], skip_special_tokens=True)
    assert len(pieces) >= 1 and "".join(pieces) == expected and expected.strip(), (pieces, expected)
    assert session.history == [{"role": "user", "content": question},
                               {"role": "assistant", "content": expected.strip()}]
