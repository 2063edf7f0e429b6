"""``ultrachat mock-server [flags]``: the mock OpenAI-compatible server (tests, demos), the
same as ``python -m ultrachat.testing.mock_openai``."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("mock-server", add_help_option=False, help="Run the mock OpenAI-compatible server (tests, demos).",
                 context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def mock_server(ctx: typer.Context) -> None:
        from .mock_openai import main

        main(ctx.args)
