"""Token and cost accounting per stage and model, for the live display and ``report.json``.

Every backend a run uses is wrapped in a :class:`MeteredBackend` naming its stage
(``plan``, ``user``, ``assistant``); each call adds its calls, tokens and cost to a
:class:`Ledger` line keyed by ``(stage, model)``. Calls replayed from the response cache
are counted apart and cost nothing. Prices come from an editable TOML table
(``ultrachat/backends/prices.toml``, or the file named by ``ULTRACHAT_PRICES``).

Example::

    ledger = Ledger(Prices.load())
    backend = ledger.meter(FakeBackend(), "assistant", ModelConfig(backend="fake"))
    await backend.complete([{"role": "user", "content": "Hi"}], GenerationParams())
    print(ledger.to_json()["total"])
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ..backends.base import Backend, Completion, GenerationParams, Message, Usage
from ..backends.response_cache import CachedCompletion
from ..core.config import parse_toml, read_toml
from ..recipe import ModelConfig

PRICES_ENV = "ULTRACHAT_PRICES"


@dataclass(frozen=True)
class Price:
    """USD per 1M tokens (``None`` = unknown) and speeds for time estimates."""

    input: float | None = None
    output: float | None = None
    latency_s: float = 0.5
    tokens_per_s: float = 50.0
    aggregate_tokens_per_s: float = 0.0  # 0 = no engine-wide cap (remote endpoints)

    def cost(self, usage: Usage, discount: float = 1.0) -> float | None:
        if self.input is None or self.output is None:
            return None
        return (usage.prompt_tokens * self.input + usage.completion_tokens * self.output) * discount / 1e6


class Prices:
    """The price table: ``[models."pattern"]`` entries matched on ``backend:model``, then ``model``."""

    def __init__(self, table: dict[str, Any], source: str = "prices") -> None:
        self.source = source
        self.batch_discount = float(table.get("batch_discount", 0.5))
        self._entries: list[tuple[str, Price]] = []
        for pattern, fields in table.get("models", {}).items():
            try:
                self._entries.append((pattern, Price(**fields)))
            except TypeError as exc:
                raise ValueError(f"{source}: models.{pattern}: {exc}") from None

    @classmethod
    def load(cls, path: str | Path | None = None) -> Prices:
        """Read ``path``, else ``$ULTRACHAT_PRICES``, else the shipped table."""
        path = path or os.environ.get(PRICES_ENV)
        if path:
            return cls(read_toml(path, ValueError, missing="price table not found"), str(path))
        text = resources.files("ultrachat.backends").joinpath("prices.toml").read_text(encoding="utf-8")
        return cls(parse_toml(text, "prices.toml", ValueError), "prices.toml")

    def lookup(self, backend: str, model: str) -> Price:
        names = (f"{backend}:{model}", model)
        for name in names:
            for pattern, price in self._entries:
                if pattern == name:
                    return price
        for pattern, price in self._entries:
            if any(fnmatch.fnmatchcase(name, pattern) for name in names):
                return price
        return Price()


@dataclass
class LedgerLine:
    calls: int = 0
    cached_calls: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # tokens the cache hits would have cost
    cost_usd: float | None = 0.0  # None once any call had an unknown price

    def add_cost(self, cost: float | None) -> None:
        self.cost_usd = None if cost is None or self.cost_usd is None else self.cost_usd + cost

    def merge(self, other: LedgerLine) -> None:
        for name in ("calls", "cached_calls", "errors", "prompt_tokens", "completion_tokens", "cached_tokens"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.add_cost(other.cost_usd)


def model_label(cfg: ModelConfig) -> str:
    return f"{cfg.backend}:{cfg.model}"


class Ledger:
    """Per ``(stage, model)`` calls, tokens and cost of one run."""

    def __init__(self, prices: Prices | None = None, discount: float = 1.0) -> None:
        self.prices = prices or Prices.load()
        self.discount = discount
        self.lines: dict[tuple[str, str], LedgerLine] = {}
        self._backends: dict[str, Backend] = {}

    def meter(self, backend: Backend, stage: str, cfg: ModelConfig) -> MeteredBackend:
        self._backends[model_label(cfg)] = backend
        return MeteredBackend(backend, self, stage, cfg)

    def engine_reports(self) -> dict[str, Any]:
        """Backend-specific figures (the vLLM prefix cache hit rate) by model, if any."""
        out = {}
        for label, backend in self._backends.items():
            while not hasattr(backend, "report") and hasattr(backend, "inner"):
                backend = backend.inner  # through the response cache
            if hasattr(backend, "report"):
                out[label] = backend.report()
        return out

    def line(self, stage: str, cfg: ModelConfig) -> LedgerLine:
        return self.lines.setdefault((stage, model_label(cfg)), LedgerLine())

    def record(self, line: LedgerLine, price: Price, out: Completion, discount: float = 1.0) -> None:
        line.calls += 1
        if out.finish_reason == "error":
            line.errors += 1
        if isinstance(out, CachedCompletion):
            line.cached_calls += 1
            line.cached_tokens += out.usage.total_tokens
            return
        line.prompt_tokens += out.usage.prompt_tokens
        line.completion_tokens += out.usage.completion_tokens
        line.add_cost(price.cost(out.usage, self.discount * discount))

    def total(self) -> LedgerLine:
        out = LedgerLine()
        for line in self.lines.values():
            out.merge(line)
        return out

    def describe(self) -> str:
        """One short line for the live display: ``$0.0123, 12,345 tok, 40 cached``."""
        t = self.total()
        cost = "cost ?" if t.cost_usd is None else f"${t.cost_usd:.4f}"
        cached = f", {t.cached_calls:,} cached" if t.cached_calls else ""
        return f"{cost}, {t.prompt_tokens + t.completion_tokens:,} tok{cached}"

    def to_json(self) -> dict[str, Any]:
        stages: dict[str, dict[str, Any]] = {}
        for (stage, model), line in sorted(self.lines.items()):
            stages.setdefault(stage, {})[model] = asdict(line)
        data = {"stages": stages, "total": asdict(self.total()), "prices": self.prices.source}
        if reports := self.engine_reports():
            data["engines"] = reports
        return data


class MeteredBackend(Backend):
    """A view of a shared backend that books each call to one stage of a :class:`Ledger`.

    The pool owns the shared backend's lifecycle, so ``start``/``close`` are not forwarded.
    """

    def __init__(self, inner: Backend, ledger: Ledger, stage: str, cfg: ModelConfig) -> None:
        self.inner = inner
        self.ledger = ledger
        self.model_name = inner.model_name
        # Resolved once: a price lookup per call would cost more than a fake model call.
        self._line = ledger.line(stage, cfg)
        self._price = ledger.prices.lookup(cfg.backend, cfg.model)
        self._discount = ledger.prices.batch_discount if cfg.backend == "openai_batch" else 1.0

    async def complete(self, messages: list[Message], params: GenerationParams) -> Completion:
        out = await self.inner.complete(messages, params)
        self.ledger.record(self._line, self._price, out, self._discount)
        return out


def write_report(out: Path, summary: Any, ledger: Ledger, seconds: float) -> Path:
    """Add this run to ``<out>/report.json`` (atomic rewrite); returns its path.

    The file keeps every run of the folder (a resumed run is a new entry) and the totals
    over all of them, so the cost of a corpus built in several sittings is one lookup.
    """
    import time

    from ..core.corpus import read_json_object, write_json_atomic

    s = summary.stats
    run = {
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "sector": summary.sector,
        "seconds": round(seconds, 3),
        "dialogues_written": s.dialogues,
        "dialogues_per_s": round(s.dialogues / seconds, 3) if seconds > 0 else None,
        "already_done": summary.already_done,
        "planned": summary.planned,
        "requested": summary.requested,
        "rounds": s.rounds,
        "stop_reasons": dict(s.stop_reasons),
        "budget_stopped": summary.budget_stopped,
        "plan_only": getattr(summary, "plan_only", False),
        "variety": getattr(summary, "variety", {}),  # distinct openings, subtopics... used / requested
        **ledger.to_json(),
    }
    path = out / "report.json"
    runs = read_json_object(path).get("runs", []) if path.exists() else []
    total = LedgerLine()
    try:
        runs = [*runs, run]
        for r in runs:
            total.merge(LedgerLine(**r["total"]))
        written = sum(int(r["dialogues_written"]) for r in runs)
    except (TypeError, KeyError, ValueError) as exc:
        raise ValueError(f"{path}: damaged (a run without a valid total: {exc}); the dialogues are saved; "
                         "move the file aside and rerun to write a new report") from None
    write_json_atomic(path, {"runs": runs, "total": asdict(total), "dialogues_written": written})
    return path
