"""The sector plug-in interface. A sector supplies three things; the dialogue engine does the rest:

* :meth:`Sector.plan` plans :class:`Opening` lines (the first user turn plus metadata)
  through a :class:`~.planning.PlanContext` (its model calls, cached; its openings, written
  as they are fixed);
* ``rounds``: the default round range of its dialogues;
* :meth:`Sector.user_goal`: the reminder the user simulator gets on every turn.
"""

from __future__ import annotations

import itertools
import random
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from ..core.hashing import stable_seed
from ..prompts import Prompts
from ..recipe import Recipe

if TYPE_CHECKING:
    from .planning import Assigned, PlanContext


@dataclass
class Opening:
    """One planned dialogue: its id, first user turn, metadata, round count and seed."""

    id: str
    text: str
    rounds: int
    seed: int
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Sector(ABC):
    """Base class of a sector plug-in. Subclasses set ``name`` and ``rounds`` and
    implement :meth:`plan`."""

    name: ClassVar[str]
    rounds: ClassVar[tuple[int, int]] = (3, 7)

    def __init__(self, recipe: Recipe, prompts: Prompts) -> None:
        self.recipe = recipe
        self.prompts = prompts

    def round_range(self) -> tuple[int, int]:
        lo = self.recipe.dialogue.min_rounds or self.rounds[0]
        hi = self.recipe.dialogue.max_rounds or max(self.rounds[1], lo)
        return lo, max(lo, hi)

    def make_opening(self, dialogue_id: str, text: str, meta: dict[str, Any]) -> Opening:
        seed = stable_seed(self.recipe.seed, dialogue_id)
        lo, hi = self.round_range()
        return Opening(dialogue_id, text, random.Random(seed).randint(lo, hi), seed, meta)

    def user_goal(self, opening: Opening) -> str:
        """Reminder for the user simulator, from the ``[goals]`` table of ``user.toml``."""
        try:
            return self.prompts.render("user", "goals", self.name, **opening.meta)
        except KeyError:
            return ""

    def plan_group(self, opening: Opening) -> str:
        """The group an opening is planned in (a topic, a kind): :class:`Assigned` counts
        earlier openings and their texts per group."""
        return ""

    @abstractmethod
    async def plan(self, ctx: PlanContext, dialogues: int, assigned: Assigned) -> list[Opening] | None:
        """Plan the new openings needed so that ``dialogues`` are planned in all, handing
        them to ``ctx.emit`` in batches as they are fixed (a plug-in may instead return
        them all as a list, which is emitted at the end).

        ``assigned`` describes the openings an earlier run already fixed; they keep their ids.
        """

    def wanted(self, openings: Iterator[Opening], dialogues: int) -> Iterator[Opening]:
        """Of the planned openings (streamed in file order), those this run should turn
        into dialogues (default: the first N)."""
        return itertools.islice(openings, dialogues)
