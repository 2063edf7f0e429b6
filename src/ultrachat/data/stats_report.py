"""Presenting :func:`~ultrachat.data.stats.corpus_stats`: the terminal table beside the
paper's rows, ``stats.json``, histogram PNGs and one self-contained ``stats.html``.

Every figure carries a caption saying how it was made (tokenizer, sample, seed, command).
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table

from ..core.corpus import OutputDir
from .paper import COLUMNS, PAPER_EMBEDDING_MODEL, PAPER_ROWS, PAPER_SOURCE, topic_label

TITLE = "Corpus statistics (columns of the UltraChat paper's Table 4)"
_FORMATS = {"dialogues": "{:,.0f}", "avg_turns": "{:.2f}", "avg_dialogue_tokens": "{:.1f}",
            "avg_utterance_tokens": "{:.1f}", "mtld": "{:.1f}", "topic_diversity": "{:.3f}", "coherence": "{:.2f}"}


def _cell(key: str, value: Any) -> str:
    return "-" if value is None else _FORMATS[key].format(value)


def blocks(result: dict[str, Any]) -> list[tuple[str, dict[str, str], list[dict[str, Any]]]]:
    """(title, column labels, rows) of each table. The paper's rows share our table only when our
    topic diversity used the paper's embedding model; otherwise they are a block of their own."""
    ours = {**result["row"], "dataset": f"{result['row']['dataset']} (this corpus)"}
    mine = {**COLUMNS, "topic_diversity": topic_label(result.get("topic_embedding"))}
    if result.get("same_embedding_as_paper"):
        return [(f"{TITLE}, beside the paper's rows (same embedding model)", mine, [ours, *PAPER_ROWS])]
    theirs = {**COLUMNS, "topic_diversity": topic_label(PAPER_EMBEDDING_MODEL)}
    return [(f"{TITLE}: this corpus", mine, [ours]),
            (f"The paper's rows (topic diversity from {PAPER_EMBEDDING_MODEL}, another scale: not comparable with "
             "the row above; use --embedder endpoint --embeddings-model text-embedding-ada-002 for that)",
             theirs, PAPER_ROWS)]


def stats_tables(result: dict[str, Any]) -> list[Table]:
    tables = []
    for i, (title, labels, block) in enumerate(blocks(result)):
        table = Table(title=title, caption=PAPER_SOURCE if i == len(blocks(result)) - 1 else None)
        table.add_column("Dataset", no_wrap=True)
        for label in labels.values():
            table.add_column(label, justify="right")
        for row in block:
            ours = "(this corpus)" in str(row["dataset"])
            table.add_row(str(row["dataset"]), *(_cell(k, row.get(k)) for k in labels), style="bold" if ours else "")
        tables.append(table)
    return tables


def _figure(kind: str, result: dict[str, Any], caption: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hist = result["_histograms"][kind]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if kind == "rounds":
        keys = sorted(hist)
        ax.bar(keys, [hist[k] for k in keys], color="#4c72b0")
        ax.set_xlabel("rounds per dialogue")
    else:
        counts = np.asarray(hist)
        top = int(np.nonzero(counts)[0].max()) + 1 if counts.any() else 1
        edges = np.linspace(0, top, min(60, top) + 1)
        binned = np.add.reduceat(counts[:top], edges[:-1].astype(int)) if top > 1 else counts[:1]
        ax.bar(edges[:len(binned)], binned, width=edges[1] - edges[0], align="edge", color="#55a868")
        ax.set_xlabel("tokens per " + ("dialogue" if kind == "dialogue_tokens" else "utterance"))
    ax.set_ylabel("count")
    ax.set_title(f"{result['row']['dataset']}: {kind.replace('_', ' ')}")
    fig.text(0.01, 0.01, caption, fontsize=7, wrap=True)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def write_outputs(result: dict[str, Any], out: OutputDir, command: str) -> dict[str, str]:
    """Write ``stats.json``, ``<kind>.png`` histograms and ``stats.html``; returns their paths."""
    public = {k: v for k, v in result.items() if not k.startswith("_")}
    n = result["row"]["dialogues"]
    figures: dict[str, tuple[str, bytes]] = {}
    for kind in ("rounds", "dialogue_tokens", "utterance_tokens"):
        how = "rounds counted per dialogue" if kind == "rounds" else result["methods"]["tokens"]
        caption = f"All {n:,} dialogues of {result['input']}; {how}. Made by: {command}"
        figures[kind] = (caption, _figure(kind, result, caption))
    paths = {}
    for kind, (_, png) in figures.items():
        paths[kind] = str(out.write_bytes(f"{kind}.png", png))
    public["figures"] = {k: {"png": paths[k], "caption": c} for k, (c, _) in figures.items()}
    public["paper"] = {"source": PAPER_SOURCE, "rows": PAPER_ROWS, "embedding_model": PAPER_EMBEDDING_MODEL,
                       "same_table": bool(result.get("same_embedding_as_paper"))}
    public["command"] = command
    paths["json"] = str(out.write_json("stats.json", public))
    paths["html"] = str(out.write_bytes("stats.html", _html(result, figures, command).encode("utf-8")))
    return paths


def _html(result: dict[str, Any], figures: dict[str, tuple[str, bytes]], command: str) -> str:
    e = html.escape
    tables = ""
    for title, labels, block in blocks(result):
        head = "".join(f"<th>{e(label)}</th>" for label in ["Dataset", *labels.values()])
        body = "".join(
            f"<tr class='{'ours' if '(this corpus)' in str(r['dataset']) else ''}'><td>{e(str(r['dataset']))}</td>"
            + "".join(f"<td>{e(_cell(k, r.get(k)))}</td>" for k in labels) + "</tr>" for r in block)
        tables += f"<h2>{e(title)}</h2><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    methods = "".join(f"<li><b>{e(k)}</b>: {e(v)}</li>" for k, v in result["methods"].items())
    figs = "".join(
        f"<figure><img alt='{e(kind)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
        f"<figcaption>{e(caption)}</figcaption></figure>" for kind, (caption, png) in figures.items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Corpus statistics: {e(result['row']['dataset'])}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:first-child{{text-align:left}}
tr.ours{{font-weight:bold;background:#eef}}figure{{margin:1em 0}}figcaption{{font-size:.8em;color:#555}}</style>
</head><body><h1>Corpus statistics: {e(result['input'])}</h1>
{tables}
<p><small>{e(PAPER_SOURCE)}</small></p><h2>How each figure was made</h2><ul>{methods}</ul>
<p>Command: <code>{e(command)}</code></p><h2>Histograms</h2>{figs}</body></html>
"""


def save_stats(path: Path, result: dict[str, Any], out_dir: Path, command: str) -> dict[str, str]:
    """Convenience wrapper: write every output of ``result`` into ``out_dir``."""
    with OutputDir(out_dir, inputs=[path]) as out:
        return write_outputs(result, out, command)
