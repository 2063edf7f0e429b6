"""Evaluation sets and answer files in the formats users already have.

Evaluation sets (prompts to answer):

- ``ultra_eval`` (built in) or any ``[{"class": ..., "data": "prompt"}]`` JSON file;
- AlpacaEval JSON: ``[{"instruction": ..., "dataset": ...}, ...]`` (``output`` ignored);
- MT-bench style JSONL: ``{"question_id": ..., "category": ..., "turns": [...], "reference": [...]}``.

Answer files are AlpacaEval ``model_outputs`` JSON: ``instruction``, ``output``,
``generator``, ``dataset``, plus ``class``, ``id`` and, for multi-turn prompts, ``turns``
and ``outputs``; or FastChat ``model_answer/*.jsonl`` (``question_id``, ``model_id``,
``choices[0].turns``), read with the questions they answer. Two answer files are matched
prompt by prompt on the instruction (the n-th occurrence of a repeated instruction matches
the n-th occurrence in the other file).

Example::

    items = load_eval_set("ultra_eval", per_class=2)   # 20 prompts, 2 of each class
    answers = load_answers(Path("model_outputs.json"))
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ..core.corpus import InvalidLine, json_values

BUILTIN_SETS = ("ultra_eval",)


class EvalSetError(ValueError):
    """An evaluation set or answer file that cannot be used; names the file and record."""


@dataclass
class EvalItem:
    """One prompt: its user turns (one for single-turn sets), class and optional reference."""

    id: str
    turns: list[str]
    cls: str = ""
    dataset: str = ""
    reference: str | None = None
    question_id: int | str | None = None  # the set's own id (MT-bench's question_id), else the position

    @property
    def instruction(self) -> str:
        return self.turns[0]


def _records(path: Path) -> list[Any]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        try:
            return [value for _, value in json_values(path, text.splitlines())]
        except InvalidLine as exc:
            raise EvalSetError(str(exc)) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EvalSetError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
    if not isinstance(data, list):
        raise EvalSetError(f"{path}: expected a JSON list of records")
    return data


def _item(obj: Any, index: int, source: str, dataset: str) -> EvalItem:
    where = f"{source}: record {index + 1}"
    if not isinstance(obj, dict):
        raise EvalSetError(f"{where}: not a JSON object")
    if "turns" in obj:  # MT-bench
        turns = obj["turns"]
        if not isinstance(turns, list) or not turns or not all(isinstance(t, str) for t in turns):
            raise EvalSetError(f"{where}: field 'turns' must be a non-empty list of strings")
        ref = obj.get("reference")
        reference = ref[-1] if isinstance(ref, list) and ref else ref if isinstance(ref, str) else None
        qid = obj.get("question_id", index + 1)
        return EvalItem(f"{dataset}-{qid}", list(turns), str(obj.get("category", "")), dataset, reference, qid)
    text = obj.get("instruction", obj.get("data"))
    if isinstance(text, list) and text and all(isinstance(t, str) for t in text):
        turns = text[::2]  # an UltraChat dialogue: its user turns are the even positions
    elif isinstance(text, str) and text.strip():
        turns = [text]
    else:
        raise EvalSetError(f"{where}: needs a non-empty 'instruction', 'data' or 'turns' field")
    cls = str(obj.get("class", obj.get("dataset", ""))).strip()
    reference = obj.get("reference") if isinstance(obj.get("reference"), str) else None
    return EvalItem(str(obj.get("id", f"{dataset}-{index + 1:04d}")), turns, cls, dataset, reference,
                    obj.get("question_id", index + 1))


def load_eval_set(source: str | Path = "ultra_eval", limit: int | None = None,
                  per_class: int | None = None) -> list[EvalItem]:
    """Prompts from a built-in set name or a file; ``limit`` keeps the first N, ``per_class``
    the first N of each class (N >= 1: zero prompts is not a run)."""
    for name, value in (("limit", limit), ("per_class", per_class)):
        if value is not None and value < 1:
            raise EvalSetError(f"{name} must be at least 1, got {value}")
    if str(source) in BUILTIN_SETS:
        name = str(source)
        raw = json.loads((resources.files("ultrachat.resources") / f"{name}.json").read_text(encoding="utf-8"))
        where = name
    else:
        path = Path(source)
        if not path.is_file():
            raise EvalSetError(f"evaluation set {path} not found (built-in sets: {', '.join(BUILTIN_SETS)})")
        raw, where, name = _records(path), str(path), path.stem
    items = [_item(obj, i, where, name) for i, obj in enumerate(raw)]
    if per_class is not None:
        seen: Counter[str] = Counter()
        kept = []
        for item in items:
            seen[item.cls] += 1
            if seen[item.cls] <= per_class:
                kept.append(item)
        items = kept
    if not items:
        raise EvalSetError(f"{where}: no prompts")
    return items[:limit] if limit is not None else items


# -- answer files -------------------------------------------------------------------------
def is_fastchat_answer(rec: Any) -> bool:
    """A FastChat ``model_answer/*.jsonl`` record: ``question_id``, ``model_id``, ``choices[].turns``."""
    return isinstance(rec, dict) and "question_id" in rec and isinstance(rec.get("choices"), list)


def fastchat_questions(answers: Path, questions: Path | None = None) -> Path:
    """The questions of a FastChat answer file: ``questions``, else FastChat's layout
    (``data/<bench>/question.jsonl`` beside ``data/<bench>/model_answer/``)."""
    found = questions or answers.parent.parent / "question.jsonl"
    if not found.is_file():
        raise EvalSetError(f"{answers}: a FastChat answer file holds no questions; pass --questions question.jsonl "
                           f"(looked for {found})")
    return found


def from_fastchat(records: list[Any], path: Path, questions: Path | None = None) -> list[dict[str, Any]]:
    """FastChat answers as AlpacaEval-style records (first choice), questions joined on ``question_id``."""
    qpath = fastchat_questions(path, questions)
    by_id = {str(item.question_id): item for item in load_eval_set(qpath)}
    out = []
    for i, rec in enumerate(records):
        where = f"{path}: record {i + 1}"
        if not is_fastchat_answer(rec):
            raise EvalSetError(f"{where}: not a FastChat answer (needs 'question_id' and 'choices')")
        item = by_id.get(str(rec["question_id"]))
        if item is None:
            raise EvalSetError(f"{where}: question_id {rec['question_id']} is not in {qpath}")
        turns = rec["choices"][0].get("turns") if rec["choices"] and isinstance(rec["choices"][0], dict) else None
        if not isinstance(turns, list) or not all(isinstance(t, str) for t in turns) or not turns:
            raise EvalSetError(f"{where}: field 'choices.0.turns' must be a non-empty list of strings")
        answer = {"instruction": item.instruction, "output": turns[-1], "generator": rec.get("model_id"),
                  "dataset": item.cls, "class": item.cls, "id": item.id, "question_id": rec["question_id"]}
        if len(item.turns) > 1:
            answer["turns"], answer["outputs"] = item.turns, turns
        out.append(answer)
    return out


def to_fastchat(records: list[dict[str, Any]], items: list[EvalItem]) -> list[dict[str, Any]]:
    """Answer records as FastChat ``model_answer`` lines (one choice, every turn)."""
    return [{"question_id": item.question_id, "answer_id": item.id, "model_id": rec["generator"],
             "choices": [{"index": 0, "turns": rec.get("outputs") or [rec["output"]]}], "tstamp": 0.0}
            for rec, item in zip(records, items, strict=True)]


def load_answers(path: Path, questions: Path | None = None) -> list[dict[str, Any]]:
    """Answer records, checked: each has ``instruction`` and ``output`` strings.

    AlpacaEval JSON as it is; FastChat ``model_answer/*.jsonl`` joined with its questions
    (``questions``, or ``../question.jsonl`` as FastChat lays them out).
    """
    if not path.is_file():
        raise EvalSetError(f"answer file {path} not found")
    records = _records(path)
    if records and is_fastchat_answer(records[0]):
        records = from_fastchat(records, path, questions)
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise EvalSetError(f"{path}: record {i + 1}: not a JSON object")
        for key in ("instruction", "output"):
            if not isinstance(rec.get(key), str):
                raise EvalSetError(f"{path}: record {i + 1}: field '{key}' must be a string")
    if not records:
        raise EvalSetError(f"{path}: no answers")
    return records


def generator_name(records: list[dict[str, Any]], path: Path) -> str:
    names = {r.get("generator") for r in records if r.get("generator")}
    return str(names.pop()) if len(names) == 1 else path.stem


def _keys(records: list[dict[str, Any]]) -> list[tuple[str, int]]:
    seen: Counter[str] = Counter()
    keys = []
    for rec in records:
        text = json.dumps(rec.get("turns") or [rec["instruction"]], ensure_ascii=False)
        keys.append((text, seen[text]))
        seen[text] += 1
    return keys


def _describe(keys: list[tuple[str, int]]) -> str:
    shown = []
    for text, _ in keys[:3]:
        first = json.loads(text)[0].replace("\n", " ")
        shown.append(repr(first[:60] + ("..." if len(first) > 60 else "")))
    more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
    return ", ".join(shown) + more


def align(model: list[dict[str, Any]], other: list[dict[str, Any]], model_src: str,
          other_src: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Pair the records of two answer files prompt by prompt; both must cover the same prompts."""
    mk, ok = _keys(model), _keys(other)
    other_by_key = dict(zip(ok, other, strict=True))
    missing = [k for k in mk if k not in other_by_key]
    extra = [k for k in ok if k not in set(mk)]
    problems = []
    if missing:
        problems.append(f"{other_src} lacks {len(missing)} prompt(s) that {model_src} answers: {_describe(missing)}")
    if extra:
        problems.append(f"{model_src} lacks {len(extra)} prompt(s) that {other_src} answers: {_describe(extra)}")
    if problems:
        raise EvalSetError("the answer sets cover different prompts: " + "; ".join(problems))
    return [(rec, other_by_key[k]) for k, rec in zip(mk, model, strict=True)]


def prompt_class(rec: dict[str, Any]) -> str:
    """The class a record is broken down by: ``class``, else ``dataset``."""
    return str(rec.get("class") or rec.get("dataset") or "all").strip()
