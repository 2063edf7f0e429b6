"""``ultrachat chat MODEL``: the terminal loop around :class:`~.session.ChatSession`."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from ..cliutil import console, fail, run_guarded
from ..modelflags import CHAT, model_config

if TYPE_CHECKING:
    from .session import ChatSession

HELP = "commands: /reset (forget the conversation), /save FILE, /system TEXT, /exit"


def _loop(session: ChatSession) -> None:
    out = sys.stdout
    while True:
        try:
            line = input("You: ").strip()
        except (EOFError, KeyboardInterrupt):
            out.write("\n")
            return
        if not line:
            continue
        command, _, arg = line.partition(" ")
        if command == "/exit":
            return
        if command.startswith("/") and command[1:].isalpha():
            out.write(_slash_command(session, command, arg.strip()))
        else:
            _answer(session, line)
        out.flush()


def _slash_command(session: ChatSession, command: str, arg: str) -> str:
    """Run ``/reset``, ``/save FILE`` or ``/system TEXT``; the line to show."""
    if command == "/reset":
        session.reset()
        return "[conversation reset]\n"
    if command == "/save":
        if not arg:
            return "[usage: /save FILE]\n"
        try:
            session.save(arg)
        except OSError as exc:
            return f"[cannot save to {arg}: {exc.strerror or exc}]\n"
        return f"[saved {len(session.history) // 2} rounds to {arg}]\n"
    if command == "/system":
        session.system = arg
        return f"[system prompt {'set' if session.system else 'cleared'}]\n"
    return f"[unknown command {command}; {HELP}]\n"


def _answer(session: ChatSession, line: str) -> None:
    """Stream the model's reply to ``line``; Ctrl-C stops it, and the conversation goes on."""
    from .session import ChatError

    out = sys.stdout
    out.write("Assistant: ")
    out.flush()
    try:
        for piece in session.send(line):
            out.write(piece)
            out.flush()
    except KeyboardInterrupt:
        out.write(" [interrupted]")
    except ChatError as exc:
        out.write(f"[error: {exc}]")
    out.write("\n")


def register(app: typer.Typer) -> None:
    @app.command("chat", help="Chat with a model in the terminal, streaming (local folder, smollm2-135m, or endpoint).")
    def chat(
        model: Annotated[Optional[str], typer.Argument(help="Model folder or smollm2-135m (or --base-url).")] = None,
        base_url: CHAT.BaseURL = None,
        endpoint_model: CHAT.Model = None,
        api_key_env: CHAT.APIKeyEnv = None,
        system: Annotated[Optional[str], typer.Option(help="System prompt (default: the model's).")] = None,
        template: Annotated[str, typer.Option(help="auto (recorded at training), chat or ultralm.")] = "auto",
        temperature: CHAT.Temperature = 0.7,
        top_p: CHAT.TopP = 0.95,
        max_new_tokens: CHAT.MaxTokens = 2000,
    ) -> None:
        from .session import ChatSession, EndpointChatModel, LocalChatModel

        if base_url:
            name = endpoint_model or model
            if not name:
                fail("--base-url needs --model NAME (the model name at the endpoint)")
            cfg = model_config("openai", str(name), base_url, api_key_env)
            backend = EndpointChatModel(cfg.base_url or base_url, cfg.model, os.environ.get(cfg.api_key_env))
        elif model or endpoint_model:
            backend = run_guarded(lambda: LocalChatModel(str(model or endpoint_model), template))
        else:
            fail("give a MODEL folder (or smollm2-135m), or --base-url URL --model NAME")
        # the shared flag types allow None, but these flags have defaults Typer never unsets
        assert temperature is not None and top_p is not None and max_new_tokens is not None
        session = ChatSession(backend, system, temperature, top_p, max_new_tokens)
        console.print(f"chatting with {backend.name} (template {backend.template}); {HELP}", highlight=False)
        if sys.stdin.isatty():
            import readline  # noqa: F401 - line editing and history for input()
        _loop(session)
