"""The dialogue record every package passes around, and its chat-message form.

An UltraChat line is ``{"id": str, "data": [user, assistant, ...], "meta": {...}}``
(``meta`` optional): even turns are the user's, odd turns the assistant's.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict


class Dialogue(TypedDict):
    """One UltraChat dialogue line."""

    id: str
    data: list[str]
    meta: NotRequired[dict[str, Any]]


def validate_dialogue(obj: Any) -> str | None:
    """Return why ``obj`` is not an UltraChat dialogue, or ``None`` when it is one."""
    if not isinstance(obj, dict):
        return "not a JSON object"
    if "id" not in obj:
        return "missing field 'id'"
    if not isinstance(obj["id"], str | int) or isinstance(obj["id"], bool):  # ids may be strings or integers
        return "field 'id' must be a string or an integer"
    data = obj.get("data")
    if not isinstance(data, list) or not data:
        return "field 'data' must be a non-empty list of strings"
    if not all(isinstance(t, str) for t in data):
        return "field 'data' must contain only strings"
    if "meta" in obj and not isinstance(obj["meta"], dict):
        return "field 'meta' must be an object"
    return None


def turn_messages(turns: list[Any]) -> list[dict[str, str]]:
    """Turns as chat messages, alternating from the user (no turn is dropped).

    >>> turn_messages(["Hi", "Hello!"])
    [{'role': 'user', 'content': 'Hi'}, {'role': 'assistant', 'content': 'Hello!'}]
    """
    roles = ("user", "assistant")
    return [{"role": roles[i % 2], "content": str(t)} for i, t in enumerate(turns)]


def to_messages(record: dict[str, Any]) -> list[dict[str, str]]:
    """An UltraChat line (``data``) or a ``messages`` record -> chat messages ending on an answer.

    A trailing user turn without an answer is dropped; the result is empty when the record
    holds no answered round.

    >>> to_messages({"data": ["Hi", "Hello!", "Bye"]})
    [{'role': 'user', 'content': 'Hi'}, {'role': 'assistant', 'content': 'Hello!'}]
    """
    if "messages" in record and record["messages"] is not None:
        msgs = [{"role": str(m["role"]), "content": str(m["content"])} for m in record["messages"]]
    elif isinstance(record.get("data"), list):
        msgs = turn_messages(record["data"])
    else:
        raise ValueError("record has neither 'messages' nor 'data'")
    for i, m in enumerate(msgs):
        if m["role"] not in ("system", "user", "assistant") or (m["role"] == "system" and i):
            raise ValueError(f"message {i} has role '{m['role']}' (expected system first, then user/assistant)")
    while msgs and msgs[-1]["role"] != "assistant":
        msgs.pop()
    return msgs
