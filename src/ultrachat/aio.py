"""The event loop every command runs on: uvloop where it is installed (Linux, macOS).

uvloop's loop costs a fraction of asyncio's per callback, socket event and future; with
hundreds of HTTP calls in flight that is a third of the client's CPU per call (see
docs/benchmarks.md, orchestration). Where uvloop is missing (Windows) asyncio's loop serves.

    from ultrachat.aio import run
    summary = run(generate_async("world", recipe))
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

try:
    import uvloop
except ImportError:  # pragma: no cover - Windows has no uvloop
    uvloop = None  # type: ignore[assignment]  # the module or None, tested before use


def run(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on uvloop when available."""
    if uvloop is None:
        return asyncio.run(coro)
    return uvloop.run(coro)
