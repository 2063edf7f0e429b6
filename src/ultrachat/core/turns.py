"""Cheap checks on each generated turn: no extra model calls.

* :func:`strip_role_prefix` removes "User:", "Assistant:", "Question:"... prefixes and
  wrapping quotes that small models add.
* :func:`is_politeness_only` spots user turns that only thank or greet.
* :func:`confounding_reason` spots a simulated user that answers like the assistant
  (role confounding);
* :func:`repair_user_turn` applies all of these to a raw user-model reply and, when the
  reply rambles but contains a usable question, keeps just that question.

The rules were checked against real outputs of the embedded model kept, with a human
verdict on each, in ``tests/fixtures/confounding.jsonl``.
"""

from __future__ import annotations

import re

_ROLE = (r"(?:user|human|person|me|you|assistant|ai|bot|chatbot|gpt|smollm|question|q|answer|a|message|"
         r"next message|follow[- ]up(?: question)?|response|reply|用户|助手|问题|回答|人)")
_PREFIX = re.compile(rf"^\s*(?:\*\*)?{_ROLE}\s*(?:\d+)?\s*(?:\*\*)?\s*[:：]\s*(?:\*\*)?\s*", re.I)
_QUOTES = "\"“”'‘’"

_POLITE = re.compile(
    r"^(?:(?:thanks?|thank you|thx|many thanks|cheers|great|awesome|perfect|ok(?:ay)?|cool|got it|"
    r"i see|you'?re welcome|no problem|bye|goodbye|have a (?:nice|good|great) (?:day|one)|"
    r"that(?:'s| is| was) (?:great|helpful|very helpful|all|perfect)|this is (?:great|helpful)|"
    r"you'?ve been (?:very |so )?helpful|i appreciate (?:it|that|your help)|much appreciated|"
    r"so much|very much|a lot|for (?:the|your) (?:help|answer|information|explanation)|again)"
    r"[\s,.!:;)]*)+$",
    re.I,
)

# Openers an assistant uses and a user asking for help does not.
_ASSISTANT_OPENERS = re.compile(
    r"^\s*(?:(?:and|so|but|well|okay|ok),?\s+)?"
    r"(?:sure|certainly|of course|absolutely|great question|good question|that'?s a (?:great|good) question|"
    r"as an ai|i'?m an ai|i am an ai|i'?d be (?:happy|glad) to|i can help|here (?:is|are)|"
    r"yes,? (?:it is|there are|you can)|no,? (?:it is not|you cannot)|in summary|to answer your question|"
    r"thank you for (?:your|the) question|you'?re (?:right|welcome)|there are (?:several|many)|"
    r"it depends|the answer is|in conclusion|hello!? (?:how can i|i'?m)|would you like|what would you like|"
    r"how can i (?:help|assist)|what is the answer|my apologies|i apologi[sz]e)",
    re.I,
)
_LIST_LINE = re.compile(r"^\s*(?:\d+[.)]|[-*•])\s+\S", re.M)
# A simulated user sometimes goes on to write the assistant's part too.
_ANSWER_LABEL = re.compile(r"\n\s*(?:\*\*)?(?:assistant|ai|answer|response)\s*(?:\*\*)?\s*:", re.I)
_WORD = re.compile(r"\w+")


def strip_role_prefix(text: str) -> str:
    """Remove leading role labels and quotes wrapping the whole message."""
    text = text.strip()
    for _ in range(3):
        new = _PREFIX.sub("", text, count=1).strip()
        if new == text:
            break
        text = new
    if len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES and text.count(text[0]) <= 2:
        text = text[1:-1].strip()
    elif text[:1] in _QUOTES and sum(text.count(q) for q in _QUOTES) == 1:
        text = text[1:].strip()  # an opening quote the model never closed
    return _ANSWER_LABEL.split(text, maxsplit=1)[0].strip()


def is_politeness_only(text: str) -> bool:
    """True for a turn that only thanks, greets or closes ("Thank you!", "You're welcome")."""
    return bool(_POLITE.match(text.strip())) if text.strip() else False


# Talk about the task instead of taking part in the dialogue.
_META = re.compile(r"\b(?:the|this) conversation\b|\bnext message\b|\bfollow-up questions?\b|\bcurious person\b|"
                   r"\bhere'?s (?:the|a) (?:next )?(?:message|question)\b|\bthe (?:person|user) (?:asks|asked)\b|"
                   r"\bnext question\b",
                   re.I)
# A request without a question mark starts with an imperative or a polite ask.
_REQUEST = re.compile(
    r"^\s*(?:please|tell|explain|describe|give|show|help|list|write|compare|suggest|recommend|make|add|rewrite|"
    r"summari[sz]e|translate|shorten|expand|continue|change|use|try|now|also|include|turn|keep|remove|"
    r"(?:can|could|would|will) you|i (?:want|need|would like|wonder))\b",
    re.I,
)
# Said by an assistant anywhere in a message, never by the user it simulates.
_ASSISTANT_ANYWHERE = re.compile(
    r"\b(?:i am|i'?m) (?:an? )?(?:helpful |friendly )?(?:ai|assistant|language model)\b|"
    r"\b(?:happy|glad) to (?:answer|help|assist)\b|\bas an ai\b", re.I)
_SENTENCE = re.compile(r"[^.!?\n\"“”]*\?")


def _asks(text: str) -> bool:
    return "?" in text or _REQUEST.match(text) is not None


def confounding_reason(user_text: str) -> str | None:
    """Why a simulated user turn reads like an assistant's answer, or ``None``.

    Rules: an assistant's opener or self-description; talk about the task; a structured
    answer (a list of 3+ items or several paragraphs) with no question; a turn too long
    for a user, or with no question or request.
    """
    text = user_text.strip()
    if not text:
        return "empty"
    if _ASSISTANT_OPENERS.match(text):
        return "assistant opener"
    words = text.split()
    asks = _asks(text)
    if _ASSISTANT_ANYWHERE.search(text):
        return "speaks as the assistant"
    if _META.search(text):
        return "talks about the task"
    if len(_LIST_LINE.findall(text)) >= 3 and "?" not in text:
        return "structured answer"
    if text.count("\n\n") >= 2 and not asks:
        return "structured answer"
    if len(words) > 60 and not asks:
        return "long statement without a question"
    if len(words) > 120:
        return "too long for a user turn"
    if not asks:
        return "neither a question nor a request"
    return None


def extract_question(text: str) -> str | None:
    """The first well-formed question in a rambling reply ("What a great topic! How does
    X work? The answer is...") that is neither an assistant's offer nor talk about the task."""
    for match in _SENTENCE.finditer(text):
        candidate = strip_role_prefix(match.group(0).strip(" -*:'\u2018\u2019"))
        n = len(candidate.split())
        if 4 <= n <= 40 and candidate[0].isupper() and confounding_reason(candidate) is None:
            return candidate
    return None


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def repair_user_turn(raw: str, finish_reason: str, turns: list[str]) -> tuple[str, str | None]:
    """Clean a user-simulator reply; returns ``(text, None)`` when usable, else ``(text, reason)``.

    ``turns`` is the dialogue so far (ending with the assistant's reply). A reply cut off by
    max_tokens, or one that fails :func:`confounding_reason`, is still usable when it holds
    a question of its own; a turn that repeats an earlier user turn is not.
    """
    text = strip_role_prefix(raw)
    if is_politeness_only(text):
        return text, "politeness"
    why = "cut off by max_tokens" if finish_reason == "length" else confounding_reason(text)
    if why:
        found = extract_question(text)
        if found is None:
            return text, why
        text = found
    first = _SENTENCE.search(text)
    asked = _words(first.group(0) if first else text)
    if any(asked == _words(earlier) for earlier in turns[0::2]):
        return text, "repeats an earlier question"
    return text, None
