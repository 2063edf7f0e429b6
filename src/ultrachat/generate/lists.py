"""Parse the lists a model writes (numbered, bulleted, JSON) and deduplicate them."""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable

_MARKER = re.compile(r"^\s*(?:\(?\d{1,3}[.)\]:]|[-*•·–]|#{1,3}|[a-zA-Z][.)])\s+")
_QUOTES = "\"'“”‘’「」`"


def _clean(item: str) -> str:
    item = _MARKER.sub("", item, count=1).strip()
    item = re.sub(r"^\*\*(.+?)\*\*:?\s*$", r"\1", item)  # a bold-only line
    item = item.strip().strip(_QUOTES).strip()
    return item.rstrip(",;").strip()


def parse_list(text: str, max_items: int | None = None) -> list[str]:
    """Items of a list in ``text``: a JSON array, numbered or bulleted lines, or plain lines.

    Preamble lines ending in ':' ("Here are 5 questions:") are dropped.
    """
    text = text.strip()
    items: list[str] = []
    match = re.search(r"\[.*\]", text, re.S)
    if match:
        try:
            arr = json.loads(match.group(0))
            if isinstance(arr, list) and all(isinstance(x, str) for x in arr):
                items = [_clean(x) for x in arr]
        except json.JSONDecodeError:
            pass
    if not items:
        lines = [ln for ln in text.splitlines() if ln.strip()]
        marked = [ln for ln in lines if _MARKER.match(ln)]
        source = marked if len(marked) >= 2 else lines
        items = [_clean(ln) for ln in source if not (ln.rstrip().endswith(":") and not _MARKER.match(ln))]
    items = [i for i in items if len(i) >= 3]
    return items[:max_items] if max_items else items


def normalize(text: str) -> str:
    """Case-, accent-, punctuation- and space-insensitive form used to spot duplicates."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = re.sub(r"[\W_]+", " ", text)
    return " ".join(text.split())


def dedupe(items: Iterable[str], seen: set[str] | None = None) -> list[str]:
    """Keep the first of each normalised duplicate; ``seen`` carries state across calls."""
    seen = set() if seen is None else seen
    out = []
    for item in items:
        key = normalize(item)
        if key and key not in seen:
            seen.add(key)
            out.append(item)
    return out
