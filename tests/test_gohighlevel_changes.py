"""GoHighLevel's changes: the feed (``observe_changes`` over ``GET /calendars/events``), the
webhook bodies (``observe_webhook``) and the emulator's change log and ``webhook_payloads``.

The adapter is driven directly with the ``now`` each poll names, against the sandbox (whose
record stamps a test can pin with ``store.clock``), so window edges are exact and nothing waits.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast
from zoneinfo import ZoneInfo

import pytest

from pms_integration import PMSClient
from pms_integration.changes import ChangeKind, FeedPage, Observed
from pms_integration.errors import UnsupportedOperationError, WebhookPayloadError
from pms_integration.models import AppointmentStatus
from pms_integration.provider import Capability
from pms_integration.providers import gohighlevel_changes as feed
from pms_integration.providers.gohighlevel_v2 import GoHighLevelV2Adapter
from pms_integration.sandbox import Sandbox
from pms_integration.sandbox.gohighlevel import GoHighLevelEmulator
from tests import _gohighlevel_support as support
from tests._gohighlevel_support import on_official_host, specs_available, validate_request, validate_response
from tests.test_gohighlevel_sandbox import Recorder

UTC = dt.timezone.utc
NY = ZoneInfo("America/New_York")
DOCUMENTED_APPOINTMENT_KEYS = {
    "id",
    "address",
    "title",
    "calendarId",
    "contactId",
    "groupId",
    "appointmentStatus",
    "assignedUserId",
    "users",
    "notes",
    "source",
    "startTime",
    "endTime",
    "dateAdded",
    "dateUpdated",
}


@pytest.fixture
def ghl(sb: Sandbox) -> GoHighLevelEmulator:
    emulator = sb.emulator("ghl")
    assert isinstance(emulator, GoHighLevelEmulator)
    emulator.open_hours = None  # book at any hour: the tests place appointments relative to now
    return emulator


@pytest.fixture
def client(sb: Sandbox) -> Iterator[PMSClient]:
    with PMSClient(environ=sb.environ(default_provider="ghl"), env_file=None, sleep=lambda s: None) as made:
        yield made


def adapter_of(client: PMSClient) -> GoHighLevelV2Adapter:
    adapter = client.adapter("ghl")
    assert isinstance(adapter, GoHighLevelV2Adapter)
    return adapter


def now() -> dt.datetime:
    return dt.datetime.now(UTC)


def soon(hours: float) -> dt.datetime:
    """A whole minute ``hours`` from now, in New York."""
    at = now().replace(second=0, microsecond=0) + dt.timedelta(hours=hours)
    return at.astimezone(NY)


def book(client: PMSClient, reference: str, hours: float) -> str:
    start = soon(hours)
    request = support.booking(
        reference=reference, start=start.isoformat(), patient={"name": "Pat", "email": f"{reference}@example.com"}
    )
    return client.book_appointment(request).id


def staff_book(ghl: GoHighLevelEmulator, hours: float, **fields: Any) -> str:
    """An appointment staff make in GoHighLevel's calendar (no reference)."""
    contact = ghl.add_contact(email=f"walk-in-{hours}@example.com")
    start = soon(hours)
    end = start + dt.timedelta(minutes=30)
    times = {"startTime": start.isoformat(), "endTime": end.isoformat()}
    event = ghl.store.book(start, end, contact=contact, check_slot=False, **times, **fields)
    return str(event["id"])


def seen(page: FeedPage) -> list[tuple[str, str]]:
    return [(o.appointment_id, o.version) for o in page.observed]


# ---------------------------------------------------------------------------------------------
# the feed


def test_first_poll_observes_nothing_and_notes_the_window(client: PMSClient, ghl: GoHighLevelEmulator) -> None:
    first = book(client, "bk-feed-1", 3)
    page = adapter_of(client).observe_changes(None, now())
    assert page.observed == ()
    assert set(page.position["known"]) == {first}
    assert page.position["v"] == 1 and isinstance(page.position["upto"], int)


def test_staff_move_cancel_and_delete_are_each_seen_once(
    client: PMSClient, ghl: GoHighLevelEmulator, sb: Sandbox
) -> None:
    adapter = adapter_of(client)
    moved, cancelled, deleted = (book(client, f"bk-staff-{i}", 2 + i) for i in range(3))
    position = adapter.observe_changes(None, now()).position

    new_start = soon(8)
    sb.staff_move("ghl", moved, new_start, new_start + dt.timedelta(minutes=30))
    page = adapter.observe_changes(position, now())
    assert [o.appointment_id for o in page.observed] == [moved]
    appointment = page.observed[0].appointment
    assert appointment is not None and appointment.start == new_start
    assert appointment.reference == "bk-staff-0"  # the library's booking: by_library downstream
    again = adapter.observe_changes(page.position, now())
    assert again.observed == ()

    sb.staff_cancel("ghl", cancelled)
    page = adapter.observe_changes(again.position, now())
    assert [o.appointment_id for o in page.observed] == [cancelled]
    assert page.observed[0].appointment is not None
    assert page.observed[0].appointment.status is AppointmentStatus.CANCELLED
    again = adapter.observe_changes(page.position, now())
    assert again.observed == ()

    ghl.staff_delete(deleted)
    page = adapter.observe_changes(again.position, now())
    assert [(o.appointment_id, o.deleted, o.appointment) for o in page.observed] == [(deleted, True, None)]
    assert page.observed[0].version.startswith("deleted:")
    assert deleted not in page.position["known"]
    assert adapter.observe_changes(page.position, now()).observed == ()


def test_a_staff_booking_is_seen_as_created(client: PMSClient, ghl: GoHighLevelEmulator) -> None:
    adapter = adapter_of(client)
    position = adapter.observe_changes(None, now()).position
    made = staff_book(ghl, 5, title="Walk-in")
    page = adapter.observe_changes(position, now())
    assert [o.appointment_id for o in page.observed] == [made]
    item = page.observed[0]
    assert item.created_at is not None and item.created_at == item.modified_at
    assert item.appointment is not None and item.appointment.reference is None


def test_the_feed_lists_the_window_as_the_spec_documents(sb: Sandbox, ghl: GoHighLevelEmulator) -> None:
    recorder = Recorder()
    with PMSClient(
        environ=sb.environ(default_provider="ghl"), env_file=None, sleep=lambda s: None, session_factory=recorder
    ) as c:
        book(c, "bk-spec", 2)
        booked = len(recorder.pairs)
        at = now()
        position = adapter_of(c).observe_changes(None, at).position
        adapter_of(c).observe_changes(position, at + dt.timedelta(minutes=1))
    pairs = recorder.pairs[booked:]
    assert len(pairs) == 2  # one listing per poll: the whole window is one span
    request = pairs[0][0]
    assert request.method == "GET" and request.path_url.startswith("/ghl/calendars/events?")
    query = dict(pair.split("=") for pair in request.path_url.split("?", 1)[1].split("&"))
    assert query["locationId"] == ghl.location_id and query["calendarId"] == ghl.calendar_id
    start_ms, end_ms = int(query["startTime"]), int(query["endTime"])
    assert end_ms - start_ms == (feed.WINDOW_BEHIND + feed.WINDOW_AHEAD) // dt.timedelta(milliseconds=1)
    assert start_ms == int((at - feed.WINDOW_BEHIND).timestamp() * 1000)
    assert request.headers["Version"] == "2021-04-15"
    if specs_available():
        base = sb.base_url("ghl")
        for sent, response in pairs:
            official = on_official_host(sent, base)
            validate_request(official)
            validate_response(official, response)


def test_a_window_longer_than_the_span_is_listed_in_pieces_and_each_event_seen_once(
    client: PMSClient, ghl: GoHighLevelEmulator, sb: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(feed, "WINDOW_AHEAD", dt.timedelta(days=70))
    adapter = adapter_of(client)
    at = now()
    position = adapter.observe_changes(None, at).position
    # one straddling the boundary of the first and second piece (30 days from the window's start)
    boundary = (at - feed.WINDOW_BEHIND + feed.MAX_SPAN).astimezone(NY)
    contact = ghl.add_contact(email="edge@example.com")
    straddle = ghl.store.book(
        boundary - dt.timedelta(minutes=15),
        boundary + dt.timedelta(minutes=15),
        contact=contact,
        check_slot=False,
        startTime=(boundary - dt.timedelta(minutes=15)).isoformat(),
        endTime=(boundary + dt.timedelta(minutes=15)).isoformat(),
    )["id"]
    far = staff_book(ghl, 24 * 65)
    before = sb.request_count("ghl")
    page = adapter.observe_changes(position, at + dt.timedelta(seconds=1))
    assert sb.request_count("ghl") - before == 3  # 71 days: 31 + 31 + 9
    assert sorted(o.appointment_id for o in page.observed) == sorted([straddle, far])


def test_window_edges_of_modification_time(client: PMSClient, ghl: GoHighLevelEmulator) -> None:
    """An unknown event counts as changed from the previous poll less MARGIN, not a millisecond earlier."""
    adapter = adapter_of(client)
    at = now().replace(microsecond=0)
    position = adapter.observe_changes(None, at).position
    floor = at - feed.MARGIN
    ghl.store.clock = lambda: floor
    on_edge = staff_book(ghl, 4)
    ghl.store.clock = lambda: floor - dt.timedelta(milliseconds=1)
    just_before = staff_book(ghl, 5)
    ghl.store.clock = None
    page = adapter.observe_changes(position, at + dt.timedelta(minutes=1))
    assert [o.appointment_id for o in page.observed] == [on_edge]
    assert page.observed[0].modified_at == floor
    assert just_before in page.position["known"]  # tracked from now on: a later change is seen
    ghl.staff_cancel(just_before)
    page = adapter.observe_changes(page.position, at + dt.timedelta(minutes=2))
    assert [o.appointment_id for o in page.observed] == [just_before]


def test_an_old_appointment_the_window_slides_onto_is_not_a_change(
    client: PMSClient, ghl: GoHighLevelEmulator, sb: Sandbox
) -> None:
    adapter = adapter_of(client)
    at = now()
    ghl.store.clock = lambda: at - dt.timedelta(days=1)  # booked yesterday
    beyond = staff_book(ghl, (feed.WINDOW_AHEAD / dt.timedelta(hours=1)) + 2)  # 2 h past the window's end
    ghl.store.clock = None
    position = adapter.observe_changes(None, at).position
    assert beyond not in position["known"]
    later = at + dt.timedelta(hours=3)  # the window now reaches it; its stamp is old
    page = adapter.observe_changes(position, later)
    assert page.observed == ()
    assert beyond in page.position["known"]


def test_an_appointment_that_ends_before_the_window_ages_out_unread(
    client: PMSClient, ghl: GoHighLevelEmulator, sb: Sandbox
) -> None:
    adapter = adapter_of(client)
    at = now()
    staff_book(ghl, 1)
    position = adapter.observe_changes(None, at).position
    before = sb.request_count("ghl")
    later = at + feed.WINDOW_BEHIND + dt.timedelta(hours=2)
    page = adapter.observe_changes(position, later)
    assert page.observed == () and page.position["known"] == {}
    assert sb.request_count("ghl") - before == 1  # the listing only: no read of the aged-out one


def test_a_staff_move_out_of_the_window_is_a_change_not_a_deletion(
    client: PMSClient, ghl: GoHighLevelEmulator, sb: Sandbox
) -> None:
    adapter = adapter_of(client)
    moved = book(client, "bk-far", 2)
    position = adapter.observe_changes(None, now()).position
    far = soon(24 * 90)
    sb.staff_move("ghl", moved, far, far + dt.timedelta(minutes=30))
    page = adapter.observe_changes(position, now())
    assert [(o.appointment_id, o.deleted) for o in page.observed] == [(moved, False)]
    appointment = page.observed[0].appointment
    assert appointment is not None and appointment.start == far
    assert moved not in page.position["known"]
    assert adapter.observe_changes(page.position, now()).observed == ()


def test_two_quick_changes_get_distinct_versions(client: PMSClient, ghl: GoHighLevelEmulator) -> None:
    frozen = now()
    ghl.store.clock = lambda: frozen
    made = staff_book(ghl, 3)
    first = ghl.booking(made)
    ghl.staff_cancel(made)
    second = ghl.booking(made)
    assert first is not None and second is not None
    assert second["dateUpdated"] > first["dateUpdated"]  # the same instant, one millisecond apart


def test_known_ids_are_bounded_soonest_first(
    client: PMSClient, ghl: GoHighLevelEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(feed, "MAX_KNOWN", 2)
    later, soonest, middle = staff_book(ghl, 30), staff_book(ghl, 2), staff_book(ghl, 10)
    position = adapter_of(client).observe_changes(None, now()).position
    assert list(position["known"]) == [soonest, middle]
    assert later not in position["known"]


def test_a_thousand_changes_over_ten_polls_on_the_edges_none_missed_none_repeated(
    client: PMSClient, ghl: GoHighLevelEmulator, sb: Sandbox
) -> None:
    """100 appointments, each changed once between every two polls, every change stamped at the
    very instant the next poll names as its ``now`` (the edge of the poll's window)."""
    adapter = adapter_of(client)
    ids = [staff_book(ghl, 2 + i / 4) for i in range(100)]
    base = now()
    position = adapter.observe_changes(None, base).position
    expected: set[tuple[str, str]] = set()
    reported: list[tuple[str, str]] = []
    for poll in range(10):
        at = base + dt.timedelta(minutes=poll + 1)
        ghl.store.clock = lambda at=at: at
        for i, event_id in enumerate(ids):
            if (i + poll) % 3 == 0:
                start = soon(2 + i / 4 + (poll + 1) / 60)
                sb.staff_move("ghl", event_id, start, start + dt.timedelta(minutes=15))
            elif (i + poll) % 3 == 1:
                ghl.store.update_event(event_id, check_slot=False, title=f"poll {poll}")
            else:
                ghl.store.update_event(event_id, check_slot=False, appointmentStatus=("confirmed", "showed")[poll % 2])
            record = ghl.booking(event_id)
            assert record is not None and record["dateUpdated"] == at.isoformat(timespec="milliseconds")[:-6] + "Z"
            expected.add((event_id, record["dateUpdated"]))
        page = adapter.observe_changes(position, at)
        position = page.position
        reported += seen(page)
    assert len(reported) == len(set(reported)) == 1000
    assert set(reported) == expected


def test_a_position_not_ours_starts_afresh(client: PMSClient, ghl: GoHighLevelEmulator) -> None:
    book(client, "bk-foreign", 2)
    page = adapter_of(client).observe_changes({"v": 99, "cursor": "x"}, now())
    assert page.observed == () and len(page.position["known"]) == 1


def test_a_feed_started_in_the_past_reports_what_changed_since(client: PMSClient, ghl: GoHighLevelEmulator) -> None:
    made = staff_book(ghl, 3)
    started = now() - dt.timedelta(minutes=30)  # the event was stamped after this instant
    adapter = adapter_of(client)
    position = adapter.observe_changes(None, started).position
    assert made not in position["known"]
    page = adapter.observe_changes(position, now())
    assert [o.appointment_id for o in page.observed] == [made]


def test_v1_has_no_change_feed_and_says_why(sb: Sandbox) -> None:
    with PMSClient(
        environ=sb.environ(ghl_api_version="v1", default_provider="ghl"), env_file=None, sleep=lambda s: None
    ) as c:
        adapter = c.adapter("ghl")
        assert Capability.CHANGES not in adapter.capabilities and Capability.WEBHOOKS not in adapter.capabilities
        assert "dateUpdated" in str(adapter.unsupported_reason(Capability.CHANGES))
        with pytest.raises(UnsupportedOperationError, match="dateUpdated"):
            cast(Any, adapter).observe_changes(None, now())
        with pytest.raises(UnsupportedOperationError, match="Marketplace"):
            cast(Any, adapter).observe_webhook({"type": "AppointmentCreate"})


def test_v2_declares_both_capabilities(client: PMSClient) -> None:
    capabilities = adapter_of(client).capabilities
    assert Capability.CHANGES in capabilities and Capability.WEBHOOKS in capabilities


def test_the_client_feed_reports_a_staff_move_and_cancel_once_across_a_restart(
    sb: Sandbox, ghl: GoHighLevelEmulator, tmp_path: Path
) -> None:
    """Through ``PMSClient.changes`` (the change core) with a named feed kept in a SQLite file."""
    env = {**sb.environ(default_provider="ghl"), "PMS_STATE_URL": f"sqlite:///{tmp_path / 'state.db'}"}

    def consumer() -> PMSClient:
        return PMSClient(environ=env, env_file=None, sleep=lambda s: None)

    with consumer() as c:
        mine = book(c, "bk-restart", 2)
        assert len(c.changes(feed="desk")) == 0  # starts now
        new_start = soon(6)
        sb.staff_move("ghl", mine, new_start, new_start + dt.timedelta(minutes=30))
        batch = c.changes(feed="desk")
        assert [(e.kind, e.appointment_id, e.by_library) for e in batch] == [(ChangeKind.RESCHEDULED, mine, True)]
    sb.staff_cancel("ghl", mine)
    with consumer() as c:  # a restarted consumer resumes from the stored cursor
        batch = c.changes(feed="desk")
        assert [(e.kind, e.appointment_id) for e in batch] == [(ChangeKind.CANCELLED, mine)]
        assert len(c.changes(feed="desk")) == 0


# ---------------------------------------------------------------------------------------------
# the emulator's change log and webhook bodies


def test_every_route_logs_its_changes_as_documented_webhook_bodies(
    client: PMSClient, ghl: GoHighLevelEmulator, sb: Sandbox
) -> None:
    start_index = ghl.change_count()
    mine = book(client, "bk-hooks", 2)
    client.update_appointment(mine, {"title": "Whitening"})
    new_start = soon(7)
    sb.staff_move("ghl", mine, new_start, new_start + dt.timedelta(minutes=30))
    sb.staff_cancel("ghl", mine)
    ghl.staff_delete(mine)
    bodies = ghl.webhook_payloads(start_index)
    assert [b["type"] for b in bodies] == [
        "AppointmentCreate",
        "AppointmentUpdate",
        "AppointmentUpdate",
        "AppointmentUpdate",
        "AppointmentDelete",
    ]
    for body in bodies:
        assert set(body) == {"type", "locationId", "appointment", "webhookId", "timestamp"}
        assert body["locationId"] == ghl.location_id
        assert set(body["appointment"]) == DOCUMENTED_APPOINTMENT_KEYS
        assert body["appointment"]["id"] == mine
    assert len({b["webhookId"] for b in bodies}) == 5
    stamps = [b["appointment"]["dateUpdated"] for b in bodies[:4]]
    assert stamps == sorted(stamps) and len(set(stamps)) == 4
    assert bodies[2]["appointment"]["startTime"] == new_start.isoformat()
    assert bodies[3]["appointment"]["appointmentStatus"] == "cancelled"
    assert ghl.webhook_payloads(start_index + 4) == bodies[4:]
    assert ghl.webhook_payloads(ghl.change_count()) == []


def test_v1_routes_are_logged_too(sb: Sandbox, ghl: GoHighLevelEmulator) -> None:
    with PMSClient(
        environ=sb.environ(ghl_api_version="v1", default_provider="ghl"), env_file=None, sleep=lambda s: None
    ) as c:
        made = book(c, "bk-v1-hook", 2)
        c.cancel_appointment(made)
    assert [b["type"] for b in ghl.webhook_payloads(0)] == ["AppointmentCreate", "AppointmentUpdate"]


def test_staff_delete_of_an_unknown_appointment_is_a_key_error(ghl: GoHighLevelEmulator) -> None:
    with pytest.raises(KeyError):
        ghl.staff_delete("nosuchappointmentid0")


# ---------------------------------------------------------------------------------------------
# webhook bodies -> Observed


def test_webhook_bodies_become_observed_with_the_webhook_id_as_version(
    client: PMSClient, ghl: GoHighLevelEmulator, sb: Sandbox
) -> None:
    adapter = adapter_of(client)
    mine = book(client, "bk-webhook", 2)
    new_start = soon(9)
    sb.staff_move("ghl", mine, new_start, new_start + dt.timedelta(minutes=30))
    ghl.staff_delete(mine)
    create, move, delete = ghl.webhook_payloads(0)

    before = sb.request_count("ghl")
    observed = adapter.observe_webhook(create)
    # the body has no description (the reference): the appointment was read by id
    assert sb.request_count("ghl") - before == 1
    assert [(o.appointment_id, o.version, o.deleted) for o in observed] == [(mine, create["webhookId"], False)]
    assert observed[0].created_at is not None and observed[0].created_at == observed[0].modified_at

    (moved,) = adapter.observe_webhook(move)  # the record is gone by now: the body is used as sent
    assert moved.appointment is not None and moved.appointment.start == new_start
    assert moved.version == move["webhookId"] and not moved.deleted

    before = sb.request_count("ghl")
    (gone,) = adapter.observe_webhook(delete)
    assert sb.request_count("ghl") == before  # a deletion is never read back
    assert gone.deleted and gone.version == delete["webhookId"]
    assert gone.modified_at == dt.datetime.fromisoformat(delete["timestamp"])  # not the last edit's stamp
    assert gone.appointment is not None and gone.appointment.id == mine


def test_late_deliveries_of_a_move_and_a_cancel_are_a_reschedule_and_a_cancel(
    client: PMSClient, ghl: GoHighLevelEmulator, sb: Sandbox
) -> None:
    """Both bodies arrive after both changes: each still says what its event did, and the read
    by id only adds the reference."""
    mine = book(client, "bk-late", 2)
    index = ghl.change_count()
    new_start = soon(5)
    sb.staff_move("ghl", mine, new_start, new_start + dt.timedelta(minutes=30))
    sb.staff_cancel("ghl", mine)
    adapter = adapter_of(client)
    moved, cancelled = (adapter.observe_webhook(body)[0] for body in ghl.webhook_payloads(index))
    assert moved.appointment is not None and cancelled.appointment is not None
    assert moved.appointment.status is AppointmentStatus.BOOKED and moved.appointment.start == new_start
    assert cancelled.appointment.status is AppointmentStatus.CANCELLED
    assert moved.appointment.reference == cancelled.appointment.reference == "bk-late"
    changes = client.classify_observed([moved, cancelled], provider="ghl")
    assert [(c.kind, c.by_library, c.source) for c in changes] == [
        (ChangeKind.RESCHEDULED, True, "webhook"),
        (ChangeKind.CANCELLED, True, "webhook"),
    ]
    assert client.classify_observed([cancelled], provider="ghl") == []  # (replays: the webhooks layer)


def test_a_webhook_carrying_the_reference_is_not_read_back(client: PMSClient, sb: Sandbox) -> None:
    body = {
        "type": "AppointmentUpdate",
        "locationId": support.LOCATION_ID,
        "webhookId": "wh-1",
        "timestamp": "2037-03-01T10:00:05.000Z",
        "appointment": {
            "id": support.EVENT_ID,
            "calendarId": "",
            "title": "Cleaning (ref bk-test)",
            "appointmentStatus": "cancelled",
            "startTime": "2037-03-10T10:00:00-04:00",
            "endTime": "2037-03-10T10:30:00-04:00",
            "dateAdded": "2037-03-01T09:00:00.000Z",
            "dateUpdated": "2037-03-01T10:00:00.000Z",
        },
    }
    ghl = sb.emulator("ghl")
    assert isinstance(ghl, GoHighLevelEmulator)
    body["locationId"] = ghl.location_id
    before = sb.request_count("ghl")
    (item,) = adapter_of(client).observe_webhook(body)
    assert sb.request_count("ghl") == before
    assert item.appointment is not None and item.appointment.reference == "bk-test"
    assert item.appointment.status is AppointmentStatus.CANCELLED
    assert item.modified_at == dt.datetime(2037, 3, 1, 10, 0, tzinfo=UTC)
    assert item.version == "wh-1"


def test_other_events_locations_and_calendars_are_ignored(client: PMSClient, ghl: GoHighLevelEmulator) -> None:
    adapter = adapter_of(client)
    appointment = {"id": support.EVENT_ID, "calendarId": ghl.calendar_id, "startTime": "x"}
    assert adapter.observe_webhook({"type": "ContactCreate", "id": "c1"}) == []
    assert adapter.observe_webhook({"type": "INSTALL", "appId": "a"}) == []
    other_location = {"type": "AppointmentCreate", "locationId": "elsewhere0000000000a", "appointment": appointment}
    assert adapter.observe_webhook(other_location) == []
    other_calendar = {
        "type": "AppointmentCreate",
        "locationId": ghl.location_id,
        "appointment": {**appointment, "calendarId": "anothercalendar00000"},
    }
    assert adapter.observe_webhook(other_calendar) == []


@pytest.mark.parametrize(
    "body",
    [
        "not an object",
        ["a list", "of strings"],
        {"type": "AppointmentUpdate"},
        {"type": "AppointmentUpdate", "appointment": {"title": "no id"}},
        {"type": "AppointmentDelete", "appointment": {"id": "../../etc/passwd"}},
    ],
)
def test_a_malformed_appointment_body_is_a_payload_error(client: PMSClient, body: Any) -> None:
    with pytest.raises(WebhookPayloadError) as info:
        adapter_of(client).observe_webhook(body)
    assert "passwd" not in str(info.value) and "no id" not in str(info.value)


def test_several_bodies_at_once(client: PMSClient, ghl: GoHighLevelEmulator) -> None:
    made = staff_book(ghl, 3)
    ghl.staff_cancel(made)
    bodies = ghl.webhook_payloads(0)
    observed = adapter_of(client).observe_webhook(bodies)
    assert [o.version for o in observed] == [b["webhookId"] for b in bodies]
    assert all(isinstance(o, Observed) for o in observed)
    last = observed[-1].appointment
    assert last is not None and last.status is AppointmentStatus.CANCELLED


def test_a_late_retry_of_an_older_webhook_does_not_undo_a_newer_change(
    client: PMSClient, ghl: GoHighLevelEmulator, sb: Sandbox
) -> None:
    """The creation's delivery fails, staff move the appointment, the move is delivered, then the
    vendor retries the creation (it carries the old start): not reported, the snapshot keeps the
    move, and the feed has nothing left to report."""
    url = "https://clinic.example.com/api/integrations/pms/gohighlevel/webhook"
    assert len(client.changes(provider="ghl", feed="desk")) == 0
    mine = book(client, "bk-retry", 3)
    held: list[tuple[str, Any, bytes]] = []
    sb.deliver_webhooks("ghl", url, send=lambda u, h, body: held.append((u, h, body)) or 500)
    assert held  # the creation, not delivered: the vendor will retry it
    new_start = soon(6)
    sb.staff_move("ghl", mine, new_start, new_start + dt.timedelta(minutes=30))
    got: list[tuple[ChangeKind, dt.datetime | None]] = []

    def receive(u: str, h: Any, body: bytes) -> int:
        with client.parse_webhook("ghl", method="POST", url=u, headers=h, body=body) as changes:
            got.extend((c.kind, c.appointment.start if c.appointment else None) for c in changes)
        return 200

    sb.deliver_webhooks("ghl", url, send=receive)
    assert got == [(ChangeKind.RESCHEDULED, new_start)]
    u, h, body = held[0]
    receive(u, h, body)  # the late retry of the creation
    assert got == [(ChangeKind.RESCHEDULED, new_start)]
    assert client.get_appointment(mine, provider="ghl").start == new_start
    # the feed finds nothing the webhooks did not already report (the snapshot still has the move)
    assert [(c.kind, c.appointment_id) for c in client.changes(provider="ghl", feed="desk")] == []
