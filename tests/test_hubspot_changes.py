"""HubSpot's change feed and webhook events against the sandbox: staff moves, cancels and deletes
seen once each, window edges under the search index's lag, HubSpot's 10,000-result cap, the
webhook bodies the emulator builds, and the requests checked by hand against HubSpot's spec
collection (HubSpot/HubSpot-public-api-spec-collection,
``PublicApiSpecs/CRM/Meetings/Rollouts/424/v3/meetings.json``).

Time is the test's: the emulator's wall clock (record stamps) and its index clock (search lag)
are replaced by counters the test moves, and ``now`` is passed to ``observe_changes``; nothing
sleeps or depends on timing.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from pms_integration import PMSClient
from pms_integration.changes import FeedPage, Observed
from pms_integration.errors import ValidationError, WebhookPayloadError
from pms_integration.models import AppointmentStatus
from pms_integration.provider import Capability
from pms_integration.providers import hubspot_changes
from pms_integration.providers.hubspot import HubSpotAdapter
from pms_integration.sandbox import Sandbox
from pms_integration.sandbox.hubspot import HubSpotEmulator

from ._hubspot_support import sandbox_client, sandbox_emulator

UTC = dt.timezone.utc
T0 = dt.datetime(2030, 3, 1, 12, 0, tzinfo=UTC)
JANE = {"name": "Jane Doe", "email": "jane.doe@example.com", "phone": "+15555550123"}

#: From the spec collection's meetings.json (v3): the search body's fields
#: (PublicObjectSearchRequest), the list's and the read's query parameters.
SEARCH_FIELDS = {"after", "filterGroups", "limit", "properties", "sorts", "query"}
LIST_PARAMS = {"after", "archived", "associations", "limit", "properties", "propertiesWithHistory"}
READ_PARAMS = {"archived", "associations", "idProperty", "properties", "propertiesWithHistory"}
OPERATORS = {"EQ", "NEQ", "LT", "LTE", "GT", "GTE", "BETWEEN", "IN", "NOT_IN", "HAS_PROPERTY", "NOT_HAS_PROPERTY"}


class Clock:
    """The emulator's two clocks, moved by the test: wall time (stamps) and index time (lag)."""

    def __init__(self, start: dt.datetime) -> None:
        self.now = start

    def wall(self) -> dt.datetime:
        return self.now

    def mono(self) -> float:
        return self.now.timestamp()

    def advance(self, seconds: float) -> dt.datetime:
        self.now += dt.timedelta(seconds=seconds)
        return self.now


@pytest.fixture
def clock(sb: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Clock:
    emulator = sandbox_emulator(sb)
    fake = Clock(T0)
    monkeypatch.setattr(emulator, "wall_clock", fake.wall)
    monkeypatch.setattr(emulator, "clock", fake.mono)
    monkeypatch.setattr(emulator, "search_lag", 0.0)
    monkeypatch.setattr(emulator, "search_rate", None)
    monkeypatch.setattr(emulator, "burst_limit", None)
    return fake


def adapter_of(client: PMSClient) -> HubSpotAdapter:
    adapter = client.adapter("hubspot")
    assert isinstance(adapter, HubSpotAdapter)
    return adapter


def book(client: PMSClient, reference: str, start: str = "2030-03-05T10:00:00-05:00") -> str:
    request = {
        "start": start,
        "duration_minutes": 45,
        "timezone": "America/New_York",
        "title": "Cleaning",
        "patient": JANE,
        "reference": reference,
    }
    return client.book_appointment(request, provider="hubspot").id


class Consumer:
    """What the core does with a page, reduced to the contract: drop what was seen (by
    appointment id and version), keep the position."""

    def __init__(self, adapter: HubSpotAdapter, now: dt.datetime) -> None:
        self.adapter = adapter
        self.seen: set[tuple[str, str]] = set()
        page = adapter.observe_changes(None, now)
        assert page.observed == ()
        self.position: dict[str, Any] = page.position

    def poll(self, now: dt.datetime) -> list[Observed]:
        page = self.adapter.observe_changes(json.loads(json.dumps(self.position)), now)  # JSON-able
        assert isinstance(page, FeedPage)
        self.position = page.position
        fresh = [o for o in page.observed if (o.appointment_id, o.version) not in self.seen]
        self.seen |= {(o.appointment_id, o.version) for o in fresh}
        return fresh


def test_hubspot_declares_the_change_capabilities(sb: Sandbox) -> None:
    adapter = adapter_of(sandbox_client(sb))
    assert {Capability.CHANGES, Capability.WEBHOOKS} <= adapter.capabilities


def test_a_new_feed_starts_now_and_reads_nothing(sb: Sandbox, clock: Clock) -> None:
    client = sandbox_client(sb)
    book(client, "HS-CH-0")
    count = len(sb.records)
    page = adapter_of(client).observe_changes(None, clock.now)
    assert page.observed == () and len(sb.records) == count  # no request at all
    assert page.position["start"] == int(T0.timestamp() * 1000)
    with pytest.raises(ValidationError):
        adapter_of(client).observe_changes({"start": "soon"}, clock.now)


def test_staff_move_cancel_and_delete_are_each_seen_once(sb: Sandbox, clock: Clock) -> None:
    client = sandbox_client(sb)
    booking_id = book(client, "HS-CH-1")
    other_id = book(client, "HS-CH-2", "2030-03-05T13:00:00-05:00")
    feed = Consumer(adapter_of(client), clock.advance(1))

    new_start = dt.datetime(2030, 3, 5, 16, 0, tzinfo=UTC)
    clock.advance(5)
    sb.staff_move("hubspot", booking_id, new_start, new_start + dt.timedelta(minutes=45))
    moved = feed.poll(clock.advance(5))
    assert [o.appointment_id for o in moved] == [booking_id]
    appointment = moved[0].appointment
    assert appointment is not None and appointment.start == new_start and appointment.reference == "HS-CH-1"
    assert moved[0].modified_at == T0 + dt.timedelta(seconds=6) and not moved[0].deleted

    clock.advance(5)
    sb.staff_cancel("hubspot", booking_id)
    cancelled = feed.poll(clock.advance(5))
    assert [o.appointment_id for o in cancelled] == [booking_id]
    assert cancelled[0].appointment is not None and cancelled[0].appointment.status is AppointmentStatus.CANCELLED

    clock.advance(5)
    sb.staff_delete("hubspot", other_id)
    deleted = feed.poll(clock.advance(5))
    assert [(o.appointment_id, o.deleted) for o in deleted] == [(other_id, True)]
    assert deleted[0].appointment is not None and deleted[0].appointment.reference == "HS-CH-2"

    # the next polls overlap the last minute: everything again, nothing new
    assert feed.poll(clock.advance(5)) == []
    assert feed.poll(clock.advance(120)) == []


def test_a_change_the_index_shows_late_is_read_by_the_next_poll(sb: Sandbox, clock: Clock) -> None:
    """Changes stamped just before and exactly at a poll's ``now``, indexed only after it."""
    client = sandbox_client(sb)
    emulator = sandbox_emulator(sb)
    first, second = book(client, "HS-CH-3"), book(client, "HS-CH-4", "2030-03-05T14:00:00-05:00")
    feed = Consumer(adapter_of(client), clock.advance(1))
    emulator.search_lag = 20.0  # the index shows a write 20 s after it

    clock.advance(10)
    at = dt.datetime(2030, 3, 6, 15, 0, tzinfo=UTC)
    sb.staff_move("hubspot", first, at, at + dt.timedelta(minutes=30))
    poll_at = clock.advance(5)
    sb.staff_cancel("hubspot", second)  # stamped exactly at the poll's now
    assert feed.poll(poll_at) == []  # neither is in the index yet
    assert feed.poll(clock.advance(10)) == []  # still not
    seen = feed.poll(clock.advance(30))  # both indexed now; the window reaches back to them
    assert sorted(o.appointment_id for o in seen) == sorted([first, second])
    assert feed.poll(clock.advance(30)) == []  # inside the overlap again: nothing new
    assert feed.poll(clock.advance(600)) == []


def test_changes_before_the_feed_started_are_not_reported(sb: Sandbox, clock: Clock) -> None:
    client = sandbox_client(sb)
    booking_id = book(client, "HS-CH-5")
    at = dt.datetime(2030, 3, 7, 15, 0, tzinfo=UTC)
    sb.staff_move("hubspot", booking_id, at, at + dt.timedelta(minutes=30))
    feed = Consumer(adapter_of(client), clock.advance(2))  # within the lag margin of the move
    assert feed.poll(clock.advance(1)) == []


def test_more_results_than_hubspots_cap_advance_the_window(
    sb: Sandbox, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HubSpot stops paging one query at 10,000 results: the feed starts a new query from the
    last modification time read (ties read twice, dropped) - shown with a cap of 6 in pages of 2."""
    monkeypatch.setattr(hubspot_changes, "SEARCH_PAGE", 2)
    monkeypatch.setattr(hubspot_changes, "SEARCH_CAP", 6)
    client = sandbox_client(sb)
    emulator = sandbox_emulator(sb)
    feed = Consumer(adapter_of(client), clock.advance(1))
    made = []
    for i in range(17):
        if i % 3 == 0:
            clock.advance(0.001)  # three meetings share each millisecond
        start = dt.datetime(2030, 3, 8, 9, 0, tzinfo=UTC) + dt.timedelta(hours=i)
        made.append(emulator.block_time(start, start + dt.timedelta(minutes=30), f"Block {i}"))
    before = len(sb.records)
    seen = feed.poll(clock.advance(1))
    assert sorted(o.appointment_id for o in seen) == sorted(made)  # blocks have no deal: the meeting id
    searches = [r for r in list(sb.records)[before:] if r.operation == "meetings.search"]
    assert len(searches) > 17 // 2  # several queries, each within the cap
    assert feed.poll(clock.advance(1)) == []


def test_a_long_backlog_is_read_over_several_polls(sb: Sandbox, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hubspot_changes, "SEARCH_PAGE", 2)
    monkeypatch.setattr(hubspot_changes, "SEARCH_CAP", 4)
    monkeypatch.setattr(hubspot_changes, "MAX_PER_POLL", 4)
    client = sandbox_client(sb)
    emulator = sandbox_emulator(sb)
    feed = Consumer(adapter_of(client), clock.advance(1))
    made = []
    for i in range(10):
        clock.advance(0.001)
        start = dt.datetime(2030, 3, 9, 9, 0, tzinfo=UTC) + dt.timedelta(hours=i)
        made.append(emulator.block_time(start, start + dt.timedelta(minutes=30)))
    seen: list[str] = []
    for _ in range(6):
        seen += [o.appointment_id for o in feed.poll(clock.advance(1))]
    assert sorted(seen) == sorted(made)


def test_with_an_owner_only_the_owners_meetings_are_the_calendar(
    sb: Sandbox, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator = sandbox_emulator(sb)
    monkeypatch.setattr(emulator, "owner_id", "7001")
    client = sandbox_client(sb)  # PMS_HUBSPOT_OWNER_ID=7001 from the sandbox's environment
    feed = Consumer(adapter_of(client), clock.advance(1))
    clock.advance(1)
    mine = book(client, "HS-OWN-1")  # the library assigns its bookings to the owner
    emulator.seed("meetings", {"hs_timestamp": "1900000000000", "hubspot_owner_id": "7002"})  # another user's
    seen = feed.poll(clock.advance(1))
    assert [o.appointment_id for o in seen] == [mine]


def test_the_date_versioned_api_reads_the_same_changes(sb: Sandbox, clock: Clock) -> None:
    client = sandbox_client(sb, PMS_HUBSPOT_API_VERSION="2026-09")
    booking_id = book(client, "HS-DATED-1")
    feed = Consumer(adapter_of(client), clock.advance(1))
    clock.advance(1)
    sb.staff_cancel("hubspot", booking_id)
    sb.staff_delete("hubspot", book(client, "HS-DATED-2", "2030-03-05T15:00:00-05:00"))
    seen = feed.poll(clock.advance(1))
    assert {(o.appointment_id == booking_id, o.deleted) for o in seen} == {(True, False), (False, True)}
    paths = {r.path.split("?")[0] for r in sb.records if r.operation.startswith("meetings.")}
    assert paths and all(p.startswith("/crm/objects/2026-09/meetings") for p in paths)


# ---------------------------------------------------------------------------------------------
# webhooks


def bodies(emulator: HubSpotEmulator, since: int) -> list[list[dict[str, Any]]]:
    return emulator.webhook_payloads(since)


def test_webhook_bodies_follow_hubspots_generic_event_format(sb: Sandbox, clock: Clock) -> None:
    client = sandbox_client(sb)
    emulator = sandbox_emulator(sb)
    booking_id = book(client, "HS-WH-1")
    created = bodies(emulator, 0)
    assert len(created) == emulator.changes_recorded == 1
    (event,) = created[0]
    assert event["subscriptionType"] == "object.creation" and event["objectTypeId"] == "0-47"
    assert event["objectId"] == int(booking_id.split(":")[1]) and event["changeSource"] == "INTEGRATION"
    for field in ("eventId", "subscriptionId", "portalId", "appId", "occurredAt", "attemptNumber"):
        assert isinstance(event[field], int)

    at = dt.datetime(2030, 3, 5, 18, 0, tzinfo=UTC)
    sb.staff_move("hubspot", booking_id, at, at + dt.timedelta(minutes=45))
    sb.staff_cancel("hubspot", booking_id)
    emulator.staff_delete(booking_id)
    move, cancel, delete = bodies(emulator, 1)
    assert {e["propertyName"] for e in move} == {"hs_timestamp", "hs_meeting_start_time", "hs_meeting_end_time"}
    assert {e["propertyValue"] for e in move} >= {str(int(at.timestamp() * 1000))}  # date-times in epoch ms
    assert all(e["subscriptionType"] == "object.propertyChange" and e["changeSource"] == "CRM_UI" for e in move)
    assert [(e["propertyName"], e["propertyValue"]) for e in cancel] == [("hs_meeting_outcome", "CANCELED")]
    assert [e["subscriptionType"] for e in delete] == ["object.deletion"]
    ids = [e["eventId"] for body in bodies(emulator, 0) for e in body]
    assert len(set(ids)) == len(ids) and bodies(emulator, 0) == bodies(emulator, 0)  # stable on redelivery
    assert bodies(emulator, emulator.changes_recorded) == []


def test_webhook_events_become_one_observation_per_meeting(sb: Sandbox, clock: Clock) -> None:
    client = sandbox_client(sb)
    emulator = sandbox_emulator(sb)
    adapter = adapter_of(client)
    booking_id = book(client, "HS-WH-2")
    (creation,) = adapter.observe_webhook(bodies(emulator, 0)[0])
    assert creation.appointment_id == booking_id and creation.created_at == T0 and not creation.deleted
    assert creation.appointment is not None and creation.appointment.reference == "HS-WH-2"

    clock.advance(30)
    at = dt.datetime(2030, 3, 5, 19, 0, tzinfo=UTC)
    sb.staff_move("hubspot", booking_id, at, at + dt.timedelta(minutes=45))
    move = bodies(emulator, 1)[0]
    (moved,) = adapter.observe_webhook(move)  # three property events, one meeting
    assert moved.version == str(max(e["eventId"] for e in move))
    assert moved.modified_at == T0 + dt.timedelta(seconds=30)
    assert moved.appointment is not None and moved.appointment.start == at

    sb.staff_cancel("hubspot", booking_id)
    (cancelled,) = adapter.observe_webhook(bodies(emulator, 2)[0])
    assert cancelled.appointment is not None and cancelled.appointment.status is AppointmentStatus.CANCELLED

    emulator.staff_delete(booking_id)
    (deleted,) = adapter.observe_webhook(bodies(emulator, 3)[0])
    assert deleted.deleted and deleted.appointment_id == booking_id and deleted.appointment is not None

    # an event about a meeting deleted before it was read: reported as deleted
    (late,) = adapter.observe_webhook(move)
    assert late.deleted and late.appointment_id == booking_id


def test_other_objects_events_are_ignored_and_malformed_bodies_refused(sb: Sandbox, clock: Clock) -> None:
    adapter = adapter_of(sandbox_client(sb))
    contact = {
        "eventId": 1, "subscriptionId": 2, "portalId": 3, "appId": 4, "occurredAt": 1_900_000_000_000,
        "subscriptionType": "object.propertyChange", "attemptNumber": 0, "objectId": 123,
        "propertyName": "firstname", "propertyValue": "Jo", "changeSource": "CRM_UI", "objectTypeId": "0-1",
    }  # fmt: skip
    assert adapter.observe_webhook([contact, {**contact, "subscriptionType": "contact.creation"}]) == []
    for bad in ({"not": "events"}, "text", [1], [{**contact, "objectTypeId": "0-47", "objectId": "x"}]):
        with pytest.raises(WebhookPayloadError) as caught:
            adapter.observe_webhook(bad)
        assert "objectId" not in str(caught.value)  # the detail is logged, not told


# ---------------------------------------------------------------------------------------------
# the requests, by hand against HubSpot's spec collection


@pytest.fixture
def sent(sb: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, str, Any]]]:
    found: list[tuple[str, str, Any]] = []
    dispatch = sb._dispatch

    def recording(method: str, target: str, headers: Any, body: bytes) -> Any:
        found.append((method, target, json.loads(body) if body else None))
        return dispatch(method, target, headers, body)

    monkeypatch.setattr(sb, "_dispatch", recording)
    yield found


def test_the_feed_and_webhook_requests_match_the_spec(
    sb: Sandbox, clock: Clock, sent: list[tuple[str, str, Any]]
) -> None:
    client = sandbox_client(sb)
    emulator = sandbox_emulator(sb)
    booking_id = book(client, "HS-SPEC-1")
    other_id = book(client, "HS-SPEC-2", "2030-03-05T15:00:00-05:00")
    feed = Consumer(adapter_of(client), clock.advance(1))
    clock.advance(1)
    sb.staff_cancel("hubspot", booking_id)
    emulator.staff_delete(other_id)
    del sent[:]
    assert len(feed.poll(clock.advance(1))) == 2
    adapter_of(client).observe_webhook(emulator.webhook_payloads(2)[0])
    kinds = set()
    for method, target, body in sent:
        parts = urlsplit(target)
        path, query = parts.path.removeprefix("/hubspot"), parse_qs(parts.query)
        if method == "POST" and path == "/crm/v3/objects/meetings/search":
            kinds.add("search")
            assert set(body) <= SEARCH_FIELDS and body["limit"] <= 200
            assert body["sorts"] == ["hs_lastmodifieddate"]  # the spec types sorts as strings
            filters = body["filterGroups"][0]["filters"]
            assert filters[0]["propertyName"] == "hs_lastmodifieddate" and filters[0]["operator"] == "GTE"
            assert all(f["operator"] in OPERATORS for f in filters) and filters[0]["value"].isdigit()
        elif method == "GET" and path == "/crm/v3/objects/meetings":
            kinds.add("archived list")
            assert set(query) <= LIST_PARAMS and query["archived"] == ["true"] and int(query["limit"][0]) <= 100
        elif method == "GET" and path.startswith("/crm/v3/objects/meetings/"):
            kinds.add("read")
            assert set(query) <= READ_PARAMS and path.rsplit("/", 1)[1].isdigit()
        elif method == "POST" and path == "/crm/v4/associations/meetings/deals/batch/read":
            kinds.add("associations")
            assert all(set(i) <= {"id", "after"} for i in body["inputs"])
        else:
            raise AssertionError(f"unexpected request {method} {target}")
    assert kinds == {"search", "archived list", "read", "associations"}


# ---------------------------------------------------------------------------------------------
# through the client: the feed across a restart, and signed webhooks


def state_client(sb: Sandbox, url: str) -> PMSClient:
    return sandbox_client(sb, PMS_STATE_URL=url)


@pytest.fixture
def live(sb: Sandbox, monkeypatch: pytest.MonkeyPatch) -> HubSpotEmulator:
    """Real time (the client's ``now`` is the clock's) with the lag and the limits off."""
    emulator = sandbox_emulator(sb)
    monkeypatch.setattr(emulator, "search_lag", 0.0)
    monkeypatch.setattr(emulator, "search_rate", None)
    monkeypatch.setattr(emulator, "burst_limit", None)
    return emulator


def test_staff_changes_reach_changes_once_each_across_a_restart(
    sb: Sandbox, live: HubSpotEmulator, tmp_path: Any
) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    first = state_client(sb, url)
    assert len(first.changes(provider="hubspot", feed="desk")) == 0  # the feed starts now
    booking_id = book(first, "HS-E2E-1")
    (made,) = first.changes(provider="hubspot", feed="desk")
    assert (made.kind.value, made.appointment_id, made.by_library) == ("created", booking_id, True)
    at = dt.datetime(2030, 3, 5, 16, 0, tzinfo=UTC)
    sb.staff_move("hubspot", booking_id, at, at + dt.timedelta(minutes=45))
    (moved,) = first.changes(provider="hubspot", feed="desk")
    assert (moved.kind.value, moved.appointment_id, moved.by_library) == ("rescheduled", booking_id, True)
    assert moved.appointment is not None and moved.appointment.start == at and moved.source == "feed"
    first.close()

    restarted = state_client(sb, url)  # a new consumer on the same store resumes the named feed
    sb.staff_cancel("hubspot", booking_id)
    assert [c.kind.value for c in restarted.changes(provider="hubspot", feed="desk")] == ["cancelled"]
    live.staff_delete(booking_id)
    assert [c.kind.value for c in restarted.changes(provider="hubspot", feed="desk")] == ["deleted"]
    assert len(restarted.changes(provider="hubspot", feed="desk")) == 0
    restarted.close()


def test_signed_webhooks_report_a_staff_move_and_cancel_once(sb: Sandbox, live: HubSpotEmulator, tmp_path: Any) -> None:
    from pms_integration.errors import WebhookReplayError

    url = f"sqlite:///{tmp_path / 'state.db'}"
    client = state_client(sb, url)
    booking_id = book(client, "HS-E2E-2")
    target = "https://receptionist.example/api/integrations/pms/hubspot/webhook"
    got: list[str] = []
    refused: list[str] = []

    def deliver(to: str, headers: Any, body: bytes) -> int:
        try:
            with client.parse_webhook("hubspot", method="POST", url=to, headers=headers, body=body) as changes:
                got.extend(f"{c.kind.value}:{c.appointment_id}" for c in changes)
        except WebhookReplayError:
            refused.append("replay")
        return 200

    sb.deliver_webhooks("hubspot", target, send=deliver)  # the booking's own creation
    assert got == [f"created:{booking_id}"]
    at = dt.datetime(2030, 3, 5, 17, 0, tzinfo=UTC)
    sb.staff_move("hubspot", booking_id, at, at + dt.timedelta(minutes=45))
    sb.deliver_webhooks("hubspot", target, send=deliver)  # HubSpot posts within seconds of each change
    sb.staff_cancel("hubspot", booking_id)
    sb.deliver_webhooks("hubspot", target, send=deliver)
    assert got[1:] == [f"rescheduled:{booking_id}", f"cancelled:{booking_id}"]
    sb.deliver_webhooks("hubspot", target, since=0, send=deliver)  # HubSpot retries: same event ids
    assert len(got) == 3 and refused == ["replay"] * 3

    # the feed, started before, then sees nothing the webhooks did not already report
    restarted = state_client(sb, url)
    assert len(restarted.changes(since=dt.datetime.now(UTC) - dt.timedelta(minutes=5), provider="hubspot")) == 0
    client.close()
    restarted.close()


def test_a_change_reported_by_a_webhook_is_not_reported_again_by_the_feed(
    sb: Sandbox, live: HubSpotEmulator, tmp_path: Any
) -> None:
    """HubSpot's ``occurredAt`` need not equal the record's ``hs_lastmodifieddate``: the
    webhook's observation carries the record's own time, as the feed reads it."""
    client = state_client(sb, f"sqlite:///{tmp_path / 'state.db'}")
    assert len(client.changes(provider="hubspot", feed="desk")) == 0
    booking_id = book(client, "HS-E2E-3")
    since = live.changes_recorded
    at = dt.datetime(2030, 3, 5, 18, 0, tzinfo=UTC)
    sb.staff_move("hubspot", booking_id, at, at + dt.timedelta(minutes=45))
    (body,) = live.webhook_payloads(since)
    body = [{**event, "occurredAt": event["occurredAt"] - 700} for event in body]  # stamped earlier
    target = "https://receptionist.example/api/integrations/pms/hubspot/webhook"
    raw = json.dumps(body).encode()
    changes = client.parse_webhook("hubspot", method="POST", url=target, headers=sb.sign_webhook("hubspot", target, raw), body=raw)
    assert [c.kind.value for c in changes] == ["rescheduled"]
    changes.commit()  # handled
    assert [c.kind.value for c in client.changes(provider="hubspot", feed="desk")] == []
    client.close()


def test_a_thousand_changes_over_ten_polls_on_the_window_edges(
    sb: Sandbox, clock: Clock, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """100 meetings each moved once between every two polls (1,000 moves), some stamped exactly
    at a poll's ``now`` or a millisecond before it, the index 5 s behind: through
    ``PMSClient.changes`` on a named feed, each move is reported once, none twice."""
    emulator = sandbox_emulator(sb)
    client = state_client(sb, f"sqlite:///{tmp_path / 'state.db'}")
    monkeypatch.setattr(client, "_utcnow", clock.wall)
    base = dt.datetime(2030, 4, 1, 9, 0, tzinfo=UTC)
    meetings = [
        emulator.block_time(base + dt.timedelta(hours=i), base + dt.timedelta(hours=i, minutes=30)) for i in range(100)
    ]
    emulator.search_lag = 5.0
    clock.advance(1)  # the feed starts after the meetings were made
    assert len(client.changes(provider="hubspot", feed="edges")) == 0
    reported: list[str] = []
    expected: list[str] = []
    for round_ in range(10):
        poll_at = clock.now + dt.timedelta(seconds=10)
        for i, meeting in enumerate(meetings):
            # spread over the interval; every tenth exactly on the poll, every tenth 1 ms before it
            offset = {0: 0.0, 1: -0.001}.get(i % 10, -10 + i * 0.09)
            clock.now = poll_at + dt.timedelta(seconds=offset)
            start = base + dt.timedelta(days=round_ + 1, hours=i)
            sb.staff_move("hubspot", meeting, start, start + dt.timedelta(minutes=30))
            expected.append(f"{meeting}@{int(clock.now.timestamp() * 1000)}")
        clock.now = poll_at
        reported += [c.event_id for c in client.changes(provider="hubspot", feed="edges")]
    for _ in range(3):  # the index catches up; the window's overlap is read again
        clock.advance(30)
        reported += [c.event_id for c in client.changes(provider="hubspot", feed="edges")]
    assert len(reported) == len(set(reported)) == 1000
    assert sorted(reported) == sorted(expected)
    client.close()
