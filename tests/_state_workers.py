"""Worker processes for tests/test_state_processes.py (started with multiprocessing's "spawn",
so everything here is importable and takes only plain, picklable arguments).

Each worker builds its own :class:`PMSClient` on the shared state store (a SQLite file or a
Redis URL) and books through the sandbox running in the test process; what it saw goes back as
a JSON file the test reads after the process has ended.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pms_integration as pms
from pms_integration._retry import RetryPolicy

#: What a booking retried "as a conversation would" gives up after.
MAX_ATTEMPTS = 40
#: Retries inside the client: quick, so a fault costs little wall time.
FAST_RETRIES = RetryPolicy(max_attempts=3, backoff_initial=0.02, backoff_max=0.1, jitter=0.02)
#: errors a conversation retries its turn after, besides outcome-unknown ones (nothing was booked)
TRANSIENT = (pms.ServerError, pms.RateLimitError, pms.TransportError)
START = dt.datetime(2027, 4, 5, 8, 0, tzinfo=dt.timezone(dt.timedelta(hours=-4)))


def reference(i: int, prefix: str = "mp16") -> str:
    return f"{prefix}-{i:04d}"


def request_for(i: int, prefix: str = "mp16") -> dict[str, Any]:
    """The booking for reference ``i``: the very same request in every process and thread
    (same reference, same start, same patient), a slot of its own per reference."""
    return {
        "start": (START + dt.timedelta(minutes=30 * i)).isoformat(),
        "duration_minutes": 30,
        "timezone": "America/New_York",
        "title": "Cleaning",
        "patient": {"name": f"Patient {prefix} {i}", "email": f"{prefix}.{i}@example.com", "phone": f"+1555{i:07d}"},
        "reference": reference(i, prefix),
    }


def make_client(environ: dict[str, str], state: str | None) -> pms.PMSClient:
    return pms.PMSClient(environ=dict(environ), env_file=None, state=state, retry_policy=FAST_RETRIES)


def book_until_done(
    client: pms.PMSClient, request: dict[str, Any], provider: str, seen: collections.Counter[str]
) -> tuple[str | None, str | None]:
    """Book ``request``, retrying with the same reference after an outcome-unknown error
    (BookingInProgressError included) or a vendor fault, as a conversation retrying its turn would.

    Returns ``(appointment id, None)`` or ``(None, what went wrong)``; ``seen`` counts the
    retried error types."""
    for attempt in range(MAX_ATTEMPTS):
        try:
            appointment = client.book_appointment(request, provider=provider)
        except pms.PMSError as exc:
            # outcome unknown (BookingInProgressError too), or a vendor fault that made nothing
            if getattr(exc, "outcome_unknown", False) or isinstance(exc, TRANSIENT):
                seen[type(exc).__name__] += 1
                time.sleep(min(0.005 * (attempt + 1), 0.1))  # a conversation's pause, not synchronisation
                continue
            return None, f"{type(exc).__name__} {getattr(exc, 'code', '')}: {exc}"
        except BaseException as exc:
            return None, f"untyped {type(exc).__name__}: {exc}"
        if appointment.reference != request["reference"]:
            return None, f"wrong reference {appointment.reference!r} for {request['reference']!r}"
        return appointment.id, None
    return None, f"still outcome-unknown after {MAX_ATTEMPTS} attempts ({dict(seen)})"


def _write(path: str, payload: dict[str, Any]) -> None:
    tmp = Path(path + ".tmp")
    tmp.write_text(json.dumps(payload))
    os.replace(tmp, path)


def book_many(spec: dict[str, Any], ready: Any, out_path: str) -> None:
    """One worker process: ``spec["threads"]`` threads each book references 0..n-1 through one
    client on the shared store. Even threads go in order (every process fights over the same
    reference at once); odd ones start at an offset of their own (many references in flight).
    ``ready`` (a Barrier shared with the test) makes all processes start together."""
    client = make_client(spec["environ"], spec["state"])
    count, threads, worker = spec["references"], spec["threads"], spec["worker"]
    ids: dict[str, set[str]] = collections.defaultdict(set)
    failures: list[str] = []
    seen: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()

    def run(t: int) -> None:
        order = list(range(count))
        if t % 2:
            shift = (worker * threads + t) * 7 % count
            order = order[shift:] + order[:shift]
        mine: collections.Counter[str] = collections.Counter()
        for i in order:
            got, problem = book_until_done(client, request_for(i), spec["provider"], mine)
            with lock:
                if got is not None:
                    ids[reference(i)].add(got)
                else:
                    failures.append(f"worker {worker} thread {t} {reference(i)}: {problem}")
        with lock:
            seen.update(mine)

    pool = [threading.Thread(target=run, args=(t,), name=f"w{worker}t{t}") for t in range(threads)]
    ready.wait(120)
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    client.close()
    _write(
        out_path,
        {
            "pid": os.getpid(),
            "ids": {ref: sorted(found) for ref, found in ids.items()},
            "failures": failures,
            "retried": dict(seen),
        },
    )


def book_one(spec: dict[str, Any], ready: Any, go: Any, out_path: str) -> None:
    """One worker booking one reference (the SIGKILL test). Sets ``ready`` once its client is
    built, waits for ``go``, then books until done, noting every error it retried."""
    client = make_client(spec["environ"], spec["state"])
    ready.set()
    if not go.wait(120):
        _write(out_path, {"id": None, "problem": "never told to go", "retried": {}})
        return
    seen: collections.Counter[str] = collections.Counter()
    got, problem = book_until_done(client, request_for(spec["index"], spec["prefix"]), spec["provider"], seen)
    client.close()
    _write(out_path, {"pid": os.getpid(), "id": got, "problem": problem, "retried": dict(seen)})
