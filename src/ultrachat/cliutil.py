"""Shared helpers for command modules: one-line errors, the error console, and the one error
boundary every command runs inside.

Exit codes: 0 done; 1 the command could not do its work (bad input file, recipe field,
unreachable endpoint, full disk, an internal error); 2 the command line itself is wrong
(unknown flag, bad flag value, missing argument); 130 interrupted. An error is one line on
stderr, ``error: ...``. An unexpected exception (a bug) is one line too, naming the file its
full traceback was written to; ``ULTRACHAT_DEBUG=1`` prints the traceback instead.

Messages are printed as plain text, never as rich markup: ids, topics and file names may
hold ``[`` and ``]``.
"""

from __future__ import annotations

import os
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.text import Text
from typer.core import TyperGroup

from .core.errors import UserError
from .core.progress import console

__all__ = ["GuardedGroup", "UsageError", "console", "fail", "handle", "run_guarded"]

USAGE, RUNTIME, INTERRUPTED = 2, 1, 130
DEBUG_ENV = "ULTRACHAT_DEBUG"


class UsageError(ValueError):
    """A flag value or combination the command cannot run with (exit 2). A ``ValueError``
    whose message starts with the flag (``--scope must be ...``) counts as one too."""


def fail(message: str, code: int = USAGE) -> None:
    """Print one line naming the problem and exit non-zero (default: a usage error)."""
    console.print(Text.assemble(("error: ", "bold red"), message), highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _known_errors() -> tuple[type[BaseException], ...]:
    # UserError is the base of every package's fixable errors (RunStoreError, BackendError,
    # PromptError, ConfigError, InvalidLine...); ValueError also covers JSON and UTF-8 decoding.
    return (ValueError, UserError)


def error_message(exc: BaseException) -> str:
    """The one line a user sees for a known error."""
    if isinstance(exc, OSError):
        where = exc.filename or ""
        what = exc.strerror or str(exc)
        return f"{where}: {what}" if where else what
    if isinstance(exc, KeyError) and exc.args:  # KeyError quotes its message
        return str(exc.args[0])
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text.strip("'\"") if text[:1] in "'\"" and text[-1:] in "'\"" else text


def _write_traceback(exc: BaseException) -> Path | None:
    """Save the full traceback of an unexpected error; returns where (None if it cannot)."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    path = Path(tempfile.gettempdir()) / f"ultrachat-error-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt"
    try:
        path.write_text(text, encoding="utf-8")
    except OSError:
        return None
    return path


def handle(exc: BaseException) -> int:
    """Print the one line for ``exc`` and return the exit code."""
    if isinstance(exc, KeyboardInterrupt):
        console.print(Text.assemble(("error: ", "bold red"),
                                    "interrupted; rerun the same command to continue where it stopped"))
        return INTERRUPTED
    if isinstance(exc, UsageError) or (isinstance(exc, ValueError) and str(exc).startswith("--")):
        fail_line, code = error_message(exc), USAGE
    elif isinstance(exc, (OSError, *_known_errors())):
        fail_line, code = error_message(exc), RUNTIME
    else:
        where = _write_traceback(exc)
        saved = f"full traceback in {where}" if where else "the traceback could not be saved"
        fail_line = (f"internal error ({type(exc).__name__}: {error_message(exc)}); {saved}; "
                     f"set {DEBUG_ENV}=1 to print it. Please report it.")
        code = RUNTIME
    console.print(Text.assemble(("error: ", "bold red"), fail_line), highlight=False, soft_wrap=True)
    return code


def run_guarded(fn: Callable[[], Any]) -> Any:
    """Run ``fn``; an error becomes one line and an exit code (see :func:`handle`)."""
    try:
        return fn()
    except (typer.Exit, typer.Abort, typer.TyperException):
        raise  # already an exit code, or a usage error with its usage box
    except (Exception, KeyboardInterrupt) as exc:
        if os.environ.get(DEBUG_ENV) == "1" and not isinstance(exc, KeyboardInterrupt):
            raise
        raise typer.Exit(handle(exc)) from None


class GuardedGroup(TyperGroup):
    """The command group of ``ultrachat``: every command runs inside :func:`run_guarded`, so
    no exception leaves a command as a traceback (also under typer's test runner)."""

    def invoke(self, ctx: Any) -> Any:
        return run_guarded(lambda: super(GuardedGroup, self).invoke(ctx))
