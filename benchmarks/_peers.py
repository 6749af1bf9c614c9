"""The libraries lionstore's users would otherwise pick, each in a virtual environment of
its own, run on the same workloads in a subprocess.

* **huey** (a task queue, ``SqliteHuey``): tasks enqueued and run by the worker's own
  code path (``dequeue`` + ``execute``, as its consumer does, in one thread).
* **DBOS** (durable workflows on a SQLite system database): a workflow with one step per
  task, called directly (one at a time) or enqueued on a ``Queue``.
* **eventsourcing** (an event store, ``SQLiteApplicationRecorder``): batches of stored
  events into new aggregates, with the global notification order lionstore also keeps.

Nothing is installed into the project's environment. :func:`ensure_venv` makes
``~/.cache/lionstore-bench/peer-<name>`` once and pip-installs the pinned version; a peer
that cannot be installed is reported and left out. Each workload is a small script,
written at run time and run by that environment's python; it times itself and prints
one JSON line with the seconds, the count, and the durability settings **read back from
the peer's own connection** (``PRAGMA journal_mode`` and ``PRAGMA synchronous``), so the
table says what each library really ran with rather than what its docs promise.

Durability modes:

* ``shipped``: each library as it ships (lionstore ``durability="normal"``: WAL +
  NORMAL; huey: WAL + the SQLite default, FULL; eventsourcing: WAL + FULL; DBOS: a
  rollback journal + FULL).
* ``full``: everyone at WAL + FULL (lionstore ``durability="full"``), the setting under
  which a returned commit survives power loss.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["PEERS", "Peer", "ensure_venv", "run_peer"]

PEERS = {"huey": "huey==3.5.4", "dbos": "dbos==3.4.0", "eventsourcing": "eventsourcing==9.5.6"}
CACHE = Path.home() / ".cache" / "lionstore-bench"


@dataclass(frozen=True)
class Peer:
    name: str
    python: Path
    version: str


def ensure_venv(name: str) -> Peer | str:
    """The peer's environment, made on first use; a string saying why when it cannot be."""
    requirement = PEERS[name]
    venv = CACHE / f"peer-{name}"
    python = venv / "bin" / "python"
    module = "dbos" if name == "dbos" else name
    probe = f"import importlib.metadata as m; print(m.version({module!r}))"
    if python.exists():
        done = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=False)
        if done.returncode == 0 and done.stdout.strip() == requirement.split("==")[1]:
            return Peer(name, python, done.stdout.strip())
    CACHE.mkdir(parents=True, exist_ok=True)
    steps = [
        ["python3", "-m", "venv", "--clear", str(venv)],
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", requirement],
    ]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, check=False, timeout=900)
        if done.returncode != 0:
            return f"{requirement}: {' '.join(step[:3])} failed: {done.stderr.strip()[-300:]}"
    done = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return f"{requirement}: installed but does not import: {done.stderr.strip()[-300:]}"
    return Peer(name, python, done.stdout.strip())


_PRELUDE = r"""
import json, os, sqlite3, sys, time
cfg = json.loads(sys.argv[1])
N, DIR, MODE = cfg["n"], cfg["dir"], cfg["mode"]
def report(seconds, conn_settings, **extra):
    journal, sync = conn_settings
    print(json.dumps({"seconds": seconds, "n": N, "journal_mode": journal,
                      "synchronous": {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}[sync],
                      **extra}), flush=True)
"""

_HUEY = r"""
from huey import SqliteHuey
huey = SqliteHuey("bench", filename=os.path.join(DIR, "huey.db"),
                  fsync=True if MODE == "full" else None)
@huey.task()
def work(i):
    return i * 2
conn = huey.storage.conn
settings = (conn.execute("pragma journal_mode").fetchone()[0],
            conn.execute("pragma synchronous").fetchone()[0])
def run_one(task):
    huey.execute(task)
if cfg["workload"] == "one_at_a_time":
    t0 = time.perf_counter()
    for i in range(N):
        result = work(i)                 # enqueue (a commit)
        task = huey.dequeue()            # the worker takes it (a commit)
        run_one(task)                    # runs it, stores the result (a commit)
        assert result.get(blocking=False) == i * 2   # the caller reads it (a commit: get pops)
    seconds = time.perf_counter() - t0
else:
    t0 = time.perf_counter()
    results = [work(i) for i in range(N)]
    while True:
        task = huey.dequeue()
        if task is None:
            break
        run_one(task)
    values = [r.get(blocking=False) for r in results]
    seconds = time.perf_counter() - t0
    assert values == [i * 2 for i in range(N)], "huey lost a task"
report(seconds, settings)
"""

_DBOS = r"""
import logging
import sqlalchemy as sa
from dbos import DBOS
url = "sqlite:///" + os.path.join(DIR, "dbos.sqlite")
engine = sa.create_engine(url, connect_args={"check_same_thread": False})
if MODE == "full":
    @sa.event.listens_for(engine, "connect")
    def _wal(dbapi_conn, _record):
        dbapi_conn.execute("PRAGMA journal_mode=WAL")
        dbapi_conn.execute("PRAGMA synchronous=FULL")
DBOS(config={"name": "bench", "system_database_url": url, "system_database_engine": engine,
             "log_level": "ERROR", "run_admin_server": False})
@DBOS.step()
def step(i):
    return i * 2
@DBOS.workflow()
def work(i):
    return step(i)
DBOS.launch()
queue = DBOS.register_queue("bench", worker_concurrency=100, polling_interval_sec=0.01)
logging.getLogger("dbos").setLevel(logging.ERROR)
with engine.connect() as c:
    settings = (c.exec_driver_sql("PRAGMA journal_mode").scalar(),
                c.exec_driver_sql("PRAGMA synchronous").scalar())
t0 = time.perf_counter()
if cfg["workload"] == "one_at_a_time":
    for i in range(N):
        assert work(i) == i * 2
else:
    handles = [queue.enqueue(work, i) for i in range(N)]
    values = [h.get_result() for h in handles]
    assert values == [i * 2 for i in range(N)], "DBOS lost a task"
seconds = time.perf_counter() - t0
DBOS.destroy()
report(seconds, settings)
"""

_EVENTSOURCING = r"""
import uuid
from eventsourcing.persistence import StoredEvent
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteDatastore
datastore = SQLiteDatastore(os.path.join(DIR, "es.db"))
recorder = SQLiteApplicationRecorder(datastore)
recorder.create_table()
if MODE != "full":
    pass  # eventsourcing ships WAL + the SQLite default (FULL): "shipped" is "full"
with datastore.transaction(commit=False) as c:
    c.execute("PRAGMA journal_mode"); journal = c.fetchone()[0]
    c.execute("PRAGMA synchronous"); sync = c.fetchone()[0]
B = cfg["batch"]
state = json.dumps({"n": 0, "text": "x" * 40}).encode()
batches = [[StoredEvent(uuid.uuid4(), 1, "bench.module:Happened", state) for _ in range(B)]
           for _ in range(N)]
t0 = time.perf_counter()
for batch in batches:
    recorder.insert_events(batch)
seconds = time.perf_counter() - t0
assert recorder.max_notification_id() == N * B
report(seconds, (journal, sync), events=N * B)
"""

_SCRIPTS = {"huey": _HUEY, "dbos": _DBOS, "eventsourcing": _EVENTSOURCING}


def run_peer(peer: Peer, workload: str, n: int, mode: str, **extra: Any) -> dict[str, Any]:
    """Run ``workload`` with ``n`` tasks (or batches) in the peer's environment, in a
    fresh temporary directory; its JSON report."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{peer.name}-") as work:
        script = Path(work) / "workload.py"
        script.write_text(_PRELUDE + _SCRIPTS[peer.name])
        cfg = {"workload": workload, "n": n, "dir": work, "mode": mode, **extra}
        done = subprocess.run(
            [str(peer.python), str(script), json.dumps(cfg)],
            capture_output=True,
            text=True,
            check=False,
            timeout=1800,
            cwd=work,
        )
    if done.returncode != 0:
        raise RuntimeError(f"{peer.name} {workload} failed:\n{done.stderr[-2000:]}")
    line = done.stdout.strip().splitlines()[-1]
    result: dict[str, Any] = json.loads(line)
    return result
