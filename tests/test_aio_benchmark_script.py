"""``benchmarks/aio.py`` still runs: a tiny ``--quick --no-write`` run exits 0 and prints every row.

No timing is asserted here (lag and the throughput ratio are reported, not enforced, with
``--quick``). What can fail the script in this mode is a count: the async API sending other
requests than the sync one for an operation of the requests table.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "aio.py"
HAS_ASYNC_API = importlib.util.find_spec("pms_integration.aio") is not None
DESIGNS = (
    "greenlet (the design taken)",
    "sync client on an executor",
    "bare aiohttp, one POST each",
    "bare aiohttp, a booking's requests",
    "sync API, threads (no loop)",
    "Throughput: greenlet ÷ threads",
)
TIMING_RESULTS = ("pass", "miss (timing; not enforced with --quick)", "reference")


def _rows(stdout: str) -> list[list[str]]:
    return [
        [cell.strip() for cell in line.strip().strip("|").split(" | ")]
        for line in stdout.splitlines()
        if line.startswith("| ") and not line.startswith(("| Design", "| Operation", "|---"))
    ]


@pytest.mark.slow
@pytest.mark.skipif(not HAS_ASYNC_API, reason="pms_integration.aio is not there yet")
def test_tiny_quick_run_prints_every_row_and_the_same_request_counts(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PMS_")}
    args = ["--quick", "--no-write", "--bookings", "6", "--threads", "2", "--executor-threads", "4"]
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args, "--rounds", "1", "--batches", "1"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
        check=False,
    )
    report = f"stdout:\n{done.stdout}\nstderr:\n{done.stderr[-4000:]}"
    assert done.returncode == 0, f"benchmarks/aio.py exited {done.returncode}\n{report}"
    rows = _rows(done.stdout)
    for design in DESIGNS:
        matches = [r for r in rows if r[0].startswith(design)]
        assert len(matches) == 1, f"expected one row {design!r}\n{report}"
        assert matches[0][-1] in TIMING_RESULTS, matches[0]
    requests = [r for r in rows if len(r) == 5]
    assert len(requests) == 36, report  # 12 operations x 3 providers, as in benchmarks/run.py
    for operation, _provider, sync, asynchronous, result in requests:
        assert sync == asynchronous and result == "same", (operation, sync, asynchronous)
