"""Installs: ranges in pyproject.toml, exact versions in requirements.lock, the two in step."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
UNLOCKED_EXTRAS = {"vllm", "all"}  # vllm pins its own CUDA torch; all only names other extras


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _declared() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra, items in project["optional-dependencies"].items():
        if extra not in UNLOCKED_EXTRAS:
            reqs += items
    return {_name(r): r for r in reqs}


def _locked() -> dict[str, str]:
    pins = re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)$", (REPO / "requirements.lock").read_text(), re.M)
    return {name.lower().replace("_", "-"): version for name, version in pins}


def test_pyproject_declares_ranges_not_pins() -> None:
    pinned = [r for r in _declared().values() if "==" in r]
    assert pinned == []


def test_every_declared_dependency_is_locked() -> None:
    locked = _locked()
    missing = sorted(name for name in _declared() if name not in locked)
    assert missing == [], f"run `make lock`: {missing} not in requirements.lock"


def test_torch_is_locked_to_the_cpu_build_version() -> None:
    assert _locked()["torch"] == "2.13.0"
