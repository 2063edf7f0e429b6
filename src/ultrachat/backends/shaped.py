"""Instant replies shaped like what a prompt asks for, with no model: a numbered list when
it asks for a list, a question when it asks for the next user message, else a short answer.

The fake backend answers with them (tests), and ``ultrachat estimate`` sizes them up to each
role's expected length (its sizing backend), so planners plan and dialogues run their
course without any model call. Each reply carries a hash of the messages, so different
calls get different wording.
"""

from __future__ import annotations

import re

from ..core.hashing import hexdigest
from .base import GenerationParams, Message


def _digest(messages: list[Message]) -> str:
    blob = "\x1e".join(f"{m['role']}:{m['content']}" for m in messages)
    return hexdigest(blob, "sha1")


_CJK = re.compile(r"[\u3400-\u9fff]")


def default_reply(messages: list[Message], params: GenerationParams) -> str:
    """A deterministic reply shaped like what the prompt asks for, in the prompt's language:
    a Chinese prompt gets Chinese (questions with a full-width question mark, and requests
    with 请 or 能否 and no question mark, as Chinese users write them)."""
    last = messages[-1]["content"]
    h = _digest(messages)[:8]
    zh = _CJK.search(last) is not None
    if re.search(r"\blist\b|列出|列表|清单", last, re.I):
        m = re.search(r"(?<!\d)(\d{1,2})(?!\d)", last)  # "列出10个": no word boundary before a digit
        n = int(m.group(1)) if m else 5
        item = "关于这个主题的第{i}个方面（{h}）是什么？" if zh else "What about aspect {h}-{i} of this subject?"
        return "\n".join(f"{i}. " + item.format(i=i, h=h) for i in range(1, n + 1))
    if re.search(r"next message|follow-up|追问|下一条", last, re.I):
        if zh:
            asks = (f"能再具体讲讲第{h}点吗？", f"请再详细说说第{h}点", f"能否举一个关于第{h}点的例子")
            return asks[int(h, 16) % len(asks)]
        return f"Could you explain more about point {h}?"
    if zh:
        return f"这是一个回答（{h}），用几句话讲清楚主要事实。"
    return f"Here is an answer ({h}). It covers the main facts in a few clear sentences."
