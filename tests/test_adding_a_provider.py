"""The contributor's guide (docs/adding-a-provider.md) builds a working adapter.

The page's Python blocks are run in order against a small Toy CRM server on loopback, with a
stand-in ``ProviderName`` that has the member the guide's step 1 adds. Then the toy adapter goes
through what every real adapter must do: book, find after an ambiguous failure (one booking, not
two), update, refuse to move a cancelled booking, cancel twice, and push a report twice.
"""

from __future__ import annotations

import datetime as dt
import enum
import itertools
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from pms_integration import errors, models
from pms_integration._http import Runtime
from pms_integration._retry import RetryPolicy
from pms_integration.config import load_settings
from pms_integration.models import AppointmentRequest, AppointmentStatus, AppointmentUpdate, Patient, PerformanceReport

from .test_docs import code_blocks

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "adding-a-provider.md"
TOKEN = "toy-token-" + "x" * 24


class StandInProviderName(str, enum.Enum):
    """What ``ProviderName`` looks like after the guide's step 1."""

    TOYCRM = "toycrm"

    @property
    def label(self) -> str:
        return "Toy CRM"

    def __str__(self) -> str:
        return self.value


class ToyCrm:
    """The imaginary vendor: bookings and notes in memory, behind a JSON API."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.bookings: dict[str, dict[str, Any]] = {}
        self.notes: dict[str, dict[str, Any]] = {}
        self.ids = itertools.count(1)
        self.requests: list[tuple[str, str]] = []
        self.drop_next_create_answer = False

    def handle(self, method: str, path: str, body: Any) -> tuple[int, Any] | None:
        with self.lock:
            self.requests.append((method, path))
            parts = path.strip("/").split("/")
            if parts[:2] == ["v1", "bookings"]:
                return self.booking_route(method, parts[2:], body)
            if parts[:2] == ["v1", "notes"]:
                return self.note_route(method, parts[2:], body)
            return 404, {"message": "no such route"}

    def booking_route(self, method: str, rest: list[str], body: Any) -> tuple[int, Any] | None:
        if method == "POST" and not rest:
            record = {**body, "id": f"bk_{next(self.ids)}", "status": "booked"}
            self.bookings[record["id"]] = record
            if self.drop_next_create_answer:
                self.drop_next_create_answer = False
                return None  # made, but the answer never arrives
            return 201, record
        if method == "POST" and rest == ["search"]:
            return 200, {"results": [b for b in self.bookings.values() if b["reference"] == body["reference"]]}
        record = self.bookings.get(rest[0]) if rest else None
        if record is None:
            return 404, {"message": "booking not found"}
        if method == "GET":
            return 200, record
        if method == "PATCH":
            record.update(body)
            return 200, record
        if method == "POST" and rest[1:] == ["cancel"]:
            record["status"] = "cancelled"
            return 200, record
        return 405, {"message": "method not allowed"}

    def note_route(self, method: str, rest: list[str], body: Any) -> tuple[int, Any]:
        if method == "POST" and rest == ["search"]:
            return 200, {"results": [n for n in self.notes.values() if n["key"] == body["key"]]}
        if method == "POST" and not rest:
            note = {**body, "id": f"nt_{next(self.ids)}"}
            self.notes[note["id"]] = note
            return 201, note
        if method == "PUT" and rest and rest[0] in self.notes:
            self.notes[rest[0]].update(body)
            return 200, self.notes[rest[0]]
        return 404, {"message": "note not found"}


@pytest.fixture()
def toy() -> Iterator[tuple[ToyCrm, str]]:
    crm = ToyCrm()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                self._answer(401, {"message": "bad token"})
                return
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            answer = crm.handle(self.command, self.path, body)
            if answer is None:
                self.close_connection = True
                return
            self._answer(*answer)

        def _answer(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = do_PUT = _serve

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield crm, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def run_guide(monkeypatch: pytest.MonkeyPatch, url: str) -> dict[str, Any]:
    """The guide's Python blocks, in order, in one namespace (step 1 done by the stand-in)."""
    monkeypatch.setattr(models, "ProviderName", StandInProviderName)
    namespace: dict[str, Any] = {"TOY_URL": url, "TOY_TOKEN": TOKEN, "__name__": "toy_guide"}
    blocks = [b for b in code_blocks(GUIDE) if b["lang"] == "python"]
    assert len(blocks) == 3, "the guide has a settings block, an adapter block and a try-it block"
    for block in blocks:
        exec(compile(block["code"], f"{GUIDE.name}:{block['line']}", "exec"), namespace)
    return namespace


def test_the_guides_own_walkthrough_runs(toy: tuple[ToyCrm, str], monkeypatch: pytest.MonkeyPatch) -> None:
    crm, url = toy
    run_guide(monkeypatch, url)
    assert [b["status"] for b in crm.bookings.values()] == ["cancelled"]
    assert ("POST", "/v1/bookings/search") not in crm.requests  # nothing was ambiguous


def test_the_toy_adapter_keeps_every_promise(toy: tuple[ToyCrm, str], monkeypatch: pytest.MonkeyPatch) -> None:
    crm, url = toy
    ns = run_guide(monkeypatch, url)
    runtime = Runtime(policy=RetryPolicy(max_attempts=3, backoff_initial=0, jitter=0), sleep=lambda _: None)
    environ = {"PMS_TOYCRM_BASE_URL": url, "PMS_TOYCRM_TOKEN": TOKEN, "PMS_TOYCRM_CALENDAR": "chair-2"}
    settings = load_settings(ns["ToyCrmSettings"], environ)
    assert (settings.account, settings.timeout, settings.rate_limit) == (f"{url}|chair-2", 10.0, None)
    adapter = ns["create"](settings, runtime)
    zone = ZoneInfo("Europe/Dublin")
    start = dt.datetime(2032, 6, 1, 10, 0, tzinfo=zone)
    request = AppointmentRequest(
        patient=Patient(name="Grace Hopper", email="grace@example.com"), start=start, reference="conv-7"
    )

    # the create's answer is lost: the base class looks the booking up instead of booking twice
    crm.drop_next_create_answer = True
    booked = adapter.book(request)
    assert [b["reference"] for b in crm.bookings.values()].count("conv-7") == 1
    assert ("POST", "/v1/bookings/search") in crm.requests
    assert booked.start == start and booked.start.tzinfo is zone and booked.reference == "conv-7"
    assert adapter.recover_booking(request) == booked

    moved = adapter.update(booked.id, AppointmentUpdate(start=start + dt.timedelta(hours=2), duration_minutes=45))
    assert (moved.start, moved.end - moved.start) == (start + dt.timedelta(hours=2), dt.timedelta(minutes=45))
    assert adapter.cancel(booked.id, reason="patient called").status is AppointmentStatus.CANCELLED
    writes = len(crm.requests)
    with pytest.raises(errors.AppointmentCancelledError):
        adapter.update(booked.id, AppointmentUpdate(title="too late"))
    assert crm.requests[writes:] == [("GET", f"/v1/bookings/{booked.id}")]  # read, no write
    reads = len(crm.requests)
    assert adapter.cancel(booked.id).status is AppointmentStatus.CANCELLED
    assert crm.requests[reads:] == [("GET", f"/v1/bookings/{booked.id}")]  # cancelling again writes nothing
    with pytest.raises(errors.NotFoundError):
        adapter.cancel("bk_999")

    report = PerformanceReport(
        period_start=dt.date(2032, 5, 1), period_end=dt.date(2032, 5, 31), metrics={"calls": 40.0}, report_id="may"
    )
    first = adapter.push_report(report)
    pushed = len(crm.requests)
    second = adapter.push_report(report)
    assert (first.created, second.created, first.id == second.id) == (True, False, True)
    assert crm.requests[pushed:] == [("PUT", f"/v1/notes/{first.id}")]  # the remembered note, no search
    fresh = ns["create"](settings, runtime)  # another process: it looks the note up, then updates it
    pushed = len(crm.requests)
    assert fresh.push_report(report).created is False
    assert crm.requests[pushed:] == [("POST", "/v1/notes/search"), ("PUT", f"/v1/notes/{first.id}")]
    fresh.close()
    crm.notes.clear()  # staff deleted the note: the next push creates it again
    assert adapter.push_report(report).created is True
    assert len(crm.notes) == 1
    assert TOKEN not in repr(adapter)
    adapter.close()


def test_the_guides_settings_declare_their_variables(toy: tuple[ToyCrm, str], monkeypatch: pytest.MonkeyPatch) -> None:
    _, url = toy
    ns = run_guide(monkeypatch, url)
    with pytest.raises(errors.ConfigurationError) as caught:
        load_settings(ns["ToyCrmSettings"], {"PMS_TOYCRM_BASE_URL": url, "PMS_TOYCRM_TIMEOUT_MS": "soon"})
    assert list(caught.value.missing) == ["PMS_TOYCRM_TOKEN", "PMS_TOYCRM_CALENDAR"]
    assert "PMS_TOYCRM_TIMEOUT_MS must be" in str(caught.value)
    settings = load_settings(
        ns["ToyCrmSettings"], {"PMS_TOYCRM_BASE_URL": url, "PMS_TOYCRM_TOKEN": TOKEN, "PMS_TOYCRM_CALENDAR": "c"}
    )
    assert TOKEN not in repr(settings) and settings.version_label == "v1"
