"""Shared fixtures. The fake backend is for unit tests; `embedded_model_dir` gives the
real embedded model (converted once per machine and cached)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
ARTIFACTS = REPO / "test-artifacts"

FAKE_RECIPE = """
[models.user]
backend = "fake"
model = "fake{opts}"
[models.assistant]
backend = "fake"
model = "fake{opts}"
"""


@pytest.fixture
def fake_recipe_file(tmp_path: Path):
    """Write a recipe whose roles use the fake backend; ``opts`` like ';delay=0.01'."""

    def make(opts: str = "", extra: str = "") -> Path:
        path = tmp_path / "recipe.toml"
        path.write_text(FAKE_RECIPE.format(opts=opts) + extra, encoding="utf-8")
        return path

    return make


@pytest.fixture(scope="session")
def embedded_model_dir() -> Path:
    from ultrachat.backends.local import EMBEDDED_MODEL, resolve_model_dir

    return resolve_model_dir(EMBEDDED_MODEL)


@pytest.fixture(scope="session")
def ultrachat_exe() -> list[str]:
    """The CLI as a subprocess command line (the installed console script's module)."""
    return [sys.executable, "-m", "ultrachat.cli"]


@pytest.fixture(scope="session", autouse=True)
def _offline_env() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    ARTIFACTS.mkdir(exist_ok=True)


@pytest.fixture
def list_pool():
    """A factory of backend pools whose every model is one FakeBackend that answers a list
    request with exactly the size asked ("List N" / "list of N"; ``short``: at most that
    many), each item made by ``item(prompt, h, i)`` (``h`` a hash of the prompt, ``i`` from
    1); other prompts get the fake's usual replies. ``pool.fake.calls`` holds every call."""
    import re

    from ultrachat.backends import Backend, BackendPool, GenerationParams, Message
    from ultrachat.backends.fake import FakeBackend
    from ultrachat.backends.shaped import default_reply
    from ultrachat.core.hashing import hexdigest
    from ultrachat.recipe import ModelConfig

    size = re.compile(r"(?:List|list of) (\d+)")

    class ListPool(BackendPool):
        def __init__(self, item, short: int = 0) -> None:
            super().__init__()

            def reply(messages: list[Message], params: GenerationParams) -> str:
                prompt = messages[-1]["content"]
                n = size.search(prompt)
                if not n:
                    return default_reply(messages, params)
                h = hexdigest(prompt)[:10]
                count = min(int(n.group(1)), short) if short else int(n.group(1))
                return "\n".join(f"{i}. {item(prompt, h, i)}" for i in range(1, count + 1))

            self.fake = FakeBackend(reply)

        def get(self, cfg: ModelConfig) -> Backend:
            return self.fake

    return ListPool


# -- the slow marker -------------------------------------------------------------------------------
#: fixtures whose tests start `ultrachat` processes or load the embedded model
SLOW_FIXTURES = {"ultrachat_exe", "embedded_model_dir"}
#: names whose import marks a whole test module slow: mock servers are processes, a tiny model is trained
SLOW_IMPORTS = ("MockServer", "make_tiny_model", "subprocess")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``slow`` every test that loads a model or starts processes, and all of ``tests/e2e/``:
    ``pytest -m "not slow"`` is the quick loop, ``make test`` still runs everything."""
    for item in items:
        module = getattr(item, "module", None)
        if ("e2e" in item.path.parts or SLOW_FIXTURES & set(getattr(item, "fixturenames", ()))
                or any(hasattr(module, name) for name in SLOW_IMPORTS)):
            item.add_marker(pytest.mark.slow)
