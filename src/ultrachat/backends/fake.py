"""A deterministic scripted backend for unit tests. Never a user's default.

With no script it answers from a hash of the messages: list requests get a numbered
list, user-simulator requests get a question, anything else a short answer. A script
(list of replies, or a callable) overrides that for targeted tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Union

from .base import Backend, Completion, FinishReason, GenerationParams, Message, Usage
from .shaped import default_reply

Reply = Union[str, Completion]
Script = Union[list[Reply], Callable[[list[Message], GenerationParams], Reply]]


class FakeBackend(Backend):
    """Deterministic replies, optional per-call delay (seconds) to imitate latency."""

    def __init__(self, script: Script | None = None, delay: float = 0.0, model_name: str = "fake") -> None:
        self._script = script
        self._delay = delay
        self.model_name = model_name
        self.calls: list[list[Message]] = []

    @classmethod
    def from_model_string(cls, model: str) -> FakeBackend:
        """``"fake"`` or ``"fake;delay=0.01"`` (options after ``;``)."""
        name, _, opts = model.partition(";")
        options = dict(kv.split("=", 1) for kv in opts.split(",") if "=" in kv)
        return cls(delay=float(options.get("delay", 0.0)), model_name=name or "fake")

    async def complete(self, messages: list[Message], params: GenerationParams) -> Completion:
        self.calls.append(messages)
        if self._delay:
            await asyncio.sleep(self._delay)
        if self._script is None:
            reply: Reply = default_reply(messages, params)
        elif callable(self._script):
            reply = self._script(messages, params)
        else:
            reply = self._script.pop(0)
        if isinstance(reply, Completion):
            return reply
        words = reply.split()
        finish: FinishReason = "length" if len(words) > params.max_tokens else "stop"
        text = " ".join(words[: params.max_tokens]) if finish == "length" else reply
        usage = Usage(prompt_words(messages), min(len(words), params.max_tokens))
        return Completion(text, finish, usage, self.model_name)


def prompt_words(messages: list[Message]) -> int:
    """The fake backend's (and mock server's) prompt tokens: the messages' words."""
    return sum(len(str(m.get("content", "")).split()) for m in messages)
