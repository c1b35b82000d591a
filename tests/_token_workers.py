"""Worker processes for tests/test_state_tokens.py (started with multiprocessing's "spawn", so
everything here is importable and takes only plain, picklable arguments).

Each worker is a fresh process: it builds its own :class:`PMSClient` from the environment it is
given (the sandbox's Salesforce org, the configured refresh token, ``PMS_STATE_URL``) and books
through the sandbox running in the test process. What it saw goes back on a queue as plain dicts,
together with everything the library logged (the test looks for secrets in it).
"""

from __future__ import annotations

import datetime as dt
import io
import logging
from typing import Any

#: how long a worker waits for the test's go-ahead before giving up (never reached when green)
GATE_SECONDS = 120.0
START = dt.datetime(2037, 3, 9, 9, 0, tzinfo=dt.timezone(dt.timedelta(hours=-4)))


def booking(n: int) -> dict[str, Any]:
    """Booking ``n``: a half-hour slot of its own on a weekday morning."""
    start = START + dt.timedelta(minutes=30 * n)
    return {
        "start": start.isoformat(),
        "duration_minutes": 30,
        "patient": {"name": "Jane Doe", "email": "jane@example.com"},
        "reference": f"tok16-{n:03d}",
    }


def book_in_steps(name: str, environ: dict[str, str], slots: list[int], out: Any, gate: Any) -> None:
    """Book ``slots[0]``; then, for each further slot, report, wait for ``gate`` and book it.

    Puts ``{"name", "step", "id" | "error", "code", "message"}`` per booking on ``out`` and a
    last ``{"name", "logs"}`` with the library's log text."""
    import pms_integration as pms

    text = io.StringIO()
    handler = logging.StreamHandler(text)
    handler.setLevel(logging.DEBUG)
    library = logging.getLogger("pms_integration")
    library.addHandler(handler)
    library.setLevel(logging.DEBUG)
    try:
        with pms.PMSClient(environ=environ, env_file=None) as client:
            for step, slot in enumerate(slots):
                if step and not gate.wait(GATE_SECONDS):
                    out.put({"name": name, "step": step, "error": "GateTimeout", "code": None, "message": ""})
                    break
                try:
                    appointment = client.book_appointment(booking(slot), provider="salesforce")
                except pms.PMSError as exc:
                    out.put(
                        {
                            "name": name,
                            "step": step,
                            "error": type(exc).__name__,
                            "code": getattr(exc, "code", None),
                            "message": str(exc),
                        }
                    )
                else:
                    out.put({"name": name, "step": step, "id": appointment.id})
    finally:
        library.removeHandler(handler)
        out.put({"name": name, "logs": text.getvalue()})
