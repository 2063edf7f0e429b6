"""Split long dialogues at round boundaries: ``ultrachat split-long IN --max-tokens 2048 --out DIR``.

As in UltraLM's data preparation, a dialogue longer than the limit becomes consecutive
pieces of whole rounds (a user message and its reply), each within ``max_tokens`` when
rendered in the training format ``<s>User: {u}</s>\\nAssistant: {a}</s>\\n...``. A single
round over the limit cannot be split at a round boundary: it goes to ``oversize.jsonl``
(or, with ``keep_oversize``, becomes a piece of its own).

Pieces get ids ``<id>_<k>`` and ``meta.split = {"of", "part", "parts", "rounds": [start, end]}``.

Example::

    report = split_long(Path("dialogues.jsonl"), Path("split"), max_tokens=2048)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..core.corpus import OutputDir, read_corpus
from ..core.text import batches
from .tokens import load_counter

ROUND_TEMPLATE = "User: {user}</s>\nAssistant: {assistant}</s>\n"
BOS_TOKENS = 1  # "<s>" opens every piece
BATCH = 256


def plan_pieces(round_tokens: list[int], max_tokens: int) -> list[tuple[int, int]]:
    """Greedy ``[start, end)`` round ranges whose tokens (plus BOS) fit ``max_tokens``.

    >>> plan_pieces([1000, 900, 300, 2500, 100], 2048)
    [(0, 2), (2, 3), (3, 4), (4, 5)]
    """
    pieces, start, used = [], 0, BOS_TOKENS
    for i, n in enumerate(round_tokens):
        if i > start and used + n > max_tokens:
            pieces.append((start, i))
            start, used = i, BOS_TOKENS
        used += n
    if round_tokens:
        pieces.append((start, len(round_tokens)))
    return pieces


def split_long(path: Path, out_dir: Path, max_tokens: int = 2048, tokenizer: str = "embedded",
               keep_oversize: bool = False, skip_invalid: bool = False, progress: bool = True) -> dict[str, Any]:
    """Split every dialogue of ``path`` that exceeds ``max_tokens`` into ``out_dir/split.jsonl``."""
    if max_tokens < 16:
        raise ValueError(f"--max-tokens must be at least 16, got {max_tokens}")
    if not Path(path).is_file():  # before loading a tokenizer, which can take a while
        raise FileNotFoundError(f"{path}: no such file")
    counter = load_counter(tokenizer)
    stats = {"dialogues": 0, "split": 0, "pieces": 0, "oversize_rounds": 0}

    with OutputDir(out_dir, inputs=[path]) as out:
        out.touch("split", "oversize")

        def flush(batch: list[dict[str, Any]]) -> None:
            rounds = [[d["data"][i:i + 2] for i in range(0, len(d["data"]), 2)] for d in batch]
            texts = [ROUND_TEMPLATE.format(user=r[0], assistant=r[1] if len(r) > 1 else "")
                     for rs in rounds for r in rs]
            counts, pos = counter.count(texts), 0
            for d, rs in zip(batch, rounds, strict=True):
                tokens, pos = counts[pos:pos + len(rs)], pos + len(rs)
                stats["dialogues"] += 1
                if sum(tokens) + BOS_TOKENS <= max_tokens:
                    out.write("split", d)
                    stats["pieces"] += 1
                    continue
                stats["split"] += 1
                pieces = plan_pieces(tokens, max_tokens)
                for k, (a, b) in enumerate(pieces):
                    piece = {"id": f"{d['id']}_{k}", "data": d["data"][2 * a:2 * b],
                             "meta": {**(d.get("meta") or {}),
                                      "split": {"of": d["id"], "part": k, "parts": len(pieces), "rounds": [a, b]}}}
                    size = sum(tokens[a:b]) + BOS_TOKENS
                    if size > max_tokens:
                        stats["oversize_rounds"] += 1
                        if not keep_oversize:
                            out.write("oversize", {**piece, "reject": {"reason": f"one round of {size} tokens "
                                                                                 f"exceeds {max_tokens}"}})
                            continue
                    out.write("split", piece)
                    stats["pieces"] += 1

        with read_corpus(path, "split-long", out, skip_invalid, progress) as dialogues:
            for batch in batches(dialogues, BATCH):
                flush(batch)
        report = {"input": str(path), "max_tokens": max_tokens, "tokenizer": counter.name,
                  "template": ROUND_TEMPLATE, **stats, "invalid": out.counts.get("invalid", 0),
                  "outputs": {name: str(out.file(name)) for name in out.counts}}
        out.write_json("report.json", report)
    return report
