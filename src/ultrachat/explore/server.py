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


def _reply(obj: Any) -> web.Response:
    resp = web.json_response(obj, dumps=lambda o: json.dumps(o, ensure_ascii=False))
    resp.enable_compression()
    return resp


class _Api:
    """The JSON handlers over one index, each worker thread reading it through its own connection."""

    def __init__(self, index: Path, corpus_stats: dict[str, Any] | None) -> None:
        self.index = index
        self.corpus_stats = corpus_stats
        self.local = _Connections()
        self.map: Any = None  # the index does not change while it is served

    def _db(self) -> sqlite3.Connection:
        if self.local.conn is None:
            self.local.conn = connect(self.index, readonly=True)
        return self.local.conn

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.to_thread(lambda: fn(self._db(), *args))

    async def search(self, request: web.Request) -> web.Response:
        return _reply(await self._call(s.search, s.Query.parse(request.query)))

    async def dialogue(self, request: web.Request) -> web.Response:
        unknown = sorted(set(request.query) - {"dup"})
        if unknown:
            raise s.QueryError(f"unknown parameter {unknown[0]!r}; expected 'dup'")
        dup = s.parse_int(request.query, "dup", 0, 10**9) or 0
        return _reply(await self._call(s.dialogue, request.match_info["id"], dup))

    async def stats(self, request: web.Request) -> web.Response:
        stats = await self._call(s.stats)
        return _reply({**stats, "corpus_stats": self.corpus_stats} if self.corpus_stats else stats)

    async def map_points(self, request: web.Request) -> web.Response:
        if self.map is None:
            self.map = await self._call(s.map_points)
        return _reply(self.map)


async def _page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html")


def _guard(allowed_hosts: set[str] | None) -> Any:
    """Middleware: refuse other hosts (DNS rebinding), answer errors as JSON, add the security headers."""

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

    return guard


def make_app(index: Path, allowed_hosts: set[str] | None = None,
             corpus_stats: dict[str, Any] | None = None) -> web.Application:
    """The aiohttp application serving ``index`` (an explorer SQLite index).

    ``corpus_stats``: a ``stats.json`` of ``ultrachat stats``, shown beside the index's own
    statistics (``/api/stats`` key ``corpus_stats``).
    """
    api = _Api(index, corpus_stats)
    app = web.Application(middlewares=[_guard(allowed_hosts)])
    app.router.add_get("/", _page)
    app.router.add_get("/api/search", api.search)
    app.router.add_get("/api/dialogues/{id:.+}", api.dialogue)  # ids may contain "/"
    app.router.add_get("/api/stats", api.stats)
    app.router.add_get("/api/map", api.map_points)
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
