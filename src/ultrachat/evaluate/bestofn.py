"""``ultrachat best-of-n``: sample N answers per prompt and keep the one a scorer prefers.

The scorer is a reward model (any Hugging Face sequence-classification model in a local
folder: the conversation goes in, one scalar comes out) or a score judge on any backend.
The first sample of each prompt is the N=1 answer, so the gain of best-of-N over N=1 is
measured on the same samples, judged by the same pairwise judge: against a reference
answer file when given (as the seed did on AlpacaEval, 80.64% -> 91.54% with best-of-16),
otherwise head to head (best-of-N vs N=1; 50% means no gain).

Example::

    report = best_of_n(load_eval_set(per_class=1), ModelConfig(), n=4, out=Path("bon"),
                       scorer=RewardModelScorer(Path("my-reward-model")))
    report["best_of_n"]["gain"]
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .. import aio
from ..backends import Backend, BackendPool, GenerationParams, Message
from ..core.callcache import CallCache, fingerprint, gather_limited
from ..core.corpus import write_json_atomic
from ..core.progress import RunProgress
from ..recipe import ModelConfig
from .answers import answer_item, default_generator, model_identity, to_model_output
from .evalset import EvalItem, align, generator_name, load_answers
from .judges import JudgeConfig, JudgeConfigError, default_judge, judge_once, load_judge
from .lc import length_control_info
from .pairwise import compare_async, judge_view, summarize


def conversation(item: EvalItem, outputs: list[str]) -> list[Message]:
    messages: list[Message] = []
    for turn, out in zip(item.turns, outputs, strict=True):
        messages += [{"role": "user", "content": turn}, {"role": "assistant", "content": out}]
    return messages


class Scorer(Protocol):
    """Scores N candidate answers to one prompt; higher is better, ``None`` = no score."""

    def identity(self) -> dict[str, Any]: ...

    async def score(self, item: EvalItem, candidates: list[list[str]]) -> list[float | None]: ...


ULTRARM_HEAD = "regression_head.weight"


class RewardModelError(ValueError):
    """A folder that is not a usable reward model; one line naming the folder."""


def ultrarm_text(messages: list[Message]) -> str:
    """UltraRM's format: ``Human: ...`` / ``Assistant: ...`` lines (as in its model card)."""
    role = {"user": "Human", "assistant": "Assistant"}
    return "\n".join(f"{role[m['role']]}: {m['content']}" for m in messages if m["role"] in role)


def reward_layout(path: Path) -> str:
    """``"ultrarm"`` (LlamaModel + ``regression_head``) or ``"sequence-classification"``; refuses other folders."""
    from ..train.delta import DeltaError, weight_index

    if not (path / "config.json").is_file():
        raise RewardModelError(f"reward model {path} is not a Hugging Face model folder (no config.json)")
    try:
        names = weight_index(path)
    except DeltaError as exc:
        raise RewardModelError(str(exc)) from None
    if ULTRARM_HEAD in names:
        return "ultrarm"
    archs = json.loads((path / "config.json").read_text(encoding="utf-8")).get("architectures") or []
    if not any(str(a).endswith("ForSequenceClassification") for a in archs):
        raise RewardModelError(f"reward model {path}: no trained reward head (no '{ULTRARM_HEAD}' and config.json "
                               f"architectures {archs} is not a sequence classifier)")
    return "sequence-classification"


class RewardModelScorer:
    """A local reward model: UltraRM's published layout or a Hugging Face sequence classifier.

    UltraRM (``regression_head.weight`` beside a ``LlamaModel``'s weights): the conversation is
    written ``Human: ... / Assistant: ...`` and the reward is the head's output at the last
    token. Otherwise the conversation is rendered with the tokenizer's chat template (plain
    ``User:`` / ``Assistant:`` lines when it has none) and the score is the single logit (the
    last one for a model with several labels). A checkpoint whose head is not in its weights
    (a base or chat model) is refused rather than scored by a randomly initialised head.
    """

    def __init__(self, path: Path, cache: CallCache | None = None, batch_size: int = 8,
                 max_length: int = 2048) -> None:
        self.layout = reward_layout(path)
        self.path = path
        self.cache = cache
        self.batch_size = batch_size
        self.max_length = max_length
        self._model: Any = None
        self._tok: Any = None
        self._lock = asyncio.Lock()

    def identity(self) -> dict[str, Any]:
        return {"reward_model": str(self.path.resolve())}

    def cache_identity(self) -> dict[str, Any]:
        # A model retrained into the same folder is another scorer: its files' sizes and times are part of it.
        files = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in self.path.glob("*") if p.is_file())
        return {**self.identity(), "files": files}

    def _load(self) -> None:
        if self._model is not None:
            return
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self._tok = AutoTokenizer.from_pretrained(self.path)
        if self._tok.pad_token is None:
            self._tok.pad_token = self._tok.unk_token or self._tok.eos_token
        self._tok.padding_side = "right"  # UltraRM reads the reward at the last attended position
        extra = {"num_labels": 1, "key_mapping": {r"^regression_head\.": "score."}} if self.layout == "ultrarm" else {}
        model, info = AutoModelForSequenceClassification.from_pretrained(
            self.path, dtype=torch.float32, output_loading_info=True, **extra)
        missing = sorted(info.get("missing_keys") or [])
        if missing:
            raise RewardModelError(f"reward model {self.path}: no trained reward head ('{missing[0]}' is not in its "
                                   "weights); refusing to score with a random head")
        self._model = model.eval()
        if self._model.config.pad_token_id is None:  # needed to find each row's last token
            self._model.config.pad_token_id = self._tok.pad_token_id

    def render(self, messages: list[Message]) -> str:
        if self.layout == "ultrarm":
            return ultrarm_text(messages)
        if getattr(self._tok, "chat_template", None):
            return str(self._tok.apply_chat_template(messages, tokenize=False))
        return "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages)

    def score_texts(self, texts: list[str]) -> list[float]:
        import torch

        self._load()
        out: list[float] = []
        for i in range(0, len(texts), self.batch_size):
            enc = self._tok(texts[i:i + self.batch_size], return_tensors="pt", padding=True, truncation=True,
                            max_length=self.max_length, add_special_tokens=self.layout == "ultrarm")
            with torch.inference_mode():
                if self.layout == "ultrarm":  # UltraRM's forward: the head at the last attended position
                    hidden = self._model.model(**enc).last_hidden_state
                    rewards = self._model.score(hidden).squeeze(-1)
                    ends = enc["attention_mask"].cumsum(dim=1).argmax(dim=1)
                    out += [float(x) for x in rewards[torch.arange(len(ends)), ends]]
                else:
                    out += [float(x) for x in self._model(**enc).logits[:, -1]]
        return out

    async def score(self, item: EvalItem, candidates: list[list[str]]) -> list[float | None]:
        key = fingerprint({"scorer": self.cache_identity(), "turns": item.turns, "candidates": candidates})
        hit = self.cache.get(key) if self.cache is not None else None
        if hit is not None:
            return list(hit["scores"])
        async with self._lock:  # one forward pass at a time; the batch holds all N candidates
            await asyncio.to_thread(self._load)
            texts = [self.render(conversation(item, c)) for c in candidates]
            scores = await asyncio.to_thread(self.score_texts, texts)
        if self.cache is not None:
            self.cache.put(key, {"scores": scores})
        return list(scores)


@dataclass
class JudgeScorer:
    """A score judge (``kind = "score"``) on a backend rates each candidate 1-10."""

    backend: Backend
    judge: JudgeConfig
    judge_id: dict[str, Any]
    cache: CallCache

    def identity(self) -> dict[str, Any]:
        # The judge's prompt texts, not its file's path: an edited judge file is another judge.
        texts = [self.judge.system, self.judge.template, self.judge.reference_template or ""]
        return {"judge_config": self.judge.source, "judge": self.judge.identity(),
                "judge_prompts": fingerprint(texts), **self.judge_id}

    async def score(self, item: EvalItem, candidates: list[list[str]]) -> list[float | None]:
        async def one(outputs: list[str]) -> float | None:
            rec = {"instruction": item.instruction, "output": outputs[-1], "turns": item.turns, "outputs": outputs}
            question, answer = judge_view(rec)
            got = await judge_once(self.backend, self.judge, self.judge.messages(question=question, answer=answer),
                                   self.cache, self.judge_id, 0)
            return None if got["verdict"] is None else float(got["verdict"])

        return list(await asyncio.gather(*(one(c) for c in candidates)))


def pick_best(scores: list[float | None]) -> int:
    """Index of the highest score (first on ties); unscored candidates rank last."""
    ranked = [(s if s is not None else float("-inf"), -i) for i, s in enumerate(scores)]
    return -max(ranked)[1]


@dataclass
class BestOfNSettings:
    """Knobs of a best-of-N run (the CLI flags of ``ultrachat best-of-n``)."""

    n: int = 4
    seed: int = 0
    concurrency: int = 16
    repeats: int = 1
    pair_judge: str | Path | None = None  # None: the shipped judge suited to judge_cfg
    score_judge: str | Path | None = None
    reward_model: Path | None = None
    reference: Path | None = None
    generator: str | None = None
    judge_cfg: ModelConfig = field(default_factory=ModelConfig)


async def _run(items: list[EvalItem], policy_cfg: ModelConfig, s: BestOfNSettings, out: Path,
               bars: RunProgress, pool: BackendPool, caches: dict[str, CallCache],
               reference: list[dict[str, Any]] | None) -> dict[str, Any]:
    policy = pool.get(policy_cfg)
    judge_backend = pool.get(s.judge_cfg)
    judge_id = model_identity(s.judge_cfg)
    pair_judge, scorer = _judges(s, judge_backend, judge_id, caches)
    await pool.start()
    by_item, scores = await _sample_and_score(items, policy, policy_cfg, s, bars, caches, scorer)
    gen = s.generator or default_generator(policy_cfg)
    names = {"n1": gen, "best": f"{gen}-best-of-{s.n}"}
    n1 = [to_model_output(it, ss[0], names["n1"]) for it, ss in zip(items, by_item, strict=True)]
    best_idx = [pick_best(sc) for sc in scores]
    best = [to_model_output(it, ss[b], names["best"]) for it, ss, b in zip(items, by_item, best_idx, strict=True)]
    write_json_atomic(out / "answers-n1.json", n1)
    write_json_atomic(out / f"answers-best-of-{s.n}.json", best)
    write_json_atomic(out / "candidates.json", [
        {"instruction": it.instruction, "class": it.cls, "scores": sc, "chosen": b,
         "candidates": [r["outputs"][-1] for r in ss]} for it, ss, sc, b in zip(items, by_item, scores, best_idx,
                                                                               strict=True)])

    if reference is not None:
        ref_src = str(s.reference)
        pairs = {names["n1"]: align(n1, reference, "N=1 answers", ref_src),
                 names["best"]: align(best, reference, f"best-of-{s.n} answers", ref_src)}
    else:
        pairs = {names["best"]: align(best, n1, f"best-of-{s.n} answers", "N=1 answers")}
    judged = await compare_async(pairs, judge_backend, pair_judge, caches["judgments"], judge_id, s.repeats,
                                 s.concurrency, bars)
    models = [{"model": name, **summarize(judged[name], s.repeats)} for name in pairs]
    rates = {m["model"]: m["overall"]["win_rate"] for m in models}
    if reference is not None:
        n1_rate, best_rate = rates[names["n1"]], rates[names["best"]]
        gain = None if n1_rate is None or best_rate is None else round(best_rate - n1_rate, 3)
    else:
        n1_rate, best_rate = 50.0, rates[names["best"]]
        gain = None if best_rate is None else round(best_rate - 50.0, 3)
    mean = _mean_scores(scores, best_idx)
    return {
        "kind": "pairwise", "metric": "win_rate", "repeats": s.repeats,
        "reference": generator_name(reference, Path(str(s.reference))) if reference is not None else names["n1"],
        "judge": {"config": pair_judge.source, **judge_id}, "length_control": length_control_info(None),
        "best_of_n": {"n": s.n, "scorer": scorer.identity(), "policy": model_identity(policy_cfg),
                      "prompts": len(items), "chosen_first_sample": sum(b == 0 for b in best_idx),
                      "win_rate_n1": n1_rate, "win_rate_best": best_rate, "gain": gain,
                      "compared": "vs reference" if reference is not None else "best-of-N vs N=1 head to head",
                      **mean},
        "models": models,
        "judgments": [{"model": name, **row} for name in pairs for row in judged[name]],
    }


def _judges(s: BestOfNSettings, judge_backend: Backend, judge_id: dict[str, Any],
            caches: dict[str, CallCache]) -> tuple[JudgeConfig, Scorer]:
    """The pairwise judge that compares, and the scorer that picks (a reward model or a score judge)."""
    pair_judge = load_judge(s.pair_judge or default_judge("pairwise", s.judge_cfg))
    if pair_judge.kind != "pairwise":
        raise JudgeConfigError(f"{pair_judge.source}: the comparison judge needs kind = \"pairwise\"")
    if s.reward_model is not None:
        return pair_judge, RewardModelScorer(s.reward_model, caches["scores"])
    score_judge = load_judge(s.score_judge or default_judge("score", s.judge_cfg))
    if score_judge.kind != "score":
        raise JudgeConfigError(f"{score_judge.source}: the scoring judge needs kind = \"score\"")
    return pair_judge, JudgeScorer(judge_backend, score_judge, judge_id, caches["scores"])


async def _sample_and_score(items: list[EvalItem], policy: Backend, policy_cfg: ModelConfig, s: BestOfNSettings,
                            bars: RunProgress, caches: dict[str, CallCache], scorer: Scorer
                            ) -> tuple[list[list[dict[str, Any]]], list[list[float | None]]]:
    """``s.n`` answers per item (seeds ``s.seed``, ``s.seed + 1``, ...) and the scorer's score of each."""
    base = GenerationParams(temperature=policy_cfg.temperature, top_p=policy_cfg.top_p,
                            max_tokens=policy_cfg.max_tokens)
    jobs = [(item, j) for item in items for j in range(s.n)]
    samples = await gather_limited(
        jobs, lambda job: answer_item(job[0], policy, policy_cfg, GenerationParams(
            **{**asdict(base), "seed": s.seed + job[1]}), caches["samples"]), s.concurrency, bars, "sampling")
    by_item = [samples[i * s.n:(i + 1) * s.n] for i in range(len(items))]

    async def score_item(i: int) -> list[float | None]:
        return await scorer.score(items[i], [r["outputs"] for r in by_item[i]])

    scores = await gather_limited(range(len(items)), score_item, max(1, s.concurrency // s.n), bars, "scoring")
    return by_item, scores


def _mean_scores(scores: list[list[float | None]], best_idx: list[int]) -> dict[str, float | None]:
    """Mean scorer score of the N=1 and the chosen answers (unscored ones left out)."""
    def mean(values: list[float | None]) -> float | None:
        got = [v for v in values if v is not None]
        return round(sum(got) / len(got), 4) if got else None

    return {"scorer_mean_n1": mean([sc[0] for sc in scores]),
            "scorer_mean_best": mean([sc[b] for sc, b in zip(scores, best_idx, strict=True)])}


def best_of_n(items: list[EvalItem], policy_cfg: ModelConfig, settings: BestOfNSettings, out: Path,
              progress: bool = False) -> dict[str, Any]:
    """Sample, score, choose, judge; writes answer files and caches under ``out``; returns the report."""
    if settings.n < 2:
        raise ValueError("--n must be at least 2 (N=1 is the baseline it is compared with)")
    if policy_cfg.temperature <= 0:
        raise ValueError("best-of-n needs a sampling temperature above 0, or all N samples are the same")
    reference = None
    if settings.reference:  # check coverage before sampling anything
        reference = load_answers(settings.reference)
        align([{"instruction": it.instruction, "turns": it.turns} for it in items], reference, "the eval set",
              str(settings.reference))
    out.mkdir(parents=True, exist_ok=True)
    caches = {name: CallCache(out / f"{name}.jsonl") for name in ("samples", "scores", "judgments")}

    async def run() -> dict[str, Any]:
        pool = BackendPool()
        try:
            with RunProgress(enabled=progress) as bars:
                return await _run(items, policy_cfg, settings, out, bars, pool, caches, reference)
        finally:
            await pool.close()

    try:
        return aio.run(run())
    finally:
        for cache in caches.values():
            cache.close()
