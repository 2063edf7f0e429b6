"""``ultrachat generate <sector>``: one command per sector plug-in, all with the same flags."""

from __future__ import annotations

import inspect
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from ..cliutil import console, fail, run_guarded
from ..modelflags import ROLES, role_overrides

RecipeOpt = Annotated[Optional[Path], typer.Option("--recipe", "-r", help="TOML recipe file.")]
DialoguesOpt = Annotated[Optional[int], typer.Option(help="Number of dialogues to have in the output.")]
OutOpt = Annotated[Optional[Path], typer.Option(help="Output folder (default: ./ultrachat-out/SECTOR).")]
SeedOpt = Annotated[Optional[int], typer.Option(help="Seed for the whole plan.")]
ConcOpt = Annotated[Optional[int], typer.Option(help="Dialogues in flight at once.")]
BudgetOpt = Annotated[Optional[int], typer.Option("--max-total-tokens", help="Stop cleanly after this many tokens.")]
MinROpt = Annotated[Optional[int], typer.Option("--min-rounds", help="Fewest rounds per dialogue.")]
MaxROpt = Annotated[Optional[int], typer.Option("--max-rounds", help="Most rounds per dialogue.")]
UTokOpt = Annotated[Optional[int], typer.Option("--user-max-tokens", help="max_tokens of the user simulator.")]
ATokOpt = Annotated[Optional[int], typer.Option("--assistant-max-tokens", help="max_tokens of the assistant.")]
UPOpt = Annotated[Optional[str], typer.Option("--user-prompts", help="User-simulator prompt set: task or persona.")]
RayOpt = Annotated[Optional[str], typer.Option("--ray", help="Shard dialogues over a Ray cluster: local, auto or "
                                               "HOST:PORT (needs ultrachat[cluster]).")]
RayWOpt = Annotated[Optional[int], typer.Option("--ray-workers", help="Ray workers (default: one per cluster CPU).")]
ProgOpt = Annotated[bool, typer.Option("--progress/--no-progress", help="Show live progress bars.")]
LangOpt = Annotated[Optional[str], typer.Option("--language", help="Language of prompts and lists (en, zh).")]
DryOpt = Annotated[bool, typer.Option("--dry-run", help="Print the plan (openings, dialogues, calls, tokens); "
                                      "call no model.")]
PlanOnlyOpt = Annotated[bool, typer.Option("--plan-only", help="Run the planners (real model calls) and write the "
                                           "opening lines to plan/openings.jsonl; generate no dialogue.")]
RecipeArg = Annotated[Optional[Path], typer.Argument(help="TOML recipe (default: the built-in defaults).")]
MatOpt = Annotated[Optional[list[str]], typer.Option(
    "--materials", metavar="PATH", help="Corpus for the materials sector (repeatable): a file (C4's *.json.gz, "
    "JSONL, Parquet, text), a glob, a folder or a datasets save_to_disk folder; replaces materials.files.")]
EntOpt = Annotated[Optional[Path], typer.Option(
    "--entities", metavar="FILE", help="Entity list for the entities sector (CSV/JSONL/TXT, e.g. from ultrachat "
    "entities build); replaces entities.entities_file.")]
UpgOpt = Annotated[bool, typer.Option("--upgrade-prompts", help="Resume a folder started with other built-in "
                                      "prompts (an older ultrachat); new calls use the new prompts.")]
# Flags that only mean something where their sector runs.
SECTOR_FLAGS = {"materials": ("materials", "all"), "entities": ("entities", "all")}


def recipe_overrides(dialogues: int | None = None, out: Path | None = None, seed: int | None = None,
                     concurrency: int | None = None, max_total_tokens: int | None = None,
                     min_rounds: int | None = None, max_rounds: int | None = None,
                     user_max_tokens: int | None = None, assistant_max_tokens: int | None = None,
                     user_prompts: str | None = None, base_url: str | None = None,
                     model: str | None = None, backend: str | None = None,
                     api_key_env: str | None = None) -> dict[str, Any]:
    """Dotted recipe overrides for the quick flags every ``generate`` command shares."""
    overrides: dict[str, Any] = {
        "dialogues": dialogues, "out": str(out) if out else None, "seed": seed, "concurrency": concurrency,
        "max_total_tokens": max_total_tokens, "dialogue.min_rounds": min_rounds,
        "dialogue.max_rounds": max_rounds, "models.user.max_tokens": user_max_tokens,
        "models.assistant.max_tokens": assistant_max_tokens, "dialogue.user_prompts": user_prompts,
    }
    overrides.update(role_overrides(("user", "assistant", "planner"), backend, model, base_url, api_key_env))
    return overrides


def _sector_command(app: typer.Typer, sector: str, help_text: str) -> None:
    def command(recipe: RecipeOpt = None, dialogues: DialoguesOpt = None, out: OutOpt = None, seed: SeedOpt = None,
                concurrency: ConcOpt = None, max_total_tokens: BudgetOpt = None, min_rounds: MinROpt = None,
                max_rounds: MaxROpt = None, user_max_tokens: UTokOpt = None, assistant_max_tokens: ATokOpt = None,
                user_prompts: UPOpt = None, backend: ROLES.Backend = None, model: ROLES.Model = None,
                base_url: ROLES.BaseURL = None, api_key_env: ROLES.APIKeyEnv = None,
                progress: ProgOpt = True, language: LangOpt = None, dry_run: DryOpt = False, ray: RayOpt = None,
                ray_workers: RayWOpt = None, materials: MatOpt = None, entities: EntOpt = None,
                upgrade_prompts: UpgOpt = False, plan_only: PlanOnlyOpt = False) -> None:
        from ..recipe import load_recipe
        from .runner import generate

        overrides = recipe_overrides(dialogues, out, seed, concurrency, max_total_tokens, min_rounds, max_rounds,
                                     user_max_tokens, assistant_max_tokens, user_prompts, base_url, model, backend,
                                     api_key_env)
        overrides["language"] = language
        overrides["materials.files"] = materials or None
        overrides["entities.entities_file"] = str(entities) if entities else None
        overrides["upgrade_prompts"] = upgrade_prompts or None
        rec = run_guarded(lambda: load_recipe(recipe, overrides))
        if dry_run:
            from .dryrun import dry_run as simulate
            from .dryrun import render, roles_table

            Console(markup=False).print(roles_table(rec), *render(run_guarded(lambda: simulate(sector, rec))))
            return
        if ray and plan_only:
            fail("--plan-only generates no dialogue, so there is nothing to shard: drop --ray")
        run: Callable[..., Any]
        if ray:
            from functools import partial

            from .distributed import generate_ray

            if sector == "all":
                fail("--ray runs one sector at a time; run each sector with --ray")
            run = partial(generate_ray, sector, address=ray, workers=ray_workers)
        elif sector == "all":
            from .all_sectors import generate_all

            run = generate_all
        else:
            from functools import partial

            run = partial(generate, sector)
        extra: dict[str, Any] = {"plan_only": True} if plan_only else {}
        summary = run_guarded(lambda: run(rec, progress=progress and sys.stderr.isatty(), console=console, **extra))
        Console(markup=False).print(summary.table())

    params = inspect.signature(command, eval_str=True).parameters
    command.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [p for name, p in params.items() if sector in SECTOR_FLAGS.get(name, (sector,))])
    app.command(sector, help=help_text)(command)


DemoRecipeOpt = Annotated[Path, typer.Option("--recipe", "-r", help="The demo recipe.")]
DemoOutOpt = Annotated[Path, typer.Option(help="Output folder.")]


def demo(recipe: DemoRecipeOpt = Path("examples/demo.toml"), out: DemoOutOpt = Path("ultrachat-out/demo"),
         progress: ProgOpt = True) -> None:
    """First contact: a small world run on the embedded model (offline), its longest dialogue, a summary."""
    from ..data.show import show_dialogues
    from ..recipe import load_recipe
    from .demo import summary_table
    from .runner import generate

    if not recipe.is_file():
        fail(f"{recipe}: no such recipe (run from the repository root, or pass --recipe)")
    rec = run_guarded(lambda: load_recipe(recipe, {"out": str(out)}))
    summary = run_guarded(lambda: generate("world", rec, progress=progress and sys.stderr.isatty(), console=console))
    Console().print(summary.table())
    corpus = summary.output
    run_guarded(lambda: show_dialogues(corpus, n=1, longest=True))
    Console().print(summary_table(corpus, summary.seconds, summary.stats.dialogues))


GpuTpsOpt = Annotated[float, typer.Option("--gpu-tokens-per-s", help="Generated tokens a second per GPU (mixed "
                                          "plans' GPU-hours).")]
GpuPtpsOpt = Annotated[float, typer.Option("--gpu-prompt-tokens-per-s", help="Prompt (prefill) tokens a second per "
                                           "GPU.")]
GpuUsdOpt = Annotated[float, typer.Option("--gpu-usd-per-hour", help="Price of one GPU-hour in USD.")]


def _estimate_command(app: typer.Typer) -> None:
    from .estimate_all import GPU_PROMPT_TOKENS_PER_S, GPU_TOKENS_PER_S, GPU_USD_PER_HOUR

    def estimate_command(recipe: RecipeArg = None,
                     sector: Annotated[Optional[str], typer.Option(
                         help="Sector to estimate, or all (default: all when the recipe has a [mix], else world).")]
                     = None,
                     dialogues: Annotated[Optional[int], typer.Option(help="Dialogues to plan for.")] = None,
                     sample: Annotated[int, typer.Option(help="Dialogues actually simulated (per sector).")] = 300,
                     fill: Annotated[float, typer.Option(help="Share of max_tokens a reply uses.")] = 0.6,
                     prices: Annotated[Optional[Path], typer.Option(help="Price table TOML.")] = None,
                     gpu_tokens_per_s: GpuTpsOpt = GPU_TOKENS_PER_S,
                     gpu_prompt_tokens_per_s: GpuPtpsOpt = GPU_PROMPT_TOKENS_PER_S,
                     gpu_usd_per_hour: GpuUsdOpt = GPU_USD_PER_HOUR,
                     as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
        """Estimate calls, tokens, time and cost of a generation run without calling any model."""
        from ..recipe import load_recipe
        from .accounting import Prices
        from .estimate import estimate

        rec = run_guarded(lambda: load_recipe(recipe, {"dialogues": dialogues}))
        table = Prices.load(prices) if prices else None
        if (sector or ("all" if rec.mix.sectors else "world")) == "all":
            from .estimate_all import estimate_mix

            mix = run_guarded(lambda: estimate_mix(rec, sample, fill, table, gpu_tokens_per_s,
                                                   gpu_prompt_tokens_per_s, gpu_usd_per_hour))
            if as_json:
                print(json.dumps(mix.to_json(), indent=2))
                return
            Console(markup=False, width=max(140, console.width)).print(mix.table())
            for note in mix.notes():
                Console(markup=False).print(f"note: {note}")
            return
        est = run_guarded(lambda: estimate(sector or "world", rec, dialogues, sample, fill, table))
        if as_json:
            print(json.dumps(est.to_json(), indent=2))
        else:
            Console(markup=False).print(est.table())

    app.command("estimate")(estimate_command)
    app.command("plan", hidden=True)(estimate_command)  # its first name, for scripts that use it


def register(app: typer.Typer) -> None:
    from .runner import SECTORS

    gen = typer.Typer(help="Generate dialogues for one sector (two models: a simulated user and an assistant).",
                      no_args_is_help=True)
    for name, cls in SECTORS.items():
        _sector_command(gen, name, (cls.__doc__ or name).strip().splitlines()[0])
    _sector_command(gen, "all", "A mixed run: every sector of the recipe's \\[mix] with its own quota and models, "
                    "one output per sector plus the merged corpus.")
    app.add_typer(gen, name="generate")
    app.command("demo")(demo)
    _estimate_command(app)
