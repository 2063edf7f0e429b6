"""`ultrachat explore` as a real server process: the JSON API, and the UI in real headless Chromium.

Chromium is Debian's package (``make test`` installs it with apt-get), driven by the
Playwright Python package through ``executable_path``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ARTIFACTS

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
XSS = ('Look: <script>window.__xss = "script"</script> and <img src=x onerror="window.__xss = \'img\'"> '
       "<b>bold?</b>")
SUBJECTS = [
    ("world", "Nature", "Why do ocean tides rise twice a day?", "Tides follow the moon's gravity."),
    ("world", "Nature", "How do volcanoes erupt?", "Magma rises through cracks in the crust."),
    ("writing", "Food", "Write a recipe for sourdough bread.", "Mix flour, water and starter; bake it hot."),
    ("writing", "Code", "Show me Python to reverse a list.", "Use this:\n```python\nitems.reverse()\n```\nDone."),
]


def corpus(folder: Path) -> int:
    """Two files: UltraChat lines with meta, and plain {id, data} lines (one carrying XSS payloads)."""
    folder.mkdir()
    lines = []
    for i in range(48):
        sector, topic, user, answer = SUBJECTS[i % len(SUBJECTS)]
        lines.append({"id": f"{sector}-{i:03d}", "data": [f"{user} Case {i}.", answer, "Tell me more.", answer],
                      "meta": {"sector": sector, "topic": topic, "rounds": 2, "stop_reason": "completed",
                               "models": {"assistant": {"model": "smollm2-135m"}}}})
    (folder / "dialogues.jsonl").write_text("".join(json.dumps(d) + "\n" for d in lines), encoding="utf-8")
    plain = [{"id": "xss-1", "data": [XSS, "I will not run <script>alert(1)</script> **ever**."]},
             {"id": "plain/2 ?", "data": ["Tides again?", "Yes, tides."]}]
    (folder / "plain.jsonl").write_text("".join(json.dumps(d) + "\n" for d in plain), encoding="utf-8")
    # What `ultrachat stats` writes (its row beside the paper's): the statistics page shows it.
    stats = {"row": {"dataset": "data", "dialogues": 50, "avg_turns": 3.9, "mtld": 41.5},
             "paper": {"source": "UltraChat paper, Table 4", "rows": [{"dataset": "UltraChat", "dialogues": 1468352,
                                                                       "avg_turns": 3.8, "mtld": 74.3}]},
             "command": "ultrachat stats data.jsonl"}
    (folder / "stats.json").write_text(json.dumps(stats), encoding="utf-8")
    return len(lines) + len(plain)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, ultrachat_exe: list[str]) -> Iterator[str]:
    root = tmp_path_factory.mktemp("explore")
    corpus(root / "data")
    proc = subprocess.Popen([*ultrachat_exe, "explore", str(root / "data"), "--port", "0",
                             "--index", str(root / "index.sqlite")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "Serving" not in line:
        proc.kill()
        pytest.fail(f"server did not start: {line!r} {proc.stderr.read() if proc.stderr else ''}")
    url = line.split(" on ")[1].split()[0]
    assert url.startswith("http://127.0.0.1:")  # loopback by default
    yield url
    proc.send_signal(signal.SIGTERM)  # a service manager's stop; Ctrl+C takes the same path
    assert proc.wait(timeout=10) == 0


def get(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> tuple[int, dict, object]:
    req = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        body = exc.read()
        return exc.code, dict(exc.headers), json.loads(body) if body.startswith(b"{") else body


def test_api_search_dialogue_stats_map(server: str) -> None:
    status, headers, res = get(f"{server}api/search?q=tides&sector=world")
    assert status == 200 and "default-src 'none'" in headers["Content-Security-Policy"]
    assert res["total"] == 12 and {r["sector"] for r in res["results"]} == {"world"}
    assert any(hit and text.lower() == "tides" for text, hit in res["results"][0]["snippet"])
    _, _, plain = get(f"{server}api/search?q=tides")
    assert plain["total"] == 13  # the plain {id, data} line is found too
    _, _, d = get(f"{server}api/dialogues/writing-003")
    assert d["data"][2] == "Tell me more." and d["meta"]["topic"] == "Code" and d["line"] == 4
    _, _, odd = get(f"{server}api/dialogues/plain%2F2%20%3F")  # ids are free text: slashes, spaces...
    assert odd["data"] == ["Tides again?", "Yes, tides."] and odd["meta"] == {}
    _, _, stats = get(f"{server}api/stats")
    assert stats["dialogues"] == 50 and ["world", 24] in stats["sectors"] and [None, 2] in stats["sectors"]
    assert stats["corpus_stats"]["row"]["mtld"] == 41.5
    assert dict(stats["rounds_hist"])["2"] == 48 and dict(stats["rounds_hist"])["1"] == 2  # plain lines: 2 turns
    _, _, m = get(f"{server}api/map")
    assert m["count"] == 50 == len(m["x"]) == len(m["title"])
    assert all(-1.0001 <= v <= 1.0001 for v in m["x"] + m["y"])
    assert set(m["sectors"]) == {"world", "writing", None}


@pytest.mark.parametrize(("path", "code"), [
    ("api/search?page=abc", 400), ("api/search?page=0", 400), ("api/search?min_rounds=-3", 400),
    ("api/search?q=%22%22%22", 400), ("api/search?bogus=1", 400), ("api/search?per_page=100000", 400),
    ("api/dialogues/nope", 404), ("api/dialogues/xss-1?dup=x", 400), ("api/dialogues/xss-1?dup=5", 404),
    ("static/../index.py", 404), ("api/nothing", 404),
])
def test_bad_requests_are_4xx_json(server: str, path: str, code: int) -> None:
    status, _, body = get(server + path)
    assert status == code
    if path.startswith("api/"):
        assert isinstance(body, dict) and body["error"]


def test_read_only_and_bound_to_its_host(server: str) -> None:
    assert get(f"{server}api/stats", method="POST")[0] == 405
    assert get(f"{server}api/stats", method="DELETE")[0] == 405
    status, _, body = get(f"{server}api/stats", headers={"Host": "attacker.example"})
    assert status == 421 and "attacker.example" in body["error"]


@pytest.fixture(scope="module")
def page(server: str) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: run `make browser` (apt-get install chromium)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        # bypass_csp: Playwright's polling evaluates strings, which the server's CSP forbids. It also
        # means the markup tests below prove the text-only rendering, not the CSP, keeps scripts out.
        pg = browser.new_page(viewport={"width": 1280, "height": 900}, bypass_csp=True)
        errors: list[str] = []
        pg.on("pageerror", lambda exc: errors.append(str(exc)))
        pg.goto(server)
        pg.wait_for_selector("body[data-ready='/search']")
        yield pg
        browser.close()
        assert errors == []


def wait_view(pg, view: str) -> None:
    pg.wait_for_function(f"document.body.dataset.ready === {json.dumps(view)}")


def test_browser_search_filter_open(page) -> None:
    pg = page
    pg.fill("#q", "volcanoes")
    pg.press("#q", "Enter")
    pg.wait_for_function("document.querySelectorAll('#results li').length === 12")
    assert pg.locator("#results li mark").first.inner_text().lower() == "volcanoes"
    assert "12 dialogues" in pg.inner_text("#search-summary")
    pg.fill("#q", "tides")
    pg.select_option("#f-sector", "world")  # a filter change searches at once
    pg.wait_for_function("location.hash.includes('sector=world') && location.hash.includes('q=tides')")
    pg.wait_for_function("document.querySelectorAll('#results li').length === 12")
    badges = pg.locator("#results .badge[title=sector]").all_inner_texts()
    assert set(badges) == {"sector: world"}
    pg.screenshot(path=str(ARTIFACTS / "explore-search.png"))
    pg.locator("#results .result-title").first.click()
    wait_view(pg, "/d/world-000")
    bubbles = pg.locator(".bubble")
    assert bubbles.count() == 4 and "tides" in bubbles.first.inner_text()
    assert pg.locator(".bubble.assistant").count() == 2
    assert "Nature" in pg.inner_text("#d-meta")
    assert pg.get_attribute("#d-permalink", "href") == "#/d/world-000"
    pg.screenshot(path=str(ARTIFACTS / "explore-dialogue.png"))


def test_browser_renders_markup_as_text(page, server: str) -> None:
    pg = page
    pg.goto(f"{server}#/d/xss-1")
    wait_view(pg, "/d/xss-1")
    first = pg.locator(".bubble").first.inner_text()
    assert "<script>window.__xss" in first and "<img src=x onerror=" in first and "<b>bold?</b>" in first
    assert pg.evaluate("window.__xss") is None
    assert pg.evaluate("document.querySelectorAll('#turns img, #turns script, #turns b').length") == 0
    assert pg.evaluate("document.scripts.length") == 1  # only app.js
    assert pg.locator(".bubble.assistant strong").inner_text() == "ever"  # the safe Markdown subset
    pg.goto(f"{server}#/d/writing-003")
    wait_view(pg, "/d/writing-003")
    assert pg.locator(".bubble.assistant pre code").first.inner_text() == "items.reverse()"
    pg.screenshot(path=str(ARTIFACTS / "explore-code.png"))
    pg.goto(f"{server}#/search?q=onerror")
    pg.wait_for_function("document.querySelectorAll('#results li').length === 1")
    assert "<img src=x" in pg.inner_text("#results .snippet")
    assert pg.evaluate("window.__xss") is None and pg.locator("#results img").count() == 0
    pg.screenshot(path=str(ARTIFACTS / "explore-xss.png"))


def test_browser_stats_and_map(page, server: str) -> None:
    pg = page
    pg.click("nav a[data-view=stats]")
    wait_view(pg, "/stats")
    assert pg.locator(".card-value").first.inner_text() == "50"
    assert pg.locator(".chart").count() == 8  # 7 charts and the `ultrachat stats` table
    assert pg.locator("table.tooling tr.ours").inner_text().split("\t")[:2] == ["data", "50"]
    assert "1,468,352" in pg.inner_text("table.tooling")
    pg.screenshot(path=str(ARTIFACTS / "explore-stats.png"), full_page=True)
    pg.click("nav a[data-view=map]")
    wait_view(pg, "/map")
    assert pg.get_attribute("#map-canvas", "data-points") == "50"
    painted = pg.evaluate("""() => { const c = document.getElementById('map-canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n; }""")
    assert painted > 50
    assert "world" in pg.inner_text("#map-legend")
    box = pg.locator("#map-canvas").bounding_box()
    x, y = pg.evaluate("window.explorerMap.point(0)")
    pg.mouse.move(box["x"] + x, box["y"] + y)
    pg.wait_for_selector("#map-tip:not([hidden])")
    title = pg.inner_text("#map-tip strong")
    pg.select_option("#colour-by", "topic")
    assert "Nature" in pg.inner_text("#map-legend")
    pg.screenshot(path=str(ARTIFACTS / "explore-map.png"))
    pg.mouse.wheel(0, -300)  # zoom in around the cursor: the hovered point stays under it
    x2, y2 = pg.evaluate("window.explorerMap.point(0)")
    assert abs(x2 - x) < 2 and abs(y2 - y) < 2
    pg.mouse.click(box["x"] + x2, box["y"] + y2)
    pg.wait_for_function("location.hash.startsWith('#/d/')")
    wait_view(pg, pg.evaluate("location.hash.slice(1).split('?')[0]"))
    # Dialogues of one subject share their opening words, hence their map position: any of them may open.
    assert title.split(" Case")[0] in pg.inner_text("#turns")
