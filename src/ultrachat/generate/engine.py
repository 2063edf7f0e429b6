"""The dialogue engine, shared by every sector.

From an opening line, the assistant model and the user-simulator model alternate until
the planned number of rounds. Each role has its own backend, system prompt and sampling
settings. User turns are repaired without extra model calls: role prefixes stripped;
politeness-only and role-confounded turns regenerated up to a bound, after which the
dialogue ends with that stop reason and keeps its completed rounds. An assistant reply
cut off by ``max_tokens`` is recorded in ``meta.truncated_turns``, or ends the dialogue
after it (``dialogue.on_truncated = "end"``) or before it (``"drop"``: the reply is sampled
once more, and if that is cut too, it and the question it answered are removed); it is never
passed off as complete. A ``real`` role's retry asks for twice the cap, within what the
model's context window leaves after the prompt; with no room left there is no retry.

Every call fits the context window (the role's ``context_length``, else what its backend
reports): its ``max_tokens`` is ``min(cap, window - prompt tokens)``. When that room is under
a quarter of the cap (:func:`~ultrachat.backends.base.min_room`) the dialogue ends before the
round with stop reason ``context_full``, keeping its completed rounds: the whole history is
sent each round, so a long dialogue would otherwise end in a request the server refuses.

A reasoning model's reasoning (``<think>`` blocks, a ``reasoning_content`` field) never
enters a turn; a role with ``keep_reasoning`` has it in ``meta.reasoning`` as
``[{"turn": index into data, "text": ...}]``, for the turns the dialogue kept.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..backends import Backend, Completion, GenerationParams, Message, Usage
from ..backends.base import fitted_cap, prompt_tokens_estimate
from ..backends.config import auto_profile
from ..core.hashing import stable_seed
from ..core.turns import repair_user_turn, split_think, strip_role_prefix
from ..prompts import Prompts
from ..recipe import DialogueConfig, ModelConfig
from .sector import Opening, Sector

TRANSCRIPT_TURNS = 6  # the opening plus the latest turns shown to a task-framed user model
TRANSCRIPT_CHARS = 600  # per turn; small models lose the thread in long prompts


def _clip(text: str) -> str:
    return text if len(text) <= TRANSCRIPT_CHARS else text[:TRANSCRIPT_CHARS].rsplit(" ", 1)[0] + " ..."


@dataclass
class Role:
    backend: Backend
    cfg: ModelConfig
    _reported: list[int | None] = field(default_factory=list, init=False, repr=False)  # the backend's window

    def params(self, seed: int, max_tokens: int | None = None) -> GenerationParams:
        return GenerationParams(self.cfg.temperature, self.cfg.top_p, max_tokens or self.cfg.max_tokens, seed)

    async def window(self) -> int | None:
        """The model's context window: the role's ``context_length``, else what the backend
        reports (asked once), else ``None``."""
        if self.cfg.context_length:
            return self.cfg.context_length
        if not self._reported:
            self._reported.append(await self.backend.context_length())
        return self._reported[0]

    async def cap(self, messages: list[Message], estimate: int) -> int | None:
        """A call's ``max_tokens`` for a prompt of ``messages`` (``None``: no room worth a call)."""
        return await fitted_cap(self.backend, self.cfg.max_tokens, await self.window(), messages, estimate)

    async def retry_cap(self, prompt_tokens: int) -> int | None:
        """The cap of a cut reply's retry (same messages): twice the cap, bounded by the context
        window less the prompt's tokens; ``None`` when that leaves no more than the cap, so a
        retry could not finish where the reply was cut."""
        cap = 2 * self.cfg.max_tokens
        window = await self.window()
        if window:
            cap = min(cap, window - prompt_tokens)
        return cap if cap > self.cfg.max_tokens else None

    @property
    def profile(self) -> str:
        return self.cfg.profile or auto_profile(self.cfg.backend, self.cfg.model)

    def describe(self) -> dict[str, Any]:
        return {"backend": self.cfg.backend, "model": self.cfg.model}


@dataclass
class EngineStats:
    """Counters the run summary prints."""

    dialogues: int = 0
    rounds: int = 0
    stop_reasons: Counter[str] = field(default_factory=Counter)
    regenerations: Counter[str] = field(default_factory=Counter)
    user_attempts: int = 0
    confounded: int = 0
    truncated: int = 0
    usage: dict[str, Usage] = field(default_factory=lambda: {"user": Usage(), "assistant": Usage()})

    def record(self, dialogue: dict[str, Any]) -> None:
        meta = dialogue["meta"]
        self.dialogues += 1
        self.rounds += meta["rounds"]
        self.stop_reasons[meta["stop_reason"]] += 1
        self.regenerations.update(meta["regenerations"])
        self.truncated += len(meta["truncated_turns"])


class DialogueEngine:
    def __init__(self, sector: Sector, user: Role, assistant: Role, prompts: Prompts,
                 cfg: DialogueConfig, personas: list[str], stats: EngineStats | None = None) -> None:
        self.sector = sector
        self.user = user
        self.assistant = assistant
        self.prompts = prompts
        self.cfg = cfg
        self.personas = personas
        self.stats = stats or EngineStats()

    # -- prompts ---------------------------------------------------------------------
    def assistant_messages(self, turns: list[str]) -> list[Message]:
        system = self.assistant.cfg.system
        msgs: list[Message] = [{"role": "system", "content": system}] if system else []
        msgs += [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)]
        return msgs

    def user_messages(self, turns: list[str], opening: Opening, persona: str | None) -> list[Message]:
        goal = self.sector.user_goal(opening)
        if self.cfg.user_prompts == "persona":
            system = self.prompts.render("user", "persona", "system", persona=persona or "a curious person",
                                         goal=goal)
            # Roles flipped: the simulated user speaks as "assistant", the real assistant as "user".
            msgs: list[Message] = [{"role": "system", "content": system}]
            msgs += [{"role": "assistant" if i % 2 == 0 else "user", "content": t} for i, t in enumerate(turns)]
            reminder = self.prompts.get("user", "persona", "reminder")
            msgs[-1] = {**msgs[-1], "content": msgs[-1]["content"] + "\n\n" + reminder}
            return msgs
        shown = turns if len(turns) <= TRANSCRIPT_TURNS else [turns[0], *turns[-(TRANSCRIPT_TURNS - 1):]]
        offset = len(turns) - len(shown)
        lines = []
        for j, text in enumerate(shown):
            idx = 0 if j == 0 else j + offset
            field_name = "transcript_user" if idx % 2 == 0 else "transcript_assistant"
            lines.append(self.prompts.render("user", "task", field_name, text=_clip(text)))
        body = self.prompts.render("user", "task", transcript="\n".join(lines), goal=goal, opening=turns[0],
                                   question=turns[-2] if len(turns) >= 2 else turns[0], answer=_clip(turns[-1]))
        system = self.prompts.get("user", "task", "system")
        return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": body}]

    # -- one dialogue ----------------------------------------------------------------
    async def run(self, opening: Opening) -> dict[str, Any]:
        """Generate one dialogue; returns the output record (``id``, ``data``, ``meta``)."""
        rng = random.Random(opening.seed)
        persona = rng.choice(self.personas) if self.cfg.user_prompts == "persona" and self.personas else None
        d = _Dialogue([opening.text])
        turns = d.turns
        stop = "completed"
        for rnd in range(opening.rounds):
            reply, stop = await self._answer(d, opening)
            if reply is None:
                d.drop_question()  # only completed rounds stay: a question without its answer goes
                break
            d.add(reply)
            if reply.finish_reason == "length":
                d.truncated.append(len(turns) - 1)
                if self.cfg.on_truncated == "end":
                    stop = "truncated"
                    break
            if rnd == opening.rounds - 1:
                break
            user_turn, stop = await self._ask(d, opening, persona)
            if user_turn is None:
                break
            d.add(user_turn)
        for role, u in d.usage.items():
            self.stats.usage[role].add(u)
        record = {"id": opening.id, "data": turns, "meta": self._meta(opening, persona, stop, d)}
        self.stats.record(record)
        return record

    def _meta(self, opening: Opening, persona: str | None, stop: str, d: _Dialogue) -> dict[str, Any]:
        """A finished dialogue's ``meta``: where it came from, how it was made, how it ended."""
        meta = {
            "sector": self.sector.name,
            **{k: v for k, v in opening.meta.items() if k not in ("k", "topic_index")},
            "persona": persona,
            "models": {"user": self.user.describe(), "assistant": self.assistant.describe()},
            "params": {name: {"temperature": role.cfg.temperature, "top_p": role.cfg.top_p,
                              "max_tokens": role.cfg.max_tokens}
                       for name, role in (("user", self.user), ("assistant", self.assistant))},
            "profiles": {"user": self.user.profile, "assistant": self.assistant.profile},
            "user_prompts": self.cfg.user_prompts,
            "seed": opening.seed,
            "rounds_planned": opening.rounds,
            "rounds": len(d.turns) // 2,
            "stop_reason": stop,
            "regenerations": dict(d.regen),
            "repairs": dict(d.repairs),
            "truncated_turns": d.truncated,
            "tokens": {role: {"prompt": u.prompt_tokens, "completion": u.completion_tokens}
                       for role, u in d.usage.items()},
        }
        if self.user.cfg.keep_reasoning or self.assistant.cfg.keep_reasoning:
            meta["reasoning"] = [{"turn": i, "text": text} for i, text in sorted(d.reasoning.items())
                                 if i < len(d.turns)]  # a dropped turn's reasoning goes with it
        return meta

    async def _answer(self, d: _Dialogue, opening: Opening) -> tuple[Completion | None, str]:
        """The next assistant reply, or ``None`` and why the dialogue ends before it: no room
        in the context, no usable reply, or a reply cut (twice) that ``"drop"`` removes."""
        messages = self.assistant_messages(d.turns)
        cap = await self.assistant.cap(messages, d.prompt_tokens("assistant", messages))
        if cap is None:
            return None, "context_full"
        reply = await self._assistant_turn(d, opening, messages, cap)
        if reply is None:
            return None, "empty_reply"
        if reply.finish_reason == "length" and self.cfg.on_truncated == "drop":
            return None, "truncated"
        return reply, "completed"

    async def _ask(self, d: _Dialogue, opening: Opening, persona: str | None) -> tuple[Completion | None, str]:
        """The next user turn, or ``None`` and why the dialogue ends after the last answer."""
        messages = self.user_messages(d.turns, opening, persona)
        cap = await self.user.cap(messages, d.prompt_tokens("user", messages))
        if cap is None or await self._no_room_to_answer(d):
            return None, "context_full"  # before the round: no question its answer could not follow
        return await self._user_turn(d, opening, messages, cap)

    async def _no_room_to_answer(self, d: _Dialogue) -> bool:
        """Whether the answer after the next question would find no room, even were the
        question empty (so the question is not asked only to be removed)."""
        messages = self.assistant_messages([*d.turns, ""])
        return await self.assistant.cap(messages, d.prompt_tokens("assistant", messages)) is None

    async def _call(self, name: str, messages: list[Message], seed: int, d: _Dialogue,
                    max_tokens: int) -> Completion:
        role = self.user if name == "user" else self.assistant
        out = await role.backend.complete(messages, role.params(seed, max_tokens))
        out.text, thought = split_think(out.text)
        kept = (out.reasoning.strip(), thought) if role.cfg.keep_reasoning else ()
        out.reasoning = "\n\n".join(t for t in kept if t)
        d.usage[name].add(out.usage)
        if out.usage.prompt_tokens:
            d.counted[name] = (out.usage.prompt_tokens, prompt_tokens_estimate(messages))
        return out

    async def _assistant_turn(self, d: _Dialogue, opening: Opening, messages: list[Message],
                              cap: int) -> Completion | None:
        cut_retries = 1 if self.cfg.on_truncated == "drop" else 0
        # A real model's cut reply is asked again with twice the cap (a small model's, with a new seed).
        max_tokens = cap
        for attempt in range(self.cfg.max_regenerations + 1):
            seed = stable_seed(opening.seed, len(d.turns), "assistant", attempt)
            out = await self._call("assistant", messages, seed, d, max_tokens)
            labelled = out.text.lower().startswith(("assistant", "ai:"))
            out.text = strip_role_prefix(out.text) if labelled else out.text.strip()
            if out.text and out.finish_reason == "length" and cut_retries:
                # A cut reply would be dropped: one more sample (new seed) often finishes within the cap.
                cut_retries -= 1
                if self.assistant.profile == "real":
                    retry = await self.assistant.retry_cap(d.prompt_tokens("assistant", messages))
                    if retry is None:
                        return out  # no room in the context for a longer reply: dropped as cut
                    max_tokens = retry
                d.regen["truncated"] += 1
                continue
            if out.text:
                return out
            d.regen["empty_reply"] += 1
        return None

    async def _user_turn(self, d: _Dialogue, opening: Opening, messages: list[Message],
                         cap: int) -> tuple[Completion | None, str]:
        """The next user turn (its text repaired), or ``None`` and why the dialogue ends."""
        reason = "role_confounding"
        max_tokens = cap
        doubled = False
        for attempt in range(self.cfg.max_regenerations + 1):
            seed = stable_seed(opening.seed, len(d.turns), "user", attempt)
            out = await self._call("user", messages, seed, d, max_tokens)
            self.stats.user_attempts += 1
            if out.finish_reason == "length" and self.user.profile == "real" and not doubled:
                doubled = True  # a real model's cut turn: asked again once with twice the cap, if it fits
                max_tokens = await self.user.retry_cap(d.prompt_tokens("user", messages)) or cap
            text, why = repair_user_turn(out.text, out.finish_reason, d.turns, self.user.profile)
            if why == "politeness":
                d.regen["politeness"] += 1
                reason = "politeness"
                continue
            if why:
                self.stats.confounded += 1
                d.regen["role_confounding"] += 1
                reason = "role_confounding" if why != "empty" else "empty_reply"
                continue
            if text != strip_role_prefix(out.text):
                d.repairs["question_extracted"] += 1  # kept the question inside a rambling reply
            out.text = text
            return out, "completed"
        return None, reason


@dataclass
class _Dialogue:
    """A dialogue being generated: its turns and what making them took."""

    turns: list[str]
    usage: dict[str, Usage] = field(default_factory=lambda: {"user": Usage(), "assistant": Usage()})
    regen: Counter[str] = field(default_factory=Counter)
    repairs: Counter[str] = field(default_factory=Counter)
    truncated: list[int] = field(default_factory=list)
    reasoning: dict[int, str] = field(default_factory=dict)  # turn index -> the reasoning kept for it
    # role -> (the server's count of its latest prompt, our estimate of that same prompt)
    counted: dict[str, tuple[int, int]] = field(default_factory=dict)

    def prompt_tokens(self, role: str, messages: list[Message]) -> int:
        """The tokens of ``role``'s prompt ``messages``, erring high: the server's count of the
        role's latest prompt plus an estimate of what was added since (so a chat template's own
        tokens, a default system prompt, are counted as the server counts them); nothing is taken
        off for a transcript that dropped old turns. Before any count, an estimate of the whole."""
        estimate = prompt_tokens_estimate(messages)
        if role not in self.counted:
            return estimate
        counted, estimated = self.counted[role]
        return counted + max(0, estimate - estimated)

    def drop_question(self) -> None:
        """Remove the last question (one the dialogue ends without answering; never the opening:
        a dialogue with no completed round keeps it)."""
        if len(self.turns) > 1:
            self.turns.pop()

    def add(self, turn: Completion) -> None:
        self.turns.append(turn.text)
        if turn.reasoning:
            self.reasoning[len(self.turns) - 1] = turn.reasoning
