"""The one model-flag set: every command that calls a model takes the same flags, built by one function."""

from __future__ import annotations

from typing import Any

import pytest
import typer

from ultrachat.cli import app
from ultrachat.modelflags import model_config, role_overrides

SAMPLING = {"--temperature", "--top-p", "--max-tokens"}
MODEL = {"--backend", "--model", "--base-url", "--api-key-env"}
JUDGE = {"--judge-backend", "--judge-model", "--judge-base-url", "--judge-api-key-env"}


def _options(*path: str) -> set[str]:
    command: Any = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]  # a group's subcommands
    return {opt for param in command.params for opt in param.opts if opt.startswith("--")}


@pytest.mark.parametrize(("path", "expected"), [
    (("answer",), MODEL | SAMPLING),
    (("best-of-n",), MODEL | SAMPLING | JUDGE),
    (("eval", "pairwise"), JUDGE | {"--judge-temperature", "--judge-max-tokens"}),
    (("eval", "score"), JUDGE | {"--judge-temperature", "--judge-max-tokens"}),
    (("stats",), JUDGE | {"--embeddings-base-url", "--embeddings-model", "--embeddings-api-key-env"}),
    (("chat",), (MODEL - {"--backend"}) | SAMPLING),
    (("generate", "world"), MODEL),
])
def test_every_model_command_takes_the_shared_flags(path: tuple[str, ...], expected: set[str]) -> None:
    assert expected <= _options(*path), expected - _options(*path)


def test_older_flag_names_still_work() -> None:
    assert {"--max-new-tokens"} <= _options("chat")
    assert {"--judge-key-env", "--embeddings-url", "--embeddings-key-env"} <= _options("stats")


def test_base_url_implies_openai_and_needs_a_model() -> None:
    cfg = model_config(None, "qwen", "http://127.0.0.1:9/v1", "MY_KEY", temperature=0.2, top_p=None)
    assert (cfg.backend, cfg.model, cfg.base_url, cfg.api_key_env, cfg.temperature, cfg.top_p) == \
        ("openai", "qwen", "http://127.0.0.1:9/v1", "MY_KEY", 0.2, 0.95)
    assert (model_config(None, None, None).backend, model_config("fake", None, None).model) == ("local", "fake")
    with pytest.raises(typer.Exit) as exc:
        model_config(None, None, "http://127.0.0.1:9/v1")
    assert exc.value.exit_code == 2


def test_generate_points_both_roles_at_the_flags_model() -> None:
    assert role_overrides(("user", "assistant"), None, "m", "http://h/v1", None) == {
        "models.user.backend": "openai", "models.user.base_url": "http://h/v1", "models.user.model": "m",
        "models.assistant.backend": "openai", "models.assistant.base_url": "http://h/v1", "models.assistant.model": "m"}
    assert role_overrides(("user",), "fake", None, None, "K") == {"models.user.backend": "fake",
                                                                   "models.user.api_key_env": "K"}
