"""``lionstore fork``: a new run from the first records of an old one.

The library behind it is :meth:`lionstore.Store.fork`: the new run gets copies
of the source run's records up to position P (with new positions and its own
digest chain) and then carries on live, like any run (``lionstore.open(path,
run=LABEL)``); the source run is not changed.
"""

from __future__ import annotations

import argparse
import os
import shlex
from dataclasses import dataclass
from typing import Any

import lionstore
from lionstore.cli._common import (
    describe_run,
    non_negative,
    require_position_in_run,
    resolve_run,
    run_label,
    run_ref,
)
from lionstore.cli._output import print_json_line
from lionstore.errors import StoreError
from lionstore.log.backend import RunInfo

__all__ = ["ForkResult", "fork_run", "register"]


@dataclass(frozen=True)
class ForkResult:
    """The source run, the new run and how many records the new run holds."""

    source: RunInfo
    run: RunInfo
    at: int
    records: int

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run.run_id,
            "label": self.run.label,
            "parent_run_id": self.source.run_id,
            "parent_label": self.source.label,
            "forked_at_position": self.at,
            "records": self.records,
        }


async def fork_run(
    path: str | os.PathLike[str], *, run: str, at: int, label: str | None = None
) -> ForkResult:
    """Fork run ``run`` (id or label) of the database at ``path`` at position ``at``
    into a new run labelled ``label`` (unlabelled if None). ``at`` must be one of the
    run's positions: :class:`PositionOutOfRangeError` names its range otherwise."""
    async with lionstore.open(path, readonly=True) as store:
        source = await resolve_run(store, run)
        await require_position_in_run(store, source, at)
        if label is not None:
            taken = [info for info in await store.runs() if info.label == label]
            if taken:
                raise StoreError(
                    f"a run labelled {label!r} already exists ({taken[0].run_id}); "
                    "choose another --label"
                )
    # Attached by id to the source run: opening never starts a run here.
    async with lionstore.open(path, run=source.run_id) as store:
        forked = await store.fork(at, label=label, run=source.run_id)
        records = 0
        async for _ in await store.read(run=forked.run_id, page_size=5000):
            records += 1
    return ForkResult(source, forked, at, records)


def register(
    commands: argparse._SubParsersAction[Any],
    common: argparse.ArgumentParser,
) -> None:
    """Add ``fork`` to the ``lionstore`` parser."""
    parser = commands.add_parser(
        "fork",
        help="start a new run from the first records of a run",
        description=(
            "Start a new run holding the records of run R up to position P; it then "
            "continues like any run. Run R is not changed."
        ),
        parents=[common],
    )
    parser.add_argument("path", metavar="PATH", help="a lionstore database file")
    parser.add_argument(
        "--run", type=run_ref, metavar="R", required=True, help="the run to fork (id or label)"
    )
    parser.add_argument(
        "--at",
        type=non_negative,
        metavar="P",
        required=True,
        help="copy the run's records up to position P (inclusive)",
    )
    parser.add_argument("--label", type=run_ref, metavar="L", help="the new run's label")
    parser.add_argument("--json", action="store_true", help="print the new run as JSON")
    parser.set_defaults(handler=_fork_command)


async def _fork_command(args: argparse.Namespace) -> int:
    result = await fork_run(args.path, run=args.run, at=args.at, label=args.label)
    if args.json:
        print_json_line(result.to_json_dict())
    else:
        print(
            f"forked run {describe_run(result.source)} at position {result.at}: new run "
            f"{describe_run(result.run)} with {result.records} records"
        )
        print(
            f"  lionstore show {shlex.quote(args.path)} --run {shlex.quote(run_label(result.run))}"
        )
    return 0
