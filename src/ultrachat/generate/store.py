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

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from filelock import FileLock, Timeout

from ..core.callcache import CallCache
from ..core.corpus import (
    InvalidLine,
    JsonlAppender,
    iter_jsonl,
    json_lines,
    read_json_object,
    repair_tail,
    write_json_atomic,
)
from ..core.errors import UserError
from ..core.hashing import HashIndex
from ..recipe import Recipe

T = TypeVar("T")


class RunStoreError(UserError, RuntimeError):
    """The folder cannot be used for this run; the message says why and what to do."""


def _diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new)):
            out += _diff(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [prefix.rstrip(".")]


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
        self._calls: CallCache | None = None
        self._openings: JsonlAppender | None = None
        self._emissions: JsonlAppender | None = None
        self._dialogues: JsonlAppender | None = None
        self._done: HashIndex | None = None  # hashes of the ids in dialogues.jsonl

    # -- lifecycle -------------------------------------------------------------------
    def open(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            raise RunStoreError(f"{self.out} is in use by another ultrachat run (lock {self.out / '.lock'})") from None
        try:
            self._check_fingerprint()
            (self.out / "plan").mkdir(exist_ok=True)
            (self.out / "plan" / "calls.jsonl").touch()
            self._calls = CallCache(self.out / "plan" / "calls.jsonl", damaged=RunStoreError)
            self._openings = JsonlAppender(self.out / "plan" / "openings.jsonl")
            self._emissions = JsonlAppender(self.out / "plan" / "emissions.jsonl")
            self._dialogues = JsonlAppender(self.out / "dialogues.jsonl")
        except BaseException:
            self.close()  # a refused folder (other recipe, damaged state, full disk) is not left locked
            raise

    def close(self) -> None:
        for app in (self._calls, self._openings, self._emissions, self._dialogues):
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
    def get_call(self, key: str) -> dict[str, Any] | None:
        """The cached result of the planning call ``key``, or ``None``."""
        assert self._calls is not None
        return self._calls.get(key)

    def save_call(self, record: dict[str, Any]) -> None:
        """Cache a planning call's result (``record["key"]`` names the call)."""
        assert self._calls is not None
        self._calls.put(record["key"], {k: v for k, v in record.items() if k != "key"})

    # -- openings --------------------------------------------------------------------
    def iter_openings(self) -> Iterator[dict[str, Any]]:
        """The planned openings in file order, streamed."""
        path = self.out / "plan" / "openings.jsonl"
        repair_tail(path)
        if path.exists():
            yield from iter_jsonl(path, validate=False)

    def load_openings(self, make: Callable[..., T]) -> Iterator[T]:
        """:meth:`iter_openings` built with ``make(**line)``; a line that does not fit is an
        error naming ``file:line`` (a damaged plan), not a crash."""
        path = self.out / "plan" / "openings.jsonl"
        repair_tail(path)
        if not path.exists():
            return
        for where, obj in json_lines(path):
            try:
                if isinstance(obj, ValueError) or not isinstance(obj, dict):
                    raise TypeError(str(obj))
                yield make(**obj)
            except (TypeError, ValueError) as exc:
                raise RunStoreError(f"{where}: damaged line, not a planned opening ({exc}); delete that line "
                                    "to plan it again") from None

    def save_openings(self, items: list[dict[str, Any]]) -> None:
        assert self._openings is not None
        self._openings.write(items)

    def iter_emissions(self) -> Iterator[dict[str, Any]]:
        """The records of ``plan/emissions.jsonl``; a line that is not one is an error naming
        ``file:line`` (a damaged journal), not a crash."""
        path = self.out / "plan" / "emissions.jsonl"
        repair_tail(path)
        if not path.exists():
            return
        for where, obj in json_lines(path):
            if not _is_emission(obj):
                raise RunStoreError(f"{where}: damaged line, not a plan emission record; delete "
                                    f"{path} to plan the interrupted groups again") from None
            yield obj

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


def _is_emission(obj: object) -> bool:
    """``{"done": PLAN}`` or ``{"plan": PLAN, "from": {GROUP: K, ...}, ...}``."""
    if not isinstance(obj, dict):
        return False
    if "done" in obj:
        return isinstance(obj["done"], str)
    start = obj.get("from")
    return isinstance(obj.get("plan"), str) and isinstance(start, dict) and \
        all(isinstance(k, int) and not isinstance(k, bool) for k in start.values())
