"""Reports of an evaluation: a terminal leaderboard, JSON, a bar chart PNG and an HTML page.

A report is the dict returned by :func:`~ultrachat.evaluate.pairwise.pairwise_eval` or
:func:`~ultrachat.evaluate.score.score_eval`: ``kind``, ``metric`` and ``models``, each model
with ``overall`` and ``per_class`` figures.

Example::

    paths = write_report(report, Path("eval-out"))   # report.json, report.png, report.html
    Console(markup=False).print(leaderboard(report))
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from rich.table import Table

from ..core.corpus import write_json_atomic
from .lc import length_control_info

TITLES = {"win_rate": "win rate (%)", "mean": "score (1-10)"}


def _fmt(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def leaderboard_rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the leaderboard, best model first."""
    metric = report["metric"]
    models = sorted(report["models"], key=lambda m: -(m["overall"][metric] or -1))
    if report["kind"] == "pairwise":
        lc = report.get("length_control") or length_control_info(None)
        header = ["model", "win %", "± se", lc["label"], "win", "tie", "lose", "unparseable"]
        if report.get("repeats", 1) > 1:
            header.append("spread (min-max)")
        rows = []
        for m in models:
            o = m["overall"]
            row = [m["model"], _fmt(o["win_rate"]), _fmt(o["win_rate_se"]), _fmt(o.get(lc["metric"])),
                   str(o["wins"]), str(o["ties"]), str(o["losses"]), str(o["unparseable"])]
            if "spread" in o:
                row.append("-" if o["spread"] is None else f"{o['spread'][0]:.1f}-{o['spread'][1]:.1f}")
            rows.append(row)
        return header, rows
    header = ["model", "mean score", "± se", "scored", "unparseable"]
    return header, [[m["model"], _fmt(m["overall"]["mean"], 2), _fmt(m["overall"]["mean_se"], 2),
                     str(m["overall"]["judged"]), str(m["overall"]["unparseable"])] for m in models]


def class_rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Per-class figure of each model (columns: models)."""
    metric = report["metric"]
    classes = sorted({c for m in report["models"] for c in m["per_class"]})
    header = ["class", *(m["model"] for m in report["models"])]
    rows = [[c, *(_fmt(m["per_class"].get(c, {}).get(metric), 2 if metric == "mean" else 1)
                  for m in report["models"])] for c in classes]
    return header, rows


def leaderboard(report: dict[str, Any]) -> list[Table]:
    """The leaderboard and the per-class table, for the terminal."""
    vs = f" vs {report['reference']}" if report["kind"] == "pairwise" else ""
    judge = report["judge"]["model"]
    tables = []
    for title, (header, rows) in ((f"Leaderboard{vs} (judge: {judge})", leaderboard_rows(report)),
                                  (f"Per class: {TITLES[report['metric']]}", class_rows(report))):
        table = Table(title=title)
        for i, col in enumerate(header):
            first = i == 0  # model / class names wrap rather than being cut
            table.add_column(col, justify="left" if first else "right", overflow="fold",
                             min_width=14 if first else None)
        for row in rows:
            table.add_row(*row)
        tables.append(table)
    return tables


def bar_chart(report: dict[str, Any], path: Path) -> Path:
    """Grouped bars: the metric per class (and overall) for each model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    metric = report["metric"]
    classes = ["overall", *sorted({c for m in report["models"] for c in m["per_class"]})]
    width = 0.8 / max(1, len(report["models"]))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(classes) + 2), 4.5))
    x = np.arange(len(classes))
    for i, m in enumerate(report["models"]):
        figures = [m["overall"], *(m["per_class"].get(c, {}) for c in classes[1:])]
        values = [f.get(metric) if f.get(metric) is not None else np.nan for f in figures]
        ax.bar(x + i * width - 0.4 + width / 2, values, width, label=m["model"])
    if metric == "win_rate":
        ax.axhline(50, color="grey", linewidth=0.8, linestyle="--")
        ax.set_ylim(0, 100)
    else:
        ax.set_ylim(0, 10)
    ax.set_xticks(x, classes, rotation=30, ha="right")
    ax.set_ylabel(TITLES[metric])
    vs = f" vs {report['reference']}" if report["kind"] == "pairwise" else ""
    ax.set_title(f"{TITLES[metric]}{vs}, judge {report['judge']['model']}")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def html_page(report: dict[str, Any], png: Path | None) -> str:
    """A self-contained page: both tables and the chart inlined (every text escaped)."""
    title = html.escape(f"ultrachat eval {report['kind']}: judge {report['judge']['model']}")
    image = (f"<img alt='bar chart' src='data:image/png;base64,{base64.b64encode(png.read_bytes()).decode()}'>"
             if png else "<p>(no chart: matplotlib is not installed)</p>")
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title><style>"
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:first-child{text-align:left}"
        f"</style></head><body><h1>{title}</h1>"
        f"<h2>Leaderboard</h2>{_html_table(*leaderboard_rows(report))}"
        f"<h2>Per class</h2>{_html_table(*class_rows(report))}{image}</body></html>"
    )


def write_report(report: dict[str, Any], out: Path, stem: str = "report") -> dict[str, Path | None]:
    """Write ``<stem>.json``, ``<stem>.png`` and ``<stem>.html`` into ``out``.

    Without matplotlib (the ``data`` extra) the chart is skipped and ``png`` is ``None``.
    """
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path | None] = {"json": out / f"{stem}.json", "png": out / f"{stem}.png",
                                     "html": out / f"{stem}.html"}
    write_json_atomic(out / f"{stem}.json", report)
    try:
        bar_chart(report, out / f"{stem}.png")
    except ImportError:
        paths["png"] = None
    (out / f"{stem}.html").write_text(html_page(report, paths["png"]), encoding="utf-8")
    return paths
