"""Secrets are masked where they can occur, and nowhere else.

Vendor text (error bodies, vendor messages, request ids), headers, URLs and exception text are
redacted; the library's own structured output (the CLI's JSON of an Appointment, the HTTP
server's JSON built from models, the caller's own field paths) is never touched, so a secret
that happens to read like a date or a word cannot corrupt a start time or break the JSON.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from pms_integration import _redact, cli
from pms_integration import errors as E
from pms_integration._redact import MASK, excerpt, redact, redact_data, redact_path, register_secret
from pms_integration.sandbox import Sandbox

# Shaped like the start of a booking's own start time, as in the review (PMS_SERVER_TOKEN=2031).
DATE_LIKE = "2031-03-04T09:00:00"
REFERENCE = "call-2031-harriet-0001"
BOOKING = {
    "start": f"{DATE_LIKE}-05:00",
    "duration_minutes": 30,
    "timezone": "America/New_York",
    "title": "Cleaning",
    "patient": {"name": "Harriet Oyelaran", "email": "harriet@example.com"},
    "reference": REFERENCE,
}


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Secrets registered in a test are forgotten afterwards (the registry only ever grows)."""
    monkeypatch.setattr(_redact, "_known", set(_redact._known))
    monkeypatch.setattr(_redact, "_plain", set(_redact._plain))


def _register_data_like_secrets() -> None:
    # Short and common values: the configuration refuses them now, but the redactor must not
    # corrupt output even if one gets registered (an old config, a Secret built by hand).
    for value in ("2031", "true", "Cleaning", DATE_LIKE, REFERENCE):
        register_secret(value)


# ---------------------------------------------------------------------------------------------
# the redactor itself


@pytest.mark.parametrize(
    "text",
    [
        '{"token": "abc123", "n": 1}',
        '{"token": 12345, "n": 1}',
        '{"access_token":true,"x":1}',
        '{"client_secret": null}',
        '{"note": "{\\"refresh_token\\": \\"r-42\\"}"}',
        '{"h": "Bearer abc\\"q"}',
        '{"a": ["Bearer xyz789", "api_key=k1&x=2"]}',
    ],
)
def test_pattern_masking_keeps_json_valid(text: str) -> None:
    masked = redact(text)
    json.loads(masked)  # still a JSON document
    for value in ("abc123", "12345", "r-42", "xyz", "k1"):
        assert value not in masked


def test_pattern_masking_still_catches_the_usual_shapes() -> None:
    assert redact("Authorization: Bearer s3cr3t.value") == f"Authorization: Bearer {MASK}"
    assert redact("GET /x?api_key=abc&page=2") == f"GET /x?api_key={MASK}&page=2"
    assert redact("{'token': 'abc'}") == f"{{'token': '{MASK}'}}"
    # built at run time: no token-shaped literal is committed, even a made-up one
    assert redact("-".join(("pat", "na1", "0123456789abcdef"))) == MASK
    # Prose that merely mentions tokens stays readable.
    for prose in ("send it as a bearer token, or", "without a token: anyone who can reach it"):
        assert redact(prose) == prose


def test_registered_secrets_in_free_text_and_its_encodings(registry: None) -> None:
    secret = "se/cr+et value-0123456789"
    register_secret(secret)
    for form in (secret, "se%2Fcr%2Bet%20value-0123456789", "se%2Fcr%2Bet+value-0123456789"):
        assert form not in redact(f"POST /token?x={form}&y=1 body {form}")
    assert json.loads(redact(json.dumps({"echo": secret}))) == {"echo": MASK}


def test_paths_keep_the_callers_data_and_mask_only_whole_secret_segments(registry: None) -> None:
    _register_data_like_secrets()
    assert redact_path("metrics.2031_calls") == "metrics.2031_calls"
    assert redact_path("extra.true_value") == "extra.true_value"
    assert redact_path(REFERENCE + "-2") == REFERENCE + "-2"
    assert redact_path(REFERENCE) == MASK
    assert redact_path(f"extra.{REFERENCE}.x") == f"extra.{MASK}.x"
    error = E.ValidationError([("metrics.2031_calls", "must be a number"), (REFERENCE, "is not a known field")])
    assert error.fields == ["metrics.2031_calls", MASK]
    assert "metrics.2031_calls: must be a number" in str(error)


def test_redact_data_keeps_the_structure() -> None:
    data = {"access_token": "t-1", "items": [{"note": "Bearer abc.def"}, 1, 2.5, None, True], "nan": float("nan")}
    assert redact_data(data) == {"access_token": MASK, "items": [{"note": f"Bearer {MASK}"}, 1, 2.5, None, True], "nan": None}


def test_excerpt_of_a_huge_body_is_short_and_masked(registry: None) -> None:
    secret = "huge-body-secret-0123456789"
    register_secret(secret)
    body = f"error {secret} " + ("padding " * 2_000_000) + secret
    text = excerpt(body, 200)
    assert len(text) <= 200 and secret not in text and text.startswith(f"error {MASK}")


def test_vendor_request_id_and_code_are_scrubbed(registry: None) -> None:
    secret = "vendor-echo-secret-0123456789"
    register_secret(secret)
    error = E.InvalidRequestError(
        "x",
        status_code=400,
        code=f"BAD {secret}",
        request_id=f"req-1\r\nSet-Cookie: a=b Bearer {secret}",
        fields=[f"prop_{secret}"],
    )
    assert error.request_id is not None and "\r" not in error.request_id and "\n" not in error.request_id
    for value in (error.request_id, error.code or "", *error.fields, repr(error), str(error)):
        assert secret not in value
    assert len(E.APIError("x", status_code=500, request_id="r" * 5000).request_id or "") <= 200


# ---------------------------------------------------------------------------------------------
# the CLI and the HTTP server, end to end


class _Vendor(BaseHTTPRequestHandler):
    """A vendor that answers every request with 400 and an error that echoes a secret."""

    secret = ""

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        body = json.dumps(
            {"statusCode": 400, "message": f"key {self.secret} rejected; Authorization: Bearer abcdef0123456789"}
        ).encode()
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Request-Id", f"req-{self.secret}")
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def echoing_vendor(secret: str) -> Iterator[str]:
    handler = type("Handler", (_Vendor,), {"secret": secret})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/ghl"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    """A fresh sandbox per test: every test books the same slot."""
    with Sandbox() as sb:
        yield sb


def _use_environ(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("PMS_MAX_ATTEMPTS", "1")


@pytest.mark.parametrize("raw", [False, True], ids=["plain", "raw"])
def test_cli_json_is_not_corrupted_by_secrets_that_look_like_data(
    registry: None, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], raw: bool
) -> None:
    _register_data_like_secrets()
    _use_environ(monkeypatch, sandbox.environ())
    booking = {**BOOKING, "reference": f"{REFERENCE}-{int(raw)}"}
    argv = ["book", "--provider", "ghl", json.dumps(booking)] + (["--raw"] if raw else [])
    assert cli.main(argv) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    data = json.loads(out)  # the key "true" used to make this invalid JSON
    assert data["start"] == booking["start"]
    assert data["reference"] == booking["reference"]
    assert data["status"] == "booked"
    assert ("raw" in data) is raw
    if not raw:
        assert MASK not in out


def test_cli_still_masks_the_secret_in_a_vendor_error(
    registry: None, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _register_data_like_secrets()
    with echoing_vendor(DATE_LIKE) as url:
        _use_environ(monkeypatch, {**sandbox.environ(), "PMS_GHL_BASE_URL": url})
        code = cli.main(["book", "--provider", "ghl", json.dumps(BOOKING)])
    err = capsys.readouterr().err
    assert code == 10, err
    assert DATE_LIKE not in err and "abcdef0123456789" not in err
    assert f"key {MASK} rejected" in err
    assert f"  vendor request id: req-{MASK} (quote it to the vendor's support)" in err.splitlines()


def test_http_responses_are_not_corrupted_but_vendor_errors_are_masked(registry: None, sandbox: Sandbox) -> None:
    pytest.importorskip("starlette")
    from pms_integration import PMSClient
    from pms_integration.server import PREFIX, create_app

    from .test_server import Served

    _register_data_like_secrets()
    token = DATE_LIKE  # a server token that reads like the booking's own start time
    auth = {"Authorization": f"Bearer {token}"}
    env = {**sandbox.environ(), "PMS_MAX_ATTEMPTS": "1"}
    with PMSClient(environ=env, env_file=None) as client:
        served = Served(create_app(client, token=token)).start()
        try:
            booking = {**BOOKING, "reference": f"{REFERENCE}-http"}
            r = requests.post(f"{served.url}{PREFIX}/ghl/book", json=booking, headers=auth, timeout=10)
            assert r.status_code == 201, r.text
            data = json.loads(r.text)
            assert data["start"] == booking["start"] and data["reference"] == booking["reference"]
            assert "[redacted]" not in json.dumps({k: v for k, v in data.items() if k != "raw"})

            # The caller's own field path is echoed as it is (only a whole secret is masked).
            bad = {**booking, "2031_calls": 1, "true_story": 2}
            r = requests.post(f"{served.url}{PREFIX}/ghl/book", json=bad, headers=auth, timeout=10)
            assert r.status_code == 422, r.text
            assert {e["field"] for e in r.json()["errors"]} == {"2031_calls", "true_story"}
            assert "2031_calls" in r.json()["detail"]
        finally:
            served.stop()
    with echoing_vendor(token) as url, PMSClient(environ={**env, "PMS_GHL_BASE_URL": url}, env_file=None) as client:
        served = Served(create_app(client, token=token)).start()
        try:
            r = requests.post(f"{served.url}{PREFIX}/ghl/book", json=BOOKING, headers=auth, timeout=10)
        finally:
            served.stop()
    assert r.status_code == 502, r.text
    problem = r.json()
    assert token not in r.text and "abcdef0123456789" not in r.text
    assert f"key {MASK} rejected" in problem["detail"]
    assert problem["request_id"] == f"req-{MASK}"
