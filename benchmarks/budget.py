"""Benchmark: 4 processes sharing one 50/s budget against a sandbox limited to 50/s.

Run ``python benchmarks/budget.py`` (about a minute) or ``--quick`` (half the requests; the rate
goal is reported, not enforced). Each row starts 4 worker processes ("spawn"), each with its own
``PMSClient`` on the shared state store and 4 threads reading one GoHighLevel appointment as fast
as the client lets them (800 requests in all, 400 with ``--quick``). The sandbox runs in a child
process of its own and enforces 50 requests per rolling second, as the vendor would; every
client is set to the same (``PMS_GHL_RATE_LIMIT=50/1``).

Figures per row: requests the sandbox received, 429s among them (goal: 0), and the achieved
share of the limit, measured as in benchmarks/run.py's burst: a rolling one-second window lets
the first 50 through at once and 50 more each second, so N requests need at least
ceil(N / 50) - 1 seconds; the share is that bound over the time the processes took (1.0: every
request the window allowed was used). Goal: at least 0.85.

Rows: SQLite (a file in a temporary directory) and Redis (``PMS_TEST_REDIS_URL``, else a private
``redis-server`` started from tests/_redis_server.py; the row is skipped, with the reason, when
there is neither). With the full run a control row shows the same load with ``memory://``
(each process its own budget). The table is written into docs/performance.md between the
budget markers (``--no-write`` leaves the page alone). Exit status 1 when a goal is missed
(429s in both modes, the share only in the full run).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from _page import DOC, write_table  # noqa: E402
from _remote_sandbox import RemoteSandbox  # noqa: E402

from pms_integration import PMSClient  # noqa: E402
from pms_integration.errors import ConfigurationError, StateStoreError  # noqa: E402
from pms_integration.state import open_state  # noqa: E402
from tests import _budget_workers  # noqa: E402

LIMIT = 50
WORKERS = 4
THREADS = 4
GOAL = 0.85
PROVIDER = "gohighlevel"


@dataclass
class Row:
    store: str
    sent: int = 0
    rejected: int = 0
    seconds: float = 0.0
    note: str = ""
    control: bool = False

    @property
    def bound(self) -> float:
        """The fewest seconds the sandbox's window allows for ``sent`` requests."""
        return float(math.ceil(self.sent / LIMIT) - 1)

    @property
    def share(self) -> float:
        return self.bound / self.seconds if self.seconds else 0.0

    def failed(self, quick: bool) -> bool:
        if self.note or self.control:
            return False
        return self.rejected > 0 or (not quick and self.share < GOAL)

    def cells(self, quick: bool) -> list[str]:
        if self.note:
            return [self.store, "-", "-", "-", f"skipped: {self.note}"]
        if self.control:
            verdict = "control (no shared budget)"
        elif self.failed(quick):
            verdict = "FAIL"
        else:
            verdict = "pass" if not quick or self.share >= GOAL else "pass (share not enforced with --quick)"
        return [
            self.store,
            f"{self.sent} in {self.seconds:.2f} s",
            str(self.rejected),
            f"{self.share:.2f} (fastest allowed {self.bound:.0f} s)",
            verdict,
        ]


def book_one(sandbox: RemoteSandbox, slot: int) -> str:
    """An appointment for the workers to read (each row books its own slot)."""
    environ = {**sandbox.environ(), "PMS_GHL_RATE_LIMIT": "off"}
    with PMSClient(environ=environ, env_file=None) as client:
        start = dt.datetime(2031, 6, 2, 15, 0, tzinfo=dt.timezone.utc) + dt.timedelta(hours=slot)
        appointment = client.book_appointment(
            {
                "start": start.isoformat(),
                "duration_minutes": 30,
                "timezone": "America/New_York",
                "title": "Cleaning",
                "patient": {"name": "Budget Bench", "email": "budget.bench@example.com", "phone": "+14155550199"},
                "reference": f"budget-bench-{os.getpid()}-{time.time_ns()}",
            },
            provider=PROVIDER,
        )
    return appointment.id


_booked: list[str] = []


def measure(sandbox: RemoteSandbox, label: str, state: str, total: int, *, control: bool = False) -> Row:
    """``WORKERS`` processes sending ``total`` requests in all through the budget in ``state``."""
    sandbox.set_rate_limit(PROVIDER, None)
    appointment = book_one(sandbox, len(_booked))
    _booked.append(appointment)
    sandbox.set_rate_limit(PROVIDER, LIMIT, 1.0)
    spec = {
        "environ": {**sandbox.environ(), "PMS_GHL_RATE_LIMIT": f"{LIMIT}/1"},
        "state": state,
        "appointment": appointment,
        "provider": PROVIDER,
        "threads": THREADS,
        "requests": total // (WORKERS * THREADS),
    }
    before = sandbox.request_count(PROVIDER)
    rejected_before = sandbox.request_count(PROVIDER, status=429)
    context = multiprocessing.get_context("spawn")
    ready = context.Barrier(WORKERS)
    with tempfile.TemporaryDirectory(prefix="pms-budget-") as out_dir:
        outs = [str(Path(out_dir) / f"worker-{n}.json") for n in range(WORKERS)]
        procs = [context.Process(target=_budget_workers.read_many, args=(spec, ready, out)) for out in outs]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(600)
            if proc.exitcode != 0:
                raise SystemExit(f"{label}: a worker exited with {proc.exitcode}")
        results = [json.loads(Path(out).read_text()) for out in outs]
    sandbox.set_rate_limit(PROVIDER, None)
    problems = [p for r in results for p in r["problems"]]
    if problems:
        print(f"{label}: errors other than 429 in the workers: {problems[:3]}", file=sys.stderr)
    return Row(
        label,
        sent=sandbox.request_count(PROVIDER) - before,
        rejected=sandbox.request_count(PROVIDER, status=429) - rejected_before,
        seconds=max(r["elapsed"] for r in results),
        control=control,
    )


@contextlib.contextmanager
def redis_url() -> Iterator[tuple[str | None, str]]:
    """A Redis URL (PMS_TEST_REDIS_URL, else a private redis-server), or None and why not."""
    external = os.environ.get("PMS_TEST_REDIS_URL")
    if external:
        yield external, ""
        return
    from tests._redis_server import SKIP_REASON, RedisServer

    server = RedisServer()
    if not server.available:
        yield None, SKIP_REASON
        return
    try:
        yield server.start().url, ""
    finally:
        server.close()


def usable(url: str) -> str:
    """Why the store at ``url`` cannot be used ("" when it can)."""
    try:
        store = open_state(url)
        store.put("bench:probe", "1", 5.0)
        store.close()
    except (ConfigurationError, StateStoreError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return ""


def render(rows: list[Row], quick: bool, took: float) -> str:
    mode = "--quick" if quick else "full run"
    head = (
        f"Measured {dt.date.today().isoformat()} ({mode}, {took:.0f} s) with Python "
        f"{platform.python_version()} on {platform.system()} {platform.machine()}, {os.cpu_count()} CPUs; "
        f"{WORKERS} processes x {THREADS} threads, {LIMIT}/s on every client and on the sandbox."
    )
    lines = [
        head,
        "",
        "| State store | Requests sent | 429s (goal 0) | Share of the limit (goal ≥ 0.85) | Result |",
        "|---|---|---|---|---|",
    ]
    lines += ["| " + " | ".join(row.cells(quick)) + " |" for row in rows]
    return "\n".join(lines) + "\n"



def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs; the share of the limit is not enforced")
    parser.add_argument("--no-write", action="store_true", help=f"do not update {DOC.relative_to(ROOT)}")
    args = parser.parse_args(argv)
    total = 400 if args.quick else 800
    began = time.perf_counter()
    rows: list[Row] = []
    with RemoteSandbox() as sandbox, tempfile.TemporaryDirectory(prefix="pms-budget-state-") as state_dir:
        sqlite = f"sqlite:///{state_dir}/state.db"
        why = usable(sqlite)
        print(f"[{time.perf_counter() - began:5.1f} s] SQLite", file=sys.stderr, flush=True)
        rows.append(Row("SQLite", note=why) if why else measure(sandbox, "SQLite", sqlite, total))
        with redis_url() as (url, reason):
            print(f"[{time.perf_counter() - began:5.1f} s] Redis", file=sys.stderr, flush=True)
            why = reason or usable(f"{url}?namespace=bench{os.getpid()}")
            if why:
                print(f"Redis row skipped: {why}", file=sys.stderr)
                rows.append(Row("Redis", note=why))
            else:
                rows.append(measure(sandbox, "Redis", f"{url}?namespace=bench{os.getpid()}", total))
        if not args.quick:
            print(f"[{time.perf_counter() - began:5.1f} s] memory:// (control)", file=sys.stderr, flush=True)
            rows.append(measure(sandbox, "memory:// (each process alone)", "memory://", total, control=True))
    table = render(rows, args.quick, time.perf_counter() - began)
    print(table)
    if not args.no_write and not args.quick:  # a quick run never replaces the page's full-run table
        write_table("budget-table", table)
        print(f"wrote the table into {DOC.relative_to(ROOT)}", file=sys.stderr)
    failed = [row for row in rows if row.failed(args.quick)]
    for row in failed:
        print(f"goal missed: {row.store}: {row.rejected} × 429, share {row.share:.2f}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
