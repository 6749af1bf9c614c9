"""Timeline: draw a run so a person can look instead of read.

Sources are lanes with an arrow per mail (sent -> delivered, or a cross for a
dead letter); events are bars from their append to their outcome, coloured by
status. Two renderings: Mermaid (a Markdown document with a sequence diagram
and a Gantt chart) and a self-contained HTML page with inline SVG (no scripts,
nothing fetched).
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

from lionstore.domain.event_records import (
    EventAbandoned,
    EventAppended,
    EventClaimed,
    EventFinished,
    EventSkipped,
)
from lionstore.domain.mail_records import (
    MailDeadLettered,
    MailDelivered,
    MailReceived,
    MailSent,
    SourceAdded,
)
from lionstore.log.store import Store

__all__ = ["Timeline", "collect_timeline", "to_html", "to_mermaid"]


@dataclass
class _Bar:
    id: str
    label: str
    start_us: int
    claimed_us: int | None = None
    end_us: int | None = None
    status: str = "pending"
    attempts: int = 0


@dataclass
class _Arrow:
    id: str
    sender: str
    recipient: str
    label: str
    sent_us: int
    end_us: int | None = None
    outcome: str = "in flight"


@dataclass
class Timeline:
    run_id: str
    start_us: int = 0
    end_us: int = 0
    lanes: list[str] = field(default_factory=list)
    bars: dict[str, _Bar] = field(default_factory=dict)
    arrows: dict[str, _Arrow] = field(default_factory=dict)


def _short(ident: str) -> str:
    return ident[:8]


async def collect_timeline(store: Store, *, run: str | None = None) -> Timeline:
    info = store.run if run is None else await store.find_run(run)
    tl = Timeline(run_id=info.run_id)
    async for r in await store.read(run=info.run_id, page_size=2000):
        if not tl.start_us:
            tl.start_us = r.recorded_at_us
        tl.end_us = r.recorded_at_us
        d: Any = r.data
        sid = r.stream_id
        if isinstance(d, EventAppended):
            name = d.event_class.rsplit(".", 1)[-1]
            tl.bars[sid] = _Bar(sid, f"{name} {_short(sid)}", r.recorded_at_us)
        elif isinstance(d, EventClaimed) and sid in tl.bars:
            bar = tl.bars[sid]
            bar.claimed_us = bar.claimed_us or r.recorded_at_us
            bar.status, bar.attempts = "processing", d.attempt
        elif isinstance(d, EventSkipped) and sid in tl.bars:
            bar = tl.bars[sid]
            bar.end_us = r.recorded_at_us
            bar.status = "skipped"
        elif isinstance(d, (EventFinished, EventAbandoned)) and sid in tl.bars:
            bar = tl.bars[sid]
            bar.end_us = r.recorded_at_us
            bar.status = d.status if isinstance(d, EventFinished) else "failed"
        elif isinstance(d, SourceAdded):
            if sid not in tl.lanes:
                tl.lanes.append(sid)
        elif isinstance(d, (MailSent, MailReceived)):
            label = f"{d.package.category}: {str(d.package.item)[:30]}"
            tl.arrows[sid] = _Arrow(sid, d.sender, d.recipient, label, r.recorded_at_us)
            for lane in (d.sender, d.recipient):
                if lane not in tl.lanes:
                    tl.lanes.append(lane)
            if isinstance(d, MailReceived):
                tl.arrows[sid].end_us, tl.arrows[sid].outcome = r.recorded_at_us, "delivered"
        elif isinstance(d, MailDelivered) and sid in tl.arrows:
            tl.arrows[sid].end_us, tl.arrows[sid].outcome = r.recorded_at_us, "delivered"
        elif isinstance(d, MailDeadLettered) and sid in tl.arrows:
            tl.arrows[sid].end_us = r.recorded_at_us
            tl.arrows[sid].outcome = f"dead letter: {d.reason}"
    return tl


def _mermaid_text(text: str) -> str:
    return text.replace(";", ",").replace("#", "").replace(":", " -").replace("\n", " ")


def to_mermaid(tl: Timeline) -> str:
    """A Markdown document: a sequence diagram of the mail, a Gantt chart of the events."""
    out = [f"# Run {tl.run_id}", ""]
    if tl.arrows:
        out += ["```mermaid", "sequenceDiagram"]
        for lane in tl.lanes:
            out.append(f"    participant S{_short(lane)} as {_short(lane)}")
        for arrow in sorted(tl.arrows.values(), key=lambda a: a.sent_us):
            line = "-x" if arrow.outcome.startswith("dead") else "->>"
            if arrow.outcome == "in flight":
                line = "--)"
            out.append(
                f"    S{_short(arrow.sender)}{line}S{_short(arrow.recipient)}: "
                f"{_mermaid_text(arrow.label)} ({_mermaid_text(arrow.outcome)})"
            )
        out += ["```", ""]
    if tl.bars:
        out += ["```mermaid", "gantt", "    dateFormat x", "    axisFormat %S.%L s"]
        out.append("    section events")
        base = tl.start_us // 1000
        for bar in tl.bars.values():
            tag = {"completed": "done", "failed": "crit", "processing": "active"}.get(
                bar.status, ""
            )
            start = bar.start_us // 1000 - base
            end = max((bar.end_us or tl.end_us) // 1000 - base, start + 1)
            tags = f"{tag}, " if tag else ""
            out.append(f"    {_mermaid_text(bar.label)} ({bar.status}) :{tags}{start}, {end}")
        out += ["```", ""]
    if not tl.arrows and not tl.bars:
        out.append("(this run has no events and no mail)")
    return "\n".join(out)


_COLOURS = {
    "completed": "#3a9d5d",
    "failed": "#d64545",
    "processing": "#e0a030",
    "pending": "#9aa5b1",
    "cancelled": "#8a6fb0",
    "aborted": "#b05f2a",
    "skipped": "#6f8fa8",
}


def to_html(tl: Timeline) -> str:
    """A self-contained HTML page with the run drawn in SVG."""
    width, left, lane_gap, bar_h = 1000, 140, 48, 14
    span = max(tl.end_us - tl.start_us, 1)

    def x(t: int) -> float:
        return left + (t - tl.start_us) / span * (width - left - 20)

    parts: list[str] = []
    y = 30
    lane_y: dict[str, int] = {}
    for lane in tl.lanes:
        lane_y[lane] = y
        parts.append(
            f'<line x1="{left}" y1="{y}" x2="{width - 20}" y2="{y}" stroke="#ccd" />'
            f'<text x="8" y="{y + 4}" class="lane">source {html.escape(_short(lane))}</text>'
        )
        y += lane_gap
    for arrow in sorted(tl.arrows.values(), key=lambda a: a.sent_us):
        y1, y2 = lane_y.get(arrow.sender, 30), lane_y.get(arrow.recipient, 30)
        x1, x2 = x(arrow.sent_us), x(arrow.end_us or tl.end_us)
        dead = arrow.outcome.startswith("dead")
        colour = "#d64545" if dead else "#4a6fa5"
        dash = ' stroke-dasharray="4 3"' if arrow.outcome == "in flight" else ""
        parts.append(
            f'<line x1="{x1:.1f}" y1="{y1}" x2="{x2:.1f}" y2="{y2}" stroke="{colour}"'
            f' marker-end="url(#{"cross" if dead else "arrow"})"{dash}>'
            f"<title>{html.escape(arrow.label)} - {html.escape(arrow.outcome)}</title></line>"
        )
    if tl.bars:
        y += 10
        parts.append(f'<text x="8" y="{y}" class="lane">events</text>')
        y += 10
    for bar in tl.bars.values():
        x1, x2 = x(bar.start_us), x(bar.end_us or tl.end_us)
        colour = _COLOURS.get(bar.status, "#9aa5b1")
        parts.append(
            f'<rect x="{x1:.1f}" y="{y}" width="{max(x2 - x1, 2):.1f}" height="{bar_h}"'
            f' fill="{colour}"><title>{html.escape(bar.label)}: {bar.status}, attempts '
            f"{bar.attempts}</title></rect>"
            f'<text x="8" y="{y + 11}" class="bar">{html.escape(bar.label)}</text>'
        )
        y += bar_h + 4
    height = y + 30
    legend = " ".join(f'<span style="color:{c}">&#9632; {s}</span>' for s, c in _COLOURS.items())
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>lionstore run {html.escape(tl.run_id)}</title>
<style>body{{font:14px system-ui,sans-serif;margin:24px}} .lane{{font-size:12px;fill:#333}}
.bar{{font-size:10px;fill:#555}}</style></head>
<body><h1>Run {html.escape(tl.run_id)}</h1>
<p>{len(tl.lanes)} sources, {len(tl.arrows)} mails, {len(tl.bars)} events. {legend}
<span style="color:#d64545">&#10007; dead letter</span></p>
<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">
<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="6" markerHeight="6"
orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#4a6fa5"/></marker>
<marker id="cross" viewBox="0 0 10 10" refX="5" refY="5" markerWidth="8" markerHeight="8">
<path d="M0,0 L10,10 M10,0 L0,10" stroke="#d64545" stroke-width="2"/></marker></defs>
{"".join(parts)}
</svg></body></html>
"""
