"""Salesforce's bearer token, renewed with the OAuth refresh-token flow when it expires.

What it sends and why: ``docs/providers/salesforce.md``, "Token refresh"; how processes sharing
a state store refresh one at a time: "Keeping rotated refresh tokens".
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from .. import _green
from .._http import HttpResponse, Transport
from .._retry import current_deadline
from ..config import SalesforceSettings, Secret
from ..errors import AuthenticationError, ConfigurationError, StateStoreError, TransportError
from ..state import StateStore, StoreTokens, hold
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

    With a token store kept in a state store (``StoreTokens``, the client's default), the same
    holds across processes: the refresh runs under the store's lock ``token-refresh:<store_key>``
    and the new access token is shared under ``<store_key>:access``, so a process that finds a
    young one there uses it instead of asking the token endpoint again.
    """

    #: After a refused refresh, requests still carrying the rejected token fail at once for
    #: this long instead of each asking the token endpoint again.
    FAILURE_HOLD_SECONDS = 30.0
    #: An access token another process saved to the shared store at most this long ago is used
    #: instead of refreshing (well under Salesforce's shortest session timeout, 15 minutes, so
    #: it cannot have timed out yet); an older one may be dead, so this process refreshes.
    SHARED_TOKEN_MAX_AGE = 300.0
    #: How long the cross-process refresh lock is waited for (and held at most) when the call
    #: has no deadline of its own.
    LOCK_SECONDS_WITHOUT_DEADLINE = 30.0
    #: Seconds the lock's lease outlives the holder's deadline (the answer's handling, clock drift).
    LOCK_LEASE_MARGIN = 5.0

    def __init__(self, settings: SalesforceSettings, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._token: Secret = settings.token
        self._client_id = settings.client_id
        self._client_secret = settings.client_secret
        self._refresh_token = settings.refresh_token
        #: PMS_SALESFORCE_REFRESH_TOKEN as configured: the fallback when the stored one is refused
        self._configured_refresh = settings.refresh_token
        self._token_url = settings.token_url
        self._clock = clock
        # held across the token request: an async call awaits it (a thread blocks, as before)
        self._lock = _green.Lock()
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
        shared = self._shared_state()
        if shared is None:
            with self._lock:
                return self._refresh_here(used)
        return self._refresh_shared(used, shared)

    def _shared_state(self) -> StateStore | None:
        """The state store behind the token store, when it is one (``StoreTokens``): then the
        refresh is coordinated across every process that shares it."""
        store = self._store
        return store.store if isinstance(store, StoreTokens) else None

    def _refresh_here(self, used: object) -> bool:
        """The refresh within this process (the caller holds ``self._lock``)."""
        if used is not self._token:
            return True  # someone refreshed while this request was out: replay with theirs
        self._raise_if_refused_lately(used)
        try:
            self._token = self._request_token()
        except AuthenticationError as exc:
            # A refusal is remembered; a network failure is not (the next request may retry).
            self._failure = (self._token, self._clock(), exc)
            raise
        self._failure = None
        self.refresh_count += 1
        return True

    def _raise_if_refused_lately(self, used: object) -> None:
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

    def _refresh_shared(self, used: object, shared: StateStore) -> bool:
        """One process at a time: under the store's lock, take the access token another process
        just saved, else refresh (stored refresh token -> POST -> rotated one saved) and save
        the new access token for the others. Bounded by the call's deadline."""
        deadline = current_deadline()
        budget = self.LOCK_SECONDS_WITHOUT_DEADLINE if deadline is None else max(deadline.remaining(), 0.0)
        # a real-time bound too (a test's fake clock must not make the wait endless)
        give_up = time.monotonic() + budget
        if not self._lock.acquire(timeout=max(budget, 0.001)):
            raise StateStoreError(
                "the Salesforce token refresh running in another thread of this process did not finish "
                "within this call's deadline; nothing was sent with the expired token",
                code="STATE_LOCK_BUSY",
                store=shared.url,
            )
        try:
            if used is not self._token:
                return True  # another thread of this process refreshed while this request was out
            left = max(min(give_up - time.monotonic(), budget), 0.0)
            with hold(
                shared,
                f"token-refresh:{self.store_key}",
                lease=left + self.LOCK_LEASE_MARGIN,  # the holder's work ends with its deadline
                wait=left,
                what="the Salesforce token refresh",
            ):
                if self._adopt_shared_token(used):
                    return True
                return self._refresh_here(used) and self._share_access_token()
        finally:
            self._lock.release()

    def _access_key(self) -> str:
        return f"{self.store_key}:access"

    def _adopt_shared_token(self, used: object) -> bool:
        """Use the access token another process saved, if it is not the one just refused and
        young enough to be alive (:attr:`SHARED_TOKEN_MAX_AGE`). No secret reaches the logs."""
        assert self._store is not None
        try:
            raw = self._store.load(self._access_key())
            entry = json.loads(raw) if raw else None
        except (StateStoreError, ValueError) as exc:
            log.warning(
                "salesforce token refresh: could not read the shared access token (%s); refreshing",
                getattr(exc, "code", type(exc).__name__),
            )
            return False
        if not isinstance(entry, dict):
            return False
        token, saved_at = entry.get("access_token"), entry.get("saved_at")
        if not isinstance(token, str) or not token or not isinstance(saved_at, (int, float)):
            return False
        if isinstance(used, Secret) and used.reveal() == token:
            return False  # the shared token is the one refused: refresh
        age = time.time() - saved_at
        if age > self.SHARED_TOKEN_MAX_AGE:
            return False  # too old to trust: it may have timed out as well
        self._token = Secret(token, name="the shared Salesforce access token")
        self._failure = None
        log.info("salesforce token refresh: using the access token another process refreshed %.0f s ago", max(age, 0.0))
        return True

    def _share_access_token(self) -> bool:
        """Save the new access token for the other processes (a failure costs them a refresh)."""
        assert self._store is not None
        value = json.dumps({"access_token": self._token.reveal(), "saved_at": time.time()})
        try:
            self._store.save(self._access_key(), value)
        except StateStoreError as exc:
            log.warning(
                "salesforce token refresh: the new access token could not be shared through the state store (%s); "
                "other processes refresh their own",
                exc.code,
            )
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

    def _keep_refresh_token(self, value: str, *, why: str = "rotated") -> None:
        """A new live refresh token: into the store first (the old one is already dead), then memory."""
        if self._store is not None:
            try:
                self._store.save(self.store_key, value)
            except Exception as exc:  # noqa: BLE001 - the new token still works in this process
                log.error(
                    "salesforce token refresh: the %s refresh token could not be saved to the token store "
                    "(%s). This process keeps using it, but after a restart the configured "
                    "PMS_SALESFORCE_REFRESH_TOKEN may no longer be valid: fix the store",
                    why,
                    type(exc).__name__,
                )
            else:
                log.info("salesforce token refresh: the %s refresh token was saved to the token store", why)
        self._refresh_token = Secret(value, name=f"the {why} Salesforce refresh token")

    def _request_token(self) -> Secret:
        stored = self._stored_refresh_token()
        self._refresh_token = stored or self._refresh_token
        tried = {self._refresh_token.reveal()} if self._refresh_token is not None else set()
        try:
            return self._post_refresh()
        except AuthenticationError as exc:
            if exc.code != "invalid_grant":
                raise
            refused = exc
        # Another process may have rotated the token since we read the store: one more try
        # with what the store holds now, if that is a different token.
        newer = self._stored_refresh_token()
        if newer is not None and newer.reveal() not in tried:
            log.info("salesforce token refresh: retrying with the refresh token another process saved")
            self._refresh_token = newer
            tried.add(newer.reveal())
            stored = newer
            try:
                return self._post_refresh()
            except AuthenticationError as exc:
                if exc.code != "invalid_grant":
                    raise
                refused = exc
        # The stored token is refused and an operator configured a different one (a fresh
        # authorisation, say): that one, once, before giving up.
        configured = self._configured_refresh
        if stored is None or configured is None or configured.reveal() in tried:
            raise refused
        log.warning(
            "salesforce token refresh: the stored refresh token was refused (invalid_grant); trying the "
            "configured PMS_SALESFORCE_REFRESH_TOKEN once"
        )
        self._refresh_token = configured
        token = self._post_refresh()
        if self._refresh_token is configured:
            # not rotated: the configured token is the live one now, so the store gets it too
            self._keep_refresh_token(configured.reveal(), why="configured")
        return token

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
