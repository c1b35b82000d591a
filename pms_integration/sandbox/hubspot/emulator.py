"""The HubSpot emulator: its options, what every route shares, and HubSpot's error answers."""

from __future__ import annotations

import datetime as _dt
import uuid
from collections.abc import Callable
from typing import Any

from ..._time import utc_text
from ...models import ProviderName
from .._core import Emulator, Forwarded, Reply, RollingWindow, Sandbox, SandboxRequest, SandboxResponse
from .errors import AUTH_MESSAGE, error, rate_limited
from .routes import ROUTES
from .schema import ALIASES, BLOCK_BODY
from .state import HubSpotStore

#: The private-app burst limit of the Free/Starter tiers: 100 requests per rolling 10 seconds.
DEFAULT_BURST_LIMIT: tuple[int, float] = (100, 10.0)


class HubSpotEmulator(Emulator):
    """HubSpot's CRM object API, in memory (docs/providers/hubspot.md, "Sandbox")."""

    provider = ProviderName.HUBSPOT
    prefix = "/hubspot"
    endpoints = ROUTES
    store: HubSpotStore

    # options and inspection helpers that live on the store
    search_lag: Forwarded[float] = Forwarded()
    clock: Forwarded[Callable[[], float]] = Forwarded()
    wall_clock: Forwarded[Callable[[], _dt.datetime]] = Forwarded()
    pipelines: Forwarded[dict[str, tuple[str, ...]]] = Forwarded()
    company_id: Forwarded[str] = Forwarded()
    settle: Forwarded[Callable[[], None]] = Forwarded()
    seed: Forwarded[Callable[[str, dict[str, str]], str]] = Forwarded()
    records: Forwarded[Callable[..., list[dict[str, Any]]]] = Forwarded()
    associations_of: Forwarded[Callable[[str, str, str], list[str]]] = Forwarded()

    def __init__(self, sandbox: Sandbox) -> None:
        self.store = HubSpotStore()
        #: Search requests allowed per second per account (None: unlimited).
        self.search_rate: int | None = 5
        #: Requests allowed per rolling window, ``(requests, seconds)``; None: unlimited.
        self.burst_limit: tuple[int, float] | None = DEFAULT_BURST_LIMIT
        self._burst = RollingWindow(DEFAULT_BURST_LIMIT[1], self._now)
        self._searches = RollingWindow(1.0, self._now)
        self._daily = 0
        #: Associated ids per record in one page of the associations batch read.
        self.association_page_size = 500
        #: The practice's zone and calendar owner the sandbox's environment names (None: unset).
        self.timezone: str | None = "America/New_York"
        self.owner_id: str | None = None
        super().__init__(sandbox)

    def handle(
        self,
        handler: Callable[[Any, SandboxRequest, dict[str, str]], SandboxResponse],
        req: SandboxRequest,
        params: dict[str, str],
    ) -> SandboxResponse:
        """The bearer token and the burst window first; the quota headers on every answer."""
        denied = self.check_auth(req)
        if denied is not None:
            return denied
        self._take_burst_slot()
        with self.lock:
            self._daily += 1
        if "type" in params:
            params = {**params, "type": ALIASES[params["type"]]}
        response = handler(self, req, params)
        response.headers.update(self._quota_headers())
        return response

    def environ(self, base_url: str) -> dict[str, str]:
        return {
            "PMS_HUBSPOT_PRIVATE_APP_TOKEN": self.token,
            "PMS_HUBSPOT_BASE_URL": base_url,
            "PMS_HUBSPOT_PIPELINE_ID": "default",
            "PMS_HUBSPOT_STAGE_ID": "appointmentscheduled",
            "PMS_HUBSPOT_REPORT_COMPANY_ID": self.company_id,
            **({"PMS_HUBSPOT_TIMEZONE": self.timezone} if self.timezone else {}),
            **({"PMS_HUBSPOT_OWNER_ID": self.owner_id} if self.owner_id else {}),
        }

    # -- what staff do in HubSpot, without the library ----------------------------------------

    def staff_move(self, appointment_id: str, start: _dt.datetime, end: _dt.datetime) -> None:
        """Move the booking's meeting (``<dealId>:<meetingId>``, or a meeting id)."""
        begins = utc_text(start, milliseconds=True)
        self.store.staff_write(
            appointment_id.rsplit(":", maxsplit=1)[-1],
            {
                "hs_timestamp": begins,
                "hs_meeting_start_time": begins,
                "hs_meeting_end_time": utc_text(end, milliseconds=True),
            },
        )

    def staff_cancel(self, appointment_id: str) -> None:
        """Set the meeting's outcome to CANCELED, as staff do in the meeting's record."""
        self.store.staff_write(appointment_id.rsplit(":", maxsplit=1)[-1], {"hs_meeting_outcome": "CANCELED"})

    def staff_delete(self, appointment_id: str) -> None:
        """Delete the booking's meeting, as staff do in HubSpot (it is archived: ``archivedAt``)."""
        self.store.archive("meetings", appointment_id.rsplit(":", maxsplit=1)[-1], source="CRM_UI")

    # -- change events (docs/providers/hubspot.md, "Changes") -----------------------------------

    @property
    def changes_recorded(self) -> int:
        """How many meeting changes the emulator has recorded (the next ``since_index``)."""
        return len(self.store.changes)

    def webhook_payloads(self, since_index: int = 0) -> list[list[dict[str, Any]]]:
        """The webhook bodies HubSpot would POST for the meeting changes from ``since_index`` on:
        one JSON array of generic ``object.*`` events (``objectTypeId`` ``0-47``) per change, so
        the next index is ``since_index + len(result)``. Unsigned: the sandbox signs on delivery."""
        return self.store.changes.payloads(since_index)

    def block_time(self, start: _dt.datetime, end: _dt.datetime, title: str = "Blocked") -> str:
        """A meeting that only blocks the calendar (no contact, no deal), the owner's when set."""
        begins = utc_text(start, milliseconds=True)
        properties = {
            "hs_timestamp": begins,
            "hs_meeting_title": title,
            "hs_meeting_body": BLOCK_BODY,
            "hs_meeting_start_time": begins,
            "hs_meeting_end_time": utc_text(end, milliseconds=True),
            "hs_meeting_outcome": "SCHEDULED",
            **({"hubspot_owner_id": self.owner_id} if self.owner_id else {}),
        }
        return self.store.block(properties)

    def reset(self) -> None:
        """Forget the records and the windows; the options stay."""
        with self.lock:
            super().reset()
            self._burst.clear()
            self._searches.clear()
            self._daily = 0

    def not_found(self, req: SandboxRequest) -> SandboxResponse:
        """A route this emulator does not implement: 501, so nobody mistakes it for "no such record"."""
        return error(
            501, f"The HubSpot sandbox does not emulate {req.method} {req.path.split('?')[0][:200]}", "NOT_EMULATED"
        )

    def error_response(
        self, status: int, *, message: str | None = None, retry_after: float | None = None
    ) -> SandboxResponse:
        if status == 401:
            response = error(401, message or AUTH_MESSAGE, "INVALID_AUTHENTICATION")
        elif status == 429:
            response = rate_limited("TEN_SECONDLY_ROLLING", message)
        elif status == 404:
            response = error(404, message or "Not Found", "OBJECT_NOT_FOUND")
        elif status >= 500:
            response = error(status, message or "internal error", "INTERNAL_ERROR")
        else:
            response = error(status, message or "error")
        if retry_after is not None:
            response.headers["Retry-After"] = f"{retry_after:g}"
        return response

    def rate_limit_headers(self, remaining: int, limit: int, interval_ms: int) -> dict[str, str]:
        return {
            "X-HubSpot-RateLimit-Max": str(limit),
            "X-HubSpot-RateLimit-Remaining": str(max(remaining, 0)),
            "X-HubSpot-RateLimit-Interval-Milliseconds": str(interval_ms),
        }

    def take_search_slot(self) -> None:
        """Search's own limit: ``search_rate`` requests a second (429 past it)."""
        with self.lock:
            if self.search_rate is not None and self._searches.take(self.search_rate) is not None:
                limited = rate_limited(None, "You have reached your secondly limit.")
                limited.headers["Retry-After"] = "1"
                raise Reply(limited)

    def _now(self) -> float:
        return self.clock()  # read each time: a test may replace the clock

    def _burst_window(self) -> tuple[int, float] | None:
        # An explicit window set with Sandbox.set_rate_limit replaces this one.
        return None if self.provider in self.sandbox._limits else self.burst_limit

    def _take_burst_slot(self) -> None:
        """HubSpot's rolling burst window (private apps: 100 requests per 10 s)."""
        limit = self._burst_window()
        if limit is None:
            return
        with self.lock:
            allowed, self._burst.seconds = limit
            if self._burst.take(allowed) is not None:
                limited = rate_limited("TEN_SECONDLY_ROLLING")
                limited.headers.update(self.rate_limit_headers(0, allowed, int(limit[1] * 1000)))
                raise Reply(limited)

    def _quota_headers(self) -> dict[str, str]:
        with self.lock:
            headers = {
                "X-HubSpot-Correlation-Id": str(uuid.uuid4()),
                "X-HubSpot-RateLimit-Daily": "250000",
                "X-HubSpot-RateLimit-Daily-Remaining": str(max(250_000 - self._daily, 0)),
            }
            limit = self._burst_window()
            if limit is not None:
                headers.update(self.rate_limit_headers(limit[0] - len(self._burst), limit[0], int(limit[1] * 1000)))
            return headers
