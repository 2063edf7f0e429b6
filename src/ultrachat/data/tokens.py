"""Token counting for ``stats`` and ``split-long``, with a configurable tokenizer.

``embedded`` (the default) is the embedded model's tokenizer (SmolLM2-135M-Instruct);
``whitespace`` counts whitespace-separated words (no model needed); anything else is a
local Hugging Face tokenizer or model directory.

Example::

    counter = load_counter("embedded")
    counter.count(["Hello there", "How are you?"])  # -> [2, 4]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

CHUNK = 256


@dataclass
class TokenCounter:
    """Counts tokens of many texts in one call (batched: fast tokenizers use every core)."""

    name: str
    count: Callable[[list[str]], list[int]]


def load_counter(spec: str = "embedded") -> TokenCounter:
    if spec == "whitespace":
        return TokenCounter("whitespace words", lambda texts: [len(t.split()) for t in texts])
    from transformers import AutoTokenizer

    path: str | Path
    if spec == "embedded":
        from ..backends.local import EMBEDDED_MODEL, resolve_model_dir

        path, name = resolve_model_dir(EMBEDDED_MODEL), "SmolLM2-135M-Instruct tokenizer (embedded)"
    else:
        path, name = spec, f"tokenizer {spec}"
    try:
        tok = AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as exc:
        raise ValueError(f"--tokenizer {spec}: not a local tokenizer folder ({str(exc).splitlines()[0]})") from None

    def count(texts: list[str]) -> list[int]:
        # 256 texts a call: a call's encodings (ids, offsets, masks) of 2,560 long utterances held ~95 MiB.
        return [len(ids) for i in range(0, len(texts), CHUNK)
                for ids in tok(texts[i:i + CHUNK], add_special_tokens=False)["input_ids"]]

    return TokenCounter(name, count)
