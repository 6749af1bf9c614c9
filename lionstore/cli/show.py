"""``lionstore show``: the state of a run at its end, at a position or at a time.

The library behind it is :func:`lionstore.replay.rebuild` (a fold of the run's
records with raw materializers, so the user's event classes are never needed)
and :meth:`lionstore.replay.RunProjection.summary`; :func:`show_run` opens the
file read-only and calls them, :func:`format_state` is the human rendering.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import lionstore
from lionstore.cli._common import (
    describe_run,
    fork_origin,
    non_negative,
    parse_time,
    require_position_in_run,
    resolve_run,
    run_ref,
    short_id,
)
from lionstore.cli._output import (
    Progress,
    compact_json,
    count_phrase,
    format_time,
    print_json_line,
    shorten,
    terminal_width,
)
from lionstore.log.backend import RunInfo
from lionstore.replay import RunProjection, rebuild
from lionstore.replay.state import Progress as ProgressCallback

__all__ = ["RunState", "format_state", "register", "show_run"]

_CLASS_WIDTH = 24


@dataclass(frozen=True)
class RunState:
    """A run's state as rebuilt from its records: which run, where, and the projection."""

    run: RunInfo
    at: int | None
    until: datetime | None
    projection: RunProjection
    origin: str | None = None  # "forked from LABEL at position P" for a fork
    newest_of: int | None = None  # the number of runs, when none was named (the newest)

    def to_json_dict(self) -> dict[str, Any]:
        """What ``lionstore show --json`` prints: the run (with the run it was forked
        from, if any), the bound asked for, and :meth:`RunProjection.summary`
        (``position``, ``records``, ``executors``, ``routers``, ``unknown_records``)."""
        return {
            "run_id": self.run.run_id,
            "label": self.run.label,
            "parent_run_id": self.run.parent_run_id,
            "forked_at_position": self.run.forked_at_position,
            "at": self.at,
            "time": self.until.isoformat() if self.until is not None else None,
            **self.projection.summary(),
        }


async def show_run(
    path: str | os.PathLike[str],
    *,
    run: str | None = None,
    at: int | None = None,
    until: datetime | None = None,
    progress: ProgressCallback | None = None,
) -> RunState:
    """Rebuild run ``run`` (id or label; default: the newest run) of the database at
    ``path`` up to position ``at`` or time ``until`` (both inclusive; default: its
    end). ``at`` must be a position of that run (a fork's records have positions of
    their own, after its parent's): :class:`PositionOutOfRangeError` names the run's
    range otherwise. Read-only; needs none of the run's classes."""
    async with lionstore.open(path, readonly=True) as store:
        info = await resolve_run(store, run)
        if at is not None:
            await require_position_in_run(store, info, at)
        runs = await store.runs()
        projection = await rebuild(store, run=info.run_id, at=at, until=until, progress=progress)
    newest_of = len(runs) if run is None else None
    return RunState(info, at, until, projection, fork_origin(info, runs), newest_of)


# -- the human rendering -------------------------------------------------------------------


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _class_name(path: str | None) -> str:
    if not path:
        return "?"
    return path.rsplit(".", 1)[-1]


def _outcome(event: dict[str, Any]) -> str:
    if event.get("error"):
        return f"error: {' '.join(str(event['error']).split())}"
    if event["status"] == "processing" and event.get("owner"):
        return f"claimed by {event['owner']}"
    if event.get("in") == "pending":
        return "(appended, not forwarded yet)"
    if event.get("in") == "queue":
        return "(in the processor queue)"
    if event.get("response") is None:
        return "-"
    return compact_json(event["response"])


def _table(rows: list[tuple[str, ...]], right: set[int], width: int) -> list[str]:
    """Align ``rows`` (the first is the header); the last column is cut to fit."""
    columns = len(rows[0])
    widths = [max(len(row[i]) for row in rows) for i in range(columns - 1)]
    lines = []
    for row in rows:
        cells = [
            row[i].rjust(widths[i]) if i in right else row[i].ljust(widths[i])
            for i in range(columns - 1)
        ]
        prefix = "    " + "  ".join(cells) + "  "
        lines.append((prefix + shorten(row[-1], max(10, width - len(prefix)))).rstrip())
    return lines


def _executor_lines(name: str, state: dict[str, Any], width: int) -> list[str]:
    events: list[dict[str, Any]] = state["events"]
    statuses: dict[str, int] = {}
    for event in events:
        statuses[event["status"]] = statuses.get(event["status"], 0) + 1
    lines = [
        f"executor {name}: {_plural(len(events), 'event')} ({count_phrase(statuses)}); "
        f"{len(state['pending'])} waiting to be forwarded, {len(state['queue'])} in the "
        "processor queue"
        + (
            f"; {len(state['released'])} released from the working pile (their records "
            "are in the log: lionstore log / timeline)"
            if state.get("released")
            else ""
        )
    ]
    for owner, config in state["processors"].items():
        lines.append(
            f"  processor {owner}: {_class_name(config.get('processor_class'))}, capacity "
            f"{config.get('queue_capacity')}, max attempts {config.get('max_attempts')}, "
            f"lease {config.get('lease_seconds')} s"
        )
    if not events:
        return lines
    rows: list[tuple[str, ...]] = [("EVENT", "CLASS", "STATUS", "ATTEMPTS", "RESPONSE / ERROR")]
    for event in events:
        rows.append(
            (
                short_id(event["id"]),
                shorten(_class_name(event.get("class")), _CLASS_WIDTH),
                event["status"],
                str(event["attempts"]),
                _outcome(event),
            )
        )
    return [*lines, *_table(rows, {3}, width)]


def _mail_line(mail: dict[str, Any], width: int) -> str:
    text = (
        f"{short_id(mail['id'])}  {short_id(mail['sender'])} -> {short_id(mail['recipient'])}  "
        f"{mail['category']}: {compact_json(mail['item'])}"
    )
    return shorten(text, max(20, width - 6))


def _router_lines(name: str, state: dict[str, Any], width: int) -> list[str]:
    sources: list[str] = state["sources"]
    deleted: list[str] = state["deleted_sources"]
    boxes: dict[str, Any] = state["mailboxes"]
    buffer: dict[str, list[dict[str, Any]]] = state["buffer"]
    dead: list[dict[str, Any]] = state["dead_letters"]
    head = f"router {name}: {_plural(len(sources), 'source')}"
    if deleted:
        head += f" ({len(deleted)} deleted)"
    lines = [head]
    rows: list[tuple[str, ...]] = [("SOURCE", "OUTBOX", "INBOX (mails by sender)")]
    for sid in dict.fromkeys([*sources, *deleted, *boxes]):
        box = boxes.get(sid, {"outbox": [], "inbox": {}})
        inbox = ", ".join(
            f"{short_id(sender)} {len(mails)}" for sender, mails in box["inbox"].items() if mails
        )
        label = short_id(sid) + (" (deleted)" if sid in deleted else "")
        rows.append((label, str(len(box["outbox"])), inbox or "-"))
    if len(rows) > 1:
        lines += _table(rows, {1}, width)
    waiting = sum(len(mails) for mails in buffer.values())
    if waiting:
        lines.append(
            f"  buffer: {_plural(waiting, 'mail')} waiting for delivery ("
            + ", ".join(f"for {short_id(r)} {len(m)}" for r, m in buffer.items() if m)
            + ")"
        )
        lines += [f"    {_mail_line(mail, width)}" for mails in buffer.values() for mail in mails]
    else:
        lines.append("  buffer: empty")
    lines.append(f"  dead letters: {len(dead)}")
    for letter in dead:
        where = f"{letter['reason']} (at {letter['stage']}, position {letter['position']})"
        lines.append(f"    {_mail_line(letter, width - len(where) - 2)}  {where}")
    return lines


def format_state(state: RunState, *, width: int | None = None) -> list[str]:
    """The human ``lionstore show``: a header, then a section per executor (a table of
    its events) and per mail router (mailboxes, buffer, dead letters)."""
    total = width if width is not None else terminal_width()
    summary = state.projection.summary()
    if state.at is not None:
        where = f"up to position {state.at}"
    elif state.until is not None:
        where = f"up to {format_time(state.until)} UTC"
    else:
        where = "at its end"
    origin = f", {state.origin}," if state.origin else ""
    lines = [
        f"run {describe_run(state.run)}{origin} {where}: {summary['records']} records, "
        f"last position {summary['position']}"
    ]
    if state.newest_of is not None and state.newest_of > 1:
        lines.append(
            f"  (the newest of {state.newest_of} runs; `lionstore runs` lists them, "
            "--run chooses another)"
        )
    if summary["unknown_records"]:
        lines.append(
            f"  ({summary['unknown_records']} records of kinds this lionstore does not know; "
            "see `lionstore log`)"
        )
    for name, executor in summary["executors"].items():
        lines += ["", *_executor_lines(name, executor, total)]
    for name, router in summary["routers"].items():
        lines += ["", *_router_lines(name, router, total)]
    if not summary["executors"] and not summary["routers"]:
        lines += ["", "no events and no mail (yet) in this run"]
    return lines


# -- the command ----------------------------------------------------------------------------


def register(
    commands: argparse._SubParsersAction[Any],
    common: argparse.ArgumentParser,
) -> None:
    """Add ``show`` to the ``lionstore`` parser."""
    parser = commands.add_parser(
        "show",
        help="show the state of a run: events, mailboxes, buffer, dead letters",
        description=(
            "Rebuild the state of a run from its records (at its end, or up to a position "
            "or a time) and show each executor's events and each mail router's mailboxes, "
            "buffer and dead letters. Read-only; needs none of the run's classes."
        ),
        parents=[common],
    )
    parser.add_argument("path", metavar="PATH", help="a lionstore database file")
    parser.add_argument(
        "--run", type=run_ref, metavar="R", help="the run (id or label); default: the newest"
    )
    bound = parser.add_mutually_exclusive_group()
    bound.add_argument(
        "--at",
        type=non_negative,
        metavar="P",
        help="the state right after position P, one of the run's positions (a fork's "
        "records have positions of their own: see `lionstore log --run R`)",
    )
    bound.add_argument(
        "--time",
        type=parse_time,
        metavar="T",
        help="the state at time T (ISO 8601, UTC unless a zone is given)",
    )
    parser.add_argument("--json", action="store_true", help="print the state as one JSON object")
    parser.set_defaults(handler=_show_command)


async def _show_command(args: argparse.Namespace) -> int:
    with Progress("rebuilding") as progress:
        state = await show_run(
            args.path, run=args.run, at=args.at, until=args.time, progress=progress
        )
    if args.json:
        print_json_line(state.to_json_dict())
    else:
        for line in format_state(state):
            print(line)
    return 0
