"""The command line: status table, JSON in/out, exit codes, no secrets in output."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from typing import Any

import pytest

from pms_integration import cli, errors
from pms_integration.errors import (
    OUTCOMES,
    APIError,
    AppointmentCancelledError,
    AuthenticationError,
    ConfigurationError,
    ConflictError,
    NotFoundError,
    ProviderError,
    ProviderNotConfiguredError,
    RateLimitError,
    ResponseTooLargeError,
    ServerError,
    TransportError,
    UnexpectedResponseError,
    ValidationError,
)

from .conftest import CANARY, full_environ


def test_providers_table_in_a_subprocess_shows_no_secret() -> None:
    env = {**os.environ, **full_environ(PMS_HUBSPOT_TIMEOUT_MS="abc")}
    env.pop("PMS_SALESFORCE_TOKEN")
    out = subprocess.run(
        [sys.executable, "-m", "pms_integration", "providers"], env=env, capture_output=True, text=True, check=True, cwd="/"
    )
    text = out.stdout + out.stderr
    assert "gohighlevel  enabled" in text
    assert "salesforce   disabled  missing PMS_SALESFORCE_TOKEN" in text
    assert "hubspot      disabled  PMS_HUBSPOT_TIMEOUT_MS must be" in text
    for value in CANARY.values():
        assert value not in text


def test_help_lists_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for what, code in cli.EXIT_CODES:
        assert f"{code:>2}  {what}" in out


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ValidationError.single("start", "bad"), 3),
        (ProviderNotConfiguredError("hubspot", missing=["PMS_HUBSPOT_PRIVATE_APP_TOKEN"]), 4),
        (AuthenticationError("no", status_code=401), 6),
        (NotFoundError("no", status_code=404), 7),
        (ConflictError("taken", status_code=400), 8),
        (RateLimitError("slow", status_code=429), 9),
        (ServerError("down", status_code=503), 11),
        (TransportError("timeout"), 11),
        (TransportError("timeout", outcome_unknown=True), 12),
        (ServerError("down", status_code=503, outcome_unknown=True), 12),
        (KeyError("x"), 1),
    ],
)
def test_exit_code_per_error_class(error: BaseException, code: int) -> None:
    assert cli.exit_code(error) == code


def test_invalid_json_is_exit_3_with_the_field(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["book", "--provider", "ghl", "{not json"]) == 3
    err = capsys.readouterr().err
    assert "request" in err and "not valid JSON" in err


def test_unconfigured_provider_is_exit_4(capsys: pytest.CaptureFixture[str]) -> None:
    body = json.dumps({"start": "2031-12-01T10:00:00-05:00", "patient": {"email": "a@b.co"}})
    assert cli.main(["book", "--provider", "hubspot", body]) == 4
    assert "PMS_HUBSPOT_PRIVATE_APP_TOKEN" in capsys.readouterr().err


def test_validation_errors_are_listed_per_field(capsys: pytest.CaptureFixture[str]) -> None:
    body = json.dumps({"start": "2031-12-01T10:00:00", "patient": {"email": "nope"}})
    assert cli.main(["book", "--provider", "ghl", body]) == 3
    err = capsys.readouterr().err
    assert "  start: " in err and "  patient.email: " in err


@pytest.mark.parametrize("version", ["v2", "v1"])
def test_demo_succeeds_on_every_provider(version: str) -> None:
    import io

    out = io.StringIO()
    assert cli.run_demo(out, ghl_api_version=version) == 0
    text = out.getvalue()
    assert "FAILED" not in text
    for provider in ("gohighlevel", "salesforce", "hubspot"):
        for step in ("book", "reschedule", "cancel", "push-report"):
            assert any(line.startswith(provider) and f" {step} " in line for line in text.splitlines()), (provider, step)
    if version == "v1":
        assert "skipped: GoHighLevel API v1 cannot hold performance reports" in text


@pytest.mark.parametrize(("content", "message"), [(b"\xff\xfe{", "not valid UTF-8"), (b"[" * 5000 + b"]" * 5000, "nests too deeply")])
def test_unreadable_json_files_are_exit_3(tmp_path: object, capsys: pytest.CaptureFixture[str], content: bytes, message: str) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "req.json"
    path.write_bytes(content)
    assert cli.main(["book", "--provider", "ghl", f"@{path}"]) == 3
    assert message in capsys.readouterr().err
    assert cli.main(["book", "--provider", "ghl", f"@{path}.missing"]) == 3


# -- messages in the command line's own words -----------------------------------------------------


def test_library_argument_names_become_flags() -> None:
    assert cli.for_the_command_line("pass provider=... or set X.") == "pass --provider NAME or set X."
    assert cli.for_the_command_line('use provider="hubspot"') == "use --provider hubspot"
    assert cli.for_the_command_line("or pass insecure_no_auth=True.") == "or pass --insecure-no-auth."


def test_several_providers_message_names_the_flag(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    for key, value in full_environ().items():
        monkeypatch.setenv(key, value)
    assert cli.main(["cancel", "abc123"]) == 4
    assert capsys.readouterr().err == (
        "error: Several providers are enabled (gohighlevel, salesforce, hubspot); pass --provider NAME or set "
        "PMS_DEFAULT_PROVIDER. Fix the configuration (the PMS_* variables, in the environment or the .env file) "
        "and run the command again.\n"
    )


def test_unknown_provider_is_reported_under_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["cancel", "--provider", "pipedrive", "abc123"]) == 3
    err = capsys.readouterr().err
    assert err.splitlines()[1] == (
        "  --provider: unknown provider 'pipedrive'; expected one of gohighlevel, salesforce, hubspot (or ghl)"
    )
    assert "provider=" not in err


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            ConflictError("GoHighLevel book failed with HTTP 409: slot taken", status_code=409),
            "GoHighLevel book failed with HTTP 409: slot taken. Offer the patient another time.",
        ),
        (
            RateLimitError("HubSpot book failed with HTTP 429", status_code=429, retry_after=7),
            "HubSpot book failed with HTTP 429. Retry after 7 s.",
        ),
        (
            ServerError("Salesforce book failed with HTTP 503", status_code=503, outcome_unknown=True, reference="r1"),
            "Salesforce book failed with HTTP 503. The provider is having trouble; try again shortly. The change may "
            "have been applied: retry with the same reference 'r1' (the library looks it up before creating "
            "anything), never a new one.",
        ),
        (
            ProviderNotConfiguredError("hubspot", problems=["PMS_HUBSPOT_TIMEOUT_MS must be a whole number."]),
            "Provider 'hubspot' is not configured. Problems: PMS_HUBSPOT_TIMEOUT_MS must be a whole number. Fix the "
            "configuration (PMS_* variables) and call reload().",
        ),
        (
            AppointmentCancelledError("The appointment abc is cancelled", status_code=409),
            "The appointment abc is cancelled. This appointment was cancelled: book a new appointment instead of "
            "moving it.",
        ),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else "",
)
def test_error_messages_are_punctuated_sentences(error: Exception, expected: str) -> None:
    assert str(error) == expected


# -- exit codes for every kind of provider error --------------------------------------------------


class _TooLarge(UnexpectedResponseError):
    """Stands for a subclass the library may add later (a response over the size cap, say)."""


class _OtherProviderError(ProviderError):
    pass


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (AppointmentCancelledError("cancelled", status_code=409, code="APPOINTMENT_CANCELLED"), 8),
        (_TooLarge("too big"), 11),
        (_TooLarge("too big", outcome_unknown=True), 12),
        (_OtherProviderError("odd"), 11),
        (APIError("teapot", status_code=418), 11),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else str(v),
)
def test_exit_codes_for_cancelled_and_unknown_provider_errors(error: BaseException, code: int) -> None:
    assert cli.exit_code(error) == code


def test_exit_code_table_explains_the_cancelled_booking() -> None:
    (row,) = [what for what, code in cli.EXIT_CODES if code == 8]
    assert "AppointmentCancelledError" in row and "book a new one" in row


def test_response_too_large_maps_like_an_unexpected_response() -> None:
    assert issubclass(ResponseTooLargeError, UnexpectedResponseError)
    assert cli.exit_code(ResponseTooLargeError("too big")) == 11


def test_exit_code_table_names_each_class_with_its_outcome() -> None:
    named = {name: code for what, code in cli.EXIT_CODES for name in re.findall(r"\b(\w+Error)\b", what)}
    outcomes = {name: next(OUTCOMES[c] for c in getattr(errors, name).__mro__ if c in OUTCOMES) for name in named}
    assert named == {name: outcome.exit_code for name, outcome in outcomes.items()}


# -- serve: who may connect, the report source, the server extra ---------------------------------


@pytest.fixture
def fake_uvicorn(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, object]]:
    """uvicorn.run replaced: nothing is ever bound; the calls are recorded."""
    pytest.importorskip("starlette")
    import uvicorn

    calls: list[dict[str, object]] = []

    def run(app: object, **kwargs: object) -> None:
        calls.append(kwargs)

    monkeypatch.setattr(uvicorn, "run", run)
    return calls


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "pms.example.com", "127.0.0.1.nip.io", ""])
def test_serve_beyond_loopback_without_a_token_refuses_to_start(
    fake_uvicorn: list[dict[str, object]], capsys: pytest.CaptureFixture[str], host: str
) -> None:
    assert cli.main(["serve", "--host", host]) == 4
    assert fake_uvicorn == []
    err = capsys.readouterr().err
    assert err == (
        f"error: Refusing to serve on {host!r} without a token: anyone who can reach that address could book and "
        "cancel appointments. Set PMS_SERVER_TOKEN to a long random value (your frontend sends it in "
        "the Authorization header as a bearer token), or serve on 127.0.0.1 only. If another layer already guards the "
        "endpoints, pass --insecure-no-auth.\n"
    )


def test_serve_beyond_loopback_with_a_token_or_the_insecure_flag(
    fake_uvicorn: list[dict[str, object]], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["serve", "--host", "0.0.0.0", "--insecure-no-auth"]) == 0
    assert fake_uvicorn[-1]["host"] == "0.0.0.0"
    assert "WITHOUT authentication (--insecure-no-auth)" in capsys.readouterr().err
    monkeypatch.setenv("PMS_SERVER_TOKEN", "srv-canary-cli-5d2f8a61b7e94c03")
    assert cli.main(["serve", "--host", "0.0.0.0", "--port", "9000"]) == 0
    assert fake_uvicorn[-1]["host"] == "0.0.0.0" and fake_uvicorn[-1]["port"] == 9000
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost", "LOCALHOST"])
def test_serve_on_loopback_needs_no_token(fake_uvicorn: list[dict[str, object]], host: str) -> None:
    assert cli.main(["serve", "--host", host]) == 0
    assert fake_uvicorn[-1]["host"] == host


def test_run_itself_refuses_before_binding(fake_uvicorn: list[dict[str, object]]) -> None:
    from pms_integration.server import UnprotectedServerError, run

    with pytest.raises(UnprotectedServerError) as info:
        run("0.0.0.0", 8000, token=None)
    assert isinstance(info.value, ConfigurationError)
    assert "pass insecure_no_auth=True." in str(info.value)
    assert fake_uvicorn == []
    run("0.0.0.0", 8000, token=None, insecure_no_auth=True)
    run("0.0.0.0", 8000, token="srv-canary-run-0a9b8c7d6e5f4a3b")
    assert [c["host"] for c in fake_uvicorn] == ["0.0.0.0", "0.0.0.0"]


def test_serve_without_the_server_extra_says_how_to_install_it(tmp_path: object) -> None:
    code = "import sys; sys.modules['starlette'] = None\nfrom pms_integration.cli import main\nraise SystemExit(main(['serve']))\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False, cwd=str(tmp_path))
    assert done.returncode == 4, done.stderr
    assert "pip install 'pms-integration[server]'" not in done.stderr  # no index has it
    assert "pip install starlette uvicorn" in done.stderr
    assert "[server]'" in done.stderr  # the checkout or URL it was installed from
    assert "call reload()" not in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("weekly", "--report-source 'weekly' is not of the form module:function"),
        ("no_such_module_x1:current", "--report-source: cannot import module 'no_such_module_x1'"),
        ("weekly:missing", "--report-source: module 'weekly' has no attribute 'missing'"),
        ("weekly:NOT_CALLABLE", "--report-source: 'weekly:NOT_CALLABLE' is a str, not a callable"),
        ("weekly:needs_argument", "--report-source: 'weekly:needs_argument' cannot be called without arguments"),
        ("broken:current", "importing 'broken' for --report-source failed: RuntimeError: broken on import"),
    ],
)
def test_report_source_is_checked_before_serving(
    fake_uvicorn: list[dict[str, object]],
    tmp_path: object,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    spec: str,
    message: str,
) -> None:
    from pathlib import Path

    # The command adds the working directory to sys.path and imports from it: undo both.
    monkeypatch.setattr(sys, "path", list(sys.path))
    for name in ("weekly", "broken"):
        monkeypatch.delitem(sys.modules, name, raising=False)

    here = Path(str(tmp_path))  # conftest made it the working directory
    (here / "weekly.py").write_text(
        "NOT_CALLABLE = 'x'\n\ndef needs_argument(day):\n    return {}\n", encoding="utf-8"
    )
    (here / "broken.py").write_text("raise RuntimeError('broken on import')\n", encoding="utf-8")
    try:
        assert cli.main(["serve", "--report-source", spec]) == 4
    finally:
        for name in ("weekly", "broken"):
            sys.modules.pop(name, None)
    err = capsys.readouterr().err
    assert err.startswith("error: " + message), err
    assert err.rstrip().endswith("Give the report source as module:function, a callable that takes no arguments.")
    assert fake_uvicorn == []


def test_serve_with_a_report_source_pushes_it_end_to_end(tmp_path: object) -> None:
    pytest.importorskip("starlette")
    import socket
    import time
    from pathlib import Path

    import requests

    from .test_server import interrupted

    here = Path(str(tmp_path))
    (here / "weekly_cli_report.py").write_text(
        "CALLS = []\n\n"
        "def current():\n"
        "    CALLS.append(1)\n"
        "    return {'period_start': '2031-03-01', 'period_end': '2031-03-07', 'metrics': {'calls': 42},\n"
        "            'report_id': 'weekly-from-the-cli'}\n",
        encoding="utf-8",
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PMS_")}
    argv = ["serve", "--sandbox", "--port", str(port), "--report-source", "weekly_cli_report:current"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "pms_integration", *argv], env=env, cwd=here, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        url = f"http://127.0.0.1:{port}/api/integrations/pms/ghl/performance"
        deadline = time.monotonic() + 30
        while True:
            try:
                r = requests.post(url, timeout=10)
                break
            except requests.ConnectionError:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "serve did not start"
                time.sleep(0.05)
        assert r.status_code == 200, r.text
        assert r.json()["report_id"] == "weekly-from-the-cli"
    finally:
        out, err = interrupted(proc, timeout=20)
    assert proc.returncode == 0, err
    assert "Serving against the sandbox at http://127.0.0.1:" in out


def _get_status(app: Any, path: str, headers: dict[str, str]) -> int:
    """The status an ASGI app answers to GET ``path``, called in-process (no socket bound)."""
    import asyncio

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
    }  # fmt: skip
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return int(next(m["status"] for m in sent if m["type"] == "http.response.start"))


@pytest.mark.parametrize("where", [".env", "--env-file"])
def test_serve_reads_the_server_token_from_the_env_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    pytest.importorskip("starlette")
    import uvicorn

    token = "Zx81kQ2031mPa7Lw9rT5"
    providers = "/api/integrations/pms/providers"
    answers: list[tuple[int, int, int]] = []

    def run(app: Any, **kwargs: Any) -> None:  # what the served app answers, while it is served
        bearer = {"Authorization": f"Bearer {token}"}
        answers.append((kwargs["port"], _get_status(app, providers, {}), _get_status(app, providers, bearer)))

    monkeypatch.setattr(uvicorn, "run", run)
    path = tmp_path / (".env" if where == ".env" else "serve.env")
    path.write_text(f"PMS_SERVER_TOKEN={token}\n", encoding="utf-8")
    extra = [] if where == ".env" else ["--env-file", str(path)]
    # Off loopback, the token in the file is enough to start; on loopback the endpoints ask for it too.
    assert cli.main([*extra, "serve", "--host", "0.0.0.0", "--port", "9000"]) == 0, capsys.readouterr().err
    assert cli.main([*extra, "serve", "--port", "9001"]) == 0
    assert answers == [(9000, 401, 200), (9001, 401, 200)]
    out, err = capsys.readouterr()
    assert token not in out + err and "Set PMS_SERVER_TOKEN" not in err


def test_serve_refuses_a_weak_server_token(
    fake_uvicorn: list[dict[str, object]], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PMS_SERVER_TOKEN", "2031")
    assert cli.main(["serve"]) == 4
    err = capsys.readouterr().err
    assert err.startswith("error: PMS_SERVER_TOKEN is too short to be a secret"), err
    assert "2031" not in err.replace("PMS_SERVER_TOKEN", "") and fake_uvicorn == []


# -- the scheduling reads: slots, get, find, patients ---------------------------------------------


def test_read_commands_check_their_flags(capsys: pytest.CaptureFixture[str]) -> None:
    window = ["--start", "2031-03-04T08:00:00-05:00", "--end", "2031-03-04T18:00:00-05:00"]
    assert cli.main(["slots", "-p", "ghl", *window, "--duration", "y"]) == 3
    assert "  --duration: must be a whole number of minutes" in capsys.readouterr().err
    assert cli.main(["slots", "-p", "ghl", "--start", "2031-03-04T08:00:00", "--end", "x", "--duration", "2"]) == 3
    err = capsys.readouterr().err
    assert "  start: " in err and "  end: " in err and "  --duration: must be between" in err
    assert cli.main(["find", "-p", "ghl"]) == 3
    assert "  email: give an e-mail address, a phone number or a booking reference" in capsys.readouterr().err
    assert cli.main(["patients", "-p", "ghl", "--email", "nope"]) == 3
    assert cli.main(["get", "-p", "ghl", "../x"]) == 3
    assert cli.main(["patients", "-p", "pipedrive", "--phone", "+15555550123"]) == 3
    assert "  --provider: " in capsys.readouterr().err
    assert cli.main(["find", "-p", "hubspot", "--reference", "conv-1"]) == 4  # not configured
    assert "PMS_HUBSPOT_PRIVATE_APP_TOKEN" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        cli.main(["slots", "--start", "2031-03-04T08:00:00-05:00"])  # --end is required
    assert usage.value.code == 2


def test_read_commands_print_json_against_the_sandbox(
    sb: Any, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from pathlib import Path

    env_file = Path(str(tmp_path)) / "sandbox.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in sb.environ(default_provider="ghl").items()), encoding="utf-8")
    run = ["--env-file", str(env_file)]

    def out(*argv: str) -> Any:
        assert cli.main([*run, *argv]) == 0, capsys.readouterr().err
        return json.loads(capsys.readouterr().out)

    window = ["--start", "2030-03-05T08:00:00-05:00", "--end", "2030-03-05T12:00:00-05:00"]
    slots = out("slots", *window, "--duration", "60")
    assert slots and {s["provider"] for s in slots} == {"gohighlevel"} and set(slots[0]) == {"provider", "start", "end"}
    request = {"start": slots[0]["start"], "duration_minutes": 60, "reference": "cli-read-1",
               "patient": {"name": "Cli Reader", "email": "cli.reader@example.com", "phone": "+15555550161"}}  # fmt: skip
    booked = out("book", json.dumps(request))
    assert slots[0]["start"] not in [s["start"] for s in out("slots", *window, "--duration", "60")]
    got = out("get", booked["id"])
    assert got["id"] == booked["id"] and "raw" not in got and "raw" in out("get", "--raw", booked["id"])
    since = ["--start", "2030-03-01T00:00:00-05:00"]
    assert [a["id"] for a in out("find", "--email", "cli.reader@example.com", *since)] == [booked["id"]]
    assert [a["id"] for a in out("find", "--phone", "+1 (555) 555-0161", *since)] == [booked["id"]]
    assert [a["id"] for a in out("find", "--reference", "cli-read-1", *since)] == [booked["id"]]
    [patient] = out("patients", "--email", "cli.reader@example.com")
    assert patient["email"] == "cli.reader@example.com" and patient["name"] == "Cli Reader" and "raw" not in patient
    out("cancel", booked["id"])
    assert out("find", "--email", "cli.reader@example.com", *since) == []
    assert [a["status"] for a in out("find", "--email", "cli.reader@example.com", *since, "--include-cancelled")] == [
        "cancelled"
    ]
    assert cli.main([*run, "get", "ZzZzZzZzZzZzZzZzZzZz"]) == 7  # not found
    assert "error: " in capsys.readouterr().err
