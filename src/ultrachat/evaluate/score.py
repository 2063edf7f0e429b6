"""``ultrachat eval score``: a judge grades each answer 1-10, as in the paper's independent scoring.

For classes the judge config lists in ``reference_classes`` (math and reasoning by default),
an answer is graded against a reference answer when one is known: from the eval set (it is
carried into the answer file's ``reference`` field) or from ``references``, another answer
file (for example a strong model's answers) matched prompt by prompt.

Example::

    report = score_eval([Path("mine.json")], load_judge("score"), ModelConfig(backend="local"), Path("out"))
    report["models"][0]["overall"]["mean"], report["models"][0]["per_class"]
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from ..backends import Backend
from ..core.callcache import CallCache, gather_limited
from ..core.progress import RunProgress
from ..recipe import ModelConfig
from .answers import model_identity
from .evalset import align, load_answers, prompt_class
from .judges import JudgeConfig, JudgeConfigError, judge_once
from .pairwise import AnswerSet, judge_view, with_judge_backend
from .verdict_stats import score_stats


def reference_for(rec: dict[str, Any], judge: JudgeConfig, refs: dict[int, dict[str, Any]] | None,
                  index: int) -> str | None:
    """The reference answer this record is graded against, if its class calls for one."""
    reference = rec.get("reference") or (refs[index]["output"] if refs is not None else None)
    return reference if judge.uses_reference(prompt_class(rec), reference) else None


async def score_async(records: list[dict[str, Any]], backend: Backend, judge: JudgeConfig, cache: CallCache,
                      judge_id: dict[str, Any], refs: dict[int, dict[str, Any]] | None = None, concurrency: int = 16,
                      bars: RunProgress | None = None, stage: str = "scoring") -> list[dict[str, Any]]:
    """One judged score per record, in order: ``{"score", "class", "used_reference", "instruction"}``."""
    async def one(i: int) -> dict[str, Any]:
        rec = records[i]
        question, answer = judge_view(rec)
        reference = reference_for(rec, judge, refs, i)
        got = await judge_once(backend, judge, judge.messages(reference, question=question, answer=answer), cache,
                               judge_id, 0)
        return {"score": got["verdict"], "class": prompt_class(rec), "used_reference": reference is not None,
                "instruction": rec["instruction"]}

    return await gather_limited(range(len(records)), one, concurrency, bars, stage)


def summarize_scores(rows: list[dict[str, Any]]) -> dict[str, Any]:
    classes = sorted({r["class"] for r in rows})
    return {"overall": score_stats([r["score"] for r in rows]),
            "per_class": {c: score_stats([r["score"] for r in rows if r["class"] == c]) for c in classes}}


def score_eval(model_paths: list[Path], judge: JudgeConfig, judge_cfg: ModelConfig, out: Path,
               references: Path | None = None, concurrency: int = 16, progress: bool = False,
               questions: Path | None = None) -> dict[str, Any]:
    """Score every answer of every file; writes ``out/judgments.jsonl`` and returns the report."""
    if judge.kind != "score":
        raise JudgeConfigError(f"{judge.source}: scoring needs a judge with kind = \"score\"")
    models = [AnswerSet.load(p, questions) for p in model_paths]
    refs: dict[str, dict[int, dict[str, Any]] | None] = {}
    ref_records = load_answers(references, questions) if references else None
    for m in models:
        refs[m.name] = None if ref_records is None else dict(
            enumerate(r for _, r in align(m.records, ref_records, str(m.path), str(references))))
    judge_id = model_identity(judge_cfg)
    out.mkdir(parents=True, exist_ok=True)

    async def body(backend: Backend, cache: CallCache, bars: RunProgress) -> dict[str, list[dict[str, Any]]]:
        share = max(1, concurrency // len(models))  # all models at once, so their calls batch together
        rows = await asyncio.gather(*(score_async(m.records, backend, judge, cache, judge_id, refs[m.name], share,
                                                  bars) for m in models))
        return {m.name: r for m, r in zip(models, rows, strict=True)}

    scored = with_judge_backend(judge_cfg, out / "judgments.jsonl", progress, body)
    return {
        "kind": "score", "metric": "mean", "judge": {"config": judge.source, **judge_id},
        "references": str(references) if references else None,
        "models": [{"model": m.name, "source": str(m.path), **summarize_scores(scored[m.name])} for m in models],
        "judgments": [{"model": m.name, **row} for m in models for row in scored[m.name]],
    }
