"""``lionstore resume``: finish a run that was interrupted (a crash, a kill).

The library behind it is :func:`lionstore.replay.resume`: every executor of the
run is rebuilt with the user's event classes and driven until its queue is
drained (claims left by a crashed process are taken over at once when its
process is known to be gone, else once their leases expire, up to
``max_attempts``; a wait for leases is announced on stderr first), and every
mail router sweeps until nothing is left to collect or deliver.

lionstore never imports a module because a database file names it: the event
classes must come from modules the caller names with ``--import``. Before any
work, :func:`resume_run` checks that every event class of the run is defined and
otherwise fails with one line naming the class and its module.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import lionstore
from lionstore.cli._common import describe_run, resolve_run, run_ref
from lionstore.cli._output import (
    PROG,
    CliError,
    count_phrase,
    print_json_line,
)
from lionstore.domain.element import resolve_class
from lionstore.domain.event import Event
from lionstore.errors import EventClassNotFoundError
from lionstore.log.backend import RunInfo
from lionstore.projections.executor import RecordedEvent
from lionstore.replay import rebuild, resume
from lionstore.replay.resume import import_modules

__all__ = ["ResumeResult", "check_event_classes", "register", "resume_run"]


class _NotesHandler(logging.Handler):
    """Prints ``lionstore: resume: <message>`` lines (warnings and worse) to a stream."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(logging.WARNING)
        self.stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        print(f"{PROG}: resume: {record.getMessage()}", file=self.stream, flush=True)


@dataclass(frozen=True)
class ResumeResult:
    """The run that was resumed and its counts afterwards (events by status, mail by
    state), as :func:`lionstore.replay.resume` returns them."""

    run: RunInfo
    counts: dict[str, Any]

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run.run_id,
            "label": self.run.label,
            "events": self.counts.get("events", {}),
            "mail": self.counts.get("mail", {}),
        }


def _import(modules: Sequence[str]) -> None:
    """Import the modules named with ``--import``, from the current directory too (as
    ``python -m`` would; the console script's own directory is not the user's)."""
    if modules and "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for name in modules:
        try:
            import_modules([name])
        except Exception as exc:
            detail = " ".join(str(exc).split()) or type(exc).__name__
            raise CliError(f"cannot import module {name!r} (from --import): {detail}") from exc


def check_event_classes(classes: Sequence[str]) -> None:
    """Raise :class:`EventClassNotFoundError` naming the first of ``classes`` (class
    paths) that is not defined in this process, and the module to ``--import``."""
    for path in sorted(set(classes)):
        try:
            resolve_class(path, Event)
        except EventClassNotFoundError:
            module = path.rpartition(".")[0] or path
            raise EventClassNotFoundError(
                f"event class {path} is not defined in this process; name the module that "
                f"defines it with --import (e.g. --import {module})"
            ) from None


async def resume_run(
    path: str | os.PathLike[str],
    *,
    run: str | None = None,
    modules: Sequence[str] = (),
    notes: TextIO | None = None,
) -> ResumeResult:
    """Import ``modules``, check the run's event classes, then finish run ``run`` (id
    or label; default: the newest) of the database at ``path``. Notes about leases it
    has to wait for go to ``notes`` (default: stderr)."""
    _import(modules)
    async with lionstore.open(path, readonly=True) as store:
        info = await resolve_run(store, run)
        state = await rebuild(store, run=info.run_id)
    classes = [
        event.event_class
        for executor in state.executors.values()
        for event in executor.pile
        if isinstance(event, RecordedEvent)
    ]
    check_event_classes(classes)
    # What resume has to wait for (leases of owners that may still run), or takes over
    # at once (owners whose process is gone), it logs on lionstore.resume: shown here.
    handler = _NotesHandler(notes if notes is not None else sys.stderr)
    resume_log = logging.getLogger("lionstore.resume")
    resume_log.addHandler(handler)
    try:
        # Opened by id: an unknown label must never start a new run here.
        async with lionstore.open(path, run=info.run_id) as store:
            counts = await resume(store, modules=modules)
    finally:
        resume_log.removeHandler(handler)
    return ResumeResult(info, counts)


# -- the command ----------------------------------------------------------------------------


def register(
    commands: argparse._SubParsersAction[Any],
    common: argparse.ArgumentParser,
) -> None:
    """Add ``resume`` to the ``lionstore`` parser."""
    parser = commands.add_parser(
        "resume",
        help="finish a run that was interrupted, with the event classes imported",
        description=(
            "Finish an interrupted run: drain every executor's queue (taking over the "
            "claims of a crashed process once their leases expire) and deliver the mail "
            "still in flight. The run's event classes must be importable: name their "
            "modules with --import (lionstore never imports what a file names)."
        ),
        parents=[common],
    )
    parser.add_argument("path", metavar="PATH", help="a lionstore database file")
    parser.add_argument(
        "--run", type=run_ref, metavar="R", required=True, help="the run (id or label)"
    )
    parser.add_argument(
        "--import",
        dest="modules",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first (it defines event classes of the run); repeatable",
    )
    parser.add_argument("--json", action="store_true", help="print the counts as JSON")
    parser.set_defaults(handler=_resume_command)


async def _resume_command(args: argparse.Namespace) -> int:
    result = await resume_run(args.path, run=args.run, modules=args.modules)
    if args.json:
        print_json_line(result.to_json_dict())
    else:
        counts = result.to_json_dict()
        print(
            f"resumed run {describe_run(result.run)}: events {count_phrase(counts['events'])}; "
            f"mail {count_phrase(counts['mail'])}"
        )
    return 0
