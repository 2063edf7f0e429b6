"""``ultrachat explore DATA...``: index UltraChat JSONL (incrementally), then serve the web UI."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import aio
from ..cliutil import console, run_guarded


def register(app: typer.Typer) -> None:
    @app.command("explore", help="Index UltraChat JSONL files or folders (only what is new) and serve a local web UI: "
                                 "search, filters, dialogues, statistics and a topic map.")
    def explore(
        data: Annotated[list[Path], typer.Argument(help="JSONL files, or folders searched for *.jsonl.")],
        host: Annotated[str, typer.Option(help="Address to bind; anything but 127.0.0.1 exposes the data.")]
        = "127.0.0.1",
        port: Annotated[int, typer.Option(help="Port (0 picks a free one).")] = 8000,
        index: Annotated[Optional[Path], typer.Option(help="Index file (default: one per DATA set under "
                                                           "$ULTRACHAT_CACHE/explore/; ULTRACHAT_CACHE "
                                                           "defaults to ~/.cache/ultrachat).")] = None,
        map_points: Annotated[int, typer.Option(help="Dialogues sampled for the topic map (0: no map).")] = 20000,
        serve: Annotated[bool, typer.Option("--serve/--index-only", help="Serve the UI after indexing.")] = True,
        stats: Annotated[Optional[Path], typer.Option(help="stats.json of `ultrachat stats` to show on the statistics "
                                                           "page (default: a stats.json inside a DATA folder).")]
        = None,
    ) -> None:
        run_guarded(lambda: _explore(data, host, port, index, map_points, serve, stats))


def load_corpus_stats(data: list[Path], path: Path | None) -> dict | None:
    """The ``stats.json`` of ``ultrachat stats`` given, or found in a DATA folder (``None`` if none)."""
    import json

    found = [path] if path else [p / "stats.json" for p in data if (p / "stats.json").is_file()]
    for candidate in found:
        try:
            obj = json.loads(candidate.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"{candidate}: not a readable stats.json ({exc})") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("row"), dict):
            raise ValueError(f"{candidate}: not a stats.json of `ultrachat stats` (no 'row' object)")
        return obj
    return None


def _explore(data: list[Path], host: str, port: int, index: Path | None, map_points: int, serve: bool,
             stats: Path | None) -> None:
    import contextlib

    from rich.markup import escape

    from .index import default_index_path, sync_index

    if not 0 <= port <= 65535:
        raise ValueError(f"--port: {port} is not a port number (0-65535)")
    if map_points < 0:
        raise ValueError("--map-points: must be 0 or more")
    index = index or default_index_path(data)
    corpus_stats = load_corpus_stats(data, stats)
    report = sync_index(data, index, map_points=map_points)
    if report.rebuilt:
        console.print(f"rebuilt the index: {report.rebuilt}", markup=False, highlight=False, soft_wrap=True)
    console.print(f"index {index}: {report.total:,} dialogues ({report.added:,} new, {report.seconds:.1f} s)",
                  markup=False, highlight=False, soft_wrap=True)
    if report.skipped_count:
        console.print(f"[yellow]skipped {report.skipped_count:,} lines that are not dialogues[/], e.g. "
                      f"{escape(report.skipped[0])}", highlight=False, markup=True, soft_wrap=True)
    if not serve:
        return
    from .server import LOOPBACK
    from .server import serve as run_server

    if host not in LOOPBACK:
        console.print(f"[yellow]warning:[/] serving on {host}: anyone who can reach this address can read the data",
                      markup=True, highlight=False, soft_wrap=True)

    def ready(url: str) -> None:
        # stdout, flushed: scripts and tests read the URL from here (port 0 picks a free port).
        print(f"Serving the explorer on {url} (Ctrl+C to stop)", flush=True)

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl+C is how the server is meant to stop
        aio.run(run_server(index, host, port, ready, corpus_stats))
