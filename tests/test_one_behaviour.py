"""One behaviour across providers: the same call means the same thing on every vendor.

Each test states one promise of ``docs/providers.md`` and ``docs/errors.md`` and checks it on
GoHighLevel v2 and v1, Salesforce and HubSpot against the sandbox (faults injected there, or by
``responses`` in front of it); where vendors differ by design, ``Vendor`` names the difference.
Vendor-specific wire formats and vendor-only behaviours stay in the vendors' own test files.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any
from zoneinfo import ZoneInfo

import attrs
import pytest
import requests
import responses
from hypothesis import given, settings
from hypothesis import strategies as st

import pms_integration as pms
from pms_integration import PMSClient
from pms_integration._http import HttpResponse
from pms_integration.provider import Capability
from pms_integration.providers import gohighlevel, hubspot, salesforce
from pms_integration.sandbox import Fault, Sandbox
from pms_integration.testing import as_default
from tests._salesforce_support import CONTACT, TASK_ID, sf_id

from .conftest import sent_targets

WRITES = {"POST", "PUT", "PATCH", "DELETE"}
EASTERN = dt.timezone(dt.timedelta(hours=-5))
MOVE = {"start": "2030-03-06T14:00:00-05:00", "duration_minutes": 45}
SF_EVENT = sf_id("00U", 100)


@attrs.frozen
class Vendor:
    provider: str
    version: str
    token_variable: str
    create: str  # the operation that makes the booking's record
    lookups: tuple[str, ...]  # what an ambiguous create is looked up with
    bad_ids: tuple[str, ...]  # malformed appointment ids, each for its own reason
    names_its_wait: bool = True  # a rate-limit answer carries Retry-After (Salesforce's 403 does not)
    second_cancel: tuple[str, ...] = ()  # what a second cancel sends (HubSpot writes the deal again)
    not_found_code: str | None = None  # the vendor's own error code for an unknown record
    repush: tuple[str, ...] = ()  # what a report re-push sends: in the same process, then in a new one
    repush_fresh: tuple[str, ...] = ()
    report_create: str = "notes.create"
    settings: tuple[tuple[str, str], ...] = ()  # PMS_* variables this variant sets
    # the requests of a book (new patient), a move, a cancel and a first report push
    pinned: tuple[tuple[str, ...], ...] = ()


# fmt: off
VENDORS = {
    "gohighlevel-v2": Vendor(
        "gohighlevel", "v2", "PMS_GHL_API_KEY", "appointments.create", ("appointments.list",),
        ("abc.def", "a:b", "x" * 65, "ocQHyuzHvysMo5N5VsXc_12", "with-dash"),
        second_cancel=("appointments.get",),
        pinned=(("contacts.search", "contacts.upsert", "appointments.create"), ("appointments.get", "appointments.update"),
                ("appointments.get", "appointments.update"), ("contacts.upsert", "notes.list", "notes.create")),
        repush=("notes.update",),  # the reports contact is not upserted again
        repush_fresh=("contacts.upsert", "notes.list", "notes.update"),
    ),
    "gohighlevel-v1": Vendor(
        "gohighlevel", "v1", "PMS_GHL_API_KEY", "v1.appointments.create", ("v1.appointments.list",),
        ("ocQHyuzHvysMo5N5VsXc_1729821600000_1800", "abc.def"),  # a v2 recurring instance is no v1 id
        second_cancel=("v1.appointments.get",),
        pinned=(("v1.appointments.create", "v1.appointments.get"), ("v1.appointments.get", "v1.appointments.update"),
                ("v1.appointments.get", "v1.appointments.status"), ()),
    ),
    "salesforce": Vendor(
        "salesforce", "v2", "PMS_SALESFORCE_TOKEN", "sobjects.create", ("query",),
        # short, symbols, checksum, case changed, a Task's id, a Contact's id
        ("00U123", "00U000000000001-AA", SF_EVENT[:15] + "AAB", SF_EVENT.lower(), TASK_ID, CONTACT),
        names_its_wait=False,
        second_cancel=("sobjects.get", "queryAll"),  # the read, then the recycle bin
        not_found_code="NOT_FOUND",
        repush=("sobjects.update",),
        repush_fresh=("query", "sobjects.update"),
        report_create="sobjects.create",
        # linking off: the Event create alone is what these rules are about (the composite calls of
        # patient linking are pinned in test_salesforce_reads); the conflict check reads busy time first
        settings=(("PMS_SALESFORCE_PATIENT_RECORD", "off"),),
        pinned=(("composite", "sobjects.create"), ("sobjects.get", "sobjects.update"), ("sobjects.get", "sobjects.delete"),
                ("query", "sobjects.create")),
    ),
    "hubspot": Vendor(
        # the meeting is looked up through its deal (a meetings search follows only if that misses;
        # a meetings search is also the conflict check, which runs before the create)
        "hubspot", "v2", "PMS_HUBSPOT_PRIVATE_APP_TOKEN", "meetings.create", ("deals.read",),
        ("abc", "123", "1:2:3", "1:x", "x:1", ":1", "1:", "1:2 ", "1" * 21 + ":2", "../../etc", "12ab:34"),
        second_cancel=("meetings.read", "deals.update"),
        # book starts with the conflict check: one meetings search for busy time in the slot
        pinned=(("meetings.search", "contacts.batch_read", "contacts.create", "deals.create", "meetings.create"),
                ("meetings.read", "meetings.update", "deals.update"), ("meetings.read", "deals.update", "meetings.update"),
                ("notes.search", "notes.create")),
        not_found_code="OBJECT_NOT_FOUND",
        repush=("notes.update",),
        repush_fresh=("notes.search", "notes.update"),
    ),
}
# fmt: on
# Salesforce's soft cancel marks the Event instead of deleting it; every rule holds there too
VENDORS["salesforce-soft-cancel"] = attrs.evolve(
    VENDORS["salesforce"],
    second_cancel=("sobjects.get",),
    settings=(*VENDORS["salesforce"].settings, ("PMS_SALESFORCE_CANCEL_MODE", "soft")),
    pinned=(*VENDORS["salesforce"].pinned[:2], ("sobjects.get", "sobjects.update"), VENDORS["salesforce"].pinned[3]),
)


@attrs.define
class Case:
    """One provider's default client on the sandbox; ``waits`` are the pauses it asked for."""

    vendor: Vendor
    sandbox: Sandbox
    client: PMSClient
    waits: list[float]
    env: dict[str, str]

    @property
    def is_v1(self) -> bool:
        return self.vendor.version == "v1" and self.vendor.provider == "gohighlevel"

    def sent(self, since: int = 0) -> list[str]:
        """The operations the sandbox was asked for, from the ``since``-th on."""
        return [r.operation for r in list(self.sandbox.records)[since:]]

    def sending(self, call: Callable[[], Any]) -> tuple[Any, list[str]]:
        """What ``call`` returns, and the operations it sent."""
        mark = len(self.sandbox.records)
        return call(), self.sent(mark)

    def writes(self, since: int = 0) -> list[str]:
        reads = ("search", "batch_read")
        return [
            r.operation
            for r in list(self.sandbox.records)[since:]
            if r.method in WRITES and not r.operation.endswith(reads)
        ]

    def inject(self, fault: Fault, operation: str, times: int | None = 1) -> None:
        self.sandbox.inject(self.vendor.provider, fault, operation=operation, times=times)

    def needs(self, capability: Capability) -> None:
        adapter = self.client.adapter()
        if capability not in adapter.capabilities:
            pytest.skip(adapter.unsupported_reason(capability) or f"no {capability}")


@pytest.fixture(params=[pytest.param(v, id=name) for name, v in VENDORS.items()])
def case(request: pytest.FixtureRequest, sb: Sandbox) -> Iterator[Case]:
    vendor: Vendor = request.param
    waits: list[float] = []
    env = {**sb.environ(ghl_api_version=vendor.version, default_provider=vendor.provider), **dict(vendor.settings)}
    with PMSClient(environ=env, env_file=None, sleep=waits.append) as client, as_default(client):
        yield Case(vendor, sb, client, waits, env)


def booking(reference: str, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "start": "2030-03-05T10:00:00-05:00",
        "duration_minutes": 45,
        "timezone": "America/New_York",
        "title": "Cleaning",
        "patient": {"name": "Jane Doe", "email": "jane.doe@example.com", "phone": "+15555550123"},
        "reference": reference,
    }
    body.update(changes)
    return body


REPORT = {"period_start": "2030-03-01", "period_end": "2030-03-07", "metrics": {"calls handled": 142}}


def unknown_id(provider: str, booked_id: str) -> str:
    """An id of the right shape for the vendor that names no record."""
    if provider == "gohighlevel":
        return "ZzZzZzZzZzZzZzZzZzZz"
    if provider == "salesforce":
        return sf_id("00U", 987654)
    return ":".join("9" * len(part) for part in booked_id.split(":"))


def assert_in_booking_zone(appointment: pms.Appointment, start: dt.datetime, minutes: int, zone: str | None) -> None:
    assert appointment.start is not None and appointment.end is not None
    assert appointment.start == start
    assert appointment.end == start + dt.timedelta(minutes=minutes)
    assert appointment.start.utcoffset() == appointment.end.utcoffset() == start.utcoffset()
    # the named zone itself, or (offset only) a fixed offset
    assert str(appointment.start.tzinfo) == str(appointment.end.tzinfo) == (zone or str(EASTERN))


# ---------------------------------------------------------------------------------------------
# booking


def test_each_operation_sends_the_pinned_requests(case: Case) -> None:
    """Book (a new patient), move, cancel and a first report push send the requests the
    providers' docs count, in order."""
    book, move, cancel, report = case.vendor.pinned
    booked, sent = case.sending(lambda: pms.book_appointment(booking("pinned")))
    assert sent == list(book)
    assert case.sending(lambda: pms.update_appointment(booked.id, MOVE))[1] == list(move)
    assert case.sending(lambda: pms.cancel_appointment(booked.id))[1] == list(cancel)
    if report:
        assert case.sending(lambda: pms.push_performance_report(REPORT))[1] == list(report)


def test_the_same_reference_books_once_and_the_answers_fill_rate_limit_info(case: Case) -> None:
    """In one process a reference books once; the vendor's answers also tell the client its quota."""
    booked = pms.book_appointment(booking("same-ref"))
    mark = len(case.sandbox.records)
    assert pms.book_appointment(booking("same-ref")).id == booked.id
    assert case.sent(mark) == []
    info = case.client.rate_limit_info(case.vendor.provider)
    assert info is not None and (info.limit or info.daily_limit)


def test_no_patient_email_phone_or_name_travels_in_a_url_or_a_log(
    case: Case, monkeypatch: pytest.MonkeyPatch, debug_logs: pytest.LogCaptureFixture
) -> None:
    """Look-ups by e-mail or phone send them in a request body: URLs end up in proxies' logs."""
    targets = sent_targets(case.sandbox, monkeypatch)
    patient = {"name": "Jane Doe", "email": "jane+b/c@example.com", "phone": "+15555550123"}
    first = pms.book_appointment(booking("url-1", patient=patient))
    if case.vendor.provider == "hubspot":
        case.sandbox.emulator("hubspot").settle()  # type: ignore[attr-defined]
    pms.book_appointment(booking("url-2", patient=patient, start="2030-03-07T10:00:00-05:00"))  # returning
    pms.update_appointment(first.id, MOVE)
    case.client.recover_booking(booking("url-1", patient=patient))
    pms.cancel_appointment(first.id)
    if Capability.PUSH_REPORT in case.client.adapter().capabilities:
        pms.push_performance_report(REPORT)
    assert len(targets) >= 6
    for target in targets:
        seen = urllib.parse.unquote(target).lower()
        assert "jane" not in seen and "example.com" not in seen and "5550123" not in seen, target
    assert debug_logs.records and "example.com" not in debug_logs.text and "5550123" not in debug_logs.text


# ---------------------------------------------------------------------------------------------
# read before write


@pytest.mark.parametrize("operation", ["cancel", "update"])
def test_an_id_that_never_existed_is_not_found_and_nothing_is_written(case: Case, operation: str) -> None:
    """Cancelling or changing an unknown id is NotFoundError after one read; no write is sent."""
    booked = pms.book_appointment(booking(f"nf-{operation}"))
    missing, mark = unknown_id(case.vendor.provider, booked.id), len(case.sandbox.records)
    with pytest.raises(pms.NotFoundError) as info:
        pms.cancel_appointment(missing) if operation == "cancel" else pms.update_appointment(missing, MOVE)
    assert info.value.code == case.vendor.not_found_code and info.value.status_code == 404
    assert len(case.sent(mark)) == 1 and case.writes(mark) == []


def test_cancelling_twice_succeeds_both_times_and_the_second_writes_nothing_new(case: Case) -> None:
    """A second cancel is success (the booking is cancelled), with the booking's times; only
    HubSpot writes again (the deal's stage, which finishes a cancel a failure left half done)."""
    booked = pms.book_appointment(booking("twice"))
    first = pms.cancel_appointment(booked.id, reason="Patient called to cancel")
    mark = len(case.sandbox.records)
    second = pms.cancel_appointment(booked.id, reason="Patient called to cancel")
    assert case.sent(mark) == list(case.vendor.second_cancel)
    assert first.status == second.status == pms.AppointmentStatus.CANCELLED
    assert second.start == booked.start and second.end == booked.end


@pytest.mark.parametrize("change", [MOVE, {"title": "Whitening"}], ids=["move", "title"])
def test_changing_a_cancelled_booking_is_refused_after_one_read_without_a_write(
    case: Case, change: dict[str, Any]
) -> None:
    """AppointmentCancelledError (409, APPOINTMENT_CANCELLED, "book a new appointment")."""
    if case.is_v1 and "title" in change:
        pytest.skip("GoHighLevel v1 cannot change a title at all (UnsupportedOperationError)")
    booked = pms.book_appointment(booking("move-cancelled"))
    pms.cancel_appointment(booked.id)
    mark = len(case.sandbox.records)
    with pytest.raises(pms.AppointmentCancelledError) as info:
        pms.update_appointment(booked.id, change)
    assert info.value.code == "APPOINTMENT_CANCELLED" and info.value.status_code == 409
    assert "book a new appointment" in str(info.value).lower()
    assert len(case.sent(mark)) == 1 and case.writes(mark) == [], "a write was sent for a cancelled booking"


# ids no vendor issues: path tricks, encodings, header injection, non-ASCII, blanks
HOSTILE_IDS = ["../etc/passwd", "..", "a/b", "%2F", "a%2Fb", "id?x=1", "id#frag", "id\r\nX-Evil: 1", "idé", "日本", " ", ""]  # fmt: skip


def test_a_malformed_id_is_refused_before_any_request(case: Case) -> None:
    """Each vendor's id rules (and hostile ids) are checked locally: ValidationError naming
    appointment_id, for update and cancel, and nothing reaches the wire."""
    for bad in (*case.vendor.bad_ids, *HOSTILE_IDS):
        with pytest.raises(pms.ValidationError) as info:
            pms.update_appointment(bad, MOVE)
        assert info.value.fields == ["appointment_id"], bad
        with pytest.raises(pms.ValidationError):
            pms.cancel_appointment(bad)
    assert case.sent() == []


# ---------------------------------------------------------------------------------------------
# times and zones


@pytest.mark.parametrize("zone", ["America/New_York", None], ids=["named-zone", "offset-only"])
def test_every_returned_appointment_is_in_the_bookings_zone(case: Case, zone: str | None) -> None:
    """Book, recover, move and cancel all answer with start and end at the booking's own offset
    (in the named zone when there is one)."""
    if zone is None and case.is_v1:
        pytest.skip("GoHighLevel v1 needs a time zone for every booking")
    request = booking(f"tz-{bool(zone)}", timezone=zone)
    start = dt.datetime(2030, 3, 5, 10, 0, tzinfo=ZoneInfo(zone) if zone else EASTERN)
    booked = pms.book_appointment(request)
    # GoHighLevel v1 cannot set a length: the calendar's slot (30 minutes in the sandbox) decides
    minutes = 30 if case.is_v1 else 45
    recovered = case.client.recover_booking(request)
    assert recovered is not None
    for appointment in (booked, recovered):
        assert_in_booking_zone(appointment, start, minutes, zone)
    moved_to = start + dt.timedelta(days=1, hours=4)
    moved = pms.update_appointment(booked.id, {"start": moved_to.isoformat(), "duration_minutes": 45})
    assert_in_booking_zone(moved, moved_to, minutes, zone)
    assert_in_booking_zone(pms.cancel_appointment(moved.id), moved_to, minutes, zone)


@pytest.mark.parametrize(
    ("start", "timezone"),
    [
        ((dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1)).replace(microsecond=0).isoformat(), "UTC"),
        ("2030-07-09T10:00:00-05:00", "America/New_York"),  # New York is at -04:00 in July
    ],
    ids=["in-the-past", "offset-contradicts-zone"],
)
def test_a_start_in_the_past_or_against_its_zone_is_refused_before_any_request(
    case: Case, start: str, timezone: str
) -> None:
    with pytest.raises(pms.ValidationError) as info:
        pms.book_appointment(booking("bad-start", start=start, timezone=timezone))
    assert any(path == "start" for path, _ in info.value.errors)
    assert case.sent() == []


# ---------------------------------------------------------------------------------------------
# never double-book


def unreadable_success(case: Case, mock: responses.RequestsMock) -> list[str]:
    """The sandbox commits the create, but its 2xx answer arrives as an HTML page."""
    answered: list[str] = []

    def forward(request: requests.PreparedRequest) -> tuple[int, dict[str, str], bytes]:
        body = request.body.encode() if isinstance(request.body, str) else request.body
        sent = urllib.request.Request(str(request.url), data=body, headers=dict(request.headers), method=request.method)
        try:
            with urllib.request.urlopen(sent, timeout=30) as answer:
                status, headers, text = answer.status, dict(answer.headers), answer.read()
        except urllib.error.HTTPError as error:
            status, headers, text = error.code, dict(error.headers), error.read()
        if case.sent()[-1] == case.vendor.create and not answered:
            answered.append("garbled")
            return status, {"Content-Type": "text/html"}, b"<html>ok</html>"
        headers.pop("Content-Length", None)
        headers.pop("Transfer-Encoding", None)
        return status, headers, text

    for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        mock.add_callback(method, re.compile(case.sandbox.url + ".*"), callback=forward)
    return answered


# the change is made, but the answer says nothing usable
LOST = {"committed-then-502": Fault.server_error(502, commit=True), "committed-then-reset": Fault.reset_after_commit()}
AMBIGUOUS = [*LOST, "unreadable-2xx"]


@pytest.mark.parametrize("fault", AMBIGUOUS)
def test_a_create_that_may_have_happened_is_looked_up_and_never_sent_again(case: Case, fault: str) -> None:
    """The record was made but the answer says nothing usable: it is found, not made twice."""
    if fault == "unreadable-2xx":
        with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
            garbled = unreadable_success(case, mock)
            booked = pms.book_appointment(booking(f"ambiguous-{fault}"))
        assert garbled == ["garbled"]
    else:
        case.inject(LOST[fault], case.vendor.create)
        booked = pms.book_appointment(booking(f"ambiguous-{fault}"))
    sent = case.sent()
    assert booked.reference == f"ambiguous-{fault}"
    assert sent.count(case.vendor.create) == 1
    assert sent[sent.index(case.vendor.create) + 1] in case.vendor.lookups  # the look-up comes next


def test_a_create_refused_before_committing_is_sent_once_more_after_the_look_up(case: Case) -> None:
    case.inject(Fault.server_error(502), case.vendor.create)
    pms.book_appointment(booking("refused-once"))
    sent = case.sent()
    first = sent.index(case.vendor.create)
    assert sent.count(case.vendor.create) == 2
    assert sent[first + 1] in case.vendor.lookups


def test_when_the_look_up_fails_too_the_create_s_error_says_the_outcome_is_unknown(case: Case) -> None:
    """The connection dropped on the create and the look-up answers 503: nobody can tell, so the
    create's own error (TransportError) is raised, outcome unknown, naming the reference."""
    case.inject(Fault.drop(), case.vendor.create)
    for lookup in case.vendor.lookups:
        case.inject(Fault.server_error(503), lookup, times=None)
    with pytest.raises(pms.TransportError) as info:
        pms.book_appointment(booking("lookup-fails"))
    assert info.value.outcome_unknown is True
    assert "lookup-fails" in str(info.value)
    assert case.sent().count(case.vendor.create) == 1


def test_a_rate_limited_create_is_waited_out_and_sent_again_without_a_look_up(case: Case) -> None:
    """A 429 (Salesforce: 403 REQUEST_LIMIT_EXCEEDED) was not applied: wait (Retry-After when
    given), then send the create again; nothing to look up."""
    case.inject(Fault.rate_limit(retry_after=3), case.vendor.create)
    pms.book_appointment(booking("rate-limited"))
    sent = case.sent()
    first = sent.index(case.vendor.create)
    assert sent[first : first + 2] == [case.vendor.create] * 2  # refused, so nothing to look up
    assert (3.0 in case.waits) if case.vendor.names_its_wait else case.waits


# ---------------------------------------------------------------------------------------------
# reports


def test_a_report_pushed_twice_updates_the_same_record(case: Case) -> None:
    """Same process (remembered id) or a new one (found by its report id): updated, not added,
    with the vendor's pinned requests, and the record holds the new figures."""
    case.needs(Capability.PUSH_REPORT)
    first = pms.push_performance_report(REPORT)
    mark = len(case.sandbox.records)
    again = pms.push_performance_report({**REPORT, "metrics": {"calls handled": 150}})
    assert case.sent(mark) == list(case.vendor.repush)
    assert "150" in json.dumps(case.sandbox.state(case.vendor.provider))
    if case.vendor.provider == "hubspot":
        case.sandbox.emulator("hubspot").settle()  # type: ignore[attr-defined] # the search index caught up
    with PMSClient(environ=case.env, env_file=None) as fresh:
        mark = len(case.sandbox.records)
        later = fresh.push_performance_report({**REPORT, "metrics": {"calls handled": 151}})
        assert case.sent(mark) == list(case.vendor.repush_fresh)
    assert "151" in json.dumps(case.sandbox.state(case.vendor.provider))
    assert first.created is True and again.created is later.created is False
    assert first.id == again.id == later.id
    assert first.report_id == later.report_id == "pms-report-2030-03-01-2030-03-07"


@pytest.mark.parametrize("fault", list(LOST))
def test_a_report_create_that_may_have_happened_is_found_not_made_twice(case: Case, fault: str) -> None:
    """The report's record was made but the answer was lost: looked up, never created again."""
    case.needs(Capability.PUSH_REPORT)
    case.inject(LOST[fault], case.vendor.report_create)
    receipt = pms.push_performance_report(REPORT)
    sent = case.sent()
    assert sent.count(case.vendor.report_create) == 1
    after = list(case.sandbox.records)[sent.index(case.vendor.report_create) + 1]
    assert after.method == "GET" or after.operation.endswith("search")  # a look-up comes next
    assert receipt.id and receipt.report_id == "pms-report-2030-03-01-2030-03-07"


# ---------------------------------------------------------------------------------------------
# secrets


def test_no_secret_appears_in_a_repr_or_an_authentication_error(case: Case) -> None:
    canary = "canary-secret-" + case.vendor.provider + "-0f9e8d7c"
    env = {**case.env, case.vendor.token_variable: canary}
    with PMSClient(environ=env, env_file=None, sleep=lambda _: None) as wrong:
        with pytest.raises(pms.AuthenticationError) as info:
            wrong.book_appointment(booking("secret"))
        shown = [repr(wrong), repr(wrong.adapter()), repr(wrong.config), str(info.value), repr(info.value)]
    shown.append(str(info.value.to_dict()) if hasattr(info.value, "to_dict") else "")
    secret = case.env[case.vendor.token_variable]
    for text in shown:
        assert canary not in text and secret not in text
    assert case.vendor.token_variable in str(info.value)


# ---------------------------------------------------------------------------------------------
# reading vendors' error answers (no sandbox needed)

PARSERS = {"gohighlevel": gohighlevel.parse_error, "salesforce": salesforce.parse_error, "hubspot": hubspot.parse_error}
# fmt: off
GARBAGE = ["", "   ", "<html>oops</html>", "null", "[]", "{}", "[1, 2]", "42", '"a string"', "{broken", "\x00\xff",
           "[" * 5000, '{"message": null}', '{"message": {"nested": 1}}', '{"message": 5}', '{"msg": 5}',
           '[{"errorCode": 5}]', '{"errors": "x"}', '{"errors": [1, null, {"context": 3}, {"context": {"propertyName": 7}}]}']
KEYS = ["message", "msg", "error", "errors", "statusCode", "traceId", "errorCode", "fields", "context", "propertyName",
        "category", "policyName", "correlationId", "name", "x"]
# fmt: on
def _nest(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=5)


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=30), _nest, max_leaves=20)


@pytest.mark.parametrize("vendor", list(PARSERS))
def test_every_error_parser_reads_any_text_without_raising(vendor: str) -> None:
    """Whatever a vendor (or a proxy in front of it) answers, the error names a message."""
    for status in (400, 423, 429, 477, 500, 503):
        for text in GARBAGE:
            info = PARSERS[vendor](HttpResponse(status, {"Retry-After": "soon"}, text, "POST", "/x"))
            assert isinstance(info.message, str) and info.message, (status, text)


@pytest.mark.parametrize("vendor", list(PARSERS))
@settings(max_examples=150, deadline=None)
@given(status=st.sampled_from([400, 401, 404, 409, 423, 429, 477, 502]), body=JSON)
def test_every_error_parser_reads_any_json_without_raising(vendor: str, status: int, body: Any) -> None:
    info = PARSERS[vendor](HttpResponse(status, {}, json.dumps(body), "GET", "/"))
    assert isinstance(info.message, str)
    assert all(isinstance(f, str) for f in info.fields)
