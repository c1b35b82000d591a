"""Never double-book, never leak: faults, bursts, hostile input, canaries, concurrency.

Everything here runs over real loopback sockets against the built-in sandbox.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import logging
import os
import re
import threading
import time
import zoneinfo
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import responses
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pms_integration as pms
from pms_integration import cli
from pms_integration._retry import RetryPolicy
from pms_integration.models import ProviderName
from pms_integration.sandbox import Fault, Sandbox

from .conftest import full_environ

START = dt.datetime(2027, 3, 1, 8, 0, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
NEW_YORK = zoneinfo.ZoneInfo("America/New_York")
FAST_RETRIES = RetryPolicy(max_attempts=3, backoff_initial=0.02, backoff_max=0.1, jitter=0.02)


def _request(i: int, reference: str | None = None) -> dict[str, Any]:
    return {
        # a distinct 30-minute slot per booking: GoHighLevel refuses a taken slot
        # (given with New York's own offset on that date: later slots fall after the DST change)
        "start": (START + dt.timedelta(minutes=30 * i)).astimezone(NEW_YORK).isoformat(),
        "duration_minutes": 30,
        "timezone": "America/New_York",
        "title": "Cleaning",
        "patient": {"name": f"Patient {i}", "email": f"patient{i}@example.com", "phone": f"+1555{i:07d}"},
        "reference": reference or f"rel-{i:05d}",
    }


def _references_in(records: list[Any]) -> collections.Counter[str]:
    """How many records mention each ``rel-NNNNN`` reference."""
    counts: collections.Counter[str] = collections.Counter()
    for record in records:
        for ref in set(re.findall(r"rel-\d{5}", json.dumps(record))):
            counts[ref] += 1
    return counts


def _record_lists(state: dict[str, Any]) -> dict[str, list[Any]]:
    """The emulator's record collections that must hold one record per booking."""
    keys = [k for k in ("bookings", "events", "deals", "meetings") if isinstance(state.get(k), list)]
    return {k: state[k] for k in keys}


def _assert_no_duplicates(sandbox: Sandbox) -> int:
    """Assert no reference is on two records of one kind; return how many bookings exist."""
    booked = 0
    for name in sandbox.emulators:
        per_provider = 0
        for kind, records in _record_lists(sandbox.state(name)).items():
            counts = _references_in(records)
            dupes = {ref: n for ref, n in counts.items() if n > 1}
            assert dupes == {}, f"{name.value} {kind}: duplicated references {dupes}"
            per_provider = max(per_provider, len(counts))
        booked += per_provider
    return booked


def _client(sandbox: Sandbox, **env: str) -> pms.PMSClient:
    environ = sandbox.environ()
    for prefix in ("GHL", "SALESFORCE", "HUBSPOT"):
        environ[f"PMS_{prefix}_RATE_LIMIT"] = "off"  # the sandbox enforces no window here
    environ.update(env)
    return pms.PMSClient(environ=environ, env_file=None, retry_policy=FAST_RETRIES)


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(seed=20261124) as sb:
        sb.emulator("ghl").open_hours = None  # type: ignore[attr-defined]  # these tests book round the clock
        sb.emulator("hubspot").burst_limit = None  # type: ignore[attr-defined]  # on by default: 100/10 s
        sb.emulator("hubspot").search_rate = None  # type: ignore[attr-defined]  # 5/s; every booking searches once
        yield sb


def _providers(sandbox: Sandbox) -> list[ProviderName]:
    names = list(sandbox.emulators)
    if not names:
        pytest.skip("no vendor emulator in this build")
    return names


@pytest.mark.slow
def test_thousand_bookings_under_random_faults_never_duplicate(sandbox: Sandbox) -> None:
    names = _providers(sandbox)
    timeout_ms = 250
    deadline = 4.0
    for name in names:
        # marginal share of each kind: 12% of requests (rules are tried in order)
        sandbox.inject(name, Fault.reset_after_commit(), probability=0.12)
        # half of the 503s come after the write was saved (a gateway timing out), half before
        sandbox.inject(name, Fault.server_error(503, commit=True), probability=0.06 / 0.88)
        sandbox.inject(name, Fault.server_error(503), probability=0.06 / 0.8272)
        sandbox.inject(name, Fault.rate_limit(retry_after=0.05), probability=0.12 / 0.7776)
        sandbox.inject(name, Fault.delay(timeout_ms / 1000 * 2), probability=0.12 / 0.6576)
    env = {f"PMS_{p}_TIMEOUT_MS": str(timeout_ms) for p in ("GHL", "SALESFORCE", "HUBSPOT")}
    env["PMS_DEADLINE_MS"] = str(int(deadline * 1000))
    client = _client(sandbox, **env)
    outcomes: collections.Counter[str] = collections.Counter()
    overruns: list[float] = []
    untyped: list[BaseException] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        name = names[i % len(names)]
        began = time.monotonic()
        try:
            appt = client.book_appointment(_request(i), provider=name)
            kind = "booked" if appt.reference == f"rel-{i:05d}" else "wrong-reference"
        except pms.PMSError as exc:
            kind = type(exc).__name__ + (" (outcome unknown)" if getattr(exc, "outcome_unknown", False) else "")
        except BaseException as exc:
            with lock:
                untyped.append(exc)
            return
        took = time.monotonic() - began
        with lock:
            outcomes[kind] += 1
            if took > deadline + 0.5:
                overruns.append(took)

    with client, ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(one, range(1000)))

    assert untyped == []
    assert sum(outcomes.values()) == 1000
    assert outcomes["wrong-reference"] == 0
    assert overruns == [], f"calls outlived the {deadline} s deadline: {sorted(overruns)[-5:]}"
    fired = collections.Counter(r.fault for r in sandbox.records if r.fault)
    total = len(sandbox.records)
    for kind in ("reset_after_commit", "server_error", "rate_limit", "delay"):
        assert fired[kind] / total >= 0.10, (kind, fired, total)
    booked = _assert_no_duplicates(sandbox)
    assert outcomes["booked"] >= 500, outcomes
    assert booked >= outcomes["booked"]
    logging.getLogger(__name__).info("fault run: %s; requests %d; faults %s", dict(outcomes), total, dict(fired))


def test_burst_of_300_at_50_per_second_sees_no_429(sandbox: Sandbox) -> None:
    name = _providers(sandbox)[0]
    sandbox.set_rate_limit(name, 50, 1.0)
    prefix = {ProviderName.GOHIGHLEVEL: "GHL", ProviderName.SALESFORCE: "SALESFORCE", ProviderName.HUBSPOT: "HUBSPOT"}[name]
    client = _client(sandbox, **{f"PMS_{prefix}_RATE_LIMIT": "50/1"})
    report = {"period_start": "2026-11-01", "period_end": "2026-11-01", "metrics": {"calls": 1}}
    with client:
        appt = client.book_appointment(_request(0), provider=name)
        sent_before = sandbox.request_count(name)

        def update(i: int) -> None:
            client.update_appointment(appt.id, {"title": f"Cleaning {i}"}, provider=name)

        with ThreadPoolExecutor(max_workers=8) as pool:
            while sandbox.request_count(name) - sent_before < 300:
                list(pool.map(update, range(25)))
        client.push_performance_report(report, provider=name)
    assert sandbox.request_count(name) - sent_before >= 300
    assert sandbox.rate_limited == 0
    assert sandbox.request_count(name, status=429) == 0


@pytest.mark.parametrize(
    ("provider", "client_limit", "vendor_limit"),
    [("gohighlevel", "50/1", 30), ("hubspot", "100/10", 20), ("gohighlevel", "100/10", 20)],
)
def test_limiter_adapts_to_a_stricter_vendor_limit(sandbox: Sandbox, provider: str, client_limit: str, vendor_limit: int) -> None:
    sandbox.set_rate_limit(provider, vendor_limit, 1.0)
    prefix = {"gohighlevel": "GHL", "hubspot": "HUBSPOT"}[provider]
    client = _client(sandbox, **{f"PMS_{prefix}_RATE_LIMIT": client_limit})
    with client:
        appt = client.book_appointment(_request(0), provider=provider)
        before = sandbox.request_count(provider)
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda i: client.update_appointment(appt.id, {"title": f"T{i}"}, provider=provider), range(80)))
    sent = sandbox.request_count(provider) - before
    assert sent >= 80
    # the vendor's headers report its limit with the very first answers; from then on the
    # client keeps to it (at most the requests already on their way may be refused)
    assert sandbox.request_count(provider, status=429) <= 8


# -- hostile input (hostile ids: tests/test_one_behaviour.py) ------------------------------

_json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**12), 10**12), st.floats(allow_nan=True), st.text(max_size=30)
)
_json = st.recursive(_json_leaf, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=12), kids, max_size=4), max_leaves=12)
_keys = st.sampled_from(
    ["start", "end", "duration_minutes", "timezone", "patient", "title", "reason", "notes", "reference", "extra",
     "period_start", "period_end", "metrics", "report_id", "summary", "email", "phone", "name", "zzz"]
)  # fmt: skip
_dicts = st.dictionaries(st.one_of(_keys, st.text(max_size=10)), _json, max_size=8)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=_dicts, some_id=st.text(max_size=20), provider=st.sampled_from(["ghl", "salesforce", "hubspot", "x", None]))
def test_random_input_only_ever_raises_pms_errors(data: dict[str, Any], some_id: str, provider: str | None) -> None:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        client = pms.PMSClient(environ=full_environ(), env_file=None, retry_policy=RetryPolicy(max_attempts=1))
        calls = [
            lambda: client.book_appointment(data, provider=provider),
            lambda: client.update_appointment(some_id, data, provider=provider),
            lambda: client.cancel_appointment(some_id, reason=data.get("reason"), provider=provider),  # type: ignore[arg-type]
            lambda: client.push_performance_report(data, provider=provider),
        ]
        for call in calls:
            before = len(mock.calls)
            try:
                call()
            except pms.ValidationError:
                assert len(mock.calls) == before, "a request was sent for invalid input"
            except pms.UnexpectedResponseError as exc:
                # the client turns a crash inside the library into this error; for input that
                # never reached a vendor that would be a bug, not an answer
                assert "inside the library" not in str(exc), f"library crash on {data!r}: {exc.__cause__!r}"
            except pms.PMSError:
                pass


# -- secrets -------------------------------------------------------------------------------

CANARY_TOKENS = {
    ProviderName.GOHIGHLEVEL: "pit-canary-5e1f0c2a-ghl-token",
    ProviderName.SALESFORCE: "00DcanaryORG0001!AQcanary.salesforce.token.value",
    ProviderName.HUBSPOT: "pat-na1-canary77-hubspot-token-0000",
}


def test_canary_tokens_appear_nowhere(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    with Sandbox(tokens=CANARY_TOKENS, seed=7) as sb:
        sb.emulator("ghl").open_hours = None  # type: ignore[attr-defined]  # bookings round the clock
        names = _providers(sb)
        with _client(sb) as client:
            seen += [repr(client), repr(client.config), *(repr(s) + str(s) for s in client.providers())]
            seen.append(cli.format_status_table(client.providers()))
            for i, name in enumerate(names):
                faults = [None, Fault.server_error(503), Fault.rate_limit(0.01), Fault.reset_after_commit(), Fault.drop(), Fault.expired_token(), Fault.delay(0.3)]
                for j, fault in enumerate(faults):
                    sb.clear_faults()
                    if fault is not None:
                        sb.inject(name, fault, times=1)
                    k = 100 * i + 10 * j
                    try:
                        appt = client.book_appointment(_request(k), provider=name)
                        seen.append(repr(appt))
                        client.update_appointment(appt.id, {"title": "Moved"}, provider=name)
                        client.cancel_appointment(appt.id, provider=name)
                        receipt = client.push_performance_report(
                            {"period_start": "2026-11-01", "period_end": "2026-11-02", "metrics": {"calls": k}}, provider=name
                        )
                        seen.append(repr(receipt))
                    except pms.PMSError as exc:
                        seen += [str(exc), repr(exc), str(getattr(exc, "body_excerpt", ""))]
        # the CLI, configured through the environment
        for key, value in sb.environ().items():
            monkeypatch.setenv(key, value)
        for name in names:
            cli.main(["book", "--provider", name.value, json.dumps(_request(900 + list(ProviderName).index(name)))])
            cli.main(["cancel", "--provider", name.value, "0000000000000000AAA"])
        cli.main(["providers"])
    captured = capsys.readouterr()
    seen += [captured.out, captured.err]
    seen += [r.getMessage() for r in caplog.records]
    seen += [str(r.exc_info[1]) for r in caplog.records if r.exc_info]
    blob = "\n".join(seen)
    for token in CANARY_TOKENS.values():
        assert token not in blob


# -- concurrency ---------------------------------------------------------------------------


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to count sockets")
def test_32_threads_on_all_providers_at_once(sandbox: Sandbox) -> None:
    names = _providers(sandbox)
    fds_before = _open_fds()
    client = _client(sandbox)
    results: dict[int, Any] = {}
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        for k in range(6):
            i = 1000 + t * 6 + k
            try:
                results[i] = client.book_appointment(_request(i), provider=names[i % len(names)])
            except BaseException as exc:
                errors.append(exc)

    with ThreadPoolExecutor(32) as pool:
        list(pool.map(worker, range(32)))
    assert errors == []
    assert len(results) == 32 * 6
    for i, appt in results.items():
        assert appt.reference == f"rel-{i:05d}" and appt.provider is names[i % len(names)]
    _assert_no_duplicates(sandbox)
    # keep-alive pools: connections are reused, never one per request
    assert sandbox.connections_opened <= 3 * 64
    client.close()
    for _ in range(50):
        if sandbox.open_connections == 0 and _open_fds() <= fds_before:
            break
        time.sleep(0.05)
    assert sandbox.open_connections == 0
    assert _open_fds() <= fds_before
