"""Prompts are data: TOML files per language that users read and edit.

``prompts/<language>/<name>.toml`` ships with the package; a recipe's ``prompts_dir``
holding ``<name>.toml`` files overrides individual entries (a table at a time).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from ..core.config import parse_toml, read_toml
from ..core.errors import UserError


class PromptError(UserError, KeyError):
    pass


class _Missing(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        raise PromptError(f"prompt placeholder '{{{key}}}' has no value")


class Prompts:
    """The prompt tables for one language, with user overrides merged in."""

    def __init__(self, language: str = "en", override_dir: str | Path | None = None) -> None:
        self.language = language
        self._tables: dict[str, dict[str, Any]] = {}
        base = resources.files("ultrachat.prompts") / language
        if not base.is_dir():
            raise PromptError(f"no built-in prompts for language '{language}'")
        for entry in base.iterdir():
            if entry.name.endswith(".toml"):
                self._tables[entry.name[:-5]] = parse_toml(entry.read_text(encoding="utf-8"), entry.name, PromptError)
        if override_dir:
            if not Path(override_dir).is_dir():
                raise PromptError(f"prompts_dir {override_dir}: not a folder")
            for path in sorted(Path(override_dir).glob("*.toml")):
                self._tables.setdefault(path.stem, {}).update(read_toml(path, PromptError))

    def get(self, file: str, table: str, field: str = "template") -> str:
        try:
            return str(self._tables[file][table][field])
        except KeyError:
            raise PromptError(f"prompt '{file}.{table}.{field}' is not defined for '{self.language}'") from None

    def get_list(self, file: str, table: str, field: str) -> list[str]:
        """A list of strings (e.g. ``writing.variety.tones``); a missing or empty one is a PromptError."""
        value = self._tables.get(file, {}).get(table, {}).get(field)
        if not isinstance(value, list) or not value:
            raise PromptError(f"prompt list '{file}.{table}.{field}' is not defined for '{self.language}'")
        return [str(v) for v in value]

    def render(self, file: str, table: str, field: str = "template", **values: Any) -> str:
        return self.get(file, table, field).format_map(_Missing(values))


def load_list(name: str, language: str = "en", path: str | Path | None = None) -> list[str]:
    """A built-in list (topics, personas...) or the user's file: one item a line, '#' comments."""
    if path:
        from ..core.corpus import read_text_file

        text = read_text_file(path)
    else:
        text = (resources.files("ultrachat.resources") / language / f"{name}.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
