"""Fine-tuning a tiny model on CPU: the loss falls, users are masked, packing does not leak,
LoRA saves a merged model, QLoRA fails clearly without a GPU."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from ultrachat.testing.tiny_model import make_tiny_model, toy_dialogues
from ultrachat.train.config import load_train_config
from ultrachat.train.formatting import IGNORE_INDEX, TRAIN_RECORD


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # Two busy cores shared with other tests: OpenMP spinning makes 2 threads far slower than 1.
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("sft")
    dialogues = toy_dialogues(24)
    corpus = root / "dialogues.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in dialogues))
    model = make_tiny_model(root / "base", [t for d in dialogues for t in d["data"]])
    return model, corpus


def settings(tiny, out: Path, **extra):
    model, corpus = tiny
    base = {"model": str(model), "data": [str(corpus)], "out": str(out), "learning_rate": 5e-3, "batch_size": 4,
            "logging_steps": 1, "save_steps": 100, "eval_steps": 100, "max_length": 256}
    return load_train_config(None, {**base, **extra})


def losses(out: Path) -> list[tuple[int, float]]:
    state = json.loads(max(out.glob("checkpoint-*/trainer_state.json"), key=lambda p: p.stat().st_mtime).read_text())
    return [(e["step"], e["loss"]) for e in state["log_history"] if "loss" in e]


def test_training_lowers_the_loss_and_records_the_template(tiny, tmp_path):
    from transformers import AutoTokenizer

    from ultrachat.train.sft import train

    out = tmp_path / "run"
    result = train(settings(tiny, out, max_steps=12, save_steps=12, eval_ratio=0.1), progress=False)
    assert result.global_step == 12 and result.resumed_from is None
    history = losses(out)
    assert [s for s, _ in history] == list(range(1, 13))
    assert history[-1][1] < history[0][1] - 1.0, history
    assert result.eval_loss is not None and math.isfinite(result.eval_loss)
    record = json.loads((out / TRAIN_RECORD).read_text())
    assert record["template"] == "ultralm" and record["global_step"] == 12 and record["eval_loss"] == result.eval_loss
    assert json.loads((out / "checkpoint-12" / TRAIN_RECORD).read_text())["template"] == "ultralm"
    # The saved tokenizer formats prompts the way the model was trained.
    tok = AutoTokenizer.from_pretrained(out)
    prompt = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    assert prompt == f"User: Hi{tok.eos_token}\nAssistant:"
    assert (out / "model.safetensors").exists()
    assert list((out / "runs").rglob("events.out.tfevents.*")), "no TensorBoard log"


def test_training_sequences_mask_everything_but_the_replies(tiny):
    from transformers import AutoTokenizer

    from ultrachat.train.formatting import resolve_template
    from ultrachat.train.sft import load_dialogues, tokenize

    model, corpus = tiny
    tok = AutoTokenizer.from_pretrained(model)
    raw, held_out = load_dialogues([str(corpus)])
    assert held_out is None and len(raw) == 24
    ds = tokenize(raw, tok, resolve_template("ultralm", tok), load_train_config(None, {"max_length": 256}))
    for row, dialogue in zip(ds, toy_dialogues(24), strict=True):
        kept = tok.decode([t for t, lab in zip(row["input_ids"], row["labels"], strict=True) if lab != IGNORE_INDEX])
        assert kept == "".join(f" {a}{tok.eos_token}" for a in dialogue["data"][1::2])
        assert "What is the capital" not in kept


def test_packed_sequences_do_not_attend_to_each_other(tiny, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from ultrachat.train.sft import train

    model_dir, _ = tiny
    out = tmp_path / "packed"
    result = train(settings(tiny, out, max_steps=4, save_steps=4, packing=True, eval_ratio=0), progress=False)
    assert result.global_step == 4
    history = losses(out)
    assert [s for s, _ in history] == [1, 2, 3, 4] and all(math.isfinite(loss) for _, loss in history), history
    # The padding-free collator TRL uses for packing: one row, positions restart per sequence.
    seqs = [{"input_ids": list(range(5, 25)), "labels": list(range(5, 25))},
            {"input_ids": list(range(40, 52)), "labels": list(range(40, 52))}]
    batch = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)(seqs)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    with torch.no_grad():
        # As in TRL's loss (use_cache=False): transformers then derives a block-diagonal mask from the positions.
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]
        alone = [model(input_ids=torch.tensor([s["input_ids"]])).logits[0] for s in seqs]
    torch.testing.assert_close(packed, torch.cat(alone), atol=1e-4, rtol=1e-4)


def test_lora_saves_adapter_and_merged_model(tiny, tmp_path):
    from ultrachat.train.sft import train

    out = tmp_path / "lora"
    result = train(settings(tiny, out, max_steps=3, eval_ratio=0, **{"lora.enabled": True, "lora.r": 4}),
                   progress=False)
    assert result.global_step == 3
    assert (out / "adapter" / "adapter_config.json").exists()
    assert (out / "model.safetensors").exists() and not (out / "adapter_config.json").exists()
    assert json.loads((out / TRAIN_RECORD).read_text())["lora"]["r"] == 4


def test_qlora_without_a_gpu_is_a_clear_error(tiny, tmp_path):
    import torch

    from ultrachat.train.sft import train

    if torch.cuda.is_available():
        pytest.skip("this check is about machines without a GPU")
    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        train(settings(tiny, tmp_path / "q", max_steps=1, **{"lora.quantize_4bit": True}), progress=False)


def test_bad_config_names_the_field(tmp_path):
    from ultrachat.recipe import RecipeError

    path = tmp_path / "train.toml"
    path.write_text("[train]\nlearning_rate = -1\n")
    with pytest.raises(RecipeError, match=r"train.toml: field 'learning_rate'"):
        load_train_config(path)
    path.write_text("template = 'alpaca'\n")
    with pytest.raises(RecipeError, match="field 'template'"):
        load_train_config(path)


@pytest.mark.parametrize("fmt", ["hf", "parquet"])
def test_exported_datasets_train_with_their_test_split_held_out(tiny, tmp_path, fmt):
    from ultrachat.data.formats import export_corpus
    from ultrachat.train.sft import load_dialogues

    _, corpus = tiny
    export_corpus(corpus, fmt, tmp_path / fmt, test_fraction=0.25, progress=False)
    train_set, held_out = load_dialogues([str(tmp_path / fmt)])
    assert held_out is not None and len(held_out) > 0 and len(train_set) + len(held_out) == 24
    assert train_set.column_names == ["messages"] and train_set[0]["messages"][0]["role"] == "user"


def test_shipped_accelerate_configs_parse():
    from accelerate.commands.config.config_args import load_config_from_file
    from typer.testing import CliRunner

    from ultrachat.cli import app

    kinds = {}
    for name in ("zero3", "fsdp", "multi-gpu"):
        result = CliRunner().invoke(app, ["train-config", name])
        assert result.exit_code == 0, result.output
        cfg = load_config_from_file(result.output.strip())
        kinds[name] = (str(cfg.distributed_type), cfg.mixed_precision)
    assert kinds == {"zero3": ("DistributedType.DEEPSPEED", "bf16"), "fsdp": ("DistributedType.FSDP", "bf16"),
                     "multi-gpu": ("DistributedType.MULTI_GPU", "bf16")}
    bad = CliRunner().invoke(app, ["train-config", "zero4"])
    assert bad.exit_code == 2 and isinstance(bad.exception, SystemExit), bad.output  # a usage error, no traceback
    assert "zero4" in bad.output and "Traceback" not in bad.output
