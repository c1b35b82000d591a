"""The Salesforce change feed (issue 18): getUpdated/getDeleted on Event, against the sandbox org.

The org's clock is set by each test (``org.clock``), so minute edges and the 30-day / 15-day
windows are crossed without waiting. ``Feed`` below polls the adapter the way the core does
(position in, position out) and drops what it already saw by (id, version), as the core's
de-duplication does: a change must come out exactly once, however the polls fall.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import re
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import pytest
import requests
import responses

from pms_integration import PMSClient
from pms_integration.changes import FeedPage, Observed
from pms_integration.errors import APIError, InvalidRequestError, UnexpectedResponseError, UnsupportedOperationError
from pms_integration.models import AppointmentStatus
from pms_integration.provider import Capability
from pms_integration.providers import salesforce_changes
from pms_integration.providers.salesforce import SalesforceAdapter
from pms_integration.sandbox import Sandbox
from pms_integration.sandbox.salesforce import SalesforceEmulator, salesforce_id

from ._salesforce_support import API, adapter, sf_error
from .conftest import sent_targets

UTC = dt.timezone.utc
NY = ZoneInfo("America/New_York")
T0 = dt.datetime(2030, 3, 1, 12, 0, 0, tzinfo=UTC)
DAY = dt.date(2030, 3, 4)
QUERY_SHAPE = Path(__file__).resolve().parent / "vendor_specs" / "salesforce" / "rest" / "query.json"


class OrgClock:
    """The org's clock and the poller's (the same instant: no skew unless a test adds one)."""

    def __init__(self, start: dt.datetime = T0) -> None:
        self.now = start

    def __call__(self) -> dt.datetime:
        return self.now

    def tick(self, **delta: float) -> dt.datetime:
        self.now += dt.timedelta(**delta)
        return self.now


class Feed:
    """Polls ``observe_changes`` and keeps what is new by (id, version), like the core."""

    def __init__(self, adapter: SalesforceAdapter, clock: OrgClock) -> None:
        self.adapter, self.clock = adapter, clock
        self.position: dict[str, Any] = adapter.observe_changes(None, clock()).position
        self.seen: set[tuple[str, str]] = set()
        self.polls = 0

    def poll(self) -> list[Observed]:
        page = self.adapter.observe_changes(self.position, self.clock())
        assert isinstance(page, FeedPage)
        json.dumps(page.position)  # the core keeps it inside a JSON cursor
        self.position, self.polls = page.position, self.polls + 1
        new = [o for o in page.observed if (o.appointment_id, o.version) not in self.seen]
        self.seen.update((o.appointment_id, o.version) for o in new)
        return new


def org(sb: Sandbox) -> SalesforceEmulator:
    return cast(SalesforceEmulator, sb.emulator("salesforce"))


def at(hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(DAY.year, DAY.month, DAY.day, hour, minute, tzinfo=NY)


def booking(reference: str, start: dt.datetime) -> dict[str, Any]:
    return {
        "start": start.isoformat(),
        "duration_minutes": 30,
        "timezone": "America/New_York",
        "title": "Cleaning",
        "patient": {"name": "Ann Lee", "email": "ann.lee@example.com"},
        "reference": reference,
    }


@pytest.fixture
def clock(sb: Sandbox) -> OrgClock:
    c = OrgClock()
    org(sb).clock = c
    return c


@pytest.fixture
def client(sb: Sandbox, clock: OrgClock) -> Any:
    env = {**sb.environ(default_provider="salesforce"), "PMS_SALESFORCE_CONFLICT_CHECK": "off"}
    with PMSClient(environ=env, env_file=None, sleep=lambda s: None) as c:
        yield c


def sf(client: PMSClient) -> SalesforceAdapter:
    return cast(SalesforceAdapter, client.adapter("salesforce"))


# ---------------------------------------------------------------------------------------------
# the emulator: SystemModstamp, the delete log, the two resources


def api(sb: Sandbox, path: str, **params: str) -> tuple[int, Any]:
    url = f"{sb.base_url('salesforce')}/services/data/v67.0{path}"
    resp = requests.get(url, params=params, headers={"Authorization": f"Bearer {org(sb).token}"}, timeout=10)
    return resp.status_code, resp.json()


def test_every_event_change_stamps_systemmodstamp_and_deletes_enter_the_log(
    sb: Sandbox, client: PMSClient, clock: OrgClock
) -> None:
    booked = client.book_appointment(booking("ref-stamp", at(9)))
    assert org(sb).record(booked.id)["SystemModstamp"] == "2030-03-01T12:00:00.000+0000"
    clock.tick(seconds=65)
    client.update_appointment(booked.id, {"title": "Check-up"})
    assert org(sb).record(booked.id)["SystemModstamp"] == "2030-03-01T12:01:05.000+0000"
    clock.tick(seconds=10)
    org(sb).staff_move(booked.id, at(10), at(10, 30))
    assert org(sb).record(booked.id)["SystemModstamp"] == "2030-03-01T12:01:15.000+0000"
    clock.tick(seconds=10)
    org(sb).staff_delete(booked.id)
    record = org(sb).record(booked.id)
    assert record["IsDeleted"] is True and record["SystemModstamp"] == "2030-03-01T12:01:25.000+0000"
    assert org(sb).store.delete_log == [(booked.id, "Event", clock())]


def test_get_updated_and_get_deleted_answer_in_salesforces_shapes(
    sb: Sandbox, client: PMSClient, clock: OrgClock
) -> None:
    kept = client.book_appointment(booking("ref-kept", at(9)))
    gone = client.book_appointment(booking("ref-gone", at(11)))
    clock.tick(minutes=2, seconds=30)
    org(sb).staff_delete(gone.id)
    window = {"start": "2030-03-01T11:59:45+00:00", "end": "2030-03-01T12:10:00+00:00"}
    status, body = api(sb, "/sobjects/Event/updated/", **window)
    # seconds dropped; a deleted record is not "updated"; nothing after the org's minute is covered
    assert (status, body) == (200, {"ids": [kept.id], "latestDateCovered": "2030-03-01T12:02:00.000+0000"})
    status, body = api(sb, "/sobjects/Event/deleted/", **window)
    assert status == 200
    assert body == {
        "deletedRecords": [{"id": gone.id, "deletedDate": "2030-03-01T12:02:30.000+0000"}],
        "earliestDateAvailable": "2030-02-14T12:02:00.000+0000",
        "latestDateCovered": "2030-03-01T12:02:00.000+0000",
    }
    # both ends read to the minute and included ("Polling for Changes", SOAP API guide)
    clock.now = T0.replace(minute=3)
    org(sb).staff_edit(kept.id, Subject="Moved by phone")  # stamped 12:03:00 exactly

    def ids(start: str, end: str) -> list[str]:
        return cast(list[str], api(sb, "/sobjects/Event/updated/", start=start, end=end)[1]["ids"])

    assert ids("2030-03-01T12:02:10Z", "2030-03-01T12:03:45Z") == [kept.id]  # stamp == end
    assert ids("2030-03-01T12:03:59Z", "2030-03-01T12:04:00Z") == [kept.id]  # stamp == start
    assert ids("2030-03-01T12:01:00Z", "2030-03-01T12:02:59Z") == []


@pytest.mark.parametrize(
    ("resource", "start", "code"),
    [
        ("updated", "2030-03-01T12:00:00+00:00", "INVALID_REPLICATION_DATE"),  # start == end
        ("updated", "2030-01-30T11:00:00+00:00", "INVALID_REPLICATION_DATE"),  # older than 30 days
        ("deleted", "2030-02-13T12:00:00+00:00", "INVALID_REPLICATION_DATE"),  # older than 15 days
        ("updated", "yesterday", "INVALID_REPLICATION_DATE"),
    ],
)
def test_the_resources_refuse_bad_windows(sb: Sandbox, clock: OrgClock, resource: str, start: str, code: str) -> None:
    status, body = api(sb, f"/sobjects/Event/{resource}/", start=start, end="2030-03-01T12:00:30+00:00")
    assert status == 400 and body[0]["errorCode"] == code


def test_a_rolled_back_composite_leaves_no_delete_in_the_log(sb: Sandbox, client: PMSClient) -> None:
    booked = client.book_appointment(booking("ref-rollback", at(9)))
    saved = org(sb).store.save()
    org(sb).staff_delete(booked.id)
    org(sb).store.restore(saved)
    assert org(sb).store.delete_log == [] and org(sb).record(booked.id)["IsDeleted"] is False


# ---------------------------------------------------------------------------------------------
# the adapter: what staff do is seen once


def test_capabilities_feed_yes_webhooks_no(client: PMSClient) -> None:
    adapter = sf(client)
    assert Capability.CHANGES in adapter.capabilities and Capability.WEBHOOKS not in adapter.capabilities
    reason = adapter.unsupported_reason(Capability.WEBHOOKS)
    assert reason is not None and "changes()" in reason
    with pytest.raises(UnsupportedOperationError, match="no simple signed webhook"):
        adapter.observe_webhook({"anything": 1})


def test_a_new_feed_starts_now_and_sends_nothing(sb: Sandbox, client: PMSClient, clock: OrgClock) -> None:
    client.book_appointment(booking("ref-before", at(9)))
    mark = len(sb.records)
    clock.tick(seconds=5)
    page = sf(client).observe_changes(None, clock())
    assert page.observed == () and page.position == {
        "updated": "2030-03-01T12:00:00+00:00",
        "deleted": "2030-03-01T12:00:00+00:00",
    }
    assert len(sb.records) == mark


def test_staff_move_cancel_and_delete_are_each_seen_once(sb: Sandbox, client: PMSClient, clock: OrgClock) -> None:
    a = client.book_appointment(booking("ref-a", at(9)))
    b = client.book_appointment(booking("ref-b", at(10)))
    c = client.book_appointment(booking("ref-c", at(11)))
    clock.tick(seconds=30)
    feed = Feed(sf(client), clock)
    clock.tick(seconds=5)
    org(sb).staff_move(a.id, at(14), at(14, 30))
    org(sb).staff_cancel(b.id)  # Salesforce has no cancelled state: staff delete the Event
    clock.tick(seconds=40)  # into the next minute
    org(sb).staff_delete(c.id)
    found = feed.poll()
    by_id = {o.appointment_id: o for o in found}
    assert set(by_id) == {a.id, b.id, c.id} and len(found) == 3
    moved = by_id[a.id]
    assert moved.appointment is not None and moved.appointment.start == at(14)
    assert moved.appointment.reference == "ref-a" and not moved.deleted
    assert moved.version == "2030-03-01T12:00:35+00:00" and moved.modified_at == T0 + dt.timedelta(seconds=35)
    assert moved.created_at == T0
    for gone, when in ((b, 35), (c, 75)):
        seen = by_id[gone.id]
        assert seen.deleted and seen.version == "deleted"
        assert seen.modified_at == T0 + dt.timedelta(seconds=when)
        # the recycle bin still has it: the appointment as it was, cancelled
        assert seen.appointment is not None and seen.appointment.status is AppointmentStatus.CANCELLED
        assert seen.appointment.reference == gone.reference
    # the overlap re-reads the last minute, polls later find nothing new
    for _ in range(4):
        clock.tick(seconds=25)
        assert feed.poll() == []


def test_library_soft_cancel_reads_as_cancelled_not_deleted(sb: Sandbox, clock: OrgClock) -> None:
    env = {**sb.environ(default_provider="salesforce"), "PMS_SALESFORCE_CANCEL_MODE": "soft"}
    with PMSClient(environ=env, env_file=None, sleep=lambda s: None) as soft:
        booked = soft.book_appointment(booking("ref-soft", at(9)))
        feed = Feed(sf(soft), clock)
        clock.tick(seconds=20)
        soft.cancel_appointment(booked.id)
        (seen,) = feed.poll()
    assert not seen.deleted and seen.appointment is not None
    assert seen.appointment.status is AppointmentStatus.CANCELLED


def test_changes_on_minute_edges_are_never_missed(sb: Sandbox, client: PMSClient, clock: OrgClock) -> None:
    booked = client.book_appointment(booking("ref-edge", at(9)))
    feed = Feed(sf(client), clock)
    clock.now = T0.replace(second=59)
    org(sb).staff_move(booked.id, at(9, 30), at(10))  # 12:00:59
    assert [o.version for o in feed.poll()] == ["2030-03-01T12:00:59+00:00"]
    clock.now = T0.replace(minute=1)  # 12:01:00, the next minute's first second
    org(sb).staff_move(booked.id, at(10), at(10, 30))
    assert [o.version for o in feed.poll()] == ["2030-03-01T12:01:00+00:00"]
    clock.tick(seconds=59)  # 12:01:59, then a poll straddling nothing new
    org(sb).staff_move(booked.id, at(11), at(11, 30))
    clock.tick(seconds=1)
    assert [o.version for o in feed.poll()] == ["2030-03-01T12:01:59+00:00"]
    assert feed.poll() == []


def test_a_commit_stamped_before_the_last_poll_is_still_seen(sb: Sandbox, client: PMSClient, clock: OrgClock) -> None:
    """A long transaction commits late with an earlier SystemModstamp: the overlap catches it."""
    booked = client.book_appointment(booking("ref-late", at(9)))
    feed = Feed(sf(client), clock)
    clock.tick(minutes=3, seconds=10)
    assert [o.appointment_id for o in feed.poll()] == [booked.id]  # 12:03:10: the booking itself
    late = org(sb).store
    clock.now = T0.replace(minute=2, second=50)  # stamped 12:02:50 ...
    org(sb).staff_move(booked.id, at(15), at(15, 30))
    clock.now = T0.replace(minute=3, second=40)  # ... visible from 12:03:40
    assert late.record(booked.id)["SystemModstamp"] == "2030-03-01T12:02:50.000+0000"
    assert [o.version for o in feed.poll()] == ["2030-03-01T12:02:50+00:00"]


def test_many_changes_over_many_polls_none_missed_none_repeated(
    sb: Sandbox, client: PMSClient, clock: OrgClock
) -> None:
    """200 staff changes over 10 polls, many on :00 and :59: each poll reports exactly the
    appointments changed since the one before, each at its latest version."""
    rng = random.Random(18)
    ids = [client.book_appointment(booking(f"ref-many-{n}", at(8 + n % 9, 15 * (n % 4)))).id for n in range(12)]
    clock.tick(seconds=1)
    feed = Feed(sf(client), clock)
    assert {o.appointment_id for o in feed.poll()} == set(ids)  # the bookings (the feed's first minute)
    alive, reported = list(ids), 0
    for _ in range(10):
        current: dict[str, str] = {}
        for _ in range(20):
            # land on :00 and :59 often (the minute edges), elsewhere otherwise
            clock.tick(seconds=rng.choice([1, (59 - clock.now.second) or 60, 60 - clock.now.second, 7, 23]))
            event = rng.choice(alive)
            if rng.random() < 0.05 and len(alive) > 2:
                org(sb).staff_delete(event)
                alive.remove(event)
                current[event] = "deleted"
                continue
            hour = rng.randrange(8, 16)
            org(sb).staff_move(event, at(hour), at(hour, 30))
            current[event] = clock().isoformat()
        found = feed.poll()
        assert sorted((o.appointment_id, o.version) for o in found) == sorted(current.items())
        reported += len(found)
    assert feed.polls == 11 and reported > 50


# ---------------------------------------------------------------------------------------------
# the windows and what is restricted


def test_a_position_older_than_the_windows_is_a_clear_error_before_any_request(
    sb: Sandbox, client: PMSClient, clock: OrgClock
) -> None:
    adapter = sf(client)
    position = adapter.observe_changes(None, clock()).position
    clock.tick(days=14)
    assert adapter.observe_changes(position, clock()).observed == ()  # inside both windows
    clock.tick(days=2)
    mark = len(sb.records)
    with pytest.raises(InvalidRequestError) as caught:
        adapter.observe_changes(position, clock())
    err = caught.value
    assert err.code == "INVALID_REPLICATION_DATE" and err.operation == "changes"
    assert "15 days" in err.message and "Start a new feed" in err.message
    assert len(sb.records) == mark
    clock.tick(days=15)  # 31 days after the updated position
    updated_only = {**position, "deleted": (clock() - dt.timedelta(days=1)).isoformat()}
    with pytest.raises(InvalidRequestError, match="30 days"):
        adapter.observe_changes(updated_only, clock())
    assert len(sb.records) == mark


def test_a_purged_delete_log_is_an_error_not_a_silent_gap(sb: Sandbox, client: PMSClient, clock: OrgClock) -> None:
    feed = Feed(sf(client), clock)
    clock.tick(hours=5)
    org(sb).delete_log_start = clock() - dt.timedelta(hours=2)  # Salesforce purged older entries
    with pytest.raises(InvalidRequestError, match="refused the window"):
        feed.poll()


def test_a_window_with_too_many_ids_is_read_in_halves(sb: Sandbox, client: PMSClient, clock: OrgClock) -> None:
    ids = [client.book_appointment(booking(f"ref-split-{n}", at(9 + n))).id for n in range(5)]
    feed = Feed(sf(client), clock)
    for n, event in enumerate(ids):
        clock.tick(minutes=7)
        org(sb).staff_move(event, at(9 + n, 30), at(10 + n))
    org(sb).replication_id_limit = 2
    found = feed.poll()
    assert sorted(o.appointment_id for o in found) == sorted(ids)
    assert feed.poll() == []


def test_only_the_owners_events_are_reported_and_a_purged_deletion_still_is(
    sb: Sandbox, client: PMSClient, clock: OrgClock
) -> None:
    mine = client.book_appointment(booking("ref-mine", at(9)))
    theirs = client.book_appointment(booking("ref-theirs", at(10)))
    purged = client.book_appointment(booking("ref-purged", at(11)))
    org(sb).records[theirs.id]["OwnerId"] = salesforce_id("005")  # another user's calendar
    feed = Feed(sf(client), clock)
    clock.tick(seconds=10)
    for event in (mine, theirs):
        org(sb).staff_move(event.id, at(13), at(13, 30))
    org(sb).staff_delete(purged.id)
    del org(sb).records[purged.id]  # emptied from the recycle bin: only the delete log knows it
    found = {o.appointment_id: o for o in feed.poll()}
    assert set(found) == {mine.id, purged.id}
    assert found[purged.id].appointment is None and found[purged.id].deleted


def test_the_requests_one_poll_sends(
    sb: Sandbox, client: PMSClient, clock: OrgClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    booked = client.book_appointment(booking("ref-wire", at(9)))
    feed = Feed(sf(client), clock)
    targets = sent_targets(sb, monkeypatch)
    assert [o.appointment_id for o in feed.poll()] == [booked.id]  # made in the feed's first minute
    assert [urlsplit(t).path for t in targets] == [
        "/salesforce/services/data/v67.0/sobjects/Event/updated/",
        "/salesforce/services/data/v67.0/sobjects/Event/deleted/",
        "/salesforce/services/data/v67.0/queryAll/",
    ]
    window = parse_qs(urlsplit(targets[0]).query)
    assert window == {"start": ["2030-03-01T12:00:00+00:00"], "end": ["2030-03-01T12:01:00+00:00"]}
    soql = parse_qs(urlsplit(targets[2]).query)["q"][0]
    assert soql.startswith("SELECT Id, Subject, Description, StartDateTime, EndDateTime, WhoId, ShowAs, OwnerId")
    assert soql.endswith(f"FROM Event WHERE Id IN ('{booked.id}')")
    assert "ann.lee" not in " ".join(targets)
    # the queryAll request has the collection's query shape: GET, the q parameter alone
    shape = json.loads(QUERY_SHAPE.read_text())
    assert shape["method"] == "GET" and [q["key"] for q in shape["queryParams"]] == ["q"]
    assert set(parse_qs(urlsplit(targets[2]).query)) == {"q"}
    pattern = re.escape(shape["url"].split("?")[0].replace("{{_endpoint}}", "")).replace(
        re.escape("{{version}}"), r"\d{2,3}\.\d"
    )
    assert re.fullmatch(pattern.replace("/query/", "/queryAll/"), urlsplit(targets[2]).path.removeprefix("/salesforce"))
    # once the overlap has passed, a poll with nothing changed reads no records
    clock.tick(minutes=5)
    assert feed.poll() == []
    targets.clear()
    clock.tick(minutes=5)
    assert feed.poll() == []
    assert len(targets) == 2


def test_a_large_batch_is_read_two_hundred_ids_at_a_time(sb: Sandbox, client: PMSClient, clock: OrgClock) -> None:
    feed = Feed(sf(client), clock)
    made = [org(sb).block_time(at(8), at(8, 30), f"Blocked {n}") for n in range(450)]
    mark = len(sb.records)
    found = feed.poll()
    assert {o.appointment_id for o in found} == set(made)
    assert [r.operation for r in list(sb.records)[mark:]].count("queryAll") == 3
    assert salesforce_changes.IDS_PER_QUERY == 200


# ---------------------------------------------------------------------------------------------
# through PMSClient.changes (the core classifies what the adapter saw)


def test_through_changes_kinds_and_who_made_them(sb: Sandbox, clock: OrgClock) -> None:
    env = {
        **sb.environ(default_provider="salesforce"),
        "PMS_SALESFORCE_CANCEL_MODE": "soft",
        "PMS_SALESFORCE_CONFLICT_CHECK": "off",
    }
    with PMSClient(environ=env, env_file=None, sleep=lambda s: None, state="memory://") as client:
        client._utcnow = clock  # type: ignore[method-assign]
        cursor = client.changes().cursor
        clock.tick(seconds=5)
        mine = client.book_appointment(booking("ref-kinds", at(9)))
        walk_in = org(sb).block_time(at(11), at(11, 30), "Walk-in")
        clock.tick(seconds=70)
        batch = client.changes(cursor)
        kinds = {c.appointment_id: (c.kind.value, c.by_library) for c in batch}
        assert kinds == {mine.id: ("created", True), walk_in: ("created", False)}
        clock.tick(seconds=5)
        client.cancel_appointment(mine.id)  # soft: the Event stays, marked and free
        org(sb).staff_edit(walk_in, Subject="Walk-in (running late)")
        clock.tick(seconds=5)
        batch = client.changes(batch.cursor)
        kinds = {c.appointment_id: (c.kind.value, c.by_library) for c in batch}
        assert kinds == {mine.id: ("cancelled", True), walk_in: ("updated", False)}
        clock.tick(seconds=5)
        org(sb).staff_delete(walk_in)
        clock.tick(minutes=3)
        batch = client.changes(batch.cursor)
        assert [(c.kind.value, c.appointment_id, c.source) for c in batch] == [("deleted", walk_in, "feed")]
        clock.tick(minutes=3)
        assert len(client.changes(batch.cursor)) == 0


def test_a_position_ahead_of_the_clock_waits_without_asking(sb: Sandbox, client: PMSClient, clock: OrgClock) -> None:
    adapter = sf(client)
    ahead = adapter.observe_changes(None, clock() + dt.timedelta(minutes=10)).position
    mark = len(sb.records)
    page = adapter.observe_changes(ahead, clock())
    assert page.observed == () and page.position == ahead and len(sb.records) == mark


# ---------------------------------------------------------------------------------------------
# answers the sandbox never gives (canned: a real org's edge cases)


def test_a_delete_log_purged_after_the_start_is_an_error_even_when_salesforce_answers() -> None:
    start = {"updated": "2030-03-01T12:00:00+00:00", "deleted": "2030-03-01T12:00:00+00:00"}
    with responses.RequestsMock() as rsps:
        rsps.get(
            f"{API}/sobjects/Event/updated/", json={"ids": [], "latestDateCovered": "2030-03-01T12:05:00.000+0000"}
        )
        rsps.get(
            f"{API}/sobjects/Event/deleted/",
            json={
                "deletedRecords": [],
                "earliestDateAvailable": "2030-03-01T12:03:00.000+0000",
                "latestDateCovered": "2030-03-01T12:05:00.000+0000",
            },
        )
        with pytest.raises(InvalidRequestError, match="delete log now starts at 2030-03-01T12:03"):
            adapter().observe_changes(start, T0 + dt.timedelta(minutes=5))


def test_a_minute_with_too_many_ids_and_an_unreadable_answer_are_typed_errors() -> None:
    start = {"updated": "2030-03-01T12:04:00+00:00", "deleted": "2030-03-01T12:04:00+00:00"}
    with responses.RequestsMock() as rsps:
        limit = sf_error("EXCEEDED_ID_LIMIT", "record limit reached. Narrow the date range.")
        rsps.get(f"{API}/sobjects/Event/updated/", json=limit, status=400)
        with pytest.raises(APIError) as caught:
            adapter().observe_changes(start, T0.replace(minute=4, second=30))  # one minute: no halves left
        assert caught.value.code == "EXCEEDED_ID_LIMIT" and len(rsps.calls) == 1
    with responses.RequestsMock() as rsps:
        rsps.get(f"{API}/sobjects/Event/updated/", json={"records": []})
        with pytest.raises(UnexpectedResponseError, match="no ids list"):
            adapter().observe_changes(start, T0.replace(minute=4, second=30))
