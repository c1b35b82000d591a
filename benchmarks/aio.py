"""The asyncio API's figures: event-loop lag, throughput next to the sync API, requests per operation.

Run ``python benchmarks/aio.py`` (full, about a minute) or ``--quick`` (one round, CI). It prints
one Markdown table and writes it into ``docs/performance.md`` between the asyncio markers
(``--no-write`` leaves the page alone).

The sandbox runs in a child process (``_remote_sandbox.py``) with 50 ms of latency on every
answer. Each round measures, one after the other in this process, four ways of making N
concurrent bookings (distinct references, distinct slots, one patient who already exists):

* ``greenlet``: ``pms_integration.aio.AsyncPMSClient`` - N awaited bookings gathered on the loop;
* ``executor``: the sync ``PMSClient`` on a 256-thread executor (``loop.run_in_executor``) - the
  design the library did not take;
* ``aiohttp``: the floor - the very requests the library sends for a booking (recorded, then
  replayed) over a bare ``aiohttp.ClientSession``, N at once;
* ``threads``: the sync API as it is used today, 32 threads booking N other references (no loop).

In the first three a 1 ms ticker (``await asyncio.sleep(0.001)`` in a loop) runs on the same
loop; lag = observed gap - 1 ms. Each phase starts on a freshly reset emulator, books once
(the patient's contact exists: every measured booking is a returning patient's), runs its
workload once unmeasured (connections, threads, caches), then once measured. The CPU columns
are this process's CPU time (all threads) and the sandbox process's, per booking, over the
measured run. A phase measures several batches of N in a row; the lag percentiles are taken over
every tick of every batch of every round (one batch of 200 gives only ~150-250 ticks, so its p99
would be its second-worst tick), wall time and CPU are the median batch, and the ratio is the
median of the rounds' (median greenlet batch) / (median threads batch).

Last, every operation of ``benchmarks/run.py``'s requests table is run once through the sync
client and once through the async one (``run.measure_requests``, on fresh emulators), and the
requests that reached the sandbox are compared, row by row: a difference fails the run in both
modes. Timing goals (lag p99 <= 5 ms, ratio <= 1.0) fail a full run only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import functools
import itertools
import json
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import run as table  # benchmarks/run.py: its inputs, client set-up and requests table
from _page import DOC, write_table
from _remote_sandbox import RemoteSandbox
from _replay import Exchange, RecordingSession, Script, compile_script

ROOT = Path(__file__).resolve().parent.parent
LATENCY = 0.05
TICK = 0.001
LAG_GOAL_MS = 5.0
RATIO_GOAL = 1.0


@dataclass(frozen=True)
class Settings:
    quick: bool
    rounds: int
    batches: int
    bookings: int
    threads: int
    executor_threads: int
    provider: str


@dataclass
class Phase:
    """One measured workload: wall time, CPU, and the ticker's lags (none for ``threads``)."""

    seconds: float
    client_cpu: float
    sandbox_cpu: float
    lags: list[float] = field(default_factory=list)

    def lag_ms(self, q: float) -> float:
        if not self.lags:
            return float("nan")
        ordered = sorted(self.lags)
        index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
        return ordered[index] * 1000


def async_api_available() -> str | None:
    """``None`` when ``pms_integration.aio`` can be used, else why not."""
    try:
        from pms_integration.aio import AsyncPMSClient  # noqa: F401
    except ImportError as exc:
        return f"pms_integration.aio not importable ({exc})"
    return None


# ---------------------------------------------------------------------------------------------
# inputs and measuring helpers


class Slots:
    """Distinct slots and references across the whole run."""

    def __init__(self) -> None:
        self._n = itertools.count()
        self._run = f"{os.getpid():x}{int(time.time()) % 100000:x}"

    def request(self) -> dict[str, Any]:
        n = next(self._n)
        return {**table.book_input(n), "reference": f"aio-bench-{self._run}-{n}"}

    def batch(self, size: int) -> list[dict[str, Any]]:
        return [self.request() for _ in range(size)]


def sandbox_cpu(sandbox: RemoteSandbox) -> float:
    """CPU seconds (user + system) the sandbox process has used so far (Linux; else 0)."""
    try:
        stat = Path(f"/proc/{sandbox._proc.pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def measured(sandbox: RemoteSandbox, out: list[Phase]) -> Iterator[Phase]:
    phase = Phase(0.0, 0.0, 0.0)
    cpu, theirs, started = time.process_time(), sandbox_cpu(sandbox), time.perf_counter()
    yield phase
    phase.seconds = time.perf_counter() - started
    phase.client_cpu = time.process_time() - cpu
    phase.sandbox_cpu = sandbox_cpu(sandbox) - theirs
    out.append(phase)


async def with_ticker(work: Awaitable[Any], lags: list[float]) -> Any:
    """Await ``work`` while a 1 ms ticker on this loop records how late each tick wakes up."""
    stop = asyncio.Event()
    ticking = asyncio.Event()

    async def tick() -> None:
        previous = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(TICK)
            now = time.perf_counter()
            lags.append(max(0.0, now - previous - TICK))
            previous = now
            ticking.set()

    ticker = asyncio.create_task(tick())
    await ticking.wait()
    lags.clear()  # only the ticks that overlap the work count
    try:
        return await work
    finally:
        stop.set()
        await ticker


def fresh_emulator(
    sandbox: RemoteSandbox, provider: str, book_once: Callable[[dict[str, Any]], Any], slots: Slots
) -> None:
    """A reset emulator on which the patient's contact exists again (every booking is a returning patient's)."""
    sandbox.reset_provider(provider)
    book_once(slots.request())


# ---------------------------------------------------------------------------------------------
# the four ways of making N bookings


def phase_greenlet(sandbox: RemoteSandbox, s: Settings, slots: Slots, out: list[Phase]) -> None:
    from pms_integration.aio import AsyncPMSClient

    async def main() -> None:
        async with AsyncPMSClient(environ=table.client_environ(sandbox), env_file=None) as client:

            async def book_all(batch: list[dict[str, Any]]) -> None:
                await asyncio.gather(*(client.book_appointment(r, provider=s.provider) for r in batch))

            sandbox.reset_provider(s.provider)
            await client.book_appointment(slots.request(), provider=s.provider)
            await book_all(slots.batch(s.bookings))  # unmeasured: connections, caches
            for _ in range(s.batches):
                batch = slots.batch(s.bookings)
                with measured(sandbox, out) as phase:
                    await with_ticker(book_all(batch), phase.lags)

    asyncio.run(main())


def phase_executor(sandbox: RemoteSandbox, s: Settings, slots: Slots, out: list[Phase]) -> None:
    client = table.new_client(sandbox)
    pool = ThreadPoolExecutor(max_workers=s.executor_threads)
    try:
        # every worker thread exists before the measured run (an executor starts them lazily)
        barrier = threading.Barrier(s.executor_threads)
        list(pool.map(lambda _: barrier.wait(), range(s.executor_threads)))
        fresh_emulator(sandbox, s.provider, lambda r: client.book_appointment(r, provider=s.provider), slots)

        async def book_all(batch: list[dict[str, Any]]) -> None:
            loop = asyncio.get_running_loop()
            book = functools.partial(client.book_appointment, provider=s.provider)
            await asyncio.gather(*(loop.run_in_executor(pool, book, r) for r in batch))

        async def main() -> None:
            await book_all(slots.batch(s.bookings))  # unmeasured
            for _ in range(s.batches):
                batch = slots.batch(s.bookings)
                with measured(sandbox, out) as phase:
                    await with_ticker(book_all(batch), phase.lags)

        asyncio.run(main())
    finally:
        pool.shutdown(wait=True)
        client.close()


def phase_threads(sandbox: RemoteSandbox, s: Settings, slots: Slots, out: list[Phase]) -> None:
    client = table.new_client(sandbox)
    try:
        fresh_emulator(sandbox, s.provider, lambda r: client.book_appointment(r, provider=s.provider), slots)

        def book_all(batch: list[dict[str, Any]]) -> None:
            work = iter(batch)
            lock = threading.Lock()
            errors: list[BaseException] = []
            start = threading.Barrier(s.threads + 1)

            def worker() -> None:
                start.wait()
                try:
                    while True:
                        with lock:
                            request = next(work, None)
                        if request is None:
                            return
                        client.book_appointment(request, provider=s.provider)
                except BaseException as exc:
                    errors.append(exc)

            workers = [threading.Thread(target=worker) for _ in range(s.threads)]
            for w in workers:
                w.start()
            start.wait()
            for w in workers:
                w.join()
            if errors:
                raise RuntimeError(f"{len(errors)} of {s.threads} threads failed") from errors[0]

        book_all(slots.batch(s.bookings))  # unmeasured
        for _ in range(s.batches):
            batch = slots.batch(s.bookings)
            with measured(sandbox, out):
                book_all(batch)
    finally:
        client.close()


def record_booking(sandbox: RemoteSandbox, s: Settings, slots: Slots) -> Script:
    """The requests one returning patient's booking sends, as the library sends them."""
    log: list[Exchange] = []
    client = table.new_client(sandbox, session_factory=lambda: RecordingSession(log))
    try:
        client.book_appointment(slots.request(), provider=s.provider)  # the contact exists after this
        log.clear()
        client.book_appointment(slots.request(), provider=s.provider)
    finally:
        client.close()
    return compile_script(log)


_TIME_KEYS = {"startTime", "endTime", "StartDateTime", "EndDateTime", "hs_meeting_start_time", "hs_meeting_end_time"}


def _shift_times(body: Any, by: dt.timedelta) -> Any:
    """``body`` with every start/end time moved by ``by`` (a distinct slot for each replay)."""
    if isinstance(body, dict):
        shifted = {}
        for key, value in body.items():
            if key in _TIME_KEYS and isinstance(value, str):
                with contextlib.suppress(ValueError):
                    value = (dt.datetime.fromisoformat(value.replace("Z", "+00:00")) + by).isoformat()
            shifted[key] = _shift_times(value, by)
        return shifted
    if isinstance(body, list):
        return [_shift_times(v, by) for v in body]
    return body


class _Recorded(dict[str, str]):
    """Ids for a replay of only the last step: each id as it was recorded (the contact still exists)."""

    def __missing__(self, key: str) -> str:
        return key


def phase_aiohttp(sandbox: RemoteSandbox, s: Settings, slots: Slots, out: list[Phase], *, whole: bool = True) -> None:
    """The floor: the requests of a booking (``whole``), or only its final create POST, over bare aiohttp."""
    import aiohttp

    sandbox.reset_provider(s.provider)
    script = record_booking(sandbox, s, slots)
    steps = script.steps if whole else script.steps[-1:]
    skip = {"content-length", "host", "connection", "accept-encoding"}
    failures: list[str] = []

    async def replay(session: aiohttp.ClientSession, slot: int) -> None:
        ids: dict[str, str] = {} if whole else _Recorded()
        shift = dt.timedelta(hours=2 * slot)
        for step in steps:
            headers = {k: v for k, v in step.headers.items() if k.lower() not in skip}
            body = step.json(ids)
            data = None if body is None else json.dumps(_shift_times(body, shift))
            async with session.request(step.method, step.url(ids), headers=headers, data=data) as response:
                answer = await response.read()
                if response.status != step.status:
                    failures.append(f"{step.method} {response.status} (recorded {step.status}): {answer[:200]!r}")
                    return
                if step.produces:
                    parsed = json.loads(answer)
                    for path, recorded in step.produces:
                        node = parsed
                        for key in path:
                            node = node[key]
                        ids[recorded] = str(node)

    counter = itertools.count(10_000)

    async def main() -> None:
        # no connection cap: the floor sends all N at once (aiohttp's default caps at 100)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

            async def book_all() -> None:
                await asyncio.gather(*(replay(session, next(counter)) for _ in range(s.bookings)))

            await book_all()  # unmeasured
            for _ in range(s.batches):
                with measured(sandbox, out) as phase:
                    await with_ticker(book_all(), phase.lags)

    asyncio.run(main())
    if failures:
        raise RuntimeError(f"the bare aiohttp replay failed {len(failures)} times; first: {failures[0]}")


def idle_lags(seconds: float = 0.5) -> Phase:
    """The ticker on an idle loop: what this machine's timers give with nothing to do."""
    phase = Phase(seconds, 0.0, 0.0)
    asyncio.run(with_ticker(asyncio.sleep(seconds), phase.lags))
    return phase


# ---------------------------------------------------------------------------------------------
# requests per operation: the sync table's operations through the async client


class _Blocking:
    """An ``AsyncPMSClient`` behind the sync methods ``run.measure_requests`` calls, each awaited
    to completion on one private loop (the counting needs one operation at a time anyway)."""

    def __init__(self, sandbox: RemoteSandbox, **kwargs: Any) -> None:
        from pms_integration.aio import AsyncPMSClient

        self._loop = asyncio.new_event_loop()
        environ = table.client_environ(sandbox, **kwargs.pop("rate_limits", {}))

        async def open_client() -> Any:
            client = AsyncPMSClient(environ=environ, env_file=None, **kwargs)
            return await client.__aenter__()

        self._client = self._loop.run_until_complete(open_client())

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._client, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._loop.run_until_complete(method(*args, **kwargs))

        return call

    def close(self) -> None:
        try:
            self._loop.run_until_complete(self._client.__aexit__(None, None, None))
        finally:
            self._loop.close()


def _count(row: table.Row) -> tuple[int, str]:
    count, _, names = row.measured.partition(" ")
    return int(count), names.strip("()")


def compare_requests(sandbox: RemoteSandbox) -> tuple[list[list[str]], bool]:
    """Rows (operation, provider, sync, async, result) and whether every row matched."""
    rows: list[list[str]] = []
    all_ok = True
    sandbox.latency = 0.0
    for provider in table.PROVIDERS:
        sync_rows = table.measure_requests(sandbox, provider)
        original = table.new_client
        table.new_client = _Blocking  # type: ignore[assignment]  # the same operation list, awaited
        try:
            async_rows = table.measure_requests(sandbox, provider)
        finally:
            table.new_client = original  # type: ignore[assignment]
        for sync_row, async_row in zip(sync_rows, async_rows, strict=True):
            (n_sync, names_sync), (n_async, names_async) = _count(sync_row), _count(async_row)
            same = (n_sync, names_sync) == (n_async, names_async)
            all_ok &= same
            operation = sync_row.figure.removeprefix("Requests: ")
            result = "same" if same else f"MISMATCH (sync: {names_sync}; async: {names_async})"
            rows.append([operation, table.LABELS[provider], str(n_sync), str(n_async), result])
    return rows, all_ok


# ---------------------------------------------------------------------------------------------
# output


def fmt(value: float, digits: int = 1) -> str:
    return "n/a" if value != value else f"{value:.{digits}f}"  # NaN is not equal to itself


def pooled_lag_ms(phases: list[Phase], q: float) -> float:
    """The ``q`` quantile of every tick of every measured batch, in ms."""
    return Phase(0.0, 0.0, 0.0, [lag for p in phases for lag in p.lags]).lag_ms(q)


def median_of(phases: list[Phase], get: Callable[[Phase], float]) -> float:
    values = [get(p) for p in phases]
    return statistics.median(values) if values else float("nan")


def render(
    s: Settings,
    phases: dict[str, list[Phase]],
    idle: Phase,
    ratios: list[float],
    requests_rows: list[list[str]],
    skipped: str | None,
    seconds: float,
) -> tuple[str, list[str]]:
    """The Markdown for the page, and the goals missed (timing and counts together)."""
    mode = "--quick" if s.quick else "full run"
    missed: list[str] = []
    lines = [
        f"Measured {dt.date.today().isoformat()} ({mode}, {seconds:.0f} s) with Python {platform.python_version()} "
        f"on {platform.system()} {platform.machine()}, {os.cpu_count()} CPUs; sandbox in its own process, "
        f"{LATENCY * 1000:.0f} ms per answer; {s.provider}; {s.bookings} concurrent bookings per run "
        f"(returning patient, distinct references and slots); {s.rounds} round(s) of {s.batches} measured batches each: "
        f"lag over every tick of every batch, wall time and CPU the median batch. "
        f"Idle loop, for scale: lag p50 {fmt(idle.lag_ms(0.5), 2)} ms, p99 {fmt(idle.lag_ms(0.99), 2)} ms.",
        "",
        "| Design | How the bookings run | Loop lag p50 / p99 / max | Wall time | Client CPU per booking | "
        "Sandbox CPU per booking | Goal | Result |",
        "|---|---|---|---|---|---|---|---|",
    ]
    described = {
        "greenlet": ("greenlet (the design taken)", f"`AsyncPMSClient`, {s.bookings} awaited at once"),
        "executor": ("sync client on an executor", f"`run_in_executor`, {s.executor_threads} threads"),
        "aiohttp-post": ("bare aiohttp, one POST each (the issue's floor)", "the booking's create POST only, replayed"),
        "aiohttp": ("bare aiohttp, a booking's requests (the floor)", "the recorded requests of a booking, replayed"),
        "threads": ("sync API, threads (no loop)", f"{s.threads} threads, {s.bookings} other references"),
    }
    for key, (design, how) in described.items():
        runs = phases.get(key, [])
        if not runs:
            lines.append(f"| {design} | {how} | not measured: {skipped} | | | | | skipped |")
            continue
        p50, p99, top = (pooled_lag_ms(runs, q) for q in (0.5, 0.99, 1.0))
        lag = "- (no loop)" if key == "threads" else f"{fmt(p50, 2)} / {fmt(p99, 1)} / {fmt(top, 1)} ms"
        wall = median_of(runs, lambda p: p.seconds)
        cpu = median_of(runs, lambda p: p.client_cpu) / s.bookings * 1000
        theirs = median_of(runs, lambda p: p.sandbox_cpu) / s.bookings * 1000
        goal, result = "-", "reference"
        if key == "greenlet":
            goal = f"lag p99 ≤ {LAG_GOAL_MS:.0f} ms"
            ok = p99 <= LAG_GOAL_MS
            result = "pass" if ok else ("miss (timing; not enforced with --quick)" if s.quick else "FAIL")
            if not ok:
                missed.append(f"greenlet loop lag p99 {p99:.1f} ms > {LAG_GOAL_MS} ms")
        lines.append(
            f"| {design} | {how} | {lag} | {wall * 1000:.0f} ms | {cpu:.2f} ms | {theirs:.2f} ms | {goal} | {result} |"
        )
    if ratios:
        ratio = statistics.median(ratios)
        ok = ratio <= RATIO_GOAL
        result = "pass" if ok else ("miss (timing; not enforced with --quick)" if s.quick else "FAIL")
        if not ok:
            missed.append(f"throughput ratio greenlet / threads {ratio:.2f} > {RATIO_GOAL}")
        lines.append(
            f"| Throughput: greenlet ÷ threads (wall time) | same run, one after the other | - | "
            f"{ratio:.2f} (rounds: {', '.join(f'{r:.2f}' for r in ratios)}) | | | ≤ {RATIO_GOAL:.1f} | {result} |"
        )
    if requests_rows:
        lines += [
            "",
            "Requests per operation, sync API and async API (each operation once on a fresh emulator and client):",
            "",
            "| Operation | Provider | Sync | Async | Result |",
            "|---|---|---|---|---|",
        ]
        for row in requests_rows:
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
            if row[4] != "same":
                missed.append(f"requests differ: {row[0]} ({row[1]}): {row[4]}")
    elif skipped:
        lines += ["", f"Requests per operation, async API: not measured ({skipped})."]
    return "\n".join(lines) + "\n", missed



def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one round; timing goals reported, not enforced")
    parser.add_argument("--no-write", action="store_true", help=f"do not update {DOC.relative_to(ROOT)}")
    parser.add_argument("--rounds", type=int, help="rounds of the four phases (default 3, 1 with --quick)")
    parser.add_argument("--batches", type=int, help="measured batches per phase and round (default 3, 2 with --quick)")
    parser.add_argument("--bookings", type=int, default=200, help="concurrent bookings per phase (200)")
    parser.add_argument("--threads", type=int, default=32, help="threads of the sync baseline (32)")
    parser.add_argument("--executor-threads", type=int, default=256, help="the executor design's threads (256)")
    parser.add_argument("--provider", default="gohighlevel", choices=table.PROVIDERS)
    parser.add_argument(
        "--phases", default="aiohttp-post,aiohttp,executor,greenlet,threads", help="comma-separated subset (profiling)"
    )
    parser.add_argument("--skip-requests", action="store_true", help="leave out the requests comparison")
    args = parser.parse_args(argv)
    rounds = args.rounds or (1 if args.quick else 3)
    batches = args.batches or (2 if args.quick else 3)
    s = Settings(args.quick, rounds, batches, args.bookings, args.threads, args.executor_threads, args.provider)
    began = time.perf_counter()

    def step(title: str) -> None:
        print(f"[{time.perf_counter() - began:5.1f} s] {title}", file=sys.stderr, flush=True)

    skipped = async_api_available()
    wanted = [p for p in args.phases.split(",") if p]
    runners: dict[str, Callable[[RemoteSandbox, Settings, Slots, list[Phase]], None]] = {
        "aiohttp": phase_aiohttp,
        "aiohttp-post": functools.partial(phase_aiohttp, whole=False),
        "executor": phase_executor,
        "greenlet": phase_greenlet,
        "threads": phase_threads,
    }
    if skipped:
        wanted = [p for p in wanted if p != "greenlet"]
        print(f"async rows skipped: {skipped}", file=sys.stderr)
    phases: dict[str, list[Phase]] = {}
    ratios: list[float] = []
    requests_rows: list[list[str]] = []
    requests_ok = True
    step("idle ticker")
    idle = idle_lags()
    with RemoteSandbox() as sandbox:
        slots = Slots()
        for r in range(rounds):
            sandbox.latency = LATENCY
            order = wanted[r % len(wanted) :] + wanted[: r % len(wanted)]  # who goes first rotates
            for name in order:
                step(f"round {r + 1}/{rounds}: {name}")
                runners[name](sandbox, s, slots, phases.setdefault(name, []))
            if "greenlet" in phases and "threads" in phases:
                ours, theirs = (
                    statistics.median(p.seconds for p in phases[k][-s.batches :]) for k in ("greenlet", "threads")
                )
                ratios.append(ours / theirs)
        if not skipped and not args.skip_requests:
            step("requests per operation: sync and async")
            requests_rows, requests_ok = compare_requests(sandbox)
    text, missed = render(s, phases, idle, ratios, requests_rows, skipped, time.perf_counter() - began)
    print(text)
    if not args.no_write and not args.quick:  # a quick run never replaces the page's full-run table
        write_table("aio-table", text)
        print(f"wrote the table into {DOC.relative_to(ROOT)}", file=sys.stderr)
    counts_missed = [m for m in missed if m.startswith("requests differ")]
    for m in missed:
        print(f"goal missed: {m}", file=sys.stderr)
    if not requests_ok or counts_missed:
        print("FAILED: the async API's requests differ from the sync API's (see above)", file=sys.stderr)
        return 1
    return 1 if missed and not s.quick else 0


if __name__ == "__main__":
    sys.exit(main())
