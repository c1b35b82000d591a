"""The GoHighLevel emulator: what every route shares (Version header, token, quota headers, the
error shape of the API generation asked) around the route table, the handlers and the store."""

from __future__ import annotations

import datetime as _dt
from typing import Any

from ...models import ProviderName
from .._core import Emulator, EndpointHandler, Forwarded, RollingWindow, Sandbox, SandboxRequest, SandboxResponse
from .handlers import Params, error, is_v1, refusal, webhook_body
from .routes import ROUTES
from .state import CalendarStore, OpenHours, Refused
from .validation import KNOWN_VERSIONS

__all__ = ["BURST_WINDOW_MS", "GoHighLevelEmulator"]

#: the burst window GoHighLevel documents (100 requests per 10 s)
BURST_WINDOW_MS = 10_000
_BURST_LIMIT = 100
_DAILY_LIMIT = 200_000


class GoHighLevelEmulator(Emulator):
    """In-memory GoHighLevel location with one calendar (see the package docstring).

    ``open_hours``, ``calendar_timezone`` and ``slot_minutes`` shape the calendar; ``bookings()``,
    ``booking(id)``, ``notes_of(contact_id)`` and ``add_contact(...)`` read and seed the records.
    """

    provider = ProviderName.GOHIGHLEVEL
    prefix = "/ghl"
    endpoints = ROUTES
    store: CalendarStore

    open_hours: Forwarded[OpenHours | None] = Forwarded()
    calendar_timezone: Forwarded[str] = Forwarded()
    slot_minutes: Forwarded[int] = Forwarded()
    location_id: Forwarded[str] = Forwarded()
    calendar_id: Forwarded[str] = Forwarded()
    user_id: Forwarded[str] = Forwarded()
    contacts: Forwarded[dict[str, dict[str, Any]]] = Forwarded()
    events: Forwarded[dict[str, dict[str, Any]]] = Forwarded()
    notes: Forwarded[dict[str, dict[str, Any]]] = Forwarded()
    blocks: Forwarded[dict[str, dict[str, Any]]] = Forwarded()

    def __init__(self, sandbox: Sandbox) -> None:
        self.store = CalendarStore()
        self._burst = RollingWindow(BURST_WINDOW_MS / 1000)
        self._daily = 0
        super().__init__(sandbox)

    def handle(self, handler: EndpointHandler, req: SandboxRequest, params: Params) -> SandboxResponse:
        v1 = is_v1(req)
        if not v1:  # NestJS reads the Version header before the auth guard runs
            sent = req.header("Version")
            if sent is None:
                return self.error_for(req, 401, message="version header was not found.")
            if sent.strip() not in KNOWN_VERSIONS:
                return self.error_for(req, 401, message="version header is invalid")
        denied = self.check_auth(req)
        if denied is not None:
            return denied
        try:
            response: SandboxResponse = handler(self.store, req, params)
        except Refused as refused:
            return refusal(refused.reason, v1=v1)
        response.headers = {**self._quota_headers(), **response.headers}
        return response

    def environ(self, base_url: str) -> dict[str, str]:
        return {
            "PMS_GHL_API_KEY": self.token,
            "PMS_GHL_LOCATION_ID": self.location_id,
            "PMS_GHL_CALENDAR_ID": self.calendar_id,
            "PMS_GHL_BASE_URL": base_url,
            "PMS_GHL_API_VERSION": "v2",
        }

    def reset(self) -> None:
        super().reset()
        self._burst.clear()
        self._daily = 0

    def error_response(
        self, status: int, *, message: str | None = None, retry_after: float | None = None, v1: bool = False
    ) -> SandboxResponse:
        response = error(status, message, v1=v1)
        if status == 429:
            # GoHighLevel sends no Retry-After: the quota headers say how long the window is
            interval_ms = BURST_WINDOW_MS if retry_after is None else max(int(retry_after * 1000), 1)
            response.headers.update(self.rate_limit_headers(0, _BURST_LIMIT, interval_ms))
        elif retry_after is not None:
            response.headers["Retry-After"] = f"{retry_after:g}"
        return response

    def error_for(
        self, req: SandboxRequest, status: int, *, message: str | None = None, retry_after: float | None = None
    ) -> SandboxResponse:
        return self.error_response(status, message=message, retry_after=retry_after, v1=is_v1(req))

    def not_found(self, req: SandboxRequest) -> SandboxResponse:
        """501 for a route the emulator lacks: not a 404 that reads as "no such record"."""
        route = f"{req.method} {self.prefix}{req.path}"
        message = f"not emulated: {route} is not implemented by the pms-integration GoHighLevel sandbox"
        return self.error_for(req, 501, message=message)

    def rate_limit_headers(self, remaining: int, limit: int, interval_ms: int) -> dict[str, str]:
        return {
            "X-RateLimit-Remaining": str(max(remaining, 0)),
            "X-RateLimit-Max": str(limit),
            "X-RateLimit-Interval-Milliseconds": str(interval_ms),
            "X-RateLimit-Limit-Daily": str(_DAILY_LIMIT),
            "X-RateLimit-Daily-Remaining": str(max(_DAILY_LIMIT - self._daily, 0)),
        }

    def _quota_headers(self) -> dict[str, str]:
        """The burst and daily quota headers GoHighLevel sends on every answer."""
        with self.lock:
            self._daily += 1
            self._burst.take()
            used = len(self._burst)
        return self.rate_limit_headers(_BURST_LIMIT - used, _BURST_LIMIT, BURST_WINDOW_MS)

    # -- inspection ----------------------------------------------------------------------------

    def bookings(self, *, active_only: bool = False) -> list[dict[str, Any]]:
        """The events (JSON-ready), optionally without the cancelled ones."""
        return self.store.bookings(active_only=active_only)

    def booking(self, event_id: str) -> dict[str, Any] | None:
        return self.store.booking(event_id)

    def notes_of(self, contact_id: str) -> list[dict[str, Any]]:
        return self.store.notes_of(contact_id)

    def add_contact(self, **fields: Any) -> str:
        """Create a contact directly (as if made in the GoHighLevel UI); returns its id."""
        return str(self.store.upsert_contact(fields)[0]["id"])

    def is_open(self, start: _dt.datetime, end: _dt.datetime) -> bool:
        """Whether ``start``-``end`` lies within one day's open hours of the calendar."""
        return self.store.is_open(start, end)

    # -- what staff do in GoHighLevel's own screens ---------------------------------------------

    def staff_move(self, appointment_id: str, start: _dt.datetime, end: _dt.datetime) -> None:
        try:
            self.store.staff_move(appointment_id, start, end)
        except Refused:
            raise KeyError(appointment_id) from None

    def staff_cancel(self, appointment_id: str) -> None:
        try:
            self.store.staff_cancel(appointment_id)
        except Refused:
            raise KeyError(appointment_id) from None

    def staff_delete(self, appointment_id: str) -> None:
        """Delete the appointment as staff would in GoHighLevel's calendar (KeyError: no such one)."""
        try:
            self.store.staff_delete(appointment_id)
        except Refused:
            raise KeyError(appointment_id) from None

    # -- what GoHighLevel would tell a webhook subscriber ---------------------------------------

    def change_count(self) -> int:
        """How many changes are logged: ``webhook_payloads(change_count())`` is what comes after now."""
        with self.lock:
            return len(self.store.changes)

    def webhook_payloads(self, since_index: int = 0) -> list[dict[str, Any]]:
        """The webhook bodies (``AppointmentCreate``/``Update``/``Delete``) for the changes logged
        from ``since_index`` on, oldest first, whichever route made them (the library's, v1 or
        v2, or the staff hooks); unsigned (``Sandbox.deliver_webhooks`` signs and posts them)."""
        with self.lock:
            changes = [dict(c) for c in self.store.changes[max(since_index, 0) :]]
            location_id = self.store.location_id
        return [webhook_body(change, location_id) for change in changes]

    def block_time(self, start: _dt.datetime, end: _dt.datetime, title: str = "Blocked") -> str:
        """A block slot in the calendar (free slots leave it out, bookings into it are refused)."""
        return str(self.store.block(start, end, title)["id"])


EMULATOR = GoHighLevelEmulator
