"""Worker functions for tests/test_state_stores.py, run in real processes (multiprocessing "spawn"
imports this module by name, so they live outside the test module)."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from pms_integration.state._sqlite import SQLiteStore


def hammer_claims(path: str, keys: list[str], rounds: int, threads: int) -> dict[str, int]:
    """Each of ``threads`` threads takes ``rounds`` claims, cycling over ``keys``, and under each
    one increments ``count:<key>`` with a separate read and write (a second holder at the same
    time would lose an update). Returns the claims taken per key, plus ``overlaps`` (a holder
    found another's marker) and ``refused`` (a settle of our own claim was refused)."""
    store = SQLiteStore(path)
    taken = {key: 0 for key in keys}
    taken.update(overlaps=0, refused=0)
    lock = threading.Lock()

    def run(me: str) -> None:
        done = 0
        while done < rounds:
            key = keys[done % len(keys)]
            claim = store.claim(key, 60.0, 120.0)
            if not claim.held:
                time.sleep(min(claim.busy_for, 0.002))
                continue
            overlap = store.get(f"holder:{key}") is not None
            store.put(f"holder:{key}", me, None)
            count = int(store.get(f"count:{key}") or 0)
            store.put(f"count:{key}", str(count + 1), None)
            store.delete(f"holder:{key}")
            settled = store.settle(claim, None, False, 120.0)
            with lock:
                taken[key] += 1
                taken["overlaps"] += overlap
                taken["refused"] += not settled
            done += 1

    workers = [threading.Thread(target=run, args=(f"{os.getpid()}-{n}",)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    store.close()
    return taken


def grab_slots(path: str, budget: str, limit: int, attempts: int) -> int:
    """Try ``attempts`` times for a slot that is never finished; how many were granted."""
    store = SQLiteStore(path)
    granted = 0
    for _ in range(attempts):
        slot, _wait = store.take_slot(budget, limit, 1.0, 600.0)
        granted += slot is not None
    store.close()
    return granted


def first_steps_together(path: str, barrier: Any, results: Any, threads: int) -> None:
    """Open ``path`` (a file nobody has created yet) once every process is ready, and take one
    claim from each of ``threads`` threads at once; put the error texts (none expected) on ``results``."""
    store = SQLiteStore(path)
    errors: list[str] = []

    def run(n: int) -> None:
        try:
            store.claim(f"k{n}", 10.0, 60.0)
        except Exception as exc:  # reported to the test, which fails on any
            errors.append(f"{type(exc).__name__}: {exc}")

    workers = [threading.Thread(target=run, args=(n,)) for n in range(threads)]
    barrier.wait(timeout=120)
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    results.put(errors)
