"""The ``lionstore`` command: a thin layer over the library.

Every command calls a library function and only formats its result: ``db`` uses
:mod:`lionstore.cli.db` (over :mod:`lionstore.log.migrate`), ``log`` uses
:meth:`lionstore.Store.read`, ``runs`` :func:`lionstore.cli.runs.summarize_runs`
(over :class:`lionstore.replay.RunProjection`), ``show``
:func:`lionstore.replay.rebuild`, ``verify`` :func:`lionstore.replay.verify`,
``resume`` :func:`lionstore.replay.resume`, ``fork`` :meth:`lionstore.Store.fork`,
``export`` :meth:`lionstore.Store.read`, ``timeline``
:mod:`lionstore.replay.timeline`, ``demo`` :func:`lionstore.cli.demo.run_demo`.
Every inspection command has ``--json``.

Errors are one line on stderr, ``lionstore: error: <message>``, with exit code 1
(2 for a usage error); ``--debug`` prints the traceback instead. Ctrl-C exits 130
quietly, and a closed pipe (``lionstore log db | head``) ends the output quietly.
Long work (rebuilding, verifying, exporting, counting) shows a progress line on
stderr only when stderr is a terminal.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import traceback
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, NoReturn

from lionstore._version import __version__
from lionstore.cli import (
    db,
    demo,
    export,
    fork,
    log,
    resume,
    retention,
    runs,
    show,
    timeline,
    ui,
    verify,
)
from lionstore.cli._output import PROG, error_line, one_line
from lionstore.errors import LionstoreError

__all__ = [
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "UsageError",
    "build_parser",
    "main",
]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

Handler = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]


class UsageError(Exception):
    """The command line is wrong; reported as one line with exit code 2."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are exceptions, not a usage block and an exit."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    """The ``lionstore`` argument parser, with every command registered."""
    common = _Parser(add_help=False)
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show the full traceback of an error",
    )
    parser = _Parser(
        prog=PROG,
        description=(
            "lionstore: an append-only, replayable log in a SQLite file. "
            "Inspect, verify, resume, fork, check and upgrade lionstore databases."
        ),
        epilog="Run 'lionstore COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument(
        "--debug", action="store_true", default=False, help="show the full traceback of an error"
    )
    parser.set_defaults(group_parser=parser)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    demo.register(commands, common)
    runs.register(commands, common)
    log.register(commands, common)
    show.register(commands, common)
    verify.register(commands, common)
    timeline.register(commands, common)
    export.register(commands, common)
    resume.register(commands, common)
    fork.register(commands, common)
    db.register(commands, common)
    retention.register(commands, common)
    ui.register(commands, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``lionstore`` command with ``argv`` (default: ``sys.argv[1:]``).

    Returns the exit code: 0 on success, 1 on an error, 2 on a usage error, 130 on
    Ctrl-C. Never raises (except ``SystemExit`` is turned into its code, too).
    """
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(arguments)
    except UsageError as exc:
        error_line(str(exc))
        return EXIT_USAGE
    except SystemExit as exc:  # --help and --version
        return _exit_code(exc.code)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:  # `lionstore` or `lionstore db` alone
        group: argparse.ArgumentParser = args.group_parser
        group.print_help(sys.stderr)
        return EXIT_USAGE
    return _run(handler, args)


def _run(handler: Handler, args: argparse.Namespace) -> int:
    try:
        code: int = asyncio.run(handler(args))
        sys.stdout.flush()  # a closed pipe shows up here, not at interpreter exit
        return code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _discard_stdout()
        return EXIT_OK
    except UsageError as exc:
        error_line(str(exc))
        return EXIT_USAGE
    except Exception as exc:
        if args.debug:
            traceback.print_exception(exc, file=sys.stderr)
        else:
            error_line(_describe(exc))
        return EXIT_ERROR


def _describe(exc: BaseException) -> str:
    message = one_line(str(exc))
    if isinstance(exc, LionstoreError):
        return message or type(exc).__name__
    detail = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return f"{detail} (unexpected; run with --debug for the traceback)"


def _discard_stdout() -> None:
    """After EPIPE, point stdout at /dev/null so the interpreter's final flush is quiet."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def _exit_code(code: object) -> int:
    if code is None:
        return EXIT_OK
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return EXIT_ERROR
