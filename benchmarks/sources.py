"""Source material at scale: ``entities build`` on a synthetic Wikidata-format dump, and the
materials sector's hash-order sample of a synthetic C4-format file.

* Wikidata: items in the dump's line format (labels and descriptions in 8 languages,
  padded claims, ~3 KB a line), 60% without sitelinks and the rest Pareto-distributed
  like real coverage; top 1,000 kept. Side by side in one run: the raw ``"site"`` count
  pre-filter (a line is parsed only when it can enter the top N) against parsing every
  line; and the dump at a fifth of its size, for peak RSS.
* Materials: gzipped JSONL with ``text``, ``timestamp``, ``url`` (C4's shipped format,
  ~2 KB passages); the first tenth of the passages taken in the seeded hash order (a
  bottom-k over the whole file) against the corpus order (which reads only what it
  takes), and the file at a fifth of its size, for peak RSS.

    python -m benchmarks sources   # ULTRACHAT_BENCH_ITEMS=20000 ULTRACHAT_BENCH_DOCS=20000 for a quicker run
"""

from __future__ import annotations

import gzip
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

from .dedup import load

ITEMS = int(os.environ.get("ULTRACHAT_BENCH_ITEMS", "100000"))
DOCS = int(os.environ.get("ULTRACHAT_BENCH_DOCS", "100000"))
TOP = 1000
ENV = " ".join(f"{k}={os.environ[k]}" for k in ("ULTRACHAT_BENCH_ITEMS", "ULTRACHAT_BENCH_DOCS") if k in os.environ)
COMMAND = f"{ENV} python -m benchmarks sources".strip()
LANGS = ("en", "fr", "de", "es", "it", "ja", "zh", "ru")

WIKIDATA_CHILD = r"""
import json, resource, sys, time
from ultrachat.sources import wikidata as wd

dump, top, prefilter = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
if not prefilter:
    wd.TopEntities.min_sitelinks = lambda self: 0  # every line parsed
t = time.perf_counter()
r = wd.top_entities(dump, top, ["en"], wd.load_classes())
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"wall": time.perf_counter() - t, "lines": r.lines, "parsed": r.parsed,
                  "kept": [e.qid for e in r.kept], "rss_mb": rss}))
"""

MATERIALS_CHILD = r"""
import itertools, json, resource, sys, time
from ultrachat.generate.materials import select_passages
from ultrachat.recipe import MaterialsConfig

path, k, order = sys.argv[1], int(sys.argv[2]), sys.argv[3]
cfg = MaterialsConfig(files=[path], order=order, max_chars=10000)
t = time.perf_counter()
got = [p.source for p in itertools.islice(select_passages(cfg, "en", 0, k), k)]
print(json.dumps({"wall": time.perf_counter() - t, "got": len(got),
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(("river", "city", "model", "history", "north", "music", "paper", "field", "light",
                                "stone", "people", "water", "system", "garden", "energy")) for _ in range(n))


def _item(rng: random.Random, i: int) -> dict:
    sites = 0 if rng.random() < 0.6 else min(300, int(rng.paretovariate(1.0)))
    claims = {f"P{p}": [{"mainsnak": {"snaktype": "value", "property": f"P{p}", "datavalue": {
        "value": _words(rng, 12), "type": "string"}}, "type": "statement", "rank": "normal"}] for p in range(40, 52)}
    claims["P31"] = [{"mainsnak": {"snaktype": "value", "property": "P31", "datavalue": {
        "value": {"entity-type": "item", "id": rng.choice(("Q5", "Q515", "Q11424", "Q13442814", "Q16521"))},
        "type": "wikibase-entityid"}}, "type": "statement", "rank": "normal"}]
    return {"type": "item", "id": f"Q{i}",
            "labels": {lang: {"language": lang, "value": f"Item {i} {lang}"} for lang in LANGS},
            "descriptions": {lang: {"language": lang, "value": _words(rng, 6)} for lang in LANGS},
            "claims": claims,
            "sitelinks": {f"s{n}wiki": {"site": f"s{n}wiki", "title": f"Item {i}", "badges": []} for n in range(sites)}}


def synthetic_dump(n: int, folder: Path) -> Path:
    path = folder / f"wikidata-{n}.json.gz"
    if not path.exists():
        rng = random.Random(n)
        with gzip.open(path.with_suffix(".part"), "wt", encoding="utf-8", compresslevel=1) as fh:
            fh.write("[\n")
            for i in range(1, n + 1):
                fh.write(json.dumps(_item(rng, i), separators=(",", ":")) + (",\n" if i < n else "\n"))
            fh.write("]\n")
        path.with_suffix(".part").replace(path)
    return path


def as_bz2(gz: Path) -> Path:
    """The same dump compressed with bzip2 (as latest-all.json.bz2 ships)."""
    path = gz.with_name(gz.name.replace(".gz", ".bz2"))
    if not path.exists():
        import bz2

        with gzip.open(gz, "rb") as src, bz2.open(path.with_suffix(".part"), "wb") as dst:
            while chunk := src.read(1 << 24):
                dst.write(chunk)
        path.with_suffix(".part").replace(path)
    return path


def synthetic_c4(n: int, folder: Path) -> Path:
    path = folder / f"c4-{n}.json.gz"
    if not path.exists():
        rng = random.Random(n)
        with gzip.open(path.with_suffix(".part"), "wt", encoding="utf-8", compresslevel=1) as fh:
            for i in range(n):
                text = f"Document {i}. " + _words(rng, rng.randint(150, 600))
                fh.write(json.dumps({"text": text, "timestamp": "2019-04-25T12:57:54Z",
                                     "url": f"https://example.org/{i}"}) + "\n")
        path.with_suffix(".part").replace(path)
    return path


def _child(script: str, *args: object) -> dict:
    run = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True, check=True)
    return json.loads(run.stdout.strip().splitlines()[-1])


def _raw_mb(path: Path) -> float:
    with gzip.open(path, "rb") as fh:
        return sum(len(chunk) for chunk in iter(lambda: fh.read(1 << 24), b"")) / 2**20


def wikidata_section(folder: Path) -> list[str]:
    rows, before = [], load()
    results = {}
    for n in (ITEMS // 5, ITEMS):
        dump = synthetic_dump(n, folder)
        mb = _raw_mb(dump)
        runs = [(dump, True), (dump, False), (as_bz2(dump), True)] if n == ITEMS else [(dump, True)]
        for path, prefilter in runs:
            r = _child(WIKIDATA_CHILD, path, TOP, int(prefilter))
            results[(n, prefilter, path.suffix)] = r
            how = 'raw "site" count, then parse' if prefilter else "parse every line"
            rows.append(f"| {n:,} | {path.suffix} | {how} | "
                        f"{r['wall']:.1f} | {n / r['wall']:,.0f} | {mb / r['wall']:.0f} | "
                        f"{r['parsed']:,} ({r['parsed'] / n:.0%}) | {r['rss_mb']:,.0f} |")
    gz, every, bz = (results[(ITEMS, True, ".gz")], results[(ITEMS, False, ".gz")], results[(ITEMS, True, ".bz2")])
    same = gz["kept"] == every["kept"] == bz["kept"]
    return [
        "### `entities build` on a Wikidata-format dump", "",
        f"Top {TOP:,} of a synthetic dump (gzip level 1; ~{mb * 1024 / ITEMS:.1f} KB of JSON an item; 60% of items "
        f"without sitelinks; load average {before} before, {load()} after):", "",
        "| items | dump | lines parsed when | wall s | items/s | MB/s of JSON | lines parsed | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|", *rows, "",
        f"The pre-filter makes the pass {every['wall'] / gz['wall']:.1f}x faster at {ITEMS:,} items, with the same "
        f"{TOP:,} entities ({'identical lists' if same else 'LISTS DIFFER'}); the bzip2 dump takes "
        f"{bz['wall'] / gz['wall']:.1f}x the time of the gzip one (Python's bz2 decompresses on one core: pipe the "
        "real .bz2 dump through lbzip2 -dc, or use the .gz). Peak RSS is that of the process (Python, orjson, the "
        f"heap of {TOP:,} entities) and does not grow with the dump.", ""]


def materials_section(folder: Path) -> list[str]:
    rows, before = [], load()
    results = {}
    for n in (DOCS // 5, DOCS):
        path = synthetic_c4(n, folder)
        for order in ("hash", "file") if n == DOCS else ("hash",):
            r = _child(MATERIALS_CHILD, path, n // 10, order)
            results[(n, order)] = r
            read = n if order == "hash" else n // 10  # every passage is within the length bounds
            rows.append(f"| {n:,} | {n // 10:,} | {order} | {read:,} | {r['wall']:.1f} | {read / r['wall']:,.0f} | "
                        f"{r['rss_mb']:,.0f} |")
    slower = results[(DOCS, "hash")]["wall"] / results[(DOCS, "file")]["wall"]
    return [
        "### Materials: a hash-order sample of a C4-format file", "",
        f"The first tenth of the passages of a synthetic C4-format file (gzipped JSONL, ~2 KB passages; load average "
        f"{before} before, {load()} after). The hash order reads the whole file once and keeps the keys of the "
        f"passages in play (their texts wait in a spool file); the file order reads only the passages it takes.", "",
        "| passages in the file | taken | order | read | wall s | passages read/s | peak RSS MiB |",
        "|---|---|---|---|---|---|---|", *rows, "",
        f"At {DOCS:,} passages the hash order took {slower:.1f}x "
        f"the time of the file order (it reads ten times as much), and its peak RSS went from "
        f"{results[(DOCS // 5, 'hash')]['rss_mb']:,.0f} to {results[(DOCS, 'hash')]['rss_mb']:,.0f} MiB for five "
        "times the file and five times the sample.", ""]


def run() -> str:
    folder = Path(tempfile.gettempdir()) / "ultrachat-bench-sources"
    folder.mkdir(exist_ok=True)
    return "\n".join(["## Source material: Wikidata entities and C4-format passages", "",
                      f"Command: `{COMMAND}`.", "", *wikidata_section(folder), *materials_section(folder)])
