"""Print dialogues as a readable chat in the terminal."""

from __future__ import annotations

import heapq
from itertools import islice
from pathlib import Path

from rich.console import Console
from rich.panel import Panel
from rich.text import Text

from ..core.corpus import iter_jsonl


def show_dialogues(path: Path, n: int = 1, dialogue_id: str | None = None, console: Console | None = None,
                   longest: bool = False) -> int:
    """Print ``n`` dialogues (or the one with ``dialogue_id``; with ``longest``, the ``n``
    with the most turns); returns how many were shown."""
    console = console or Console(markup=False)
    items = iter_jsonl(path)
    if dialogue_id is not None:  # ids may be strings or integers: `--id 0` finds {"id": 0}
        items = (d for d in items if str(d["id"]) == dialogue_id)
    chosen = heapq.nlargest(n, items, key=lambda d: len(d["data"])) if longest else islice(items, n)
    shown = 0
    for d in chosen:
        meta = d.get("meta") or {}
        # A Text title: ids and topics are data, never rich markup ("[/x]" is an id, not a tag).
        title = Text(f"{d['id']}  {meta.get('topic', '')}  rounds={meta.get('rounds', len(d['data']) // 2)}  "
                     f"stop={meta.get('stop_reason', '-')}")
        body = Text()
        for i, turn in enumerate(d["data"]):
            body.append("User: " if i % 2 == 0 else "Assistant: ", style="bold cyan" if i % 2 == 0 else "bold green")
            body.append(turn + "\n\n")
        console.print(Panel(body, title=title, title_align="left"))
        shown += 1
    if shown == 0:
        raise ValueError(f"{path}: no dialogue found" + (f" with id '{dialogue_id}'" if dialogue_id else ""))
    return shown
