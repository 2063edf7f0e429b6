"""Data commands: ``show`` (and the data tooling's verbs)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from ..cliutil import run_guarded


def register(app: typer.Typer) -> None:
    @app.command("show", help="Print dialogues of an UltraChat JSONL file as a chat.")
    def show(path: Path, n: Annotated[int, typer.Option(help="How many dialogues.")] = 1,
             id: Annotated[Optional[str], typer.Option("--id", help="Show the dialogue with this id.")] = None) -> None:
        from .show import show_dialogues

        run_guarded(lambda: show_dialogues(path, n, id, Console()))
