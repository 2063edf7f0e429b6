"""``ultrachat eval pairwise``: an LLM judge compares each model's answers with a reference's.

Every pair is judged in both orders (model as A, then model as B); the two verdicts must
agree for a win or a loss, a disagreement counts as a tie, and a pair with an unparseable
verdict is reported as unparseable and left out of the rates. ``repeats`` judges everything
K times (seeds 0..K-1) and reports the median and the spread.

Example::

    report = pairwise_eval([Path("mine.json")], Path("theirs.json"), load_judge("pairwise"),
                           ModelConfig(backend="local"), Path("eval-out"))
    report["models"][0]["overall"]["win_rate"]
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import aio
from ..backends import Backend, BackendPool
from ..core.callcache import CallCache, gather_limited
from ..core.progress import RunProgress
from ..recipe import ModelConfig
from .answers import model_identity
from .evalset import align, generator_name, load_answers, prompt_class
from .judges import JudgeConfig, JudgeConfigError, judge_once
from .lc import GamedBaselines, length_control_info, length_controlled_win_rate
from .verdict_stats import UNPARSEABLE, fold_repeats, pairwise_stats, preference

AS_A = {"A": "win", "B": "lose", "tie": "tie"}  # verdict -> model's outcome when the model is answer A
AS_B = {"A": "lose", "B": "win", "tie": "tie"}


def judge_view(rec: dict[str, Any]) -> tuple[str, str]:
    """(question, answer) as the judge sees them; multi-turn records show every turn."""
    turns, outputs = rec.get("turns"), rec.get("outputs")
    if turns and outputs and len(turns) > 1:
        question = "\n\n".join(f"[Turn {i}] {t}" for i, t in enumerate(turns, 1))
        return question, "\n\n".join(f"[Turn {i}] {o}" for i, o in enumerate(outputs, 1))
    return rec["instruction"], rec["output"]


def combine(model_first: str | None, model_second: str | None) -> str:
    """The model's outcome from both orders: agreement stands, disagreement is a tie."""
    if model_first is None or model_second is None:
        return UNPARSEABLE
    first, second = AS_A[model_first], AS_B[model_second]
    return first if first == second else "tie"


@dataclass
class AnswerSet:
    """One answer file, loaded and named."""

    path: Path
    records: list[dict[str, Any]]
    name: str

    @classmethod
    def load(cls, path: Path, questions: Path | None = None) -> AnswerSet:
        records = load_answers(path, questions)
        return cls(path, records, generator_name(records, path))


async def judge_pair(backend: Backend, judge: JudgeConfig, cache: CallCache, judge_id: dict[str, Any],
                     model_rec: dict[str, Any], ref_rec: dict[str, Any], repeat: int, index: int = 0) -> dict[str, Any]:
    """Both orders of one pair; returns the outcome, both verdicts and the length difference.

    ``index`` is the prompt's position in the model's answer file (AlpacaEval's instruction index).
    """
    question, mine = judge_view(model_rec)
    _, theirs = judge_view(ref_rec)
    first, second = await asyncio.gather(
        judge_once(backend, judge, judge.messages(question=question, answer_a=mine, answer_b=theirs), cache,
                   judge_id, repeat),
        judge_once(backend, judge, judge.messages(question=question, answer_a=theirs, answer_b=mine), cache,
                   judge_id, repeat),
    )
    return {"outcome": combine(first["verdict"], second["verdict"]), "model_as_a": first["verdict"],
            "model_as_b": second["verdict"], "len_diff": float(len(mine) - len(theirs)),
            "class": prompt_class(model_rec), "instruction": model_rec["instruction"], "repeat": repeat,
            "index": index}


def length_control(rows: list[dict[str, Any]], gamed: GamedBaselines | None = None) -> dict[str, Any]:
    """AlpacaEval's LC win rate with ``df_gamed.csv``, else its minimal GLM's length-adjusted win rate."""
    key = "lc_win_rate" if gamed is not None else "len_adj_win_rate"
    try:
        got = length_controlled_win_rate([preference(r["outcome"]) for r in rows], [r["len_diff"] for r in rows],
                                         [r["index"] for r in rows], gamed)
    except ImportError:  # scikit-learn comes with the data extra
        return {key: None, f"{key}_se": None}
    rate, se = got["win_rate"], got["standard_error"]
    return {key: None if rate is None else round(rate, 3), f"{key}_se": None if se is None else round(se, 3)}


def summarize(judged: list[dict[str, Any]], repeats: int, gamed: GamedBaselines | None = None) -> dict[str, Any]:
    """Overall and per-class figures, each folded over the repeats; the length control is overall only."""
    def stats_for(rows: list[dict[str, Any]], overall: bool = False) -> dict[str, Any]:
        runs = []
        for k in range(repeats):
            run = [r for r in rows if r["repeat"] == k]
            runs.append({**pairwise_stats([r["outcome"] for r in run]),
                         **(length_control(run, gamed) if overall else {})})
        folded = fold_repeats(runs, "win_rate")
        if repeats > 1:
            folded["runs"] = [r["win_rate"] for r in runs]
        return folded

    classes = sorted({r["class"] for r in judged})
    return {"overall": stats_for(judged, overall=True),
            "per_class": {c: stats_for([r for r in judged if r["class"] == c]) for c in classes}}


async def compare_async(pairs: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]], backend: Backend,
                        judge: JudgeConfig, cache: CallCache, judge_id: dict[str, Any], repeats: int = 1,
                        concurrency: int = 16, bars: RunProgress | None = None) -> dict[str, list[dict[str, Any]]]:
    """Judge every (model, reference) pair of every named model, ``repeats`` times."""
    jobs = [(name, i, m, r, k) for name, rows in pairs.items() for i, (m, r) in enumerate(rows)
            for k in range(repeats)]

    async def run(job: tuple[str, int, dict[str, Any], dict[str, Any], int]) -> dict[str, Any]:
        name, i, m, r, k = job
        return {"model": name, **await judge_pair(backend, judge, cache, judge_id, m, r, k, i)}

    rows = await gather_limited(jobs, run, concurrency, bars, "judging")
    return {name: [row for row in rows if row["model"] == name] for name in pairs}


def with_judge_backend(judge_cfg: ModelConfig, cache_path: Path, progress: bool,
                       body: Callable[[Backend, CallCache, RunProgress], Any]) -> Any:
    """Run ``await body(backend, cache, bars)`` with the judge backend started and everything closed after."""
    cache = CallCache(cache_path)

    async def run() -> Any:
        pool = BackendPool()
        backend = pool.get(judge_cfg)
        try:
            await pool.start()
            with RunProgress(enabled=progress) as bars:
                return await body(backend, cache, bars)
        finally:
            await pool.close()

    try:
        return aio.run(run())
    finally:
        cache.close()


def pairwise_eval(model_paths: list[Path], reference_path: Path, judge: JudgeConfig, judge_cfg: ModelConfig,
                  out: Path, repeats: int = 1, concurrency: int = 16, progress: bool = False,
                  lc_gamed: Path | None = None, questions: Path | None = None) -> dict[str, Any]:
    """Judge each model's answers against the reference's; writes ``out/judgments.jsonl`` and returns the report.

    ``lc_gamed``: AlpacaEval's ``df_gamed.csv``, for the LC win rate (answers in AlpacaEval's order).
    ``questions``: the questions FastChat answer files answer (default: FastChat's ``../question.jsonl``).
    """
    if judge.kind != "pairwise":
        raise JudgeConfigError(f"{judge.source}: a pairwise evaluation needs a judge with kind = \"pairwise\"")
    gamed = GamedBaselines.load(lc_gamed) if lc_gamed is not None else None
    reference = AnswerSet.load(reference_path, questions)
    models = [AnswerSet.load(p, questions) for p in model_paths]
    pairs = {m.name: align(m.records, reference.records, str(m.path), str(reference.path)) for m in models}
    if len(pairs) != len(models):
        raise ValueError("two answer files have the same generator name; rename one's 'generator' field")
    judge_id = model_identity(judge_cfg)
    out.mkdir(parents=True, exist_ok=True)
    judged = with_judge_backend(judge_cfg, out / "judgments.jsonl", progress,
                                lambda b, c, bars: compare_async(pairs, b, judge, c, judge_id, repeats, concurrency,
                                                                 bars))
    return {
        "kind": "pairwise", "metric": "win_rate", "reference": reference.name, "repeats": repeats,
        "judge": {"config": judge.source, **judge_id}, "length_control": length_control_info(gamed),
        "models": [{"model": m.name, "source": str(m.path), **summarize(judged[m.name], repeats, gamed)}
                   for m in models],
        "judgments": [row for m in models for row in judged[m.name]],
    }
