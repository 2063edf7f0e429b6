"""CLI: ``ultrachat answer``, ``ultrachat eval pairwise|score`` and ``ultrachat best-of-n``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Optional

import typer

from ..cliutil import console, run_guarded
from ..modelflags import JUDGE, MODEL, model_config

if TYPE_CHECKING:
    from ..recipe import ModelConfig

EvalSetArg = Annotated[str, typer.Argument(
    help="Prompts: 'ultra_eval' (built in, 385 prompts), an ultra_eval-style or AlpacaEval JSON file, "
         "or MT-bench style JSONL ('turns').")]
AnswersArg = Annotated[list[Path], typer.Argument(help="Answer files (from `ultrachat answer`): AlpacaEval JSON or "
                                                       "FastChat model_answer/*.jsonl.")]
QuestionsOpt = Annotated[Optional[Path], typer.Option(
    help="The questions of FastChat answer files (default: question.jsonl beside their model_answer/ folder).")]
SeedOpt = Annotated[int, typer.Option(help="Sampling seed.")]
LimitOpt = Annotated[Optional[int], typer.Option(min=1, help="Only the first N prompts (N >= 1).")]
PerClassOpt = Annotated[Optional[int], typer.Option("--per-class", min=1,
                                                    help="Only the first N prompts of each class (N >= 1).")]
ConcOpt = Annotated[int, typer.Option(help="Calls in flight at once (the local model batches them).")]
ProgOpt = Annotated[bool, typer.Option("--progress/--no-progress", help="Show live progress bars.")]
RepeatsOpt = Annotated[int, typer.Option(min=1, help="Judge K times; report the median and spread.")]
JUDGE_HELP = ("Judge config: a built-in name or a .toml path (default: {kind}-small when the judge is the "
              "embedded model, else {kind}).")
GenOpt = Annotated[Optional[str], typer.Option(help="Name recorded as 'generator' (default: the model).")]


def _judge(name: str | None, kind: Literal["pairwise", "score"], judge_cfg: ModelConfig,
           temperature: float | None, max_tokens: int | None) -> Any:
    from .judges import default_judge, load_judge

    judge = run_guarded(lambda: load_judge(name or default_judge(kind, judge_cfg)))
    if temperature is not None:
        judge.temperature = temperature
    if max_tokens is not None:
        judge.max_tokens = max_tokens
    return judge


def _progress(flag: bool) -> bool:
    return flag and sys.stderr.isatty()


def _show(report: dict[str, Any], out: Path) -> None:
    from rich.console import Console

    from .report import leaderboard, write_report

    paths = write_report(report, out)
    stdout = Console(markup=False)
    for table in leaderboard(report):
        stdout.print(table)
    note = (report.get("length_control") or {}).get("note")
    if note:
        console.print(f"len-adj win %: alpaca_eval's length_controlled_minimal GLM; {note}")
    chart = paths["png"] or "skipped (pip install 'ultrachat[data]' for matplotlib)"
    console.print(f"report: {paths['json']}  chart: {chart}  page: {paths['html']}")


def answer(eval_set: EvalSetArg = "ultra_eval",
           out: Annotated[Optional[Path], typer.Option(help="Output: .json for AlpacaEval model_outputs (default: "
                                                            "ultrachat-out/eval/<generator>.json), .jsonl for a "
                                                            "FastChat model_answer file.")] = None,
           backend: MODEL.Backend = None, model: MODEL.Model = None, base_url: MODEL.BaseURL = None,
           api_key_env: MODEL.APIKeyEnv = None,
           system: Annotated[str, typer.Option(help="System prompt for the model.")] = "",
           temperature: MODEL.Temperature = 0.7, top_p: MODEL.TopP = None, max_tokens: MODEL.MaxTokens = 256,
           seed: SeedOpt = 0, generator: GenOpt = None,
           limit: LimitOpt = None, per_class: PerClassOpt = None, concurrency: ConcOpt = 16,
           progress: ProgOpt = True) -> None:
    """Answer an evaluation set with any model; writes AlpacaEval model_outputs JSON (resumable)."""
    from .answers import answer_eval_set, default_generator
    from .evalset import load_eval_set

    cfg = model_config(backend, model, base_url, api_key_env, system=system, temperature=temperature, top_p=top_p,
                       max_tokens=max_tokens)
    items = run_guarded(lambda: load_eval_set(eval_set, limit, per_class))
    gen = generator or default_generator(cfg)
    target = out or Path("ultrachat-out") / "eval" / f"{gen}.json"
    s = run_guarded(lambda: answer_eval_set(items, cfg, target, gen, seed, concurrency, _progress(progress)))
    console.print(f"{s.answered} answers ({s.from_cache} from cache, {s.truncated} cut at --max-tokens) -> {s.out}")


def pairwise(models: AnswersArg,
             reference: Annotated[Path, typer.Option(help="The reference model's answers (AlpacaEval JSON).")],
             out: Annotated[Path, typer.Option(help="Report folder.")] = Path("ultrachat-out/eval/pairwise"),
             judge: Annotated[Optional[str], typer.Option(help=JUDGE_HELP.format(kind="pairwise"))] = None,
             judge_backend: JUDGE.Backend = None, judge_model: JUDGE.Model = None,
             judge_base_url: JUDGE.BaseURL = None, judge_api_key_env: JUDGE.APIKeyEnv = None,
             judge_temperature: JUDGE.Temperature = None, judge_max_tokens: JUDGE.MaxTokens = None,
             repeats: RepeatsOpt = 1,
             lc_gamed: Annotated[Optional[Path], typer.Option(
                 "--lc-gamed", help="AlpacaEval's df_gamed.csv (instruction difficulties and gamed baselines): "
                                    "reports AlpacaEval 2's LC win rate; the answers must be in AlpacaEval's order. "
                                    "Without it the length-adjusted win rate is shown instead.")] = None,
             questions: QuestionsOpt = None, concurrency: ConcOpt = 16, progress: ProgOpt = True) -> None:
    """Judge each model's answers against the reference's, both orders; win rates per class."""
    from .pairwise import pairwise_eval

    jcfg = model_config(judge_backend, judge_model, judge_base_url, judge_api_key_env)
    jconf = _judge(judge, "pairwise", jcfg, judge_temperature, judge_max_tokens)
    report = run_guarded(lambda: pairwise_eval(models, reference, jconf, jcfg, out, repeats, concurrency,
                                               _progress(progress), lc_gamed, questions))
    _show(report, out)


def score(models: AnswersArg,
          references: Annotated[Optional[Path], typer.Option(help="Reference answers (AlpacaEval JSON) used for "
                                                                  "the judge config's reference classes.")] = None,
          out: Annotated[Path, typer.Option(help="Report folder.")] = Path("ultrachat-out/eval/score"),
          judge: Annotated[Optional[str], typer.Option(help=JUDGE_HELP.format(kind="score"))] = None,
          judge_backend: JUDGE.Backend = None, judge_model: JUDGE.Model = None, judge_base_url: JUDGE.BaseURL = None,
          judge_api_key_env: JUDGE.APIKeyEnv = None, judge_temperature: JUDGE.Temperature = None,
          judge_max_tokens: JUDGE.MaxTokens = None, questions: QuestionsOpt = None,
          concurrency: ConcOpt = 16, progress: ProgOpt = True) -> None:
    """Grade every answer 1-10 with a judge; mean scores per class."""
    from .score import score_eval

    jcfg = model_config(judge_backend, judge_model, judge_base_url, judge_api_key_env)
    jconf = _judge(judge, "score", jcfg, judge_temperature, judge_max_tokens)
    report = run_guarded(lambda: score_eval(models, jconf, jcfg, out, references, concurrency, _progress(progress),
                                            questions))
    _show(report, out)


def best_of_n(eval_set: EvalSetArg = "ultra_eval",
              n: Annotated[int, typer.Option("--n", help="Samples per prompt.")] = 4,
              out: Annotated[Path, typer.Option(help="Output folder.")] = Path("ultrachat-out/eval/best-of-n"),
              reward_model: Annotated[Optional[Path], typer.Option(
                  "--reward-model", help="Local reward model folder: UltraRM's published layout (regression_head, "
                                         "'Human: ... Assistant: ...' format) or a Hugging Face sequence classifier. "
                                         "Without it, the score judge rates each sample.")] = None,
              reference: Annotated[Optional[Path], typer.Option(
                  help="Reference answers to measure win rates against; without it best-of-N meets N=1 "
                       "head to head.")] = None,
              backend: MODEL.Backend = None, model: MODEL.Model = None, base_url: MODEL.BaseURL = None,
              api_key_env: MODEL.APIKeyEnv = None, temperature: MODEL.Temperature = 0.8, top_p: MODEL.TopP = None,
              max_tokens: MODEL.MaxTokens = 256, seed: SeedOpt = 0, generator: GenOpt = None,
              limit: LimitOpt = None, per_class: PerClassOpt = None,
              judge: Annotated[Optional[str], typer.Option(help=JUDGE_HELP.format(kind="pairwise"))] = None,
              score_judge: Annotated[Optional[str], typer.Option(
                  "--score-judge", help=JUDGE_HELP.format(kind="score") + " Used without --reward-model.")] = None,
              judge_backend: JUDGE.Backend = None, judge_model: JUDGE.Model = None,
              judge_base_url: JUDGE.BaseURL = None, judge_api_key_env: JUDGE.APIKeyEnv = None,
              repeats: RepeatsOpt = 1, concurrency: ConcOpt = 16, progress: ProgOpt = True) -> None:
    """Sample N answers per prompt, keep the scorer's favourite, and measure the gain over N=1."""
    from .bestofn import BestOfNSettings
    from .bestofn import best_of_n as run_best_of_n
    from .evalset import load_eval_set

    policy = model_config(backend, model, base_url, api_key_env, temperature=temperature, top_p=top_p,
                          max_tokens=max_tokens)
    judge_cfg = model_config(judge_backend, judge_model, judge_base_url, judge_api_key_env)
    settings = BestOfNSettings(n=n, seed=seed, concurrency=concurrency, repeats=repeats, pair_judge=judge,
                               score_judge=score_judge, reward_model=reward_model, reference=reference,
                               generator=generator, judge_cfg=judge_cfg)
    items = run_guarded(lambda: load_eval_set(eval_set, limit, per_class))
    report = run_guarded(lambda: run_best_of_n(items, policy, settings, out, _progress(progress)))
    _show(report, out)
    b = report["best_of_n"]
    gain = "-" if b["gain"] is None else f"{b['gain']:+.1f} points"
    console.print(f"best-of-{n} ({b['compared']}): win rate N=1 {b['win_rate_n1']}, best-of-{n} "
                  f"{b['win_rate_best']}, gain {gain}; answers in {out}")


def register(app: typer.Typer) -> None:
    app.command("answer")(answer)
    group = typer.Typer(help="Judge models' answers with an LLM: pairwise win rates or 1-10 scores.",
                        no_args_is_help=True)
    group.command("pairwise")(pairwise)
    group.command("score")(score)
    app.add_typer(group, name="eval")
    app.command("best-of-n")(best_of_n)
