"""``ultrachat answer``: a model's answers to an evaluation set, resumable and concurrent.

Each prompt's answer is cached (``<out>.cache.jsonl``) under a fingerprint of its turns, the
model and the sampling parameters, so a killed run resumes where it stopped; the output is
AlpacaEval ``model_outputs`` JSON (or, for an ``--out`` ending in ``.jsonl``, a FastChat
``model_answer`` file), written atomically at the end.

Example::

    items = load_eval_set("ultra_eval", per_class=2)
    summary = answer_eval_set(items, ModelConfig(backend="local"), Path("answers.json"))
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .. import aio
from ..backends import Backend, BackendPool, GenerationParams, Message
from ..core.callcache import CallCache, fingerprint, gather_limited
from ..core.corpus import write_json_atomic
from ..core.progress import RunProgress
from ..recipe import ModelConfig
from .evalset import EvalItem, to_fastchat


def model_identity(cfg: ModelConfig) -> dict[str, Any]:
    """The parts of a model config that change its outputs (never keys or headers)."""
    return {"backend": cfg.backend, "model": cfg.model, "base_url": cfg.base_url, "system": cfg.system}


def default_generator(cfg: ModelConfig) -> str:
    return Path(cfg.model).name if cfg.backend == "local" else cfg.model


def cache_path_for(out: Path) -> Path:
    """Beside the output; for a FastChat file not named ``*.jsonl``, the files FastChat reads as answers."""
    return out.with_name(out.name + ".cache") if is_fastchat_path(out) else out.with_name(out.stem + ".cache.jsonl")


def is_fastchat_path(out: Path) -> bool:
    """``.jsonl`` answers are FastChat ``model_answer`` files; ``.json`` ones AlpacaEval ``model_outputs``."""
    return out.suffix == ".jsonl"


async def answer_item(item: EvalItem, backend: Backend, cfg: ModelConfig, params: GenerationParams,
                      cache: CallCache) -> dict[str, Any]:
    """Answer every turn of ``item`` (each turn sees the model's earlier answers), cached."""
    key = fingerprint({"turns": item.turns, "model": model_identity(cfg), "params": asdict(params)})
    hit = cache.get(key)
    if hit is not None:
        return hit
    messages: list[Message] = [{"role": "system", "content": cfg.system}] if cfg.system else []
    outputs, finish, tokens = [], "stop", 0
    for turn in item.turns:
        messages.append({"role": "user", "content": turn})
        out = await backend.complete(list(messages), params)  # a snapshot: the list grows below
        outputs.append(out.text)
        messages.append({"role": "assistant", "content": out.text})
        tokens += out.usage.completion_tokens
        finish = out.finish_reason if out.finish_reason != "stop" else finish
    record = {"outputs": outputs, "finish_reason": finish, "completion_tokens": tokens}
    cache.put(key, record)
    return record


def to_model_output(item: EvalItem, result: dict[str, Any], generator: str) -> dict[str, Any]:
    """An AlpacaEval ``model_outputs`` record (extra fields are ignored by alpaca_eval)."""
    rec: dict[str, Any] = {"instruction": item.instruction, "output": result["outputs"][-1], "generator": generator,
                           "dataset": item.cls or item.dataset, "class": item.cls, "id": item.id,
                           "finish_reason": result["finish_reason"]}
    if len(item.turns) > 1:
        rec["turns"], rec["outputs"] = item.turns, result["outputs"]
    if item.reference:
        rec["reference"] = item.reference
    return rec


@dataclass
class AnswerSummary:
    out: Path
    answered: int
    from_cache: int
    truncated: int


async def answer_async(items: list[EvalItem], backend: Backend, cfg: ModelConfig, params: GenerationParams,
                       cache: CallCache, generator: str, concurrency: int = 16,
                       bars: RunProgress | None = None, stage: str = "answers") -> list[dict[str, Any]]:
    """AlpacaEval records for ``items``, in order."""
    results = await gather_limited(items, lambda it: answer_item(it, backend, cfg, params, cache),
                                   concurrency, bars, stage)
    return [to_model_output(it, r, generator) for it, r in zip(items, results, strict=True)]


def answer_eval_set(items: list[EvalItem], cfg: ModelConfig, out: Path, generator: str | None = None,
                    seed: int = 0, concurrency: int = 16, progress: bool = False) -> AnswerSummary:
    """Answer ``items`` with the model ``cfg`` and write AlpacaEval JSON to ``out``."""
    params = GenerationParams(temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_tokens, seed=seed)
    cache = CallCache(cache_path_for(out))

    async def run() -> list[dict[str, Any]]:
        pool = BackendPool()
        backend = pool.get(cfg)
        try:
            await pool.start()
            with RunProgress(enabled=progress) as bars:
                return await answer_async(items, backend, cfg, params, cache, generator or default_generator(cfg),
                                          concurrency, bars)
        finally:
            await pool.close()

    try:
        records = aio.run(run())
    finally:
        cache.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    if is_fastchat_path(out):
        lines = [{**rec, "tstamp": time.time()} for rec in to_fastchat(records, items)]
        tmp = out.with_name(out.name + ".tmp")  # renamed into place: readers never see half a file
        tmp.write_text("".join(json.dumps(rec, ensure_ascii=False) + "\n" for rec in lines), encoding="utf-8")
        os.replace(tmp, out)
    else:
        write_json_atomic(out, records)
    return AnswerSummary(out, len(records), cache.hits, sum(r["finish_reason"] == "length" for r in records))
