"""Entity lists from a Wikidata JSON dump: the N items with the most sitelinks, as the
``name,type,description`` CSV that the entities sector reads.

The dump (``latest-all.json.gz`` or ``.bz2``; or ``-`` for an uncompressed stream on
stdin, e.g. from ``lbzip2 -dc``) is one JSON array with one entity a line::

    [
    {"type":"item","id":"Q42","labels":{...},"descriptions":{...},"claims":{...},"sitelinks":{...}},
    ...
    ]

Sitelinks (the Wikipedia and sister-project pages about an item) stand in for frequency:
an item covered by many language editions is widely known. The dump is streamed once and
the best ``top`` items are kept in a bounded heap, so memory does not grow with the dump.
A line is parsed only when it can enter the heap: its count of ``"site"`` keys (an upper
bound of its sitelinks, counted on the raw bytes) must reach the weakest kept item.

The type is a coarse mapping of the item's ``P31`` (instance of) values onto the kinds of
the bundled list (person, place, organisation, work, concept, event); items of
bookkeeping classes (disambiguation pages, categories, templates, lists, years, dates,
given names...) are left out, items of unmapped classes get an empty type.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import heapq
import lzma
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import IO, Any, cast

import orjson

from ..core.config import parse_toml
from ..core.corpus import InvalidLine

CLASS_MAPPING = 'not a class mapping ([types] kind = ["Q5", ...]; [skip] classes = [...]): '


@dataclass(frozen=True)
class Classes:
    """P31 class -> coarse type, and the classes whose items are left out."""

    types: dict[str, str]
    skip: frozenset[str]


def load_classes(path: str | Path | None = None) -> Classes:
    """The class mapping of ``path`` (TOML: ``[types] kind = [QIDs]``, ``[skip] classes = [QIDs]``),
    or the bundled ``resources/wikidata_classes.toml``."""
    if path is None:
        text = (resources.files("ultrachat.resources") / "wikidata_classes.toml").read_text(encoding="utf-8")
    else:
        text = Path(path).read_text(encoding="utf-8")
    where = path or "wikidata_classes.toml"
    try:
        data = parse_toml(text, str(where), ValueError, prefix=CLASS_MAPPING)
        types = {qid: kind for kind, qids in data.get("types", {}).items() for qid in qids}
        skip = data.get("skip", {}).get("classes", [])
        bad = [q for q in [*types, *skip] if not (isinstance(q, str) and re.fullmatch(r"Q\d+", q))]
    except (AttributeError, TypeError) as exc:
        raise ValueError(f"{where}: {CLASS_MAPPING}{exc}") from None
    if bad:
        raise ValueError(f"{where}: '{bad[0]}' is not a QID like Q5")
    return Classes(types, frozenset(skip))


PROGRESS_EVERY = 4096  # lines between progress updates


@dataclass(frozen=True)
class WikidataEntity:
    name: str
    type: str
    description: str
    qid: str
    sitelinks: int

    @property
    def rank(self) -> tuple[int, int]:
        """Higher is better: more sitelinks, then the older (smaller) QID."""
        return self.sitelinks, -int(self.qid[1:]) if self.qid[1:].isdigit() else 0


@dataclass
class BuildReport:
    lines: int = 0
    parsed: int = 0  # lines parsed as JSON (the others could not enter the top N)
    no_label: int = 0  # parsed items without a label in the language
    skipped_class: int = 0  # parsed items of bookkeeping classes
    invalid: int = 0  # malformed lines skipped (--skip-invalid)
    first_invalid: str = ""
    kept: list[WikidataEntity] = field(default_factory=list)


def _first(values: Any, langs: list[str]) -> str:
    """The text of the first of ``langs`` present in a labels/descriptions map."""
    if isinstance(values, dict):
        for lang in langs:
            value = values.get(lang)
            if isinstance(value, dict) and isinstance(value.get("value"), str) and value["value"].strip():
                return value["value"].strip()
    return ""


def _classes(claims: Any) -> list[str]:
    """The item's P31 QIDs, preferred rank first, deprecated ones left out. Older dumps
    (2015's) give only ``numeric-id``; empty maps may be written ``[]`` (PHP's empty array)."""
    found: list[tuple[int, str]] = []
    for claim in (claims or {}).get("P31") or []:
        rank = claim.get("rank")
        value = ((claim.get("mainsnak") or {}).get("datavalue") or {}).get("value")
        if rank == "deprecated" or not isinstance(value, dict):
            continue
        qid = value.get("id") or (f"Q{value['numeric-id']}" if isinstance(value.get("numeric-id"), int) else None)
        if isinstance(qid, str):
            found.append((rank != "preferred", qid))
    return [qid for _, qid in sorted(found, key=lambda f: f[0])]


def parse_entity(obj: Any, langs: list[str], classes_: Classes, report: BuildReport) -> WikidataEntity | None:
    """The entity of one dump line, or ``None`` when it is not an item worth listing."""
    if not isinstance(obj, dict) or not isinstance(obj.get("id"), str):
        raise ValueError("not a Wikidata entity (no 'id')")
    if obj.get("type") != "item":
        return None  # properties, lexemes
    classes = _classes(obj.get("claims"))
    if classes_.skip.intersection(classes):
        report.skipped_class += 1
        return None
    name = _first(obj.get("labels"), langs)
    if not name:
        report.no_label += 1
        return None
    kind = next((classes_.types[c] for c in classes if c in classes_.types), "")
    sitelinks = obj.get("sitelinks")
    return WikidataEntity(name, kind, _first(obj.get("descriptions"), langs), obj["id"],
                          len(sitelinks) if isinstance(sitelinks, dict) else 0)


def name_key(name: str) -> str:
    return " ".join(name.casefold().split())


class TopEntities:
    """The ``n`` best-ranked entities seen, one per name (case- and space-insensitive; the
    better-ranked of two namesakes stays). A heap with lazy deletion; it is rebuilt when
    stale entries reach ``n``, so it never holds more than ``2n``."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._heap: list[tuple[tuple[int, int], str, WikidataEntity]] = []
        self._best: dict[str, tuple[int, int]] = {}

    def full(self) -> bool:
        return len(self._best) >= self.n

    def min_sitelinks(self) -> int:
        """Sitelinks of the weakest kept entity once full (0 before): a line with fewer cannot enter."""
        return self._heap[0][0][0] if self.full() and self._heap else 0

    def offer(self, entity: WikidataEntity) -> None:
        key, rank = name_key(entity.name), entity.rank
        held = self._best.get(key)
        if (held is not None and rank <= held) or (held is None and self.full() and rank <= self._heap[0][0]):
            return
        self._best[key] = rank
        heapq.heappush(self._heap, (rank, key, entity))
        while len(self._best) > self.n:
            rank0, key0, _ = heapq.heappop(self._heap)
            if self._best.get(key0) == rank0:
                del self._best[key0]
        self._drop_stale()

    def _drop_stale(self) -> None:
        while self._heap and self._best.get(self._heap[0][1]) != self._heap[0][0]:
            heapq.heappop(self._heap)
        if len(self._heap) >= 2 * max(self.n, 1):
            self._heap = [e for e in self._heap if self._best.get(e[1]) == e[0]]
            heapq.heapify(self._heap)

    def best(self) -> list[WikidataEntity]:
        live = [e for rank, key, e in self._heap if self._best.get(key) == rank]
        return sorted(live, key=lambda e: e.rank, reverse=True)


# typeshed's GzipFile is not an IO[bytes] (BZ2File and LZMAFile are), though it reads like one
DECOMPRESSORS: dict[str, Callable[[IO[bytes]], IO[bytes]]] = {
    ".gz": lambda raw: cast(IO[bytes], gzip.GzipFile(fileobj=raw)), ".bz2": bz2.BZ2File, ".xz": lzma.LZMAFile}


@contextmanager
def open_dump(path: str | Path) -> Iterator[tuple[IO[bytes], Callable[[], int], int]]:
    """``(decompressed stream, bytes of the file read so far, file size)``; ``-`` is stdin
    (uncompressed; no size)."""
    if str(path) == "-":
        yield sys.stdin.buffer, lambda: 0, 0
        return
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    decompress = DECOMPRESSORS.get(path.suffix.lower())
    with open(path, "rb") as raw:
        if decompress is None:
            yield raw, raw.tell, path.stat().st_size
            return
        with decompress(raw) as fh:
            yield fh, raw.tell, path.stat().st_size


def dump_lines(fh: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    """``(line number, entity JSON)`` of each entity line: the array's brackets, blank lines
    and the separating commas are stripped."""
    for no, line in enumerate(fh, 1):
        line = line.strip()
        if line in (b"[", b"]", b""):
            continue
        yield no, line[:-1] if line.endswith(b",") else line


def top_entities(dump: str | Path, top: int, langs: list[str], classes: Classes, skip_invalid: bool = False,
                 on_progress: Callable[[int, int, int], None] | None = None) -> BuildReport:
    """Stream ``dump`` and keep its ``top`` entities by sitelinks (see the module doc).
    A malformed line raises :class:`InvalidLine` (``file:line: reason``) unless
    ``skip_invalid``, which counts it. ``on_progress(bytes read, file size, lines)`` is
    called every few thousand lines."""
    report, best = BuildReport(), TopEntities(top)
    with open_dump(dump) as (fh, done, size):
        try:
            for no, line in dump_lines(fh):
                report.lines = no
                if on_progress and no % PROGRESS_EVERY == 0:
                    on_progress(done(), size, no)
                if not line.startswith(b"{"):
                    _invalid(report, f"{dump}:{no}", "not a JSON object", skip_invalid)
                    continue
                if best.full() and line.count(b'"site"') < best.min_sitelinks():
                    continue
                report.parsed += 1
                try:
                    entity = parse_entity(orjson.loads(line), langs, classes, report)
                except orjson.JSONDecodeError as exc:
                    _invalid(report, f"{dump}:{no}", f"invalid JSON ({exc})", skip_invalid)
                    continue
                except (ValueError, AttributeError, TypeError) as exc:
                    _invalid(report, f"{dump}:{no}", str(exc), skip_invalid)
                    continue
                if entity is not None:
                    best.offer(entity)
        except (EOFError, OSError) as exc:  # a truncated or corrupt compressed dump
            raise InvalidLine(f"{dump}:{report.lines + 1}: cannot decompress ({exc})") from None
        if on_progress:
            on_progress(done(), size, report.lines)
    report.kept = best.best()
    return report


def _invalid(report: BuildReport, where: str, reason: str, skip: bool) -> None:
    if not skip:
        raise InvalidLine(f"{where}: {reason} (--skip-invalid skips such lines)")
    report.invalid += 1
    report.first_invalid = report.first_invalid or f"{where}: {reason}"


def write_entities_csv(entities: list[WikidataEntity], out: Path) -> None:
    """``name,type,description,qid,sitelinks``, best first; written whole or not at all."""
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(out.name + ".part")
    with open(part, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["name", "type", "description", "qid", "sitelinks"])
        writer.writerows([e.name, e.type, e.description, e.qid, e.sitelinks] for e in entities)
    part.replace(out)


def build_entities(dump: str | Path, out: Path, top: int, langs: list[str], classes: Path | None = None,
                   skip_invalid: bool = False, progress: bool = True) -> BuildReport:
    """``ultrachat entities build``: stream ``dump``, write its ``top`` entities to ``out``."""
    from rich.progress import TextColumn

    from ..core.progress import make_progress

    mapping = load_classes(classes)
    if Path(out).suffix.lower() != ".csv":
        raise ValueError(f"--out {out}: the entity list is written as CSV; name it *.csv")
    bar = make_progress(progress, unit="bytes", extra=(TextColumn("{task.fields[lines]:,} lines"),))
    with bar:
        task = bar.add_task("wikidata", total=None, lines=0)

        def show(done: int, size: int, lines: int) -> None:
            bar.update(task, completed=done, total=size or None, lines=lines)

        report = top_entities(dump, top, langs, mapping, skip_invalid, show)
    write_entities_csv(report.kept, Path(out))
    return report
