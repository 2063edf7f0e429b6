"""``ultrachat batch status|cancel``: the provider batch jobs of ``openai_batch`` backends
(:mod:`ultrachat.backends.batch`), listed from this machine's journal or cancelled."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import aio
from ..cliutil import run_guarded
from ..core.paths import batch_journal_path

JournalOpt = Annotated[Optional[Path], typer.Option(help="Batch journal (default: <cache root>/batches.sqlite).")]


def register(app: typer.Typer) -> None:
    batch_app = typer.Typer(help="Provider batch jobs of openai_batch backends: list or cancel them.",
                            no_args_is_help=True)

    @batch_app.command("status")
    def status(journal: JournalOpt = None) -> None:
        """List the batches this machine submitted and their last known status."""
        from rich.console import Console
        from rich.table import Table

        from .batch import BatchJournal

        table = Table("batch", "endpoint", "status", "submitted (UTC)", "requests")
        for batch_id, url, state, created, count in BatchJournal(journal or batch_journal_path()).batches():
            table.add_row(batch_id, url, state, time.strftime("%Y-%m-%d %H:%M", time.gmtime(created)), str(count))
        Console(markup=False).print(table)

    @batch_app.command("cancel")
    def cancel(recipe: Annotated[Path, typer.Argument(help="Recipe whose openai_batch roles to cancel.")],
               journal: JournalOpt = None) -> None:
        """Cancel every running batch of the recipe's openai_batch endpoints."""
        from ..recipe import load_recipe
        from .batch import BatchBackend

        rec = run_guarded(lambda: load_recipe(recipe))
        cfgs = {(c.base_url, c.model): c for c in (rec.models.user, rec.models.assistant, rec.models.planner_config())
                if c.backend == "openai_batch"}

        async def run() -> list[str]:
            done: list[str] = []
            for cfg in cfgs.values():
                backend = BatchBackend(cfg, journal)
                try:
                    done += await backend.cancel_all()
                finally:
                    await backend.close()
            return done

        cancelled = run_guarded(lambda: aio.run(run()))
        print(f"cancelled {len(cancelled)} batch(es): {', '.join(cancelled) or '-'}")

    app.add_typer(batch_app, name="batch")
