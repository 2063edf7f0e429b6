"""Test and benchmark helpers: the mock OpenAI-compatible server as a real subprocess.

Example::

    from ultrachat.testing import MockServer

    with MockServer("--latency-ms", "50", "--fault-500", "0.1") as server:
        print(server.url)                   # http://127.0.0.1:PORT/v1
        server.control(queue=["429"])       # the next request gets a 429
        print(server.stats()["counts"])
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any


class MockServer:
    """Start ``python -m ultrachat.testing.mock_openai`` on a free 127.0.0.1 port.

    Extra arguments are passed through as command-line flags.
    """

    def __init__(self, *args: str, start_timeout_s: float = 20.0) -> None:
        self.args = args
        self.start_timeout_s = start_timeout_s
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def start(self) -> MockServer:
        cmd = [sys.executable, "-m", "ultrachat.testing.mock_openai", "--port", "0", *self.args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # blocks until the server prints its address
        if not line.startswith("listening on "):
            self.stop()
            raise RuntimeError(f"mock server did not start (said {line!r})")
        self.url = line.split()[-1]
        return self

    @property
    def root(self) -> str:
        """The server address without ``/v1``."""
        return self.url.removesuffix("/v1")

    def _request(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        import urllib.request  # only tests and benchmarks get here; keeps `ultrachat --help` fast

        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.root + path, data=data, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return dict(json.loads(resp.read()))

    def control(self, **changes: Any) -> dict[str, Any]:
        """Change the running server: ``queue=[...]`` faults, ``reset=True``, ``latency_ms=...``."""
        return self._request("/_control", changes)

    def stats(self) -> dict[str, Any]:
        """Counters and the per-request log ``[[time, status, tokens], ...]``."""
        return self._request("/_stats")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            if self.proc.stdout:
                self.proc.stdout.close()
            self.proc = None

    def __enter__(self) -> MockServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
