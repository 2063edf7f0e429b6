"""Delta weights: make/recover round trip bit for bit, sharded, with clear errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ultrachat.train.delta import MANIFEST, DeltaError, make_delta, parse_size, recover_delta


def _save(tensors: dict, folder: Path, config: dict, shards: int = 1) -> Path:
    """A model folder: config.json, a tokenizer-like side file, and 1..n safetensors shards."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "tokenizer_config.json").write_text("{}")
    names = sorted(tensors)
    if shards == 1:
        save_file({n: tensors[n] for n in names}, str(folder / "model.safetensors"), metadata={"format": "pt"})
        return folder
    weight_map = {}
    for i in range(shards):
        part = {n: tensors[n] for n in names[i::shards]}
        fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        save_file(part, str(folder / fname), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, fname))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return folder


def _load(folder: Path) -> dict:
    from safetensors.torch import load_file

    out = {}
    for f in folder.glob("*.safetensors"):
        out.update(load_file(str(f)))
    return out


@pytest.fixture
def pair(tmp_path):
    import torch

    g = torch.Generator().manual_seed(0)
    config = {"model_type": "llama", "architectures": ["LlamaForCausalLM"]}
    base = {"embed.weight": torch.randn(64, 16, generator=g), "layer.0.w": torch.randn(16, 16, generator=g),
            "layer.0.b": torch.randn(16, generator=g).to(torch.bfloat16), "layer.1.w": torch.randn(16, 32, generator=g),
            "steps": torch.tensor([3, 4], dtype=torch.int64)}
    tuned = {k: (v + 0.01 * torch.randn(v.shape, generator=g).to(v.dtype)) if v.is_floating_point() else v + 1
             for k, v in base.items()}
    return (_save(base, tmp_path / "base", config, shards=2), _save(tuned, tmp_path / "tuned", config, shards=3),
            base, tuned, config)


def test_recover_reproduces_the_tuned_model_bit_for_bit(pair, tmp_path):
    import torch

    base_dir, tuned_dir, _, tuned, _ = pair
    manifest = make_delta(base_dir, tuned_dir, tmp_path / "delta", shard_size=2000)
    assert all(t["exact"] for t in manifest["tensors"].values())
    assert len(list((tmp_path / "delta").glob("delta-*-of-*.safetensors"))) > 1  # streamed into several shards
    stored = _load(tmp_path / "delta")
    assert stored["layer.0.b"].dtype == torch.float32 and stored["layer.0.w"].dtype == torch.float64
    assert not torch.equal(stored["layer.0.w"].float(), tuned["layer.0.w"])  # a delta, not the weights
    assert recover_delta(base_dir, tmp_path / "delta", tmp_path / "rec") == len(tuned)
    recovered = _load(tmp_path / "rec")
    assert set(recovered) == set(tuned)
    for name, tensor in tuned.items():
        assert recovered[name].dtype == tensor.dtype and torch.equal(recovered[name], tensor), name
    assert (tmp_path / "rec" / "tokenizer_config.json").exists() and not (tmp_path / "rec" / MANIFEST).exists()


def test_real_model_folders_round_trip_and_load(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from ultrachat.testing.tiny_model import make_tiny_model

    base = make_tiny_model(tmp_path / "base", ["hello world"] * 10, vocab_size=300)
    model = AutoModelForCausalLM.from_pretrained(base)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    model.save_pretrained(tmp_path / "tuned")
    make_delta(base, tmp_path / "tuned", tmp_path / "delta")
    recover_delta(base, tmp_path / "delta", tmp_path / "rec")
    back = AutoModelForCausalLM.from_pretrained(tmp_path / "rec")
    for (name, a), b in zip(model.state_dict().items(), back.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_mismatches_are_named(pair, tmp_path):
    import torch

    base_dir, _, _, tuned, config = pair
    wrong_shape = {**tuned, "layer.1.w": torch.zeros(32, 16)}
    with pytest.raises(DeltaError, match=r"tensor 'layer.1.w': shape \(16, 32\) in base vs \(32, 16\) in tuned"):
        make_delta(base_dir, _save(wrong_shape, tmp_path / "t2", config), tmp_path / "d2")
    extra = {**tuned, "layer.2.w": torch.zeros(2)}
    with pytest.raises(DeltaError, match=r"'layer\.2\.w' is missing from the base model"):
        make_delta(base_dir, _save(extra, tmp_path / "t3", config), tmp_path / "d3")
    other = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}
    with pytest.raises(DeltaError, match="architectures differ"):
        make_delta(base_dir, _save(tuned, tmp_path / "t4", other), tmp_path / "d4")
    assert not list(tmp_path.glob("d[234]*"))  # nothing half-written is left behind


def test_recovery_checks_the_base_and_the_delta(pair, tmp_path):
    from safetensors.torch import load_file, save_file

    base_dir, tuned_dir, base, _, config = pair
    make_delta(base_dir, tuned_dir, tmp_path / "delta")
    other_base = {**base, "layer.0.w": base["layer.0.w"] + 1}
    with pytest.raises(DeltaError, match=r"'layer\.0\.w': the base model differs"):
        recover_delta(_save(other_base, tmp_path / "b2", config), tmp_path / "delta", tmp_path / "r1")
    damaged = tmp_path / "damaged"
    shutil.copytree(tmp_path / "delta", damaged)
    shard = next(damaged.glob("delta*.safetensors"))
    tensors = load_file(str(shard))
    tensors["embed.weight"] = tensors["embed.weight"] + 1e-3
    save_file(tensors, str(shard))
    with pytest.raises(DeltaError, match=r"'embed\.weight': recovered checksum mismatch"):
        recover_delta(base_dir, damaged, tmp_path / "r2")
    assert not (tmp_path / "r2").exists()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "README.md").write_text("x")
    with pytest.raises(DeltaError, match="not a delta"):
        recover_delta(base_dir, tmp_path / "notes", tmp_path / "r3")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    with pytest.raises(DeltaError, match="not empty"):
        recover_delta(base_dir, tmp_path / "delta", tmp_path / "busy")


def _published_pair(tmp_path: Path, shards: int = 2) -> tuple[Path, Path, Path]:
    """A base without a pad token, a tuned model with "<PAD>" added, and the delta as UltraLM published it:
    a model folder of tuned - (base with the pad row) in float32, PyTorch .bin shards, the tuned tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ultrachat.testing.tiny_model import make_tiny_model

    base = make_tiny_model(tmp_path / "base", ["hello world, how are you"] * 10, vocab_size=300)
    tok = AutoTokenizer.from_pretrained(base)
    tok.pad_token = None
    tok.save_pretrained(base)
    for side in ("special_tokens_map.json", "tokenizer_config.json"):  # no pad anywhere in the base's files
        path = base / side
        if path.exists():
            data = json.loads(path.read_text())
            data.pop("pad_token", None)
            path.write_text(json.dumps(data))
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    model.config.tie_word_embeddings = False  # LLaMA's output matrix is its own
    model.lm_head.weight = torch.nn.Parameter(torch.randn_like(model.lm_head.weight))
    model.save_pretrained(base)
    raw = {k: v.clone() for k, v in model.state_dict().items()}
    tok.add_special_tokens({"pad_token": "<PAD>"})
    tuned, with_pad = dict(raw), dict(raw)
    for key in ("model.embed_tokens.weight", "lm_head.weight"):
        m = raw[key]
        tuned[key] = torch.cat([m, torch.randn(1, m.shape[1])])
        with_pad[key] = torch.cat([m, m.mean(0, keepdim=True)])
    g = torch.Generator().manual_seed(2)
    tuned = {k: v + 0.05 * torch.randn(v.shape, generator=g) for k, v in tuned.items()}
    delta_dir = tmp_path / "delta"
    delta_dir.mkdir()
    names = sorted(tuned)
    weight_map = {}
    for i in range(shards):
        fname = f"pytorch_model-{i + 1:05d}-of-{shards:05d}.bin"
        torch.save({n: tuned[n] - with_pad[n] for n in names[i::shards]}, delta_dir / fname)
        weight_map.update(dict.fromkeys(names[i::shards], fname))
    (delta_dir / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    config = json.loads((base / "config.json").read_text())
    (delta_dir / "config.json").write_text(json.dumps({**config, "vocab_size": len(tok)}))
    tok.save_pretrained(delta_dir)
    torch.save(tuned, tmp_path / "tuned.pt")
    return base, delta_dir, tmp_path / "tuned.pt"


def _reference_recover(base: Path, delta: Path) -> dict:
    """The published recovery, step by step with transformers: pad row = mean row, then base + delta."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(base)
    assert tok.pad_token is None and AutoTokenizer.from_pretrained(delta).pad_token == "<PAD>"
    added = tok.add_special_tokens({"pad_token": "<PAD>"})
    model.resize_token_embeddings(len(tok))
    for emb in (model.get_input_embeddings().weight.data, model.get_output_embeddings().weight.data):
        emb[-added:] = emb[:-added].mean(dim=0, keepdim=True)
    state = model.state_dict()
    delta_state = {}
    for f in delta.glob("*.bin"):
        delta_state.update(torch.load(f, weights_only=True))
    return {k: state[k] + delta_state[k] for k in delta_state}


def test_recover_published_ultralm_delta(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base, delta, tuned_pt = _published_pair(tmp_path)
    n = recover_delta(base, delta, tmp_path / "rec")
    rec = _load(tmp_path / "rec")
    tuned = torch.load(tuned_pt, weights_only=True)
    expected = _reference_recover(base, delta)
    assert n == len(expected) == len(rec)
    for name, tensor in expected.items():
        assert rec[name].dtype == torch.float32 and torch.equal(rec[name], tensor), name
        assert torch.allclose(rec[name], tuned[name], atol=1e-6), name  # the tuned model is back
    assert rec["model.embed_tokens.weight"].shape[0] == len(AutoTokenizer.from_pretrained(tmp_path / "rec"))
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "rec")  # loads as a model
    assert model.get_input_embeddings().weight.shape[0] == rec["model.embed_tokens.weight"].shape[0]


def test_published_delta_names_and_shapes_are_checked(tmp_path):
    import torch

    base, delta, _ = _published_pair(tmp_path, shards=1)
    shard = delta / "pytorch_model-00001-of-00001.bin"
    state = torch.load(shard, weights_only=True)
    state["model.layers.9.mlp.up_proj.weight"] = state.pop("model.layers.1.mlp.up_proj.weight")
    torch.save(state, shard)
    index = json.loads((delta / "pytorch_model.bin.index.json").read_text())
    index["weight_map"] = dict.fromkeys(state, shard.name)
    (delta / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    with pytest.raises(DeltaError, match=r"tensor 'model.layers.9.mlp.up_proj.weight' is missing from the base"):
        recover_delta(base, delta, tmp_path / "r1")
    state["model.layers.1.mlp.up_proj.weight"] = state.pop("model.layers.9.mlp.up_proj.weight")[:, :3]
    torch.save(state, shard)
    index["weight_map"] = dict.fromkeys(state, shard.name)
    (delta / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    with pytest.raises(DeltaError, match=r"tensor 'model.layers.1.mlp.up_proj.weight': shape \(128, 64\) in base"):
        recover_delta(base, delta, tmp_path / "r2")
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()


def test_parse_size():
    assert parse_size("2GB") == 2 * 10**9
    assert parse_size("512MiB") == 512 * 2**20
    assert parse_size(1000) == 1000
    with pytest.raises(DeltaError, match="not a size"):
        parse_size("big")
