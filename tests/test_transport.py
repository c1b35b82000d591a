"""The retry table, error mapping, timeouts, auth and logging of the shared transport."""

from __future__ import annotations

import email.utils
import logging
import re
import time
from pathlib import Path
from typing import Any

import pytest
import requests
import responses
import urllib3.exceptions
from responses import matchers

from pms_integration._http import BearerAuth, ErrorInfo, HttpResponse, Transport, should_retry
from pms_integration._ratelimit import RateLimiter, RateLimitInfo
from pms_integration._retry import RetryPolicy, deadline_scope, parse_retry_after
from pms_integration.config import RateLimit, Secret
from pms_integration.errors import (
    AuthenticationError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    PMSError,
    RateLimitError,
    ServerError,
    TransportError,
)
from pms_integration.models import ProviderName

BASE = "https://api.test"
URL = BASE + "/things"
TOKEN = "tok-transport-canary-123456"


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def make(ft: FakeTime, **kwargs: Any) -> Transport:
    kwargs.setdefault("policy", RetryPolicy(max_attempts=3))
    return Transport(
        provider=ProviderName.GOHIGHLEVEL,
        base_url=BASE,
        auth=BearerAuth(Secret(TOKEN)),
        timeout=7.5,
        token_variable="PMS_GHL_API_KEY",
        sleep=ft.sleep,
        clock=ft.clock,
        **kwargs,
    )


def never_sent() -> requests.ConnectionError:
    return requests.ConnectionError(
        urllib3.exceptions.MaxRetryError(None, URL, urllib3.exceptions.NewConnectionError(None, "Connection refused"))  # type: ignore[arg-type]
    )


def reset_after_send() -> requests.ConnectionError:
    return requests.ConnectionError(
        urllib3.exceptions.ProtocolError("Connection aborted.", ConnectionResetError(104, "Connection reset by peer"))
    )


@pytest.fixture
def ft() -> FakeTime:
    return FakeTime()


@pytest.mark.parametrize("method", ["GET", "POST"])
@responses.activate
def test_never_sent_is_retried_for_every_method(ft: FakeTime, method: str) -> None:
    responses.add(method, URL, body=never_sent())
    responses.add(method, URL, json={"ok": True})
    resp = make(ft).request(method, "/things", operation="op")
    assert resp.status == 200 and len(responses.calls) == 2


@pytest.mark.parametrize("exc_factory", [requests.exceptions.ReadTimeout, reset_after_send])
@responses.activate
def test_ambiguous_failure_on_create_is_not_retried(ft: FakeTime, exc_factory: Any) -> None:
    responses.add("POST", URL, body=exc_factory())
    responses.add("POST", URL, json={"id": "dup"})
    with pytest.raises(TransportError) as err:
        make(ft).request("POST", "/things", operation="book", reference="bk-123")
    assert err.value.outcome_unknown is True
    assert len(responses.calls) == 1
    assert "bk-123" in str(err.value) and "may have been applied" in str(err.value)
    assert err.value.__cause__ is not None
    assert ft.sleeps == []


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
@pytest.mark.parametrize("exc_factory", [requests.exceptions.ReadTimeout, reset_after_send])
@responses.activate
def test_ambiguous_failure_on_idempotent_call_is_retried(ft: FakeTime, method: str, exc_factory: Any) -> None:
    responses.add(method, URL, body=exc_factory())
    responses.add(method, URL, json={})
    assert make(ft).request(method, "/things", operation="op").status == 200
    assert len(responses.calls) == 2 and len(ft.sleeps) == 1


@responses.activate
def test_post_marked_idempotent_is_retried(ft: FakeTime) -> None:
    responses.add("POST", URL, body=requests.exceptions.ReadTimeout())
    responses.add("POST", URL, json={"results": []})
    assert make(ft).request("POST", "/things", operation="search", idempotent=True).status == 200


@pytest.mark.parametrize("method", ["GET", "POST"])
@responses.activate
def test_429_waits_retry_after_then_retries(ft: FakeTime, method: str) -> None:
    responses.add(method, URL, status=429, headers={"Retry-After": "7"}, json={"message": "slow down"})
    responses.add(method, URL, json={"id": "1"})
    assert make(ft).request(method, "/things", operation="op").json() == {"id": "1"}
    assert ft.sleeps == [7.0]


@responses.activate
def test_429_http_date_retry_after(ft: FakeTime) -> None:
    when = email.utils.formatdate(time.time() + 12, usegmt=True)
    responses.add("POST", URL, status=429, headers={"Retry-After": when})
    responses.add("POST", URL, json={})
    make(ft).request("POST", "/things", operation="op")
    assert len(ft.sleeps) == 1 and 10 <= ft.sleeps[0] <= 12


@pytest.mark.parametrize(("status", "cls"), [(429, RateLimitError), (503, ServerError)])
@responses.activate
def test_a_wait_longer_than_the_cap_is_raised_not_slept(ft: FakeTime, status: int, cls: type[Exception]) -> None:
    responses.add("GET", URL, status=status, headers={"Retry-After": "3600"})
    with pytest.raises(cls) as err:
        make(ft).request("GET", "/things", operation="op")
    assert getattr(err.value, "retry_after") == 3600 and ft.sleeps == [] and len(responses.calls) == 1
    assert "Retry after 3600 s" in str(err.value)


@responses.activate
def test_429_without_retry_after_backs_off(ft: FakeTime) -> None:
    responses.add("GET", URL, status=429)
    with pytest.raises(RateLimitError):
        make(ft).request("GET", "/things", operation="op")
    assert len(responses.calls) == 3 and len(ft.sleeps) == 2
    assert all(0.5 <= s <= 8.5 for s in ft.sleeps)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
@responses.activate
def test_5xx_on_idempotent_call_is_retried_with_backoff(ft: FakeTime, status: int) -> None:
    responses.add("PUT", URL, status=status, body="<html>down</html>")
    with pytest.raises(ServerError) as err:
        make(ft).request("PUT", "/things", operation="update")
    assert len(responses.calls) == 3
    assert ft.sleeps[0] >= 0.5 and ft.sleeps[1] >= 1.0 and all(s <= 8.5 for s in ft.sleeps)
    assert err.value.outcome_unknown is False and err.value.status_code == status


@responses.activate
def test_5xx_on_create_is_outcome_unknown_and_not_retried(ft: FakeTime) -> None:
    responses.add("POST", URL, status=503)
    with pytest.raises(ServerError) as err:
        make(ft).request("POST", "/things", operation="book", reference="bk-9")
    assert err.value.outcome_unknown and len(responses.calls) == 1 and "bk-9" in str(err.value)


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, InvalidRequestError),
        (401, AuthenticationError),
        (403, PermissionDeniedError),
        (404, NotFoundError),
        (409, ConflictError),
        (422, InvalidRequestError),
    ],
)
@pytest.mark.parametrize("method", ["GET", "POST"])
@responses.activate
def test_4xx_is_never_retried(ft: FakeTime, status: int, cls: type[Exception], method: str) -> None:
    responses.add(method, URL, status=status, json={"message": "nope"})
    with pytest.raises(cls) as err:
        make(ft).request(method, "/things", operation="op")
    assert len(responses.calls) == 1 and ft.sleeps == []
    assert not getattr(err.value, "outcome_unknown")


@responses.activate
def test_401_names_the_variable_never_the_value(ft: FakeTime) -> None:
    responses.add("GET", URL, status=401, json={"message": f"Invalid token {TOKEN}"})
    with pytest.raises(AuthenticationError) as err:
        make(ft).request("GET", "/things", operation="op")
    assert "PMS_GHL_API_KEY" in str(err.value)
    assert TOKEN not in str(err.value) and TOKEN not in repr(err.value)


@responses.activate
def test_expected_status_is_returned(ft: FakeTime) -> None:
    responses.add("GET", URL, status=404, json={"message": "no"})
    assert make(ft).request("GET", "/things", operation="find", expect=(404,)).status == 404


@responses.activate
def test_every_request_has_a_timeout_auth_and_user_agent(ft: FakeTime) -> None:
    seen: dict[str, Any] = {}

    def callback(request: Any) -> tuple[int, dict[str, str], str]:
        seen["timeout"] = request.req_kwargs["timeout"]
        seen["auth"] = request.headers["Authorization"]
        seen["ua"] = request.headers["User-Agent"]
        return 200, {}, "{}"

    responses.add_callback("GET", URL, callback=callback)
    make(ft).request("GET", "/things", operation="op")
    assert seen["timeout"] == 7.5
    assert seen["auth"] == f"Bearer {TOKEN}"
    assert seen["ua"].startswith("pms-integration/")


@responses.activate
def test_timeout_shrinks_to_the_deadline(ft: FakeTime) -> None:
    seen: list[float] = []
    responses.add_callback("GET", URL, callback=lambda r: (seen.append(r.req_kwargs["timeout"]) or (200, {}, "{}")))
    with deadline_scope(2.0, ft.clock):
        make(ft).request("GET", "/things", operation="op")
    assert seen == [2.0]


@responses.activate
def test_deadline_stops_retries(ft: FakeTime) -> None:
    responses.add("GET", URL, status=503, headers={"Retry-After": "5"})
    with deadline_scope(3.0, ft.clock), pytest.raises(ServerError):
        make(ft).request("GET", "/things", operation="op")
    assert len(responses.calls) == 1 and ft.sleeps == []


@responses.activate
def test_expired_deadline_sends_nothing(ft: FakeTime) -> None:
    responses.add("GET", URL, json={})
    with deadline_scope(1.0, ft.clock):
        ft.now += 5
        with pytest.raises(TransportError, match="deadline"):
            make(ft).request("GET", "/things", operation="op")
    assert len(responses.calls) == 0


@responses.activate
def test_error_parser_overrides_class_and_retryability(ft: FakeTime) -> None:
    def parser(resp: HttpResponse) -> ErrorInfo:
        body = resp.json()
        if body[0]["errorCode"] == "REQUEST_LIMIT_EXCEEDED":
            return ErrorInfo(body[0]["message"], code="REQUEST_LIMIT_EXCEEDED", error_class=RateLimitError, retryable=False)
        return ErrorInfo("?")

    responses.add("GET", URL, status=403, json=[{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}])
    with pytest.raises(RateLimitError) as err:
        make(ft, error_parser=parser).request("GET", "/things", operation="op")
    assert err.value.code == "REQUEST_LIMIT_EXCEEDED" and len(responses.calls) == 1


@responses.activate
def test_broken_error_parser_does_not_crash(ft: FakeTime) -> None:
    def parser(resp: HttpResponse) -> ErrorInfo:
        raise KeyError("boom")

    responses.add("GET", URL, status=400, body="<html>")
    with pytest.raises(InvalidRequestError):
        make(ft, error_parser=parser).request("GET", "/things", operation="op")


@responses.activate
def test_refreshing_auth_replays_once(ft: FakeTime) -> None:
    class Refreshing:
        def __init__(self) -> None:
            self.token = "old"
            self.refreshes = 0

        def apply(self, headers: dict[str, str]) -> object:
            headers["Authorization"] = "Bearer " + self.token
            return self.token

        def refresh(self, used: object) -> bool:
            self.refreshes += 1
            self.token = "new"
            return True

    auth = Refreshing()
    responses.add("GET", URL, status=401, match=[matchers.header_matcher({"Authorization": "Bearer old"})])
    responses.add("GET", URL, json={}, match=[matchers.header_matcher({"Authorization": "Bearer new"})])
    t = make(ft)
    t.auth = auth
    assert t.request("GET", "/things", operation="op").status == 200
    assert auth.refreshes == 1


@responses.activate
def test_one_info_line_per_request_without_query_or_email(ft: FakeTime, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="pms_integration")
    url = BASE + "/contacts/jane%40example.com"
    responses.add("GET", url, json={})
    make(ft).request("GET", "/contacts/jane%40example.com", operation="op", params={"idProperty": "email"})
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert len(lines) == 1
    assert "GET /contacts/{email} -> 200" in lines[0]
    assert "example.com" not in lines[0] and "idProperty" not in lines[0] and TOKEN not in lines[0]


@responses.activate
def test_rate_header_parser_feeds_the_limiter(ft: FakeTime) -> None:
    responses.add("GET", URL, json={}, headers={"X-Left": "0"})
    t = make(
        ft,
        rate_limit=RateLimit(100, 10),
        rate_header_parser=lambda h: RateLimitInfo(remaining=int(h["X-Left"]), interval_seconds=10),
    )
    t.request("GET", "/things", operation="op")
    assert t.rate_limit_info == RateLimitInfo(remaining=0, interval_seconds=10)
    responses.add("GET", URL, json={}, headers={"X-Left": "5"})
    t.request("GET", "/things", operation="op")
    assert ft.sleeps and ft.sleeps[0] == pytest.approx(10, abs=0.01)


def test_parse_retry_after() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("0.5") == 0.5
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
    assert parse_retry_after("inf") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=lambda: 1445412470.0) == pytest.approx(10.0)


def test_rate_limiter_never_exceeds_n_per_window() -> None:
    ft = FakeTime()
    limiter = RateLimiter(5, 1.0, clock=ft.clock, sleep=ft.sleep)
    grants = []
    for _ in range(23):
        slot = limiter.acquire()
        grants.append(ft.now)
        limiter.release(slot)
    for i in range(len(grants) - 5):
        assert grants[i + 5] - grants[i] >= 1.0
    # the burst goes out at once, then the rate holds: 23 requests need about 4 windows
    assert grants[4] == grants[0]
    assert grants[-1] - grants[0] < 4 * 1.0 * (1 + RateLimiter.MARGIN) + 1e-9


@responses.activate
def test_parser_retry_after_is_a_floor_and_long_waits_are_not_slept(ft: FakeTime) -> None:
    def parser(resp: HttpResponse) -> ErrorInfo:
        return ErrorInfo("locked", retryable=True, retry_after=2.0 if resp.status == 423 else 120.0)

    responses.add("PATCH", URL, status=423, headers={"Retry-After": "1"})
    responses.add("PATCH", URL, json={})
    make(ft, error_parser=parser).request("PATCH", "/things", operation="op")
    assert ft.sleeps == [2.0]
    responses.add("GET", URL, status=477)
    with pytest.raises(Exception):
        make(ft, error_parser=parser).request("GET", "/things", operation="op")
    assert ft.sleeps == [2.0]


@responses.activate
def test_a_netrc_entry_never_replaces_the_bearer_token(ft: FakeTime, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine api.test login someone password hunter2\n", encoding="utf-8")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.setenv("HOME", str(tmp_path))
    seen: list[str] = []
    responses.add_callback("GET", URL, callback=lambda r: (seen.append(r.headers["Authorization"]) or (200, {}, "{}")))
    make(ft).request("GET", "/things", operation="op")
    assert seen == [f"Bearer {TOKEN}"]


def test_environment_proxies_are_read_once_at_construction(ft: FakeTime, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "")
    t = make(ft)
    assert t.session.trust_env is False
    assert t.session.proxies.get("https") == "http://proxy.internal:3128"


def test_limiter_does_not_pause_for_a_quota_it_used_itself() -> None:
    ft = FakeTime()
    limiter = RateLimiter(2, 1.0, clock=ft.clock, sleep=ft.sleep)
    limiter.release(limiter.acquire())
    limiter.release(limiter.acquire())
    limiter.observe(RateLimitInfo(remaining=0, interval_seconds=10))  # our own two requests
    ft.now += 1.1
    limiter.release(limiter.acquire())
    assert ft.sleeps == []
    other = RateLimiter(5, 1.0, clock=ft.clock, sleep=ft.sleep)
    other.release(other.acquire())
    other.observe(RateLimitInfo(remaining=0, interval_seconds=10))  # someone else used it
    other.release(other.acquire())
    assert ft.sleeps == [pytest.approx(10)]


def test_excerpt_never_leaks_part_of_a_token_cut_at_the_limit() -> None:
    from pms_integration._redact import excerpt, register_secret

    token = "straddling-token-0123456789abcdef0123456789"
    register_secret(token)
    for offset in range(150, 200):
        text = "x" * offset + token + " trailing"
        out = excerpt(text, 200)
        assert "0123456789abcdef" not in out and "straddling-token" not in out


@responses.activate
def test_a_transport_error_keeps_no_request_with_the_auth_header(ft: FakeTime) -> None:
    responses.add("POST", URL, body=requests.exceptions.ReadTimeout())
    with pytest.raises(TransportError) as err:
        make(ft).request("POST", "/things", operation="book")
    cause = err.value.__cause__
    assert isinstance(cause, requests.exceptions.ReadTimeout)
    assert cause.request is None and cause.response is None


def test_retry_after_date_with_unknown_zone_is_utc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        when = email.utils.formatdate(1_000_010.0)  # ends in -0000
        assert when.endswith("-0000")
        assert parse_retry_after(when, now=lambda: 1_000_000.0) == pytest.approx(10.0)
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


# -- the documented retry table, row by row --------------------------------------------------------


def _documented_retry_table() -> list[tuple[str, bool, bool]]:
    """(failure, retried for reads/updates/cancels, retried for creates) per row of docs/errors.md."""
    page = (Path(__file__).parents[1] / "docs" / "errors.md").read_text(encoding="utf-8")
    section = page.split("## What the library retries for you", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|") and not line.startswith("|---")]
    assert lines[0].startswith("| Failure |"), lines[0]

    def retried(cell: str, left: bool | None = None) -> bool:
        if cell.startswith("the same") and left is not None:
            return left
        if cell.startswith(("retried", "waits")):
            return True
        if cell.startswith(("raised", "never", "looked up")):
            return False
        raise AssertionError(f"the retry table says {cell!r}: teach this test what that means")

    rows = []
    for line in lines[1:]:
        failure, reads, creates = (cell.strip() for cell in line.strip().strip("|").split("|"))
        rows.append((failure, retried(reads), retried(creates, retried(reads))))
    return rows


def _failures(row: str) -> list[dict[str, Any]]:
    """What the mocked vendor answers for one row of the table (``responses.add`` keywords)."""
    if row.startswith("Connection refused"):
        return [{"body": never_sent()}]
    if row.startswith("Read timeout"):
        return [{"body": requests.exceptions.ReadTimeout()}, {"body": reset_after_send()}]
    if "ResponseTooLargeError" in row:
        return [{"json": {"padding": "x" * 64}}]  # over the cap the test sets
    statuses = [int(s) for s in re.findall(r"\b[1-5]\d\d\b", row)]
    assert statuses, f"no failure known for the retry table's row {row!r}"
    limit = "REQUEST_LIMIT_EXCEEDED" in row  # Salesforce's 403 that means 429
    return [
        {
            "status": status,
            "json": [{"errorCode": "REQUEST_LIMIT_EXCEEDED", "message": "slow"}] if limit and status == 403 else {},
            "headers": {"Retry-After": "1"} if status == 429 else {},
        }
        for status in statuses
    ]


def _limit_exceeded_parser(resp: HttpResponse) -> ErrorInfo:
    body = resp.json_or_none()
    if isinstance(body, list) and body and body[0].get("errorCode") == "REQUEST_LIMIT_EXCEEDED":
        return ErrorInfo("slow", code="REQUEST_LIMIT_EXCEEDED", error_class=RateLimitError)
    return ErrorInfo("no")


def _send(ft: FakeTime, method: str, failure: dict[str, Any], attempts: int) -> tuple[PMSError | None, int]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add(method, URL, **failure)
        mock.add(method, URL, json={})
        t = make(ft, policy=RetryPolicy(max_attempts=attempts, jitter=0), error_parser=_limit_exceeded_parser)
        try:
            t.request(method, "/things", operation="book", reference="bk-table")
        except PMSError as exc:
            return exc, len(mock.calls)
        return None, len(mock.calls)


@pytest.mark.parametrize(("failure", "reads", "creates"), _documented_retry_table())
def test_every_row_of_the_documented_retry_table(
    ft: FakeTime, monkeypatch: pytest.MonkeyPatch, failure: str, reads: bool, creates: bool
) -> None:
    monkeypatch.setattr(Transport, "MAX_BODY_BYTES", 32)
    for method, retried in (("PUT", reads), ("POST", creates)):
        for answer in _failures(failure):
            # the predicate, on the error one attempt ends with
            error, sent = _send(ft, method, answer, attempts=1)
            assert error is not None and sent == 1
            assert should_retry(error, idempotent=method != "POST") is retried, (method, answer, error)
            # and the transport, given a second attempt
            _, sent = _send(ft, method, answer, attempts=2)
            assert sent == (2 if retried else 1), (method, answer)
