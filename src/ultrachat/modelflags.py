"""The model flags, declared once for every command that calls a model.

``--backend --model --base-url --api-key-env`` pick the model; ``--temperature --top-p
--max-tokens`` sample it. A command with a second model (a judge, an embedder) gets the same
set under a prefix (``--judge-backend``, ``--judge-model``, ...). The rules are the same
everywhere: ``--base-url`` implies the ``openai`` backend and needs ``--model`` (the name the
endpoint serves); without one, the embedded model answers (``fake`` for the fake backend).

    from ..modelflags import JUDGE, MODEL, model_config

    def answer(backend: MODEL.Backend = None, model: MODEL.Model = None, base_url: MODEL.BaseURL = None,
               api_key_env: MODEL.APIKeyEnv = None, temperature: MODEL.Temperature = 0.7) -> None:
        cfg = model_config(backend, model, base_url, api_key_env, temperature=temperature)

Only ``*/commands.py`` modules import this (``lint-imports`` checks it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Optional, TypeAlias

import typer

from .backends.config import ModelConfig
from .backends.local import EMBEDDED_MODEL
from .cliutil import fail, run_guarded

BACKENDS = "local (default), openai, openai_batch, vllm or fake"


@dataclass(frozen=True)
class ModelFlags:
    """The option types of one model's flags (use them as parameter annotations)."""

    Backend: Any
    Model: Any
    BaseURL: Any
    APIKeyEnv: Any
    Temperature: Any
    TopP: Any
    MaxTokens: Any


def model_flags(prefix: str = "", who: str = "the model", aliases: dict[str, str] | None = None,
                model_help: str | None = None) -> ModelFlags:
    """The flag set of one model, named ``--<prefix>-<flag>``; ``aliases`` adds older
    names (``{"max-tokens": "--max-new-tokens"}``)."""
    extra = aliases or {}

    def names(flag: str) -> list[str]:
        main = f"--{prefix}-{flag}" if prefix else f"--{flag}"
        return [main, extra[flag]] if flag in extra else [main]

    def opt(flag: str, kind: Any, help_text: str) -> Any:
        return Annotated[kind, typer.Option(*names(flag), help=help_text)]

    return ModelFlags(
        Backend=opt("backend", Optional[str], f"Backend of {who}: {BACKENDS}."),
        Model=opt("model", Optional[str], model_help or f"{who.capitalize()}: '{EMBEDDED_MODEL}' (embedded), a local "
                  "Hugging Face folder, or the model name at the base URL."),
        BaseURL=opt("base-url", Optional[str], f"OpenAI-compatible endpoint of {who} (implies openai)."),
        APIKeyEnv=opt("api-key-env", Optional[str], f"Env var holding {who}'s API key (default OPENAI_API_KEY)."),
        Temperature=opt("temperature", Optional[float], f"Sampling temperature of {who}."),
        TopP=opt("top-p", Optional[float], f"Nucleus sampling (top-p) of {who}."),
        MaxTokens=opt("max-tokens", Optional[int], f"Most tokens per reply of {who}."),
    )


if TYPE_CHECKING:
    # What the type checker sees: each flag's value type. At run time each is that type
    # Annotated with its Typer option, which a checker cannot follow through model_flags().
    class _FlagTypes:
        Backend: TypeAlias = Optional[str]
        Model: TypeAlias = Optional[str]
        BaseURL: TypeAlias = Optional[str]
        APIKeyEnv: TypeAlias = Optional[str]
        Temperature: TypeAlias = Optional[float]
        TopP: TypeAlias = Optional[float]
        MaxTokens: TypeAlias = Optional[int]

    class MODEL(_FlagTypes): ...

    class ROLES(_FlagTypes): ...

    class JUDGE(_FlagTypes): ...

    class EMBEDDINGS(_FlagTypes): ...

    class CHAT(_FlagTypes): ...
else:
    MODEL = model_flags()
    #: generate: one model for both roles (user simulator and assistant); a recipe sets each apart
    ROLES = model_flags(who="both roles", model_help="Model of both roles: 'smollm2-135m' (embedded), a local "
                                                      "Hugging Face folder, or the model name at --base-url.")
    JUDGE = model_flags("judge", "the judge", {"api-key-env": "--judge-key-env"})
    #: an OpenAI-compatible /embeddings endpoint (stats' topic diversity), under its historical names too
    EMBEDDINGS = model_flags("embeddings", "the embedder",
                             {"base-url": "--embeddings-url", "api-key-env": "--embeddings-key-env"},
                             model_help="Embedding model at that endpoint (text-embedding-ada-002, the paper's, puts "
                                        "the paper's rows in the same table).")
    #: chat's endpoint flags, with --max-new-tokens (its older name) for --max-tokens
    CHAT = model_flags(aliases={"max-tokens": "--max-new-tokens"})


def model_config(backend: str | None, model: str | None, base_url: str | None, api_key_env: str | None = None,
                 **settings: Any) -> ModelConfig:
    """The :class:`ModelConfig` the flags name; unset (``None``) settings keep their defaults.

    ``--base-url`` with no backend (or ``openai``) means ``openai`` and needs ``--model``; a bad
    value is a one-line error naming the field.
    """
    if base_url and backend in (None, "openai"):
        if not model:
            fail("--model is required with --base-url (the model name the endpoint serves)")
        backend = "openai"
    backend = backend or "local"
    fields: dict[str, Any] = {"backend": backend, "model": model or ("fake" if backend == "fake" else EMBEDDED_MODEL),
                              "base_url": base_url, "api_key_env": api_key_env,
                              **settings}
    return run_guarded(lambda: ModelConfig(**{k: v for k, v in fields.items() if v is not None}))


def role_overrides(roles: tuple[str, ...], backend: str | None, model: str | None, base_url: str | None,
                   api_key_env: str | None) -> dict[str, Any]:
    """Dotted recipe overrides pointing each of ``roles`` at the model the flags name
    (``--base-url`` implies ``openai``); flags left unset keep the recipe's values."""
    out: dict[str, Any] = {}
    for role in roles:
        if base_url:
            out[f"models.{role}.backend"] = "openai" if backend in (None, "openai") else backend
            out[f"models.{role}.base_url"] = base_url
        elif backend:
            out[f"models.{role}.backend"] = backend
        if model:
            out[f"models.{role}.model"] = model
        if api_key_env:
            out[f"models.{role}.api_key_env"] = api_key_env
    return out
