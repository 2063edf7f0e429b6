"""LLM judges: configs and prompt templates are data files, the code is generic over them.

A judge is a TOML config (``judges/<name>.toml`` in the package, or any path) naming its
template files, which sit beside it. ``kind = "pairwise"`` judges fill ``{question}``,
``{answer_a}`` and ``{answer_b}``; ``kind = "score"`` judges fill ``{question}`` and
``{answer}`` (and ``{reference}`` in their ``reference_template``).

Each judgment is cached by a fingerprint of its full prompt, the judge model and its
sampling, so a rerun costs nothing. An unparseable reply is asked again ``retries``
times, then recorded with ``verdict: null``.

Example::

    judge = load_judge("pairwise")
    messages = judge.messages(question="2+2?", answer_a="4", answer_b="5")
    record = await judge_once(backend, judge, messages, cache, model_id, seed=0)
    record["verdict"]  # "A", "B", "tie" or None
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from ..backends.base import Backend, GenerationParams, Message
from ..core.callcache import CallCache, fingerprint
from ..core.config import parse_toml
from ..recipe import ModelConfig
from .parse import VerdictSpec, parse_verdict

BUILTIN_JUDGES = ("pairwise", "score", "pairwise-small", "score-small")


class JudgeConfigError(ValueError):
    """A judge config that cannot be used; the message names the file and field."""


@dataclass
class JudgeConfig:
    name: str
    kind: Literal["pairwise", "score"]
    system: str
    template: str
    verdict: VerdictSpec
    temperature: float = 0.0
    max_tokens: int = 256
    retries: int = 2
    retry_temperature: float = 0.7
    reference_template: str | None = None
    reference_classes: list[str] = field(default_factory=list)
    source: str = ""

    def uses_reference(self, cls: str, reference: str | None) -> bool:
        """Whether a score judge grades this prompt against its reference answer."""
        if not reference or not self.reference_template:
            return False
        return any(c.lower() in cls.lower() for c in self.reference_classes)

    def messages(self, reference: str | None = None, **values: str) -> list[Message]:
        """The judge's chat messages for one judgment (``reference`` picks the reference template)."""
        template = self.template if reference is None else self.reference_template
        if reference is not None:
            values["reference"] = reference
        try:
            user = str(template).format_map(values)
        except (KeyError, IndexError) as exc:
            raise JudgeConfigError(f"{self.source}: template placeholder {exc} has no value") from None
        return ([{"role": "system", "content": self.system}] if self.system else []) + [
            {"role": "user", "content": user}]

    def identity(self) -> dict[str, Any]:
        """What, besides the prompt, changes this judge's verdicts (part of cache keys)."""
        return {"temperature": self.temperature, "max_tokens": self.max_tokens, "retries": self.retries,
                "retry_temperature": self.retry_temperature, "verdict": self.verdict.__dict__}


def default_judge(kind: Literal["pairwise", "score"], judge_cfg: ModelConfig) -> str:
    """The shipped judge of ``kind`` for this judge model: the short-prompt ``-small`` variant
    for the embedded model (it loses the long MT-bench style instructions), else the full one."""
    from ..backends.local import EMBEDDED_MODEL

    small = judge_cfg.backend == "local" and judge_cfg.model == EMBEDDED_MODEL
    return f"{kind}-small" if small else kind


def _read_text(base: Any, name: str, source: str, key: str) -> str:
    entry = base / name
    if not entry.is_file():
        raise JudgeConfigError(f"{source}: {key} file '{name}' not found beside the config")
    return str(entry.read_text(encoding="utf-8"))


def load_judge(name_or_path: str | Path) -> JudgeConfig:
    """A built-in judge by name (see ``BUILTIN_JUDGES``) or a config file path."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise JudgeConfigError(f"judge config {path} not found")
        base: Any = path.parent
        source = str(path)
        text = path.read_text(encoding="utf-8")
    else:
        base = resources.files("ultrachat.evaluate") / "judges"
        if not (base / f"{name_or_path}.toml").is_file():
            raise JudgeConfigError(f"unknown judge '{name_or_path}'; built-in: {', '.join(BUILTIN_JUDGES)}, "
                                   "or give a path to a .toml config")
        source = f"judges/{name_or_path}.toml"
        text = (base / f"{name_or_path}.toml").read_text(encoding="utf-8")
    raw = parse_toml(text, source, JudgeConfigError, prefix="")
    try:
        kind = raw["kind"]
        if kind not in ("pairwise", "score"):
            raise JudgeConfigError(f"{source}: field 'kind' must be 'pairwise' or 'score', not {kind!r}")
        v = raw["verdict"]
        spec = VerdictSpec(kind=kind, patterns=list(v["patterns"]), labels=dict(v.get("labels", {})),
                           min=float(v.get("min", 1)), max=float(v.get("max", 10)))
        spec.compiled()
        ref_name = raw.get("reference_template")
        return JudgeConfig(
            name=path.stem, kind=kind, system=str(raw.get("system", "")),
            template=_read_text(base, raw["template"], source, "template"), verdict=spec,
            temperature=float(raw.get("temperature", 0.0)), max_tokens=int(raw.get("max_tokens", 256)),
            retries=int(raw.get("retries", 2)), retry_temperature=float(raw.get("retry_temperature", 0.7)),
            reference_template=_read_text(base, ref_name, source, "reference_template") if ref_name else None,
            reference_classes=list(raw.get("reference_classes", [])), source=source,
        )
    except KeyError as exc:
        raise JudgeConfigError(f"{source}: missing field {exc}") from None
    except Exception as exc:  # bad regex, wrong types
        if isinstance(exc, JudgeConfigError):
            raise
        raise JudgeConfigError(f"{source}: {exc}") from None


async def judge_once(backend: Backend, judge: JudgeConfig, messages: list[Message], cache: CallCache,
                     model_id: dict[str, Any], seed: int) -> dict[str, Any]:
    """One judgment with retries, cached. Returns ``{"verdict", "attempts", "raw", "tokens"}``."""
    key = fingerprint({"messages": messages, "judge": model_id, "config": judge.identity(), "seed": seed})
    hit = cache.get(key)
    if hit is not None:
        return hit
    raw: list[str] = []
    verdict = None
    tokens = 0
    for attempt in range(judge.retries + 1):
        temperature = judge.temperature if attempt == 0 else max(judge.temperature, judge.retry_temperature)
        params = GenerationParams(temperature=temperature, max_tokens=judge.max_tokens, seed=seed * 101 + attempt)
        out = await backend.complete(messages, params)
        raw.append(out.text)
        tokens += out.usage.total_tokens
        verdict = parse_verdict(out.text, judge.verdict)
        if verdict is not None:
            break
    record = {"verdict": verdict, "attempts": len(raw), "raw": raw, "tokens": tokens}
    cache.put(key, record)
    return record
