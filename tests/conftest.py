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
