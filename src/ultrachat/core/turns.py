"""Cheap checks on each generated turn: no extra model calls.

* :func:`strip_role_prefix` removes "User:", "Assistant:", "Question:"... prefixes and
  wrapping quotes that small models add.
* :func:`is_politeness_only` spots user turns that only thank or greet.
* :func:`confounding_reason` spots a simulated user that answers like the assistant
  (role confounding);
* :func:`repair_user_turn` applies all of these to a raw user-model reply and, when the
  reply rambles but contains a usable question, keeps just that question.

The checks have two strictness profiles. ``small`` (the embedded 135M model) accepts
only questions and requests; it was checked against real outputs of the embedded model
kept, with a human verdict on each, in ``tests/fixtures/confounding.jsonl``. ``real`` (a
real model's user simulator) accepts what real users write, statements and keyword
queries included, and flags what real assistants write; its rules were tuned on real
English and Chinese chats and measured on a held-out part (``python -m benchmarks
user_turns``, docs/benchmarks.md).
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
    r"so much|very much|a lot|for (?:the|your) (?:help|answer|information|explanation)|again|"
    r"好的?|行|嗯+|哦|噢|收到|谢谢(?:你|您)?|多谢|(?:非常|十分)?感谢(?:你|您)?|再见|拜拜|明白了?|知道了|了解了?|没问题|"
    r"辛苦了?|我问完了|太好了|可以了|谢谢你的(?:帮助|贴心服务|回答))"
    r"[了啊呀哈啦吧的]*[\s,.!:;)，。！~～]*)+$",
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


_THINK = re.compile(r"<think>(.*?)(?:</think>|$)\s*", re.S | re.I)
# A chat template that opens the block itself (DeepSeek-R1, Qwen3) leaves only its end in the reply.
_OPENED_BY_TEMPLATE = re.compile(r"^(?:(?!<think>).)*?</think>\s*", re.S | re.I)


def split_think(text: str) -> tuple[str, str]:
    """``(visible reply, reasoning)`` of a reasoning model's reply: its ``<think>...</think>``
    blocks (an unclosed one runs to the end: the reply was cut while thinking; a leading
    ``...</think>`` without an opening tag was opened by the chat template) taken out, their
    texts joined by blank lines. A reply without them comes back whole, with no reasoning."""
    low = text.lower()
    if "<think>" not in low and "</think>" not in low:
        return text, ""
    thoughts = []
    if opened := _OPENED_BY_TEMPLATE.match(text):
        thoughts.append(opened.group(0).strip()[: -len("</think>")])
        text = text[opened.end():]
    thoughts += [m.group(1) for m in _THINK.finditer(text)]
    return _THINK.sub("", text).strip(), "\n\n".join(t.strip() for t in thoughts if t.strip())


def strip_think(text: str) -> str:
    """A reasoning model's reply without its reasoning (see :func:`split_think`)."""
    return split_think(text)[0]


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
                   r"\bnext question\b|下一个问题|追问如下|用户(?:会)?问",
                   re.I)
# A request without a question mark starts with an imperative or a polite ask.
_REQUEST = re.compile(
    r"^\s*(?:(?:please|tell|explain|describe|give|show|help|list|write|compare|suggest|recommend|make|add|rewrite|"
    r"summari[sz]e|translate|shorten|expand|continue|change|use|try|now|also|include|turn|keep|remove|"
    r"(?:can|could|would|will) you|i (?:want|need|would like|wonder))\b|"
    r"请|麻烦|能否|能不能|可否|可不可以|可以|帮我|帮忙|给我|告诉我|我想|我要|我需要|解释|介绍|描述|列出|写|比较|推荐|再)",
    re.I,
)
# A Chinese question often has no question mark: a question word or a final particle.
_ZH_QUESTION = re.compile(r"什么|什麼|怎么|怎麼|怎样|如何|为什么|為什麼|为何|哪|几[个位种點点次]|多少|"
                          r"多久|是否|是不是|有没有|能否|吗|呢[？?]?$|么[？?]?$")
# Said by an assistant anywhere in a message, never by the user it simulates.
_ASSISTANT_ANYWHERE = re.compile(
    r"\b(?:i am|i'?m) (?:an? )?(?:helpful |friendly )?(?:ai|assistant|language model)\b|"
    r"\b(?:happy|glad) to (?:answer|help|assist)\b|\bas an ai\b|"
    # offers of help, addressed to the person: the assistant's voice in a user turn
    r"\bhow (?:can|may) i (?:help|assist)\b|\bhow i can (?:help|assist)\b|\bwhat can i do for you\b|"
    r"\bi can (?:help|assist) you\b|\bwhat'?s on your mind\b|\bwhat brings you here\b|"
    r"作为(?:一个|一名)?(?:AI|人工智能|语言模型|助手)|"
    r"我是(?:一个)?(?:AI|人工智能|语言模型|助手)|很高兴(?:为您|为你|能帮)|乐意(?:为您|为你|帮助)", re.I)
_SENTENCE = re.compile(r"[^.!?。！？\n\"“”]*[?？]")
_CJK = re.compile(r"[\u3400-\u9fff]")


def _size(text: str) -> int:
    """Length in words; two Chinese characters count as one word."""
    return len(text.split()) + len(_CJK.findall(text)) // 2


def _asks(text: str) -> bool:
    return ("?" in text or "？" in text or _REQUEST.match(text) is not None
            or (_CJK.search(text) is not None and _ZH_QUESTION.search(text) is not None))


def confounding_reason(user_text: str, profile: str = "small") -> str | None:
    """Why a simulated user turn reads like an assistant's answer, or ``None``.

    Rules: an assistant's opener or self-description; talk about the task; a structured
    answer (a list of 3+ items or several paragraphs) with no question; a turn too long
    for a user, or with no question or request. ``profile="real"`` (a real model's user
    simulator, measured on real human turns: docs/benchmarks.md) accepts what real users
    write: statements, keyword queries and long turns with their own request.
    """
    text = user_text.strip()
    if not text:
        return "empty"
    if profile == "real":
        return _real_reason(text)
    if _ASSISTANT_OPENERS.match(text):
        return "assistant opener"
    if _ASSISTANT_ANYWHERE.search(text):
        return "speaks as the assistant"
    if _META.search(text):
        return "talks about the task"
    asks = _asks(text)
    if len(_LIST_LINE.findall(text)) >= 3 and "?" not in text and "？" not in text:
        return "structured answer"
    if text.count("\n\n") >= 2 and not asks:
        return "structured answer"
    if _size(text) > 60 and not asks:
        return "long statement without a question"
    if _size(text) > 120:
        return "too long for a user turn"
    if not asks:
        return "neither a question nor a request"
    return None


_CODE_BLOCK = re.compile(r"```.*?(?:```|$)", re.S)
# The ``real`` profile's cues, tuned on the tuning split of real chats (testing/real_turns.py).
# What an assistant says and a user writing to one does not:
_REAL_ASSISTANT = re.compile(
    r"^\s*(?:(?:sure|certainly|of course|absolutely|acknowledged|understood|memori[sz]ed|noted|great question|"
    r"good question|i'?m ready|apologies|my apologies|i apologi[sz]e|i understand|i'?m sorry,? (?:but|for|i)|"
    r"(?:yes|no),? i (?:am|can|understand|do|will|have)|you'?re (?:welcome|correct|right)|you are (?:correct|right)|"
    r"that'?s (?:a great|a good|correct|right)|it sounds like|thank you for (?:the|your|sharing|bringing|providing)|"
    r"based on (?:the|your) (?:information|feedback|given|provided|description)|excellent|great!|"
    r"to [^,\n]{3,80}, you (?:can|will|need|should|could|may|might))\b|"
    r"好的，(?:以下|下面|这是|我来)|当然|當然|以下是|是的[，,]|下面是|没问题|您好！?有什么|(?:非常)?抱歉|很抱歉|对不起)|"
    r"\blet me know if\b|\bi hope (?:this|that|it) helps\b|\bfeel free to (?:ask|reach out|let me know|contact)\b|"
    r"\bhere(?:'s| is| are) (?:an?|some|the|my) (?:\w+ ){0,3}(?:example|examples|ways|steps|ranking|sample|script|"
    r"function|code|version|continuation|options|suggestions|ideas|tips|outline|draft)\b|"
    r"\bif you have any (?:other |further |more |additional )?questions\b|\bi'?ll do my best\b|"
    r"\bi am here to (?:help|assist)\b|\bhow (?:can|may) i (?:help|assist)\b|\bi apologi[sz]e for\b|"
    r"\bwould you like me to\b|\bis there anything else\b|\bas of my (?:knowledge )?cut-?off\b|"
    r"\b(?:clarify|rephrase) (?:your|the) question\b|\bprovide (?:me with )?more context\b|"
    r"\bwhat (?:else )?would you like\b|\bplease (?:provide|share) (?:me )?(?:with )?(?:your|more)\b|"
    r"\b(?:to|can|could|will|may) help you\b|\bthere (?:are|could be|might be|may be) (?:several|many|a few|some) "
    r"(?:reasons|ways|possible|options|factors)\b|"
    r"希望(?:这|以上|对你|对您)|如果(?:您|你)?还有(?:其他|任何)?问题|不(?:用)?客气|随时(?:问我|联系)|"
    r"(?:需要|要)我(?:帮|為|为)|有什么(?:可以|能)(?:帮|為|为)|(?:为|為)(?:您|你)(?:推荐|查|找|提供)|推荐(?:您|你)|我(?:会|會)(?:尽|盡)力|"
    r"(?:很|非常)?(?:乐意|樂意)|我理解(?:错|錯)",
    re.I,
)
_ZH_REQUEST = re.compile(r"请|請|帮我|幫我|帮忙|麻烦|能否|能不能|可不可以|可以(?:帮|幫|给|給|告诉|推荐|再)|"
                         r"我想|我要|我需要|给我|給我|告诉我|"
                         r"告訴我|发我|一下|吧[。！!]?$|扮演|根据|根據|不要|改成|改为|换成|用英文|用中文|继续|繼續")
_HEADING = re.compile(r"^#{1,4} \S|\n[=-]{3,}\s*$", re.M)
_QUESTION_MARK = re.compile(r"\w\W{0,3}[?？]")
# A whole reply in quotes (a title, a slogan) or a yes/no followed by a statement.
_REAL_SHORT_ANSWER = re.compile(r'^\s*["“][^"“”]+["”]\s*$|'
                                r"^(?:yes|no)[,.!]\s+(?:the|it|this|that|there|they|he|she|in|an?)\b", re.I)
# A user's words to the assistant inside a long turn (pasted text with an instruction).
_ADDRESSES = re.compile(
    r"\bplease\b(?! (?:note|let me know|feel free|keep in mind))|\bi want (?:you|to)\b|"
    r"\b(?:can|could|would|will) you\b|\b(?:give|help|tell|show|send) me\b|\bi (?:need|would like|wanted)\b|"
    r"\bmy (?:\w+ )?(?:messages?|prompt|code|essay|article|text|question)\b|\bi will (?:give|send|share|provide)|"
    r"^\s*(?:write|rewrite|explain|describe|list|create|generate|convert|summari[sz]e|translate|continue|fix|add|"
    r"make|give|compare|suggest|provide|consider|assume|act|imagine|pretend|understand|analy[sz]e|"
    r"review|check|improve|edit|change|modify|update|now)\b|"
    r"请|請|帮我|幫我|帮忙|麻烦|能否|我想|我要|我需要|给我|給我|告诉我|告訴我|发我|一下|吧[。！!]?$|扮演|根据|根據|不要",
    re.I | re.M,
)


def _real_reason(text: str) -> str | None:
    """The ``real`` profile: only what a real user rarely writes and an assistant often
    does: its stock phrases, or a list, several paragraphs or a long text with no word
    addressed to the assistant (a user pasting text says what to do with it)."""
    if _REAL_ASSISTANT.search(text):
        return "speaks as the assistant"
    prose = _CODE_BLOCK.sub("\n\n", text).strip()
    if not prose:
        return "structured answer"  # code alone: an answer, or a paste with no words to the assistant
    paragraphs = [p for p in re.split(r"\n\s*\n", prose) if p.strip()] or [""]
    if len(_CJK.findall(prose)) >= 0.3 * len(re.findall(r"[A-Za-z\u3400-\u9fff]", prose)):
        return _real_reason_zh(prose, paragraphs)
    # A question in the middle of a long text is rhetorical or the assistant's own.
    asks = any(_QUESTION_MARK.search(p) for p in {paragraphs[0], paragraphs[-1]})
    if asks or _ADDRESSES.search(prose):
        return None
    if len(_LIST_LINE.findall(text)) >= 3 or len(paragraphs) >= 3 or _HEADING.search(prose):
        return "structured answer"
    if _size(text) > 60:
        return "long statement without a question"
    if _REAL_SHORT_ANSWER.match(text) or _is_composed(text):
        return "reads like an answer"
    return None


def _real_reason_zh(prose: str, paragraphs: list[str]) -> str | None:
    """Chinese: a user asks or requests in the first or last sentence; an assistant's
    reply is a statement, often in several paragraphs, ending on a full stop."""
    sentences = [p for p in re.split(r"(?<=[。！？!?\n])", prose) if p.strip()] or [prose]
    first, last = sentences[0], sentences[-1]
    asked = _QUESTION_MARK.search(prose if len(paragraphs) == 1 else last) or _ZH_QUESTION.search(last)
    if asked or _ZH_REQUEST.search(first + last):
        return None
    if len(paragraphs) > 1 or len(_LIST_LINE.findall(prose)) >= 3:
        return "structured answer"
    if prose.rstrip().endswith(("。", "！", "!", "~", "～", "）", ")", ".")):
        return "reads like an answer"  # a finished statement with no question or request
    return None


def _is_composed(text: str) -> bool:
    """Two or more capitalised sentences, 15+ words, ending on a full stop: how an
    assistant answers; real users' short turns are terser (tuned on real chats)."""
    return (text[:1].isupper() and text.rstrip().endswith((".", "!", '"')) and len(text.split()) >= 15
            and re.search(r"[.!]\s+[A-Z]", text) is not None)


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


def repair_user_turn(raw: str, finish_reason: str, turns: list[str],
                     profile: str = "small") -> tuple[str, str | None]:
    """Clean a user-simulator reply; returns ``(text, None)`` when usable, else ``(text, reason)``.

    ``turns`` is the dialogue so far (ending with the assistant's reply). A reply cut off by
    max_tokens, or one that fails :func:`confounding_reason`, is still usable when it holds
    a question of its own; a turn that repeats an earlier user turn, or mostly repeats the
    reply it follows (the 135M model parrots), is not. ``profile``
    picks the strictness of :func:`confounding_reason`.
    """
    text = strip_role_prefix(raw)
    if is_politeness_only(text):
        return text, "politeness"
    why = "cut off by max_tokens" if finish_reason == "length" else confounding_reason(text, profile)
    if why:
        found = extract_question(text)
        if found is None:
            return text, why
        text = found
    first = _SENTENCE.search(text)
    asked = _words(first.group(0) if first else text)
    if any(asked == _words(earlier) for earlier in turns[0::2]):
        return text, "repeats an earlier question"
    if len(turns) >= 2 and _overlap(text, turns[-1]) >= REPEAT_OVERLAP:
        return text, "repeats the assistant"
    return text, None


REPEAT_OVERLAP = 0.6  # word-set Jaccard with the reply just given: a parrot, not a follow-up


def _overlap(a: str, b: str) -> float:
    wa, wb = set(_words(a)), set(_words(b))
    return len(wa & wb) / len(wa | wb) if wa and wb else 0.0
