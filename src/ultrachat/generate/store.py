"""An output folder: lock, recipe fingerprint, per-stage cache and the dialogue file.

Layout of ``<out>/``::

    run.json            fingerprint + the recipe fields that shape outputs
    .lock               held while a run uses the folder
    plan/calls.jsonl    every planning call's result, keyed by stage (resume skips them)
    plan/openings.jsonl the opening lines assigned to dialogue ids (append-only)
    dialogues.jsonl     the output corpus, one dialogue a line
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from ..data.jsonl import JsonlAppender, iter_jsonl, repair_tail, write_json_atomic
from ..recipe import Recipe


class RunStoreError(RuntimeError):
    """The folder cannot be used for this run; the message says why and what to do."""


def _diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new)):
            out += _diff(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [prefix.rstrip(".")]


class RunStore:
    def __init__(self, out: Path, recipe: Recipe, sector: str) -> None:
        self.out = out
        self.recipe = recipe
        self.sector = sector
        self._lock = FileLock(str(out / ".lock"))
        self._calls: JsonlAppender | None = None
        self._openings: JsonlAppender | None = None
        self._dialogues: JsonlAppender | None = None

    # -- lifecycle -------------------------------------------------------------------
    def open(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            raise RunStoreError(f"{self.out} is in use by another ultrachat run (lock {self.out / '.lock'})") from None
        self._check_fingerprint()
        (self.out / "plan").mkdir(exist_ok=True)
        self._calls = JsonlAppender(self.out / "plan" / "calls.jsonl")
        self._openings = JsonlAppender(self.out / "plan" / "openings.jsonl")
        self._dialogues = JsonlAppender(self.out / "dialogues.jsonl")

    def close(self) -> None:
        for app in (self._calls, self._openings, self._dialogues):
            if app:
                app.close()
        self._lock.release()

    def __enter__(self) -> RunStore:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_fingerprint(self) -> None:
        path = self.out / "run.json"
        payload = self.recipe.fingerprint_payload(self.sector)
        fp = self.recipe.fingerprint(self.sector)
        if path.exists():
            old = json.loads(path.read_text(encoding="utf-8"))
            if old["fingerprint"] != fp:
                changed = ", ".join(_diff(old["recipe"], payload)[:6]) or "unknown fields"
                raise RunStoreError(
                    f"{self.out} holds a run made with a different recipe (changed: {changed}); "
                    "use another --out folder or restore the old settings "
                    "(dialogues, concurrency and max_total_tokens may change freely)"
                )
            return
        write_json_atomic(path, {"fingerprint": fp, "sector": self.sector, "recipe": payload})

    # -- stage cache -----------------------------------------------------------------
    def load_calls(self) -> dict[str, dict[str, Any]]:
        path = self.out / "plan" / "calls.jsonl"
        repair_tail(path)
        return {c["key"]: c for c in iter_jsonl(path, validate=False)} if path.exists() else {}

    def save_call(self, record: dict[str, Any]) -> None:
        assert self._calls is not None
        self._calls.write([record])

    # -- openings --------------------------------------------------------------------
    def load_openings(self) -> list[dict[str, Any]]:
        path = self.out / "plan" / "openings.jsonl"
        repair_tail(path)
        return list(iter_jsonl(path, validate=False)) if path.exists() else []

    def save_openings(self, items: list[dict[str, Any]]) -> None:
        assert self._openings is not None
        self._openings.write(items)

    # -- dialogues -------------------------------------------------------------------
    @property
    def dialogues_path(self) -> Path:
        return self.out / "dialogues.jsonl"

    def done_ids(self) -> set[str]:
        repair_tail(self.dialogues_path)
        if not self.dialogues_path.exists():
            return set()
        return {d["id"] for d in iter_jsonl(self.dialogues_path)}

    def save_dialogue(self, dialogue: dict[str, Any]) -> None:
        self.save_dialogues([dialogue])

    def save_dialogues(self, dialogues: list[dict[str, Any]]) -> None:
        """Append several dialogues with one write + fsync (group commit, see ``writer``)."""
        assert self._dialogues is not None
        self._dialogues.write(dialogues)
