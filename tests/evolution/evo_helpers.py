"""Helpers for the schema evolution tests."""

from __future__ import annotations

import contextlib
import io
import sqlite3
from pathlib import Path

from lionstore.cli import main


def run_cli(*argv: str) -> str:
    """Run ``lionstore ARGV`` in this process; return its standard output (exit 0 required)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    assert code == 0, err.getvalue()
    return out.getvalue()


def stored_rows(path: Path) -> list[tuple[object, ...]]:
    """Every record as stored: position, run, stream, version, kind, kind version,
    data, time and digest."""
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return conn.execute(
            "SELECT r.position, r.run_no, s.stream_id, r.stream_version, r.kind,"
            " r.kind_version, r.data, r.recorded_at_us, r.digest FROM lionstore_records r"
            " JOIN lionstore_streams s ON s.stream_no = r.stream_no ORDER BY r.position"
        ).fetchall()
    finally:
        conn.close()


FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
FIXTURE = FIXTURES / "v1_schema0001.db"
