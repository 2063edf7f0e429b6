"""Non-destructive cleaning: ``ultrachat filter IN --out DIR``.

Each dialogue passes the rules in order; repairs change it, checks reject it. Outputs:
``kept.jsonl`` (repaired dialogues carry ``meta.filter.repairs``), ``rejected.jsonl``
(each dialogue with ``{"rule", "reason"}`` under ``reject``), ``invalid.jsonl`` with
``--skip-invalid``, and ``report.json`` with counts per rule.

Rules are configured by a ``[filter]`` table in a TOML file (a recipe or its own file)::

    [filter]
    min_rounds = 2
    max_turn_chars = 8000
    language = "en"        # needs langdetect; off by default
    polite_turns = "drop"  # drop | reject | keep

Example::

    report = filter_corpus(Path("dialogues.jsonl"), Path("clean"), FilterConfig(min_rounds=2))
    print(report["kept"], report["rules"]["disclaimer"]["rejected"])
"""

from __future__ import annotations

import re
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..core.config import apply_overrides, format_validation_error, parse_toml
from ..core.corpus import OutputDir, read_corpus
from ..core.turns import confounding_reason, is_politeness_only

RULES = ("cut_turns", "empty_turns",
         "dangling_user", "polite_turns", "disclaimer", "truecase", "rounds", "length", "language",
         "role_confounding")


class FilterConfig(BaseModel):
    """The filter's rules; every field has a default so an empty ``[filter]`` table is valid."""

    model_config = ConfigDict(extra="forbid")

    # Turns cut off by max_tokens (meta.truncated_turns): "trim" ends the dialogue before the
    # first one (its completed rounds stay), "reject" drops the dialogue, "keep" lets them pass.
    cut_turns: Literal["trim", "reject", "keep"] = "trim"
    empty_turns: bool = True
    dangling_user: Literal["trim", "reject", "keep"] = "trim"
    polite_turns: Literal["drop", "reject", "keep"] = "drop"
    disclaimers: bool = True
    truecase: Literal["all", "user", "off"] = "all"
    min_rounds: int = Field(1, ge=0)
    max_rounds: int = Field(0, ge=0)  # 0 = no limit
    min_turn_chars: int = Field(1, ge=0)
    max_turn_chars: int = Field(0, ge=0)
    max_dialogue_chars: int = Field(0, ge=0)
    language: str | None = None  # ISO code checked with langdetect, e.g. "en"
    role_confounding: bool = False
    rules_file: str | None = None

    @cached_property
    def patterns(self) -> dict[str, Any]:
        if self.rules_file:
            text = Path(self.rules_file).read_text(encoding="utf-8")
        else:
            text = (resources.files("ultrachat.data") / "filter_rules.toml").read_text(encoding="utf-8")
        data = parse_toml(text, self.rules_file or "filter_rules.toml", ValueError)
        return {"disclaimer": re.compile("|".join(f"(?:{p})" for p in data.get("disclaimers", [])), re.I),
                "abbreviations": frozenset(a.lower() for a in data.get("abbreviations", []))}


def load_filter_config(path: Path | None, overrides: dict[str, Any] | None = None) -> FilterConfig:
    """The ``[filter]`` table of a TOML file (recipe or standalone) plus CLI overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        data = dict(parse_toml(Path(path).read_text(encoding="utf-8"), str(path), ValueError).get("filter", {}))
    apply_overrides(data, overrides)
    try:
        return FilterConfig.model_validate(data)
    except ValidationError as exc:
        raise ValueError(format_validation_error(str(path or "filter"), exc, prefix="filter.")) from None


_CODE = re.compile(r"```.*?(?:```|$)|`[^`\n]*`|https?://\S+", re.S)
_SENTENCE_START = re.compile(r"(^|[.!?]\s+)([a-z])(\w*)")
_LONE_I = re.compile(r"(?<![\w(\[/-])i(?=\s|'(?:m|ve|ll|d)\b|[,;:!?]\s)")


def truecase(text: str, abbreviations: frozenset[str] = frozenset()) -> str:
    """Capitalise sentence starts and a lone "i" outside code and URLs.

    >>> truecase("hello. how are you? i'm fine, e.g. well.", frozenset({"e.g"}))
    "Hello. How are you? I'm fine, e.g. well."
    """
    out: list[str] = []
    pos = 0
    for m in _CODE.finditer(text):
        out.append(_truecase_prose(text[pos:m.start()], abbreviations, at_start=pos == 0))
        out.append(m.group(0))
        pos = m.end()
    out.append(_truecase_prose(text[pos:], abbreviations, at_start=pos == 0))
    return "".join(out)


def _truecase_prose(text: str, abbreviations: frozenset[str], at_start: bool) -> str:
    def fix(m: re.Match[str]) -> str:
        lead, first, rest = m.groups()
        if not lead and (m.start() > 0 or not at_start):
            return m.group(0)
        if lead:
            before = text[:m.start() + 1].split()
            last = before[-1].rstrip(".!?").lower() if before else ""
            # "e.g. this", "3. item" and "..." are not sentence ends.
            if last in abbreviations or last.isdigit() or text[m.start() - 1:m.start() + 1] == "..":
                return m.group(0)
        if any(c.isupper() or c.isdigit() or c == "_" for c in rest):  # iPhone, eBay, snake_case
            return m.group(0)
        return f"{lead}{first.upper()}{rest}"

    return _LONE_I.sub("I", _SENTENCE_START.sub(fix, text))


class _Rejected(Exception):
    """A rule rejected the dialogue (caught in :meth:`DialogueFilter.__call__`)."""

    def __init__(self, rule: str, reason: str) -> None:
        super().__init__(reason)
        self.rule, self.reason = rule, reason


class DialogueFilter:
    """Apply a :class:`FilterConfig` to one dialogue at a time."""

    def __init__(self, cfg: FilterConfig) -> None:
        self.cfg = cfg
        self.counts = {rule: {"rejected": 0, "repaired": 0} for rule in RULES}

    def __call__(self, d: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None, str | None]:
        """Returns ``(dialogue, rule, reason)``: the (repaired) dialogue when kept, else ``None``
        with the rule that rejected it and why."""
        repairs: list[str] = []
        try:  # the rules in their documented order: the first one that rejects is counted
            turns = self._cut(list(d["data"]), (d.get("meta") or {}).get("truncated_turns") or [], repairs)
            turns, kept = self._structure(turns, repairs)
            self._check_disclaimers(turns)
            turns = self._truecase(turns, repairs)
            self._check(turns)
        except _Rejected as exc:
            return self._reject(exc.rule, exc.reason)
        for rule in repairs:
            self.counts[rule]["repaired"] += 1
        if repairs:
            meta = dict(d.get("meta") or {})
            meta["filter"] = {"repairs": repairs}
            if isinstance(meta.get("reasoning"), list):  # kept reasoning follows its turn to its new index
                meta["reasoning"] = renumber_turns(meta["reasoning"], kept)
            d = {**d, "data": turns, "meta": meta}
        return d, None, None

    def _cut(self, turns: list[str], cut: list[int], repairs: list[str]) -> list[str]:
        """A turn cut off by max_tokens never passes as complete: the dialogue ends before it."""
        if not cut or self.cfg.cut_turns == "keep":
            return turns
        first = min(cut)
        keep = first - first % 2  # the user turn it answered goes too: whole rounds only
        if self.cfg.cut_turns == "reject" or keep == 0:
            raise _Rejected("cut_turns", f"turn {first} was cut off by max_tokens")
        repairs.append("cut_turns")
        return turns[:keep]

    def _structure(self, turns: list[str], repairs: list[str]) -> tuple[list[str], list[int]]:
        """Empty turns, a dangling user turn, politeness-only user turns: rejected or repaired;
        returns the turns left and their indices in ``turns``."""
        cfg = self.cfg
        if cfg.empty_turns:
            empty = [i for i, t in enumerate(turns) if not t.strip()]
            if empty:
                raise _Rejected("empty_turns", f"empty turn at index {empty[0]}")
        if len(turns) % 2 == 1 and cfg.dangling_user != "keep":
            if cfg.dangling_user == "reject" or len(turns) == 1:
                raise _Rejected("dangling_user", "the last user turn has no assistant reply")
            turns.pop()
            repairs.append("dangling_user")
        if cfg.polite_turns != "keep":
            polite = [i for i in range(0, len(turns), 2) if is_politeness_only(turns[i])]
            if polite:
                if cfg.polite_turns == "reject" or polite[0] == 0:
                    raise _Rejected("polite_turns", f"politeness-only user turn at index {polite[0]}: "
                                                    f"{turns[polite[0]][:60]!r}")
                # Drop the thank-you and the assistant's reply to it; the round structure stays intact.
                kept = [i for i in range(len(turns)) if i - i % 2 not in polite]
                repairs.append("polite_turns")
                return [turns[i] for i in kept], kept
        return turns, list(range(len(turns)))

    def _check_disclaimers(self, turns: list[str]) -> None:
        if self.cfg.disclaimers:
            pattern = self.cfg.patterns["disclaimer"]
            for i in range(1, len(turns), 2):
                if m := pattern.search(turns[i]):
                    raise _Rejected("disclaimer", f"assistant turn {i} says {m.group(0)!r}")

    def _truecase(self, turns: list[str], repairs: list[str]) -> list[str]:
        cfg = self.cfg
        if cfg.truecase == "off":
            return turns
        step = 2 if cfg.truecase == "user" else 1
        fixed = [truecase(t, cfg.patterns["abbreviations"]) if i % step == 0 else t for i, t in enumerate(turns)]
        if fixed == turns:
            return turns
        repairs.append("truecase")
        return fixed

    def _check(self, turns: list[str]) -> None:
        """Rounds, lengths, language, role confusion: reject only."""
        cfg = self.cfg
        rounds = (len(turns) + 1) // 2
        if rounds < cfg.min_rounds or (cfg.max_rounds and rounds > cfg.max_rounds):
            raise _Rejected("rounds", f"{rounds} rounds, outside {cfg.min_rounds}-{cfg.max_rounds or 'any'}")
        if reason := self._length(turns):
            raise _Rejected("length", reason)
        if cfg.language and (lang := _detect(turns)) != cfg.language:
            raise _Rejected("language", f"detected '{lang}', expected '{cfg.language}'")
        if cfg.role_confounding:
            for i in range(2, len(turns), 2):
                if why := confounding_reason(turns[i]):
                    raise _Rejected("role_confounding", f"user turn {i}: {why}")

    def _length(self, turns: list[str]) -> str | None:
        cfg = self.cfg
        for i, t in enumerate(turns):
            if len(t.strip()) < cfg.min_turn_chars:
                return f"turn {i} has {len(t.strip())} characters (< {cfg.min_turn_chars})"
            if cfg.max_turn_chars and len(t) > cfg.max_turn_chars:
                return f"turn {i} has {len(t)} characters (> {cfg.max_turn_chars})"
        total = sum(map(len, turns))
        if cfg.max_dialogue_chars and total > cfg.max_dialogue_chars:
            return f"dialogue has {total} characters (> {cfg.max_dialogue_chars})"
        return None

    def _reject(self, rule: str, reason: str) -> tuple[None, str, str]:
        self.counts[rule]["rejected"] += 1
        return None, rule, reason


def _detect(turns: list[str]) -> str:
    try:
        from langdetect import DetectorFactory, LangDetectException, detect
    except ImportError:
        raise ValueError("the language rule needs langdetect: pip install 'ultrachat[data]'") from None
    DetectorFactory.seed = 0  # langdetect samples; a fixed seed makes the filter reproducible
    try:
        return detect(" ".join(turns[:2])[:1000])
    except LangDetectException:
        return "unknown"


def filter_corpus(path: Path, out_dir: Path, cfg: FilterConfig, skip_invalid: bool = False,
                  progress: bool = True) -> dict[str, Any]:
    """Filter ``path`` into ``out_dir``; returns (and writes) the report."""
    rules = DialogueFilter(cfg)
    with OutputDir(out_dir, inputs=[path]) as out:
        out.touch("kept", "rejected")
        with read_corpus(path, "filter", out, skip_invalid, progress) as dialogues:
            for d in dialogues:
                kept, rule, reason = rules(d)
                if kept is not None:
                    out.write("kept", kept)
                else:
                    out.write("rejected", {**d, "reject": {"rule": rule, "reason": reason}})
        report = {"input": str(path), "total": out.counts["kept"] + out.counts["rejected"],
                  "kept": out.counts["kept"], "rejected": out.counts["rejected"],
                  "invalid": out.counts.get("invalid", 0), "rules": rules.counts,
                  "config": cfg.model_dump(exclude={"rules_file"} if not cfg.rules_file else set()),
                  "outputs": {name: str(out.file(name)) for name in out.counts}}
        out.write_json("report.json", report)
    return report


def renumber_turns(entries: list[Any], kept: list[int]) -> list[Any]:
    """``meta.reasoning`` entries (``{"turn": i, ...}``) moved to the new index of each kept turn;
    the entries of removed turns are dropped."""
    new = {old: i for i, old in enumerate(kept)}
    return [{**e, "turn": new[e["turn"]]} for e in entries if isinstance(e, dict) and e.get("turn") in new]
