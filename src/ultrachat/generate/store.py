"""An output folder: lock, recipe fingerprint, per-stage cache and the dialogue file.

Layout of ``<out>/``::

    run.json            fingerprint + the recipe fields that shape outputs
    .lock               held while a run uses the folder
    plan/calls.jsonl    every planning call's result, keyed by stage (resume skips them)
    plan/openings.jsonl the opening lines assigned to dialogue ids (append-only)
    plan/emissions.jsonl which plan is writing which openings (see PlanContext.begin)
    dialogues.jsonl     the output corpus, one dialogue a line
"""

from __future__ import annotations

import json
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from filelock import FileLock, Timeout

from ..data.jsonl import InvalidLine, JsonlAppender, iter_jsonl, read_json_object, repair_tail, write_json_atomic
from ..recipe import Recipe
from .compact import HashIndex, hash64


class RunStoreError(RuntimeError):
    """The folder cannot be used for this run; the message says why and what to do."""


def _diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new)):
            out += _diff(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [prefix.rstrip(".")]


def _call_key(line: bytes, path: Path, no: int) -> str:
    """The key of a cached call's line; a damaged line is an error naming ``file:line``."""
    try:
        key = json.loads(line)["key"]
        if isinstance(key, str):
            return key
    except (ValueError, KeyError, TypeError):
        pass
    raise RunStoreError(f"{path}:{no}: damaged cache line (not a JSON call record); delete the line or the "
                        "file to redo those calls")


def _only_builtin(changed: list[str], old: Any) -> bool:
    """Whether only the shipped prompts differ: ``builtin``, or a run.json written before
    user files were hashed (no ``inputs`` yet)."""
    before_inputs = isinstance(old, dict) and "inputs" not in old
    return bool(changed) and all(c == "builtin" or c == "upgraded_from" or (before_inputs and c.startswith("inputs"))
                                 for c in changed)


class RunStore:
    def __init__(self, out: Path, recipe: Recipe, sector: str) -> None:
        self.out = out
        self.recipe = recipe
        self.sector = sector
        self._lock = FileLock(str(out / ".lock"))
        self._calls: JsonlAppender | None = None
        self._openings: JsonlAppender | None = None
        self._emissions: JsonlAppender | None = None
        self._dialogues: JsonlAppender | None = None
        self._call_index: HashIndex | None = None  # hash of a call's key -> its line's offset
        self._call_reader: IO[bytes] | None = None
        self._done: HashIndex | None = None  # hashes of the ids in dialogues.jsonl

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
        self._emissions = JsonlAppender(self.out / "plan" / "emissions.jsonl")
        self._dialogues = JsonlAppender(self.out / "dialogues.jsonl")

    def close(self) -> None:
        for app in (self._calls, self._openings, self._emissions, self._dialogues):
            if app:
                app.close()
        if self._call_reader:
            self._call_reader.close()
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
            try:
                old = read_json_object(path, ("fingerprint", "recipe"))
            except InvalidLine as exc:
                raise RunStoreError(f"{exc}: it records the recipe of the run in {self.out}; restore it, or "
                                    "delete it only if the recipe is unchanged") from None
            if old["fingerprint"] == fp:
                return
            changed = _diff(old["recipe"], payload)
            if not _only_builtin(changed, old["recipe"]):
                raise RunStoreError(
                    f"{self.out} holds a run made with a different recipe (changed: "
                    f"{', '.join(changed[:6]) or 'unknown fields'}); inputs.* are the contents of those files; "
                    "use another --out folder or restore the old settings "
                    "(dialogues, concurrency and max_total_tokens may change freely)"
                )
            if not self.recipe.upgrade_prompts:
                raise RunStoreError(
                    f"{self.out} was started with other built-in prompts (ultrachat was upgraded since); pass "
                    "--upgrade-prompts to resume with the new ones (finished dialogues and openings are kept, "
                    "new planning calls and dialogues use the new prompts), or use another --out folder")
            payload["upgraded_from"] = old["fingerprint"]
        write_json_atomic(path, {"fingerprint": fp, "sector": self.sector, "recipe": payload})

    # -- stage cache -----------------------------------------------------------------
    # Only an index is kept in memory (16 bytes a call); a cached reply is read back from
    # its line, whose key is compared, so a hash collision can only cost a repeated call.
    @property
    def _calls_path(self) -> Path:
        return self.out / "plan" / "calls.jsonl"

    def _calls_loaded(self) -> HashIndex:
        if self._call_index is None:
            keys, offsets = array("Q"), array("Q")
            repair_tail(self._calls_path)
            if self._calls_path.exists():
                with open(self._calls_path, "rb") as fh:
                    offset = 0
                    for no, line in enumerate(fh, 1):
                        if line.strip():
                            keys.append(hash64(_call_key(line, self._calls_path, no)))
                            offsets.append(offset)
                        offset += len(line)
            self._call_index = HashIndex(keys, offsets)
        return self._call_index

    def get_call(self, key: str) -> dict[str, Any] | None:
        """The cached result of the planning call ``key``, or ``None``."""
        offset = self._calls_loaded().get(hash64(key))
        if offset is None:
            return None
        if self._call_reader is None:
            self._call_reader = open(self._calls_path, "rb")  # noqa: SIM115 - closed in close()
        self._call_reader.seek(offset)
        record: dict[str, Any] = json.loads(self._call_reader.readline())
        return record if record["key"] == key else None

    def save_call(self, record: dict[str, Any]) -> None:
        assert self._calls is not None
        index = self._calls_loaded()
        offset = self._calls.write([record])
        index.add(hash64(record["key"]), offset)

    # -- openings --------------------------------------------------------------------
    def iter_openings(self) -> Iterator[dict[str, Any]]:
        """The planned openings in file order, streamed."""
        path = self.out / "plan" / "openings.jsonl"
        repair_tail(path)
        if path.exists():
            yield from iter_jsonl(path, validate=False)

    def save_openings(self, items: list[dict[str, Any]]) -> None:
        assert self._openings is not None
        self._openings.write(items)

    def iter_emissions(self) -> Iterator[dict[str, Any]]:
        path = self.out / "plan" / "emissions.jsonl"
        repair_tail(path)
        if path.exists():
            yield from iter_jsonl(path, validate=False)

    def save_emission(self, record: dict[str, Any]) -> None:
        assert self._emissions is not None
        self._emissions.write([record])

    # -- dialogues -------------------------------------------------------------------
    @property
    def dialogues_path(self) -> Path:
        return self.out / "dialogues.jsonl"

    def done_ids(self) -> HashIndex:
        """The ids in ``dialogues.jsonl`` as 64-bit hashes (``id in done``), read once and
        kept up to date by :meth:`save_dialogues`: 8 bytes a dialogue."""
        if self._done is None:
            repair_tail(self.dialogues_path)
            ids = iter_jsonl(self.dialogues_path) if self.dialogues_path.exists() else iter(())
            self._done = HashIndex(d["id"] for d in ids)
        return self._done

    def save_dialogue(self, dialogue: dict[str, Any]) -> None:
        self.save_dialogues([dialogue])

    def save_dialogues(self, dialogues: list[dict[str, Any]]) -> None:
        """Append several dialogues with one write + fsync (group commit, see ``writer``)."""
        assert self._dialogues is not None
        self._dialogues.write(dialogues)
        if self._done is not None:
            for d in dialogues:
                self._done.add(d["id"])
