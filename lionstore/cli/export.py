"""``lionstore export``: a run's records as JSON lines, digests included.

Each line is :meth:`lionstore.Recorded.to_json_dict` (position, stream_id,
stream_version, run_id, kind, kind_version, data, recorded_at) plus ``digest``,
the record's link in the run's digest chain. Records of kinds this code does not
know are exported from their raw JSON like any other.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any, TextIO

import lionstore
from lionstore.cli._common import describe_run, resolve_run, run_ref
from lionstore.cli._output import Progress, output_stream
from lionstore.domain.records import Recorded
from lionstore.log.backend import RunInfo
from lionstore.replay.state import Progress as ProgressCallback

__all__ = ["export_record", "export_run", "register"]


def export_record(record: Recorded) -> dict[str, Any]:
    """One exported line: the record as ``lionstore log --json`` shows it, plus its digest."""
    return {**record.to_json_dict(), "digest": record.digest}


async def export_run(
    path: str | os.PathLike[str],
    out: TextIO,
    *,
    run: str | None = None,
    progress: ProgressCallback | None = None,
) -> tuple[RunInfo, int]:
    """Write run ``run`` (id or label; default: the newest) of the database at ``path``
    to ``out`` as JSON lines; return the run and the number of records written."""
    count = 0
    async with lionstore.open(path, readonly=True) as store:
        info = await resolve_run(store, run)
        async for record in await store.read(run=info.run_id, page_size=2000):
            out.write(json.dumps(export_record(record), separators=(",", ":"), default=str))
            out.write("\n")
            count += 1
            if progress is not None and count % 10_000 == 0:
                progress(count)
    return info, count


def register(
    commands: argparse._SubParsersAction[Any],
    common: argparse.ArgumentParser,
) -> None:
    """Add ``export`` to the ``lionstore`` parser."""
    parser = commands.add_parser(
        "export",
        help="write a run's records as JSON lines",
        description=(
            "Write every record of run R (default: the newest run) as one JSON object per "
            "line: position, stream_id, "
            "stream_version, run_id, kind, kind_version, data, recorded_at and digest. "
            "Read-only."
        ),
        parents=[common],
    )
    parser.add_argument("path", metavar="PATH", help="a lionstore database file")
    parser.add_argument(
        "--run", type=run_ref, metavar="R", help="the run (id or label); default: the newest"
    )
    parser.add_argument(
        "--output", "-o", metavar="FILE", help="write to FILE instead of standard output"
    )
    parser.add_argument(
        "--format",
        choices=("jsonl", "otlp", "otlp-json", "spans"),
        default="jsonl",
        help=(
            "jsonl (default): the records; otlp: send the run as OpenTelemetry spans to "
            "--endpoint; otlp-json: write those spans as OTLP JSON (needs lionstore[otel]); "
            "spans: print them as an indented tree"
        ),
    )
    parser.add_argument(
        "--endpoint",
        metavar="URL",
        help=(
            "with --format otlp: the OTLP/HTTP endpoint (e.g. http://127.0.0.1:4318; "
            "default: $OTEL_EXPORTER_OTLP_ENDPOINT, else http://localhost:4318)"
        ),
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="with --format otlp: give up on the endpoint after this long (default 10)",
    )
    parser.add_argument(
        "--redact",
        metavar="NAME",
        action="append",
        default=[],
        help=(
            "with an otlp format: leave out this attribute (e.g. response, fields, item, "
            "error, or a full name such as lionstore.event.response); repeatable"
        ),
    )
    parser.set_defaults(handler=_export_command)


async def _export_spans(args: argparse.Namespace) -> int:
    import asyncio

    from lionstore.otel._attrs import make_redactor
    from lionstore.otel.recorded import format_tree, recorded_spans

    redact = make_redactor(args.redact)
    async with lionstore.open(args.path, readonly=True) as store:
        info = await resolve_run(store, args.run)
        spans = await recorded_spans(store, str(info.run_id), redact=redact)
    if args.format == "spans":
        with output_stream(args.output) as out:
            out.write(format_tree(spans) + "\n")
        return 0
    from lionstore.otel.export import otlp_json, send_otlp, to_sdk_spans

    sdk_spans = to_sdk_spans(str(info.run_id), spans)
    if args.format == "otlp-json":
        with output_stream(args.output) as out:
            out.write(otlp_json(sdk_spans) + "\n")
        if args.output not in (None, "-"):
            print(f"wrote {len(spans)} spans of run {describe_run(info)} to {args.output}")
        return 0
    await asyncio.to_thread(send_otlp, sdk_spans, args.endpoint, timeout=args.timeout)
    trace_id = f"{sdk_spans[0].context.trace_id:032x}"
    print(f"sent {len(spans)} spans of run {describe_run(info)} (trace {trace_id})")
    return 0


async def _export_command(args: argparse.Namespace) -> int:
    if args.format != "jsonl":
        return await _export_spans(args)
    if args.endpoint is not None or args.redact:
        raise SystemExit("lionstore export: --endpoint and --redact go with --format otlp")
    with output_stream(args.output) as out, Progress("exporting") as progress:
        info, count = await export_run(args.path, out, run=args.run, progress=progress)
    if args.output not in (None, "-"):
        print(f"exported {count} records of run {describe_run(info)} to {args.output}")
    return 0
