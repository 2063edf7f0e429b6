"""Data commands: ``show``, ``filter``, ``dedup``, ``decontaminate``, ``stats``, ``export``,
``import`` and ``split-long``. Each parses flags and calls the Python API of its module;
none writes in place: outputs go to ``--out``."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from ..cliutil import run_guarded
from ..modelflags import EMBEDDINGS, JUDGE, model_config

SkipInvalid = Annotated[bool, typer.Option("--skip-invalid",
                                           help="Write malformed lines to invalid.jsonl instead of stopping.")]
NoProgress = Annotated[bool, typer.Option("--no-progress", help="Hide progress bars.")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out (each file only once "
                                         "the new one is complete); without it an existing output is refused.")]


def guarded(overwrite: bool, fn: Any) -> None:
    """Run a command body inside the error boundary, letting it replace outputs if asked."""
    from ..core.atomic import overwriting

    def body() -> None:
        with overwriting(overwrite):
            fn()

    run_guarded(body)
Out = Annotated[Path, typer.Option("--out", "-o", help="Output folder (created; the input is never modified).")]
Tokenizer = Annotated[str, typer.Option(help="'embedded' (the embedded model's), 'whitespace', or a tokenizer folder.")]


def _summary(report: dict[str, Any], keys: list[str]) -> None:
    from rich.text import Text

    out = Console(markup=False)
    line = Text()
    for k in (k for k in keys if k in report):
        line.append(", " if line else "").append(f"{k}: ")
        line.append(f"{report[k]:,}", style="bold") if isinstance(report[k], int) else line.append(str(report[k]))
    out.print(line, highlight=False)
    if "outputs" in report:
        out.print("wrote " + ", ".join(report["outputs"].values()), highlight=False, soft_wrap=True)


def _command_line() -> str:
    """The command as typed (``sys.argv``), for captions; ``python -m ultrachat.cli`` reads as ``ultrachat``."""
    return shlex.join(["ultrachat", *sys.argv[1:]])


def show(path: Path, n: Annotated[int, typer.Option(help="How many dialogues.")] = 1,
         id: Annotated[Optional[str], typer.Option("--id", help="Show the dialogue with this id.")] = None,
         longest: Annotated[bool, typer.Option("--longest", help="Show the dialogues with the most turns.")]
         = False) -> None:
    from .show import show_dialogues

    run_guarded(lambda: show_dialogues(path, n, id, Console(markup=False), longest))


def filter_(path: Path, out: Out,
            config: Annotated[Optional[Path], typer.Option(
                "--config", "-c", help="TOML file (recipe or not) with a [filter] table.")] = None,
            min_rounds: Annotated[Optional[int], typer.Option(help="Reject dialogues with fewer rounds.")] = None,
            max_rounds: Annotated[Optional[int], typer.Option(
                help="Reject dialogues with more rounds (0: no limit).")] = None,
            language: Annotated[Optional[str], typer.Option(
                help="Keep only this language (ISO code, langdetect).")] = None,
            skip_invalid: SkipInvalid = False, no_progress: NoProgress = False,
            overwrite: Overwrite = False) -> None:
    from rich.table import Table

    from .filter import filter_corpus, load_filter_config

    def run() -> None:
        cfg = load_filter_config(config, {"min_rounds": min_rounds, "max_rounds": max_rounds, "language": language})
        report = filter_corpus(path, out, cfg, skip_invalid, not no_progress)
        table = Table("rule", "rejected", "repaired", title="filter report")
        for rule, c in report["rules"].items():
            table.add_row(rule, f"{c['rejected']:,}", f"{c['repaired']:,}")
        Console(markup=False).print(table)
        _summary(report, ["total", "kept", "rejected", "invalid"])

    guarded(overwrite, run)


def dedup(path: Path, out: Out,
          scope: Annotated[str, typer.Option(
              help="Compare the whole 'dialogue' or its 'opening' line.")] = "dialogue",
          ngram: Annotated[int, typer.Option(help="Words per shingle.")] = 5,
          num_perm: Annotated[int, typer.Option(help="MinHash permutations.")] = 120,  # DedupConfig's defaults
          bands: Annotated[int, typer.Option(
              help="LSH bands (rows = num-perm / bands); 24 x 5 flags pairs above Jaccard ~0.53.")]
          = 24,
          threshold: Annotated[Optional[float], typer.Option(
              help="Pick the banding for this Jaccard similarity instead of --bands.")] = None,
          exact_only: Annotated[bool, typer.Option(
              "--exact-only", help="Only exact (normalised) duplicates.")] = False,
          engine: Annotated[str, typer.Option(help="MinHash library: rensa or datasketch.")] = "rensa",
          skip_invalid: SkipInvalid = False, no_progress: NoProgress = False,
          overwrite: Overwrite = False) -> None:
    from .dedup import DedupConfig, dedup_corpus

    def run() -> None:
        if scope not in ("dialogue", "opening"):
            raise ValueError(f"--scope must be 'dialogue' or 'opening', got '{scope}'")
        cfg = DedupConfig(scope=scope, near=not exact_only, ngram=ngram, num_perm=num_perm, bands=bands,  # type: ignore[arg-type]
                          threshold=threshold, engine=engine)  # type: ignore[arg-type]
        report = dedup_corpus(path, out, cfg, skip_invalid, not no_progress)
        c = report["config"]
        Console(markup=False).print(
            f"banding {c['bands']} x {c['rows']} (flags pairs above Jaccard ~{c['approx_threshold']})",
            highlight=False)
        _summary(report, ["total", "kept", "removed", "exact", "near", "clusters", "invalid"])

    guarded(overwrite, run)


def decontaminate_(path: Path, out: Out,
                   against: Annotated[Optional[list[str]], typer.Option(
                       "--against", help="Evaluation file (JSON, JSONL, Parquet) or 'builtin' (ultra_eval.json); "
                                "repeatable.")] = None,
                   field: Annotated[Optional[str], typer.Option(
                       help="Prompt field, dotted (e.g. 'data.0', 'messages.0.content').")] = None,
                   ngram: Annotated[int, typer.Option(help="Words per n-gram.")] = 13,
                   min_words: Annotated[int, typer.Option(help="Skip evaluation prompts shorter than this.")] = 8,
                   scope: Annotated[str, typer.Option(help="Check 'all' turns or only 'user' turns.")] = "all",
                   remove: Annotated[bool, typer.Option(
                       "--remove", help="Also write kept.jsonl and removed.jsonl.")] = False,
                   skip_invalid: SkipInvalid = False, no_progress: NoProgress = False,
                   overwrite: Overwrite = False) -> None:
    from .decontaminate import decontaminate

    def run() -> None:
        if scope not in ("all", "user"):
            raise ValueError(f"--scope must be 'all' or 'user', got '{scope}'")
        report = decontaminate(path, out, against, field, ngram, min_words, scope, remove, skip_invalid,
                               not no_progress)
        _summary(report, ["eval_prompts", "eval_prompts_too_short", "contaminated_dialogues", "matches",
                          "removed", "invalid"])

    guarded(overwrite, run)


def stats(path: Path, out: Out = Path("ultrachat-stats"), tokenizer: Tokenizer = "embedded",
          sample: Annotated[int, typer.Option(
              help="Dialogues sampled for MTLD, topic diversity, coherence.")] = 10_000,
          seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
          mtld_all: Annotated[bool, typer.Option(
              "--mtld-all", help="MTLD over every utterance, not the sample.")] = False,
          embedder: Annotated[str, typer.Option(
              help="'minilm' (offline), 'endpoint' (/v1/embeddings) or 'none'.")] = "minilm",
          embed_tokens: Annotated[int, typer.Option(
              help="Word pieces of each dialogue MiniLM reads (128: its training length; at most 512).")] = 128,
          embeddings_url: EMBEDDINGS.BaseURL = None,
          embeddings_model: EMBEDDINGS.Model = "text-embedding-ada-002",
          embeddings_key_env: EMBEDDINGS.APIKeyEnv = "OPENAI_API_KEY",
          coherence_sample: Annotated[int, typer.Option(
              help="Dialogues the judge scores for coherence (0: off).")] = 0,
          judge_backend: JUDGE.Backend = None, judge_model: JUDGE.Model = None,
          judge_base_url: JUDGE.BaseURL = None, judge_key_env: JUDGE.APIKeyEnv = None,
          judge_temperature: JUDGE.Temperature = 0.0, judge_max_tokens: JUDGE.MaxTokens = 16,
          skip_invalid: SkipInvalid = False, no_progress: NoProgress = False,
          overwrite: Overwrite = False) -> None:
    from rich.text import Text

    from ..core.corpus import OutputDir
    from .stats import StatsConfig, corpus_stats
    from .stats_report import stats_tables, write_outputs

    command = _command_line()

    def run() -> None:
        # the shared flag types allow None, but these flags have defaults Typer never unsets
        assert embeddings_model is not None and embeddings_key_env is not None
        judge = model_config(judge_backend, judge_model, judge_base_url, judge_key_env,
                             temperature=judge_temperature, max_tokens=judge_max_tokens)
        cfg = StatsConfig(tokenizer=tokenizer, sample=sample, seed=seed, mtld_all=mtld_all, embedder=embedder,
                          embed_tokens=embed_tokens, embeddings_url=embeddings_url,
                          embeddings_model=embeddings_model, embeddings_key_env=embeddings_key_env,
                          coherence_sample=coherence_sample, judge=judge)
        with OutputDir(out, inputs=[path]) as folder:
            result = corpus_stats(path, cfg, skip_invalid, not no_progress, out=folder)
            paths = write_outputs(result, folder, command)
        console = Console(width=max(Console().width, 150), markup=False)
        for table in stats_tables(result):
            console.print(table)
        for key, how in result["methods"].items():
            console.print(Text.assemble((key, "bold"), f": {how}"), highlight=False)
        cut = result["cut"]
        console.print(Text.assemble(("cut turns", "bold"), f": {cut['dialogues']:,} dialogues ({cut['share']:.1%}) "
                                    f"hold {cut['turns']:,} turns cut off by max_tokens (filter's cut_turns rule)"),
                      highlight=False)
        console.print("wrote " + ", ".join(paths.values()), highlight=False, soft_wrap=True)

    guarded(overwrite, run)


def export(path: Path,
           format: Annotated[str, typer.Option("--format", "-f", help="hf, parquet, sharegpt or openai.")],
           out: Annotated[Path, typer.Option(
               "--out", "-o", help="Folder (hf, parquet) or file (sharegpt .json, openai .jsonl); new.")],
           test_fraction: Annotated[float, typer.Option(
               help="Share of dialogues in the test split (hf, parquet).")] = 0.0,
           splits: Annotated[str, typer.Option(
               help="Names of the two splits, e.g. train_sft,test_sft.")] = "train,test",
           seed: Annotated[int, typer.Option(help="Seed of the train/test assignment.")] = 0,
           layout: Annotated[str, typer.Option(
               help="hf/parquet columns: '200k' (prompt, prompt_id, messages, id, meta) or 'trl' (no prompt: "
                    "TRL's SFTTrainer reads a prompt column as prompt-completion). For TRL, load a 200k "
                    "parquet export with load_dataset(OUT, 'messages'); an hf export needs 'trl'.")] = "200k",
           as_json: Annotated[bool, typer.Option(
               "--json", help="Print the report as one JSON object on stdout (for scripts).")] = False,
           skip_invalid: SkipInvalid = False, no_progress: NoProgress = False,
           overwrite: Overwrite = False) -> None:
    from .formats import export_corpus

    def run() -> None:
        names = tuple(s.strip() for s in splits.split(","))
        if len(names) != 2 or not all(names):
            raise ValueError(f"--splits needs two names separated by a comma, got '{splits}'")
        report = export_corpus(path, format, out, test_fraction, seed, names, skip_invalid,
                               not no_progress, layout)
        if as_json:  # plain stdout: never wrapped to a terminal width, whatever it is piped into
            sys.stdout.write(json.dumps(report, ensure_ascii=False) + "\n")
            return
        splits_done = ", ".join(f"{k} {v:,}" for k, v in (report.get("splits") or {}).items())
        counts = splits_done or f"{report.get('dialogues', 0):,} dialogues"
        Console(markup=False).print(f"exported {counts} ({report.get('invalid', 0)} invalid) to {report['out']} "
                                    f"as {report['format']}", highlight=False, soft_wrap=True)

    guarded(overwrite, run)


def import_(src: Path,
            out: Annotated[Path, typer.Option("--out", "-o", help="UltraChat JSONL file to write.")],
            format: Annotated[Optional[str], typer.Option(
                "--format", "-f", help="hf, parquet, sharegpt, openai or ultrachat (default: detected).")] = None,
            skip_invalid: SkipInvalid = False, no_progress: NoProgress = False,
            overwrite: Overwrite = False) -> None:
    from .formats import import_corpus

    def run() -> None:
        if format is not None and format not in ("hf", "parquet", "sharegpt", "openai", "ultrachat"):
            raise ValueError(f"--format: unknown format '{format}' "
                             "(choose hf, parquet, sharegpt, openai or ultrachat)")
        report = import_corpus(src, out, format, skip_invalid, not no_progress)
        _summary(report, ["format", "dialogues", "invalid", "out"])

    guarded(overwrite, run)


def split_long_(path: Path, out: Out,
                max_tokens: Annotated[int, typer.Option(help="Token limit per piece (training format).")] = 2048,
                tokenizer: Tokenizer = "embedded",
                keep_oversize: Annotated[bool, typer.Option(
                    "--keep-oversize", help="Keep single rounds over the limit as pieces.")] = False,
                skip_invalid: SkipInvalid = False, no_progress: NoProgress = False,
                overwrite: Overwrite = False) -> None:
    from .split import split_long

    def run() -> None:
        report = split_long(path, out, max_tokens, tokenizer, keep_oversize, skip_invalid, not no_progress)
        _summary(report, ["dialogues", "split", "pieces", "oversize_rounds", "invalid"])

    guarded(overwrite, run)


#: each data command: verb, help line, function
VERBS: list[tuple[str, str, Any]] = [
    ("show", "Print dialogues of an UltraChat JSONL file as a chat.", show),
    ("filter", "Clean a corpus: kept.jsonl, rejected.jsonl (with reasons) and a per-rule report.", filter_),
    ("dedup", "Remove exact and near duplicates (MinHash LSH); keeps the first of each cluster.", dedup),
    ("decontaminate", "Find dialogues sharing n-grams with evaluation prompts; --remove drops them.",
     decontaminate_),
    ("stats", "Corpus statistics: the columns of the UltraChat paper's Table 4, beside its rows.", stats),
    ("export", "Export UltraChat JSONL to hf (save_to_disk), parquet, sharegpt or openai.", export),
    ("import", "Convert hf, parquet, sharegpt, openai or released UltraChat files to UltraChat JSONL.", import_),
    ("split-long", "Split dialogues longer than --max-tokens at round boundaries.", split_long_),
]


def register(app: typer.Typer) -> None:
    for verb, help_text, fn in VERBS:
        app.command(verb, help=help_text)(fn)
