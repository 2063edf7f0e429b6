"""Read side of the explorer index: search, browse, one dialogue, statistics, map points.

Search plan (chosen by measurement, see docs/explore.md and ``make bench``): one walk
over at most ``SCAN`` matches of the query in rowid order (straight from the FTS5
doclists, no ranking) gives the match count and a rowid bound; then the filters are
applied and only the first ``CANDIDATES`` survivors are ranked by bm25, whose per-row
cost is what makes ``ORDER BY rank`` over a common word take seconds at a million
dialogues. A query with fewer matches is ranked exactly. When the matches are denser
than one dialogue in two, every term is in over half the corpus, FTS5 floors its IDF at
~0 and bm25 barely discriminates: only ``CANDIDATES // 5`` are scored.

User input never reaches FTS5 syntax: each word becomes a quoted token (``word*`` a
prefix, ``"two words"`` a phrase), so no query can be a syntax error.

Example::

    >>> conn = connect(Path("explore.sqlite"), readonly=True)        # doctest: +SKIP
    >>> search(conn, Query.parse({"q": "photosynthesis", "sector": "world"}))["results"][0]["id"]  # doctest: +SKIP
    'world-s0-t013-00002'
"""

from __future__ import annotations

import json
import re
import sqlite3
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SCAN = 10000  # matches of a query looked at, at most (in rowid order: cheap, no ranking)
CANDIDATES = 500  # of those, how many are ranked by bm25 (the per-row cost of bm25 is what bounds this)
MAX_BROWSE_OFFSET = 100000
MAX_QUERY_CHARS = 500
MAX_TERMS = 16
SNIPPET_CHARS = 240

_TOKEN = re.compile(r"[^\W_]+")  # what FTS5's unicode61 tokenizer treats as a token
_CHUNK = re.compile(r'"([^"]*)"?|(\S+)')


class QueryError(ValueError):
    """A bad query parameter: the API answers 400 with this message."""


class NotFound(LookupError):
    """No such dialogue (404)."""


class Gone(LookupError):
    """The dialogue's source file changed since indexing (410)."""


def fold(token: str) -> str:
    """Case- and accent-insensitive form, as the FTS5 tokenizer (remove_diacritics 2) compares."""
    return "".join(c for c in unicodedata.normalize("NFKD", token.casefold()) if not unicodedata.combining(c))


@dataclass(frozen=True)
class Term:
    """One query unit: a phrase of tokens, optionally a prefix on the last token."""

    tokens: tuple[str, ...]
    prefix: bool = False

    def fts(self) -> str:
        return '"' + " ".join(self.tokens) + '"' + ("*" if self.prefix else "")


def parse_terms(q: str) -> list[Term]:
    """Words, ``word*`` prefixes and ``"quoted phrases"`` of a search box string."""
    if len(q) > MAX_QUERY_CHARS:
        raise QueryError(f"q: at most {MAX_QUERY_CHARS} characters")
    terms: list[Term] = []
    for m in _CHUNK.finditer(q):
        chunk = m.group(1) if m.group(1) is not None else m.group(2)
        tokens = tuple(fold(t) for t in _TOKEN.findall(chunk))
        if tokens:
            terms.append(Term(tokens, prefix=m.group(2) is not None and chunk.endswith("*")))
    if len(terms) > MAX_TERMS:
        raise QueryError(f"q: at most {MAX_TERMS} words or phrases")
    return terms


def parse_int(params: Mapping[str, str], name: str, lo: int, hi: int) -> int | None:
    """Integer parameter ``name`` in ``[lo, hi]``, ``None`` when absent; :class:`QueryError` otherwise."""
    raw = params.get(name, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise QueryError(f"{name}: expected an integer, got {raw[:40]!r}") from None
    if not lo <= value <= hi:
        raise QueryError(f"{name}: must be between {lo} and {hi}")
    return value


@dataclass(frozen=True)
class Query:
    """A validated search/browse request (``Query.parse`` raises :class:`QueryError`)."""

    terms: tuple[Term, ...] = ()
    sector: str | None = None
    topic: str | None = None
    model: str | None = None
    min_rounds: int | None = None
    max_rounds: int | None = None
    min_chars: int | None = None
    max_chars: int | None = None
    page: int = 1
    per_page: int = 20

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> Query:
        known = {"q", "sector", "topic", "model", "min_rounds", "max_rounds", "min_chars", "max_chars", "page",
                 "per_page"}
        unknown = sorted(set(params) - known)
        if unknown:
            raise QueryError(f"unknown parameter {unknown[0]!r}; expected one of {', '.join(sorted(known))}")
        q = params.get("q", "")
        terms = parse_terms(q)
        if q.strip() and not terms:
            raise QueryError("q: no searchable words in the query")
        query = cls(tuple(terms), params.get("sector") or None, params.get("topic") or None,
                    params.get("model") or None,
                    parse_int(params, "min_rounds", 0, 10**6), parse_int(params, "max_rounds", 0, 10**6),
                    parse_int(params, "min_chars", 0, 10**12), parse_int(params, "max_chars", 0, 10**12),
                    parse_int(params, "page", 1, 10**6) or 1, parse_int(params, "per_page", 1, 100) or 20)
        limit = CANDIDATES if terms else MAX_BROWSE_OFFSET
        if query.offset >= limit:
            raise QueryError(f"page: results stop at {limit}; refine the query or filters")
        return query

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.per_page

    def where(self, alias: str = "d") -> tuple[str, list[Any]]:
        """SQL conditions on the dialogues table for the filters."""
        parts: list[str] = []
        args: list[Any] = []
        for col, op, value in (("sector", "=", self.sector), ("topic", "=", self.topic), ("model", "=", self.model),
                               ("rounds", ">=", self.min_rounds), ("rounds", "<=", self.max_rounds),
                               ("chars", ">=", self.min_chars), ("chars", "<=", self.max_chars)):
            if value is not None:
                parts.append(f"{alias}.{col} {op} ?")
                args.append(value)
        return " AND ".join(parts), args


COLUMNS = "d.rowid, d.id, d.dup, d.sector, d.topic, d.model, d.rounds, d.chars, d.title, f.path, d.offset, d.length"


def _result(row: tuple[Any, ...]) -> dict[str, Any]:
    keys = ("rowid", "id", "dup", "sector", "topic", "model", "rounds", "chars", "title")
    return dict(zip(keys, row[: len(keys)], strict=True))


def search(conn: sqlite3.Connection, query: Query) -> dict[str, Any]:
    """One page of results: ``{total, more, page, results: [{id, dup, title, snippet, ...}]}``.

    ``snippet`` is a list of ``[text, is_match]`` pieces: the client shows them as text,
    never as HTML. ``more`` means ``total`` is a lower bound: the query had more matches
    than the plan looks at (``SCAN`` matches, of which ``CANDIDATES`` are ranked).
    """
    where, args = query.where()
    if query.terms:
        match = " ".join(t.fts() for t in query.terms)
        # One walk over at most SCAN matches in rowid order gives the unfiltered count and the
        # rowid bounding every later step (FTS5 honours rowid ranges).
        seen, last = conn.execute(f"SELECT count(*), max(rowid) FROM (SELECT rowid FROM fts WHERE fts MATCH ? "
                                  f"LIMIT {SCAN})", (match,)).fetchone()
        more = seen >= SCAN
        # Matches denser than one row in two mean every term is in over half the corpus: bm25
        # then floors each term's IDF at ~0 and barely ranks, so fewer candidates are scored.
        ranked = CANDIDATES // 5 if more and seen > last / 2 else CANDIDATES
        cond = (" AND fts.rowid <= ?" if more else "") + (" AND " + where if where else "")
        cargs = [match, *([last] if more else []), *args]
        # CROSS JOIN keeps FTS5 as the outer loop; bm25 is evaluated only on rows passing the filters.
        source = f"fts CROSS JOIN dialogues d ON d.rowid = fts.rowid WHERE fts MATCH ?{cond}" if where else \
            f"fts WHERE fts MATCH ?{cond}"
        sql = (f"SELECT {COLUMNS} FROM (SELECT fts.rowid AS rowid, bm25(fts) AS score FROM {source} "
               f"LIMIT {ranked}) c JOIN dialogues d ON d.rowid = c.rowid JOIN files f ON f.id = d.file "
               "ORDER BY c.score, c.rowid LIMIT ? OFFSET ?")
        rows = conn.execute(sql, [*cargs, query.per_page, query.offset]).fetchall()
        total = conn.execute(f"SELECT count(*) FROM {source}", cargs).fetchone()[0] if where else seen
    else:
        sql = (f"SELECT {COLUMNS} FROM dialogues d JOIN files f ON f.id = d.file {'WHERE ' + where if where else ''} "
               "ORDER BY d.rowid LIMIT ? OFFSET ?")
        rows = conn.execute(sql, [*args, query.per_page, query.offset]).fetchall()
        total = conn.execute(f"SELECT count(*) FROM (SELECT 1 FROM dialogues d {'WHERE ' + where if where else ''} "
                             f"LIMIT {MAX_BROWSE_OFFSET})", args).fetchone()[0]
        more = total >= MAX_BROWSE_OFFSET
        ranked = 0
    results = []
    for row in rows:
        item = _result(row)
        if query.terms:
            try:
                item["snippet"] = snippet("\n".join(_read(row[9], row[10], row[11])["data"]), query.terms)
            except Gone:
                item["snippet"] = [["(source file changed since indexing)", False]]
        results.append(item)
    return {"total": total, "more": more, "ranked": min(total, ranked) if query.terms else None,
            "page": query.page, "per_page": query.per_page, "results": results}


def snippet(text: str, terms: tuple[Term, ...] | list[Term], width: int = SNIPPET_CHARS) -> list[list[Any]]:
    """The passage around the first match, split into ``[text, is_match]`` pieces."""
    singles = {t.tokens[i] for t in terms for i in range(len(t.tokens)) if not (t.prefix and i == len(t.tokens) - 1)}
    prefixes = tuple(t.tokens[-1] for t in terms if t.prefix)
    if text.isascii():  # the common case: one regex pass, no per-token Unicode folding
        words = "|".join([*map(re.escape, singles), *(re.escape(p) + r"[^\W_]*" for p in prefixes)])
        hits = [m.span() for m in re.finditer(rf"(?<![^\W_])(?:{words})(?![^\W_])", text, re.IGNORECASE)]
    else:
        hits = [m.span() for m in _TOKEN.finditer(text)
                if (f := fold(m.group())) in singles or (prefixes and f.startswith(prefixes))]
    start = max(0, hits[0][0] - width // 4) if hits else 0
    if start:
        space = text.find(" ", start, hits[0][0])
        start = space + 1 if space >= 0 else start
    end = min(len(text), start + width)
    pieces: list[list[Any]] = [["…", False]] if start else []
    pos = start
    for a, b in hits:
        if a < start or b > end:
            continue
        if a > pos:
            pieces.append([text[pos:a], False])
        pieces.append([text[a:b], True])
        pos = b
    pieces.append([text[pos:end] + ("…" if end < len(text) else ""), False])
    return [[" ".join(p.split("\n")), hit] for p, hit in pieces if p]


def _read(path: str, offset: int, length: int) -> dict[str, Any]:
    """The dialogue line at ``offset`` in ``path``; :class:`Gone` if the file no longer has it there."""
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            raw = fh.read(length)
        obj = json.loads(raw)
    except (OSError, ValueError):
        raise Gone(f"{path} changed since it was indexed; rerun `ultrachat explore` to refresh the index") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("data"), list):
        raise Gone(f"{path} changed since it was indexed; rerun `ultrachat explore` to refresh the index")
    return obj


def dialogue(conn: sqlite3.Connection, dialogue_id: str, dup: int = 0) -> dict[str, Any]:
    """The full dialogue ``{id, dup, data, meta, file, line, same_id}`` read from its JSONL file."""
    row = conn.execute("SELECT d.id, d.dup, f.path, d.offset, d.length, d.line FROM dialogues d "
                       "JOIN files f ON f.id = d.file WHERE d.id = ? AND d.dup = ?", (dialogue_id, dup)).fetchone()
    if row is None:
        raise NotFound(f"no dialogue with id {dialogue_id!r}" + (f" (occurrence {dup})" if dup else ""))
    obj = _read(row[2], row[3], row[4])
    if str(obj.get("id")) != dialogue_id:
        raise Gone(f"{row[2]} changed since it was indexed; rerun `ultrachat explore` to refresh the index")
    same = conn.execute("SELECT count(*) FROM dialogues WHERE id = ?", (dialogue_id,)).fetchone()[0]
    return {"id": dialogue_id, "dup": dup, "data": obj["data"],
            "meta": obj.get("meta") if isinstance(obj.get("meta"), dict) else {},
            "file": row[2], "line": row[5], "same_id": same}


def stats(conn: sqlite3.Connection) -> dict[str, Any]:
    """Statistics cached at index time (see :func:`ultrachat.explore.index.compute_stats`)."""
    row = conn.execute("SELECT value FROM kv WHERE key = 'stats'").fetchone()
    return json.loads(row[0]) if row else {}


def map_points(conn: sqlite3.Connection) -> dict[str, Any]:
    """Map points as column arrays; sector/topic as indexes into ``sectors``/``topics``."""
    rows = conn.execute("SELECT m.x, m.y, d.id, d.dup, d.sector, d.topic, d.title FROM map m "
                        "JOIN dialogues d ON d.rowid = m.rowid ORDER BY m.rowid").fetchall()
    sectors: dict[str | None, int] = {}
    topics: dict[str | None, int] = {}
    out: dict[str, Any] = {"x": [], "y": [], "id": [], "dup": [], "sector": [], "topic": [], "title": []}
    for x, y, did, dup, sector, topic, title in rows:
        out["x"].append(round(x, 4))
        out["y"].append(round(y, 4))
        out["id"].append(did)
        out["dup"].append(dup)
        out["sector"].append(sectors.setdefault(sector, len(sectors)))
        out["topic"].append(topics.setdefault(topic, len(topics)))
        out["title"].append(title[:120])
    out["sectors"] = list(sectors)
    out["topics"] = list(topics)
    total = conn.execute("SELECT count(*) FROM dialogues").fetchone()[0]
    out["count"] = len(rows)
    out["total"] = total
    return out
