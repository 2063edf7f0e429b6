"""``ultrachat train``, ``ultrachat train-config`` and ``ultrachat delta make|recover``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..cliutil import console, fail, run_guarded

CONFIGS = Path(__file__).resolve().parent / "configs"


def train_cmd(
    model: Annotated[Optional[str], typer.Argument(help="HF model dir, hub id, or smollm2-135m.")] = None,
    data: Annotated[Optional[list[Path]], typer.Argument(help="UltraChat JSONL, Parquet, dataset folders.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output folder (checkpoints, model).")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="TOML training file.")] = None,
    template: Annotated[Optional[str], typer.Option(help="ultralm or chat (the model's own template).")] = None,
    system: Annotated[Optional[str], typer.Option(help="System prompt added to every dialogue.")] = None,
    eval_data: Annotated[Optional[list[Path]], typer.Option("--eval-data", help="Held-out dialogues.")] = None,
    eval_ratio: Annotated[Optional[float], typer.Option(help="Held-out share when no --eval-data.")] = None,
    max_length: Annotated[Optional[int], typer.Option(help="Tokens per sequence (default 2048).")] = None,
    packing: Annotated[Optional[bool], typer.Option("--packing/--no-packing", help="Pack sequences.")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Learning rate (default 1e-5).")] = None,
    epochs: Annotated[Optional[float], typer.Option(help="Epochs (default 3).")] = None,
    max_steps: Annotated[Optional[int], typer.Option(help="Stop after this many steps.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Sequences per device per step.")] = None,
    grad_accum: Annotated[Optional[int], typer.Option(help="Gradient accumulation steps.")] = None,
    gradient_checkpointing: Annotated[Optional[bool], typer.Option(
        "--gradient-checkpointing/--no-gradient-checkpointing", help="Trade compute for memory.")] = None,
    precision: Annotated[Optional[str], typer.Option(help="auto, bf16, fp16 or fp32.")] = None,
    attn_implementation: Annotated[Optional[str], typer.Option(
        help="Attention kernel, e.g. flash_attention_2 (GPU; makes packing pay off).")] = None,
    lora: Annotated[Optional[bool], typer.Option("--lora/--no-lora", help="Train LoRA adapters.")] = None,
    qlora: Annotated[Optional[bool], typer.Option("--qlora/--no-qlora", help="LoRA on a 4-bit base (GPU).")] = None,
    lora_r: Annotated[Optional[int], typer.Option(help="LoRA rank.")] = None,
    save_steps: Annotated[Optional[int], typer.Option(help="Checkpoint every N steps.")] = None,
    eval_steps: Annotated[Optional[int], typer.Option(help="Evaluate every N steps.")] = None,
    logging_steps: Annotated[Optional[int], typer.Option(help="Log every N steps.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed.")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Progress bar.")] = True,
) -> None:
    from .config import load_train_config
    from .sft import summary_lines, train

    overrides = {
        "model": model, "data": [str(p) for p in data] if data else None, "out": str(out) if out else None,
        "template": template, "system": system, "eval_ratio": eval_ratio, "max_length": max_length,
        "eval_data": [str(p) for p in eval_data] if eval_data else None, "packing": packing,
        "learning_rate": lr, "epochs": epochs, "max_steps": max_steps, "batch_size": batch_size,
        "grad_accum": grad_accum, "gradient_checkpointing": gradient_checkpointing, "precision": precision,
        "attn_implementation": attn_implementation,
        "lora.enabled": lora, "lora.quantize_4bit": qlora, "lora.r": lora_r, "save_steps": save_steps,
        "eval_steps": eval_steps, "logging_steps": logging_steps, "seed": seed,
    }
    cfg = run_guarded(lambda: load_train_config(config, overrides))
    result = run_guarded(lambda: train(cfg, progress=progress and sys.stderr.isatty()))
    if result.resumed_from:
        console.print(f"resumed from {result.resumed_from}")
    for line in summary_lines(result):
        console.print(line, highlight=False)


def train_config(name: Annotated[str, typer.Argument(help="zero3, fsdp or multi-gpu.")]) -> None:
    path = CONFIGS / f"{name}.yaml"
    if not path.exists():
        fail(f"no config '{name}'; choose one of {', '.join(sorted(p.stem for p in CONFIGS.glob('*.yaml')))}")
    print(path)


def delta_make(base: Path, tuned: Path, out: Path,
               shard_size: Annotated[str, typer.Option(help="Largest output shard, e.g. 2GB.")] = "2GB") -> None:
    from .delta import make_delta

    manifest = run_guarded(lambda: make_delta(base, tuned, out, shard_size, progress=sys.stderr.isatty()))
    inexact = sum(1 for t in manifest["tensors"].values() if not t["exact"])
    console.print(f"wrote {out}: {len(manifest['tensors'])} tensors, {inexact} not bit-exact", highlight=False)


def delta_recover(base: Path, delta_dir: Annotated[Path, typer.Argument(metavar="DELTA")], out: Path,
                  shard_size: Annotated[str, typer.Option(help="Largest output shard, e.g. 2GB.")] = "2GB") -> None:
    from .delta import MANIFEST, recover_delta

    n = run_guarded(lambda: recover_delta(base, delta_dir, out, shard_size, progress=sys.stderr.isatty()))
    checked = ("all checksums match" if (delta_dir / MANIFEST).exists()
               else "published delta format: names and shapes checked, float32")
    console.print(f"recovered {out}: {n} tensors, {checked}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("train", help="Fine-tune a causal LM on UltraChat dialogues (UltraLM recipe; resumes when "
                              "rerun).")(train_cmd)
    app.command("train-config", help="Print the path of a shipped accelerate config (zero3, fsdp, "
                                     "multi-gpu).")(train_config)
    delta = typer.Typer(help="Delta weights: tuned - base, and base + delta, tensor by tensor.", no_args_is_help=True)
    delta.command("make", help="Write DELTA = TUNED - BASE (safetensors shards + checksummed manifest).")(delta_make)
    delta.command("recover", help="Write OUT = BASE + DELTA: an `ultrachat delta make` delta (every checksum "
                                  "verified) or a published one such as UltraLM's (a model folder of tuned - "
                                  "base).")(delta_recover)
    app.add_typer(delta, name="delta")
