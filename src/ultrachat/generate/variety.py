"""How varied a run's plan is: distinct openings, subtopics, instructions (and entities,
passages) used, next to what was asked of the model and what the recipe targets.

* ``used``: distinct values among the run's openings (one streamed pass over
  ``plan/openings.jsonl``, 64-bit hashes, no texts kept: about 8 bytes an opening);
* ``asked``: how many the planner asked the model for (its list requests in
  ``plan/calls.jsonl`` times the list size), before deduplication and cleaning;
* ``target``: the recipe's number (dialogues; world: the active topics' share of
  ``world.subtopics``; writing: distinct instructions per type, summed).

The run report (``report.json``, the summary table) and ``generate --plan-only`` show it::

    variety = measure(sector, openings, dialogues=1000, calls=Counter({"subtopics": 30}))
    print(variety["subtopics"])   # {"used": 300, "asked": 300, "target": 1100}
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from ..core.hashing import HashIndex, hash64
from ..core.text import normalize
from .sector import Opening, Sector
from .world import WorldSector, quotas
from .writing import WritingSector

#: meta keys whose distinct values are counted, per sector (the group key first: a subtopic
#: name counts once per topic)
KEYS: dict[str, dict[str, tuple[str, ...]]] = {
    "world": {"subtopics": ("topic_index", "subtopic")},
    "writing": {"instructions": ("type_index", "instruction")},
    "entities": {"entities": ("entity",)},
    "materials": {"passages": ("passage_index",)},
}


#: the plan stage whose list replies hold each counted thing, and the recipe field of the list size
ASKED = {"subtopics": ("subtopics", "subtopics_per_request"),
         "instructions": ("instructions", "instructions_per_request")}

_STAGE = re.compile(rb'"stage": ?"([^"]+)"')


def stage_calls(calls_file: Path) -> Counter[str]:
    """Plan calls per stage in a run's ``plan/calls.jsonl`` (a byte scan, no JSON parsing)."""
    counts: Counter[str] = Counter()
    if calls_file.exists():
        with open(calls_file, "rb") as fh:
            for line in fh:
                if m := _STAGE.search(line):
                    counts[m.group(1).decode()] += 1
    return counts


def targets(sector: Sector, dialogues: int) -> dict[str, int]:
    """The recipe's numbers: openings, and for world the subtopics of the topics that get
    dialogues (their share of ``world.subtopics``), for writing the distinct instructions."""
    out = {"openings": dialogues}
    if isinstance(sector, WorldSector):
        topics = sector.topics()
        active = quotas(dialogues, topics, sector.recipe.seed)
        out["subtopics"] = sum(t for t, q in zip(sector.subtopic_targets(topics), active, strict=True) if q)
    elif isinstance(sector, WritingSector):
        types = sector.types()
        out["instructions"] = sum(sector.instruction_target(q) for q in quotas(dialogues, types, sector.recipe.seed))
    return out


def measure(sector: Sector, openings: Iterable[Opening], dialogues: int,
            calls: Counter[str] | None = None) -> dict[str, dict[str, int]]:
    """``{name: {"used": ..., "asked": ..., "target": ...}}`` (see the module doc); ``asked``
    and ``target`` are absent where they do not apply."""
    keys = KEYS.get(sector.name, {})
    texts = HashIndex()
    seen: dict[str, set[int]] = {name: set() for name in keys}
    for op in openings:
        texts.add(hash64(normalize(op.text)))
        for name, fields in keys.items():
            if all(f in op.meta for f in fields):
                seen[name].add(hash64("\x1f".join(str(op.meta[f]) for f in fields)))
    wanted = targets(sector, dialogues)
    out = {"openings": {"used": len(texts), "target": wanted["openings"]}}
    for name, values in seen.items():
        out[name] = {"used": len(values)}
        if calls is not None and name in ASKED:
            stage, size = ASKED[name]
            out[name]["asked"] = calls[stage] * getattr(getattr(sector.recipe, sector.name), size)
        if name in wanted:
            out[name]["target"] = wanted[name]
    return out


def describe(variety: dict[str, dict[str, int]]) -> str:
    """``openings 998 (target 1,000); subtopics 300 of 300 asked (target 1,100)``."""
    parts = []
    for name, v in variety.items():
        text = f"{name} {v['used']:,}"
        if "asked" in v:
            text += f" of {v['asked']:,} asked"
        if "target" in v:
            text += f" (target {v['target']:,})"
        parts.append(text)
    return "; ".join(parts)
