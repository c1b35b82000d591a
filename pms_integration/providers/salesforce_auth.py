"""Salesforce's bearer token, renewed with the OAuth refresh-token flow when it expires.

What it sends and why: ``docs/providers/salesforce.md``, "Token refresh".
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from .._http import HttpResponse, Transport
from ..config import SalesforceSettings, Secret
from ..errors import AuthenticationError, ConfigurationError, TransportError
from ..tokens import TokenStore
from ._base import text

__all__ = ["TokenRefreshAuth"]

log = logging.getLogger("pms_integration.providers.salesforce")

REFRESH_VARIABLES = ("PMS_SALESFORCE_CLIENT_ID", "PMS_SALESFORCE_CLIENT_SECRET", "PMS_SALESFORCE_REFRESH_TOKEN")


class TokenRefreshAuth:
    """Bearer auth whose token can be renewed with the OAuth 2.0 refresh-token flow.

    The marker :meth:`apply` returns is the :class:`Secret` it used. :meth:`refresh` runs under
    a lock and first compares that marker with the current token: if another thread has
    already replaced it, the caller just replays with the new one. So any number of threads
    that hit ``401 INVALID_SESSION_ID`` together cause exactly one token request.
    """

    #: After a refused refresh, requests still carrying the rejected token fail at once for
    #: this long instead of each asking the token endpoint again.
    FAILURE_HOLD_SECONDS = 30.0

    def __init__(self, settings: SalesforceSettings, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._token: Secret = settings.token
        self._client_id = settings.client_id
        self._client_secret = settings.client_secret
        self._refresh_token = settings.refresh_token
        self._token_url = settings.token_url
        self._clock = clock
        self._lock = threading.Lock()
        self._transport: Transport | None = None
        self._failure: tuple[Secret, float, AuthenticationError] | None = None
        self._store: TokenStore | None = None
        #: what the token store files the refresh token under: the org and the app, no secret
        self.store_key = f"salesforce {settings.base_url} {settings.client_id or ''}".rstrip()
        self.refresh_count = 0
        self.can_refresh = settings.can_refresh

    def bind(self, transport: Transport) -> None:
        """Send token requests through ``transport``: bounded in time and size like API calls."""
        self._transport = transport

    def use_store(self, store: TokenStore | None) -> None:
        """Read the refresh token from ``store`` before each refresh; save rotated ones to it."""
        with self._lock:
            self._store = store

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
                old = failure[2]  # a fresh copy: one object raised from many threads tangles tracebacks
                raise AuthenticationError(
                    old.message,
                    status_code=old.status_code,
                    code=old.code,
                    provider=old.provider,
                    operation=old.operation,
                )
            try:
                self._token = self._request_token()
            except AuthenticationError as exc:
                # A refusal is remembered; a network failure is not (the next request may retry).
                self._failure = (self._token, self._clock(), exc)
                raise
            self._failure = None
            self.refresh_count += 1
            return True

    def _stored_refresh_token(self) -> Secret | None:
        """The store's refresh token (it wins over the configured one), if there is a usable one."""
        if self._store is None:
            return None
        try:
            value = self._store.load(self.store_key)
        except Exception as exc:  # noqa: BLE001 - a broken store must not stop the refresh
            log.warning(
                "salesforce token refresh: could not read the token store (%s); using the refresh token in memory",
                type(exc).__name__,
            )
            return None
        return Secret(value, name="the stored Salesforce refresh token") if value else None

    def _keep_refresh_token(self, value: str) -> None:
        """A rotated refresh token: into the store first (the old one is already dead), then memory."""
        if self._store is not None:
            try:
                self._store.save(self.store_key, value)
            except Exception as exc:  # noqa: BLE001 - the new token still works in this process
                log.error(
                    "salesforce token refresh: the rotated refresh token could not be saved to the token store "
                    "(%s). This process keeps using it, but after a restart the configured "
                    "PMS_SALESFORCE_REFRESH_TOKEN is no longer valid: fix the store",
                    type(exc).__name__,
                )
            else:
                log.info("salesforce token refresh: the rotated refresh token was saved to the token store")
        self._refresh_token = Secret(value, name="the rotated Salesforce refresh token")

    def _request_token(self) -> Secret:
        self._refresh_token = self._stored_refresh_token() or self._refresh_token
        try:
            return self._post_refresh()
        except AuthenticationError as exc:
            # Another process may have rotated the token since we read the store: one more try
            # with what the store holds now, if that is a different token.
            newer = self._stored_refresh_token() if exc.code == "invalid_grant" else None
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
                provider="salesforce",
                operation="token refresh",
            ) from None
        elapsed = (time.perf_counter() - started) * 1000
        log.info("salesforce POST /services/oauth2/token -> %d in %.0f ms (token refresh)", raw.status, elapsed)
        if 300 <= raw.status < 400:
            raise _redirect_refused(raw)
        body: Any = raw.json_or_none()
        body = body if isinstance(body, dict) else None
        token = text(body.get("access_token")) if body else None
        if raw.status == 200 and token:
            new_refresh = text(body.get("refresh_token")) if body else None
            if new_refresh and new_refresh != self._refresh_token.reveal():
                self._keep_refresh_token(new_refresh)  # rotation: the old refresh token stops working now
            return Secret(token)
        code = text(body.get("error")) if body else None
        detail = ": the answer held no access_token" if raw.status == 200 and body is None else ""
        if body is not None:
            description = text(body.get("error_description"))
            detail = f": {code or 'error'}" + (f" ({description[:120]})" if description else "")
        raise AuthenticationError(
            f"Salesforce rejected the expired token and refreshing it failed with HTTP {raw.status}{detail}. "
            f"Check {', '.join(REFRESH_VARIABLES)} (and PMS_SALESFORCE_TOKEN)",
            status_code=raw.status if raw.status >= 400 else 401,
            code=code,
            provider="salesforce",
            operation="token refresh",
        )

    def __repr__(self) -> str:
        return "TokenRefreshAuth(Secret('**********'))"


def _redirect_refused(raw: HttpResponse) -> AuthenticationError:
    """The error for a token endpoint that answered with a redirect (which is never followed)."""
    target = urlsplit(raw.header("Location") or "")
    where = f" to {target.scheme}://{target.hostname}" if target.scheme and target.hostname else ""
    return AuthenticationError(
        f"Salesforce's token endpoint answered HTTP {raw.status}, a redirect{where}; the library never "
        "sends the client secret or refresh token on to another address, so the token was not refreshed. "
        "Set PMS_SALESFORCE_BASE_URL to your org's My Domain URL (https://<your-domain>.my.salesforce.com, "
        "shown under Setup > My Domain) rather than a login, Lightning or old instance URL",
        status_code=raw.status,
        code="REDIRECT_REFUSED",
        provider="salesforce",
        operation="token refresh",
    )
