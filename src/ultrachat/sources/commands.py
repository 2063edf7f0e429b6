"""``ultrachat entities build``: an entity list for ``generate entities`` from a Wikidata dump."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from ..cliutil import run_guarded


def register(app: typer.Typer) -> None:
    entities = typer.Typer(help="Entity lists for the entities sector.", no_args_is_help=True)

    @entities.command("build", help="Stream a Wikidata JSON dump (latest-all.json.gz or .bz2) and write its N items "
                      "with the most sitelinks as name,type,description CSV for generate entities.")
    def build(dump: Annotated[str, typer.Argument(help="The dump: .json.gz, .json.bz2, .json.xz, .json, or - for "
                                                  "uncompressed JSON on stdin (e.g. from lbzip2 -dc).")],
              out: Annotated[Path, typer.Option("--out", "-o", help="The CSV to write.")],
              top: Annotated[int, typer.Option("--top", min=1, help="How many entities.")] = 10_000,
              lang: Annotated[str, typer.Option("--lang", help="Language of names and descriptions; a comma list "
                                                "is tried in order (zh,zh-hans,zh-cn).")] = "en",
              classes: Annotated[Optional[Path], typer.Option(
                  "--classes", help="TOML mapping P31 classes to types (default: the bundled "
                  "resources/wikidata_classes.toml).")] = None,
              skip_invalid: Annotated[bool, typer.Option("--skip-invalid", help="Count malformed lines and go on "
                                                         "instead of stopping.")] = False,
              no_progress: Annotated[bool, typer.Option("--no-progress", help="Hide the progress bar.")] = False,
              ) -> None:
        from .wikidata import build_entities

        langs = [x.strip() for x in lang.split(",") if x.strip()]
        report = run_guarded(lambda: build_entities(dump, out, top, langs, classes, skip_invalid, not no_progress))
        kinds = Counter(e.type or "untyped" for e in report.kept)
        console = Console(markup=False, highlight=False, soft_wrap=True)  # paths may hold [ and ]
        console.print(f"kept {len(report.kept):,} entities (" +
                      ", ".join(f"{k} {n:,}" for k, n in kinds.most_common()) +
                      f") of {report.lines:,} lines; parsed {report.parsed:,}, without a '{langs[0]}' label "
                      f"{report.no_label:,}, bookkeeping classes {report.skipped_class:,}")
        if report.invalid:
            console.print(f"skipped {report.invalid:,} malformed lines (first: {report.first_invalid})")
        if len(report.kept) < top:
            console.print(f"the dump holds only {len(report.kept):,} listable items (asked for {top:,})")
        console.print(f"wrote {out}")

    app.add_typer(entities, name="entities")
