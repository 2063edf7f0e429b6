"""A multi-turn chat session over a local model or an OpenAI-compatible endpoint, streaming.

The session keeps the history and the system prompt; a model only turns messages into a
stream of text pieces. Local models use the chat template recorded by ``ultrachat train``
(``ultrachat-train.json``): a model trained with the UltraLM template gets the UltraLM format
and its system line by default.

Example::

    session = ChatSession(LocalChatModel("smollm2-135m"), max_new_tokens=64)
    for piece in session.send("What is a comet?"):
        print(piece, end="", flush=True)
    session.save("chats.jsonl")
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections import Counter
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..train.formatting import TRAIN_RECORD, ULTRALM_SYSTEM, render, resolve_template

if TYPE_CHECKING:
    from ..backends.http import HttpClient

Message = dict[str, str]


class ChatError(ValueError):
    """A model or endpoint that cannot answer; one line for the user."""


class ChatModel(Protocol):
    name: str
    template: str  # "chat", "ultralm" or "endpoint"
    default_system: str

    def stream(self, messages: list[Message], temperature: float, top_p: float, max_new_tokens: int) -> Iterator[str]:
        """Yield the reply to ``messages`` piece by piece."""


def read_record(model_dir: Path) -> dict[str, Any]:
    """The training record of a model folder (empty for models not trained here)."""
    path = model_dir / TRAIN_RECORD
    return dict(json.loads(path.read_text(encoding="utf-8"))) if path.exists() else {}


class LocalChatModel:
    """A Hugging Face model folder (or the embedded ``smollm2-135m``) run with transformers.

    ``template``: ``auto`` (the recorded one, else the model's chat template), ``chat`` or ``ultralm``.
    """

    def __init__(self, model: str, template: str = "auto") -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        from ..train.sft import model_path

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        path = Path(model_path(model))
        if not (path / "config.json").exists():
            raise ChatError(f"{model}: not a Hugging Face model folder (no config.json)")
        record = read_record(path)
        self.name = model
        self.template = record.get("template", "chat") if template == "auto" else template
        self.tok = AutoTokenizer.from_pretrained(path)
        # A folder trained here records the exact template it was trained with.
        self.chat_template = record["chat_template"] if template == "auto" and "chat_template" in record \
            else resolve_template(self.template, self.tok)
        self.default_system = record.get("system") or (ULTRALM_SYSTEM if self.template == "ultralm" else "")
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        self.context = int(getattr(self.model.config, "max_position_embeddings", 2048))

    def _prompt_ids(self, messages: list[Message], max_new_tokens: int) -> Any:
        """Token ids of the prompt, dropping the oldest rounds while it does not fit the context."""
        messages = list(messages)
        while True:
            text = render(self.tok, self.chat_template, messages, generation_prompt=True)
            ids = self.tok(text, add_special_tokens=False, return_tensors="pt").input_ids
            first = 1 if messages[0]["role"] == "system" else 0
            if ids.shape[1] + max_new_tokens <= self.context or len(messages) - first <= 1:
                return ids[:, -max(1, self.context - max_new_tokens):]
            del messages[first : first + 2]

    def stream(self, messages: list[Message], temperature: float, top_p: float, max_new_tokens: int) -> Iterator[str]:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        ids = self._prompt_ids(messages, max_new_tokens)
        streamer = TextIteratorStreamer(self.tok, skip_prompt=True, skip_special_tokens=True)
        stop = threading.Event()  # set when the reader goes away (Ctrl-C): generation stops too

        class _Stop(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                return torch.full((input_ids.shape[0],), stop.is_set(), dtype=torch.bool)

        sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature > 0 \
            else {"do_sample": False}
        kwargs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "streamer": streamer,
                  "max_new_tokens": max_new_tokens, "eos_token_id": self.tok.eos_token_id,
                  "pad_token_id": self.tok.pad_token_id or self.tok.eos_token_id,
                  "stopping_criteria": StoppingCriteriaList([_Stop()]), **sampling}
        errors: list[BaseException] = []

        def run() -> None:
            try:
                with torch.inference_mode():
                    self.model.generate(**kwargs)
            except BaseException as exc:  # re-raised in the caller's thread
                errors.append(exc)
                streamer.end()

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        try:
            yield from streamer
        finally:
            stop.set()
            worker.join()
        if errors:
            raise ChatError(f"generation failed: {errors[0]}")


class EndpointChatModel:
    """Any OpenAI-compatible ``/chat/completions`` endpoint, streamed with server-sent events
    through the shared HTTP client (``/v1`` added to a bare host, failures before the reply
    starts retried with backoff, ``Retry-After`` honoured).

    A server that ignores ``stream`` and answers with one JSON body works too.
    """

    template = "endpoint"
    default_system = ""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout_s: float = 120.0,
                 max_retries: int = 3, backoff_base_s: float = 0.5) -> None:
        from ..backends.http import normalize_base_url

        self.base_url, self.name = base_url, model
        self.url = normalize_base_url(base_url) + "/chat/completions"
        self.api_key, self.timeout_s = api_key, timeout_s
        self.max_retries, self.backoff_base_s = max_retries, backoff_base_s
        #: the client of the last reply (open only while a reply streams)
        self.http: HttpClient | None = None

    @property
    def stats(self) -> Counter[str]:
        """Attempts, retries and failures of the last reply (see HttpClient.stats)."""
        return self.http.stats if self.http else Counter()

    def stream(self, messages: list[Message], temperature: float, top_p: float, max_new_tokens: int) -> Iterator[str]:
        """Pieces of the reply; the async client runs on a private event loop, one step per piece."""
        loop = asyncio.new_event_loop()
        pieces = self._pieces(messages, temperature, top_p, max_new_tokens)
        step: asyncio.Future[str] | None = None
        try:
            while True:
                step = asyncio.ensure_future(anext(pieces), loop=loop)
                try:
                    piece = loop.run_until_complete(step)
                except StopAsyncIteration:
                    return
                yield piece
        finally:
            # Ctrl-C while waiting for the server leaves the step running: cancel it, so the
            # generator closes its connection and the next message starts clean.
            if step is not None and not step.done():
                step.cancel()
                with contextlib.suppress(BaseException):
                    loop.run_until_complete(step)
            loop.run_until_complete(pieces.aclose())
            loop.close()

    async def _pieces(self, messages: list[Message], temperature: float, top_p: float,
                      max_new_tokens: int) -> AsyncGenerator[str, None]:
        import orjson

        from ..backends import BackendError
        from ..backends.http import HttpClient, RequestFailed

        body = orjson.dumps({"model": self.name, "messages": messages, "temperature": temperature, "top_p": top_p,
                             "max_tokens": max_new_tokens, "stream": True})
        self.http = http = HttpClient(self.base_url, api_key=self.api_key, timeout_s=self.timeout_s,
                                      max_in_flight=1, max_retries=self.max_retries,
                                      backoff_base_s=self.backoff_base_s)
        try:
            async with http:
                async for event in http.stream("/chat/completions", body):
                    choice = (event.get("choices") or [{}])[0]
                    piece = (choice.get("delta") or choice.get("message") or {}).get("content")
                    if piece:
                        yield piece
        except (RequestFailed, BackendError) as exc:
            raise ChatError(f"{self.url}: {exc}") from None
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise ChatError(f"{self.url}: unexpected reply ({exc!r})") from None


class ChatSession:
    """History, system prompt and sampling settings (UltraLM defaults) around a :class:`ChatModel`."""

    def __init__(self, model: ChatModel, system: str | None = None, temperature: float = 0.7, top_p: float = 0.95,
                 max_new_tokens: int = 2000) -> None:
        self.model = model
        self.system = model.default_system if system is None else system
        self.temperature, self.top_p, self.max_new_tokens = temperature, top_p, max_new_tokens
        self.history: list[Message] = []

    def messages(self, user: str | None = None) -> list[Message]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        tail = [{"role": "user", "content": user}] if user is not None else []
        return head + self.history + tail

    def send(self, text: str) -> Iterator[str]:
        """Stream the reply to ``text``; the round joins the history once the reply is complete."""
        pieces: list[str] = []
        for piece in self.model.stream(self.messages(text), self.temperature, self.top_p, self.max_new_tokens):
            pieces.append(piece)
            yield piece
        self.history += [{"role": "user", "content": text}, {"role": "assistant", "content": "".join(pieces).strip()}]

    def reset(self) -> None:
        self.history = []

    def save(self, path: str | Path) -> dict[str, Any]:
        """Append the conversation to ``path`` as an UltraChat JSONL line; returns the line."""
        line = {"id": f"chat-{int(time.time() * 1000)}", "data": [m["content"] for m in self.history],
                "meta": {"source": "ultrachat chat", "model": self.model.name, "template": self.model.template,
                         "system": self.system, "temperature": self.temperature, "top_p": self.top_p,
                         "max_new_tokens": self.max_new_tokens}}
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(line, ensure_ascii=False) + "\n")
        return line
