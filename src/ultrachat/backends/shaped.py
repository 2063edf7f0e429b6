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


def default_reply(messages: list[Message], params: GenerationParams) -> str:
    """A deterministic reply shaped like what the prompt asks for."""
    last = messages[-1]["content"]
    h = _digest(messages)[:8]
    if re.search(r"\blist\b|列出|列表|清单", last, re.I):
        m = re.search(r"\b(\d{1,2})\b", last)
        n = int(m.group(1)) if m else 5
        return "\n".join(f"{i}. What about aspect {h}-{i} of this subject?" for i in range(1, n + 1))
    if re.search(r"next message|follow-up|追问|下一条", last, re.I):
        return f"Could you explain more about point {h}?"
    return f"Here is an answer ({h}). It covers the main facts in a few clear sentences."
