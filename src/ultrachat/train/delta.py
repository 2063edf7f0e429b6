"""Delta weights: ``delta = tuned - base`` and ``recovered = base + delta``, tensor by tensor.

Both directions stream: tensors are read one at a time with ``safe_open`` and written out
in shards of at most ``shard_size`` bytes, so a 13B model never needs two copies in memory.

Exactness: the delta of a 16-bit tensor is stored in float32 and that of a float32 tensor in
float64, where the difference of two values is exact (barring extreme exponent gaps), so
``base + delta`` rounds back to the tuned tensor bit for bit. The manifest records, per tensor,
the shape, dtypes, the SHA-256 of the base tensor it was made against and of the tensor that
recovery must produce; recovery checks both, so a wrong base or a damaged delta is named.

Example::

    make_delta("llama-13b", "ultralm-13b", "ultralm-13b-delta")
    recover_delta("llama-13b", "ultralm-13b-delta", "ultralm-13b-recovered")

The published UltraLM delta (a Hugging Face model folder holding ``tuned - base`` in float32,
made by the UltraChat repository's ``weight_diff.py``) is recovered the way that script does
it: when the delta's tokenizer has a pad token and the base's has none, the base's embedding
and output matrices get one more row each, the mean of their rows; then every tensor is
``base + delta`` in float32, after checking that both have the same tensor names and shapes.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..core.corpus import write_json_atomic
from ..core.hashing import hexdigest

MANIFEST = "delta-manifest.json"
FORMAT = "ultrachat-delta/1"
_WEIGHTS = re.compile(r".*\.(safetensors|bin|pt|pth|ckpt)$|.*\.(safetensors|bin)\.index\.json$")
# buffers that old checkpoints saved and transformers recomputes (the published script never adds them)
_BUFFERS = re.compile(r".*rotary_emb\.inv_freq$")
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KIB": 2**10, "MIB": 2**20,
          "GIB": 2**30, "TIB": 2**40}


class DeltaError(ValueError):
    """Mismatched models, a wrong base or a damaged delta; the message names the tensor."""


def parse_size(text: str | int) -> int:
    """``"2GB"`` -> 2_000_000_000; ``"512MiB"`` -> 536870912; plain integers are bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?I?B?)\s*", str(text).upper())
    if not m or m.group(2) not in _UNITS:
        raise DeltaError(f"shard size '{text}' is not a size like 2GB or 500MiB")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def tensor_sha256(tensor: Any) -> str:
    """SHA-256 of a tensor's raw bytes (any dtype, bfloat16 included)."""
    import torch

    return hexdigest(tensor.contiguous().reshape(-1).view(torch.uint8).numpy())


def _wide(dtype: Any) -> Any:
    """The dtype a delta of ``dtype`` is stored in (``None``: not a float tensor, stored as is)."""
    import torch

    if dtype in (torch.float16, torch.bfloat16):
        return torch.float32
    if dtype in (torch.float32, torch.float64):
        return torch.float64
    return None


def weight_index(model_dir: Path, prefix: str = "model") -> dict[str, Path]:
    """Tensor name -> weight file of a model (or delta) folder: safetensors, else PyTorch ``.bin`` shards."""
    index = model_dir / f"{prefix}.safetensors.index.json"
    if index.exists():
        return _index_json(index)
    files = sorted(model_dir.glob(f"{prefix}*.safetensors"))
    if not files and prefix == "model":  # save_pretrained's PyTorch layout (the published UltraLM / UltraRM)
        if (model_dir / "pytorch_model.bin.index.json").exists():
            return _index_json(model_dir / "pytorch_model.bin.index.json")
        files = sorted(model_dir.glob("pytorch_model*.bin"))
    if not files:
        raise DeltaError(f"{model_dir}: no {prefix}*.safetensors or pytorch_model*.bin weights "
                         "(save the model with save_pretrained)")
    out: dict[str, Path] = {}
    for f in files:
        out.update(dict.fromkeys(_open_weights(f).keys(), f))
    return out


def _index_json(index: Path) -> dict[str, Path]:
    weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
    return {name: index.parent / shard for name, shard in weight_map.items()}


def _open_weights(path: Path) -> Any:
    """A mapping of a weight file's tensors, read lazily (safetensors handle or memory-mapped ``.bin``)."""
    if path.suffix == ".bin":
        import torch

        try:
            return torch.load(str(path), map_location="cpu", mmap=True, weights_only=True)
        except Exception as exc:  # a damaged or non-tensor pickle: one line, the file named
            raise DeltaError(f"{path}: not a PyTorch weight file ({type(exc).__name__})") from None
    from safetensors import safe_open

    return _SafeTensors(safe_open(str(path), framework="pt"))


class _SafeTensors:
    """A safetensors file behind the same ``keys()`` / ``[name]`` interface as a ``.bin`` state dict."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    def keys(self) -> list[str]:
        return list(self.handle.keys())

    def __getitem__(self, name: str) -> Any:
        return self.handle.get_tensor(name)


def _architecture(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "config.json"
    if not path.exists():
        raise DeltaError(f"{model_dir}: no config.json (not a Hugging Face model folder)")
    cfg = json.loads(path.read_text(encoding="utf-8"))
    return {"model_type": cfg.get("model_type"), "architectures": cfg.get("architectures")}


class _Reader:
    """Open weight files lazily and keep them open: tensors are read one at a time."""

    def __init__(self, index: dict[str, Path]) -> None:
        self.index = index
        self._open: dict[Path, Any] = {}

    def get(self, name: str) -> Any:
        shard = self.index[name]
        if shard not in self._open:
            self._open[shard] = _open_weights(shard)
        return self._open[shard][name]

    def names_by_shard(self) -> Iterator[str]:
        """Names in shard order, so each shard is read from start to end once."""
        yield from sorted(self.index, key=lambda n: (str(self.index[n]), n))

    def close(self) -> None:
        self._open.clear()


class _ShardWriter:
    """Buffer tensors up to ``max_bytes``, then write a shard; ``finish`` names them HF-style."""

    def __init__(self, folder: Path, prefix: str, max_bytes: int) -> None:
        self.folder, self.prefix, self.max_bytes = folder, prefix, max_bytes
        self.buffer: dict[str, Any] = {}
        self.size = 0
        self.shards: list[tuple[Path, list[str]]] = []
        self.total = 0

    def add(self, name: str, tensor: Any) -> None:
        nbytes = tensor.numel() * tensor.element_size()
        if self.buffer and self.size + nbytes > self.max_bytes:
            self._flush()
        self.buffer[name] = tensor.contiguous()
        self.size += nbytes
        self.total += nbytes

    def _flush(self) -> None:
        from safetensors.torch import save_file

        path = self.folder / f"{self.prefix}-part{len(self.shards) + 1:05d}.safetensors"
        save_file(self.buffer, str(path), metadata={"format": "pt"})
        self.shards.append((path, list(self.buffer)))
        self.buffer, self.size = {}, 0

    def finish(self) -> None:
        if self.buffer or not self.shards:
            self._flush()
        n = len(self.shards)
        if n == 1:
            self.shards[0][0].rename(self.folder / f"{self.prefix}.safetensors")
            return
        weight_map = {}
        for i, (path, names) in enumerate(self.shards, 1):
            final = f"{self.prefix}-{i:05d}-of-{n:05d}.safetensors"
            path.rename(self.folder / final)
            weight_map.update(dict.fromkeys(names, final))
        write_json_atomic(self.folder / f"{self.prefix}.safetensors.index.json",
                          {"metadata": {"total_size": self.total}, "weight_map": weight_map})


@contextlib.contextmanager
def _staged(out: Path) -> Iterator[Path]:
    """A fresh ``OUT.partial`` folder, renamed to ``OUT`` on success and removed on failure."""
    if out.exists() and any(out.iterdir()):
        raise DeltaError(f"{out} already exists and is not empty")
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        out.rmdir()  # empty, checked above
    tmp.rename(out)


def _copy_side_files(src: Path, dst: Path, skip: set[str]) -> None:
    """Config, tokenizer, template and training record: everything but weights and run folders."""
    for f in src.iterdir():
        if f.is_file() and not _WEIGHTS.match(f.name) and f.name not in skip and f.name != "training_args.bin":
            shutil.copy2(f, dst / f.name)


def _progress(total: int, label: str, enabled: bool) -> Any:
    from ..core.progress import make_progress

    bar = make_progress(enabled, transient=True)
    return bar, bar.add_task(label, total=total)


def make_delta(base: str | Path, tuned: str | Path, out: str | Path, shard_size: str | int = "2GB",
               progress: bool = False) -> dict[str, Any]:
    """Write ``tuned - base`` to ``out`` with its manifest; returns the manifest."""
    base, tuned, out = Path(base), Path(tuned), Path(out)
    arch_b, arch_t = _architecture(base), _architecture(tuned)
    if arch_b != arch_t:
        raise DeltaError(f"architectures differ: base {base} is {arch_b}, tuned {tuned} is {arch_t}")
    base_r, tuned_r = _Reader(weight_index(base)), _Reader(weight_index(tuned))
    missing = sorted(set(tuned_r.index) - set(base_r.index))
    extra = sorted(set(base_r.index) - set(tuned_r.index))
    if missing or extra:
        name, where = (missing[0], "base") if missing else (extra[0], "tuned")
        raise DeltaError(f"tensor '{name}' is missing from the {where} model "
                         f"({len(missing) + len(extra)} names differ): the architectures differ")
    tensors: dict[str, Any] = {}
    bar, task = _progress(len(tuned_r.index), "delta make", progress)
    with _staged(out) as tmp, bar:
        writer = _ShardWriter(tmp, "delta", parse_size(shard_size))
        try:
            for name in tuned_r.names_by_shard():
                t, b = tuned_r.get(name), base_r.get(name)
                if t.shape != b.shape:
                    raise DeltaError(f"tensor '{name}': shape {tuple(b.shape)} in base vs {tuple(t.shape)} in tuned")
                wide = _wide(t.dtype)
                if wide is None:  # integer buffers: stored as they are
                    delta, result = t, t
                else:
                    delta = t.to(wide) - b.to(wide)
                    result = (b.to(wide) + delta).to(t.dtype)
                writer.add(name, delta)
                tensors[name] = {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch."),
                                 "op": "copy" if wide is None else "add", "base_sha256": tensor_sha256(b),
                                 "sha256": tensor_sha256(result), "exact": bool((result == t).all())}
                bar.advance(task)
        finally:
            base_r.close()
            tuned_r.close()
        writer.finish()
        _copy_side_files(tuned, tmp, set())
        manifest = {"format": FORMAT, "architecture": arch_t, "tensors": tensors}
        write_json_atomic(tmp / MANIFEST, manifest)
    return manifest


def recover_delta(base: str | Path, delta: str | Path, out: str | Path, shard_size: str | int = "2GB",
                  progress: bool = False) -> int:
    """Write ``base + delta`` to ``out``, verifying every checksum; returns the tensor count."""
    base, delta, out = Path(base), Path(delta), Path(out)
    manifest = _delta_manifest(base, delta)
    if manifest is None:
        return recover_published_delta(base, delta, out, shard_size, progress)
    base_r, delta_r = _Reader(weight_index(base)), _Reader(weight_index(delta, "delta"))
    entries: dict[str, Any] = manifest["tensors"]
    for name in entries:
        if name not in base_r.index:
            raise DeltaError(f"tensor '{name}' is missing from the base model {base}: the architectures differ")
        if name not in delta_r.index:
            raise DeltaError(f"tensor '{name}' is missing from the delta {delta}: the delta is incomplete")
    bar, task = _progress(len(entries), "delta recover", progress)
    with _staged(out) as tmp, bar:
        writer = _ShardWriter(tmp, "model", parse_size(shard_size))
        try:
            for name in delta_r.names_by_shard():
                writer.add(name, _recovered(name, entries[name], base_r.get(name), delta_r.get(name)))
                bar.advance(task)
        finally:
            base_r.close()
            delta_r.close()
        writer.finish()
        _copy_side_files(delta, tmp, {MANIFEST})
    return len(entries)


def _delta_manifest(base: Path, delta: Path) -> dict[str, Any] | None:
    """The manifest of an ``ultrachat delta make`` delta made for ``base``'s architecture;
    ``None`` for a published delta (a model folder)."""
    try:
        manifest: dict[str, Any] = json.loads((delta / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        if (delta / "config.json").exists():
            return None
        raise DeltaError(f"{delta}: not a delta: no {MANIFEST} (`ultrachat delta make`) and no config.json "
                         "(a published delta such as UltraLM's)") from None
    if manifest.get("format") != FORMAT:
        raise DeltaError(f"{delta}/{MANIFEST}: unknown format {manifest.get('format')!r}")
    arch = _architecture(base)
    if arch != manifest["architecture"]:
        raise DeltaError(f"architectures differ: base {base} is {arch}, the delta was made for "
                         f"{manifest['architecture']}")
    return manifest


def _recovered(name: str, entry: dict[str, Any], b: Any, d: Any) -> Any:
    """Tensor ``name`` of the tuned model from its base ``b`` and delta ``d``, every checksum verified."""
    import torch

    if list(b.shape) != entry["shape"]:
        raise DeltaError(f"tensor '{name}': shape {tuple(b.shape)} in base vs {tuple(entry['shape'])} "
                         "in the delta")
    if tensor_sha256(b) != entry["base_sha256"]:
        raise DeltaError(f"tensor '{name}': the base model differs from the one the delta was made "
                         "against (checksum mismatch)")
    dtype = getattr(torch, entry["dtype"])
    result = d if entry["op"] == "copy" else (b.to(d.dtype) + d).to(dtype)
    if tensor_sha256(result) != entry["sha256"]:
        raise DeltaError(f"tensor '{name}': recovered checksum mismatch (the delta is damaged)")
    return result


def _has_pad(folder: Path) -> bool:
    """Whether a model folder's tokenizer defines a pad token (from its JSON side files)."""
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        path = folder / name
        if path.exists() and json.loads(path.read_text(encoding="utf-8")).get("pad_token"):
            return True
    return False


def _resized(name: str, b: Any, d: Any, pad_added: bool) -> Any:
    """The base tensor, float32, with the pad token's rows (the mean row) when the delta has them."""
    import torch

    b = b.to(torch.float32) if b.is_floating_point() else b
    if b.shape == d.shape:
        return b
    grows = b.dim() == 2 and d.dim() == 2 and b.shape[1] == d.shape[1] and d.shape[0] > b.shape[0]
    if not (grows and pad_added):
        raise DeltaError(f"tensor '{name}': shape {tuple(b.shape)} in base vs {tuple(d.shape)} in the delta")
    extra = d.shape[0] - b.shape[0]
    return torch.cat([b, b.mean(dim=0, keepdim=True).expand(extra, -1)])


def recover_published_delta(base: str | Path, delta: str | Path, out: str | Path, shard_size: str | int = "2GB",
                            progress: bool = False) -> int:
    """``base + delta`` for a delta published as a model folder (UltraLM's ``weight_diff.py`` format).

    Float32 throughout, as that script loads both models; written as safetensors shards with the
    delta's config and tokenizer. Returns the tensor count.
    """
    import torch

    base, delta, out = Path(base), Path(delta), Path(out)
    base_r, delta_r = _Reader(weight_index(base)), _Reader(weight_index(delta))
    names = {n for n in delta_r.index if not _BUFFERS.match(n)}
    base_names = {n for n in base_r.index if not _BUFFERS.match(n)}
    if names != base_names:
        missing = sorted(names - base_names)
        name, where = (missing[0], "base model") if missing else (sorted(base_names - names)[0], "delta")
        raise DeltaError(f"tensor '{name}' is missing from the {where} "
                         f"({len(names ^ base_names)} names differ): the architectures differ")
    pad_added = _has_pad(delta) and not _has_pad(base)
    bar, task = _progress(len(names), "delta recover", progress)
    with _staged(out) as tmp, bar:
        writer = _ShardWriter(tmp, "model", parse_size(shard_size))
        try:
            for name in (n for n in delta_r.names_by_shard() if n in names):
                d = delta_r.get(name)
                d = d.to(torch.float32) if d.is_floating_point() else d
                writer.add(name, _resized(name, base_r.get(name), d, pad_added) + d)
                bar.advance(task)
        finally:
            base_r.close()
            delta_r.close()
        writer.finish()
        _copy_side_files(delta, tmp, set())
    return len(names)
