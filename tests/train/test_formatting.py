"""Sequence formatting: templates, assistant-only labels, round-boundary splitting."""

from __future__ import annotations

import pytest

from ultrachat.core.records import to_messages
from ultrachat.train.formatting import (
    IGNORE_INDEX,
    TemplateError,
    encode,
    resolve_template,
    split_dialogue,
)

DIALOGUE = ["What is the capital of France?", "The capital of France is Paris.",
            "And of Spain?", "The capital of Spain is Madrid.",
            "Which one is larger?", "Madrid is larger than Paris by area."]


@pytest.fixture(scope="module")
def embedded_tok(embedded_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(embedded_model_dir)


def labelled_text(tok, piece) -> str:
    return tok.decode([i for i, lab in zip(piece.input_ids, piece.labels, strict=True) if lab != IGNORE_INDEX])


def unlabelled_text(tok, piece) -> str:
    return tok.decode([i for i, lab in zip(piece.input_ids, piece.labels, strict=True) if lab == IGNORE_INDEX])


def test_to_messages_reads_both_layouts_and_drops_an_unanswered_turn():
    assert to_messages({"data": ["q", "a", "q2"]}) == [{"role": "user", "content": "q"},
                                                        {"role": "assistant", "content": "a"}]
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    assert to_messages({"messages": msgs}) == msgs
    assert to_messages({"data": ["only a question"]}) == []
    with pytest.raises(ValueError, match="role 'bot'"):
        to_messages({"messages": [{"role": "bot", "content": "x"}]})
    with pytest.raises(ValueError, match="neither"):
        to_messages({"text": "x"})


def test_ultralm_format_and_labels(embedded_tok):
    tok = embedded_tok
    template = resolve_template("ultralm", tok)
    piece = encode(to_messages({"data": DIALOGUE}), tok, template)
    eos = tok.eos_token
    text = tok.decode(piece.input_ids)
    assert text == (f"User: {DIALOGUE[0]}{eos}\nAssistant: {DIALOGUE[1]}{eos}\nUser: {DIALOGUE[2]}{eos}\n"
                    f"Assistant: {DIALOGUE[3]}{eos}\nUser: {DIALOGUE[4]}{eos}\nAssistant: {DIALOGUE[5]}{eos}")
    # Loss on every reply and its end-of-sequence token, nothing else.
    assert labelled_text(tok, piece) == "".join(f" {a}{eos}" for a in DIALOGUE[1::2])
    masked = unlabelled_text(tok, piece)
    for question in DIALOGUE[::2]:
        assert question in masked
    assert all(lab in (IGNORE_INDEX, tid) for tid, lab in zip(piece.input_ids, piece.labels, strict=True))


def test_model_chat_template_labels_reply_and_end_of_turn(embedded_tok):
    tok = embedded_tok
    piece = encode(to_messages({"data": DIALOGUE[:4]}), tok, resolve_template("chat", tok))
    assert labelled_text(tok, piece) == f"{DIALOGUE[1]}<|im_end|>{DIALOGUE[3]}<|im_end|>"
    assert "<|im_start|>user" in unlabelled_text(tok, piece)
    assert tok.decode(piece.input_ids).endswith("<|im_end|>")  # trailing newline (no loss) dropped


def test_system_prompt_is_context_only(embedded_tok):
    tok = embedded_tok
    msgs = [{"role": "system", "content": "Be terse."}, *to_messages({"data": DIALOGUE[:2]})]
    piece = encode(msgs, tok, resolve_template("ultralm", tok))
    assert tok.decode(piece.input_ids).startswith(f"User: Be terse.{tok.eos_token}\nUser: {DIALOGUE[0]}")
    assert "terse" not in labelled_text(tok, piece)


def test_long_dialogue_is_split_at_round_boundaries_with_context(embedded_tok):
    tok = embedded_tok
    template = resolve_template("ultralm", tok)
    msgs = to_messages({"data": DIALOGUE})
    full = encode(msgs, tok, template)
    longest_round = max(b - a for a, b in zip([0, *full.round_ends], full.round_ends, strict=False))
    max_length = 2 * longest_round + 2  # two rounds a piece; half a window holds one round of context
    assert len(full) > max_length
    pieces = list(split_dialogue(msgs, tok, template, max_length))
    assert len(pieces) >= 2
    assert all(len(p) <= max_length and not p.truncated for p in pieces)
    # Every reply is trained exactly once, whole, in order.
    assert "".join(labelled_text(tok, p) for p in pieces) == labelled_text(tok, full)
    for p in pieces:
        assert labelled_text(tok, p).endswith(tok.eos_token)
    # Later pieces carry earlier rounds as unlabelled context.
    later = pieces[-1]
    assert tok.decode(later.input_ids).startswith("User: ")
    assert any(q in unlabelled_text(tok, later) for q in DIALOGUE[:4:2])


def test_a_single_oversized_round_is_truncated(embedded_tok):
    tok = embedded_tok
    msgs = to_messages({"data": ["Tell me everything.", "word " * 200]})
    pieces = list(split_dialogue(msgs, tok, resolve_template("ultralm", tok), 64))
    assert len(pieces) == 1 and pieces[0].truncated and len(pieces[0]) == 64


def test_templates_that_cannot_locate_replies_are_refused(embedded_tok):
    tok = embedded_tok
    shuffled = "{% for m in messages|reverse %}{{ m['content'] }}\n{% endfor %}"
    with pytest.raises(TemplateError, match="--template ultralm"):
        encode(to_messages({"data": DIALOGUE[:4]}), tok, shuffled)
    with pytest.raises(TemplateError, match="unknown"):
        resolve_template("alpaca", tok)
