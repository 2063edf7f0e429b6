"""Text helpers every package shares: parse the lists a model writes (numbered, bulleted,
JSON), normalise and deduplicate them, split text into words, count rough tokens."""

from __future__ import annotations

import json
import math
import re
import string
import unicodedata
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

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


_UNIT = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]|[^\s\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]+")


def text_units(text: str) -> int:
    """Words, counting each CJK character as one (Chinese has no spaces between words)."""
    return len(_UNIT.findall(text))


_ASKS_EN = re.compile(r"^(?:how|what|why|when|where|who|whose|which|is|are|was|were|can|could|do|does|did|"
                      r"should|would|will|has|have)\b", re.I)
_ASKS_ZH = re.compile(r"什么|为什么|如何|怎么|怎样|哪|谁|多[少高长大远久重]|吗|呢|是否")


def as_question(item: str) -> str | None:
    """``item`` as a question, or ``None``. Small models often drop the question mark
    ("How to climb Mount Fuji."): a sentence that opens like a question gets it back."""
    if item.endswith(("?", "？")):
        return item
    bare = item.rstrip("。.!！ ")
    if _ASKS_EN.match(bare):
        return bare + "?"
    if _ASKS_ZH.search(bare) and not re.search(r"[A-Za-z]{3}", bare):
        return bare + "？"
    return None


def clean_items(items: list[str], question: bool, max_units: int = 80) -> list[str]:
    """Keep list items that read as a question (or, with ``question=False``, a request):
    headings, answers and fragments are dropped. Works for English and Chinese."""
    out = []
    for item in items:
        item = re.sub(r"^(?:Q|问题)\s*[:：]\s*", "", item).strip()
        if question:
            asked = as_question(item)
            if asked is None:
                continue
            item = asked
        if 3 <= text_units(item) <= max_units:
            out.append(item)
    return out


# Punctuation becomes a space; str.translate + split is ~2x faster than re.findall(r"\w+").
_PUNCT = str.maketrans(dict.fromkeys(string.punctuation.replace("_", "") + "“”‘’«»—–…·•¿¡，。！？：；、（）【】", " "))


def words(text: str) -> list[str]:
    """Lower-cased words without punctuation: the normalisation behind exact hashes,
    shingles and n-grams.

    >>> words("Hello, World!  hello")
    ['hello', 'world', 'hello']
    """
    return text.lower().translate(_PUNCT).split()


def batches(items: Iterable[T], n: int) -> Iterator[list[T]]:
    """Consecutive lists of ``n`` items (the last may be shorter); ``itertools.batched`` is 3.12+."""
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) >= n:
            yield batch
            batch = []
    if batch:
        yield batch


#: characters a token stands for, roughly (languages not listed: 4)
CHARS_PER_TOKEN = {"zh": 1.5, "ja": 1.5, "ko": 1.5}


def approx_tokens(text_or_chars: str | float, language: str = "en") -> int:
    """A rough token count for a text (or a number of characters) in ``language``, for
    estimates made without a tokenizer."""
    chars = len(text_or_chars) if isinstance(text_or_chars, str) else text_or_chars
    return math.ceil(chars / CHARS_PER_TOKEN.get(language, 4.0))
