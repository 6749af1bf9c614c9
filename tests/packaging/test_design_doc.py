"""docs/design.md is in the repository and stays true to the code.

A clone has no ``../shared``: the README's links must resolve inside the repository,
the design document among them. The facts the design states as numbers and names
(tables, record kinds, defaults, limits, files) are checked against the code, so a
change to one of them fails here until the document says so too.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

import lionstore
from lionstore.domain.event_records import EVENT_KINDS
from lionstore.domain.mail_records import MAIL_KINDS
from lionstore.domain.records import DEFAULT_MAX_RECORD_BYTES
from lionstore.log import sqlite_commit
from lionstore.log import store as store_module
from lionstore.log.schema import TABLE_NAMES, VERSION_TABLE
from lionstore.projections.snapshot import FORMAT_VERSION
from lionstore.repositories.base import CHECKPOINT_EVERY

REPO = Path(__file__).resolve().parents[2]
DESIGN_PATH = REPO / "docs" / "design.md"
DESIGN = DESIGN_PATH.read_text()


def _links(text: str) -> list[str]:
    return [target for target in re.findall(r"\]\(([^)\s]+)\)", text) if "://" not in target]


@pytest.mark.parametrize("document", ["README.md", "docs/design.md"])
def test_relative_links_resolve_inside_the_repository(document: str) -> None:
    path = REPO / document
    text = path.read_text()
    assert "../shared" not in text and "DESIGN.md" not in text
    for target in _links(text):
        file = target.split("#", 1)[0]
        if not file:
            continue  # a link to a heading of the same page
        resolved = (path.parent / file).resolve()
        assert resolved.is_relative_to(REPO), f"{document}: {target} leaves the repository"
        assert resolved.exists(), f"{document}: {target} does not exist"


def test_the_readme_points_at_the_design() -> None:
    assert "(docs/design.md)" in (REPO / "README.md").read_text()


def test_the_design_has_its_sections() -> None:
    headings = re.findall(r"^## (.+)$", DESIGN, re.M)
    for needed in (
        "Principles",
        "Layers",
        "The log",
        "Writes",
        "Projections and checkpoints",
        "Processing",
        "Mail",
        "Replay",
        "PostgreSQL",
        "Durability",
        "Where we differ from lionagi",
    ):
        assert needed in headings, needed
    assert "issue 9" not in DESIGN and "design we started from" not in DESIGN


def test_every_path_the_design_names_exists() -> None:
    named = set(re.findall(r"`((?:lionstore|migrations|tests|docs)/[\w/.]*)`", DESIGN))
    assert named, "the design names no files"
    for name in sorted(named):
        if name == "lionstore/_migrations":  # only inside an installed wheel
            continue
        assert (REPO / name).exists(), f"docs/design.md names {name}, which does not exist"


def test_the_tables_are_the_schemas() -> None:
    table_section = DESIGN.split("## The log", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `(lionstore_\w+)` \|", table_section, re.M))
    assert listed == set(TABLE_NAMES)
    assert f"`{VERSION_TABLE}`" in table_section


def test_the_record_kinds_are_the_codes() -> None:
    named = set(re.findall(r"`((?:event|processor|source|mail)\.\w+)`", DESIGN))
    assert named == {*EVENT_KINDS, *MAIL_KINDS}


def test_the_numbers_are_the_codes() -> None:
    defaults = inspect.signature(lionstore.Processor.__init__).parameters
    stated = {
        "`max_attempts` (3)": defaults["max_attempts"].default == 3,
        "`lease_seconds` (300)": defaults["lease_seconds"].default == 300,
        "`max_backoff` (60)": defaults["max_backoff"].default == 60,
        "`FORMAT_VERSION` (3)": FORMAT_VERSION == 3,
        "more than 10,000 records": CHECKPOINT_EVERY == 10_000,
        "(up to 50,000 records)": store_module._MAX_GROUP_RECORDS == 50_000,
        "(up to 256 rows": sqlite_commit._INLINE_MAX_ROWS == 256,
        "(1 MiB by default)": DEFAULT_MAX_RECORD_BYTES == 1 << 20,
    }
    for phrase, true in stated.items():
        assert phrase in DESIGN.replace("\n  ", " ").replace("\n", " "), phrase
        assert true, f"docs/design.md says {phrase}; the code says otherwise"
