"""The command line: status table, JSON in/out, exit codes, no secrets in output."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pms_integration import cli
from pms_integration.errors import (
    AuthenticationError,
    ConflictError,
    NotFoundError,
    ProviderNotConfiguredError,
    RateLimitError,
    ServerError,
    TransportError,
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
    body = json.dumps({"start": "2026-12-01T10:00:00-05:00", "patient": {"email": "a@b.co"}})
    assert cli.main(["book", "--provider", "hubspot", body]) == 4
    assert "PMS_HUBSPOT_PRIVATE_APP_TOKEN" in capsys.readouterr().err


def test_validation_errors_are_listed_per_field(capsys: pytest.CaptureFixture[str]) -> None:
    body = json.dumps({"start": "2026-12-01T10:00:00", "patient": {"email": "nope"}})
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
