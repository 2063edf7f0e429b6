"""Supervised fine-tuning on UltraChat dialogues with TRL's SFTTrainer.

We prepare the sequences ourselves (template, assistant-only labels, round splitting: see
:mod:`.formatting`) and hand TRL a tokenized dataset with ``input_ids`` and ``labels``; TRL and
transformers do the rest: packing (best-fit decreasing, padding-free, so packed dialogues never
attend to each other: transformers builds a block-diagonal mask from the restarting
``position_ids``), LoRA/QLoRA through peft, accelerate for multi-GPU and multi-node
(DeepSpeed ZeRO-3 or FSDP), checkpoints, evaluation and TensorBoard.

Rerunning the same command after a crash resumes from the last complete checkpoint.

Example::

    cfg = load_train_config(None, {"model": "smollm2-135m", "data": ["dialogues.jsonl"],
                                   "out": "runs/tiny", "max_steps": 20})
    result = train(cfg)
    print(result.global_step, result.eval_loss)
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..core.corpus import iter_jsonl, write_json_atomic
from ..core.records import to_messages
from .config import TrainConfig
from .formatting import TRAIN_RECORD, resolve_template, split_dialogue

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


@dataclass
class TrainResult:
    out: str
    global_step: int
    resumed_from: str | None
    train_loss: float | None
    eval_loss: float | None
    dialogues: int
    sequences: int
    truncated: int
    train_tokens: int  # tokens in one epoch of training sequences (no padding)
    runtime_s: float


def model_path(model: str) -> str:
    """The embedded model's converted folder, a local folder, or a hub id as given."""
    from ..backends.local import EMBEDDED_MODEL, resolve_model_dir

    return str(resolve_model_dir(model)) if model == EMBEDDED_MODEL else model


def last_checkpoint(out: str | Path) -> Path | None:
    """The newest checkpoint that was written completely (it holds our record, written last)."""
    root = Path(out)
    if not root.is_dir():
        return None
    done = [(int(m.group(1)), p) for p in root.iterdir()
            if (m := _CHECKPOINT.match(p.name)) and (p / TRAIN_RECORD).exists()]
    return max(done)[1] if done else None


# -- data ---------------------------------------------------------------------------------------
def _jsonl_records(path: str, stamp: str) -> Iterator[dict[str, Any]]:
    """UltraChat (``data``) or ``messages`` JSONL -> ``{"messages": [...]}``; ``stamp`` keys the cache."""
    for no, obj in enumerate(iter_jsonl(path, validate=False), 1):
        try:
            messages = to_messages(obj)
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: record {no} (id {obj.get('id', '?')}): {exc}") from None
        if messages:
            yield {"messages": messages}


def load_dialogues(paths: list[str]) -> tuple[Any, Any]:
    """Load and concatenate dialogue sources -> ``(train, held_out_or_None)`` datasets.

    Accepts UltraChat JSONL, JSONL with ``messages``, Parquet files, folders written by
    ``save_to_disk`` and Parquet split folders (``ultrachat export --format hf|parquet``); a
    ``test``/``test_sft`` split is the held-out one.
    """
    import datasets

    trains, evals = [], []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise FileNotFoundError(f"{raw}: no such file or folder")
        if path.is_dir():
            saved = (path / "dataset_dict.json").exists() or (path / "state.json").exists()
            # save_to_disk folders, or Parquet split folders (`ultrachat export --format parquet`)
            loaded = datasets.load_from_disk(str(path)) if saved else datasets.load_dataset(str(path))
            if isinstance(loaded, datasets.DatasetDict):
                train_split = next((s for s in ("train", "train_sft") if s in loaded), next(iter(loaded)))
                trains.append(loaded[train_split])
                evals += [loaded[s] for s in ("test", "test_sft") if s in loaded]
            else:
                trains.append(loaded)
        elif path.suffix == ".parquet":
            trains.append(datasets.load_dataset("parquet", data_files=str(path), split="train"))
        else:
            stat = path.stat()
            try:
                trains.append(datasets.Dataset.from_generator(
                    _jsonl_records, gen_kwargs={"path": str(path), "stamp": f"{stat.st_mtime_ns}:{stat.st_size}"}))
            except datasets.exceptions.DatasetGenerationError as exc:
                raise (exc.__cause__ or exc) from None
    for ds, raw in zip(trains, paths, strict=True):
        if not {"messages", "data"} & set(ds.column_names):
            raise ValueError(f"{raw}: needs a 'messages' or 'data' column (has {', '.join(ds.column_names)})")
    # Sources share one column layout before concatenation: just "messages" when they all have it.
    if all("messages" in d.column_names for d in trains + evals):
        trains = [d.select_columns(["messages"]) for d in trains]
        evals = [d.select_columns(["messages"]) for d in evals]
    return datasets.concatenate_datasets(trains), (datasets.concatenate_datasets(evals) if evals else None)


def _tokenize_batch(batch: dict[str, list[Any]], tokenizer: Any, template: str, max_length: int,
                    system: str) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {"input_ids": [], "labels": [], "truncated": []}
    for i in range(len(next(iter(batch.values())))):
        messages = to_messages({k: v[i] for k, v in batch.items()})
        if not messages:
            continue
        if system and messages[0]["role"] != "system":
            messages = [{"role": "system", "content": system}, *messages]
        for piece in split_dialogue(messages, tokenizer, template, max_length):
            out["input_ids"].append(piece.input_ids)
            out["labels"].append(piece.labels)
            out["truncated"].append(piece.truncated)
    return out


def tokenize(ds: Any, tokenizer: Any, template: str, cfg: TrainConfig) -> Any:
    """Dialogues -> training sequences (``input_ids``, ``labels``, ``truncated``)."""
    return ds.map(_tokenize_batch, batched=True, remove_columns=ds.column_names, num_proc=cfg.num_proc,
                  fn_kwargs={"tokenizer": tokenizer, "template": template, "max_length": cfg.max_length,
                             "system": cfg.system}, desc="Formatting dialogues")


# -- devices and options ------------------------------------------------------------------------
def resolve_precision(precision: str) -> str:
    """``auto``: bf16 on a GPU that has it, fp16 on other GPUs, fp32 on CPU."""
    import torch

    if precision != "auto":
        if precision in ("bf16", "fp16") and not torch.cuda.is_available():
            raise ValueError(f"--precision {precision} needs a CUDA GPU; use fp32 (or auto) on CPU")
        return precision
    if not torch.cuda.is_available():
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def _report_to(cfg: TrainConfig) -> list[str]:
    if cfg.report_to is not None:
        return cfg.report_to
    targets = ["tensorboard"]
    # W&B only when installed *and* configured, so an unconfigured install never prompts.
    if importlib.util.find_spec("wandb") and (os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_MODE")):
        targets.append("wandb")
    return targets


def _lora(cfg: TrainConfig) -> tuple[Any, Any]:
    """``(peft_config, quantization_config)`` for the LoRA options (``(None, None)`` when off)."""
    lora = cfg.lora
    if not (lora.enabled or lora.quantize_4bit):
        return None, None
    from peft import LoraConfig

    peft_config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                             target_modules=lora.target_modules, task_type="CAUSAL_LM")
    if not lora.quantize_4bit:
        return peft_config, None
    import torch

    if not torch.cuda.is_available():
        raise ValueError("QLoRA (--qlora) loads the base model in 4 bits with bitsandbytes, which needs a CUDA GPU; "
                         "this machine has none: use --lora instead")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ValueError("QLoRA (--qlora) needs bitsandbytes: pip install bitsandbytes")
    from transformers import BitsAndBytesConfig

    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.bfloat16)
    return peft_config, quant


# -- training -----------------------------------------------------------------------------------
def train(cfg: TrainConfig, progress: bool = True) -> TrainResult:
    """Fine-tune ``cfg.model`` on ``cfg.data``; resume from ``cfg.out``'s last checkpoint if any."""
    _check_inputs(cfg)
    from transformers import AutoTokenizer
    from trl import SFTTrainer

    path = model_path(cfg.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if not tokenizer.is_fast:
        raise ValueError(f"{cfg.model}: a fast tokenizer is needed (offsets locate the assistant tokens)")
    template = resolve_template(cfg.template, tokenizer)
    tokenizer.chat_template = template  # saved with every checkpoint, so any server formats prompts as trained
    train_raw, train_ds, eval_ds = _datasets(cfg, tokenizer, template)
    truncated = sum(train_ds["truncated"])
    train_tokens = sum(len(ids) for ids in train_ds["input_ids"])
    train_ds = train_ds.remove_columns("truncated")

    precision = resolve_precision(cfg.precision)
    peft_config, quant = _lora(cfg)
    record = {"template": cfg.template, "chat_template": template, "system": cfg.system,
              "base_model": cfg.model, "max_length": cfg.max_length, "precision": precision,
              "lora": cfg.lora.model_dump() if peft_config else None}
    out = Path(cfg.out)
    args = _sft_config(cfg, out, precision, quant, eval_ds is not None, progress)
    resume = last_checkpoint(out)
    callback = _record_callback(out, record, cfg.save_total_limit)
    trainer = _trainer_class(SFTTrainer)(model=path, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                                         processing_class=tokenizer, peft_config=peft_config, callbacks=[callback])
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    train_loss = whole_run_loss(trainer.state.log_history, result.training_loss)
    eval_loss = trainer.evaluate().get("eval_loss") if eval_ds is not None else None
    _save_final(trainer, cfg, out)
    if _main_process(trainer.state):
        write_json_atomic(out / TRAIN_RECORD, {**record, "global_step": trainer.state.global_step,
                                               "train_loss": train_loss, "eval_loss": eval_loss})
    return TrainResult(str(out), trainer.state.global_step, str(resume) if resume else None,
                       train_loss, eval_loss, len(train_raw), len(train_ds), truncated, train_tokens,
                       result.metrics.get("train_runtime", 0.0))


def _trainer_class(base: type) -> type:
    """``base`` (TRL's ``SFTTrainer``) that trains no step when resumed from the final checkpoint.

    transformers checks ``max_steps`` only after a step, so a run killed after its last
    checkpoint but before its final model (or record) would, when rerun, train one step past
    ``max_steps`` and save another checkpoint, at every rerun until the epoch ran out.
    """

    class Trainer(base):
        def _run_epoch(self, *args: Any, **kwargs: Any) -> Any:
            if self.state.max_steps > 0 and self.state.global_step >= self.state.max_steps:
                self.control.should_training_stop = True
                return None
            return super()._run_epoch(*args, **kwargs)

    return Trainer


def whole_run_loss(log_history: list[dict[str, Any]], fallback: float | None) -> float | None:
    """The mean training loss of the whole run, across resumes: each logged loss (a mean over the
    steps since the previous log) weighted by the steps it covers. transformers' own figure covers
    only the steps of the last ``train()`` call (0 for a rerun that had no step left); this one
    leaves out the steps after the last log. ``fallback`` when nothing was logged."""
    total, last = 0.0, 0
    for entry in log_history:
        if "loss" in entry and entry.get("step", 0) > last:
            total += entry["loss"] * (entry["step"] - last)
            last = entry["step"]
    return total / last if last else fallback


def _check_inputs(cfg: TrainConfig) -> None:
    """Missing data fails here, before the slow imports of training."""
    if not cfg.data:
        raise ValueError("no training data: give one or more JSONL files, Parquet files or dataset folders")
    for raw in [*cfg.data, *cfg.eval_data]:
        if not Path(raw).exists():
            raise FileNotFoundError(f"{raw}: no such file or folder")


def _datasets(cfg: TrainConfig, tokenizer: Any, template: str) -> tuple[Any, Any, Any]:
    """``(raw training dialogues, tokenized training set, tokenized held-out set or None)``."""
    from accelerate import PartialState

    # Under a multi-process launch the main process prepares (and caches) the data first; the
    # others then read its cache instead of racing to write it.
    with PartialState().main_process_first():
        train_raw, eval_raw = load_dialogues(cfg.data)
        if cfg.eval_data:
            eval_raw, _ = load_dialogues(cfg.eval_data)
        elif eval_raw is None and cfg.eval_ratio > 0 and len(train_raw) >= 2:
            held = max(1, round(cfg.eval_ratio * len(train_raw)))
            split = train_raw.train_test_split(test_size=held, seed=cfg.seed)
            train_raw, eval_raw = split["train"], split["test"]
        train_ds = tokenize(train_raw, tokenizer, template, cfg)
        eval_ds = tokenize(eval_raw, tokenizer, template, cfg).remove_columns("truncated") if eval_raw else None
    if len(train_ds) == 0:
        raise ValueError("the training data holds no answered round")
    return train_raw, train_ds, eval_ds


def _sft_config(cfg: TrainConfig, out: Path, precision: str, quant: Any, evaluate: bool, progress: bool) -> Any:
    """TRL's ``SFTConfig`` for ``cfg``."""
    import torch
    from trl import SFTConfig

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float32, "fp32": torch.float32}[precision]
    return SFTConfig(
        output_dir=str(out), num_train_epochs=cfg.epochs, max_steps=cfg.max_steps,
        learning_rate=cfg.learning_rate, lr_scheduler_type=cfg.lr_scheduler, warmup_steps=cfg.warmup_ratio,
        weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm,
        per_device_train_batch_size=cfg.batch_size, per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum, activation_checkpointing=cfg.gradient_checkpointing,
        bf16=precision == "bf16", fp16=precision == "fp16",
        eval_strategy="steps" if evaluate else "no", eval_steps=cfg.eval_steps,
        # No save_total_limit: transformers would rotate before our record marks the new
        # checkpoint complete (see rotate_checkpoints).
        save_strategy="steps", save_steps=cfg.save_steps, save_total_limit=None,
        logging_steps=cfg.logging_steps, logging_first_step=True, report_to=_report_to(cfg),
        seed=cfg.seed, data_seed=cfg.seed, max_length=cfg.max_length, packing=cfg.packing,
        dataset_num_proc=cfg.num_proc, disable_tqdm=not progress,
        model_init_kwargs={"dtype": dtype, **({"quantization_config": quant} if quant else {}),
                           **({"attn_implementation": cfg.attn_implementation} if cfg.attn_implementation else {})},
    )


def _record_callback(out: Path, record: dict[str, Any], keep: int) -> Any:
    """A callback that writes ``record`` into each checkpoint last (it marks the checkpoint
    complete), then keeps the newest ``keep`` complete checkpoints."""
    from transformers import TrainerCallback

    class _Record(TrainerCallback):
        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            ckpt = out / f"checkpoint-{state.global_step}"
            if _main_process(state) and ckpt.is_dir():
                write_json_atomic(ckpt / TRAIN_RECORD, {**record, "global_step": state.global_step})
                rotate_checkpoints(out, keep)

    return _Record()


def rotate_checkpoints(out: Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` complete checkpoints, and incomplete ones older than
    the newest complete one (a save killed midway); return what was deleted.

    Only after the new checkpoint's record is written: transformers rotates before it, so with
    ``keep`` 1 a kill in between would leave no complete checkpoint and the rerun would start over.
    """
    import shutil

    found = sorted((int(m.group(1)), p) for p in out.iterdir() if (m := _CHECKPOINT.match(p.name)) and p.is_dir())
    complete = [step for step, p in found if (p / TRAIN_RECORD).exists()]
    kept = set(complete[-keep:])
    doomed = [p for step, p in found if step not in kept and complete and step < complete[-1]]
    for path in doomed:
        (path / TRAIN_RECORD).unlink(missing_ok=True)  # half deleted, it must not look complete
        shutil.rmtree(path, ignore_errors=True)
    return doomed


def _main_process(state: Any) -> bool:
    """Rank 0 only: the launcher's RANK too, since a trainer that did not join the process group
    (CPU runs under torchrun) believes every process is the main one."""
    return bool(state.is_world_process_zero) and os.environ.get("RANK", "0") == "0"


def _save_final(trainer: Any, cfg: TrainConfig, out: Path) -> None:
    """Save the model at ``out``: full weights, or (plain LoRA with ``merge``) merged weights."""
    if not (cfg.lora.enabled and cfg.lora.merge and not cfg.lora.quantize_4bit):
        trainer.save_model(str(out))
        return
    trainer.model.save_pretrained(str(out / "adapter"))
    merged = trainer.model.merge_and_unload()
    if trainer.is_world_process_zero():
        merged.save_pretrained(str(out))
        trainer.processing_class.save_pretrained(str(out))


def summary_lines(result: TrainResult) -> list[str]:
    data = asdict(result)
    return [f"{key}: {value}" for key, value in data.items() if value is not None]
