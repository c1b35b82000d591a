"""Salesforce adapter: appointments are ``Event`` records, performance reports completed ``Task``s.

Wire format (REST API, ``/services/data/v{version}``, JSON, ``Authorization: Bearer <token>``):

* **book** - ``POST /sobjects/Event/`` with ``Subject`` (title, patient name and the booking
  reference in brackets), ``StartDateTime``/``EndDateTime`` in UTC, ``Description``, ``OwnerId``,
  ``IsAllDayEvent: false``, ``ShowAs: "Busy"`` and, when known, ``RecordTypeId``, ``WhoId`` and
  ``Location``. Salesforce answers ``201 {"id", "success", "errors"}``.
* **update** - one ``GET /sobjects/Event/{id}`` first (a cancelled booking is refused with
  :class:`AppointmentCancelledError` before any write; the answer needs the booking's times and
  zone; a new title or notes must keep the reference and patient details around them), then
  ``PATCH /sobjects/Event/{id}`` with only the changed fields (``204``).
* **cancel** - the same ``GET`` (``404 NOT_FOUND``: the id never existed, ``NotFoundError``;
  ``404 ENTITY_IS_DELETED``: already cancelled, success, its times read by ``queryAll``), then
  ``DELETE /sobjects/Event/{id}`` (``204``). ``cancel_mode="soft"`` keeps the record instead:
  ``PATCH`` ``Subject`` to ``"CANCELLED: ..."``, ``ShowAs`` to ``Free`` and a line onto
  ``Description``.

The booking's time zone is written into the Event's details block (``Time zone: ...``, an IANA
name or ``UTC-05:00``), since Salesforce keeps only UTC; every returned Appointment carries its
start and end in that zone.
* **push_report** - a ``Task`` with ``Status: "Completed"`` whose ``Subject`` ends in
  ``[<report_id>]``; a SOQL query finds an earlier push of the same report, which is patched
  instead of creating another.

Creates are never repeated blindly: after an ambiguous failure (timeout, reset, 5xx) a SOQL
look-up by the bracketed reference in ``Subject`` decides whether the record already exists.

Errors arrive as a JSON array ``[{"message", "errorCode", "fields"}]``; :func:`parse_error`
reads it (and survives HTML pages from Salesforce's edge). ``Sforce-Limit-Info`` is read into the
transport's :class:`~pms_integration._ratelimit.RateLimitInfo`. An expired token is refreshed
once with the OAuth refresh-token flow when the client id, secret and refresh token are set; the
token request never follows a redirect, and a rotated refresh token goes to the client's
:class:`~pms_integration.tokens.TokenStore`, when it has one, before it is used.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .._http import ErrorInfo, HttpResponse, Runtime, Transport
from .._once import create_once
from .._ratelimit import RateLimitInfo
from ..config import SalesforceSettings, Secret
from ..errors import (
    APIError,
    AppointmentCancelledError,
    AuthenticationError,
    ConfigurationError,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    PMSError,
    ProviderError,
    RateLimitError,
    ServerError,
    TransportError,
    ValidationError,
)
from ..models import (
    Appointment,
    AppointmentRequest,
    AppointmentStatus,
    AppointmentUpdate,
    PerformanceReport,
    ProviderName,
    ReportReceipt,
)
from ..provider import ALL_CAPABILITIES, Capability
from ..tokens import TokenStore
from ._base import unexpected

__all__ = [
    "SalesforceProvider",
    "TokenRefreshAuth",
    "create",
    "parse_error",
    "parse_limit_info",
    "id_checksum",
    "is_salesforce_id",
    "soql_string",
    "soql_like_contains",
    "soql_datetime",
    "wire_datetime",
    "parse_salesforce_datetime",
    "EVENT_PREFIX",
    "TASK_PREFIX",
    "CANCELLED_PREFIX",
]

log = logging.getLogger("pms_integration.providers.salesforce")

PROVIDER = ProviderName.SALESFORCE
TOKEN_VARIABLE = "PMS_SALESFORCE_TOKEN"  # noqa: S105 - a variable name, not a secret
REFRESH_VARIABLES = ("PMS_SALESFORCE_CLIENT_ID", "PMS_SALESFORCE_CLIENT_SECRET", "PMS_SALESFORCE_REFRESH_TOKEN")

#: Key prefixes of the standard objects this adapter touches (the first three id characters).
EVENT_PREFIX = "00U"
TASK_PREFIX = "00T"
CONTACT_PREFIX = "003"
LEAD_PREFIX = "00Q"
USER_PREFIX = "005"

SUBJECT_MAX = 255
DESCRIPTION_MAX = 32_000
LOCATION_MAX = 255
CANCELLED_PREFIX = "CANCELLED: "
DETAILS_MARKER = "--- booking details (pms-integration) ---"
REPORT_DATA_MARKER = "--- machine-readable ---"
REPORT_SCHEMA = "pms_integration.performance_report/1"

# Fields the adapter fills itself; ``request.extra`` may not override them, because the
# reconcile look-up depends on them (Subject carries the reference; start and owner narrow it).
_PROTECTED_EXTRA = frozenset({"Id", "Subject", "StartDateTime", "OwnerId"})
_FIELD_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,79}$")
_REFERENCE_IN_SUBJECT = re.compile(r"\[([A-Za-z0-9][A-Za-z0-9_.:-]{0,63})\]\s*$")
_EVENT_READ_FIELDS = ("Id", "Subject", "Description", "StartDateTime", "EndDateTime", "WhoId", "ShowAs")
_ZONE_LINE = re.compile(r"^Time zone: (\S{1,64})\s*$", re.MULTILINE)
_OFFSET_ZONE = re.compile(r"^(?:UTC)?([+-])(\d{2}):(\d{2})$")

# ---------------------------------------------------------------------------------------------
# record ids

_ID_SHAPE = re.compile(r"^[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?$")
_CHECKSUM_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"


@functools.lru_cache(maxsize=4096)
def id_checksum(id15: str) -> str:
    """The three-character suffix that turns a 15-character id into its 18-character form.

    Each suffix character encodes, as a 5-bit number, which of five id characters are
    upper-case letters, so the 18-character id survives case-insensitive handling.
    """
    if len(id15) != 15:
        raise ValueError("the checksum is computed over exactly 15 characters")
    suffix = []
    for block in range(3):
        bits = 0
        for position, char in enumerate(id15[block * 5 : block * 5 + 5]):
            if "A" <= char <= "Z":
                bits |= 1 << position
        suffix.append(_CHECKSUM_ALPHABET[bits])
    return "".join(suffix)


def is_salesforce_id(value: object) -> bool:
    """True for a well-formed 15- or 18-character id (18: the case checksum must match)."""
    if not isinstance(value, str) or not _ID_SHAPE.fullmatch(value):
        return False
    return len(value) == 15 or value[15:] == id_checksum(value[:15])


def _check_id(value: object, field: str, prefixes: tuple[str, ...], what: str) -> str:
    """Return ``value`` if it is a valid id of the expected object, else raise ValidationError."""
    if not isinstance(value, str) or not _ID_SHAPE.fullmatch(value):
        raise ValidationError.single(field, f"must be {what}: 15 or 18 letters and digits")
    if len(value) == 18 and value[15:] != id_checksum(value[:15]):
        raise ValidationError.single(
            field,
            f"is not a valid 18-character Salesforce id: its last three characters should be "
            f"{id_checksum(value[:15])!r} (mistyped, or its upper/lower case was changed)",
        )
    if not value.startswith(prefixes):
        starts = " or ".join(prefixes)
        raise ValidationError.single(field, f"must be {what} (an id starting with {starts})")
    return value


# ---------------------------------------------------------------------------------------------
# SOQL and date-time formatting

_SOQL_ESCAPES = {"\\": "\\\\", "'": "\\'", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}


def soql_string(value: str) -> str:
    """A SOQL string literal (quoted, with backslash escapes)."""
    return "'" + "".join(_SOQL_ESCAPES.get(c, c) for c in value) + "'"


def soql_like_contains(value: str) -> str:
    """A SOQL ``LIKE`` pattern matching any text that contains ``value`` literally."""
    escaped = "".join(_SOQL_ESCAPES.get(c, c) for c in value).replace("%", "\\%").replace("_", "\\_")
    return "'%" + escaped + "%'"


def wire_datetime(value: _dt.datetime) -> str:
    """An aware datetime as Salesforce's UTC form ``YYYY-MM-DDTHH:MM:SSZ`` (whole seconds)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("a naive datetime has no place on the wire")
    return value.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def soql_datetime(value: _dt.datetime) -> str:
    """A SOQL dateTime literal (unquoted, UTC)."""
    return wire_datetime(value)


def parse_salesforce_datetime(value: object) -> _dt.datetime | None:
    """Parse ``2025-03-14T15:00:00.000+0000`` (and the ``Z``/no-millisecond forms); None if not."""
    if not isinstance(value, str) or not 19 <= len(value) <= 40:
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+0000"
    for fmt in ("%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%dT%H:%M:%S%z"):
        try:
            return _dt.datetime.strptime(text, fmt)
        except ValueError:
            continue
    return None


def _fit(head: str, tail: str, limit: int) -> str:
    """``head + tail`` within ``limit`` characters, shortening ``head`` (``tail`` is kept whole)."""
    if len(head) + len(tail) <= limit:
        return head + tail
    room = max(limit - len(tail) - 1, 0)
    return head[:room].rstrip() + "…" + tail


# ---------------------------------------------------------------------------------------------
# response headers and error bodies


def parse_limit_info(headers: Mapping[str, str]) -> RateLimitInfo | None:
    """Read ``Sforce-Limit-Info: api-usage=18/15000`` into the daily fields of RateLimitInfo."""
    raw = headers.get("Sforce-Limit-Info")
    if raw is None:
        raw = next((v for k, v in headers.items() if k.lower() == "sforce-limit-info"), None)
    if not raw:
        return None
    for part in raw.split(";"):
        key, sep, value = part.partition("=")
        if not sep or key.strip().lower() != "api-usage":
            continue
        m = re.fullmatch(r"\s*(\d{1,12})\s*/\s*(\d{1,12})\s*", value)
        if not m:
            return None
        used, total = int(m.group(1)), int(m.group(2))
        log.info("salesforce API usage: %d of %d daily requests used", used, total)
        return RateLimitInfo(daily_remaining=max(total - used, 0), daily_limit=total)
    return None


_CODE_CLASSES: dict[str, type[APIError]] = {
    "INVALID_SESSION_ID": AuthenticationError,
    "REQUEST_LIMIT_EXCEEDED": RateLimitError,
    "ENTITY_IS_DELETED": NotFoundError,
    "NOT_FOUND": NotFoundError,
    "INSUFFICIENT_ACCESS_OR_READONLY": PermissionDeniedError,
    "INSUFFICIENT_ACCESS_ON_CROSS_REFERENCE_ENTITY": PermissionDeniedError,
    "DUPLICATES_DETECTED": ConflictError,
}
_RETRYABLE_CODES = frozenset({"UNABLE_TO_LOCK_ROW", "SERVER_UNAVAILABLE"})
_HTML_TITLE = re.compile(r"<title[^>]*>([^<]{1,120})</title>", re.IGNORECASE)


def _first_error(body: object) -> Mapping[str, Any] | None:
    if isinstance(body, list):
        return next((e for e in body if isinstance(e, Mapping)), None)
    if isinstance(body, Mapping):
        return body
    return None


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def parse_error(resp: HttpResponse) -> ErrorInfo:
    """Read a Salesforce error response. Never raises, whatever the body holds.

    REST errors are ``[{"message", "errorCode", "fields"}]`` (``fields`` optional); the OAuth
    endpoint answers ``{"error", "error_description"}``; Salesforce's edge may send HTML.
    """
    try:
        body = resp.json_or_none()
    except Exception:  # noqa: BLE001 - a parser must never raise
        body = None
    entry = _first_error(body)
    if entry is None:
        title = _HTML_TITLE.search(resp.text or "")
        what = (
            f"HTML page {title.group(1).strip()!r}"
            if title
            else ("empty body" if not resp.text.strip() else "non-JSON body")
        )
        message = f"HTTP {resp.status} ({what})"
        if resp.status == 420:
            # Salesforce Edge had no route to the instance: a transient server-side failure.
            return ErrorInfo(message, error_class=ServerError)
        return ErrorInfo(message)
    code = (
        _str_or_none(entry.get("errorCode"))
        or _str_or_none(entry.get("statusCode"))
        or _str_or_none(entry.get("error"))
    )
    message = (
        _str_or_none(entry.get("message")) or _str_or_none(entry.get("error_description")) or f"HTTP {resp.status}"
    )
    raw_fields = entry.get("fields")
    fields = tuple(f for f in raw_fields if isinstance(f, str)) if isinstance(raw_fields, list) else ()
    error_class = _CODE_CLASSES.get(code or "")
    retryable: bool | None = None
    if code in _RETRYABLE_CODES:
        retryable = True
    elif code == "REQUEST_LIMIT_EXCEEDED" and "totalrequests" in message.lower():
        # The org's rolling 24-hour allowance is spent: retrying in seconds cannot help.
        retryable = False
    elif error_class is None and resp.status == 420:
        error_class = ServerError
    return ErrorInfo(message, code=code, fields=fields, error_class=error_class, retryable=retryable)


# ---------------------------------------------------------------------------------------------
# authentication with optional refresh


class TokenRefreshAuth:
    """Bearer auth whose token can be renewed with the OAuth 2.0 refresh-token flow.

    The marker :meth:`apply` returns is the :class:`Secret` it used. :meth:`refresh` runs under
    a lock and first compares that marker with the current token: if another thread has
    already replaced it, the caller just replays with the new one. So any number of threads
    that hit ``401 INVALID_SESSION_ID`` together cause exactly one token request.
    """

    #: After a failed refresh, requests still carrying the rejected token fail at once for
    #: this long instead of each asking the token endpoint again.
    FAILURE_HOLD_SECONDS = 30.0

    def __init__(self, settings: SalesforceSettings, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._token: Secret = settings.token
        self._client_id = settings.client_id
        self._client_secret = settings.client_secret
        self._refresh_token = settings.refresh_token
        self._token_url = settings.token_url
        self._timeout = settings.timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._transport: Transport | None = None
        self._failure: tuple[Secret, float, PMSError] | None = None
        self._store: TokenStore | None = None
        #: what the token store files the refresh token under: the org and the app, no secret
        self.store_key = f"salesforce {settings.base_url} {settings.client_id or ''}".rstrip()
        self.refresh_count = 0

    @property
    def can_refresh(self) -> bool:
        return bool(self._client_id and self._client_secret and self._refresh_token)

    def bind(self, transport: Transport) -> None:
        """Send token requests through ``transport``: bounded in time and size like API calls."""
        self._transport = transport

    def use_store(self, store: TokenStore | None) -> None:
        """Read the refresh token from ``store`` before each refresh; save rotated ones to it."""
        with self._lock:
            self._store = store

    def _stored_refresh_token(self) -> Secret | None:
        """The store's refresh token (it wins over the configured one), if there is a usable one."""
        store = self._store
        if store is None:
            return None
        try:
            value = store.load(self.store_key)
            return Secret(value, name="the stored Salesforce refresh token") if value else None
        except Exception as exc:  # noqa: BLE001 - a broken store must not stop the refresh
            log.warning(
                "salesforce token refresh: could not read the token store (%s); using the refresh token in memory",
                type(exc).__name__,
            )
            return None

    def _keep_refresh_token(self, value: str) -> None:
        """A rotated refresh token: into the store first (the old one is already dead), then memory."""
        token = Secret(value, name="the rotated Salesforce refresh token")
        store = self._store
        if store is not None:
            try:
                store.save(self.store_key, value)
            except Exception as exc:  # noqa: BLE001 - the new token still works in this process
                log.error(
                    "salesforce token refresh: the rotated refresh token could not be saved to the token store "
                    "(%s). This process keeps using it, but after a restart the configured "
                    "PMS_SALESFORCE_REFRESH_TOKEN is no longer valid: fix the store",
                    type(exc).__name__,
                )
            else:
                log.info("salesforce token refresh: the rotated refresh token was saved to the token store")
        self._refresh_token = token

    def apply(self, headers: dict[str, str]) -> object:
        with self._lock:
            token = self._token
        headers["Authorization"] = "Bearer " + token.reveal()
        return token

    def refresh(self, used: object) -> bool:
        if not self.can_refresh:
            return False
        with self._lock:
            if used is not self._token:
                return True  # someone refreshed while this request was out: replay with theirs
            failure = self._failure
            if failure is not None and failure[0] is used and self._clock() - failure[1] < self.FAILURE_HOLD_SECONDS:
                raise _copy_error(failure[2])
            try:
                self._token = self._request_token()
            except AuthenticationError as exc:
                # A refusal is remembered; a network failure is not (the next request may retry).
                self._failure = (self._token, self._clock(), exc)
                raise
            self._failure = None
            self.refresh_count += 1
            return True

    def _request_token(self) -> Secret:
        stored = self._stored_refresh_token()
        if stored is not None:
            self._refresh_token = stored
        try:
            return self._post_refresh()
        except AuthenticationError as exc:
            if exc.code != "invalid_grant":
                raise
            # Another process may have rotated the token since we read the store: one more try
            # with what the store holds now, if that is a different token.
            newer = self._stored_refresh_token()
            if newer is None or newer == self._refresh_token:
                raise
            log.info("salesforce token refresh: retrying with the refresh token another process saved")
            self._refresh_token = newer
            return self._post_refresh()

    def _post_refresh(self) -> Secret:
        assert self._client_id and self._client_secret and self._refresh_token
        if self._transport is None:
            raise ConfigurationError("the Salesforce token refresh is not bound to a transport")
        form = {
            "grant_type": "refresh_token",
            "client_id": self._client_id,
            "client_secret": self._client_secret.reveal(),
            "refresh_token": self._refresh_token.reveal(),
        }
        started = time.perf_counter()
        # The form carries the client secret and the refresh token: the transport never follows
        # a redirect, and bounds the exchange (deadline, body size) like any API call.
        try:
            raw = self._transport.send_once(
                "POST",
                self._token_url,
                operation="token refresh",
                data=form,
                headers={"Accept": "application/json", "Content-Type": "application/x-www-form-urlencoded"},
            )
        except TransportError as exc:
            log.info("salesforce POST /services/oauth2/token -> %s (token refresh)", type(exc.__cause__).__name__)
            raise TransportError(
                f"{exc.message}. The token was not refreshed and the request was not sent again",
                provider=PROVIDER.value,
                operation="token refresh",
            ) from None
        elapsed = (time.perf_counter() - started) * 1000
        log.info("salesforce POST /services/oauth2/token -> %d in %.0f ms (token refresh)", raw.status, elapsed)
        if 300 <= raw.status < 400:
            raise _redirect_refused(raw)
        body: Any = raw.json_or_none()
        token = body.get("access_token") if isinstance(body, Mapping) else None
        if raw.status == 200 and isinstance(token, str) and token:
            new_refresh = body.get("refresh_token") if isinstance(body, Mapping) else None
            if isinstance(new_refresh, str) and new_refresh and new_refresh != self._refresh_token.reveal():
                # Refresh-token rotation: the old refresh token stops working now.
                self._keep_refresh_token(new_refresh)
            return Secret(token)
        code = None
        detail = ""
        if isinstance(body, Mapping):
            code = _str_or_none(body.get("error"))
            description = _str_or_none(body.get("error_description"))
            detail = f": {code or 'error'}" + (f" ({description[:120]})" if description else "")
        elif raw.status == 200:
            detail = ": the answer held no access_token"
        raise AuthenticationError(
            f"Salesforce rejected the expired token and refreshing it failed with HTTP {raw.status}{detail}. "
            f"Check {', '.join(REFRESH_VARIABLES)} (and {TOKEN_VARIABLE})",
            status_code=raw.status if raw.status >= 400 else 401,
            code=code,
            provider=PROVIDER.value,
            operation="token refresh",
        )

    def __repr__(self) -> str:
        return "TokenRefreshAuth(Secret('**********'))"


def _redirect_refused(raw: HttpResponse) -> AuthenticationError:
    """The error for a token endpoint that answered with a redirect (which is never followed)."""
    location = raw.header("Location") or ""
    target = urlsplit(location)
    where = f" to {target.scheme}://{target.hostname}" if target.scheme and target.hostname else ""
    return AuthenticationError(
        f"Salesforce's token endpoint answered HTTP {raw.status}, a redirect{where}; the library never "
        "sends the client secret or refresh token on to another address, so the token was not refreshed. "
        "Set PMS_SALESFORCE_BASE_URL to your org's My Domain URL (https://<your-domain>.my.salesforce.com, "
        "shown under Setup > My Domain) rather than a login, Lightning or old instance URL",
        status_code=raw.status,
        code="REDIRECT_REFUSED",
        provider=PROVIDER.value,
        operation="token refresh",
    )


def _copy_error(error: PMSError) -> PMSError:
    """A fresh instance of a remembered error (re-raising one object from many threads tangles tracebacks)."""
    if isinstance(error, APIError):
        return type(error)(
            error.message,
            status_code=error.status_code,
            code=error.code,
            provider=error.provider,
            operation=error.operation,
        )
    if isinstance(error, ProviderError):
        return type(error)(error.message, provider=error.provider, operation=error.operation)
    return type(error)(error.message)


# ---------------------------------------------------------------------------------------------
# the adapter


class SalesforceProvider:
    """The Salesforce adapter. Thread-safe; one per client."""

    def __init__(self, settings: SalesforceSettings, runtime: Runtime) -> None:
        self.settings = settings
        self.auth = TokenRefreshAuth(settings, clock=runtime.clock)
        self.transport: Transport = runtime.transport(
            provider=PROVIDER,
            base_url=settings.base_url,
            auth=self.auth,
            timeout=settings.timeout,
            token_variable=TOKEN_VARIABLE,
            error_parser=parse_error,
            rate_header_parser=parse_limit_info,
            rate_limit=settings.rate_limit,
            default_headers={"Content-Type": "application/json"},
        )
        self.auth.bind(self.transport)
        self.api = f"/services/data/v{settings.api_version}"
        self._report_tasks: dict[str, str] = {}
        self._report_lock = threading.Lock()
        for variable, value in (
            ("PMS_SALESFORCE_OWNER_ID", settings.owner_id),
            ("PMS_SALESFORCE_EVENT_RECORD_TYPE", settings.event_record_type),
        ):
            if value and not is_salesforce_id(value):
                log.warning("%s does not look like a valid Salesforce id (its checksum suffix is wrong)", variable)

    # -- Provider protocol ------------------------------------------------------------------

    @property
    def name(self) -> ProviderName:
        return PROVIDER

    @property
    def capabilities(self) -> frozenset[Capability]:
        return ALL_CAPABILITIES

    def close(self) -> None:
        self.transport.close()

    def use_token_store(self, store: TokenStore | None) -> None:
        """Persist rotated refresh tokens in ``store`` (``PMSClient(token_store=...)`` calls this)."""
        self.auth.use_store(store)

    def book(self, request: AppointmentRequest) -> Appointment:
        payload = self.event_payload(request)

        def create_event() -> Appointment:
            record_id, body = self._create("Event", payload, "book", request.reference)
            return self._booked(record_id, request, payload, {"create": body})

        return create_once(
            create_event,
            lambda: self._find_booking(request),
            provider=PROVIDER,
            operation="book",
            reference=request.reference,
        )

    def update(self, appointment_id: str, changes: AppointmentUpdate) -> Appointment:
        event_id = _check_id(appointment_id, "appointment_id", (EVENT_PREFIX,), "a Salesforce Event id")
        # Read first: a cancelled booking (deleted, or soft-cancelled) is never written to, the
        # title and notes keep the text around them, and the answer carries the booking's times.
        current = self._load_event(event_id, "update")
        subject = str(current.get("Subject") or "")
        if current.get("IsDeleted") is True or _status_of(subject) is AppointmentStatus.CANCELLED:
            raise _cancelled_error(event_id)
        patch: dict[str, Any] = {}
        if changes.start is not None:
            patch["StartDateTime"] = wire_datetime(changes.start)
        if changes.end is not None:
            patch["EndDateTime"] = wire_datetime(changes.end)
        if changes.location is not None:
            patch["Location"] = changes.location[:LOCATION_MAX]
        if changes.title is not None:
            patch["Subject"] = _retitle(subject, changes.title)
        if changes.notes is not None:
            patch["Description"] = _renote(str(current.get("Description") or ""), changes.notes)
        resp = self.transport.request(
            "PATCH", f"{self.api}/sobjects/Event/{event_id}", operation="update", json=patch, expect=(404,)
        )
        if resp.status == 404:
            self._gone_code(resp, "update")  # NotFoundError unless it was deleted since the read
            raise _cancelled_error(event_id)
        new_subject = patch.get("Subject") or subject
        zone = _booking_zone(current, changes.timezone, changes.start)
        start = changes.start or parse_salesforce_datetime(current.get("StartDateTime"))
        end = changes.end or parse_salesforce_datetime(current.get("EndDateTime"))
        if start is None or end is None:
            raise unexpected(PROVIDER, "update", "the Event has no StartDateTime or EndDateTime")
        return Appointment(
            provider=PROVIDER,
            id=event_id,
            status=AppointmentStatus.BOOKED,
            start=start.astimezone(zone),
            end=end.astimezone(zone),
            reference=_reference_in(new_subject),
            contact_id=_str_or_none(current.get("WhoId")),
            title=new_subject or None,
            raw={"patch": patch, "read": dict(current)},
        )

    def cancel(self, appointment_id: str, *, reason: str | None = None) -> Appointment:
        event_id = _check_id(appointment_id, "appointment_id", (EVENT_PREFIX,), "a Salesforce Event id")
        # Read first (deleted records too): an id that never existed is NotFoundError, one that
        # is already cancelled is success, and the answer carries the booking's times.
        current = self._load_event(event_id, "cancel", deleted_too=True)
        if current.get("IsDeleted") is True:
            return self._cancelled(event_id, current, {"already_cancelled": "ENTITY_IS_DELETED"})
        if self.settings.cancel_mode == "soft":
            return self._soft_cancel(event_id, current, reason)
        resp = self.transport.request(
            "DELETE", f"{self.api}/sobjects/Event/{event_id}", operation="cancel", expect=(404,)
        )
        raw: dict[str, Any] = {"deleted": True}
        if resp.status == 404:
            raw = {"already_cancelled": self._gone_code(resp, "cancel")}
        return self._cancelled(event_id, current, raw)

    def push_report(self, report: PerformanceReport) -> ReportReceipt:
        payload = self.task_payload(report)
        task_id = self._cached_task(report.id)
        if task_id is not None:
            if self._patch_task(task_id, payload):
                return self._receipt(task_id, report, created=False, raw={"patch": payload})
            self._forget_task(report.id)
        existing = self._find_report(report)
        if existing is not None:
            if self._patch_task(existing, payload):
                self._remember_task(report.id, existing)
                return self._receipt(existing, report, created=False, raw={"patch": payload})
            self._forget_task(report.id)

        def create_task() -> str:
            return self._create("Task", payload, "push_report", report.id)[0]

        new_id = create_once(
            create_task,
            lambda: self._find_report(report),
            provider=PROVIDER,
            operation="push_report",
            reference=report.id,
        )
        self._remember_task(report.id, new_id)
        return self._receipt(new_id, report, created=True, raw={"create": payload})

    # -- extras -----------------------------------------------------------------------------

    def available_versions(self) -> list[str]:
        """The API versions the org serves (``GET /services/data/``), oldest first."""
        resp = self.transport.request("GET", "/services/data/", operation="versions")
        body = resp.json_or_none()
        if not isinstance(body, list):
            raise unexpected(PROVIDER, "versions", "the versions list is not a JSON array")
        return [str(v["version"]) for v in body if isinstance(v, Mapping) and isinstance(v.get("version"), str)]

    # -- payloads ---------------------------------------------------------------------------

    def event_payload(self, request: AppointmentRequest) -> dict[str, Any]:
        """The ``Event`` create body for ``request``. Raises ValidationError on unusable input."""
        who_id = _who_id(request)
        payload: dict[str, Any] = {
            "Subject": _event_subject(request),
            "StartDateTime": wire_datetime(request.start),
            "EndDateTime": wire_datetime(request.end_time),
            "IsAllDayEvent": False,
            "ShowAs": "Busy",
            "OwnerId": self.settings.owner_id,
            "Description": _event_description(request, who_id),
        }
        if self.settings.event_record_type:
            payload["RecordTypeId"] = self.settings.event_record_type
        if who_id:
            payload["WhoId"] = who_id
        if request.location:
            payload["Location"] = request.location[:LOCATION_MAX]
        errors: list[tuple[str, str]] = []
        for key in request.extra:
            if not _FIELD_NAME.fullmatch(key):
                errors.append((f"extra.{key[:40]}", "is not a Salesforce field API name"))
            elif key in _PROTECTED_EXTRA:
                errors.append((f"extra.{key}", "is set by the adapter and cannot be overridden"))
        if errors:
            raise ValidationError(errors)
        payload.update(request.extra)
        return payload

    def task_payload(self, report: PerformanceReport) -> dict[str, Any]:
        """The ``Task`` body for ``report`` (the same for create and update)."""
        data = {
            "schema": REPORT_SCHEMA,
            "report_id": report.id,
            "period_start": report.period_start.isoformat(),
            "period_end": report.period_end.isoformat(),
            "metrics": dict(report.metrics),
        }
        machine = json.dumps(data, sort_keys=True, separators=(",", ":"))
        text = report.render_text()
        room = DESCRIPTION_MAX - len(machine) - len(REPORT_DATA_MARKER) - 4
        if len(text) > room:
            text = text[: max(room - 1, 0)] + "…"
        payload: dict[str, Any] = {
            "Subject": _fit(str(report.title), f" [{report.id}]", SUBJECT_MAX),
            "Status": "Completed",
            "Priority": "Normal",
            "ActivityDate": report.period_end.isoformat(),
            "Description": f"{text}\n\n{REPORT_DATA_MARKER}\n{machine}",
        }
        if self._task_owner:
            payload["OwnerId"] = self._task_owner
        return payload

    @property
    def _task_owner(self) -> str | None:
        """Tasks belong to users; a public calendar owner (023...) cannot own one."""
        owner = self.settings.owner_id
        return owner if owner.startswith(USER_PREFIX) else None

    # -- booking helpers --------------------------------------------------------------------

    def _booked(
        self, record_id: str, request: AppointmentRequest, payload: Mapping[str, Any], raw: Mapping[str, Any]
    ) -> Appointment:
        zone = _request_zone(request)
        return Appointment(
            provider=PROVIDER,
            id=record_id,
            status=AppointmentStatus.BOOKED,
            start=request.start.astimezone(zone),
            end=request.end_time.astimezone(zone),
            reference=request.reference,
            contact_id=payload.get("WhoId"),
            title=payload["Subject"],
            raw=raw,
        )

    def _query(self, soql: str, operation: str, *, resource: str = "query") -> list[Mapping[str, Any]]:
        """One page of a SOQL query (``resource="queryAll"`` includes deleted records)."""
        resp = self.transport.request("GET", f"{self.api}/{resource}/", operation=operation, params={"q": soql})
        body = resp.json_or_none()
        records = body.get("records") if isinstance(body, Mapping) else None
        if not isinstance(records, list):
            raise unexpected(PROVIDER, operation, "the query result has no records list")
        return [r for r in records if isinstance(r, Mapping)]

    def _create(
        self, sobject: str, payload: Mapping[str, Any], operation: str, reference: str
    ) -> tuple[str, dict[str, Any]]:
        """POST a record; its id and the ``{id, success, errors}`` result.

        A 2xx without a usable id may still have created the record, so it is an
        ``outcome_unknown`` error (the caller's look-up by reference settles it).
        """
        resp = self.transport.request(
            "POST", f"{self.api}/sobjects/{sobject}/", operation=operation, json=payload, reference=reference
        )
        body = resp.json_or_none()
        record_id = body.get("id") if isinstance(body, Mapping) else None
        if not (isinstance(body, Mapping) and body.get("success") is not False and is_salesforce_id(record_id)):
            raise unexpected(
                PROVIDER,
                operation,
                f"no {sobject} id in the create result",
                outcome_unknown=True,
                reference=reference,
            )
        assert isinstance(record_id, str)
        return record_id, dict(body)

    def recover_booking(self, request: AppointmentRequest) -> Appointment | None:
        """The Event an earlier, unanswered attempt at ``request`` created, or None (SOQL)."""
        return self._find_booking(request)

    def _find_booking(self, request: AppointmentRequest) -> Appointment | None:
        where = [
            f"OwnerId = {soql_string(self.settings.owner_id)}",
            f"StartDateTime = {soql_datetime(request.start)}",
            f"Subject LIKE {soql_like_contains(f'[{request.reference}]')}",
        ]
        fields = "Id, Subject, Description, StartDateTime, EndDateTime, WhoId"
        soql = f"SELECT {fields} FROM Event WHERE " + " AND ".join(where) + " LIMIT 2"  # noqa: S608 - escaped
        records = self._query(soql, "book")
        if not records:
            return None
        if len(records) > 1:
            log.warning("salesforce book: reference %s matches several Events; using the first", request.reference)
        record = records[0]
        record_id = record.get("Id")
        if not is_salesforce_id(record_id):
            raise unexpected(PROVIDER, "book", "the look-up returned an Event without a valid Id")
        assert isinstance(record_id, str)
        subject = record.get("Subject")
        zone = _recorded_zone(record.get("Description")) or _request_zone(request)
        start = parse_salesforce_datetime(record.get("StartDateTime")) or request.start
        end = parse_salesforce_datetime(record.get("EndDateTime")) or request.end_time
        return Appointment(
            provider=PROVIDER,
            id=record_id,
            status=_status_of(subject),
            start=start.astimezone(zone),
            end=end.astimezone(zone),
            reference=request.reference,
            contact_id=_str_or_none(record.get("WhoId")),
            title=subject if isinstance(subject, str) else None,
            raw={"found": dict(record)},
        )

    def _load_event(self, event_id: str, operation: str, *, deleted_too: bool = False) -> Mapping[str, Any]:
        """The Event's fields; NotFoundError if no such Event ever existed.

        A deleted Event (in the recycle bin) gives ``{"Id": ..., "IsDeleted": True}``; with
        ``deleted_too``, a second request (``queryAll``, which still sees deleted records) adds
        its times, so an answer about an already cancelled booking can carry them.
        """
        resp = self.transport.request(
            "GET",
            f"{self.api}/sobjects/Event/{event_id}",
            operation=operation,
            params={"fields": ",".join(_EVENT_READ_FIELDS)},
            expect=(404,),
        )
        if resp.status != 404:
            body = resp.json_or_none()
            if not isinstance(body, Mapping):
                raise unexpected(PROVIDER, operation, "the Event record is not a JSON object")
            return body
        self._gone_code(resp, operation)  # NotFoundError unless it is in the recycle bin
        gone: dict[str, Any] = {"Id": event_id, "IsDeleted": True}
        if deleted_too:
            soql = f"SELECT {', '.join(_EVENT_READ_FIELDS)} FROM Event WHERE Id = {soql_string(event_id)}"  # noqa: S608
            found = self._query(soql, operation, resource="queryAll")
            if found:
                gone.update(found[0])
        return gone

    def _cancelled(self, event_id: str, current: Mapping[str, Any], raw: dict[str, Any]) -> Appointment:
        """The answer to a cancel, with the booking's times in its own zone."""
        subject = _str_or_none(current.get("Subject"))
        zone = _booking_zone(current, None, None)
        start = parse_salesforce_datetime(current.get("StartDateTime"))
        end = parse_salesforce_datetime(current.get("EndDateTime"))
        # Both are always there, except for a record purged from the recycle bin between the
        # two reads of an already cancelled booking: the cancel still succeeded then.
        return Appointment(
            provider=PROVIDER,
            id=event_id,
            status=AppointmentStatus.CANCELLED,
            start=start.astimezone(zone) if start else None,
            end=end.astimezone(zone) if end else None,
            reference=_reference_in(subject),
            contact_id=_str_or_none(current.get("WhoId")),
            title=subject,
            raw={**raw, "read": dict(current)},
        )

    def _gone_code(self, resp: HttpResponse, operation: str) -> str:
        """For a 404 on a record: ``ENTITY_IS_DELETED`` if it is in the recycle bin, else NotFoundError."""
        info = parse_error(resp)
        if info.code == "ENTITY_IS_DELETED":
            return info.code or ""
        raise NotFoundError(
            f"Salesforce {operation} failed with HTTP 404"
            + (f" {info.code}" if info.code else "")
            + f": {info.message}",
            status_code=404,
            code=info.code,
            provider=PROVIDER.value,
            operation=operation,
        )

    def _soft_cancel(self, event_id: str, current: Mapping[str, Any], reason: str | None) -> Appointment:
        subject = str(current.get("Subject") or "")
        if subject.startswith(CANCELLED_PREFIX) and current.get("ShowAs") == "Free":
            return self._cancelled(event_id, current, {"already_cancelled": "SOFT_CANCELLED"})
        when = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%MZ")
        line = f"Cancelled by the AI receptionist at {when}." + (f" Reason: {reason}" if reason else "")
        description = str(current.get("Description") or "")
        description = (description + "\n\n" + line) if description else line
        if len(description) > DESCRIPTION_MAX:
            description = description[: DESCRIPTION_MAX - len(line) - 2] + "\n\n" + line
        new_subject = subject if subject.startswith(CANCELLED_PREFIX) else _cancelled_subject(subject)
        patch = {"Subject": new_subject, "ShowAs": "Free", "Description": description}
        resp = self.transport.request(
            "PATCH", f"{self.api}/sobjects/Event/{event_id}", operation="cancel", json=patch, expect=(404,)
        )
        if resp.status == 404:
            code = self._gone_code(resp, "cancel")
            return self._cancelled(event_id, current, {"already_cancelled": code})
        return self._cancelled(event_id, {**current, "Subject": new_subject}, {"patch": patch})

    # -- report helpers ---------------------------------------------------------------------

    def _find_report(self, report: PerformanceReport) -> str | None:
        where = [f"Subject LIKE {soql_like_contains(f'[{report.id}]')}"]
        if self._task_owner:
            where.insert(0, f"OwnerId = {soql_string(self._task_owner)}")
        soql = "SELECT Id, Subject FROM Task WHERE " + " AND ".join(where) + " LIMIT 2"  # noqa: S608 - escaped
        records = self._query(soql, "push_report")
        if not records:
            return None
        record_id = records[0].get("Id")
        if not is_salesforce_id(record_id):
            raise unexpected(PROVIDER, "push_report", "the look-up returned a Task without a valid Id")
        assert isinstance(record_id, str)
        return record_id

    def _patch_task(self, task_id: str, payload: Mapping[str, Any]) -> bool:
        """PATCH the Task; False when it no longer exists (deleted since we saw it)."""
        if not is_salesforce_id(task_id) or not task_id.startswith(TASK_PREFIX):
            raise unexpected(PROVIDER, "push_report", "the report's Task id is not a Task id")
        resp = self.transport.request(
            "PATCH", f"{self.api}/sobjects/Task/{task_id}", operation="push_report", json=dict(payload), expect=(404,)
        )
        if resp.status == 404:
            self._gone_code(resp, "push_report")
            return False
        return True

    def _cached_task(self, report_id: str) -> str | None:
        with self._report_lock:
            return self._report_tasks.get(report_id)

    def _remember_task(self, report_id: str, task_id: str) -> None:
        with self._report_lock:
            self._report_tasks[report_id] = task_id
            while len(self._report_tasks) > 1000:
                self._report_tasks.pop(next(iter(self._report_tasks)))

    def _forget_task(self, report_id: str) -> None:
        with self._report_lock:
            self._report_tasks.pop(report_id, None)

    def _receipt(
        self, task_id: str, report: PerformanceReport, *, created: bool, raw: Mapping[str, Any]
    ) -> ReportReceipt:
        return ReportReceipt(PROVIDER, task_id, report.id, created=created, raw=raw)

    def __repr__(self) -> str:
        return f"<SalesforceProvider {self.settings.base_url} v{self.settings.api_version}>"


# ---------------------------------------------------------------------------------------------
# text helpers


def _who_id(request: AppointmentRequest) -> str | None:
    """The patient's Contact (003) or Lead (00Q) id, when the caller passed one."""
    contact_id = request.patient.contact_id
    if (
        not contact_id
        or not contact_id.startswith((CONTACT_PREFIX, LEAD_PREFIX))
        or not _ID_SHAPE.fullmatch(contact_id)
    ):
        return None
    return _check_id(contact_id, "patient.contact_id", (CONTACT_PREFIX, LEAD_PREFIX), "a Salesforce Contact or Lead id")


def _event_subject(request: AppointmentRequest) -> str:
    head = f"{request.title} - {request.patient.display_name}"
    return _fit(head, f" [{request.reference}]", SUBJECT_MAX)


def _event_description(request: AppointmentRequest, who_id: str | None) -> str:
    lines: list[str] = []
    if request.notes:
        lines += [request.notes, ""]
    lines.append(DETAILS_MARKER)
    if request.reason:
        lines.append(f"Reason: {request.reason}")
    patient = request.patient
    lines.append(f"Patient: {patient.display_name}")
    if patient.email:
        lines.append(f"Email: {patient.email}")
    if patient.phone:
        lines.append(f"Phone: {patient.phone}")
    if patient.contact_id and not who_id:
        lines.append(f"Patient id: {patient.contact_id}")
    lines.append(f"Time zone: {_zone_label(request)}")
    lines.append(f"Booking reference: {request.reference}")
    lines.append("Booked by the AI receptionist (pms-integration).")
    text = "\n".join(lines)
    return text if len(text) <= DESCRIPTION_MAX else text[: DESCRIPTION_MAX - 1] + "…"


def _reference_in(subject: object) -> str | None:
    if not isinstance(subject, str):
        return None
    m = _REFERENCE_IN_SUBJECT.search(subject)
    return m.group(1) if m else None


def _status_of(subject: object) -> AppointmentStatus:
    if isinstance(subject, str) and subject.startswith(CANCELLED_PREFIX):
        return AppointmentStatus.CANCELLED
    return AppointmentStatus.BOOKED


def _retitle(current: str, title: str) -> str:
    """A new Subject with ``title`` in front, keeping the patient name and reference marker."""
    cancelled = current.startswith(CANCELLED_PREFIX)
    body = current[len(CANCELLED_PREFIX) :] if cancelled else current
    m = _REFERENCE_IN_SUBJECT.search(body)
    tail = f" [{m.group(1)}]" if m else ""
    rest = body[: m.start()].rstrip() if m else body
    _, sep, name = rest.rpartition(" - ")
    head = f"{title} - {name}" if sep and name else title
    if cancelled:
        head = CANCELLED_PREFIX + head
    return _fit(head, tail, SUBJECT_MAX)


def _renote(current: str, notes: str) -> str:
    """A new Description with ``notes`` replacing the free-text part above the details block."""
    index = current.find(DETAILS_MARKER)
    rest = current[index:] if index >= 0 else current
    text = f"{notes}\n\n{rest}" if rest else notes
    return text if len(text) <= DESCRIPTION_MAX else text[: DESCRIPTION_MAX - 1] + "…"


def _cancelled_subject(subject: str) -> str:
    m = _REFERENCE_IN_SUBJECT.search(subject)
    if m is None:
        return _fit(CANCELLED_PREFIX + subject, "", SUBJECT_MAX)
    return _fit(CANCELLED_PREFIX + subject[: m.start()].rstrip(), " " + m.group(0).strip(), SUBJECT_MAX)


def _cancelled_error(event_id: str) -> AppointmentCancelledError:
    return AppointmentCancelledError(
        f"Salesforce Event {event_id} is cancelled; it cannot be moved or changed. Book a new appointment instead",
        status_code=409,
        code="APPOINTMENT_CANCELLED",
        provider=PROVIDER.value,
        operation="update",
    )


def _zone_label(request: AppointmentRequest) -> str:
    """The booking's zone as written on the Event: an IANA name, else the start's UTC offset."""
    if request.timezone:
        return request.timezone
    offset = request.start.utcoffset() or _dt.timedelta(0)
    minutes = int(offset.total_seconds() // 60)
    sign = "-" if minutes < 0 else "+"
    return f"UTC{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _parse_zone(label: str) -> _dt.tzinfo | None:
    m = _OFFSET_ZONE.fullmatch(label)
    if m:
        minutes = int(m.group(2)) * 60 + int(m.group(3))
        if minutes >= 24 * 60:
            return None
        return _dt.timezone(_dt.timedelta(minutes=-minutes if m.group(1) == "-" else minutes))
    try:
        return ZoneInfo(label)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def _request_zone(request: AppointmentRequest) -> _dt.tzinfo:
    zone = _parse_zone(_zone_label(request))
    return zone if zone is not None else (request.start.tzinfo or _dt.timezone.utc)


def _recorded_zone(description: object) -> _dt.tzinfo | None:
    """The zone the booking was made in, from the ``Time zone:`` line of its details block."""
    if not isinstance(description, str):
        return None
    index = description.find(DETAILS_MARKER)
    if index < 0:
        return None
    m = _ZONE_LINE.search(description, index)
    return _parse_zone(m.group(1)) if m else None


def _booking_zone(
    record: Mapping[str, Any], fallback_name: str | None, fallback_start: _dt.datetime | None
) -> _dt.tzinfo:
    """The zone recorded on the Event; else the change's zone or offset; else UTC (what Salesforce stores)."""
    zone = _recorded_zone(record.get("Description"))
    if zone is None and fallback_name:
        zone = _parse_zone(fallback_name)
    if zone is None and fallback_start is not None:
        zone = fallback_start.tzinfo
    return zone or _dt.timezone.utc


def create(settings: SalesforceSettings, runtime: Runtime) -> SalesforceProvider:
    """The adapter factory the client calls."""
    return SalesforceProvider(settings, runtime)
