"""Turn dialogues into training sequences: template, assistant-only labels, round splitting.

Two templates are selectable:

* ``chat``: the model's own chat template (``tokenizer.chat_template``);
* ``ultralm``: the UltraLM format ``User: {u}</s>\\nAssistant: {a}</s>\\nUser: ...`` where
  ``</s>`` stands for the tokenizer's end-of-sequence token (and ``<s>`` is prefixed when the
  tokenizer normally adds one).

Both are handled the same way: the template is a Jinja chat template; the whole dialogue is
rendered once, the characters of each assistant reply (and its end-of-turn token) are found by
rendering the prefixes, and tokens are labelled through the tokenizer's offset mapping. Only
those tokens carry labels; every other label is ``-100``.

A dialogue longer than ``max_length`` tokens is split at round boundaries: each piece trains
on whole rounds and starts with up to half a window of the rounds before it as (unlabelled)
context, so later answers still see what was said earlier.

Example::

    tok = AutoTokenizer.from_pretrained(model_dir)
    template = resolve_template("ultralm", tok)
    for piece in split_dialogue(to_messages({"data": ["Hi", "Hello!"]}), tok, template, 2048):
        print(len(piece.input_ids), sum(label != -100 for label in piece.labels))
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

IGNORE_INDEX = -100
TEMPLATES = ("chat", "ultralm")
# Written into every checkpoint and the final model folder; `ultrachat chat` reads it.
TRAIN_RECORD = "ultrachat-train.json"
ULTRALM_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives "
                  "helpful, very detailed, and polite answers to the user's questions.")

_ULTRALM_BODY = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}Assistant: {{ message['content'] }}{{ eos_token }}\n"
    "{% else %}User: {{ message['content'] }}{{ eos_token }}\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


class TemplateError(ValueError):
    """A chat template that cannot be used for assistant-only labels."""


@dataclass
class Piece:
    """One training sequence: token ids and labels (``-100`` where no loss is taken)."""

    input_ids: list[int]
    labels: list[int]
    round_ends: list[int]  # token index just after each round's end-of-turn
    truncated: bool = False

    def __len__(self) -> int:
        return len(self.input_ids)


def adds_bos(tokenizer: Any) -> bool:
    """Whether plain encoding starts with the BOS token (Llama-style tokenizers do)."""
    if tokenizer.bos_token_id is None:
        return False
    ids = tokenizer("a").input_ids
    return bool(ids) and ids[0] == tokenizer.bos_token_id


def ultralm_template(tokenizer: Any) -> str:
    """The UltraLM Jinja template for ``tokenizer`` (``<s>`` only where the model expects one)."""
    return ("{{ bos_token }}" if adds_bos(tokenizer) else "") + _ULTRALM_BODY


def resolve_template(name: str, tokenizer: Any) -> str:
    """The Jinja template for ``name`` (``chat`` or ``ultralm``)."""
    if name == "ultralm":
        return ultralm_template(tokenizer)
    if name != "chat":
        raise TemplateError(f"template '{name}' is unknown; choose one of {', '.join(TEMPLATES)}")
    if not getattr(tokenizer, "chat_template", None):
        raise TemplateError("the model's tokenizer has no chat template; use --template ultralm")
    return str(tokenizer.chat_template)


def render(tokenizer: Any, template: str, messages: list[dict[str, str]], generation_prompt: bool = False) -> str:
    return str(tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False,
                                             add_generation_prompt=generation_prompt))


def encode(messages: list[dict[str, str]], tokenizer: Any, template: str, train_from_round: int = 0) -> Piece:
    """Tokenize a whole dialogue; label the replies of rounds ``>= train_from_round``.

    The labelled span of a reply runs from the end of the generation prompt to the end of the
    rendered reply minus trailing whitespace, so it holds the reply and its end-of-turn token.
    """
    text = render(tokenizer, template, messages)
    spans: list[tuple[int, int]] = []
    ends: list[int] = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prompt = render(tokenizer, template, messages[:i], generation_prompt=True)
        upto = render(tokenizer, template, messages[: i + 1])
        if not (upto.startswith(prompt) and text.startswith(upto)):
            raise TemplateError("the chat template does not render a conversation as the continuation of its "
                                "shorter prefixes, so replies cannot be located; use --template ultralm")
        spans.append((len(prompt), len(upto.rstrip())))
        ends.append(len(upto))
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = list(enc["input_ids"])
    starts = [s for s, _ in enc["offset_mapping"]]
    labels = [IGNORE_INDEX] * len(ids)
    trained = spans[train_from_round:]
    for t, s in enumerate(starts):
        if any(a <= s < b for a, b in trained):
            labels[t] = ids[t]
    # Tokens after the last reply (a template's trailing newline) predict nothing: drop them.
    keep = sum(1 for s in starts if s < spans[-1][1]) if spans else len(ids)
    round_ends = [min(keep, sum(1 for s in starts if s < end)) for end in ends]
    return Piece(ids[:keep], labels[:keep], round_ends)


def split_dialogue(messages: list[dict[str, str]], tokenizer: Any, template: str, max_length: int) -> Iterator[Piece]:
    """Yield pieces of at most ``max_length`` tokens, cut at round boundaries.

    Each piece trains on whole rounds; rounds before them are added as unlabelled context up
    to half the window. A single round longer than the window is truncated (``truncated``);
    a piece left without any labelled token is skipped.
    """
    full = encode(messages, tokenizer, template)
    if len(full) <= max_length:
        yield full
        return
    system = messages[:1] if messages[0]["role"] == "system" else []
    body = messages[len(system):]
    rounds = [body[i : i + 2] for i in range(0, len(body), 2)]
    # Round lengths from the full encoding (round 0 includes the header): a planning estimate,
    # checked against the real encoding of each piece below.
    lengths = [e - (full.round_ends[k - 1] if k else 0) for k, e in enumerate(full.round_ends)]
    n, a = len(rounds), 0
    while a < n:
        c, context = a, 0
        while c > 0 and context + lengths[c - 1] <= max_length // 2:
            c -= 1
            context += lengths[c]
        b, used = a + 1, context + lengths[a]
        while b < n and used + lengths[b] <= max_length:
            used += lengths[b]
            b += 1
        while True:
            piece = encode(system + [m for r in rounds[c:b] for m in r], tokenizer, template, a - c)
            if len(piece) <= max_length or (b == a + 1 and c == a):
                break
            if c < a:
                c += 1
            else:
                b -= 1
        if len(piece) > max_length:
            piece = Piece(piece.input_ids[:max_length], piece.labels[:max_length],
                          [min(e, max_length) for e in piece.round_ends], truncated=True)
        if any(label != IGNORE_INDEX for label in piece.labels):
            yield piece
        a = b
