"""The client layer: provider resolution, validation before I/O, reload, dedupe, secrets."""

from __future__ import annotations

import gc
import importlib
import logging
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import responses

import pms_integration as pms
from pms_integration.client import PMSClient
from pms_integration.models import ProviderName

from .conftest import CANARY, full_environ

provider_registry = importlib.import_module("pms_integration.providers")
GHL = "https://services.leadconnectorhq.com"
BOOKING = {"start": "2030-03-05T10:00:00-05:00", "patient": {"name": "Jane Doe", "email": "jane@example.com"}}


@pytest.fixture(autouse=True)
def fake_ghl(monkeypatch: pytest.MonkeyPatch) -> None:
    """Route the GoHighLevel slot to the fake adapter in tests/fake_adapter.py."""
    monkeypatch.setitem(provider_registry.MODULES, ProviderName.GOHIGHLEVEL, "tests.fake_adapter")


@pytest.fixture
def mock() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps


def ghl_only(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in full_environ().items() if k.startswith("PMS_GHL_")}
    env["PMS_GHL_RATE_LIMIT"] = "off"  # these tests are about the client, not the limiter
    env.update(extra)
    return env


def client(env: dict[str, str] | None = None) -> PMSClient:
    return PMSClient(environ=env if env is not None else ghl_only(), env_file=None, sleep=lambda s: None)


# -- validation before any request ---------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: pms.book_appointment({**BOOKING, "start": "2030-03-05T10:00:00"}), "start"),
        (lambda: pms.book_appointment({**BOOKING, "end": "2030-03-05T09:00:00-05:00"}), "end"),
        (lambda: pms.book_appointment({**BOOKING, "patient": {"name": "X"}}), "patient.email"),
        (lambda: pms.book_appointment({**BOOKING, "patient": {"email": "x@"}}), "patient.email"),
        (lambda: pms.book_appointment(BOOKING, provider="zoho"), "provider"),
        (lambda: pms.book_appointment({**BOOKING, "colour": "red"}), "colour"),
        (lambda: pms.book_appointment({**BOOKING, "duration_minutes": "long"}), "duration_minutes"),
        (lambda: pms.book_appointment("tuesday 10am"), "request"),  # type: ignore[arg-type]
        (lambda: pms.update_appointment("../admin", {"title": "x"}), "appointment_id"),
        (lambda: pms.update_appointment("abc", {"start": "2030-03-05T10:00:00-05:00"}), "end"),
        (lambda: pms.update_appointment("abc", {"title": 5}), "title"),
        (lambda: pms.cancel_appointment("a%2Fb"), "appointment_id"),
        (lambda: pms.cancel_appointment("abc", reason=7), "reason"),  # type: ignore[arg-type]
        (lambda: pms.push_performance_report({"period_start": "2026-11-01"}), "period_end"),
        (lambda: pms.push_performance_report(), "report"),
    ],
)
def test_bad_input_is_a_validation_error_naming_the_field_and_sends_nothing(
    mock: responses.RequestsMock, call: Any, field: str
) -> None:
    pms.use_client(client())
    with pytest.raises(pms.ValidationError) as err:
        call()
    assert field in err.value.fields, err.value.errors
    assert len(mock.calls) == 0


def test_provider_and_input_errors_are_reported_together(mock: responses.RequestsMock) -> None:
    with pytest.raises(pms.ValidationError) as err:
        client().book_appointment({**BOOKING, "start": "noon"}, provider="nope")
    assert set(err.value.fields) == {"start", "provider"}


# -- provider resolution -------------------------------------------------------------------


def test_disabled_provider_names_the_variables() -> None:
    with pytest.raises(pms.ProviderNotConfiguredError) as err:
        client().book_appointment(BOOKING, provider="hubspot")
    assert err.value.missing == ("PMS_HUBSPOT_PRIVATE_APP_TOKEN",)
    assert "PMS_HUBSPOT_PRIVATE_APP_TOKEN" in str(err.value)


def test_resolution_order() -> None:
    assert client().resolve(None) is ProviderName.GOHIGHLEVEL  # the only enabled one
    assert client().resolve("ghl") is ProviderName.GOHIGHLEVEL
    many = client(full_environ())
    with pytest.raises(pms.ConfigurationError, match="gohighlevel, salesforce, hubspot"):
        many.resolve(None)
    assert client(full_environ(PMS_DEFAULT_PROVIDER="hubspot")).resolve(None) is ProviderName.HUBSPOT
    with pytest.raises(pms.ConfigurationError, match="No provider is configured"):
        client({}).resolve(None)


def test_missing_adapter_is_unsupported_not_a_fake_success(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(provider_registry.MODULES, ProviderName.GOHIGHLEVEL, "pms_integration.providers.not_there")
    with pytest.raises(pms.UnsupportedOperationError):
        client().book_appointment(BOOKING)


# -- booking, dedupe, reconcile --------------------------------------------------------------


def test_book_through_the_module_function(mock: responses.RequestsMock) -> None:
    mock.add("POST", GHL + "/book", json={"id": "apt1"})
    pms.use_client(client())
    appt = pms.bookAppointment(BOOKING)
    assert appt.id == "apt1" and appt.provider is ProviderName.GOHIGHLEVEL
    assert appt.reference and appt.reference.startswith("bk-")


def test_same_reference_twice_creates_once(mock: responses.RequestsMock) -> None:
    mock.add("POST", GHL + "/book", json={"id": "apt1"})
    c = client()
    first = c.book_appointment({**BOOKING, "reference": "conv-7"})
    again = c.book_appointment({**BOOKING, "reference": "conv-7"})
    assert first is again and len(mock.calls) == 1
    with pytest.raises(pms.ValidationError) as err:
        c.book_appointment({**BOOKING, "reference": "conv-7", "start": "2030-03-06T10:00:00-05:00"})
    assert err.value.fields == ["reference"]


def test_same_reference_from_many_threads_creates_once(mock: responses.RequestsMock) -> None:
    mock.add("POST", GHL + "/book", json={"id": "apt1"})
    c = client()
    results: list[Any] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        results.append(c.book_appointment({**BOOKING, "reference": "conv-8"}))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8 and len({id(r) for r in results}) == 1
    assert len([call for call in mock.calls if call.request.method == "POST"]) == 1


def test_ambiguous_create_found_by_reference_is_not_created_again(mock: responses.RequestsMock) -> None:
    mock.add("POST", GHL + "/book", body=requests.exceptions.ReadTimeout())
    mock.add("GET", GHL + "/find", json={"id": "apt-existing"})
    appt = client().book_appointment(BOOKING)
    assert appt.id == "apt-existing"
    assert [c.request.method for c in mock.calls] == ["POST", "GET"]


def test_ambiguous_create_not_found_is_created_once_more(mock: responses.RequestsMock) -> None:
    mock.add("POST", GHL + "/book", status=503)
    mock.add("GET", GHL + "/find", status=404)
    mock.add("POST", GHL + "/book", json={"id": "apt2"})
    assert client().book_appointment(BOOKING).id == "apt2"
    assert [c.request.method for c in mock.calls] == ["POST", "GET", "POST"]


def test_undecidable_create_raises_outcome_unknown_with_the_reference(mock: responses.RequestsMock) -> None:
    mock.add("POST", GHL + "/book", body=requests.exceptions.ReadTimeout())
    mock.add("GET", GHL + "/find", status=500)
    with pytest.raises(pms.ProviderError) as err:
        client().book_appointment({**BOOKING, "reference": "conv-99"})
    assert err.value.outcome_unknown and err.value.reference == "conv-99"
    assert "conv-99" in str(err.value)
    assert [c.request.method for c in mock.calls].count("POST") == 1


def test_adapter_bug_is_wrapped_not_leaked_as_key_error(mock: responses.RequestsMock) -> None:
    mock.add("POST", GHL + "/book", json={"no_id": True})
    with pytest.raises(pms.UnexpectedResponseError) as err:
        client().book_appointment(BOOKING)
    assert err.value.outcome_unknown and isinstance(err.value.__cause__, KeyError)


def test_report_source_is_used_when_no_report_is_given(mock: responses.RequestsMock) -> None:
    mock.add("POST", GHL + "/reports", json={"id": "note1"})
    pms.use_client(client())
    pms.set_report_source(lambda: {"period_start": "2026-11-01", "period_end": "2026-11-07", "metrics": {"calls": 3}})
    try:
        receipt = pms.pushPerformanceReport()
    finally:
        pms.set_report_source(None)
    assert receipt.report_id == "pms-report-2026-11-01-2026-11-07"


# -- reload --------------------------------------------------------------------------------


def test_bad_reload_raises_and_the_old_client_keeps_serving(mock: responses.RequestsMock) -> None:
    mock.add("POST", GHL + "/book", json={"id": "apt1"})
    good = pms.reload(ghl_only(), env_file=None)
    with pytest.raises(pms.ConfigurationError):
        pms.reload(ghl_only(PMS_GHL_TIMEOUT_MS="soon"), env_file=None)
    with pytest.raises(pms.ConfigurationError):
        pms.reload(ghl_only(PMS_DEFAULT_PROVIDER="hubspot"), env_file=None)
    assert pms.get_client() is good
    assert pms.book_appointment(BOOKING).id == "apt1"


def test_reload_under_load_every_call_sees_one_whole_configuration(mock: responses.RequestsMock) -> None:
    configs = {
        "https://a.example": ghl_only(PMS_GHL_BASE_URL="https://a.example", PMS_GHL_LOCATION_ID="locA"),
        "https://b.example": ghl_only(PMS_GHL_BASE_URL="https://b.example", PMS_GHL_LOCATION_ID="locB"),
    }
    mismatches: list[str] = []

    def answer(request: Any) -> tuple[int, dict[str, str], str]:
        host = request.url.split("/book")[0]
        expected = "locA" if host == "https://a.example" else "locB"
        if f'"{expected}"' not in request.body.decode():
            mismatches.append(request.url)
        return 200, {}, '{"id": "x"}'

    for base in configs:
        mock.add_callback("POST", base + "/book", callback=answer)
    pms.reload(configs["https://a.example"], env_file=None)
    errors: list[BaseException] = []
    calls = [0]
    stop = threading.Event()

    def caller() -> None:
        while not stop.is_set():
            try:
                pms.book_appointment(BOOKING)
                calls[0] += 1
                time.sleep(0.001)  # let the reloading thread get the GIL now and then
            except BaseException as exc:
                errors.append(exc)
                return

    threads = [threading.Thread(target=caller) for _ in range(16)]
    for t in threads:
        t.start()
    bases = list(configs)
    for i in range(100):
        pms.reload(configs[bases[i % 2]], env_file=None)
    stop.set()
    for t in threads:
        t.join()
    assert errors == []
    assert mismatches == []
    assert calls[0] > 16


# -- secrets -------------------------------------------------------------------------------


def test_canary_tokens_never_leak(mock: responses.RequestsMock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    env = full_environ(
        PMS_SALESFORCE_CLIENT_ID="cid",
        PMS_SALESFORCE_CLIENT_SECRET=CANARY["PMS_SALESFORCE_CLIENT_SECRET"],
        PMS_SALESFORCE_REFRESH_TOKEN=CANARY["PMS_SALESFORCE_REFRESH_TOKEN"],
        PMS_DEFAULT_PROVIDER="ghl",
    )
    c = client(env)
    seen: list[str] = [repr(c), str(c), repr(c.config), str(c.config)]
    seen += [repr(s) + str(s) for s in c.providers()]
    seen += [repr(p) for p in c.config.providers.values()]
    echo = " ".join(CANARY.values())
    for status, body in [
        (401, {"message": f"bad token {echo}"}),
        (500, f"<html>{echo}</html>"),
        (422, {"message": [echo]}),
    ]:
        mock.upsert("POST", GHL + "/book", status=status, json=body) if isinstance(body, dict) else mock.upsert(
            "POST", GHL + "/book", status=status, body=body
        )
        mock.add("GET", GHL + "/find", status=404)
        try:
            c.book_appointment(BOOKING)
        except pms.PMSError as exc:
            seen += [str(exc), repr(exc), str(getattr(exc, "body_excerpt", ""))]
    mock.upsert("POST", GHL + "/book", body=requests.exceptions.ReadTimeout(f"timeout {echo}"))
    with pytest.raises(pms.ProviderError) as err:
        c.book_appointment(BOOKING)
    seen += [str(err.value), repr(err.value)]
    seen += [r.getMessage() for r in caplog.records]
    blob = "\n".join(seen)
    for value in CANARY.values():
        assert value not in blob


# -- bookings in the past ----------------------------------------------------------------------


def _iso(moment: Any) -> str:
    return str(moment.replace(microsecond=0).isoformat())


def test_a_start_in_the_past_is_refused_before_any_request(mock: responses.RequestsMock) -> None:
    import datetime as dt

    mock.add("POST", GHL + "/book", json={"id": "apt1"})
    now = dt.datetime.now(dt.timezone.utc)
    c = client()
    with pytest.raises(pms.ValidationError) as err:
        c.book_appointment({**BOOKING, "start": _iso(now - dt.timedelta(days=1))})
    assert err.value.fields == ["start"] and "past" in str(err.value)
    with pytest.raises(pms.ValidationError) as err:
        c.book_appointment({**BOOKING, "start": _iso(now - dt.timedelta(minutes=6))})
    assert err.value.fields == ["start"]
    with pytest.raises(pms.ValidationError) as err:
        c.update_appointment("apt1", {"start": _iso(now - dt.timedelta(hours=2)), "duration_minutes": 30})
    assert err.value.fields == ["start"]
    assert len(mock.calls) == 0
    # within the clock-skew allowance (five minutes) a start "now" still books
    booked = c.book_appointment({**BOOKING, "start": _iso(now - dt.timedelta(minutes=1))})
    assert booked.id == "apt1" and len(mock.calls) == 1


def test_check_not_past_allows_five_minutes_of_clock_skew() -> None:
    import datetime as dt

    from pms_integration.models import PAST_ALLOWANCE_MINUTES, check_not_past

    now = dt.datetime(2030, 3, 5, 15, 0, tzinfo=dt.timezone.utc)
    assert PAST_ALLOWANCE_MINUTES == 5
    check_not_past(now - dt.timedelta(minutes=5), now)
    check_not_past(now + dt.timedelta(days=1), now)
    check_not_past(None, now)
    with pytest.raises(pms.ValidationError) as err:
        check_not_past(now - dt.timedelta(minutes=5, seconds=1), now)
    assert err.value.fields == ["start"]


# -- the default client's lifecycle ------------------------------------------------------------


def _in_thread(call: Any) -> Any:
    """Run ``call`` in a thread; the test fails (instead of hanging) if it never returns."""
    done = threading.Event()
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # handed back to the test
            outcome["error"] = exc
        finally:
            done.set()

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    assert done.wait(60), "the call never returned (spinning on a closed client?)"
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def test_a_closed_default_client_is_replaced_not_spun_on(
    mock: responses.RequestsMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    mock.add("POST", GHL + "/book", json={"id": "apt1"})
    for key, value in ghl_only().items():
        monkeypatch.setenv(key, value)
    with pms.get_client() as first:
        pass
    assert first.closed
    booked = _in_thread(lambda: pms.book_appointment({**BOOKING, "reference": "after-close"}))
    assert booked.id == "apt1"
    second = pms.get_client()
    assert second is not first and not second.closed
    assert second.config is first.config and second.memory is first.memory


def test_a_closed_reloaded_client_is_replaced_with_the_same_configuration(mock: responses.RequestsMock) -> None:
    mock.add("POST", GHL + "/book", json={"id": "apt1"})
    reloaded = pms.reload(ghl_only(), env_file=None)
    reloaded.close()
    assert _in_thread(lambda: pms.book_appointment(BOOKING)).id == "apt1"
    assert pms.get_client().config is reloaded.config


def test_a_closed_client_you_installed_raises_instead_of_spinning() -> None:
    mine = pms.use_client(client())
    mine.close()
    with pytest.raises(pms.ConfigurationError, match="use_client"):
        _in_thread(lambda: pms.book_appointment(BOOKING))
    with pytest.raises(pms.ConfigurationError, match="use_client"):
        pms.get_client()
    fresh = pms.use_client(client())
    assert pms.get_client() is fresh


@pytest.mark.parametrize("bad", [b"", None, "client", {}, 0])
def test_use_client_refuses_anything_but_an_open_client(bad: object) -> None:
    with pytest.raises(pms.ConfigurationError, match="PMSClient"):
        pms.use_client(bad)  # type: ignore[arg-type]
    closed = client()
    closed.close()
    with pytest.raises(pms.ConfigurationError, match="closed"):
        pms.use_client(closed)


# -- PMSClient's own arguments -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"config": {}}, "config"),
        ({"config": {"PMS_GHL_API_KEY": "x"}}, "environ="),
        ({"config": "PMS_GHL_API_KEY=x"}, "config"),
        ({"environ": 0}, "environ"),
        ({"environ": b"PMS_X=1"}, "environ"),
        ({"env_file": b"practice.env", "environ": {}}, "env_file"),
        ({"report_source": 5}, "report_source"),
        ({"retry_policy": 3}, "retry_policy"),
        ({"sleep": None}, "sleep"),
        ({"clock": 1.0}, "clock"),
        ({"session_factory": "requests"}, "session_factory"),
        ({"memory": {}}, "memory"),
    ],
)
def test_pmsclient_misuse_is_a_configuration_error_naming_the_argument(kwargs: dict[str, Any], named: str) -> None:
    with pytest.raises(pms.ConfigurationError, match=named):
        PMSClient(**kwargs)


def test_config_and_environ_together_is_a_configuration_error() -> None:
    config = pms.load_config(ghl_only())
    with pytest.raises(pms.ConfigurationError, match="not both"):
        PMSClient(config, environ=ghl_only())


def test_reload_swaps_without_closing_the_client_a_call_is_running_on(mock: responses.RequestsMock) -> None:
    entered, release = threading.Event(), threading.Event()

    def slow(request: Any) -> tuple[int, dict[str, str], str]:
        entered.set()
        assert release.wait(60)
        return 200, {}, '{"id": "old"}'

    mock.add_callback("POST", "https://a.example/book", callback=slow)
    mock.add("POST", "https://b.example/book", json={"id": "new"})
    old = pms.reload(ghl_only(PMS_GHL_BASE_URL="https://a.example"), env_file=None)
    result: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: result.update(done=pms.book_appointment({**BOOKING, "reference": "r1"})))
    worker.start()
    assert entered.wait(60)
    new = pms.reload(ghl_only(PMS_GHL_BASE_URL="https://b.example"), env_file=None)
    assert new.memory is old.memory and new.token_store is old.token_store and not old.closed
    assert pms.book_appointment(BOOKING).id == "new"  # later calls use the new configuration
    release.set()
    worker.join(60)
    assert result["done"].id == "old"  # the running call finished on the configuration it began with
    # nothing holds the replaced client any more: it is collected (its connection pools close)
    gone = weakref.ref(old)
    del old
    gc.collect()
    assert gone() is None


def test_testing_use_client_is_a_deprecated_alias_of_as_default() -> None:
    from pms_integration import testing

    with pytest.warns(DeprecationWarning, match="as_default"):
        assert testing.use_client is testing.as_default  # type: ignore[attr-defined]
    mine = client()
    with testing.as_default(mine):
        assert pms.get_client() is mine
    assert pms.get_client() is not mine


def test_a_reload_naming_another_state_store_moves_to_it(tmp_path: Any) -> None:
    """Same PMS_STATE_URL: the memory carries over; another one: the new client's memory and
    tokens live in the new store (never the old store under a new name)."""
    first = pms.reload(ghl_only(), env_file=None)
    same = pms.reload(ghl_only(), env_file=None)
    assert same.memory is first.memory and same.state is first.state
    url = f"sqlite:///{tmp_path}/state.db"
    moved = pms.reload(ghl_only(PMS_STATE_URL=url), env_file=None)
    assert moved.state.kind == "sqlite" and moved.memory.store is moved.state
    assert moved.memory is not first.memory and moved.token_store.store is moved.state  # type: ignore[attr-defined]
