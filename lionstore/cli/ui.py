"""``lionstore ui``: serve a local, read-only web viewer of a database.

Needs the ``ui`` extra (``pip install 'lionstore[ui]'``: Starlette and uvicorn).
The pages call :mod:`lionstore.ui.api`, over the same library functions as
``runs``, ``timeline``, ``show``, ``verify`` and ``export``.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
from typing import Any

from lionstore.errors import LionstoreError

__all__ = ["UiUnavailableError", "register"]


class UiUnavailableError(LionstoreError):
    """The ``ui`` extra is not installed, or the address needs a token."""


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0-65535, not {value}")
    return value


def register(
    commands: argparse._SubParsersAction[Any],
    common: argparse.ArgumentParser,
) -> None:
    """Add ``ui`` to the ``lionstore`` parser."""
    parser = commands.add_parser(
        "ui",
        help="serve a local web viewer of a database (needs lionstore[ui])",
        description=(
            "Serve a read-only web viewer of the database at PATH (or a PostgreSQL URL): "
            "the runs, a run's timeline, an event or mail, the state at a position, "
            "verify and forks; a run being written updates live. Binds 127.0.0.1; any "
            "other address needs --token. Needs the ui extra: pip install 'lionstore[ui]'."
        ),
        parents=[common],
    )
    parser.add_argument("path", metavar="PATH|URL", help="a lionstore database file or URL")
    parser.add_argument("--port", type=_port, default=8765, help="port (default 8765; 0: any)")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, loopback)"
    )
    parser.add_argument(
        "--token",
        help="a secret every request must carry; required off loopback ('auto' makes one)",
    )
    parser.set_defaults(handler=_ui_command)


async def _ui_command(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from lionstore.ui.server import create_app, is_loopback
    except ImportError as exc:
        raise UiUnavailableError(
            f"lionstore ui needs the ui extra ({exc.name} is missing): pip install 'lionstore[ui]'"
        ) from None
    token = args.token
    if token == "auto":
        token = secrets.token_urlsafe(24)
    if not is_loopback(args.host) and not token:
        raise UiUnavailableError(
            f"binding {args.host} (not loopback) needs --token SECRET (or --token auto)"
        )
    import lionstore

    async with lionstore.open(args.path, readonly=True):
        pass  # a clear error now for a missing or foreign file, before serving
    app = create_app(args.path, token=token)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning")
    server = uvicorn.Server(config)

    async def announce() -> None:
        while not server.started:
            await asyncio.sleep(0.05)
        for sock in server.servers[0].sockets if server.servers else []:
            host, port = sock.getsockname()[:2]
            shown = f"[{host}]" if ":" in host else host
            suffix = f"/?token={token}" if token else "/"
            print(f"lionstore ui: serving {args.path} at http://{shown}:{port}{suffix}", flush=True)
            break

    watcher = asyncio.ensure_future(announce())
    try:
        await server.serve()
    finally:
        watcher.cancel()
    return 0
