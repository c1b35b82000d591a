"""The change feed's core (pms_integration.changes, PMSClient.changes) with a scripted adapter.

The scripted adapter behaves like a careful vendor feed: it reports every change whose modified
time falls in ``(position - margin, now]``, so consecutive polls overlap by ``margin`` and the
core must drop what it already reported. Vendor feeds through the sandbox are tested at the end.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo

import attrs
import pytest

from pms_integration import PMSClient
from pms_integration.changes import (
    AppointmentChange,
    ChangeBatch,
    ChangeKind,
    Cursor,
    FeedPage,
    Observed,
    classify,
    record_snapshot,
)
from pms_integration.errors import PMSError, UnsupportedOperationError, ValidationError
from pms_integration.models import Appointment, AppointmentStatus, ProviderName
from pms_integration.provider import Capability
from pms_integration.sandbox import Sandbox
from pms_integration.state import open_state

from .conftest import full_environ

GHL = ProviderName.GOHIGHLEVEL
UTC = dt.timezone.utc
T0 = dt.datetime(2030, 1, 7, 9, 0, tzinfo=UTC)
MARGIN = dt.timedelta(seconds=60)


def appt(
    appointment_id: str,
    start: dt.datetime = T0 + dt.timedelta(days=3),
    *,
    status: AppointmentStatus = AppointmentStatus.BOOKED,
    reference: str | None = None,
) -> Appointment:
    return Appointment(GHL, appointment_id, status, start, start + dt.timedelta(minutes=30), reference=reference)


def seen(
    appointment_id: str,
    at: dt.datetime,
    version: str | None = None,
    *,
    start: dt.datetime = T0 + dt.timedelta(days=3),
    status: AppointmentStatus = AppointmentStatus.BOOKED,
    created: dt.datetime | None = None,
    deleted: bool = False,
    reference: str | None = None,
) -> Observed:
    record = None if deleted else appt(appointment_id, start, status=status, reference=reference)
    return Observed(appointment_id, record, at, version or at.isoformat(), deleted=deleted, created_at=created)


# -- classification --------------------------------------------------------------------------


def _classify(store: Any, item: Observed, **kw: Any) -> AppointmentChange | None:
    return classify(store, item, provider=GHL, account="acct", source="feed", ttl=3600, **kw)


def test_classification_table() -> None:
    store = open_state("memory://", namespace="t-classify")
    t = T0
    moved = T0 + dt.timedelta(days=4)
    # new record, created with this modification -> created
    first = _classify(store, seen("a", t, "v1", created=t))
    assert first is not None and first.kind is ChangeKind.CREATED and first.event_id == "a@v1"
    # the same version again -> already reported
    assert _classify(store, seen("a", t, "v1", created=t)) is None
    # a new version with the same times, the title changed -> updated
    plain = seen("a", t + dt.timedelta(minutes=1), "v2", created=t)
    assert plain.appointment is not None
    upd = _classify(store, attrs.evolve(plain, appointment=attrs.evolve(plain.appointment, title="Crown fitting")))
    assert upd is not None and upd.kind is ChangeKind.UPDATED
    # start moved -> rescheduled, with the previous start
    res = _classify(store, seen("a", t + dt.timedelta(minutes=2), "v3", start=moved, created=t))
    assert res is not None and res.kind is ChangeKind.RESCHEDULED
    assert res.previous_start == T0 + dt.timedelta(days=3)
    # status now cancelled -> cancelled (even when the time moved as well)
    can = _classify(
        store, seen("a", t + dt.timedelta(minutes=3), "v4", start=moved, status=AppointmentStatus.CANCELLED)
    )
    assert can is not None and can.kind is ChangeKind.CANCELLED
    # still cancelled, nothing visible changed (a notes edit) -> nothing to report
    quiet = seen("a", t + dt.timedelta(minutes=4), "v5", start=moved, status=AppointmentStatus.CANCELLED)
    assert _classify(store, quiet) is None
    # still cancelled, title edited -> updated, not a second cancellation
    assert quiet.appointment is not None
    retitled = attrs.evolve(quiet, version="v5b", appointment=attrs.evolve(quiet.appointment, title="Moved to B"))
    again = _classify(store, retitled)
    assert again is not None and again.kind is ChangeKind.UPDATED
    # deleted -> deleted (no appointment); deleted again -> nothing
    gone = _classify(store, seen("a", t + dt.timedelta(minutes=5), "v6", deleted=True))
    assert gone is not None and gone.kind is ChangeKind.DELETED and gone.appointment is None
    assert _classify(store, seen("a", t + dt.timedelta(minutes=6), "v7", deleted=True)) is None
    # unknown record modified long after its creation -> updated (we never saw its creation)
    old = _classify(store, seen("b", t, "v1", created=t - dt.timedelta(days=2)))
    assert old is not None and old.kind is ChangeKind.UPDATED
    # ... unless it was created after the feed started
    late = _classify(store, seen("c", t, "v1", created=t - dt.timedelta(minutes=5)), feed_start=t - dt.timedelta(hours=1))
    assert late is not None and late.kind is ChangeKind.CREATED
    # a record we never saw that is now cancelled -> cancelled
    c2 = _classify(store, seen("d", t, "v1", status=AppointmentStatus.CANCELLED))
    assert c2 is not None and c2.kind is ChangeKind.CANCELLED


def test_by_library_follows_the_booking_reference_even_after_deletion() -> None:
    store = open_state("memory://", namespace="t-bylib")
    mine = _classify(store, seen("m", T0, "v1", reference="conv-1", created=T0))
    theirs = _classify(store, seen("s", T0, "v1", created=T0))
    assert mine is not None and mine.by_library and theirs is not None and not theirs.by_library
    gone = _classify(store, seen("m", T0 + dt.timedelta(minutes=1), "v2", deleted=True))
    assert gone is not None and gone.kind is ChangeKind.DELETED and gone.by_library


def test_a_staff_change_to_a_library_booking_is_classified_against_what_the_library_made() -> None:
    store = open_state("memory://", namespace="t-own")
    made = appt("x", reference="conv-9")
    record_snapshot(store, GHL, "acct", made, kind=ChangeKind.CREATED, ttl=3600)
    # the feed sees the library's own booking: reported once, as created, by the library
    own = _classify(store, seen("x", T0, "v1", reference="conv-9", created=T0 - dt.timedelta(days=1)))
    assert own is not None and own.kind is ChangeKind.CREATED and own.by_library
    # staff then move it: rescheduled from the library's time
    moved = T0 + dt.timedelta(days=5)
    res = _classify(store, seen("x", T0 + dt.timedelta(minutes=1), "v2", start=moved, reference="conv-9"))
    assert res is not None and res.kind is ChangeKind.RESCHEDULED and res.previous_start == made.start
    # a replayed booking does not reset the snapshot
    record_snapshot(store, GHL, "acct", made, kind=ChangeKind.CREATED, ttl=3600)
    assert _classify(store, seen("x", T0 + dt.timedelta(minutes=1), "v2", start=moved, reference="conv-9")) is None


def test_a_library_booking_moved_by_the_library_before_the_feed_saw_it_is_one_creation() -> None:
    store = open_state("memory://", namespace="t-own-twice")
    record_snapshot(store, GHL, "acct", appt("y", reference="conv-y"), kind=ChangeKind.CREATED, ttl=60)
    later = T0 + dt.timedelta(days=8)
    record_snapshot(store, GHL, "acct", appt("y", later, reference="conv-y"), kind=ChangeKind.RESCHEDULED, ttl=60)
    first = _classify(store, seen("y", T0, "v1", start=later, reference="conv-y", created=T0 - dt.timedelta(hours=1)))
    assert first is not None and first.kind is ChangeKind.CREATED and first.by_library


def test_a_change_reported_by_a_webhook_is_not_reported_again_by_the_feed() -> None:
    store = open_state("memory://", namespace="t-cross")
    moved = T0 + dt.timedelta(days=6)
    hook = classify(
        store, seen("w", T0, "evt-1", start=moved), provider=GHL, account="acct", source="webhook", ttl=60
    )
    assert hook is not None and hook.event_id == "evt-1" and hook.source == "webhook"
    # the feed sees the same state, modified no later than the webhook said: nothing new
    assert _classify(store, seen("w", T0, "2030-01-07T09:00:00Z", start=moved)) is None


def test_reprs_are_readable() -> None:
    store = open_state("memory://", namespace="t-repr")
    change = _classify(store, seen("r1", T0, "v1", created=T0, reference="conv-1"))
    assert change is not None
    assert "created" in repr(change) and "r1" in str(change) and "<table>" in change._repr_html_()
    assert "ref=conv-1" in change.line() and "library" in change.line()
    batch = ChangeBatch((change,), "cursor")
    assert len(batch) == 1 and list(batch) == [change] and "1 change" in repr(batch)
    assert "cursor" not in repr(batch) and "r1" in str(batch) and "<table>" in batch._repr_html_()
    assert str(ChangeBatch((), "c")) == "no changes"


# -- a scripted adapter and a client around it -----------------------------------------------


@attrs.define
class ScriptedFeed:
    """Changes as (modified_at, Observed); each poll answers (position - MARGIN, now]."""

    log: list[Observed] = attrs.Factory(list)
    calls: list[tuple[Mapping[str, Any] | None, dt.datetime]] = attrs.Factory(list)
    account: str = "scripted-account"
    name: ProviderName = GHL
    capabilities: frozenset[Capability] = frozenset({Capability.CHANGES})

    def observe_changes(self, position: Mapping[str, Any] | None, now: dt.datetime) -> FeedPage:
        self.calls.append((position, now))
        if position is None:
            return FeedPage((), {"at": now.isoformat()})
        low = dt.datetime.fromisoformat(position["at"]) - MARGIN
        found = tuple(o for o in self.log if low < o.modified_at <= now)
        return FeedPage(found, {"at": now.isoformat()})

    def unsupported_reason(self, capability: Capability) -> str | None:
        return None

    def close(self) -> None:
        pass


def scripted_client(feed: ScriptedFeed, state: str = "memory://", clock: list[dt.datetime] | None = None) -> PMSClient:
    client = PMSClient(environ=full_environ(), env_file=None, state=state)
    client._adapters[GHL] = feed  # type: ignore[assignment]
    times = clock if clock is not None else [T0]
    client._utcnow = lambda: times[0]
    return client


def test_first_poll_starts_now_and_later_polls_report_each_change_once() -> None:
    feed = ScriptedFeed()
    clock = [T0]
    client = scripted_client(feed, clock=clock)
    batch = client.changes(provider="gohighlevel")
    assert len(batch) == 0 and feed.calls == [(None, T0)]
    feed.log.append(seen("a", T0 + dt.timedelta(seconds=10), created=T0 + dt.timedelta(seconds=10)))
    clock[0] = T0 + dt.timedelta(seconds=30)
    batch = client.changes(batch.cursor)
    assert [(c.appointment_id, c.kind) for c in batch] == [("a", ChangeKind.CREATED)]
    clock[0] = T0 + dt.timedelta(seconds=50)  # "a" is still inside the overlap: not again
    assert len(client.changes(batch.cursor)) == 0


def test_since_a_datetime_reads_from_then() -> None:
    feed = ScriptedFeed([seen("early", T0 - dt.timedelta(minutes=10)), seen("later", T0 - dt.timedelta(minutes=2))])
    client = scripted_client(feed)
    batch = client.changes(T0 - dt.timedelta(minutes=5), provider="ghl")
    # the window starts MARGIN before `since`: overlap is fine, a miss is not
    assert [c.appointment_id for c in batch] == ["later"]
    with pytest.raises(ValidationError) as err:
        client.changes(dt.datetime(2030, 1, 1), provider="ghl")
    assert err.value.fields == ["since"]


def test_one_thousand_scripted_changes_over_ten_polls_on_the_window_edges() -> None:
    feed = ScriptedFeed()
    clock = [T0]
    client = scripted_client(feed, clock=clock)
    cursor = client.changes(provider="ghl").cursor
    boundaries = [T0 + dt.timedelta(seconds=30 * (i + 1)) for i in range(10)]
    expected: set[str] = set()
    n = 0
    for i, edge in enumerate(boundaries):
        prev = boundaries[i - 1] if i else T0
        # 100 changes per poll: 20 exactly on this poll's boundary, 20 exactly on the previous
        # one (already polled at that instant, but written after: late index), the rest between
        for j in range(100):
            if j < 20:
                at = edge
            elif j < 40 and i:
                at = prev  # lands on the last boundary after that poll ran (clock/index lag)
            else:
                at = prev + dt.timedelta(milliseconds=1 + (j * 293) % 29_998)
            version = f"v{n}"
            feed.log.append(seen(f"ap{n}", at, version, created=at))
            expected.add(f"ap{n}@{version}")
            n += 1
        # one appointment is also changed twice (two versions) in every window
        feed.log.append(seen("twice", edge, f"t{i}", start=T0 + dt.timedelta(days=10, hours=i)))
        expected.add(f"twice@t{i}")
        clock[0] = edge
        got = client.changes(cursor)
        cursor = got.cursor
        ids = [c.event_id for c in got]
        assert len(ids) == len(set(ids))
        for c in got:
            assert c.event_id in expected, c.event_id
            expected.discard(c.event_id)
    assert n == 1000
    # everything on or before the last poll's instant was reported, each exactly once
    assert expected == set()
    assert len(cursor) < 24_000  # about 1,000 ids in the 15-minute overlap, 12 hex characters each


def test_cursor_round_trip_and_garbage() -> None:
    feed = ScriptedFeed()
    client = scripted_client(feed)
    batch = client.changes(provider="ghl")
    decoded = Cursor.decode(batch.cursor)
    assert decoded.provider is GHL and decoded.position == {"at": T0.isoformat()}
    assert Cursor.decode(decoded.encode()) == decoded
    raw = json.loads(base64.urlsafe_b64decode(batch.cursor + "=" * (-len(batch.cursor) % 4)))
    raw["b"]["position"]["at"] = "2020-01-01T00:00:00+00:00"  # edited by hand: the check catches it
    tampered = base64.urlsafe_b64encode(json.dumps(raw).encode()).decode().rstrip("=")
    for garbage in ["", "not a cursor", "x" * 40, tampered, 42, "eyJhIjoxfQ", batch.cursor[:-3]]:
        with pytest.raises(ValidationError) as err:
            client.changes(garbage, provider="ghl")  # type: ignore[arg-type]
        assert err.value.fields == ["since"]
        assert isinstance(err.value, PMSError)


def test_a_cursor_is_bound_to_its_provider_and_account() -> None:
    client = scripted_client(ScriptedFeed())
    cursor = client.changes(provider="ghl").cursor
    other = scripted_client(ScriptedFeed(account="another-location"))
    with pytest.raises(ValidationError) as err:
        other.changes(cursor)
    assert err.value.fields == ["since"]
    with pytest.raises(ValidationError):
        client.changes(cursor, provider="hubspot")


def test_a_named_feed_survives_a_restart(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path}/state.db"
    feed = ScriptedFeed()
    clock = [T0]
    first = scripted_client(feed, state=url, clock=clock)
    assert len(first.changes(provider="ghl", feed="reception")) == 0
    feed.log.append(seen("r", T0 + dt.timedelta(seconds=5), created=T0 + dt.timedelta(seconds=5)))
    clock[0] = T0 + dt.timedelta(seconds=10)
    assert [c.appointment_id for c in first.changes(provider="ghl", feed="reception")] == ["r"]
    first.close()
    # a new consumer (a restarted process) on the same store resumes: "r" is not reported again
    feed.log.append(seen("s", T0 + dt.timedelta(seconds=15), created=T0 + dt.timedelta(seconds=15)))
    clock[0] = T0 + dt.timedelta(seconds=20)
    second = scripted_client(feed, state=url, clock=clock)
    assert [c.appointment_id for c in second.changes(provider="ghl", feed="reception")] == ["s"]
    assert len(second.changes(provider="ghl", feed="reception")) == 0
    with pytest.raises(ValidationError) as err:
        second.changes(provider="ghl", feed="no spaces please")
    assert err.value.fields == ["feed"]
    # a stored cursor that was damaged is named as the feed's; since= starts the feed again
    from pms_integration.changes import feed_key

    second.state.put(feed_key("reception", GHL, feed.account), "damaged", None)
    with pytest.raises(ValidationError) as err:
        second.changes(provider="ghl", feed="reception")
    assert err.value.fields == ["feed"]
    assert len(second.changes(T0 + dt.timedelta(seconds=20), provider="ghl", feed="reception")) == 0
    assert len(second.changes(provider="ghl", feed="reception")) == 0


def test_a_provider_without_a_feed_is_unsupported() -> None:
    client = scripted_client(ScriptedFeed(capabilities=frozenset()))
    with pytest.raises(UnsupportedOperationError):
        client.changes(provider="ghl")


# -- the command line and the HTTP route ------------------------------------------------------


def test_watch_once_prints_each_change_and_the_cursor(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pms_integration import cli

    feed = ScriptedFeed([seen("w1", T0 - dt.timedelta(seconds=5), created=T0 - dt.timedelta(seconds=5))])
    monkeypatch.setattr(cli, "_client", lambda args: scripted_client(feed))
    since = (T0 - dt.timedelta(seconds=30)).isoformat()
    assert cli.main(["watch", "--provider", "ghl", "--since", since, "--once"]) == 0
    out, err = capsys.readouterr()
    assert "gohighlevel created w1" in out and "via feed" in out
    cursor = err.split("cursor: ")[1].strip()
    assert Cursor.decode(cursor).provider is GHL
    # polling until Ctrl-C: the second wait is interrupted; the cursor is printed to resume with
    waits: list[float] = []

    def wait(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_watch_sleep", wait)
    assert cli.main(["watch", "-p", "ghl", "--since", cursor, "--interval", "2", "--json"]) == 0
    out, err = capsys.readouterr()
    assert out == "" and waits == [2.0, 2.0] and "cursor: " in err
    assert cli.main(["watch", "-p", "ghl", "--interval", "0"]) == 3
    assert "--interval" in capsys.readouterr().err


def _asgi_get(app: Any, path: str, query: str, headers: dict[str, str]) -> tuple[int, Any]:
    import asyncio

    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": query.encode(), "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 1234), "server": ("127.0.0.1", 80),
    }  # fmt: skip
    asyncio.run(app(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(body)


def test_the_http_route_needs_the_token_and_pages_with_the_cursor() -> None:
    from urllib.parse import quote

    from pms_integration.server import PREFIX, create_app

    feed = ScriptedFeed([seen("h1", T0 - dt.timedelta(seconds=5), created=T0 - dt.timedelta(seconds=5))])
    client = scripted_client(feed)
    token = "a-long-enough-server-token-for-tests-0123456789"
    app = create_app(client, token=token)
    auth = {"Authorization": f"Bearer {token}"}
    status, _ = _asgi_get(app, f"{PREFIX}/changes", "provider=ghl", {})
    assert status == 401
    since = quote((T0 - dt.timedelta(seconds=30)).isoformat())
    status, body = _asgi_get(app, f"{PREFIX}/changes", f"provider=ghl&since={since}", auth)
    assert status == 200 and [e["appointment_id"] for e in body["events"]] == ["h1"]
    assert body["events"][0]["kind"] == "created" and body["events"][0]["appointment"]["id"] == "h1"
    status, body = _asgi_get(app, f"{PREFIX}/changes", f"since={body['cursor']}", auth)
    assert status == 200 and body["events"] == []
    status, body = _asgi_get(app, f"{PREFIX}/changes", "since=garbage-cursor-text", auth)
    assert status == 422 and "since" in json.dumps(body)


# -- each vendor through the sandbox: the acceptance ------------------------------------
#
# Every emulator stamps its changes on a clock the test holds (Salesforce's org clock, HubSpot's
# wall and index clocks, GoHighLevel's record stamps), and the client reads "now" from the same
# clock, so a change lands exactly on a poll's boundary when the test says so, and nothing waits.

VENDORS = ["gohighlevel", "salesforce", "hubspot"]
NY = ZoneInfo("America/New_York")
DAY = dt.date(2030, 1, 9)


class VendorClock:
    def __init__(self, start: dt.datetime) -> None:
        self.now = start

    def __call__(self) -> dt.datetime:
        return self.now

    def tick(self, seconds: float) -> dt.datetime:
        self.now += dt.timedelta(seconds=seconds)
        return self.now


@pytest.fixture
def vclock(sb: Sandbox, monkeypatch: pytest.MonkeyPatch) -> VendorClock:
    clock = VendorClock(T0)
    ghl = sb.emulator("gohighlevel")
    monkeypatch.setattr(ghl, "open_hours", None)
    monkeypatch.setattr(ghl.store, "clock", clock)  # type: ignore[attr-defined]
    sf = sb.emulator("salesforce")
    monkeypatch.setattr(sf, "clock", clock)
    hs = sb.emulator("hubspot")
    monkeypatch.setattr(hs, "wall_clock", clock)
    monkeypatch.setattr(hs, "clock", lambda: clock.now.timestamp())
    for name, value in (("search_lag", 0.0), ("search_rate", None), ("burst_limit", None)):
        monkeypatch.setattr(hs, name, value)
    return clock


def vendor_client(sb: Sandbox, vendor: str, state: str, clock: VendorClock) -> PMSClient:
    env = {
        **sb.environ(default_provider=vendor),
        "PMS_HUBSPOT_RATE_LIMIT": "off",
        "PMS_SALESFORCE_CONFLICT_CHECK": "off",
        "PMS_GHL_CONFLICT_CHECK": "off",
    }
    client = PMSClient(environ=env, env_file=None, sleep=lambda s: None, state=state)
    client._utcnow = clock
    return client


def at(hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(DAY.year, DAY.month, DAY.day, hour, minute, tzinfo=NY)


def block(sb: Sandbox, vendor: str, start: dt.datetime) -> str:
    """An appointment staff make in the CRM (no booking reference)."""
    end = start + dt.timedelta(minutes=30)
    emulator: Any = sb.emulator(vendor)
    if vendor == "gohighlevel":
        contact = emulator.add_contact(email="walk-in@example.com")
        times = {"startTime": start.isoformat(), "endTime": end.isoformat()}
        return str(emulator.store.book(start, end, contact=contact, check_slot=False, **times)["id"])
    return str(emulator.block_time(start, end, "Walk-in"))


@pytest.mark.parametrize("vendor", VENDORS)
def test_a_staff_reschedule_and_cancel_reach_changes_once_across_a_restart(
    sb: Sandbox, vclock: VendorClock, vendor: str, tmp_path: Any
) -> None:
    url = f"sqlite:///{tmp_path}/state.db"
    got: list[AppointmentChange] = []
    first = vendor_client(sb, vendor, url, vclock)
    assert len(first.changes(feed="desk")) == 0  # the feed starts now
    vclock.tick(5)
    request = {
        "start": at(10).isoformat(),
        "duration_minutes": 30,
        "timezone": "America/New_York",
        "title": "Cleaning",
        "patient": {"name": "Ann Lee", "email": "ann.lee@example.com"},
        "reference": f"conv-{vendor}",
    }
    booked = first.book_appointment(request)
    vclock.tick(5)
    sb.staff_move(vendor, booked.id, at(14), at(14, 30))
    vclock.tick(5)
    got += first.changes(feed="desk")
    vclock.tick(30)
    got += first.changes(feed="desk")
    first.close()  # the consumer stops; staff cancel meanwhile
    vclock.tick(5)
    sb.staff_cancel(vendor, booked.id)
    vclock.tick(5)
    second = vendor_client(sb, vendor, url, vclock)  # a restarted consumer, same store and feed
    for pause in (0, 30, 90, 200):
        vclock.tick(pause)
        got += second.changes(feed="desk")
    second.close()
    # Salesforce has no cancelled state: staff cancel by deleting the Event, and the feed says so
    cancel_kind = ChangeKind.DELETED if vendor == "salesforce" else ChangeKind.CANCELLED
    assert [(c.kind, c.appointment_id) for c in got] == [
        (ChangeKind.RESCHEDULED, booked.id),
        (cancel_kind, booked.id),
    ]
    moved, cancelled = got
    assert moved.by_library and cancelled.by_library and moved.previous_start == booked.start
    assert moved.appointment is not None and moved.appointment.start == at(14)
    # (Salesforce's deleted Event is read back from the recycle bin, marked cancelled)
    assert cancelled.appointment is not None and cancelled.appointment.status is AppointmentStatus.CANCELLED
    assert all(c.provider is ProviderName.parse(vendor) and c.source == "feed" for c in got)


@pytest.mark.parametrize("vendor", VENDORS)
def test_one_thousand_changes_over_ten_polls_on_the_window_edges(
    sb: Sandbox, vclock: VendorClock, vendor: str
) -> None:
    """100 staff appointments, each moved once between every two polls: 20 of the moves land
    exactly on the previous poll's instant (after that poll ran), 20 exactly on the coming poll's
    instant (before it runs), the rest in between. Every poll reports exactly the 100 moves."""
    vclock.tick(-120)
    ids = [block(sb, vendor, at(8 + n // 20, (n % 20) * 3)) for n in range(100)]
    vclock.tick(120)
    client = vendor_client(sb, vendor, "memory://", vclock)
    cursor = client.changes().cursor
    polls = [T0 + dt.timedelta(seconds=30 * (k + 1)) for k in range(10)]
    reported: dict[str, int] = {}
    moved_to: dict[str, dt.datetime] = {}
    for k, edge in enumerate(polls):
        previous = polls[k - 1] if k else T0
        for n, appointment_id in enumerate(ids):
            if n < 20:
                vclock.now = previous
            elif n < 40:
                vclock.now = edge
            else:
                vclock.now = previous + dt.timedelta(milliseconds=1 + (n * 293) % 29_990)
            start = at(8 + (k + n) % 9, (n % 20) * 3)
            sb.staff_move(vendor, appointment_id, start, start + dt.timedelta(minutes=30))
            moved_to[appointment_id] = start
        vclock.now = edge
        batch = client.changes(cursor)
        cursor = batch.cursor
        assert len(batch) == 100, (k, len(batch))
        assert {c.appointment_id for c in batch} == set(ids)
        assert all(c.appointment is not None and c.appointment.start == moved_to[c.appointment_id] for c in batch)
        assert {c.kind for c in batch} <= {ChangeKind.RESCHEDULED, ChangeKind.UPDATED}
        for change in batch:
            reported[change.appointment_id] = reported.get(change.appointment_id, 0) + 1
    for pause in (30, 90, 600):  # the overlap drains: nothing is reported again
        vclock.tick(pause)
        batch = client.changes(cursor)
        cursor = batch.cursor
        assert len(batch) == 0
    assert sorted(reported.values()) == [10] * 100 and sum(reported.values()) == 1000
    client.close()


# -- the guide ---------------------------------------------------------------------------------


def test_the_guide_is_in_the_nav_and_its_watch_flags_exist() -> None:
    import re
    from pathlib import Path

    from pms_integration import cli

    root = Path(__file__).resolve().parent.parent
    assert "changes.md" in (root / "mkdocs.yml").read_text(encoding="utf-8")
    page = (root / "docs" / "changes.md").read_text(encoding="utf-8")
    watch = cli.build_parser()._subparsers._group_actions[0].choices["watch"]  # type: ignore[union-attr]
    known = {flag for action in watch._actions for flag in action.option_strings}
    used = set(re.findall(r"(--[a-z-]+)", page.split("## From the command line")[1].split("## Over HTTP")[0]))
    assert used and used <= known, used - known
    for kind in ChangeKind:
        assert f"`{kind.value}`" in page


@pytest.mark.parametrize("vendor", ["gohighlevel", "hubspot"])
def test_a_change_a_webhook_reported_is_not_reported_again_by_the_feed(
    sb: Sandbox, vclock: VendorClock, vendor: str
) -> None:
    client = vendor_client(sb, vendor, "memory://", vclock)
    cursor = client.changes().cursor
    emulator: Any = sb.emulator(vendor)
    adapter: Any = client.adapter(vendor)
    delivered = len(emulator.webhook_payloads(0))
    appointment_id = block(sb, vendor, at(9))
    hooked: list[AppointmentChange] = []
    for body in emulator.webhook_payloads(delivered):
        hooked += client.classify_observed(adapter.observe_webhook(body), provider=vendor)
    delivered = len(emulator.webhook_payloads(0))
    vclock.tick(5)
    sb.staff_move(vendor, appointment_id, at(11), at(11, 30))
    for body in emulator.webhook_payloads(delivered):  # delivered before the next change
        hooked += client.classify_observed(adapter.observe_webhook(body), provider=vendor)
    delivered = len(emulator.webhook_payloads(0))
    vclock.tick(5)
    sb.staff_cancel(vendor, appointment_id)
    for body in emulator.webhook_payloads(delivered):
        hooked += client.classify_observed(adapter.observe_webhook(body), provider=vendor)
    assert [(c.kind, c.source) for c in hooked] == [
        (ChangeKind.CREATED, "webhook"),
        (ChangeKind.RESCHEDULED, "webhook"),
        (ChangeKind.CANCELLED, "webhook"),
    ]
    for pause in (10, 60, 300):
        vclock.tick(pause)
        batch = client.changes(cursor)
        cursor = batch.cursor
        assert list(batch) == []  # the feed sees the same changes: already reported
    client.close()


@pytest.mark.parametrize("vendor", VENDORS)
def test_the_library_s_own_writes_are_reported_once_each_as_what_it_did(
    sb: Sandbox, vclock: VendorClock, vendor: str
) -> None:
    client = vendor_client(sb, vendor, "memory://", vclock)
    cursor = client.changes().cursor
    got: list[AppointmentChange] = []

    def poll() -> None:
        nonlocal cursor
        for pause in (5, 70):
            vclock.tick(pause)
            batch = client.changes(cursor)
            got.extend(batch)
            cursor = batch.cursor

    vclock.tick(5)
    request = {
        "start": at(9).isoformat(),
        "duration_minutes": 30,
        "timezone": "America/New_York",
        "title": "Check-up",
        "patient": {"name": "Bo Chen", "email": "bo.chen@example.com"},
        "reference": f"own-{vendor}",
    }
    booked = client.book_appointment(request)
    poll()
    client.update_appointment(booked.id, {"start": at(15).isoformat(), "duration_minutes": 30})
    poll()
    client.cancel_appointment(booked.id)
    poll()
    last = ChangeKind.DELETED if vendor == "salesforce" else ChangeKind.CANCELLED  # Salesforce deletes the Event
    assert [c.kind for c in got] == [ChangeKind.CREATED, ChangeKind.RESCHEDULED, last]
    assert all(c.by_library and c.appointment_id == booked.id for c in got)
    assert got[1].previous_start == booked.start
    client.close()


def test_a_read_only_look_takes_no_change_away_from_a_production_feed(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pms_integration import cli

    state = f"sqlite:///{tmp_path / 'state.db'}"
    feed = ScriptedFeed()
    clock = [T0]
    prod = scripted_client(feed, state, clock)
    assert len(prod.changes(provider="ghl", feed="prod")) == 0
    feed.log.append(seen("r1", T0 + dt.timedelta(seconds=5), created=T0 + dt.timedelta(seconds=5)))
    feed.log.append(seen("r2", T0 + dt.timedelta(seconds=6), created=T0 - dt.timedelta(days=1)))
    feed.log.append(seen("r2", T0 + dt.timedelta(seconds=8), start=T0 + dt.timedelta(days=4)))
    clock[0] = T0 + dt.timedelta(seconds=20)
    since = T0.isoformat()
    # a person debugging: watch without --feed prints the changes...
    monkeypatch.setattr(cli, "_client", lambda args: scripted_client(feed, state, clock))
    assert cli.main(["watch", "-p", "ghl", "--since", since, "--once"]) == 0
    out = capsys.readouterr().out
    assert "created r1" in out and "rescheduled r2" in out
    # ...and so does a look through the API, as often as asked
    looked = prod.changes(since=T0, provider="ghl", record=False)
    assert [(c.appointment_id, c.kind) for c in looked] == [
        ("r1", ChangeKind.CREATED), ("r2", ChangeKind.UPDATED), ("r2", ChangeKind.RESCHEDULED)
    ]
    assert [(c.appointment_id, c.kind) for c in prod.changes(since=T0, provider="ghl", record=False)] == [
        (c.appointment_id, c.kind) for c in looked
    ]
    # the production feed still gets every one of them, once
    got = prod.changes(provider="ghl", feed="prod")
    assert [(c.appointment_id, c.kind) for c in got] == [(c.appointment_id, c.kind) for c in looked]
    assert len(prod.changes(provider="ghl", feed="prod")) == 0
    with pytest.raises(ValidationError) as err:
        prod.changes(provider="ghl", record="no")  # type: ignore[arg-type]
    assert err.value.fields == ["record"]


def test_watch_with_a_feed_records_what_it_printed(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pms_integration import cli

    state = f"sqlite:///{tmp_path / 'state.db'}"
    feed = ScriptedFeed()
    clock = [T0]
    prod = scripted_client(feed, state, clock)
    assert len(prod.changes(provider="ghl", feed="prod")) == 0
    feed.log.append(seen("f1", T0 + dt.timedelta(seconds=5), created=T0 + dt.timedelta(seconds=5)))
    clock[0] = T0 + dt.timedelta(seconds=20)
    monkeypatch.setattr(cli, "_client", lambda args: scripted_client(feed, state, clock))
    assert cli.main(["watch", "-p", "ghl", "--since", T0.isoformat(), "--feed", "desk", "--once"]) == 0
    assert "created f1" in capsys.readouterr().out
    assert len(prod.changes(provider="ghl", feed="prod")) == 0  # documented: one view per account


@pytest.mark.parametrize(
    "since",
    [
        dt.datetime.min.replace(tzinfo=UTC),
        dt.datetime.min.replace(tzinfo=dt.timezone(dt.timedelta(hours=5))),
        dt.datetime.max.replace(tzinfo=dt.timezone(dt.timedelta(hours=-5))),
        dt.datetime.max.replace(tzinfo=UTC),
        dt.datetime(1969, 12, 31, 23, 59, tzinfo=UTC),
        T0 + dt.timedelta(days=2),  # the far future of the client's clock
        dt.datetime(9999, 1, 1, tzinfo=UTC),
    ],
    ids=["min", "min+5h", "max-5h", "max", "1969", "future", "9999"],
)
def test_a_since_out_of_range_is_a_validation_error_naming_since(since: dt.datetime) -> None:
    feed = ScriptedFeed()
    client = scripted_client(feed)
    with pytest.raises(ValidationError) as err:
        client.changes(since, provider="ghl")
    assert err.value.fields == ["since"]
    assert feed.calls == []  # nothing was asked of the vendor
    # the edges that are fine: the epoch, and a clock a little ahead
    assert client.changes(dt.datetime(1970, 1, 1, tzinfo=UTC), provider="ghl") is not None
    assert client.changes(T0 + dt.timedelta(hours=1), provider="ghl") is not None
