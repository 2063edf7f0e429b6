"""The one interface every model backend implements.

A backend turns a list of chat messages plus per-call parameters into a
:class:`Completion`. The dialogue engine only ever sees this interface, so the
embedded model, an HTTP endpoint or a cluster engine plug in without touching it.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Literal

from ..core.errors import UserError

#: the id of the dialogue being generated in this task (set by the dialogue runner), so a
#: backend with per-replica caches can send every call of one dialogue to one replica
DIALOGUE: ContextVar[str | None] = ContextVar("ultrachat_dialogue", default=None)

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": str}
FinishReason = Literal["stop", "length", "error"]


@dataclass(frozen=True)
class GenerationParams:
    """Sampling settings for one call. ``seed`` makes a sampled call reproducible."""

    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: int = 256
    seed: int | None = None
    stop: tuple[str, ...] = ()


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(self, other: Usage) -> None:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens


@dataclass
class Completion:
    text: str
    finish_reason: FinishReason = "stop"
    usage: Usage = field(default_factory=Usage)
    model: str = ""
    #: a reasoning model's reasoning, where the backend was asked to keep it (``keep_reasoning``)
    reasoning: str = ""


#: pieces no tokenizer merges across: a digit (Qwen and Llama 2 split numbers into digits), a
#: run of letters, a punctuation mark (code and tables are dense with them)
_PIECES = re.compile(r"\d|[^\W\d]+|[^\w\s]")


def prompt_tokens_estimate(messages: list[Message]) -> int:
    """A prompt's tokens, estimated high when no tokenizer is at hand: UTF-8 bytes / 3, or the
    text's pieces (digits, letter runs, punctuation marks) where there are more, plus 4 a
    message for the chat template. English runs about 4 bytes a token (so a third too many); a
    CJK character is 3 bytes and about one token; digits and code run up to a token a byte."""
    return sum(max(len(m["content"].encode("utf-8")) // 3, len(_PIECES.findall(m["content"]))) + 4
               for m in messages)


def min_room(cap: int) -> int:
    """The fewest tokens worth a call capped at ``cap``: a quarter of it (at least 1). Caps are
    sized to hold a whole reply with room to spare (the ``real`` profile's 2,048 for answers
    that run a few hundred tokens); under a quarter most replies would come back cut, so the
    call would spend its prompt on a turn the dialogue cannot keep."""
    return max(1, -(-cap // 4))


async def fitted_cap(backend: Backend, cap: int, window: int | None, messages: list[Message],
                     estimate: int) -> int | None:
    """:func:`context_cap` for ``messages`` whose size is ``estimate`` (erring high). Unless the
    call would fit even were the prompt twice the estimate, the backend's own count
    (:meth:`Backend.count_tokens`) decides where it has one: a call near the end of the window
    gets all the room there is, and a prompt the estimate got wrong no more than there is."""
    if window and 2 * estimate + cap > window and (counted := await backend.count_tokens(messages)) is not None:
        return context_cap(cap, window, counted)
    return context_cap(cap, window, estimate)


def context_cap(cap: int, window: int | None, prompt_tokens: int) -> int | None:
    """A call's ``max_tokens``: ``min(cap, window - prompt_tokens)``, so prompt plus reply fit
    the context window (a server such as vLLM refuses a request that does not, HTTP 400);
    ``cap`` when the window is unknown; ``None`` when the room left is under :func:`min_room`."""
    if not window:
        return cap
    room = window - prompt_tokens
    return min(cap, room) if room >= min_room(cap) else None


class BackendError(UserError, RuntimeError):
    """A failure the run cannot recover from (bad key, missing model, endpoint down)."""


class Backend(ABC):
    """Async chat-completion backend.

    Subclasses implement :meth:`complete`; :meth:`start` and :meth:`close` are
    optional hooks for loading weights or opening connection pools.

    Example::

        backend = make_backend(ModelConfig(backend="local"))
        await backend.start()
        out = await backend.complete([{"role": "user", "content": "Hi"}], GenerationParams())
        print(out.text, out.finish_reason, out.usage.total_tokens)
    """

    #: name recorded in each dialogue's ``meta.models``
    model_name: str = ""

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Load weights / check the endpoint. Called once before the first call."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""

    async def context_length(self) -> int | None:
        """The model's context window in tokens, where the backend can tell (``None``: unknown).
        A wrapper (one with an ``inner`` backend: cache, meter) asks the backend it wraps."""
        inner = getattr(self, "inner", None)
        return await inner.context_length() if isinstance(inner, Backend) else None

    async def count_tokens(self, messages: list[Message]) -> int | None:
        """The tokens of a prompt of ``messages``, chat template included, as the model counts
        them, where the backend can tell (``None``: unknown; wrappers ask the backend they wrap)."""
        inner = getattr(self, "inner", None)
        return await inner.count_tokens(messages) if isinstance(inner, Backend) else None

    @abstractmethod
    async def complete(self, messages: list[Message], params: GenerationParams) -> Completion:
        """Return the model's reply to ``messages``."""
