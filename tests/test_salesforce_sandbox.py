"""End to end over real loopback sockets: the Salesforce adapter against the sandbox org."""

from __future__ import annotations

import datetime as dt
import threading
from email.message import Message
from typing import Any, cast
from zoneinfo import ZoneInfo

import pytest
import requests

from pms_integration import PMSClient
from pms_integration.errors import (
    AppointmentCancelledError,
    AuthenticationError,
    NotFoundError,
    RateLimitError,
    ValidationError,
)
from pms_integration.models import AppointmentStatus
from pms_integration.providers.salesforce import SalesforceAdapter, id_checksum, is_salesforce_id
from pms_integration.sandbox import Fault, Sandbox
from pms_integration.sandbox._core import Emulator, SandboxRequest
from pms_integration.sandbox.salesforce import SalesforceEmulator, date_literal_range, parse_soql, salesforce_id
from pms_integration.sandbox.salesforce.soql import Bool, Cond, SoqlError
from pms_integration.sandbox.salesforce.state import Org
from pms_integration.sandbox.salesforce.validation import OrgError, coerce

from .test_salesforce_contract import WRONG, Sent

NY = ZoneInfo("America/New_York")


def org(sb: Sandbox) -> SalesforceEmulator:
    return cast(SalesforceEmulator, sb.emulator("salesforce"))


def make_client(sb: Sandbox, **extra: str) -> PMSClient:
    """A client for the write path alone (test_salesforce_reads covers the look-ups before a booking)."""
    env = sb.environ(default_provider="salesforce")
    env.update(PMS_SALESFORCE_PATIENT_RECORD="off", PMS_SALESFORCE_CONFLICT_CHECK="off")
    env.update(extra)
    return PMSClient(environ=env, env_file=None, sleep=lambda s: None)


def booking(sb: Sandbox, **overrides: Any) -> dict[str, Any]:
    contact = next(c["Id"] for c in sb.state("salesforce")["contacts"] if c["type"] == "Contact")
    data: dict[str, Any] = {
        "start": dt.datetime(2037, 3, 9, 9, 0, tzinfo=NY).isoformat(),
        "duration_minutes": 45,
        "patient": {"name": "Jane Doe", "email": "jane@example.com", "contact_id": contact},
        "title": "Cleaning",
        "reason": "routine",
        "notes": "Prefers mornings.",
    }
    data.update(overrides)
    return data


REPORT = {
    "period_start": "2026-03-02",
    "period_end": "2026-03-08",
    "metrics": {"calls_handled": 40, "bookings_made": 9},
}


def test_every_operation_end_to_end(sb: Sandbox) -> None:
    with make_client(sb) as c:
        appt = c.book_appointment(booking(sb))
        [event] = sb.state("salesforce")["bookings"]
        assert event["Id"] == appt.id and is_salesforce_id(appt.id) and appt.id.startswith("00U") and len(appt.id) == 18
        assert event["Subject"] == f"Cleaning - Jane Doe [{appt.reference}]"
        assert event["StartDateTime"] == "2037-03-09T13:00:00.000+0000"
        assert event["EndDateTime"] == "2037-03-09T13:45:00.000+0000"
        assert event["DurationInMinutes"] == 45
        assert event["WhoId"] == appt.contact_id and event["ShowAs"] == "Busy"
        assert event["OwnerId"] == org(sb).owner_id

        moved = c.update_appointment(appt.id, {"start": "2037-11-02T10:00:00-05:00", "duration_minutes": 60})
        assert moved.start == dt.datetime(2037, 11, 2, 10, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
        event = org(sb).record(appt.id)
        assert event is not None
        assert (event["StartDateTime"], event["EndDateTime"]) == (
            "2037-11-02T15:00:00.000+0000",
            "2037-11-02T16:00:00.000+0000",
        )

        renamed = c.update_appointment(appt.id, {"title": "Check-up", "notes": "Bring X-rays."})
        event = org(sb).record(appt.id)
        assert event is not None
        assert event["Subject"] == f"Check-up - Jane Doe [{appt.reference}]" == renamed.title
        assert event["Description"].startswith("Bring X-rays.\n\n--- booking details")

        first = c.push_performance_report(REPORT)
        second = c.push_performance_report({**REPORT, "metrics": {"calls_handled": 41}})
        [task] = sb.state("salesforce")["tasks"]
        assert first.id == second.id == task["Id"] and task["Id"].startswith("00T") and is_salesforce_id(task["Id"])
        assert (first.created, second.created) == (True, False)
        assert task["Status"] == "Completed" and task["IsClosed"] is True and task["ActivityDate"] == "2026-03-08"
        assert "41" in task["Description"]

        cancelled = c.cancel_appointment(appt.id, reason="called")
        again = c.cancel_appointment(appt.id)
        assert cancelled.status is again.status is AppointmentStatus.CANCELLED
        assert again.raw["already_cancelled"] == "ENTITY_IS_DELETED"
        assert sb.state("salesforce")["bookings"] == [] and sb.state("salesforce")["deleted"] == [appt.id]

        info = c.rate_limit_info("salesforce")
        assert info is not None and info.daily_limit == 15000
        assert info.daily_remaining == 15000 - sb.state("salesforce")["api_usage"]
        adapter = c.adapter("salesforce")
        assert isinstance(adapter, SalesforceAdapter)
        assert "67.0" in adapter.available_versions()


def test_soft_cancel_end_to_end(sb: Sandbox) -> None:
    with make_client(sb, PMS_SALESFORCE_CANCEL_MODE="soft") as c:
        appt = c.book_appointment(booking(sb))
        c.cancel_appointment(appt.id, reason="feeling better")
        c.cancel_appointment(appt.id)
    [event] = sb.state("salesforce")["bookings"]
    assert event["Subject"] == f"CANCELLED: Cleaning - Jane Doe [{appt.reference}]"
    assert event["ShowAs"] == "Free"
    assert event["Description"].count("Cancelled by the AI receptionist") == 1


def _writes(sb: Sandbox) -> int:
    return sum(1 for r in sb.records if r.provider.value == "salesforce" and r.method in ("POST", "PATCH", "DELETE"))


@pytest.mark.parametrize("mode", ["delete", "soft"])
def test_cancel_and_move_follow_the_one_rule(sb: Sandbox, mode: str) -> None:
    with make_client(sb, PMS_SALESFORCE_CANCEL_MODE=mode) as c:
        appt = c.book_appointment(booking(sb, timezone="America/New_York"))
        # an id that never existed: NotFoundError, and nothing written
        never = appt.id[:3] + "Zz" + appt.id[5:15]
        never += id_checksum(never)
        writes = _writes(sb)
        with pytest.raises(NotFoundError):
            c.cancel_appointment(never)
        assert _writes(sb) == writes

        first = c.cancel_appointment(appt.id, reason="called")
        again = c.cancel_appointment(appt.id)
        for answer in (first, again):
            assert answer.status is AppointmentStatus.CANCELLED
            # the booking's times, in the zone it was booked in (New York)
            assert answer.start == dt.datetime(2037, 3, 9, 9, 0, tzinfo=NY) and str(answer.start.tzinfo) == str(NY)
            assert answer.end == dt.datetime(2037, 3, 9, 9, 45, tzinfo=NY)
            assert answer.reference == appt.reference

        # moving or retitling the cancelled booking: a typed error, and no write
        writes = _writes(sb)
        for changes in ({"start": "2037-11-02T10:00:00-05:00", "duration_minutes": 60}, {"title": "Check-up"}):
            with pytest.raises(AppointmentCancelledError) as info:
                c.update_appointment(appt.id, changes)
            assert info.value.code == "APPOINTMENT_CANCELLED" and info.value.status_code == 409
        assert _writes(sb) == writes


def test_answers_carry_the_booking_zone_even_for_an_offset_only_booking(sb: Sandbox) -> None:
    with make_client(sb) as c:
        appt = c.book_appointment(booking(sb, start="2037-03-09T09:00:00-07:00"))
        assert appt.start is not None and appt.start.utcoffset() == dt.timedelta(hours=-7)
        moved = c.update_appointment(appt.id, {"location": "Chair 2"})
        assert moved.start == appt.start and moved.start is not None
        assert moved.start.utcoffset() == dt.timedelta(hours=-7)
        gone = c.cancel_appointment(appt.id)
        assert gone.end is not None and gone.end.utcoffset() == dt.timedelta(hours=-7)
        assert gone.end == dt.datetime(2037, 3, 9, 16, 45, tzinfo=dt.timezone.utc)


def test_record_type_when_configured(sb: Sandbox) -> None:
    with make_client(sb, PMS_SALESFORCE_EVENT_RECORD_TYPE=org(sb).event_record_type) as c:
        c.book_appointment(booking(sb))
    assert sb.state("salesforce")["bookings"][0]["RecordTypeId"] == org(sb).event_record_type


@pytest.mark.parametrize("fault", [Fault.reset_after_commit(), Fault.server_error(503, commit=True)])
def test_ambiguous_create_is_reconciled_not_duplicated(sb: Sandbox, fault: Fault) -> None:
    sb.inject("salesforce", fault, operation="sobjects.create", times=1)
    with make_client(sb) as c:
        appt = c.book_appointment(booking(sb, reference="bk-retry_1"))
    [event] = sb.state("salesforce")["bookings"]
    assert event["Id"] == appt.id and appt.reference == "bk-retry_1"
    assert [r.operation for r in sb.records if r.provider.value == "salesforce"] == ["sobjects.create", "query"]


def test_dropped_create_is_created_once(sb: Sandbox) -> None:
    sb.inject("salesforce", Fault.drop(), operation="sobjects.create", times=1)
    with make_client(sb) as c:
        c.book_appointment(booking(sb))
    assert len(sb.state("salesforce")["bookings"]) == 1


def test_like_escaping_keeps_similar_references_apart(sb: Sandbox) -> None:
    with make_client(sb) as c:
        other = c.book_appointment(booking(sb, reference="bk-axb"))
        mine = c.book_appointment(booking(sb, reference="bk-a_b"))
        adapter = c.adapter("salesforce")
        assert isinstance(adapter, SalesforceAdapter)
        from pms_integration.models import AppointmentRequest, structure

        found = adapter.find_booking(structure(booking(sb, reference="bk-a_b"), AppointmentRequest))
        assert found is not None and found.id == mine.id != other.id


def test_expired_token_without_refresh_names_the_variable(sb: Sandbox) -> None:
    with make_client(sb) as c:
        org(sb).expire_token()
        with pytest.raises(AuthenticationError) as info:
            c.book_appointment(booking(sb))
    assert "PMS_SALESFORCE_TOKEN" in str(info.value) and info.value.code == "INVALID_SESSION_ID"
    assert sb.state("salesforce")["bookings"] == []


def test_expired_token_is_refreshed(sb: Sandbox) -> None:
    with make_client(sb, **org(sb).refresh_environ()) as c:
        org(sb).expire_token()
        c.book_appointment(booking(sb))
        sb.inject("salesforce", Fault.expired_token(), operation="sobjects.update", times=1)
        appt = c.book_appointment(booking(sb, reference="bk-second"))
        c.update_appointment(appt.id, {"location": "Chair 4"})
    state = sb.state("salesforce")
    assert len(state["bookings"]) == 2 and state["token_refreshes"] == 2


def test_bad_refresh_credentials_fail_cleanly(sb: Sandbox) -> None:
    creds = {**org(sb).refresh_environ(), "PMS_SALESFORCE_REFRESH_TOKEN": "5Aep861revoked-refresh-token-00"}
    with make_client(sb, **creds) as c:
        org(sb).expire_token()
        with pytest.raises(AuthenticationError) as info:
            c.book_appointment(booking(sb))
    assert "invalid_grant" in str(info.value) and "PMS_SALESFORCE_REFRESH_TOKEN" in str(info.value)
    assert org(sb).client_secret not in str(info.value)


def test_sixteen_threads_one_refresh_over_sockets(sb: Sandbox) -> None:
    with make_client(sb, **org(sb).refresh_environ()) as c:
        appt = c.book_appointment(booking(sb))
        org(sb).expire_token()
        barrier = threading.Barrier(16)
        errors: list[BaseException] = []

        def work(n: int) -> None:
            try:
                barrier.wait(5)
                c.update_appointment(appt.id, {"location": f"Chair {n}"})
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
    assert errors == []
    assert sb.state("salesforce")["token_refreshes"] == 1


def test_daily_limit_is_a_rate_limit_error(sb: Sandbox) -> None:
    org(sb).set_api_usage(15000)
    with make_client(sb) as c, pytest.raises(RateLimitError) as info:
        c.book_appointment(booking(sb))
    assert info.value.code == "REQUEST_LIMIT_EXCEEDED" and info.value.status_code == 403
    assert sb.request_count("salesforce") == 1  # the daily allowance is spent: no retry


def test_transient_limit_is_retried(sb: Sandbox) -> None:
    sb.inject("salesforce", Fault.rate_limit(), operation="sobjects.create", times=1)
    with make_client(sb) as c:
        c.book_appointment(booking(sb))
    assert len(sb.state("salesforce")["bookings"]) == 1
    assert sb.request_count("salesforce", status=403) == 1


def test_bad_ids_never_reach_the_sandbox(sb: Sandbox) -> None:
    with make_client(sb) as c:
        appt = c.book_appointment(booking(sb))
        before = sb.request_count("salesforce")
        for bad in (appt.id[:15] + "ZZZ", appt.id.lower(), "00T" + appt.id[3:]):
            with pytest.raises(ValidationError):
                c.cancel_appointment(bad)
    assert sb.request_count("salesforce") == before


# ---------------------------------------------------------------------------------------------
# the sandbox rejects what the contract tests reject

SANDBOX_ERRORS = {
    "unknown field": (400, "INVALID_FIELD"),
    "read-only field": (400, "INVALID_FIELD_FOR_INSERT_UPDATE"),
    "no end": (400, "REQUIRED_FIELD_MISSING"),
    "naive time": (400, "JSON_PARSER_ERROR"),
    "subject too long": (400, "STRING_TOO_LONG"),
    "bad picklist": (400, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"),
    "bad who id": (400, "FIELD_INTEGRITY_EXCEPTION"),
    "task field on event": (400, "INVALID_FIELD"),
    "wrong sobject": (404, "NOT_FOUND"),
    "put instead of patch": (405, "METHOD_NOT_ALLOWED"),
    "bad checksum": (400, "MALFORMED_ID"),
    "task id on event": (400, "MALFORMED_ID"),
    "no content type": (415, "UNSUPPORTED_MEDIA_TYPE"),
    "no auth": (401, "INVALID_SESSION_ID"),
    "unfilterable": (400, "INVALID_FIELD"),
    "unescaped quote": (400, "MALFORMED_QUERY"),
    "unknown select": (400, "INVALID_FIELD"),
    "unversioned": (501, "NOT_EMULATED"),  # not a Salesforce resource the sandbox serves
}
# A body on DELETE is ignored by the real API as far as anyone has documented; not enforced.
NOT_ENFORCED = {"delete with body"}


def test_every_contract_case_has_a_sandbox_expectation() -> None:
    assert set(WRONG) == set(SANDBOX_ERRORS) | NOT_ENFORCED


@pytest.mark.parametrize("name", sorted(SANDBOX_ERRORS))
def test_sandbox_rejects_what_the_contract_rejects(sb: Sandbox, name: str) -> None:
    with make_client(sb) as c:
        appt = c.book_appointment(booking(sb))
        task = c.push_performance_report(REPORT)
    sent: Sent = WRONG[name]
    from ._salesforce_support import EVENT_ID, TASK_ID

    url = sent.url.replace("https://example.my.salesforce.com", sb.base_url("salesforce"))
    url = url.replace(EVENT_ID, appt.id).replace(TASK_ID, task.id)
    headers = dict(sent.headers)
    if "Authorization" in headers:
        headers["Authorization"] = "Bearer " + org(sb).token
    resp = requests.request(sent.method, url, data=sent.body, headers=headers, timeout=5)
    want_status, want_code = SANDBOX_ERRORS[name]
    assert resp.status_code == want_status, resp.text
    body = resp.json()
    assert isinstance(body, list) and body[0]["errorCode"] == want_code, body
    assert len(sb.state("salesforce")["bookings"]) == 1  # nothing was created or changed


def test_strict_record_checks(sb: Sandbox) -> None:
    with make_client(sb) as c:
        appt = c.book_appointment(booking(sb))
        c.cancel_appointment(appt.id)
    base = sb.base_url("salesforce") + "/services/data/v67.0/sobjects/Event/"
    auth = {"Authorization": "Bearer " + org(sb).token, "Content-Type": "application/json"}
    for method in ("GET", "PATCH", "DELETE"):
        resp = requests.request(method, base + appt.id, json={"Location": "x"}, headers=auth, timeout=5)
        assert (resp.status_code, resp.json()[0]["errorCode"]) == (404, "ENTITY_IS_DELETED")
    resp = requests.get(base + "not-an-id", headers=auth, timeout=5)
    assert (resp.status_code, resp.json()[0]["errorCode"]) == (404, "NOT_FOUND")
    resp = requests.post(base, json={"Subject": "x"}, headers=auth, timeout=5)
    assert resp.json() == [
        {
            "message": "Required fields are missing: [ActivityDateTime]",
            "errorCode": "REQUIRED_FIELD_MISSING",
            "fields": ["ActivityDateTime"],
        }
    ]
    resp = requests.post(base, json={"Id": appt.id}, headers=auth, timeout=5)
    assert resp.json()[0]["errorCode"] == "INVALID_FIELD" and "fields" not in resp.json()[0]
    resp = requests.get(base + appt.id, headers={"Authorization": "Bearer nope"}, timeout=5)
    assert resp.status_code == 401 and resp.headers["WWW-Authenticate"] == "Token"
    versions = requests.get(sb.base_url("salesforce") + "/services/data/", timeout=5)
    assert versions.status_code == 200 and "Sforce-Limit-Info" not in versions.headers
    assert {"label": "Summer '26", "url": "/services/data/v67.0", "version": "67.0"} in versions.json()
    query = sb.base_url("salesforce") + "/services/data/v67.0/query/"
    quoted = "SELECT Id FROM Event WHERE StartDateTime = '2037-03-09T13:00:00Z'"
    resp = requests.get(query, params={"q": quoted}, headers=auth, timeout=5)
    assert resp.status_code == 400 and "should not be enclosed in quotes" in resp.json()[0]["message"]
    resp = requests.get(base.replace("v67.0", "v99.0") + appt.id, headers=auth, timeout=5)
    assert resp.status_code == 404


def test_soql_subset_parser() -> None:
    q = parse_soql(
        "SELECT Id, Subject FROM Task WHERE (OwnerId = '005' AND Subject LIKE '%[a\\_b]%') OR IsClosed = true "
        "ORDER BY CreatedDate DESC, Subject NULLS LAST LIMIT 2 OFFSET 1"
    )
    assert q.sobject == "Task" and q.fields == ["Id", "Subject"] and (q.limit, q.offset) == (2, 1)
    assert isinstance(q.where, Bool) and q.where.op == "OR"
    first = q.where.items[0]
    assert isinstance(first, Bool) and first.op == "AND"
    assert [c.field for c in first.items if isinstance(c, Cond)] == ["OwnerId", "Subject"]
    assert q.order == [("CreatedDate", True, True), ("Subject", False, True)]
    # SOQL needs parentheses to mix AND and OR
    with pytest.raises(SoqlError, match="unexpected token: 'OR'"):
        parse_soql("SELECT Id FROM Task WHERE IsClosed = true AND Subject = 'a' OR Subject = 'b'")
    counted = parse_soql("SELECT COUNT() FROM Event WHERE Who.Name IN ('A', 'B') AND NOT ActivityDate = TODAY")
    assert counted.count == "COUNT()" and counted.fields == []
    literal = parse_soql("SELECT Id FROM Event WHERE StartDateTime = LAST_N_DAYS:30")
    assert isinstance(literal.where, Cond) and literal.where.value == ("LAST_N_DAYS", 30)


def test_date_literal_ranges() -> None:
    wednesday = dt.date(2037, 3, 11)
    day = dt.timedelta(days=1)
    assert date_literal_range("TODAY", 0, wednesday) == (wednesday, wednesday + day)
    assert date_literal_range("THIS_WEEK", 0, wednesday) == (dt.date(2037, 3, 8), dt.date(2037, 3, 15))  # Sunday on
    assert date_literal_range("LAST_N_DAYS", 7, wednesday) == (dt.date(2037, 3, 4), dt.date(2037, 3, 12))
    assert date_literal_range("NEXT_N_DAYS", 2, wednesday) == (dt.date(2037, 3, 12), dt.date(2037, 3, 14))
    assert date_literal_range("N_DAYS_AGO", 3, wednesday) == (dt.date(2037, 3, 8), dt.date(2037, 3, 9))
    assert date_literal_range("LAST_MONTH", 0, wednesday) == (dt.date(2037, 2, 1), dt.date(2037, 3, 1))
    assert date_literal_range("NEXT_N_MONTHS", 10, wednesday) == (dt.date(2037, 4, 1), dt.date(2038, 2, 1))


def test_the_org_state_works_without_http() -> None:
    """The store, the field rules and SOQL are plain Python: the handlers only carry HTTP to them."""
    store = Org()
    who = next(c for c in store.contacts if c.startswith("003"))
    body = {"StartDateTime": "2037-03-09T09:00:00-05:00", "DurationInMinutes": 45, "WhoId": who[:15]}
    event_id = store.create("Event", coerce("Event", body, creating=True, exists=store.exists), "67.0")
    store.update(store.find("Event", event_id), {"DurationInMinutes": 60})
    rows = store.query(parse_soql("SELECT Id, EndDateTime, Who.Name FROM Event"), "67.0", include_deleted=False)
    assert rows == [
        {
            "attributes": {"type": "Event", "url": f"/services/data/v67.0/sobjects/Event/{event_id}"},
            "Id": event_id,
            "EndDateTime": "2037-03-09T15:00:00.000+0000",
            "Who": {
                "attributes": {"type": "Name", "url": f"/services/data/v67.0/sobjects/Contact/{who}"},
                "Name": "Jane Doe",
            },
        }
    ]
    store.delete(store.find("Event", event_id))
    with pytest.raises(OrgError) as info:
        store.find("Event", event_id)
    assert (info.value.status, info.value.code) == (404, "ENTITY_IS_DELETED")
    assert (
        store.snapshot()["deleted"] == [event_id]
        and store.query(parse_soql("SELECT COUNT() FROM Event"), "67.0", include_deleted=True) == 1
    )


# ---------------------------------------------------------------------------------------------
# SOQL over HTTP: paging, COUNT(), IN, parentheses, relationships, date literals, other objects


def _soql(sb: Sandbox, soql: str, **headers: str) -> requests.Response:
    url = sb.base_url("salesforce") + "/services/data/v67.0/query/"
    auth = {"Authorization": "Bearer " + org(sb).token, **headers}
    return requests.get(url, params={"q": soql}, headers=auth, timeout=10)


def _fill(sb: Sandbox, total: int) -> dict[str, Any]:
    """``total`` Events: one booked over HTTP, the rest copied from it straight into the org."""
    with make_client(sb) as c:
        c.book_appointment(booking(sb))
    emulator = org(sb)
    with emulator.lock:
        [template] = list(emulator.records.values())
        for _ in range(total - 1):
            record_id = salesforce_id("00U")
            emulator.records[record_id] = {
                **template,
                "Id": record_id,
                "attributes": {**template["attributes"], "url": f"/services/data/v67.0/sobjects/Event/{record_id}"},
            }
    return template


def test_a_large_query_pages_at_2000_with_next_records_url(sb: Sandbox) -> None:
    _fill(sb, 2105)
    first = _soql(sb, "SELECT Id FROM Event").json()
    assert (first["totalSize"], first["done"], len(first["records"])) == (2105, False, 2000)
    next_url = first["nextRecordsUrl"]
    assert next_url.startswith("/services/data/v67.0/query/01g") and next_url.endswith("-2000")
    auth = {"Authorization": "Bearer " + org(sb).token}
    second = requests.get(sb.base_url("salesforce") + next_url, headers=auth, timeout=10).json()
    assert (second["totalSize"], second["done"], len(second["records"])) == (2105, True, 105)
    assert "nextRecordsUrl" not in second
    ids = {r["Id"] for r in first["records"]} | {r["Id"] for r in second["records"]}
    assert len(ids) == 2105
    # a smaller batch on request; LIMIT under the page size answers in one page
    small = _soql(sb, "SELECT Id FROM Event", **{"Sforce-Query-Options": "batchSize=500"}).json()
    assert len(small["records"]) == 500 and small["nextRecordsUrl"].endswith("-500")
    assert _soql(sb, "SELECT Id FROM Event LIMIT 10").json()["done"] is True
    assert _soql(sb, "SELECT COUNT() FROM Event").json() == {"totalSize": 2105, "done": True, "records": []}
    bad = requests.get(
        sb.base_url("salesforce") + "/services/data/v67.0/query/01gAAAAAAAAAAAAAAA-2000", headers=auth, timeout=10
    )
    assert (bad.status_code, bad.json()[0]["errorCode"]) == (400, "INVALID_QUERY_LOCATOR")


def test_common_soql_is_understood(sb: Sandbox) -> None:
    contact = next(c for c in sb.state("salesforce")["contacts"] if c["type"] == "Contact")
    soon = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) + dt.timedelta(days=2)
    with make_client(sb) as c:
        a = c.book_appointment(booking(sb, start=soon.isoformat(), title="Cleaning"))
        b = c.book_appointment(
            booking(
                sb, start=(soon + dt.timedelta(hours=1)).isoformat(), title="Filling", patient={"phone": "+15555550123"}
            )
        )
        c.push_performance_report(REPORT)

    def ids(soql: str) -> set[str]:
        resp = _soql(sb, soql)
        assert resp.status_code == 200, resp.text
        return {r["Id"] for r in resp.json()["records"]}

    assert ids(f"SELECT Id FROM Event WHERE Id IN ('{a.id}', '{b.id}')") == {a.id, b.id}
    assert ids(f"SELECT Id FROM Event WHERE Id NOT IN ('{a.id}')") == {b.id}
    assert ids(
        "SELECT Id FROM Event WHERE (Subject LIKE 'Cleaning%' OR Subject LIKE 'Filling%') AND IsAllDayEvent = false"
    ) == {a.id, b.id}
    assert ids("SELECT Id FROM Event WHERE NOT (Subject LIKE 'Cleaning%')") == {b.id}
    assert ids("SELECT Id FROM Event WHERE StartDateTime = NEXT_N_DAYS:3") == {a.id, b.id}
    assert ids("SELECT Id FROM Event WHERE StartDateTime = LAST_N_DAYS:3") == set()
    assert ids("SELECT Id FROM Event WHERE CreatedDate = LAST_N_DAYS:1 AND StartDateTime > TODAY") == {a.id, b.id}
    assert ids("SELECT Id FROM Event WHERE ActivityDate >= TOMORROW") == {a.id, b.id}
    assert ids("SELECT Id FROM Event WHERE Who.Name = 'jane doe'") == {a.id}
    rows = _soql(sb, f"SELECT Id, Who.Name, Owner.Name FROM Event WHERE Id = '{a.id}'").json()["records"]
    assert rows[0]["Who"]["Name"] == "Jane Doe" and rows[0]["Who"]["attributes"]["type"] == "Name"
    assert rows[0]["Who"]["attributes"]["url"].endswith(contact["Id"]) and rows[0]["Owner"]["Name"]
    no_who = _soql(sb, f"SELECT Who.Name FROM Event WHERE Id = '{b.id}'").json()["records"]
    assert no_who[0]["Who"] is None
    ordered = _soql(sb, "SELECT Subject FROM Event ORDER BY Subject DESC").json()["records"]
    assert [r["Subject"].split(" ")[0] for r in ordered] == ["Filling", "Cleaning"]
    assert _soql(sb, "SELECT COUNT(Id) FROM Task").json()["records"][0]["expr0"] == 1
    # objects beyond Event and Task
    assert ids("SELECT Id, Name FROM Contact") == {contact["Id"]}
    leads = _soql(sb, "SELECT Id, Name FROM Lead WHERE Name LIKE 'John%'").json()["records"]
    assert [r["Name"] for r in leads] == ["John Roe"]
    assert ids("SELECT Id FROM User WHERE IsActive = true") == {org(sb).owner_id}
    # still strict: unknown relationship, field on the related object, object, quoting
    for soql, code in (
        ("SELECT What.Nope FROM Event", "INVALID_FIELD"),
        ("SELECT Who.Salary FROM Event", "INVALID_FIELD"),
        ("SELECT Id FROM Appointment", "INVALID_TYPE"),
        ("SELECT Id FROM Event WHERE StartDateTime = 'TODAY'", "INVALID_FIELD"),
        ("SELECT Id FROM Event WHERE Subject = TODAY", "INVALID_FIELD"),
        ("SELECT Id FROM Event WHERE Subject = 'a' AND (Subject = 'b' OR Subject = 'c'", "MALFORMED_QUERY"),
    ):
        resp = _soql(sb, soql)
        assert (resp.status_code, resp.json()[0]["errorCode"]) == (400, code), soql


def test_what_the_sandbox_does_not_emulate_is_501_not_404(sb: Sandbox) -> None:
    base = sb.base_url("salesforce") + "/services/data/v67.0"
    auth = {"Authorization": "Bearer " + org(sb).token, "Content-Type": "application/json"}
    for method, path in (("GET", "/limits"), ("POST", "/composite/sobjects"), ("POST", "/sobjects/Account/")):
        resp = requests.request(method, base + path, json={}, headers=auth, timeout=5)
        assert resp.status_code == 501, (method, path)
        [error] = resp.json()
        assert error["errorCode"] == "NOT_EMULATED"
        assert f"{method} /salesforce/services/data/v67.0{path}" in error["message"]
    # SOQL on a standard object every org has, but the sandbox does not hold: "not emulated",
    # never INVALID_TYPE (which a caller's code would read as "this org has no such object")
    for sobject in ("Account", "Opportunity", "Case"):
        resp = _soql(sb, f"SELECT Id FROM {sobject}")
        assert resp.status_code == 501, sobject
        assert resp.json()[0]["errorCode"] == "NOT_EMULATED" and sobject in resp.json()[0]["message"]
    # a real "not found" stays a 404: an sObject type no org has, a record id never created
    assert requests.post(base + "/sobjects/Appointment/", json={}, headers=auth, timeout=5).status_code == 404
    missing = base + "/sobjects/Event/" + salesforce_id("00U")
    assert requests.get(missing, headers=auth, timeout=5).json()[0]["errorCode"] == "NOT_FOUND"


def test_the_core_default_for_an_unknown_route_is_501(sb: Sandbox) -> None:
    req = SandboxRequest("GET", "/nowhere", {}, Message(), b"")
    resp = Emulator.not_found(org(sb), req)
    assert resp.status == 501 and "not emulated" in str(resp.body).lower() and "GET" in str(resp.body)


# ---------------------------------------------------------------------------------------------
# the Composite API, BusinessHours, Contact/Lead create, staff actions


def _composite(sb: Sandbox, subs: list[dict[str, Any]], all_or_none: bool = True) -> requests.Response:
    url = sb.base_url("salesforce") + "/services/data/v67.0/composite/"
    auth = {"Authorization": f"Bearer {org(sb).token}"}
    return requests.post(url, json={"allOrNone": all_or_none, "compositeRequest": subs}, headers=auth, timeout=10)


V = "/services/data/v67.0"
EVENT = {"Subject": "x [c-1]", "StartDateTime": "2037-03-09T13:00:00Z", "EndDateTime": "2037-03-09T13:30:00Z"}


def test_composite_creates_with_references_and_counts_one_call(sb: Sandbox) -> None:
    before = org(sb).api_usage
    resp = _composite(
        sb,
        [
            {"method": "POST", "url": f"{V}/sobjects/Contact/", "referenceId": "who", "body": {"LastName": "Roe"}},
            {
                "method": "POST",
                "url": f"{V}/sobjects/Event/",
                "referenceId": "ev",
                "body": {**EVENT, "WhoId": "@{who.id}"},
            },
            {"method": "GET", "url": f"{V}/query/?q=SELECT+Id,+WhoId+FROM+Event", "referenceId": "q"},
        ],
    )
    assert resp.status_code == 200 and org(sb).api_usage == before + 1
    who, event, query = resp.json()["compositeResponse"]
    assert (who["httpStatusCode"], event["httpStatusCode"], query["httpStatusCode"]) == (201, 201, 200)
    assert who["body"]["id"].startswith("003") and query["body"]["records"][0]["WhoId"] == who["body"]["id"]


def test_composite_all_or_none_rolls_back_and_halts_the_rest(sb: Sandbox) -> None:
    resp = _composite(
        sb,
        [
            {"method": "POST", "url": f"{V}/sobjects/Contact/", "referenceId": "who", "body": {"LastName": "Roe"}},
            {
                "method": "POST",
                "url": f"{V}/sobjects/Event/",
                "referenceId": "ev",
                "body": {**EVENT, "ShowAs": "Maybe"},
            },
            {"method": "POST", "url": f"{V}/sobjects/Task/", "referenceId": "t", "body": {"Subject": "y"}},
        ],
    )
    codes = [(a["httpStatusCode"], a["body"][0]["errorCode"]) for a in resp.json()["compositeResponse"]]
    assert codes == [
        (400, "PROCESSING_HALTED"),
        (400, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"),
        (400, "PROCESSING_HALTED"),
    ]
    assert not any(c.get("Name") == "Roe" for c in sb.state("salesforce")["contacts"])
    assert sb.state("salesforce")["bookings"] == []


def test_composite_limits_and_unresolved_references(sb: Sandbox) -> None:
    query = {"method": "GET", "url": f"{V}/query/?q=SELECT+Id+FROM+Event"}
    too_many = _composite(sb, [{**query, "referenceId": f"q{i}"} for i in range(6)])
    assert too_many.status_code == 400 and too_many.json()[0]["errorCode"] == "LIMIT_EXCEEDED"
    dangling = _composite(
        sb,
        [{"method": "POST", "url": f"{V}/sobjects/Event/", "referenceId": "e", "body": {**EVENT, "WhoId": "@{x.id}"}}],
        False,
    )
    [answer] = dangling.json()["compositeResponse"]
    assert answer["httpStatusCode"] == 400 and "x.id" in answer["body"][0]["message"]
    lead = _composite(
        sb, [{"method": "POST", "url": f"{V}/sobjects/Lead/", "referenceId": "l", "body": {"LastName": "Q"}}]
    )
    assert lead.json()["compositeResponse"][0]["body"][0]["errorCode"] == "REQUIRED_FIELD_MISSING"  # Company


def test_business_hours_are_queryable_and_staff_actions_change_the_org(sb: Sandbox) -> None:
    [hours] = _soql(
        sb, "SELECT Name, MondayStartTime, SaturdayStartTime FROM BusinessHours WHERE IsDefault = true"
    ).json()["records"]
    assert (hours["Name"], hours["MondayStartTime"], hours["SaturdayStartTime"]) == ("Default", "08:00:00.000Z", None)
    start = dt.datetime(2037, 3, 9, 9, tzinfo=NY)
    blocked = org(sb).block_time(start, start + dt.timedelta(hours=1), "Lunch")
    record = org(sb).record(blocked)
    assert record is not None and record["ShowAs"] == "Busy" and record["WhoId"] is None
    org(sb).staff_move(blocked, start + dt.timedelta(hours=2), start + dt.timedelta(hours=3))
    moved = org(sb).record(blocked)
    assert moved is not None and moved["StartDateTime"] == "2037-03-09T15:00:00.000+0000"
    org(sb).staff_cancel(blocked)
    assert blocked in sb.state("salesforce")["deleted"]
