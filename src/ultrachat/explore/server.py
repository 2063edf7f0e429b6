"""The explorer's web server: a read-only JSON API over the index plus the static web UI.

Routes (all GET; see docs/explore.md):

- ``/api/search?q=&sector=&topic=&model=&min_rounds=&max_rounds=&min_chars=&max_chars=&page=&per_page=``
- ``/api/dialogues/{id}?dup=N``
- ``/api/stats``
- ``/api/map``
- ``/`` and ``/static/...``: the UI (plain JS; every piece of dialogue text goes into the
  page as text nodes, never as HTML)

Bad parameters answer 400 with ``{"error": "..."}``; the index is opened read-only; the
default bind address is 127.0.0.1 and requests whose ``Host`` is not the address served
are refused (a DNS-rebinding page cannot reach the API through a foreign host name).

Example::

    >>> asyncio.run(serve(Path("explore.sqlite"), "127.0.0.1", 8000))  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sqlite3
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from . import search as s
from .index import connect

STATIC = Path(__file__).resolve().parent / "static"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}

# Defence in depth behind the UI's text-only rendering: no inline script, nothing external.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


class _Connections(threading.local):
    """One read-only SQLite connection per worker thread."""

    conn: sqlite3.Connection | None = None


def make_app(index: Path, allowed_hosts: set[str] | None = None,
             corpus_stats: dict[str, Any] | None = None) -> web.Application:
    """The aiohttp application serving ``index`` (an explorer SQLite index).

    ``corpus_stats``: a ``stats.json`` of ``ultrachat stats``, shown beside the index's own
    statistics (``/api/stats`` key ``corpus_stats``).
    """
    local = _Connections()
    cache: dict[str, Any] = {}

    def db() -> sqlite3.Connection:
        if local.conn is None:
            local.conn = connect(index, readonly=True)
        return local.conn

    async def call(fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.to_thread(lambda: fn(db(), *args))

    def reply(obj: Any) -> web.Response:
        resp = web.json_response(obj, dumps=lambda o: json.dumps(o, ensure_ascii=False))
        resp.enable_compression()
        return resp

    async def api_search(request: web.Request) -> web.Response:
        return reply(await call(s.search, s.Query.parse(request.query)))

    async def api_dialogue(request: web.Request) -> web.Response:
        unknown = sorted(set(request.query) - {"dup"})
        if unknown:
            raise s.QueryError(f"unknown parameter {unknown[0]!r}; expected 'dup'")
        dup = s.parse_int(request.query, "dup", 0, 10**9) or 0
        return reply(await call(s.dialogue, request.match_info["id"], dup))

    async def api_stats(request: web.Request) -> web.Response:
        stats = await call(s.stats)
        return reply({**stats, "corpus_stats": corpus_stats} if corpus_stats else stats)

    async def api_map(request: web.Request) -> web.Response:
        if "map" not in cache:  # the index does not change while it is served
            cache["map"] = await call(s.map_points)
        return reply(cache["map"])

    async def page(request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html")

    @web.middleware
    async def guard(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                    ) -> web.StreamResponse:
        host = request.url.host or ""
        if allowed_hosts is not None and host not in allowed_hosts:
            resp: web.StreamResponse = web.json_response({"error": f"host {host!r} not served here"}, status=421)
        else:
            try:
                resp = await handler(request)
            except s.QueryError as exc:
                resp = web.json_response({"error": str(exc)}, status=400)
            except s.NotFound as exc:
                resp = web.json_response({"error": str(exc)}, status=404)
            except s.Gone as exc:
                resp = web.json_response({"error": str(exc)}, status=410)
            except web.HTTPException as exc:
                resp = web.json_response({"error": exc.reason}, status=exc.status)
        resp.headers.update(SECURITY_HEADERS)
        return resp

    app = web.Application(middlewares=[guard])
    app.router.add_get("/", page)
    app.router.add_get("/api/search", api_search)
    app.router.add_get("/api/dialogues/{id:.+}", api_dialogue)  # ids may contain "/"
    app.router.add_get("/api/stats", api_stats)
    app.router.add_get("/api/map", api_map)
    app.router.add_static("/static", STATIC, follow_symlinks=False)
    return app


async def serve(index: Path, host: str = "127.0.0.1", port: int = 8000,
                on_ready: Callable[[str], None] | None = None, corpus_stats: dict[str, Any] | None = None) -> None:
    """Serve until cancelled, Ctrl+C or SIGTERM; ``on_ready(url)`` gets the real URL
    (``port=0`` picks a free port)."""
    allowed = LOOPBACK | {host} if host in LOOPBACK else None
    runner = web.AppRunner(make_app(index, allowed, corpus_stats), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else port
    if on_ready:
        on_ready(f"http://{'[' + host + ']' if ':' in host else host}:{bound}/")
    # Our own handlers: a server started in the background of a script inherits SIGINT
    # ignored, and a service manager stops it with SIGTERM; both should close it cleanly.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    handled = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # Windows: Ctrl+C ends it as KeyboardInterrupt
            loop.add_signal_handler(sig, stop.set)
            handled.append(sig)
    try:
        await stop.wait()
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
        await runner.cleanup()
