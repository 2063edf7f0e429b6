"""The ``ultrachat`` command line: a table mapping each verb group to the folder that owns it.

Every module listed here has ``register(app)`` adding its commands; the commands only
parse flags and call the Python API of their folder. Heavy imports stay inside the
command functions so ``ultrachat --help`` is instant.
"""

from __future__ import annotations

import importlib

import typer

from .cliutil import GuardedGroup

# GuardedGroup is the one error boundary: every command's errors end as one line and an exit
# code (1 runtime, 2 usage), never a traceback (see cliutil).
app = typer.Typer(help="Build, clean, train on, evaluate and explore UltraChat-style multi-round dialogue data.",
                  no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode="rich", cls=GuardedGroup)

COMMANDS: list[str] = [
    "ultrachat.generate.commands",  # generate <sector>, estimate RECIPE (calls, tokens, time, cost)
    "ultrachat.backends.commands",  # batch status|cancel (provider batch jobs)
    "ultrachat.data.commands",  # show
    "ultrachat.train.commands",  # train, train-config, delta make|recover
    "ultrachat.chat.commands",  # chat
    "ultrachat.evaluate.commands",  # answer, eval pairwise|score, best-of-n
    "ultrachat.explore.commands",  # explore DATA... (index + web UI)
    "ultrachat.sources.commands",  # entities build (from a Wikidata dump)
    "ultrachat.testing.commands",  # mock-server (OpenAI-compatible, fault injection)
]

def _version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"ultrachat {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Build, clean, train on, evaluate and explore UltraChat-style multi-round dialogue data."""


for _module in COMMANDS:
    importlib.import_module(_module).register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
