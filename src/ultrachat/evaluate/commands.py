"""CLI: ``ultrachat answer``, ``ultrachat eval pairwise|score`` and ``ultrachat best-of-n``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Optional

import typer

from ..cliutil import console, fail, run_guarded

if TYPE_CHECKING:
    from ..recipe import ModelConfig

EvalSetArg = Annotated[str, typer.Argument(
    help="Prompts: 'ultra_eval' (built in, 385 prompts), an ultra_eval-style or AlpacaEval JSON file, "
         "or MT-bench style JSONL ('turns').")]
AnswersArg = Annotated[list[Path], typer.Argument(help="Answer files (from `ultrachat answer`): AlpacaEval JSON or "
                                                       "FastChat model_answer/*.jsonl.")]
QuestionsOpt = Annotated[Optional[Path], typer.Option(
    help="The questions of FastChat answer files (default: question.jsonl beside their model_answer/ folder).")]
BackendOpt = Annotated[Optional[str], typer.Option(help="local (default), openai or fake.")]
ModelOpt = Annotated[Optional[str], typer.Option(help="Model: 'smollm2-135m' (embedded), a local HF folder, or "
                                                      "the model name at --base-url.")]
URLOpt = Annotated[Optional[str], typer.Option("--base-url", help="OpenAI-compatible endpoint (implies openai).")]
JBackendOpt = Annotated[Optional[str], typer.Option("--judge-backend", help="Judge backend: local (default), "
                                                                            "openai or fake.")]
JModelOpt = Annotated[Optional[str], typer.Option("--judge-model", help="Judge model (default: embedded).")]
JURLOpt = Annotated[Optional[str], typer.Option("--judge-base-url", help="Judge's OpenAI-compatible endpoint.")]
JTempOpt = Annotated[Optional[float], typer.Option("--judge-temperature", help="Override the judge config's.")]
JTokOpt = Annotated[Optional[int], typer.Option("--judge-max-tokens", help="Override the judge config's.")]
MaxTokOpt = Annotated[int, typer.Option("--max-tokens", help="Most tokens per answer.")]
TempOpt = Annotated[float, typer.Option(help="Sampling temperature of the answering model.")]
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


def _model_config(backend: str | None, model: str | None, base_url: str | None, **sampling: Any) -> ModelConfig:
    from ..recipe import ModelConfig

    if base_url and backend in (None, "openai"):
        if not model:
            fail("--model is required with --base-url (the model name the endpoint serves)")
        backend = "openai"
    backend = backend or "local"
    fields = {"backend": backend, "model": model or ("fake" if backend == "fake" else "smollm2-135m"),
              "base_url": base_url}
    return run_guarded(lambda: ModelConfig(**fields, **{k: v for k, v in sampling.items() if v is not None}))


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
           backend: BackendOpt = None, model: ModelOpt = None, base_url: URLOpt = None,
           system: Annotated[str, typer.Option(help="System prompt for the model.")] = "",
           temperature: TempOpt = 0.7, max_tokens: MaxTokOpt = 256, seed: SeedOpt = 0, generator: GenOpt = None,
           limit: LimitOpt = None, per_class: PerClassOpt = None, concurrency: ConcOpt = 16,
           progress: ProgOpt = True) -> None:
    """Answer an evaluation set with any model; writes AlpacaEval model_outputs JSON (resumable)."""
    from .answers import answer_eval_set, default_generator
    from .evalset import load_eval_set

    cfg = _model_config(backend, model, base_url, system=system, temperature=temperature, max_tokens=max_tokens)
    items = run_guarded(lambda: load_eval_set(eval_set, limit, per_class))
    gen = generator or default_generator(cfg)
    target = out or Path("ultrachat-out") / "eval" / f"{gen}.json"
    s = run_guarded(lambda: answer_eval_set(items, cfg, target, gen, seed, concurrency, _progress(progress)))
    console.print(f"{s.answered} answers ({s.from_cache} from cache, {s.truncated} cut at --max-tokens) -> {s.out}")


def pairwise(models: AnswersArg,
             reference: Annotated[Path, typer.Option(help="The reference model's answers (AlpacaEval JSON).")],
             out: Annotated[Path, typer.Option(help="Report folder.")] = Path("ultrachat-out/eval/pairwise"),
             judge: Annotated[Optional[str], typer.Option(help=JUDGE_HELP.format(kind="pairwise"))] = None,
             judge_backend: JBackendOpt = None, judge_model: JModelOpt = None, judge_base_url: JURLOpt = None,
             judge_temperature: JTempOpt = None, judge_max_tokens: JTokOpt = None, repeats: RepeatsOpt = 1,
             lc_gamed: Annotated[Optional[Path], typer.Option(
                 "--lc-gamed", help="AlpacaEval's df_gamed.csv (instruction difficulties and gamed baselines): "
                                    "reports AlpacaEval 2's LC win rate; the answers must be in AlpacaEval's order. "
                                    "Without it the length-adjusted win rate is shown instead.")] = None,
             questions: QuestionsOpt = None, concurrency: ConcOpt = 16, progress: ProgOpt = True) -> None:
    """Judge each model's answers against the reference's, both orders; win rates per class."""
    from .pairwise import pairwise_eval

    jcfg = _model_config(judge_backend, judge_model, judge_base_url)
    jconf = _judge(judge, "pairwise", jcfg, judge_temperature, judge_max_tokens)
    report = run_guarded(lambda: pairwise_eval(models, reference, jconf, jcfg, out, repeats, concurrency,
                                               _progress(progress), lc_gamed, questions))
    _show(report, out)


def score(models: AnswersArg,
          references: Annotated[Optional[Path], typer.Option(help="Reference answers (AlpacaEval JSON) used for "
                                                                  "the judge config's reference classes.")] = None,
          out: Annotated[Path, typer.Option(help="Report folder.")] = Path("ultrachat-out/eval/score"),
          judge: Annotated[Optional[str], typer.Option(help=JUDGE_HELP.format(kind="score"))] = None,
          judge_backend: JBackendOpt = None, judge_model: JModelOpt = None, judge_base_url: JURLOpt = None,
          judge_temperature: JTempOpt = None, judge_max_tokens: JTokOpt = None, questions: QuestionsOpt = None,
          concurrency: ConcOpt = 16, progress: ProgOpt = True) -> None:
    """Grade every answer 1-10 with a judge; mean scores per class."""
    from .score import score_eval

    jcfg = _model_config(judge_backend, judge_model, judge_base_url)
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
              backend: BackendOpt = None, model: ModelOpt = None, base_url: URLOpt = None,
              temperature: TempOpt = 0.8, max_tokens: MaxTokOpt = 256, seed: SeedOpt = 0, generator: GenOpt = None,
              limit: LimitOpt = None, per_class: PerClassOpt = None,
              judge: Annotated[Optional[str], typer.Option(help=JUDGE_HELP.format(kind="pairwise"))] = None,
              score_judge: Annotated[Optional[str], typer.Option(
                  "--score-judge", help=JUDGE_HELP.format(kind="score") + " Used without --reward-model.")] = None,
              judge_backend: JBackendOpt = None, judge_model: JModelOpt = None, judge_base_url: JURLOpt = None,
              repeats: RepeatsOpt = 1, concurrency: ConcOpt = 16, progress: ProgOpt = True) -> None:
    """Sample N answers per prompt, keep the scorer's favourite, and measure the gain over N=1."""
    from .bestofn import BestOfNSettings
    from .bestofn import best_of_n as run_best_of_n
    from .evalset import load_eval_set

    policy = _model_config(backend, model, base_url, temperature=temperature, max_tokens=max_tokens)
    settings = BestOfNSettings(n=n, seed=seed, concurrency=concurrency, repeats=repeats, pair_judge=judge,
                               score_judge=score_judge, reward_model=reward_model, reference=reference,
                               generator=generator, judge_cfg=_model_config(judge_backend, judge_model, judge_base_url))
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
