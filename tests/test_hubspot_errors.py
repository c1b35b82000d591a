"""HubSpot error bodies and statuses -> the exception hierarchy (the table in docs/providers/hubspot.md),
retry behaviour per status, and the rate-limit headers."""

from __future__ import annotations

import json
from typing import Any

import pytest

import pms_integration as pms
from pms_integration._http import HttpResponse
from pms_integration.models import AppointmentUpdate
from pms_integration.providers import hubspot
from pms_integration.providers.hubspot import parse_error, parse_rate_headers

from ._hubspot_support import CORRELATION, error_body, fake_hubspot, make_adapter, sent

LEGACY_VALIDATION = (
    'Property values were not valid: [{"isValid":false,"message":"Property \\"foo\\" does not exist",'
    '"error":"PROPERTY_DOESNT_EXIST","name":"foo","localizedErrorMessage":"Property \\"foo\\" does not exist"}]'
)

# status, body, headers -> class, code, attempts (3 = retried to the limit), sleeps between them
TABLE: list[tuple[str, int, Any, dict[str, str], type[pms.APIError], str | None, int, list[float] | None]] = [
    (
        "validation (legacy message)",
        400,
        error_body(LEGACY_VALIDATION, "VALIDATION_ERROR"),
        {},
        pms.InvalidRequestError,
        "VALIDATION_ERROR",
        1,
        [],
    ),
    (
        "validation (errors[])",
        400,
        error_body(
            "Invalid input",
            "VALIDATION_ERROR",
            errors=[
                {
                    "message": "hs_meeting_outcome was not one of the allowed options",
                    "code": "INVALID_OPTION",
                    "context": {"propertyName": ["hs_meeting_outcome"]},
                }
            ],
        ),
        {},
        pms.InvalidRequestError,
        "VALIDATION_ERROR",
        1,
        [],
    ),
    (
        "bad token",
        401,
        error_body("Authentication credentials not found.", "INVALID_AUTHENTICATION"),
        {},
        pms.AuthenticationError,
        "INVALID_AUTHENTICATION",
        1,
        [],
    ),
    (
        "missing scope",
        403,
        error_body("This app hasn't been granted all required scopes to make this call.", "MISSING_SCOPES"),
        {},
        pms.PermissionDeniedError,
        "MISSING_SCOPES",
        1,
        [],
    ),
    (
        "not found",
        404,
        error_body("Object not found.  objectId are usually numeric.", "OBJECT_NOT_FOUND"),
        {},
        pms.NotFoundError,
        "OBJECT_NOT_FOUND",
        1,
        [],
    ),
    ("conflict", 409, error_body("Conflict", "CONFLICT"), {}, pms.ConflictError, "CONFLICT", 1, []),
    (
        "daily limit",
        429,
        {
            "status": "error",
            "message": "You have reached your daily limit.",
            "errorType": "RATE_LIMIT",
            "correlationId": CORRELATION,
            "policyName": "DAILY",
        },
        {},
        pms.RateLimitError,
        "DAILY",
        1,
        [],
    ),
    (
        "ten-secondly limit",
        429,
        {
            "status": "error",
            "message": "You have reached your ten_secondly_rolling limit.",
            "errorType": "RATE_LIMIT",
            "correlationId": CORRELATION,
            "policyName": "TEN_SECONDLY_ROLLING",
        },
        {},
        pms.RateLimitError,
        "TEN_SECONDLY_ROLLING",
        3,
        [10.0, 10.0],
    ),
    (
        "search secondly limit",
        429,
        {
            "status": "error",
            "message": "You have reached your secondly limit.",
            "errorType": "RATE_LIMIT",
            "correlationId": CORRELATION,
        },
        {},
        pms.RateLimitError,
        "RATE_LIMIT",
        3,
        [1.0, 1.0],
    ),
    (
        "429 with Retry-After",
        429,
        {"status": "error", "message": "slow down", "policyName": "TEN_SECONDLY_ROLLING"},
        {"Retry-After": "3"},
        pms.RateLimitError,
        "TEN_SECONDLY_ROLLING",
        3,
        [3.0, 3.0],
    ),
    ("locked", 423, error_body("Locked", "LOCKED"), {}, pms.APIError, "LOCKED", 3, [2.0, 2.0]),
    (
        "migration, short wait",
        477,
        error_body("Migration in progress", "MIGRATION_IN_PROGRESS"),
        {"Retry-After": "5"},
        pms.APIError,
        "MIGRATION_IN_PROGRESS",
        3,
        [5.0, 5.0],
    ),
    ("migration, long wait", 477, {}, {"Retry-After": "86400"}, pms.APIError, "MIGRATION_IN_PROGRESS", 1, []),
    ("uri too long", 414, error_body("URI too long", "VALIDATION_ERROR"), {}, pms.APIError, "VALIDATION_ERROR", 1, []),
    (
        "server error",
        500,
        error_body("internal error", "INTERNAL_ERROR"),
        {},
        pms.ServerError,
        "INTERNAL_ERROR",
        3,
        None,
    ),
    ("gateway html", 502, "<html><body>Bad Gateway</body></html>", {}, pms.ServerError, None, 3, None),
    ("cloudflare timeout", 524, "", {}, pms.ServerError, None, 3, None),
]


@pytest.mark.parametrize(
    ("status", "body", "headers", "cls", "code", "attempts", "sleeps"),
    [row[1:] for row in TABLE],
    ids=[row[0] for row in TABLE],
)
def test_error_mapping_table(
    status: int,
    body: Any,
    headers: dict[str, str],
    cls: type[pms.APIError],
    code: str | None,
    attempts: int,
    sleeps: list[float] | None,
) -> None:
    waits: list[float] = []
    with fake_hubspot() as (fake, rsps):
        fake.add("meetings", {"hs_meeting_outcome": "SCHEDULED", "hs_meeting_start_time": "1790000000000"}, "55501")
        fake.fail("PATCH", "/meetings/", status=status, body=body, headers=headers, times=3)
        with pytest.raises(pms.APIError) as info:
            make_adapter(waits).update("987654321:55501", AppointmentUpdate(title="x"))
        assert len(rsps.calls) == attempts + 1  # the read that checks the booking is not cancelled
    err = info.value
    assert type(err) is cls
    assert err.status_code == status
    assert err.code == code
    assert not err.outcome_unknown  # a PATCH is idempotent
    if isinstance(body, dict) and "correlationId" in body:
        assert err.request_id == CORRELATION
    if sleeps is not None:
        # The retry waits are the expected ones; a limiter that also holds the next request until
        # Retry-After has passed may add the remainder of that wait (a fake sleep moves no clock).
        assert {round(w, 1) for w in waits} == set(sleeps)


def test_validation_fields_are_collected() -> None:
    parse = parse_error
    legacy = parse(HttpResponse(400, {}, json.dumps(error_body(LEGACY_VALIDATION, "VALIDATION_ERROR")), "POST", "/x"))
    assert legacy.fields == ("foo",)
    modern = parse(
        HttpResponse(
            400,
            {},
            json.dumps(
                error_body(
                    "bad",
                    "VALIDATION_ERROR",
                    errors=[
                        {"message": "m1", "code": "PROPERTY_DOESNT_EXIST", "context": {"propertyName": ["bar", "baz"]}},
                        {"message": "m2", "context": {"propertyName": "qux"}},
                    ],
                )
            ),
            "POST",
            "/x",
        )
    )
    assert modern.fields == ("bar", "baz", "qux")
    assert "m1" in modern.message and "m2" in modern.message


def test_daily_limit_is_not_retried_and_says_so() -> None:
    info = parse_error(HttpResponse(429, {}, json.dumps({"policyName": "DAILY", "message": "daily"}), "GET", "/"))
    assert info.retryable is False and info.code == "DAILY"


def test_migration_message_names_the_wait() -> None:
    with fake_hubspot() as (fake, _):
        fake.add("meetings", {"hs_timestamp": "2026-10-05T13:00:00.000Z"}, "2")
        fake.add("deals", {"dealname": "Cleaning", "dealstage": "appointmentscheduled"}, "1")
        fake.fail("PATCH", "/meetings/", status=477, body={}, headers={"Retry-After": "86400"})
        with pytest.raises(pms.APIError) as info:
            make_adapter().cancel("1:2")
    assert "migrated" in str(info.value) and "86400" in str(info.value)


def test_the_old_parser_class_name_is_a_deprecated_alias() -> None:
    with pytest.deprecated_call():
        old = hubspot.HubSpotErrorParser
    assert old() is old(max_wait=5.0) is parse_error


def test_correlation_id_header_is_used_when_the_body_has_none() -> None:
    info = parse_error(HttpResponse(500, {"X-HubSpot-Correlation-Id": "abc-123"}, "", "GET", "/"))
    assert info.request_id == "abc-123"


def test_ten_secondly_429_then_success_recovers() -> None:
    waits: list[float] = []
    with fake_hubspot() as (fake, rsps):
        fake.fail("PATCH", "/meetings/", status=429, body={"policyName": "TEN_SECONDLY_ROLLING"})
        fake.add("meetings", {"hs_meeting_title": "a", "hs_timestamp": "2026-10-05T13:00:00.000Z"}, "55501")
        fake.add("deals", {"dealname": "a"}, "987654321")
        make_adapter(waits).cancel("987654321:55501")
        assert len(rsps.calls) == 4  # read, 429, PATCH meeting, PATCH deal
    assert {round(w, 1) for w in waits} == {10.0}


LOCKED = {"status": "error", "message": "later", "policyName": "TEN_SECONDLY_ROLLING"}


def test_a_create_refused_with_423_is_retried_without_reconcile() -> None:
    """423 means "not applied", so even a POST create is simply sent again (a 429 on a create:
    tests/test_one_behaviour.py, on every provider)."""
    with fake_hubspot() as (fake, rsps):
        fake.add("contacts", {"email": "jane@example.com"})
        fake.fail("POST", "/deals$", status=423, body=LOCKED)
        from .test_hubspot_adapter import booking

        make_adapter().book(booking())
        paths = [p for _, p, _ in sent(rsps)]
    assert "/crm/v3/objects/deals/search" not in paths
    assert fake.count("deals") == 1


# ---------------------------------------------------------------------------------------------
# rate-limit headers


def test_rate_headers_are_read() -> None:
    info = parse_rate_headers(
        {
            "x-hubspot-ratelimit-max": "190",
            "X-HubSpot-RateLimit-Remaining": "12",
            "X-HubSpot-RateLimit-Interval-Milliseconds": "10000",
            "X-HubSpot-RateLimit-Daily": "625000",
            "X-HubSpot-RateLimit-Daily-Remaining": "600000",
        }
    )
    assert info is not None
    assert (info.limit, info.remaining, info.interval_seconds) == (190, 12, 10.0)
    assert (info.daily_limit, info.daily_remaining) == (625000, 600000)


def test_rate_headers_absent_or_garbage() -> None:
    assert parse_rate_headers({}) is None
    assert parse_rate_headers({"Content-Type": "application/json"}) is None
    assert parse_rate_headers({"X-HubSpot-RateLimit-Max": "lots"}) is None
    secondly = parse_rate_headers({"X-HubSpot-RateLimit-Secondly": "10", "X-HubSpot-RateLimit-Secondly-Remaining": "9"})
    assert secondly is not None and secondly.interval_seconds == 1.0 and secondly.remaining == 9


def test_exhausted_quota_header_pauses_the_client_side_limiter() -> None:
    waits: list[float] = []
    with fake_hubspot() as (fake, _):
        fake.add("meetings", {"hs_timestamp": "2026-10-05T13:00:00.000Z"}, "55501")
        fake.add("deals", {}, "987654321")
        fake.rate_headers["X-HubSpot-RateLimit-Remaining"] = "0"
        adapter = make_adapter(waits, PMS_HUBSPOT_RATE_LIMIT="100/10")
        adapter.cancel("987654321:55501")
    assert adapter.transport.rate_limit_info is not None
    assert adapter.transport.rate_limit_info.remaining == 0
    assert waits and max(waits) > 9  # the second request waited for the 10 s window
