"""Run every benchmark script once in its smoke mode, so that none breaks unnoticed.

    python benchmarks/run_all.py [--with-lionagi] [--only NAME ...] [--timeout SECONDS]

Each ``benchmarks/bench_*.py`` runs in a subprocess with ``--smoke`` (one round of a tiny
workload). A script that exits non-zero, or runs past ``--timeout``, fails the run; its
output is printed. Timings are never checked: a smoke run measures nothing.

The lionagi 0.8.7 baseline (benchmarks/_lionagi.py) runs when its virtual environment
already exists; building it needs PyPI, so without ``--with-lionagi`` a missing one is
skipped, and the reason printed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _lionagi  # noqa: E402


def scripts(only: list[str] | None) -> list[Path]:
    found = sorted(HERE.glob("bench_*.py"))
    if only:
        wanted = {name.removesuffix(".py") for name in only}
        found = [p for p in found if p.stem in wanted or p.stem.removeprefix("bench_") in wanted]
    return found


def lionagi_args(script: Path, with_lionagi: bool) -> tuple[list[str], str | None]:
    """Extra arguments for a script with a lionagi baseline, and why it is skipped."""
    if "add_venv_argument" not in script.read_text():
        return [], None
    if with_lionagi or _lionagi._venv_python(_lionagi.DEFAULT_VENV).exists():
        return [], None
    return ["--no-lionagi"], (
        f"no lionagi environment at {_lionagi.DEFAULT_VENV} (building it needs PyPI; "
        "pass --with-lionagi to build it)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--with-lionagi", action="store_true", help="build lionagi's env if missing"
    )
    parser.add_argument("--only", nargs="+", help="run these scripts only (e.g. log replay)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per script")
    args = parser.parse_args(argv)
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    failed: list[str] = []
    started = time.monotonic()
    for script in scripts(args.only):
        extra, skipped = lionagi_args(script, args.with_lionagi)
        if skipped:
            print(f"run_all: {script.name}: lionagi baseline skipped: {skipped}", flush=True)
        command = [sys.executable, str(script), "--smoke", *extra]
        t0 = time.monotonic()
        try:
            done = subprocess.run(
                command,
                cwd=HERE.parent,
                env=env,
                capture_output=True,
                text=True,
                timeout=args.timeout,
            )
        except subprocess.TimeoutExpired as exc:
            out = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else exc.stdout
            print(out or "", end="")
            print(f"run_all: {script.name}: FAILED: still running after {args.timeout:g} s")
            failed.append(script.name)
            continue
        seconds = time.monotonic() - t0
        if done.returncode != 0:
            print(done.stdout, end="")
            print(done.stderr, end="", file=sys.stderr)
            print(f"run_all: {script.name}: FAILED: exit status {done.returncode}")
            failed.append(script.name)
        else:
            print(f"run_all: {script.name}: ok in {seconds:.1f} s", flush=True)
    total = time.monotonic() - started
    if failed:
        print(f"run_all: {len(failed)} benchmark(s) failed: {', '.join(failed)} ({total:.0f} s)")
        return 1
    print(f"run_all: every benchmark ran ({total:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
