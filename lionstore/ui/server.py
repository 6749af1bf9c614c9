"""The ``lionstore ui`` web app: Starlette routes over :class:`~lionstore.ui.api.RunViewer`.

Read-only: only GET (and HEAD) routes exist. Bound to 127.0.0.1 by default; any
other address needs a token, which every request must then carry (``?token=``
once, which sets a cookie, or ``Authorization: Bearer``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from http.cookies import SimpleCookie
from importlib import resources
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lionstore.errors import LionstoreError
from lionstore.ui.api import NotFoundError, RunViewer

__all__ = ["TokenGuard", "create_app", "is_loopback", "static_dir"]

_COOKIE = "lionstore_ui_token"
# How long a request for a run's timeline waits for its fold: a long run is drawn
# with what has been folded by then, and fills in while the page asks again.
_FOLD_BUDGET = 0.6


def static_dir() -> str:
    """The folder of the page's scripts, styles and licences (package data)."""
    return str(resources.files("lionstore.ui") / "static")


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _json(data: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status, headers={"Cache-Control": "no-store"})


def _int(request: Request, name: str) -> int | None:
    value = request.query_params.get(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise NotFoundError(f"{name} must be a whole number, not {value!r}") from None


Endpoint = Callable[[Request], Awaitable[Response]]


def create_app(target: str | os.PathLike[str], *, token: str | None = None) -> ASGIApp:
    """The web app for the database at ``target`` (a file path or PostgreSQL URL).
    With ``token``, every request must carry it."""
    viewer = RunViewer(target)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await viewer.open()
        # The runs list is folded once, from startup, then kept up to date.
        warm = asyncio.ensure_future(viewer.runs())
        try:
            yield
        finally:
            warm.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await warm
            await viewer.close()

    def api(handler: Callable[[Request], Awaitable[Any]]) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            try:
                return _json(await handler(request))
            except NotFoundError as exc:
                return _json({"error": str(exc)}, 404)
            except LionstoreError as exc:
                return _json({"error": str(exc)}, 400)

        return endpoint

    async def runs(request: Request) -> Any:
        return {"target": os.fspath(target), "runs": await viewer.runs()}

    async def timeline(request: Request) -> Any:
        # A long run is folded a slice at a time: the page draws what is there and
        # asks again until the summary says it is complete.
        tl = await viewer.timeline(request.path_params["run"], budget=_FOLD_BUDGET)
        return {
            "summary": tl.summary(),
            "window": tl.window(buckets=_int(request, "buckets") or 600),
        }

    async def window(request: Request) -> Any:
        tl = await viewer.timeline(request.path_params["run"], budget=_FOLD_BUDGET)
        return tl.window(
            _int(request, "start"), _int(request, "end"), buckets=_int(request, "buckets") or 600
        )

    async def head(request: Request) -> Any:
        tl = await viewer.timeline(request.path_params["run"], budget=_FOLD_BUDGET)
        return {
            "position": tl.position,
            "records": tl.records,
            "end_us": tl.end_us,
            "complete": tl.complete,
        }

    async def event(request: Request) -> Any:
        return await viewer.event(request.path_params["run"], request.path_params["id"])

    async def mail(request: Request) -> Any:
        return await viewer.mail(request.path_params["run"], request.path_params["id"])

    async def source(request: Request) -> Any:
        return await viewer.source(request.path_params["run"], request.path_params["id"])

    async def state(request: Request) -> Any:
        return await viewer.state(request.path_params["run"], _int(request, "at"))

    async def verify(request: Request) -> Any:
        return await viewer.verify(request.path_params["run"])

    async def compare(request: Request) -> Any:
        return await viewer.compare(request.path_params["run"])

    async def index(request: Request) -> Response:
        return FileResponse(os.path.join(static_dir(), "index.html"))

    routes = [
        Route("/", index),
        Route("/favicon.ico", lambda request: Response(status_code=204)),
        Route("/api/runs", api(runs)),
        Route("/api/runs/{run}/timeline", api(timeline)),
        Route("/api/runs/{run}/window", api(window)),
        Route("/api/runs/{run}/head", api(head)),
        Route("/api/runs/{run}/events/{id}", api(event)),
        Route("/api/runs/{run}/mails/{id}", api(mail)),
        Route("/api/runs/{run}/sources/{id}", api(source)),
        Route("/api/runs/{run}/state", api(state)),
        Route("/api/runs/{run}/verify", api(verify)),
        Route("/api/runs/{run}/compare", api(compare)),
        Mount("/static", StaticFiles(directory=static_dir()), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    return TokenGuard(app, token) if token else app


class TokenGuard:
    """ASGI middleware: every HTTP request must carry the token (``?token=``, which
    also sets a cookie for the page's own requests, the cookie, or ``Authorization:
    Bearer``); anything else gets 401."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        given = request.query_params.get("token") or request.cookies.get(_COOKIE) or ""
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            given = auth[7:]
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            response: Response = PlainTextResponse(
                "lionstore ui: a token is required (open the address printed at start)", 401
            )
            await response(scope, receive, send)
            return
        if request.query_params.get("token"):
            cookie = SimpleCookie()
            cookie[_COOKIE] = self.token
            cookie[_COOKIE]["httponly"] = True
            cookie[_COOKIE]["samesite"] = "Strict"
            cookie[_COOKIE]["path"] = "/"
            header = cookie.output(header="").strip().encode("latin-1")

            async def send_with_cookie(message: Message) -> None:
                if message["type"] == "http.response.start":
                    message.setdefault("headers", [])
                    message["headers"] = [*message["headers"], (b"set-cookie", header)]
                await send(message)

            await self.app(scope, receive, send_with_cookie)
            return
        await self.app(scope, receive, send)
