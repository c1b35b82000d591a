"""What a shared state store adds to a booking: memory:// against sqlite:/// and redis://.

Run ``python benchmarks/state_overhead.py`` (full, two to three minutes) or ``--quick`` (under a
minute). It prints one Markdown table and writes it into ``docs/performance.md`` between the
state-overhead markers (``--no-write`` leaves the page alone).

Each store gets its own ``PMSClient`` against one in-process sandbox whose every answer is
delayed 20 ms (``Sandbox(latency=0.02)``), about the fastest a vendor answers. A round books one
new reference on each of the three providers with each client in turn (the order rotates from
round to round), so the stores share the machine's good and bad moments; the figure is the
median over the rounds of (a store's time for the round) / (memory's time for the same round).
The client-side rate limiters are on but far above what the run sends (10,000 per 10 s), so the
budget's steps are counted and never waited for.

The SQLite store is a file in a temporary directory on the local disk. Redis is the server
named by ``PMS_TEST_REDIS_URL``, else a private ``redis-server`` started for the run (the
tests' ``RedisServer``); without either the Redis row says so. Exit status 1 when a measured
store misses the goal (a full run only: ``--quick`` reports its few samples without failing).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import itertools
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests._redis_server, when run from a checkout

from _page import write_table  # noqa: E402

from pms_integration import PMSClient, PMSError  # noqa: E402
from pms_integration.sandbox import Sandbox  # noqa: E402

LATENCY = 0.02
GOAL = 1.10
PROVIDERS = ("gohighlevel", "salesforce", "hubspot")
RATE_LIMITS = {
    "PMS_GHL_RATE_LIMIT": "10000/10",
    "PMS_HUBSPOT_RATE_LIMIT": "10000/10",
    "PMS_SALESFORCE_RATE_LIMIT": "10000/10",
}
ZONE = ZoneInfo("America/New_York")  # the sandbox calendars' zone; open 07:00-20:00 every day
FIRST_DAY = dt.date(2031, 6, 2)
PATIENT = {"name": "Ada Lovelace", "email": "ada.lovelace@example.com", "phone": "+14155550123"}


@contextlib.contextmanager
def redis_url() -> Iterator[tuple[str | None, str]]:
    """(URL, where it came from), or (None, why not)."""
    given = os.environ.get("PMS_TEST_REDIS_URL")
    if given:
        yield given, "PMS_TEST_REDIS_URL"
        return
    try:
        from tests._redis_server import RedisServer
    except ImportError:
        yield None, "no tests/_redis_server.py next to this script"
        return
    server = RedisServer()
    if not server.available:
        yield None, "no redis-server on PATH and PMS_TEST_REDIS_URL unset"
        return
    try:
        yield server.start().url, "a private redis-server"
    finally:
        server.close()


def slot_start(n: int) -> dt.datetime:
    """The ``n``-th half-hour slot, 24 a day from 08:00 New York time: every one bookable once."""
    day = FIRST_DAY + dt.timedelta(days=n // 24)
    return dt.datetime.combine(day, dt.time(8), tzinfo=ZONE) + dt.timedelta(minutes=30 * (n % 24))


class Booker:
    """One client on one store, booking a fresh reference per call."""

    def __init__(self, label: str, url: str, environ: dict[str, str]) -> None:
        self.label = label
        self.client = PMSClient(environ={**environ, **RATE_LIMITS, "PMS_STATE_URL": url}, env_file=None)
        self.url = self.client.state.url

    def round(self, slots: Iterator[int]) -> float:
        """Seconds to book one new reference on each provider."""
        started = time.perf_counter()
        for provider in PROVIDERS:
            request = {
                "start": slot_start(next(slots)).isoformat(),
                "duration_minutes": 30,
                "patient": PATIENT,
                "reference": f"bench-{uuid.uuid4().hex[:16]}",
            }
            self.client.book_appointment(request, provider=provider)
        return time.perf_counter() - started


def measure(rounds: int, workdir: Path) -> tuple[list[list[str]], bool]:
    rows: list[list[str]] = []
    failed = False
    with Sandbox(latency=LATENCY) as sandbox, redis_url() as (redis, redis_source):
        environ = sandbox.environ()
        namespace = f"bench{uuid.uuid4().hex[:8]}"
        stores = [("memory", "memory://"), ("sqlite", f"sqlite:///{workdir / 'state.db'}")]
        skipped: dict[str, str] = {}
        if redis is not None:
            stores.append(("redis", f"{redis}?namespace={namespace}"))
        else:
            skipped["redis"] = redis_source
        bookers: list[Booker] = []
        for label, url in stores:
            try:
                booker = Booker(label, url, environ)
                booker.round(itertools.count(1_000 * (len(bookers) + 1)))  # warm-up: connections, schema
            except PMSError as exc:
                skipped[label] = f"{type(exc).__name__}: {exc}"
                continue
            bookers.append(booker)
        slots = itertools.count()
        times: dict[str, list[float]] = {b.label: [] for b in bookers}
        for i in range(rounds):
            shift = i % len(bookers)
            for booker in bookers[shift:] + bookers[:shift]:
                times[booker.label].append(booker.round(slots))
        base = times.get("memory", [])
        for booker in bookers:
            per_booking = statistics.median(times[booker.label]) / len(PROVIDERS) * 1000
            if booker.label == "memory":
                rows.append(
                    [booker.label, f"`{booker.url}`", f"{per_booking:.1f} ms", "1.000 (the baseline)", "—", "—"]
                )
                continue
            ratio = statistics.median(t / m for t, m in zip(times[booker.label], base, strict=True))
            ok = ratio <= GOAL
            failed |= not ok
            where = (
                f"`{booker.url}` ({redis_source})"
                if booker.label == "redis"
                else "`" + booker.url.replace(str(workdir), "<tmp>") + "`"
            )
            rows.append(
                [
                    booker.label,
                    where,
                    f"{per_booking:.1f} ms",
                    f"{ratio:.3f}",
                    f"≤ {GOAL:.2f}",
                    "pass" if ok else "FAIL",
                ]
            )
            booker.client.close()
        for label, why in skipped.items():
            rows.append([label, "—", "not measured", why, f"≤ {GOAL:.2f}", "skipped"])
    return rows, failed


def render(rows: list[list[str]], *, rounds: int, quick: bool, seconds: float) -> str:
    header = ["Store", "URL", "Per booking (median)", "Ratio to memory (median of rounds)", "Goal", "Result"]
    lines = [
        f"Measured {dt.date.today().isoformat()} ({'--quick' if quick else 'full'} run, {rounds} rounds of 3 bookings "
        f"per store, {seconds:.0f} s) with Python {platform.python_version()} on {platform.system()} "
        f"{platform.machine()}, {os.cpu_count()} CPUs; sandbox latency {LATENCY * 1000:.0f} ms per answer.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in rows),
    ]
    return "\n".join(lines)



def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="10 rounds instead of 60; reports without failing")
    parser.add_argument("--rounds", type=int, help="rounds per store (default: 10 with --quick, 60 otherwise)")
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    args = parser.parse_args(argv)
    rounds = args.rounds or (10 if args.quick else 60)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pms-state-bench-") as tmp:
        rows, failed = measure(rounds, Path(tmp))
    table = render(rows, rounds=rounds, quick=args.quick, seconds=time.perf_counter() - started)
    print(table)
    if not args.no_write and not args.quick:  # a quick run never replaces the page's full-run table
        write_table("state-overhead", table + "\n")  # a blank line before the end marker
    if failed and not args.quick:
        print(f"a store adds more than {(GOAL - 1) * 100:.0f}% to a booking", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
