"""The backend interface's shared arithmetic: how many tokens a call may ask for."""

from __future__ import annotations

import pytest

from ultrachat.backends.base import Backend, Completion, GenerationParams, Message, context_cap, min_room


@pytest.mark.parametrize(("cap", "least"), [(2048, 512), (1024, 256), (256, 64), (64, 16), (10, 3), (3, 1), (1, 1)])
def test_the_least_room_worth_a_call_is_a_quarter_of_the_cap(cap: int, least: int) -> None:
    assert min_room(cap) == least


@pytest.mark.parametrize(("window", "prompt", "expected"), [
    (None, 10**6, 2048),  # no window known: the cap, whatever the prompt
    (32768, 1000, 2048),  # ample room: the cap unchanged
    (32768, 32768 - 2048, 2048),  # exactly the cap left
    (32768, 32768 - 2047, 2047),  # one token short: what is left
    (4096, 4096 - 512, 512),  # a quarter of the cap left: still worth a call
    (4096, 4096 - 511, None),  # under a quarter: no call
    (4096, 5000, None),  # the prompt alone overflows
])
def test_a_calls_cap_fits_the_context_window(window: int | None, prompt: int, expected: int | None) -> None:
    assert context_cap(2048, window, prompt) == expected
    if expected is not None and window:
        assert prompt + expected <= window  # what the server checks (vLLM's 400 otherwise)


def test_the_estimate_counts_digits_and_code_marks_as_tokens() -> None:
    from ultrachat.backends.base import prompt_tokens_estimate

    def estimate(text: str) -> int:
        return prompt_tokens_estimate([{"role": "user", "content": text}]) - 4

    assert estimate("3.14159265358979 2.71828182845904") >= 30  # a tokenizer that splits digits: 32 and 2 dots
    assert estimate("f(x[i]);g(y[j]);") >= 14  # each mark a token at most
    assert estimate("How do the tides work along the coast of Brittany in winter?") == 62 // 3  # prose: bytes / 3


class _Counting(Backend):
    """A backend that counts prompts as told (``None``: it cannot), and how often it was asked."""

    def __init__(self, count: int | None) -> None:
        self.count, self.asked = count, 0

    async def count_tokens(self, messages: list[Message]) -> int | None:
        self.asked += 1
        return self.count

    async def complete(self, messages: list[Message], params: GenerationParams) -> Completion:
        raise AssertionError("never called")


@pytest.mark.parametrize(("estimate", "count", "expected", "asked"), [
    (1000, 900, 2048, 0),       # fits even at twice the estimate: the server is not asked
    (3000, 2000, 2048, 1),      # near the end by the estimate: the server's count shows room for the cap
    (3000, 3500, 596, 1),       # the estimate was low (digits, a template's system prompt): the count bounds it
    (3000, None, 1096, 1),      # a server that cannot count: the estimate bounds it
    (3000, 3900, None, 1),      # under a quarter of the cap left by the count: no call
])
async def test_a_call_near_the_end_of_the_window_is_sized_by_the_servers_count(
        estimate: int, count: int | None, expected: int | None, asked: int) -> None:
    from ultrachat.backends.base import fitted_cap

    backend = _Counting(count)
    messages = [{"role": "user", "content": "..."}]
    assert await fitted_cap(backend, 2048, 4096, messages, estimate) == expected
    assert backend.asked == asked
    assert await fitted_cap(backend, 2048, None, messages, 10**6) == 2048 and backend.asked == asked  # no window
