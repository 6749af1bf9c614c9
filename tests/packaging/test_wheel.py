"""The built wheel works on its own: migrations ship inside it.

Builds the wheel, installs it (not editable) into a fresh virtual environment, and
from another directory creates, checks, upgrades and appends to databases with that
installation only. The checkout keeps its Alembic scripts in the top-level
``migrations/``; the wheel carries them as ``lionstore/_migrations``.
Needs PyPI (for hatchling and the dependencies); skipped only when PyPI cannot be
reached.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

REQUIRED_IN_WHEEL = [
    "lionstore/__init__.py",
    "lionstore/py.typed",
    "lionstore/cli/__init__.py",
    "lionstore/_migrations/env.py",
    "lionstore/_migrations/script.py.mako",
    *(
        f"lionstore/_migrations/versions/{script.name}"
        for script in sorted((REPO / "migrations" / "versions").glob("*.py"))
    ),
]

# A database at the first schema revision, then brought to head by the installed
# lionstore's `db upgrade` (the shipped versions/ scripts must run from the wheel).
OLD_SCHEMA_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from lionstore.log import migrate
    asyncio.run(migrate.upgrade(sys.argv[1], "0001"))
    print(migrate.script_location())
    """
)

APPEND_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from typing import ClassVar
    import lionstore

    class Hello(lionstore.RecordData):
        kind: ClassVar[str] = "wheel.hello"
        text: str

    async def main() -> None:
        async with lionstore.open(sys.argv[1], run="from-wheel") as store:
            stream = lionstore.IDType.create()
            positions = await store.append([(stream, Hello(text="shipped"))])
            records = [r async for r in await store.read()]
        print(lionstore.__file__)
        print(positions[0], len(records), records[-1].data.text)

    asyncio.run(main())
    """
)


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def run(*args: str | Path, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, (
        f"{' '.join(map(str, args))} exited {result.returncode}\n"
        f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )
    return result


def require_pypi(tmp_path: Path) -> None:
    probe = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir"),
            *("--dest", str(tmp_path / "probe"), "hatchling"),
        ],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"no network access to PyPI (pip download failed: {last})")


@pytest.mark.slow
@pytest.mark.timeout(600)  # builds a wheel and a virtual environment
def test_wheel_installs_and_ships_its_migrations(tmp_path: Path) -> None:
    require_pypi(tmp_path)

    dist = tmp_path / "dist"
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", dist, REPO, cwd=tmp_path)
    wheels = list(dist.glob("lionstore-*.whl"))
    assert len(wheels) == 1, wheels
    with zipfile.ZipFile(wheels[0]) as archive:
        names = set(archive.namelist())
    missing = [name for name in REQUIRED_IN_WHEEL if name not in names]
    assert not missing, f"not in the wheel: {missing}"
    assert not any(name.startswith(("tests/", "migrations/")) for name in names)

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    python, script = env_dir / "bin" / "python", env_dir / "bin" / "lionstore"
    run(python, "-m", "pip", "install", "-q", wheels[0], cwd=tmp_path)

    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "tmp").mkdir(parents=True)
    upgraded = run(script, "db", "upgrade", "tmp/x.db", cwd=elsewhere)
    assert "created a lionstore database" in upgraded.stdout
    checked = run(script, "db", "check", "tmp/x.db", cwd=elsewhere)
    assert "at head" in checked.stdout

    # An older file, upgraded from another directory by the installed scripts alone.
    made = run(python, "-c", OLD_SCHEMA_SCRIPT, "tmp/old.db", cwd=elsewhere)
    location = Path(made.stdout.strip())
    assert location.parts[-2:] == ("lionstore", "_migrations"), location
    assert location.is_relative_to(env_dir) and not location.is_relative_to(REPO)
    current = run(script, "db", "current", "tmp/old.db", cwd=elsewhere)
    assert current.stdout.startswith("0001 (outdated")
    upgraded_old = run(script, "db", "upgrade", "tmp/old.db", cwd=elsewhere)
    assert "upgraded 0001 -> " in upgraded_old.stdout
    assert "at head" in run(script, "db", "check", "tmp/old.db", cwd=elsewhere).stdout

    appended = run(python, "-c", APPEND_SCRIPT, "tmp/x.db", cwd=elsewhere)
    module_file, summary = appended.stdout.strip().splitlines()
    assert Path(module_file).is_relative_to(env_dir), module_file
    assert not Path(module_file).is_relative_to(REPO)
    assert summary == "2 2 shipped"

    logged = run(script, "log", "tmp/x.db", "--json", "--kind", "wheel.hello", cwd=elsewhere)
    assert '"data":{"text":"shipped"}' in logged.stdout
    assert run(script, "--version", cwd=elsewhere).stdout.startswith("lionstore ")
