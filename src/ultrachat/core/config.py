"""Config loading: TOML files (recipes, training, filter rules, judges, prices, prompts)
read into typed models, with every failure one line naming the file and the field.

    cfg = load_toml_model(TrainConfig, "train.toml", {"epochs": 2}, "training config", table="train")
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import UserError


class ConfigError(UserError, ValueError):
    """A config that cannot be used; the message is one line naming the file and field."""


class Strict(BaseModel):
    """Base of config models: unknown fields are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def parse_toml(text: str, source: str, error: type[Exception] = ConfigError,
               prefix: str = "invalid TOML: ") -> dict[str, Any]:
    """``text`` parsed as TOML; a syntax error raises ``error("<source>: <prefix><reason>")``."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{source}: {prefix}{exc}") from None


def read_toml(path: str | Path, error: type[Exception] = ConfigError,
              missing: str = "file not found") -> dict[str, Any]:
    """The TOML file ``path``; a missing, unreadable or non-UTF-8 file raises ``error`` naming it."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{path}: {missing}") from None
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror or exc})") from None
    return parse_toml(text, str(path), error)


def format_validation_error(source: str, err: ValidationError, prefix: str = "") -> str:
    """``<source>: field '<prefix><loc>': <message>`` for the first error (and how many more)."""
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
    more = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{source}: field '{prefix}{loc}': {first['msg']}{more}"


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any] | None, source: str = "config",
                    error: type[Exception] = ConfigError) -> dict[str, Any]:
    """Set dotted ``overrides`` (``{"models.user.max_tokens": 48}``) in ``data``; ``None``
    values are skipped so CLI flags left unset keep the file's value. A scalar where a
    table is needed raises ``error`` naming ``source`` and the field."""
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        node = data
        *parents, leaf = dotted.split(".")
        for depth, key in enumerate(parents, 1):
            node = node.setdefault(key, {})
            if not isinstance(node, dict):  # e.g. `dialogue = 3` in the file and --min-rounds on the command line
                field = ".".join(parents[:depth])
                raise error(f"{source}: field '{field}' must be a table ([{field}]), "
                            f"got {type(node).__name__} {node!r}")
        node[leaf] = value
    return data


Model = TypeVar("Model", bound=BaseModel)


def load_toml_model(model: type[Model], path: str | Path | None, overrides: dict[str, Any] | None,
                    what: str, table: str | None = None, error: type[Exception] = ConfigError) -> Model:
    """Validate a TOML file (its ``table`` when given and present) as ``model``, after
    applying dotted ``overrides``; every failure is one ``error`` line."""
    data: dict[str, Any] = {}
    source = what
    if path is not None:
        source = str(path)
        data = read_toml(path, error)
        if table:
            data = data.get(table, data)
            if not isinstance(data, dict):
                raise error(f"{source}: field '{table}' must be a table")
    apply_overrides(data, overrides, source, error)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise error(format_validation_error(source, exc)) from None
