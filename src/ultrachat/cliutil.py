"""Shared helpers for command modules: one-line errors and the error console."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console

console = Console(stderr=True)


def fail(message: str, code: int = 2) -> None:
    """Print one line naming the problem and exit non-zero."""
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True, markup=True)
    raise typer.Exit(code)


def run_guarded(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` and turn the errors users can fix into one-line messages."""
    from .backends.base import BackendError
    from .data.jsonl import InvalidLine
    from .generate.store import RunStoreError
    from .prompts import PromptError
    from .recipe import RecipeError

    try:
        return fn()
    except (RecipeError, RunStoreError, BackendError, PromptError, InvalidLine, FileNotFoundError, ValueError,
            PermissionError, IsADirectoryError) as exc:
        fail(str(exc).strip("'\"").replace("[", "\\["))
    except OSError as exc:  # disk full, unwritable folder...
        fail(f"{exc.filename or ''}: {exc.strerror or exc}", 1)
    except KeyboardInterrupt:
        fail("interrupted; rerun the same command to continue where it stopped", 130)
