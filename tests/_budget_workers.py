"""Worker processes for tests/test_shared_budget.py and benchmarks/budget.py (started with
multiprocessing's "spawn", so everything here is importable and takes plain, picklable arguments).

Each worker builds its own :class:`PMSClient` on the shared state store (a SQLite file or a Redis
URL) and reads one appointment over and over through the sandbox running in the parent process,
so every request is one ``appointments.get``: what it saw goes back as a JSON file.
"""

from __future__ import annotations

import collections
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pms_integration as pms
from pms_integration._retry import RetryPolicy

#: one attempt per call: a 429 from the sandbox must show up, not be waited out and retried
ONE_TRY = RetryPolicy(max_attempts=1)


def _write(path: str, payload: dict[str, Any]) -> None:
    tmp = Path(path + ".tmp")
    tmp.write_text(json.dumps(payload))
    os.replace(tmp, path)


def read_many(spec: dict[str, Any], ready: Any, out_path: str) -> None:
    """One worker process: ``spec["threads"]`` threads each read ``spec["appointment"]`` either
    ``spec["requests"]`` times or until ``spec["seconds"]`` have passed since the start.

    ``ready`` (a Barrier shared with the parent) makes all processes start together."""
    client = pms.PMSClient(environ=dict(spec["environ"]), env_file=None, state=spec["state"], retry_policy=ONE_TRY)
    outcomes: collections.Counter[str] = collections.Counter()
    problems: list[str] = []
    lock = threading.Lock()
    count: int | None = spec.get("requests")
    seconds: float | None = spec.get("seconds")

    def run(stop_at: float | None) -> None:
        mine: collections.Counter[str] = collections.Counter()
        done = 0
        while (count is None or done < count) and (stop_at is None or time.monotonic() < stop_at):
            done += 1
            try:
                client.get_appointment(spec["appointment"], provider=spec["provider"])
                mine["ok"] += 1
            except pms.RateLimitError as exc:
                mine[f"rate-limit {exc.code}"] += 1
            except pms.PMSError as exc:
                mine[type(exc).__name__] += 1
                with lock:
                    if len(problems) < 5:
                        problems.append(f"{type(exc).__name__}: {exc}")
        with lock:
            outcomes.update(mine)

    ready.wait(120)
    started = time.monotonic()
    stop_at = None if seconds is None else started + seconds
    pool = [threading.Thread(target=run, args=(stop_at,)) for _ in range(spec["threads"])]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    elapsed = time.monotonic() - started
    client.close()
    _write(out_path, {"pid": os.getpid(), "outcomes": dict(outcomes), "problems": problems, "elapsed": elapsed})
