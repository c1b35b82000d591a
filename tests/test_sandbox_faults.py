"""Each fault kind, on each provider's create, ends in a typed error or a successful retry -
and never in a second booking. Also: the pytest plugin and the ``sandbox`` command."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

import pms_integration as pms
from pms_integration._retry import RetryPolicy
from pms_integration.sandbox import Fault, RollingWindow, Sandbox
from pms_integration.testing import SandboxSession

CREATE_OPERATION = {"gohighlevel": "appointments.create", "salesforce": "sobjects.create", "hubspot": "deals.create"}
LOOKUP_OPERATION = {"gohighlevel": "appointments.list", "salesforce": "query", "hubspot": "deals.search"}
UPDATE_OPERATION = {"gohighlevel": "appointments.update", "salesforce": "sobjects.update", "hubspot": "meetings.update"}
TOKEN_VARIABLE = {"gohighlevel": "PMS_GHL_API_KEY", "salesforce": "PMS_SALESFORCE_TOKEN", "hubspot": "PMS_HUBSPOT_PRIVATE_APP_TOKEN"}
TZ = dt.timezone(dt.timedelta(hours=-5))


def booking(i: int) -> dict[str, Any]:
    return {
        "start": (dt.datetime(2027, 2, 1, 9, 0, tzinfo=TZ) + dt.timedelta(minutes=30 * i)).isoformat(),
        "duration_minutes": 30,
        "timezone": "America/New_York",
        "patient": {"name": "Jane Doe", "email": f"jane{i}@example.com"},
        "reference": f"fault-{i}",
    }


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(seed=3) as sb:
        yield sb


def client_for(sb: Sandbox) -> pms.PMSClient:
    env = sb.environ()
    env.update({f"PMS_{p}_TIMEOUT_MS": "300" for p in ("GHL", "SALESFORCE", "HUBSPOT")})
    # the Event create alone (a new patient's Contact + Event composite: test_salesforce_reads)
    env["PMS_SALESFORCE_PATIENT_RECORD"] = "off"
    return pms.PMSClient(
        environ=env, env_file=None, retry_policy=RetryPolicy(backoff_initial=0.01, backoff_max=0.05, jitter=0.01)
    )


def bookings(sb: Sandbox, provider: str, reference: str) -> int:
    """Records carrying ``reference`` (for HubSpot the deal: it is created first)."""
    key = "deals" if provider == "hubspot" else "bookings"
    return sum(1 for b in sb.state(provider)[key] if reference in repr(b))


RECOVERED = {
    "503 before commit": Fault.server_error(503),
    "502 after commit": Fault.server_error(502, commit=True),
    "429": Fault.rate_limit(retry_after=0.01),
    "timeout after commit": Fault.delay(0.6),
    "reset after commit": Fault.reset_after_commit(),
    "reset before commit": Fault.drop(),
}


@pytest.mark.parametrize("provider", ["gohighlevel", "salesforce", "hubspot"])
@pytest.mark.parametrize("kind", list(RECOVERED))
def test_create_faults_recover_with_exactly_one_booking(sandbox: Sandbox, provider: str, kind: str) -> None:
    sandbox.inject(provider, RECOVERED[kind], operation=CREATE_OPERATION[provider], times=1)
    with client_for(sandbox) as client:
        appt = client.book_appointment(booking(1), provider=provider)
    assert appt.reference == "fault-1"
    assert bookings(sandbox, provider, "fault-1") == 1
    assert sum(rule.fired for rule, _ in sandbox.faults_fired()) == 1


@pytest.mark.parametrize("provider", ["gohighlevel", "salesforce", "hubspot"])
def test_expired_token_is_an_authentication_error_naming_the_variable(sandbox: Sandbox, provider: str) -> None:
    sandbox.inject(provider, Fault.expired_token(), times=1)
    with client_for(sandbox) as client, pytest.raises(pms.AuthenticationError) as err:
        client.book_appointment(booking(2), provider=provider)
    assert TOKEN_VARIABLE[provider] in str(err.value)
    assert bookings(sandbox, provider, "fault-2") == 0


@pytest.mark.parametrize("provider", ["gohighlevel", "salesforce", "hubspot"])
def test_undecidable_create_is_outcome_unknown_with_the_reference(sandbox: Sandbox, provider: str) -> None:
    # every create fails (after committing) and every look-up fails too: nobody can tell
    sandbox.inject(provider, Fault.server_error(503, commit=True), operation=CREATE_OPERATION[provider])
    sandbox.inject(provider, Fault.server_error(503), operation=LOOKUP_OPERATION[provider])
    if provider == "hubspot":  # HubSpot's consistent look-up (the contact's deals) fails too
        sandbox.inject(provider, Fault.server_error(503), operation="contacts.read")
    with client_for(sandbox) as client, pytest.raises(pms.ServerError) as err:
        client.book_appointment(booking(3), provider=provider)
    assert err.value.outcome_unknown and "fault-3" in str(err.value)
    assert bookings(sandbox, provider, "fault-3") == 1  # it did exist: exactly once


@pytest.mark.parametrize("provider", ["gohighlevel", "hubspot"])
def test_failure_before_the_create_is_a_known_outcome(sandbox: Sandbox, provider: str) -> None:
    # the contact step fails for good: nothing was booked, and the error says so
    sandbox.inject(provider, Fault.server_error(503), operation="contacts.*")
    with client_for(sandbox) as client, pytest.raises(pms.ServerError) as err:
        client.book_appointment(booking(8), provider=provider)
    assert not err.value.outcome_unknown
    assert bookings(sandbox, provider, "fault-8") == 0


@pytest.mark.parametrize("provider", ["gohighlevel", "salesforce", "hubspot"])
def test_update_faults_are_retried(sandbox: Sandbox, provider: str) -> None:
    with client_for(sandbox) as client:
        appt = client.book_appointment(booking(4), provider=provider)
        sandbox.inject(provider, Fault.server_error(503), operation=UPDATE_OPERATION[provider], times=1)
        sandbox.inject(provider, Fault.reset_after_commit(), operation=UPDATE_OPERATION[provider], times=1)
        moved = client.update_appointment(
            appt.id, {"start": dt.datetime(2027, 2, 2, 9, 0, tzinfo=TZ).isoformat(), "duration_minutes": 30}, provider=provider
        )
    assert moved.start is not None and moved.start.day == 2


# -- the pytest plugin (installed through the pytest11 entry point) ---------------------------


def test_pms_sandbox_fixture_makes_a_sandbox_client_the_default(pms_sandbox: SandboxSession) -> None:
    appt = pms.book_appointment(booking(5), provider="salesforce")
    assert pms.get_client() is pms_sandbox.client
    assert len(pms_sandbox.state("salesforce")["bookings"]) == 1 and appt.reference == "fault-5"


@pytest.mark.pms_provider("hubspot")
def test_pms_provider_marker_sets_the_default(pms_sandbox: SandboxSession) -> None:
    appt = pms.book_appointment(booking(6))
    assert appt.provider is pms.ProviderName.HUBSPOT


# -- the sandbox command --------------------------------------------------------------------


def test_sandbox_command_serves_until_interrupted(tmp_path: Any) -> None:
    env_file = tmp_path / "sandbox.env"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pms_integration", "sandbox", "--port", "0", "--write-env", str(env_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert "Sandbox running at http://127.0.0.1:" in first
        for _ in range(100):
            if env_file.exists() and env_file.stat().st_size:
                break
            time.sleep(0.05)
        client = pms.PMSClient(env_file=env_file, environ={})
        with client:
            appt = client.book_appointment(booking(7), provider="ghl")
        assert appt.reference == "fault-7"
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=10)
    text = first + out + err
    secret_names = ("PMS_GHL_API_KEY", "PMS_SALESFORCE_TOKEN", "PMS_HUBSPOT_PRIVATE_APP_TOKEN")
    assert not any(name + "=" in text for name in secret_names)


def test_serve_command_answers_on_loopback_against_the_sandbox() -> None:
    import socket

    import requests

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "pms_integration", "serve", "--sandbox", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        for _ in range(100):
            try:
                resp = requests.get(f"http://127.0.0.1:{port}/api/integrations/pms/providers", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        else:
            raise AssertionError("the server did not come up")
        assert resp.status_code == 200
        assert {p["name"] for p in resp.json()["providers"] if p["enabled"]} == {"gohighlevel", "salesforce", "hubspot"}
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


HALF_MADE = {"gohighlevel": "appointments.create", "salesforce": "sobjects.create", "hubspot": "meetings.create"}
#: the look-ups that find a half-made booking (HubSpot: the deal by id and its meeting; failing them is
#: enough, and a meetings search is also the conflict check that runs before the create)
RECOVER_LOOKUPS = {**{p: [op] for p, op in LOOKUP_OPERATION.items()}, "hubspot": ["deals.read", "meetings.read"]}


@pytest.mark.parametrize("provider", ["gohighlevel", "salesforce", "hubspot"])
@pytest.mark.parametrize("committed", [True, False])
def test_retry_after_outcome_unknown_reconciles_instead_of_booking_twice(
    sandbox: Sandbox, provider: str, committed: bool
) -> None:
    # the create's answer is lost and every look-up fails: the first call cannot decide
    sandbox.inject(provider, Fault.server_error(503, commit=committed), operation=HALF_MADE[provider], times=1)
    lookups = [sandbox.inject(provider, Fault.server_error(503), operation=op) for op in RECOVER_LOOKUPS[provider]]
    request = booking(9)
    with client_for(sandbox) as client:
        with pytest.raises(pms.ProviderError) as err:
            client.book_appointment(request, provider=provider)
        assert err.value.outcome_unknown and err.value.reference == "fault-9"
        for rule in lookups:
            rule.times = rule.fired  # the vendor recovers
        again = client.book_appointment(request, provider=provider)
        assert again.reference == "fault-9"
        assert client.book_appointment(request, provider=provider) is again
    assert bookings(sandbox, provider, "fault-9") == 1
    if provider == "hubspot":
        meetings = [m for m in sandbox.state("hubspot")["meetings"] if "fault-9" in repr(m)]
        assert len(meetings) == 1
    # another process (a new client) finds the same booking through recover_booking
    with client_for(sandbox) as other:
        found = other.recover_booking(request, provider=provider)
        assert found is not None and found.id == again.id
        assert other.recover_booking({**request, "reference": "fault-never"}, provider=provider) is None


@pytest.mark.pms_environ({"PMS_MAX_ATTEMPTS": "1"})
def test_pms_environ_marker_reaches_the_client(pms_sandbox: SandboxSession) -> None:
    assert pms_sandbox.client.config.max_attempts == 1
    assert pms_sandbox.environ["PMS_MAX_ATTEMPTS"] == "1"


@pytest.mark.parametrize("deadline_ms", ["30000", "2500"])
def test_hubspot_search_lag_never_turns_into_a_second_deal(sandbox: Sandbox, deadline_ms: str) -> None:
    # The deal is saved but the answer is lost, and search shows it only after 0.5 s. With
    # time to let the index settle, the look-up finds it; without, the call must say it cannot
    # tell (outcome_unknown) rather than create the deal again.
    sandbox.emulator("hubspot").search_lag = 0.5  # type: ignore[attr-defined]
    sandbox.inject("hubspot", Fault.reset_after_commit(), operation="deals.create", times=1)
    env = sandbox.environ()
    env["PMS_DEADLINE_MS"] = deadline_ms
    with pms.PMSClient(environ=env, env_file=None) as client:
        try:
            appt = client.book_appointment(booking(10), provider="hubspot")
            assert appt.reference == "fault-10"
        except pms.ProviderError as exc:
            assert exc.outcome_unknown and deadline_ms == "2500"
    assert bookings(sandbox, "hubspot", "fault-10") == 1


@pytest.mark.parametrize("provider", ["gohighlevel", "salesforce", "hubspot"])
def test_reload_keeps_the_duplicate_booking_memory(sandbox: Sandbox, provider: str) -> None:
    env = {**sandbox.environ(), "PMS_SALESFORCE_PATIENT_RECORD": "off"}  # the Event create alone
    pms.reload(env, env_file=None)
    first = pms.book_appointment(booking(11), provider=provider)
    # an unknown outcome just before a reload: the next client must still look it up first
    sandbox.inject(provider, Fault.server_error(503, commit=True), operation=HALF_MADE[provider], times=1)
    rules = [sandbox.inject(provider, Fault.server_error(503), operation=op) for op in RECOVER_LOOKUPS[provider]]
    with pytest.raises(pms.ProviderError) as err:
        pms.book_appointment(booking(12), provider=provider)
    assert err.value.outcome_unknown
    for rule in rules:
        rule.times = rule.fired
    pms.reload(env, env_file=None)
    assert pms.book_appointment(booking(11), provider=provider) is first  # finished: remembered
    pms.book_appointment(booking(12), provider=provider)  # unknown: looked up, not re-created
    assert bookings(sandbox, provider, "fault-11") == 1
    assert bookings(sandbox, provider, "fault-12") == 1
    # pointed at another account, a provider starts with a clean memory
    other = dict(env, PMS_SALESFORCE_OWNER_ID="005000000000002AAA", PMS_GHL_CALENDAR_ID="otherCal", PMS_HUBSPOT_PIPELINE_ID="other")
    client = pms.reload(other, env_file=None)
    assert client.memory is pms.get_client().memory
    assert client.adapter(provider).account != pms.PMSClient(environ=env, env_file=None).adapter(provider).account


def test_sandbox_is_loopback_only_and_takes_partial_tokens() -> None:
    with pytest.raises(ValueError, match="loopback"):
        Sandbox(host="0.0.0.0")
    with Sandbox(host="::1", tokens={"ghl": "ghl-token-for-this-test"}) as sb:
        assert sb.url.startswith("http://[::1]:")
        assert sb.environ()["PMS_GHL_API_KEY"] == "ghl-token-for-this-test"
        with pms.PMSClient(environ=sb.environ(), env_file=None) as client:
            assert client.book_appointment(booking(13), provider="ghl").reference == "fault-13"


def test_rolling_window_counts_requests_and_says_how_long_to_wait() -> None:
    now = [0.0]
    window = RollingWindow(10.0, clock=lambda: now[0])
    assert window.take(2) is None
    now[0] = 2.0
    assert window.take(2) is None and len(window) == 2
    now[0] = 4.0
    assert window.take(2) == pytest.approx(6.0) and len(window) == 2  # refused: nothing counted
    now[0] = 10.0  # the first request leaves the window
    assert window.take(2) is None and len(window) == 2
    assert window.take() is None and len(window) == 3  # without a limit it only counts
