"""Training settings: one validated model with the UltraLM defaults, overridable by TOML and flags.

The TOML file holds the fields at top level or under a ``[train]`` table, e.g.::

    model = "smollm2-135m"
    data = ["ultrachat-out/world/dialogues.jsonl"]
    out = "runs/ultralm-tiny"
    template = "ultralm"
    epochs = 1
    [lora]
    enabled = true
    r = 16

Defaults are the UltraLM repository's: lr 1e-5, 3 epochs, cosine schedule, warm-up ratio
0.03, weight decay 0, gradient clip 1.0, max length 2048.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from ..core.config import Strict as _Strict
from ..core.config import load_toml_model


class LoraConfig(_Strict):
    """LoRA adapters (``enabled``) or QLoRA (``quantize_4bit``: 4-bit NF4 base, needs a CUDA GPU)."""

    enabled: bool = False
    quantize_4bit: bool = False
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"
    merge: bool = True  # save the merged full model (plain LoRA only) so chat/delta take it as is


class TrainConfig(_Strict):
    """One fine-tuning run."""

    model: str = "smollm2-135m"
    data: list[str] = Field(default_factory=list)
    eval_data: list[str] = Field(default_factory=list)
    out: str = "ultrachat-out/train"
    template: Literal["chat", "ultralm"] = "ultralm"
    system: str = ""  # prepended to every training dialogue (and used by `ultrachat chat`)
    max_length: int = Field(2048, ge=16)
    packing: bool = False
    learning_rate: float = Field(1e-5, gt=0)
    epochs: float = Field(3.0, gt=0)
    max_steps: int = -1  # > 0 overrides epochs
    lr_scheduler: str = "cosine"
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, ge=0)
    batch_size: int = Field(1, ge=1)  # per device
    grad_accum: int = Field(1, ge=1)
    gradient_checkpointing: bool = False
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    attn_implementation: str | None = None  # e.g. "flash_attention_2" on GPUs (packing wants it); None: sdpa
    eval_ratio: float = Field(0.02, ge=0, lt=1)  # held-out share of the dialogues when no eval_data
    eval_steps: int = Field(200, ge=1)
    save_steps: int = Field(200, ge=1)
    save_total_limit: int = Field(2, ge=1)
    logging_steps: int = Field(10, ge=1)
    seed: int = 42
    num_proc: int | None = None  # tokenization processes
    report_to: list[str] | None = None  # None: tensorboard, plus wandb when installed and configured
    lora: LoraConfig = Field(default_factory=LoraConfig)


def load_train_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a TOML training file (or the defaults) and apply dotted ``overrides`` (``None`` = unset)."""
    return load_toml_model(TrainConfig, path, overrides, "training config", table="train")
