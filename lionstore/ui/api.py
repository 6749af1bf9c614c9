"""What the ``lionstore ui`` pages show, as JSON-ready dicts.

Every answer comes from the library functions the CLI uses: the runs list folds
each run with :class:`~lionstore.replay.RunProjection` (as ``lionstore runs``),
a run's picture is :mod:`lionstore.replay.timeline` (as ``lionstore timeline``),
the state at a position is :func:`lionstore.cli.show.show_run` (``show --at``),
verify is :func:`lionstore.cli.verify.verify_run`, an event's or mail's records
are :meth:`lionstore.Store.read` of its stream shown as ``lionstore export`` does.
Nothing here writes, imports or executes anything the file names.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any

import lionstore
from lionstore._gcpause import gc_paused
from lionstore.cli.export import export_record
from lionstore.cli.show import show_run
from lionstore.cli.verify import verify_run
from lionstore.errors import LionstoreError, RunNotFoundError
from lionstore.log.store import Store
from lionstore.replay import RunProjection
from lionstore.replay.timeline import Timeline, TimelineBuilder, collect_timeline

__all__ = ["NotFoundError", "RunViewer"]


class NotFoundError(LionstoreError, LookupError):
    """The page asked for a run, event or mail the file does not hold."""


class RunViewer:
    """A read-only view of one database for the web app: one store kept open, and a
    timeline per run folded once and brought up to date with the records written
    since (so a run another process is writing can be followed)."""

    def __init__(self, target: str | os.PathLike[str]) -> None:
        self.target = os.fspath(target)
        self._store: Store | None = None
        self._builders: dict[str, TimelineBuilder] = {}
        self._folds: dict[str, asyncio.Future[Timeline]] = {}  # one fold at a time per run
        self._runs_lock = asyncio.Lock()
        self._runs_projections: dict[str, RunProjection] = {}
        self._runs_last_us: dict[str, int] = {}
        self._runs_position = 0

    async def open(self) -> None:
        self._store = await lionstore.open(self.target, readonly=True)

    async def close(self) -> None:
        for task in self._folds.values():
            task.cancel()
        for task in self._folds.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._store is not None:
            await self._store.close()
            self._store = None

    @property
    def store(self) -> Store:
        if self._store is None:
            raise RuntimeError("the viewer is not open")
        return self._store

    # -- runs ----------------------------------------------------------------------------

    async def runs(self) -> list[dict[str, Any]]:
        """Every run, oldest first: label, start, duration, records, events by status,
        mail by state, fork parent. One :class:`RunProjection` per run, as
        ``lionstore runs`` folds them, kept and brought up to date with the records
        written since the last call (the server starts the first fold at startup)."""
        async with self._runs_lock:
            with gc_paused():
                records = await self.store.read(run=None, after=self._runs_position, page_size=5000)
                projections, last_us = self._runs_projections, self._runs_last_us
                async for record in records:
                    run_id = record.run_id
                    projection = projections.get(run_id)
                    if projection is None:
                        projection = projections[run_id] = RunProjection()
                    projection.apply(record)
                    last_us[run_id] = record.recorded_at_us
                    self._runs_position = record.position
            infos = await self.store.runs()
        out = []
        for info in infos:
            projection = self._runs_projections.get(info.run_id) or RunProjection()
            counts = projection.counts()
            end = self._runs_last_us.get(info.run_id, info.started_at_us)
            out.append(
                {
                    "run_id": info.run_id,
                    "label": info.label,
                    "started_us": info.started_at_us,
                    "duration_us": max(0, end - info.started_at_us),
                    "records": projection.records,
                    "position": projection.position,
                    "events": counts["events"],
                    "mail": counts["mail"],
                    "parent_run_id": info.parent_run_id,
                    "forked_at_position": info.forked_at_position,
                }
            )
        return out

    async def _run_id(self, ref: str) -> str:
        try:
            return str((await self.store.find_run(ref)).run_id)
        except RunNotFoundError as exc:
            raise NotFoundError(str(exc)) from None

    async def timeline(self, ref: str, *, budget: float | None = None) -> Timeline:
        """The run's timeline with every record committed so far. With ``budget``
        (seconds), what has been folded by then: the fold goes on in the background
        and ``complete`` says whether it had finished (the page draws what there is
        and asks again)."""
        run_id = await self._run_id(ref)
        builder = self._builders.get(run_id)
        if builder is None:
            builder = TimelineBuilder(await self.store.find_run(run_id))
            self._builders[run_id] = builder
        task = self._folds.get(run_id)
        if task is None or task.done():
            if task is not None:
                task.result()  # a failed fold is reported, not hidden
            task = asyncio.ensure_future(collect_timeline(self.store, builder=builder))
            self._folds[run_id] = task
        if budget is None:
            await task
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), budget)
        return builder.timeline

    # -- one event, one mail ---------------------------------------------------------------

    async def _stream(self, run_id: str, stream: str) -> list[dict[str, Any]]:
        try:
            records = await self.store.read(run=run_id, stream=stream, page_size=1000)
        except (ValueError, TypeError) as exc:
            raise NotFoundError(f"not a stream id: {stream!r}") from exc
        return [export_record(r) async for r in records]

    async def event(self, ref: str, event_id: str) -> dict[str, Any]:
        """An event: its line on the timeline, its appended fields, and every record
        of its stream with positions."""
        tl = await self.timeline(ref)
        event = tl.events.get(event_id)
        if event is None:
            raise NotFoundError(f"run {tl.title} has no event {event_id!r}")
        records = await self._stream(tl.run_id, event_id)
        fields = records[0]["data"].get("fields") if records else None
        return {
            "run": tl.summary_head(),
            "event": event.to_json(),
            "fields": fields,
            "records": records,
        }

    async def mail(self, ref: str, mail_id: str) -> dict[str, Any]:
        """A mail: sender and recipient (named), its item, outcome and every record of
        its stream with positions."""
        tl = await self.timeline(ref)
        mail = tl.mails.get(mail_id)
        if mail is None:
            raise NotFoundError(f"run {tl.title} has no mail {mail_id!r}")
        records = await self._stream(tl.run_id, mail_id)
        package = records[0]["data"].get("package") if records else None
        return {
            "run": tl.summary_head(),
            "mail": mail.to_json(),
            "sender_name": tl.source_name(mail.sender),
            "recipient_name": tl.source_name(mail.recipient),
            "package": package,
            "records": records,
        }

    async def source(self, ref: str, source_id: str) -> dict[str, Any]:
        """A source (mail lane): its name and every mail it sent or was sent."""
        tl = await self.timeline(ref)
        mails = [m.to_json() for m in tl.mails.values() if source_id in (m.sender, m.recipient)]
        if source_id not in tl.sources and not mails:
            raise NotFoundError(f"run {tl.title} has no source {source_id!r}")
        return {
            "run": tl.summary_head(),
            "id": source_id,
            "name": tl.source_name(source_id),
            "joined": source_id in tl.sources,
            "names": {
                sid: tl.source_name(sid) for m in mails for sid in (m["sender"], m["recipient"])
            },
            "mails": mails,
        }

    # -- state, verify, forks ----------------------------------------------------------------

    async def state(self, ref: str, at: int | None) -> dict[str, Any]:
        """The projections at position ``at`` (inclusive; default: the end): what
        ``lionstore show --at`` prints."""
        run_id = await self._run_id(ref)
        state = await show_run(self.target, run=run_id, at=at)
        tl = await self.timeline(run_id)
        names = {sid: source.name for sid, source in tl.sources.items()}
        return {**state.to_json_dict(), "source_names": names}

    async def verify(self, ref: str) -> dict[str, Any]:
        """``lionstore verify``: OK, or the first divergence, expected and actual."""
        run_id = await self._run_id(ref)
        info, report = await verify_run(self.target, run=run_id)
        return {"run_id": info.run_id, "label": info.label, **report.to_dict()}

    async def compare(self, ref: str) -> dict[str, Any]:
        """A fork against its parent: the first position after the fork point where
        their records differ (kind or data), with both records."""
        info = await self.store.find_run(await self._run_id(ref))
        if info.parent_run_id is None:
            raise NotFoundError(f"run {info.label or info.run_id} is not a fork")
        parent = await self.store.find_run(str(info.parent_run_id))
        # run.started names the run (label, parent): every run's differs; the rest is
        # what the fork copied and then wrote on its own.
        mine = [
            r
            async for r in await self.store.read(run=info.run_id, page_size=2000)
            if r.kind != "run.started"
        ]
        theirs = [
            r
            async for r in await self.store.read(run=parent.run_id, page_size=2000)
            if r.kind != "run.started"
        ]
        first: dict[str, Any] | None = None
        for index in range(max(len(mine), len(theirs))):
            a = mine[index] if index < len(mine) else None
            b = theirs[index] if index < len(theirs) else None
            if a is None or b is None or a.kind != b.kind or a.data != b.data:
                first = {
                    "index": index,
                    "fork": export_record(a) if a is not None else None,
                    "parent": export_record(b) if b is not None else None,
                }
                break
        return {
            "run_id": info.run_id,
            "label": info.label,
            "parent_run_id": parent.run_id,
            "parent_label": parent.label,
            "forked_at_position": info.forked_at_position,
            "fork_records": len(mine),
            "parent_records": len(theirs),
            "first_difference": first,
        }
