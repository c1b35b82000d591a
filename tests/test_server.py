"""The HTTP endpoints (pms_integration.server), served by a real uvicorn on loopback.

Every test talks to the server with ``requests`` through a session whose response hook checks
that no configured secret (the sandbox's vendor tokens, the server's own token, the conftest
canaries) ever appears in a response body or header.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import requests
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

import pms_integration
from pms_integration import PMSClient, ProviderName, set_report_source
from pms_integration import errors as E
from pms_integration.providers import MODULES as ADAPTER_MODULES
from pms_integration.reports import HOW_TO_REGISTER
from pms_integration.sandbox import Fault, Sandbox
from pms_integration.server import PREFIX, Problem, create_app, problem_for

from .conftest import CANARY

SERVER_TOKEN = "srv-canary-4b1d9e77c0ffee5a"
AUTH = {"Authorization": f"Bearer {SERVER_TOKEN}"}
# Which vendor emulators exist decides which providers the happy paths run against.
AVAILABLE = list(Sandbox().emulators)
needs_emulator = pytest.mark.skipif(not AVAILABLE, reason="no vendor emulator in pms_integration.sandbox yet")
FIRST = AVAILABLE[0] if AVAILABLE else ProviderName.GOHIGHLEVEL
TIMEOUT_VARS = {
    ProviderName.GOHIGHLEVEL: "PMS_GHL_TIMEOUT_MS",
    ProviderName.SALESFORCE: "PMS_SALESFORCE_TIMEOUT_MS",
    ProviderName.HUBSPOT: "PMS_HUBSPOT_TIMEOUT_MS",
}
VAR_PREFIX = {
    ProviderName.GOHIGHLEVEL: "PMS_GHL_",
    ProviderName.SALESFORCE: "PMS_SALESFORCE_",
    ProviderName.HUBSPOT: "PMS_HUBSPOT_",
}

_slot = [0]


def booking_body(**overrides: Any) -> dict[str, Any]:
    """A valid booking on a fresh half-hour slot (emulators may refuse overlapping ones)."""
    _slot[0] += 1
    day, half = divmod(_slot[0], 16)
    start = f"2031-03-{1 + day % 28:02d}T{8 + half // 2:02d}:{30 * (half % 2):02d}:00-05:00"
    body: dict[str, Any] = {
        "start": start,
        "duration_minutes": 30,
        "patient": {"name": "Ann Lee", "email": f"ann{_slot[0]}@example.com", "phone": "+15555550123"},
        "reason": "Cleaning",
    }
    body.update(overrides)
    return body


def _instant(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


REPORT = {"period_start": "2031-03-01", "period_end": "2031-03-07", "metrics": {"calls": 42, "bookings": 17}}


# ---------------------------------------------------------------------------------------------
# harness


class Served:
    """A running uvicorn serving one app on a loopback port picked by the OS."""

    def __init__(self, app: Any) -> None:
        # proto must be IPPROTO_TCP, not the default 0: asyncio sets TCP_NODELAY on accepted
        # connections only when it can tell they are TCP. Without it every response stalls
        # ~40 ms (headers and body leave as two writes; Nagle waits for the delayed ACK).
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", lifespan="off", server_header=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Served:
        self.thread.start()
        deadline = time.monotonic() + 5
        while not self.server.started:
            assert self.thread.is_alive(), "uvicorn died while starting"
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)
        assert not self.thread.is_alive(), "uvicorn did not shut down"
        self.sock.close()


class Api:
    """A requests session for one server; every response is checked for leaked secrets."""

    def __init__(self, base: str, secrets: list[str], headers: dict[str, str] | None = None) -> None:
        self.base = base
        self.secrets = [s for s in secrets if s]
        self.session = requests.Session()
        self.session.headers.update(headers or {})
        self.session.hooks["response"].append(self._check)
        self.seen = 0

    def _check(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self.seen += 1
        texts = [response.content.decode("utf-8", "replace")]
        texts += [f"{k}: {v}" for k, v in response.headers.items()]
        for text in texts:
            for secret in self.secrets:
                assert secret not in text, f"a configured secret leaked in a response to {response.request.url}"
            assert "Traceback" not in text

    def __call__(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 10)
        return self.session.request(method, self.base + PREFIX + path, **kwargs)

    def close(self) -> None:
        self.session.close()


def problem(response: requests.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    data: dict[str, Any] = response.json()
    assert data["status"] == status
    assert {"type", "title", "detail"} <= set(data)
    return data


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox() as sb:
        yield sb


@pytest.fixture(autouse=True)
def _fresh_sandbox(sandbox: Sandbox) -> Iterator[None]:
    yield
    sandbox.clear_faults()


def all_secrets(sandbox: Sandbox) -> list[str]:
    return [*sandbox.tokens.values(), SERVER_TOKEN, *CANARY.values()]


def sandbox_env(sandbox: Sandbox, **extra: str) -> dict[str, str]:
    # One attempt: the fault tests check the mapping, not the retry policy (tested elsewhere).
    env = {**sandbox.environ(), "PMS_MAX_ATTEMPTS": "1"}
    env.update(extra)
    return env


@contextlib.contextmanager
def serving(app: Any, sandbox: Sandbox, *, headers: dict[str, str] | None = None) -> Iterator[Api]:
    served = Served(app).start()
    api = Api(served.url, all_secrets(sandbox), headers)
    try:
        yield api
    finally:
        api.close()
        served.stop()


@pytest.fixture(scope="module")
def client(sandbox: Sandbox) -> Iterator[PMSClient]:
    with PMSClient(environ=sandbox_env(sandbox), env_file=None) as c:
        yield c


@pytest.fixture(scope="module")
def main_server(client: PMSClient) -> Iterator[Served]:
    served = Served(create_app(client, token=SERVER_TOKEN)).start()
    yield served
    served.stop()


@pytest.fixture
def api(main_server: Served, sandbox: Sandbox) -> Iterator[Api]:
    a = Api(main_server.url, all_secrets(sandbox), AUTH)
    yield a
    assert a.seen > 0
    a.close()


@pytest.fixture
def report_source() -> Iterator[None]:
    yield
    set_report_source(None)


# ---------------------------------------------------------------------------------------------
# happy paths


def test_providers_lists_status_without_secrets(api: Api, sandbox: Sandbox) -> None:
    r = api("GET", "/providers")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    data = r.json()
    by_name = {p["name"]: p for p in data["providers"]}
    assert set(by_name) == {p.value for p in ProviderName}
    for name in ProviderName:
        entry = by_name[name.value]
        assert set(entry) == {"name", "enabled", "missing", "problems", "api_version", "base_url"}
        assert entry["enabled"] is (name in sandbox.emulators)
        if not entry["enabled"]:
            assert entry["missing"] and all(v.startswith("PMS_") for v in entry["missing"])
    assert data["default_provider"] is None


@needs_emulator
@pytest.mark.parametrize("provider", AVAILABLE, ids=[p.value for p in AVAILABLE])
def test_book_update_cancel_round_trip(api: Api, sandbox: Sandbox, provider: ProviderName) -> None:
    body = booking_body(reference=f"srv-{provider.value}-{_slot[0]}")
    r = api("POST", f"/{provider.value}/book", json=body)
    assert r.status_code == 201, r.text
    booked = r.json()
    assert booked["provider"] == provider.value
    assert booked["status"] == "booked"
    assert booked["reference"] == body["reference"]
    assert _instant(booked["start"]) == _instant(body["start"])
    appointment_id = booked["id"]
    assert appointment_id in json.dumps(sandbox.state(provider))

    # Same reference again: the client's de-duplication answers without a second create.
    again = api("POST", f"/{provider.value}/book", json=body)
    assert again.status_code == 201 and again.json()["id"] == appointment_id

    new_start = booking_body()["start"]
    r = api(
        "PATCH",
        f"/{provider.value}/booking/{appointment_id}",
        json={"start": new_start, "duration_minutes": 45, "title": "Cleaning and check-up"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["id"] == appointment_id
    assert _instant(r.json()["start"]) == _instant(new_start)

    r = api("DELETE", f"/{provider.value}/booking/{appointment_id}", params={"reason": "patient is ill"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "cancelled"


@needs_emulator
def test_cancel_takes_reason_from_json_body(api: Api) -> None:
    booked = api("POST", f"/{FIRST.value}/book", json=booking_body())
    assert booked.status_code == 201, booked.text
    r = api("DELETE", f"/{FIRST.value}/booking/{booked.json()['id']}", json={"reason": "moved away"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "cancelled"


@needs_emulator
def test_alias_in_path_is_accepted(api: Api) -> None:
    if ProviderName.GOHIGHLEVEL not in AVAILABLE:
        pytest.skip("the GoHighLevel emulator is not available")
    r = api("POST", "/ghl/book", json=booking_body())
    assert r.status_code == 201, r.text
    assert r.json()["provider"] == "gohighlevel"


@needs_emulator
@pytest.mark.parametrize("provider", AVAILABLE, ids=[p.value for p in AVAILABLE])
def test_performance_with_explicit_report(api: Api, provider: ProviderName) -> None:
    r = api("POST", f"/{provider.value}/performance", json={"report": REPORT})
    assert r.status_code == 200, r.text
    receipt = r.json()
    assert receipt["provider"] == provider.value
    assert receipt["report_id"] == "pms-report-2031-03-01-2031-03-07"


@needs_emulator
@pytest.mark.parametrize("body", [None, {}, {"report": None}], ids=["empty", "empty-object", "null-report"])
def test_performance_without_report_sends_the_current_one(api: Api, report_source: None, body: Any) -> None:
    calls: list[int] = []

    def current() -> dict[str, Any]:
        calls.append(1)
        return {**REPORT, "report_id": "weekly-current"}

    set_report_source(current)
    r = (
        api("POST", f"/{FIRST.value}/performance", json=body)
        if body is not None
        else api("POST", f"/{FIRST.value}/performance")
    )
    assert r.status_code == 200, r.text
    assert r.json()["report_id"] == "weekly-current"
    assert calls == [1]


def test_performance_without_report_or_source_says_how_to_register(api: Api, report_source: None) -> None:
    set_report_source(None)
    variants: list[dict[str, Any]] = [{}, {"json": {}}]
    for kwargs in variants:
        data = problem(api("POST", f"/{FIRST.value}/performance", **kwargs), 422)
        assert data["errors"] == [{"field": "report", "message": HOW_TO_REGISTER}]
        assert "set_report_source" in data["detail"]


class _DefaultCloser:
    """Closes whatever default client a test left behind (conftest restores the previous one)."""

    def close(self) -> None:
        pms_integration.get_client().close()


def test_default_client_is_looked_up_per_request(sandbox: Sandbox) -> None:
    """create_app() without a client follows reload()."""
    without_hubspot = {k: v for k, v in sandbox_env(sandbox).items() if not k.startswith("PMS_HUBSPOT_")}
    pms_integration.reload(without_hubspot, env_file=None)
    with contextlib.closing(_DefaultCloser()), serving(create_app(token=None), sandbox) as api:
        first = {p["name"]: p["enabled"] for p in api("GET", "/providers").json()["providers"]}
        assert first["hubspot"] is False
        pms_integration.reload(
            {**without_hubspot, "PMS_HUBSPOT_PRIVATE_APP_TOKEN": "pat-na1-reloadtest"}, env_file=None
        )
        second = {p["name"]: p["enabled"] for p in api("GET", "/providers").json()["providers"]}
        assert second["hubspot"] is True
        if AVAILABLE:
            pms_integration.reload(sandbox_env(sandbox), env_file=None)
            r = api("POST", f"/{FIRST.value}/book", json=booking_body())
            assert r.status_code == 201, r.text


# ---------------------------------------------------------------------------------------------
# bad input


def test_malformed_json_is_400(api: Api) -> None:
    cases = [
        (b"{bad", "Expecting property name"),
        (b'{"start": ', "Expecting value"),
        (b"\xff\xfe\x00garbage", "not valid JSON"),
        (b'{"metrics": NaN}', "NaN is not valid JSON"),
        (b"[" * 20_000 + b"]" * 20_000, "nests too deeply"),  # under the size limit
    ]
    for raw, why in cases:
        data = problem(api("POST", f"/{FIRST.value}/book", data=raw, headers={"Content-Type": "application/json"}), 400)
        assert data["type"].endswith(":malformed-json")
        assert why in data["detail"], (raw[:20], data["detail"])


def test_non_object_and_empty_bodies_are_422(api: Api) -> None:
    data = problem(api("POST", f"/{FIRST.value}/book", json=[1, 2]), 422)
    assert data["errors"][0]["field"] == ""
    problem(api("POST", f"/{FIRST.value}/book"), 422)
    problem(api("PATCH", f"/{FIRST.value}/booking/abc123", json="start"), 422)


def test_validation_lists_every_bad_field(api: Api) -> None:
    body = booking_body(start="2031-03-01T10:00:00")
    body["patient"] = {"name": "Ann", "email": "not-an-email"}
    body["colour"] = "blue"
    data = problem(api("POST", f"/{FIRST.value}/book", json=body), 422)
    fields = {e["field"] for e in data["errors"]}
    assert {"start", "patient.email", "colour"} <= fields
    assert data["type"] == "urn:pms-integration:problem:validation"


def test_report_errors_carry_the_report_prefix(api: Api) -> None:
    data = problem(
        api("POST", f"/{FIRST.value}/performance", json={"report": {**REPORT, "metrics": {"calls": "many"}}}), 422
    )
    assert [e["field"] for e in data["errors"]] == ["report.metrics.calls"]
    data = problem(api("POST", f"/{FIRST.value}/performance", json=REPORT), 422)
    assert {e["field"] for e in data["errors"]} == {"period_start", "period_end", "metrics"}


def test_cancel_body_is_checked(api: Api) -> None:
    data = problem(api("DELETE", f"/{FIRST.value}/booking/abc123", json={"why": "x"}), 422)
    assert data["errors"] == [{"field": "why", "message": "is not a known field"}]
    problem(api("DELETE", f"/{FIRST.value}/booking/abc123", json={"reason": 7}), 422)


def test_bad_appointment_id_is_422(api: Api) -> None:
    data = problem(api("PATCH", f"/{FIRST.value}/booking/..%20x", json={"title": "x"}), 422)
    assert data["errors"][0]["field"] == "appointment_id"


def test_body_needs_a_json_content_type(api: Api) -> None:
    r = api("POST", f"/{FIRST.value}/book", data=json.dumps(booking_body()), headers={"Content-Type": "text/plain"})
    assert problem(r, 415)["type"].endswith(":unsupported-media-type")


def test_oversized_body_is_413(sandbox: Sandbox, client: PMSClient) -> None:
    with serving(create_app(client, token=None, max_body_bytes=2048), sandbox) as api:
        big = booking_body(notes="x" * 4000)
        r = api("POST", f"/{FIRST.value}/book", json=big)
        data = problem(r, 413)
        assert data["limit"] == 2048
        assert r.headers["connection"] == "close"

        # Chunked upload with no Content-Length at all: the limit holds while reading.
        def chunks() -> Iterator[bytes]:
            payload = json.dumps(big).encode()
            for i in range(0, len(payload), 512):
                yield payload[i : i + 512]

        r = api("POST", f"/{FIRST.value}/book", data=chunks(), headers={"Content-Type": "application/json"})
        assert "content-length" not in r.request.headers
        problem(r, 413)

        # Far beyond the limit: refused on the declared length without reading it.
        r = api(
            "POST",
            f"/{FIRST.value}/book",
            data=b"x" * (1024 * 1024 + 4096),
            headers={"Content-Type": "application/json"},
        )
        problem(r, 413)

        # Just under the limit is read and validated normally.
        small = booking_body(notes="y" * 1500)
        assert len(json.dumps(small)) < 2048
        r = api("POST", f"/{FIRST.value}/book", json={**small, "unknown": 1})
        problem(r, 422)


def test_default_limit_is_64_kib(api: Api) -> None:
    r = api("POST", f"/{FIRST.value}/book", json=booking_body(notes="z" * 70_000))
    assert problem(r, 413)["limit"] == 65536


# ---------------------------------------------------------------------------------------------
# routing, providers and configuration


def test_unknown_provider_is_404(api: Api) -> None:
    data = problem(api("POST", "/pipedrive/book", json=booking_body()), 404)
    assert data["type"].endswith(":unknown-provider")
    assert data["detail"] == "Unknown provider 'pipedrive'; expected one of gohighlevel, salesforce, hubspot (or ghl)."
    problem(api("DELETE", "/pipedrive/booking/abc"), 404)
    problem(api("POST", "/pipedrive/performance", json={}), 404)


def test_unknown_route_and_method_are_problems(api: Api) -> None:
    assert problem(api("GET", "/nothing/here"), 404)["type"] == "about:blank"
    r = api("POST", f"/{FIRST.value}/booking/abc123", json={})
    problem(r, 405)
    assert {"PATCH", "DELETE"} <= {m.strip() for m in r.headers["allow"].split(",")}
    r = api("PUT", "/providers")
    problem(r, 405)
    assert "GET" in r.headers["allow"]


@pytest.mark.parametrize("provider", list(ProviderName), ids=[p.value for p in ProviderName])
def test_disabled_provider_is_503_listing_variables(sandbox: Sandbox, provider: ProviderName) -> None:
    env = {k: v for k, v in sandbox_env(sandbox).items() if not k.startswith(VAR_PREFIX[provider])}
    with PMSClient(environ=env, env_file=None) as c, serving(create_app(c, token=None), sandbox) as api:
        data = problem(api("POST", f"/{provider.value}/book", json=booking_body()), 503)
        assert data["type"].endswith(":not-configured")
        assert data["provider"] == provider.value
        assert data["missing"] and all(name.startswith(VAR_PREFIX[provider]) for name in data["missing"])
        for name in data["missing"]:
            assert name in data["detail"]
        problem(api("PATCH", f"/{provider.value}/booking/abc123", json={"title": "x"}), 503)
        problem(api("DELETE", f"/{provider.value}/booking/abc123"), 503)
        problem(api("POST", f"/{provider.value}/performance", json={"report": REPORT}), 503)


def test_missing_adapter_is_501(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(ADAPTER_MODULES, FIRST, "pms_integration.providers.not_there")
    env = sandbox_env(sandbox)
    if FIRST not in sandbox.emulators:
        pytest.skip("needs a configured provider")
    with PMSClient(environ=env, env_file=None) as c, serving(create_app(c, token=None), sandbox) as api:
        data = problem(api("POST", f"/{FIRST.value}/book", json=booking_body()), 501)
        assert data["type"].endswith(":unsupported-operation")


# ---------------------------------------------------------------------------------------------
# authentication


def test_missing_or_wrong_token_is_401(main_server: Served, sandbox: Sandbox) -> None:
    anonymous = Api(main_server.url, all_secrets(sandbox))
    try:
        for method, path in (
            ("GET", "/providers"),
            ("POST", f"/{FIRST.value}/book"),
            ("PATCH", f"/{FIRST.value}/booking/abc"),
            ("DELETE", f"/{FIRST.value}/booking/abc"),
            ("POST", f"/{FIRST.value}/performance"),
        ):
            r = anonymous(method, path, json={})
            data = problem(r, 401)
            assert r.headers["www-authenticate"] == 'Bearer realm="pms-integration"'
            assert "Authorization header" in data["detail"] and "[redacted]" not in data["detail"]
            assert data["type"].endswith(":unauthorized")
        for header in (
            f"Bearer {SERVER_TOKEN}x",
            f"Bearer {SERVER_TOKEN[:-1]}",
            f"Basic {SERVER_TOKEN}",
            "Bearer",
            f"{SERVER_TOKEN}",
        ):
            r = anonymous("POST", f"/{FIRST.value}/book", json=booking_body(), headers={"Authorization": header})
            problem(r, 401)
            assert 'error="invalid_token"' in r.headers["www-authenticate"]
        # The same keep-alive session still works once the token is right.
        assert anonymous("GET", "/providers", headers=AUTH).status_code == 200
        assert anonymous("GET", "/providers", headers={"Authorization": f"bearer {SERVER_TOKEN}"}).status_code == 200
    finally:
        anonymous.close()


def test_token_read_from_environment(sandbox: Sandbox, client: PMSClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PMS_SERVER_TOKEN", SERVER_TOKEN)
    with serving(create_app(client), sandbox) as api:
        problem(api("GET", "/providers"), 401)
        assert api("GET", "/providers", headers=AUTH).status_code == 200
    # token=None disables protection even with the variable set.
    with serving(create_app(client, token=None), sandbox) as api:
        assert api("GET", "/providers").status_code == 200
    monkeypatch.setenv("PMS_SERVER_TOKEN", "")
    with serving(create_app(client), sandbox) as api:
        assert api("GET", "/providers").status_code == 200
    with pytest.raises(ValueError):
        create_app(client, token="")


def test_token_read_from_dot_env_and_env_file_like_the_configuration(
    sandbox: Sandbox, client: PMSClient, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    # The autouse fixture runs each test in an empty temporary directory with no PMS_* set.
    (tmp_path / ".env").write_text(f"PMS_SERVER_TOKEN={SERVER_TOKEN}\n", encoding="utf-8")
    with serving(create_app(client), sandbox) as api:
        problem(api("GET", "/providers"), 401)
        assert api("GET", "/providers", headers=AUTH).status_code == 200
    # The process environment wins over ./.env, as it does for every other variable.
    other = "srv-canary-env-wins-8c1f0e9d7b6a"
    monkeypatch.setenv("PMS_SERVER_TOKEN", other)
    with serving(create_app(client), sandbox) as api:
        problem(api("GET", "/providers", headers=AUTH), 401)
        assert api("GET", "/providers", headers={"Authorization": f"Bearer {other}"}).status_code == 200
    monkeypatch.delenv("PMS_SERVER_TOKEN")
    # An explicit env_file (the CLI's --env-file), and an explicit mapping, are read the same way.
    elsewhere = tmp_path / "prod.env"
    elsewhere.write_text(f"PMS_SERVER_TOKEN={other}\n", encoding="utf-8")
    with serving(create_app(client, env_file=elsewhere), sandbox) as api:
        problem(api("GET", "/providers", headers=AUTH), 401)
        assert api("GET", "/providers", headers={"Authorization": f"Bearer {other}"}).status_code == 200
    with serving(create_app(client, environ={"PMS_SERVER_TOKEN": other}, env_file=None), sandbox) as api:
        problem(api("GET", "/providers"), 401)
    # A weak token in the file is refused like one in the environment, without showing it.
    (tmp_path / ".env").write_text("PMS_SERVER_TOKEN=2031\n", encoding="utf-8")
    with pytest.raises(E.ConfigurationError) as info:
        create_app(client)
    assert "too short" in str(info.value) and "2031" not in str(info.value).replace("PMS_SERVER_TOKEN", "")


@pytest.mark.parametrize("value", ["x", 5, b"", {}, object(), True])
def test_create_app_and_run_refuse_a_client_that_is_not_a_pms_client(
    value: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pms_integration.server import run

    def never_bind(app: Any, **kwargs: Any) -> None:
        raise AssertionError("run() reached uvicorn with a bad client")

    monkeypatch.setattr(uvicorn, "run", never_bind)
    for entry in (lambda: create_app(value, token=None), lambda: run(client=value, token=None)):
        with pytest.raises(E.ConfigurationError, match=r"^client must be a PMSClient") as info:
            entry()
        assert type(value).__name__ in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_body_bytes": "64"}, "max_body_bytes"),
        ({"max_body_bytes": 0}, "max_body_bytes"),
        ({"port": "8000"}, "port"),
        ({"port": 70000}, "port"),
        ({"port": True}, "port"),
        ({"insecure_no_auth": "yes"}, "insecure_no_auth"),
        ({"host": 5}, "host"),
    ],
)
def test_run_checks_its_arguments_before_binding(
    kwargs: dict[str, Any], field: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pms_integration.server import run

    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: pytest.fail("run() reached uvicorn"))

    with pytest.raises(E.ValidationError) as info:
        run(**{"token": None, **kwargs})
    assert [f for f, _ in info.value.errors] == [field]


# ---------------------------------------------------------------------------------------------
# provider faults


def _faulty_server(sandbox: Sandbox) -> contextlib.AbstractContextManager[Api]:
    env = sandbox_env(sandbox, **{TIMEOUT_VARS[p]: "300" for p in ProviderName})
    c = PMSClient(environ=env, env_file=None)
    stack = contextlib.ExitStack()
    stack.enter_context(c)
    api = stack.enter_context(serving(create_app(c, token=SERVER_TOKEN), sandbox, headers=AUTH))

    @contextlib.contextmanager
    def run() -> Iterator[Api]:
        with stack:
            yield api

    return run()


@needs_emulator
@pytest.mark.parametrize("provider", AVAILABLE, ids=[p.value for p in AVAILABLE])
def test_vendor_faults_map_to_statuses(sandbox: Sandbox, provider: ProviderName) -> None:
    with _faulty_server(sandbox) as api:
        booked = api("POST", f"/{provider.value}/book", json=booking_body())
        assert booked.status_code == 201, booked.text
        appointment_id = booked.json()["id"]

        # 5xx on a booking: 503, and the answer says whether the booking may exist.
        sandbox.inject(provider, Fault.server_error(503))
        data = problem(api("POST", f"/{provider.value}/book", json=booking_body()), 503)
        assert data["type"].endswith(":provider-unavailable")
        assert data["provider"] == provider.value
        assert isinstance(data["outcome_unknown"], bool)
        assert data["vendor_status"] == 503
        sandbox.clear_faults()

        cases = [
            (Fault.expired_token(), 502, "provider-authentication"),
            (Fault("server_error", status=400), 502, "provider-invalid-request"),
            (Fault("server_error", status=404), 404, "not-found"),
            (Fault("server_error", status=409), 409, "conflict"),
            (Fault.server_error(500), 503, "provider-unavailable"),
        ]
        for fault, status, slug in cases:
            sandbox.inject(provider, fault)
            r = api("PATCH", f"/{provider.value}/booking/{appointment_id}", json={"title": "Re-titled"})
            data = problem(r, status)
            assert data["type"] == f"urn:pms-integration:problem:{slug}", (fault, data)
            assert data["operation"] == "update"
            sandbox.clear_faults()

        # The vendor applies the change but answers after the client's timeout: 504.
        sandbox.inject(provider, Fault.delay(1.0), times=1)
        t0 = time.monotonic()
        data = problem(api("PATCH", f"/{provider.value}/booking/{appointment_id}", json={"title": "Slow"}), 504)
        assert time.monotonic() - t0 < 1.0
        assert data["type"].endswith(":provider-timeout")

        # Last, because the client then honours the vendor's wait before its next request.
        sandbox.inject(provider, Fault.rate_limit(retry_after=7))
        r = api("PATCH", f"/{provider.value}/booking/{appointment_id}", json={"title": "Again"})
        data = problem(r, 429)
        assert data["type"].endswith(":rate-limited")
        # The vendor's own wait when it gives one (Salesforce never does: the default).
        assert data["retry_after"] == int(r.headers["retry-after"]) >= 1
        if provider is not ProviderName.SALESFORCE:
            assert r.headers["retry-after"] == "7"


@needs_emulator
def test_blocking_calls_do_not_block_the_event_loop(api: Api, sandbox: Sandbox) -> None:
    sandbox.inject(FIRST, Fault.delay(1.0), times=1)
    result: dict[str, requests.Response] = {}
    slow = threading.Thread(
        target=lambda: result.setdefault("r", api("POST", f"/{FIRST.value}/book", json=booking_body()))
    )
    slow.start()
    time.sleep(0.2)
    other = Api(api.base, api.secrets, AUTH)
    try:
        t0 = time.monotonic()
        for _ in range(5):
            assert other("GET", "/providers").status_code == 200
        assert time.monotonic() - t0 < 0.5
        assert slow.is_alive(), "the slow booking should still be running"
    finally:
        other.close()
    slow.join(10)
    assert result["r"].status_code == 201, result["r"].text


def test_unexpected_exception_is_a_generic_500(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with PMSClient(environ=sandbox_env(sandbox), env_file=None) as c:
        secret = next(iter(sandbox.tokens.values()))

        def boom() -> list[Any]:
            raise RuntimeError(f"internal detail {secret}")

        monkeypatch.setattr(c, "providers", boom)
        caplog.set_level(logging.ERROR, logger="pms_integration.server")
        with serving(create_app(c, token=None), sandbox) as api:
            data = problem(api("GET", "/providers"), 500)
        assert data["type"].endswith(":internal")
        assert "internal detail" not in json.dumps(data)
        assert any(r.exc_info for r in caplog.records)


# ---------------------------------------------------------------------------------------------
# mapping table, mounting, packaging


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (E.ValidationError.single("x", "bad"), 422),
        (E.ProviderNotConfiguredError("hubspot", missing=["PMS_HUBSPOT_PRIVATE_APP_TOKEN"]), 503),
        (E.ConfigurationError("closed"), 503),
        (E.UnsupportedOperationError("no"), 501),
        (E.NotFoundError("gone", status_code=404), 404),
        (E.ConflictError("taken", status_code=409), 409),
        (E.AppointmentCancelledError("cancelled", status_code=409, code="APPOINTMENT_CANCELLED"), 409),
        (E.RateLimitError("slow down", status_code=429), 429),
        (E.RateLimitError("slow down", status_code=429, retry_after=0.2), 429),
        (E.RateLimitError("slow down", status_code=429, retry_after=7.5), 429),
        (E.AuthenticationError("bad key", status_code=401), 502),
        (E.PermissionDeniedError("no scope", status_code=403), 502),
        (E.InvalidRequestError("bad field", status_code=400), 502),
        (E.UnexpectedResponseError("odd"), 502),
        (E.ServerError("down", status_code=502), 503),
        (E.TransportError("timed out", outcome_unknown=True, reference="bk-1"), 504),
        (E.APIError("teapot", status_code=418), 502),
        (E.PMSError("other"), 500),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else str(v),
)
def test_error_to_status_table(error: E.PMSError, status: int) -> None:
    p = problem_for(error)
    assert p.status == status
    if isinstance(error, E.RateLimitError):
        expected = {None: "5", 0.2: "1", 7.5: "8"}[error.retry_after]
        assert p.headers["Retry-After"] == expected
    if isinstance(error, E.TransportError):
        assert p.extensions["outcome_unknown"] is True and p.extensions["reference"] == "bk-1"


class _TooLarge(E.UnexpectedResponseError):
    """Stands for a subclass the library may add later (a response over the size cap, say)."""


class _OtherProviderError(E.ProviderError):
    pass


class _OtherAPIError(E.APIError):
    pass


@pytest.mark.parametrize(
    ("error", "status", "slug"),
    [
        (E.AppointmentCancelledError("cancelled", status_code=409), 409, "appointment-cancelled"),
        (_TooLarge("too big", provider="hubspot", operation="book"), 502, "provider-unexpected-response"),
        (_OtherProviderError("odd"), 502, "provider-error"),
        (_OtherAPIError("odd", status_code=413), 502, "provider-error"),
        (E.ResponseTooLargeError("too big"), 502, "provider-unexpected-response"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else str(v),
)
def test_subclasses_map_through_their_base_class(error: E.PMSError, status: int, slug: str) -> None:
    p = problem_for(error)
    assert (p.status, p.slug) == (status, slug)
    assert json.loads(bytes(p.response().body))["type"] == f"urn:pms-integration:problem:{slug}"


def test_the_docs_error_table_is_the_outcomes_table() -> None:
    """Each error class docs/http-api.md names has the status and type errors.OUTCOMES gives it."""
    page = (Path(__file__).resolve().parent.parent / "docs" / "http-api.md").read_text(encoding="utf-8")
    documented = {
        name: (int(status), slug)
        for status, slug, when in re.findall(r"^\| (\d{3}) \| `([\w-]+)` \| ([^|]*) \|", page, re.MULTILINE)
        for name in re.findall(r"`(\w+Error)`", when)
    }
    outcomes = {name: next(E.OUTCOMES[c] for c in getattr(E, name).__mro__ if c in E.OUTCOMES) for name in documented}
    assert documented == {name: (o.http_status, o.slug) for name, o in outcomes.items()}
    assert {cls.__name__ for cls in E.OUTCOMES} - {"PMSError"} <= set(documented)


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Secrets registered in a test are forgotten afterwards."""
    from pms_integration import _redact

    monkeypatch.setattr(_redact, "_known", set(_redact._known))
    monkeypatch.setattr(_redact, "_plain", set(_redact._plain))


def test_vendor_request_id_is_never_shown_raw(registry: None) -> None:
    plain = pms_integration.Secret("request-id-echo-secret-7731").reveal()
    error = E.ServerError(
        "down",
        status_code=503,
        request_id=f"abc\r\nX-Injected: 1 {plain} Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.x",
    )
    body = bytes(problem_for(error).response().body).decode()
    data = json.loads(body)
    assert plain not in body and "eyJhbGci" not in body and "\r" not in data["request_id"]
    assert data["request_id"].startswith("abc  X-Injected: 1 [redacted]")


def test_model_responses_are_sent_as_they_are_except_raw(registry: None) -> None:
    from pms_integration.models import Appointment, AppointmentStatus
    from pms_integration.server import _json_response, _model_json

    secret = pms_integration.Secret("2031-03-01T08:30:00")  # reads like the start below
    tz = datetime.timezone(datetime.timedelta(hours=-5))
    appointment = Appointment(
        ProviderName.HUBSPOT, "1:2", AppointmentStatus.BOOKED,
        datetime.datetime(2031, 3, 1, 8, 30, tzinfo=tz), datetime.datetime(2031, 3, 1, 9, tzinfo=tz),
        "call-1", "c1", "Cleaning", raw={"echo": f"token={secret.reveal()}", "access_token": "x-1", "true": True},
    )  # fmt: skip
    data = json.loads(bytes(_json_response(200, _model_json(appointment)).body))
    assert data["start"] == "2031-03-01T08:30:00-05:00"
    assert data["raw"] == {"echo": "token=[redacted]", "access_token": "[redacted]", "true": True}


def test_mounts_inside_an_existing_app(sandbox: Sandbox, client: PMSClient) -> None:
    async def health(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    outer = Starlette(routes=[Route("/health", health), Mount("", app=create_app(client, token=None))])
    with serving(outer, sandbox) as api:
        assert requests.get(api.base + "/health", timeout=5).text == "ok"
        assert api("GET", "/providers").status_code == 200
        problem(api("POST", "/nope/book", json={}), 404)


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)


def test_importing_the_package_does_not_import_starlette() -> None:
    done = _python("import sys, pms_integration; print('starlette' in sys.modules, 'uvicorn' in sys.modules)")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False"]


def test_import_without_starlette_names_the_extra() -> None:
    done = _python(
        "import sys; sys.modules['starlette'] = None\n"
        "try:\n    import pms_integration.server\nexcept ImportError as e:\n    print(e)\n"
    )
    assert done.returncode == 0, done.stderr
    # No package index has pms-integration: name what works from where it was installed.
    assert "pip install 'pms-integration[server]'" not in done.stdout
    assert "pip install starlette uvicorn" in done.stdout and "[server]'" in done.stdout


def test_secrets_sent_in_requests_are_not_echoed(api: Api, sandbox: Sandbox) -> None:
    vendor_token = next(iter(sandbox.tokens.values()))
    for key in (SERVER_TOKEN, vendor_token):
        data = problem(api("POST", f"/{FIRST.value}/book", json={**booking_body(), key: 1}), 422)
        assert "[redacted]" in json.dumps(data)
    problem(api("POST", f"/{SERVER_TOKEN}/book", json={}), 404)
    problem(api("DELETE", f"/{FIRST.value}/booking/abc123", params={"reason": SERVER_TOKEN * 40}), 422)


def test_problem_response_redacts_everything() -> None:
    secret = pms_integration.Secret("manual-secret-value-1234")
    plain = secret.reveal()
    response = Problem(418, "teapot", f"t {plain}", f"d {plain}", headers={"X-Why": plain}, extra=[plain]).response()
    body = bytes(response.body).decode()
    assert plain not in body and plain not in response.headers["x-why"]
    assert json.loads(body)["type"] == "urn:pms-integration:problem:teapot"
    assert response.media_type == "application/problem+json"


def interrupted(proc: subprocess.Popen[str], timeout: float) -> tuple[str, str]:
    """Stop a served process as Ctrl-C does; its (stdout, stderr), empty when not piped."""
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return out or "", err or ""


def test_run_serves_with_uvicorn_on_loopback(sandbox: Sandbox, tmp_path: Any) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PMS_")}
    env.update(sandbox.environ(), PMS_SERVER_TOKEN=SERVER_TOKEN)
    code = f"from pms_integration.server import run; run(port={port})"
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    try:
        api = Api(f"http://127.0.0.1:{port}", all_secrets(sandbox), AUTH)
        deadline = time.monotonic() + 15
        while True:
            try:
                r = api("GET", "/providers", timeout=2)
                break
            except requests.ConnectionError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "run() did not start serving"
                time.sleep(0.05)
        assert r.status_code == 200
        assert {p["name"] for p in r.json()["providers"] if p["enabled"]} == {p.value for p in sandbox.emulators}
        problem(api("GET", "/providers", headers={"Authorization": "Bearer wrong"}), 401)
        api.close()
    finally:
        _, err = interrupted(proc, timeout=10)
    assert proc.returncode == 0, err
    assert SERVER_TOKEN not in err
    assert "127.0.0.1" in err


# ---------------------------------------------------------------------------------------------
# scheduling reads: slots, one booking, a patient's bookings, patients (docs/http-api.md)

READ_PATHS = ("/slots", "/booking/abc123", "/bookings", "/patients")


def _day(provider: ProviderName) -> tuple[str, str]:
    """A whole Monday of its own per provider, a few weeks ahead: inside the year the bookings
    search looks at by default, and apart from the other tests' bookings."""
    zone = ZoneInfo("America/New_York")
    day = datetime.datetime.now(zone).date() + datetime.timedelta(days=14 + 7 * list(ProviderName).index(provider))
    day += datetime.timedelta(days=-day.weekday())
    start = datetime.datetime.combine(day, datetime.time(0), tzinfo=zone)
    return start.isoformat(), (start + datetime.timedelta(hours=23, minutes=59)).isoformat()


@pytest.mark.parametrize("provider", list(ProviderName), ids=[p.value for p in ProviderName])
def test_reads_round_trip(api: Api, sandbox: Sandbox, provider: ProviderName) -> None:
    """Offer a slot, book it, and read the booking back: by id, by the patient's e-mail, and
    the patient themselves; the slot is no longer offered."""
    start, end = _day(provider)
    r = api("GET", f"/{provider.value}/slots", params={"start": start, "end": end, "duration": "45"})
    assert r.status_code == 200, r.text
    slots = r.json()
    assert slots and all(s["provider"] == provider.value for s in slots)
    assert all(_instant(s["end"]) - _instant(s["start"]) == datetime.timedelta(minutes=45) for s in slots)
    email = f"reads-{provider.value}@example.com"
    body = booking_body(start=slots[0]["start"], duration_minutes=45, reference=f"srv-read-{provider.value}")
    body["patient"] = {"name": "Rea Der", "email": email, "phone": "+15555550177"}
    booked = api("POST", f"/{provider.value}/book", json=body)
    assert booked.status_code == 201, booked.text
    appointment_id = booked.json()["id"]
    settle = getattr(sandbox.emulator(provider), "settle", None)
    if settle is not None:
        settle()  # HubSpot's search index has caught up, as it does within seconds

    again = api("GET", f"/{provider.value}/slots", params={"start": start, "end": end, "duration": "45"}).json()
    assert slots[0]["start"] not in [s["start"] for s in again]

    r = api("GET", f"/{provider.value}/booking/{appointment_id}")
    assert r.status_code == 200, r.text
    assert r.json()["id"] == appointment_id and r.json()["status"] == "booked" and "raw" in r.json()

    for params in ({"email": email}, {"reference": body["reference"]}, {"email": email, "start": start, "end": end}):
        r = api("GET", f"/{provider.value}/bookings", params=params)
        assert r.status_code == 200, (params, r.text)
        assert [b["id"] for b in r.json()] == [appointment_id], params

    r = api("GET", f"/{provider.value}/patients", params={"email": email})
    assert r.status_code == 200, r.text
    assert [p["email"] for p in r.json()] == [email]

    api("DELETE", f"/{provider.value}/booking/{appointment_id}")
    if settle is not None:
        settle()
    assert api("GET", f"/{provider.value}/bookings", params={"email": email}).json() == []
    cancelled = api("GET", f"/{provider.value}/bookings", params={"email": email, "include_cancelled": "true"})
    assert [b["status"] for b in cancelled.json()] == ["cancelled"]


def test_a_phone_number_whose_plus_was_not_encoded_is_still_read_as_one(sandbox: Sandbox) -> None:
    """``?phone=+1555...`` arrives as `` 1555...`` (a form-encoded space); it is the + a caller meant."""
    seen: list[str | None] = []

    def find_patient(**kwargs: Any) -> list[Any]:
        seen.append(kwargs["phone"])
        return []

    with PMSClient(environ=sandbox_env(sandbox), env_file=None) as c:
        c.find_patient = find_patient  # type: ignore[method-assign]
        with serving(create_app(c, token=SERVER_TOKEN), sandbox, headers=AUTH) as api:
            raw = api.session.get(f"{api.base}{PREFIX}/{FIRST.value}/patients?phone=+15555550123", timeout=10)
            assert raw.status_code == 200 and raw.json() == []
            assert api("GET", f"/{FIRST.value}/patients", params={"phone": "+15555550123"}).json() == []
    assert seen == ["+15555550123", "+15555550123"]


def test_reads_need_a_server_token_even_where_writes_do_not(sandbox: Sandbox, client: PMSClient) -> None:
    with serving(create_app(client, token=None), sandbox) as api:
        for path in READ_PATHS:
            data = problem(api("GET", f"/{FIRST.value}{path}", params={"email": "a@example.com"}), 403)
            assert data["type"].endswith(":token-required") and "PMS_SERVER_TOKEN" in data["detail"]
            assert "[redacted]" not in data["detail"]
        # the writes on loopback without a token are as before
        booked = api("POST", f"/{FIRST.value}/book", json=booking_body())
        assert booked.status_code == 201, booked.text
        r = api("DELETE", f"/{FIRST.value}/booking/{booked.json()['id']}")
        assert r.status_code == 200, r.text


def test_reads_without_the_token_are_401(main_server: Served, sandbox: Sandbox) -> None:
    anonymous = Api(main_server.url, all_secrets(sandbox))
    try:
        for path in READ_PATHS:
            r = anonymous("GET", f"/{FIRST.value}{path}")
            assert problem(r, 401)["type"].endswith(":unauthorized")
            r = anonymous("GET", f"/{FIRST.value}{path}", headers={"Authorization": "Bearer wrong"})
            problem(r, 401)
    finally:
        anonymous.close()


def test_read_queries_are_checked_field_by_field(api: Api) -> None:
    data = problem(api("GET", f"/{FIRST.value}/slots"), 422)
    assert {e["field"] for e in data["errors"]} == {"start", "end"}
    params = {"start": "2031-04-07T09:00:00", "end": "soon", "duration": "2", "colour": "blue"}
    data = problem(api("GET", f"/{FIRST.value}/slots", params=params), 422)
    assert {e["field"] for e in data["errors"]} == {"colour"}  # unknown parameters first, before anything else
    del params["colour"]
    data = problem(api("GET", f"/{FIRST.value}/slots", params=params), 422)
    assert {e["field"] for e in data["errors"]} == {"start", "end", "duration"}
    data = problem(api("GET", f"/{FIRST.value}/slots", params={**params, "duration": "half an hour"}), 422)
    assert data["errors"] == [{"field": "duration", "message": "must be a whole number of minutes, such as 30"}]
    data = problem(api("GET", f"/{FIRST.value}/bookings"), 422)
    assert "booking reference" in data["errors"][0]["message"]
    data = problem(
        api("GET", f"/{FIRST.value}/bookings", params={"reference": "r-1", "include_cancelled": "maybe"}), 422
    )
    assert data["errors"] == [{"field": "include_cancelled", "message": "must be true or false"}]
    data = problem(api("GET", f"/{FIRST.value}/patients", params={"email": "not-an-email"}), 422)
    assert [e["field"] for e in data["errors"]] == ["email"]
    data = problem(api("GET", f"/{FIRST.value}/patients?email=a@example.com&email=b@example.com"), 422)
    assert data["errors"] == [{"field": "email", "message": "is given more than once"}]
    problem(api("GET", f"/{FIRST.value}/booking/..%20x"), 422)
    problem(api("GET", "/pipedrive/slots"), 404)
    r = api("PUT", f"/{FIRST.value}/booking/abc123", json={})
    assert {"GET", "PATCH", "DELETE"} <= {m.strip() for m in problem(r, 405) and r.headers["allow"].split(",")}


def test_no_patient_detail_of_a_query_string_reaches_a_log(
    api: Api, sandbox: Sandbox, tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The read endpoints take e-mail and phone in the query string; neither the server's own
    log lines nor uvicorn's access log (``run`` drops the query string) may carry them."""
    caplog.set_level(logging.DEBUG)
    problem(api("GET", f"/{FIRST.value}/patients", params={"email": "hidden.person@example", "x": "1"}), 422)
    problem(api("GET", "/pipedrive/bookings", params={"phone": "+15555550166"}), 404)
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith(("pms_integration", "uvicorn")))
    assert "/patients" in ours and "hidden.person" not in ours and "5550166" not in ours

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PMS_")}
    env.update(sandbox.environ(), PMS_SERVER_TOKEN=SERVER_TOKEN)
    code = f"from pms_integration.server import run; run(port={port})"
    proc = subprocess.Popen(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        served = Api(f"http://127.0.0.1:{port}", all_secrets(sandbox), AUTH)
        deadline = time.monotonic() + 15
        while True:
            try:
                served("GET", f"/{FIRST.value}/patients", params={"email": "hidden.person@example.com"}, timeout=2)
                break
            except requests.ConnectionError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "run() did not start serving"
                time.sleep(0.05)
        served("GET", f"/{FIRST.value}/bookings", params={"phone": "+15555550166", "colour": "x"})
        served.close()
    finally:
        out, err = interrupted(proc, timeout=10)
    logged = out + err
    assert f'"GET {PREFIX}/{FIRST.value}/patients HTTP/1.1"' in logged, logged  # the access log, path only
    assert "hidden.person" not in logged and "5550166" not in logged and "colour" not in logged
