"""The backend interface's shared arithmetic: how many tokens a call may ask for."""

from __future__ import annotations

import pytest

from ultrachat.backends.base import context_cap, min_room


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
