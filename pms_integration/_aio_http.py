"""The async transport: :class:`Transport` with its wire exchange awaited over aiohttp.

``pms_integration.aio`` gives adapters an :class:`AioTransport` (``Runtime.transport_class``).
Everything but the exchange itself is the sync transport's: retries and their table, the rate
limiter and its slots, a vendor's Retry-After hold, the 401 refresh, error typing and logging.
Only :meth:`AioTransport._send` differs, and it runs inside an async call (a greenlet driven by
``pms_integration._green.run_sync``), where each wait is handed to the event loop through
``_green.await_only``:

* The request is prepared by ``requests`` exactly as the sync transport prepares it (pure
  computation), so the URL, query, body bytes and headers on the wire are the same; aiohttp
  adds only ``Host`` and sends nothing of its own (no cookies, no default headers).
* Never a redirect followed (a request carrying a credential must not be replayed elsewhere),
  no environment read per request (the proxies the sync transport read once are used), TLS
  verified as the sync transport does (``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE``, else the
  certifi bundle ``requests`` uses), and aiohttp's silent re-send of a request whose reused
  connection dropped is off: every request on the wire is one the retry table judged.
* One total time limit, ``call.timeout`` (the request timeout or what the operation's deadline
  leaves), covers connecting, sending and the whole body: a silent server, a trickle and a
  huge body all end by then.
* Bodies are read raw (``auto_decompress=False``) in chunks under the sync caps: a success body
  up to ``limit``, an error body up to ``MAX_ERROR_BODY_BYTES``, gzip/deflate inflated by the
  same bounded inflater, so a gzip bomb costs nothing.
* A failure is typed by the sync rules (``Transport._lost_as``): a refused connection or a
  failed DNS lookup sent nothing (a create may go again); a timeout or a reset after the request
  left is "outcome unknown" for a create; a request refused locally is not retried.

One ``aiohttp.ClientSession`` per transport and event loop, opened on first use inside that
loop (up to ``POOL_PER_HOST`` connections to a host, idle ones kept ``KEEPALIVE_SECONDS``).
:meth:`AioTransport.close` closes it: awaited inside an async call; outside one, handed to its
loop, or let go of if that loop is gone (it never blocks or raises). A session nobody closed
is closed when ``asyncio.run`` ends its loop (a small task per session waits for that).

Decisions the issue left open: a TLS handshake failure is "lost" (outcome unknown for a
create), as for the sync transport, although no HTTP byte left; a CA bundle is read in a worker
thread on the first https request, not on the loop; a request prepared with a bad header is a
local error (not retried), as ``requests`` refuses it before aiohttp sees it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import threading
import time
import zlib
from collections.abc import Container
from typing import Any

import aiohttp
import attrs
import requests
import requests.structures
import requests.utils
import yarl
from multidict import CIMultiDict, CIMultiDictProxy

from . import _green
from ._http import _CHUNK, HttpResponse, LostKind, Transport, _Call, _inflater, _lost_kind, _TooLarge
from ._ratelimit import Slot
from .errors import ConfigurationError

__all__ = ["AioTransport", "POOL_PER_HOST"]

#: Connections to one host by one transport; aiohttp queues requests past it. Measured
#: (benchmarks/aio.py, 200 bookings awaited at once, 50 ms answers, 2 cores): with 100, the
#: answers of a hundred requests land in one turn of the loop and the loop's p99 lag is 8-10 ms;
#: with 32 it is 4 ms but the bookings take as long as 32 threads; 40 keeps the lag under 5 ms
#: and finishes in about three quarters of the threads' time.
POOL_PER_HOST = 40
#: Seconds an idle connection stays in the pool.
KEEPALIVE_SECONDS = 15.0

# aiohttp would add these when a request lacks them; the sync transport sends only what
# requests prepared, so the async one must not invent any either
_NO_AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")

_SSL_FAILURES: tuple[type[BaseException], ...] = (
    aiohttp.ClientSSLError,
    aiohttp.ClientConnectorCertificateError,
    aiohttp.ClientConnectorSSLError,
)


def _aio_lost_kind(exc: BaseException) -> LostKind:
    """What an aiohttp failure means, by the rules of the sync transport's ``_lost_kind``."""
    if isinstance(exc, requests.RequestException):
        return _lost_kind(exc, timed_out=False)  # requests refused to prepare it (an OSError too)
    if isinstance(exc, asyncio.TimeoutError):  # aiohttp's ServerTimeoutError included
        return "timeout"
    if isinstance(exc, aiohttp.ClientConnectorError) and not isinstance(exc, _SSL_FAILURES):
        # refused, unreachable, DNS, the proxy unreachable: no byte of the request left. A TLS
        # handshake failure counts as "lost", as it does for the sync transport (urllib3 does
        # not tell it apart from a connection dropped later).
        return "never_sent"
    if isinstance(exc, (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, aiohttp.ClientResponseError)):
        return "lost"  # reset, disconnected, a truncated or garbled answer
    if isinstance(exc, (OSError, zlib.error)):
        return "lost"
    if isinstance(exc, (aiohttp.InvalidURL, ValueError, TypeError, RuntimeError)):
        return "local"  # refused before sending (a bad URL, header or proxy), and again next time
    return "lost"


def _scrub(exc: BaseException) -> None:
    """Drop what an exception keeps of the request: its headers carry the credential."""
    if isinstance(exc, requests.RequestException):
        exc.request = exc.response = None
    if isinstance(exc, aiohttp.ClientResponseError):
        info = exc.request_info
        exc.request_info = aiohttp.RequestInfo(info.url, info.method, CIMultiDictProxy(CIMultiDict()), info.real_url)
        exc.history = ()


def _tls_context(verify: Any, cert: Any) -> ssl.SSLContext | bool:
    """The TLS settings of the sync transport (``Session.verify``/``cert``) as an SSL context."""
    if verify is False:
        return False
    if isinstance(verify, str) and os.path.isdir(verify):
        context = ssl.create_default_context(capath=verify)
    else:
        context = ssl.create_default_context(
            cafile=verify if isinstance(verify, str) else requests.utils.DEFAULT_CA_BUNDLE_PATH
        )
    if isinstance(cert, str):
        context.load_cert_chain(cert)
    elif isinstance(cert, tuple) and cert:
        context.load_cert_chain(cert[0], cert[1] if len(cert) > 1 else None)
    return context


async def _open(session: aiohttp.ClientSession, options: dict[str, Any]) -> aiohttp.ClientResponse:
    return await session.request(**options)


async def _read_capped(resp: aiohttp.ClientResponse, limit: int, *, cut: bool) -> bytes:
    """The sync ``_read_capped`` for an aiohttp response: up to ``limit`` decoded bytes; past it
    either the first ``limit`` bytes (``cut``) or :class:`_TooLarge`. The rest is never read."""
    inflate = _inflater(resp.headers.get("Content-Encoding", ""))
    if inflate is None:
        length = resp.headers.get("Content-Length", "").strip()
        if length.isdigit() and int(length) > limit and not cut:
            raise _TooLarge()
    parts: list[bytes] = []
    size = 0
    while True:
        # aiohttp's total timeout bounds each wait for data; data already buffered is read at once
        chunk = await resp.content.read(_CHUNK)
        if not chunk:
            break
        if inflate is None:
            parts.append(chunk)
            size += len(chunk)
        else:
            out = inflate(chunk, limit - size + 1)  # never more than one byte past the cap
            parts.append(out)
            size += len(out)
        if size > limit:
            if cut:
                return b"".join(parts)[:limit]
            raise _TooLarge()
    return b"".join(parts)


def _headers(resp: aiohttp.ClientResponse) -> requests.structures.CaseInsensitiveDict[str]:
    """The answer's headers as the sync transport sees them: case-insensitive, repeats joined."""
    merged: requests.structures.CaseInsensitiveDict[str] = requests.structures.CaseInsensitiveDict()
    for name in resp.headers.keys():  # noqa: SIM118 - a multidict lists a repeated name once per value
        if name not in merged:
            merged[name] = ", ".join(resp.headers.getall(name))
    return merged


async def _close_at_shutdown(session: aiohttp.ClientSession) -> None:
    """Wait until cancelled, then close ``session``: ``asyncio.run`` cancels every task left
    when its main coroutine ends, so a session nobody closed still closes inside its loop."""
    try:
        await asyncio.Event().wait()
    finally:
        await session.close()


@attrs.frozen
class _Opened:
    """This transport's session on one loop, and the task that closes it when the loop ends."""

    loop: asyncio.AbstractEventLoop
    session: aiohttp.ClientSession
    guard: asyncio.Task[None]

    def close_quietly(self) -> None:
        """Close the session without blocking and without raising, from anywhere."""
        with contextlib.suppress(Exception):
            if self.session.closed:
                return
            if not self.loop.is_closed():
                # the guard closes it on its own loop, whenever that loop next runs
                self.loop.call_soon_threadsafe(self.guard.cancel)
                return
            # the loop is gone without running the guard: its sockets cannot be closed through
            # it any more; let go of them
            connector = self.session.connector
            self.session.detach()
            close_now = getattr(connector, "_close", None)
            if callable(close_now):
                close_now()


class AioTransport(Transport):
    """A :class:`Transport` whose requests are awaited on aiohttp; for ``pms_integration.aio`` only.

    Used outside an async call it raises :class:`ConfigurationError`.
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        # the settings the sync transport read once (proxies, CA bundle, client certificate)
        self._proxies: dict[str, str] = dict(self._send_options["proxies"])
        self._verify, self._cert = self._send_options["verify"], self._send_options["cert"]
        self._tls: ssl.SSLContext | bool | None = None
        self._sessions: dict[asyncio.AbstractEventLoop, _Opened] = {}
        self._sessions_lock = threading.Lock()

    # -- the entry points: only inside an async call ---------------------------------------------

    def _check_async(self) -> None:
        if not _green.in_async():
            raise ConfigurationError(
                f"this {self.provider.label} transport awaits its requests: call it through "
                "pms_integration.aio (AsyncPMSClient), or use pms_integration.PMSClient for blocking calls"
            )

    def request(self, method: str, path: str, **kwargs: Any) -> HttpResponse:
        self._check_async()
        return super().request(method, path, **kwargs)

    def send_once(self, method: str, url: str, **kwargs: Any) -> HttpResponse:
        self._check_async()
        return super().send_once(method, url, **kwargs)

    # -- the session -------------------------------------------------------------------------------

    def _session(self) -> aiohttp.ClientSession:
        """This loop's session, opened on first use."""
        loop = asyncio.get_running_loop()
        with self._sessions_lock:
            opened = self._sessions.get(loop)
            if opened is not None and not opened.session.closed:
                return opened.session
            for other in [other for other in self._sessions if other.is_closed()]:
                self._sessions.pop(other).close_quietly()
            connector = aiohttp.TCPConnector(limit=0, limit_per_host=POOL_PER_HOST, keepalive_timeout=KEEPALIVE_SECONDS)
            session = aiohttp.ClientSession(
                connector=connector,
                trust_env=False,  # proxies and CA settings were read once, at construction
                auto_decompress=False,  # bodies are inflated here, under the size cap
                cookie_jar=aiohttp.DummyCookieJar(),  # the sync transport sends no cookies either
                skip_auto_headers=_NO_AUTO_HEADERS,
                timeout=aiohttp.ClientTimeout(total=None),  # each request sets its own
            )
            # aiohttp would send an idempotent request again, unseen, when a reused connection
            # drops; here every request on the wire is one the retry table decided to send
            # (aiohttp's own test client turns it off the same way)
            session._retry_connection = False
            guard = loop.create_task(_close_at_shutdown(session), name="pms-integration: close the aiohttp session")
            self._sessions[loop] = _Opened(loop, session, guard)
            return session

    def _tls_for(self, url: str) -> ssl.SSLContext | bool | None:
        if not url.lower().startswith("https:"):
            return None
        if self._tls is None:
            try:
                # reading a CA bundle takes tens of milliseconds: in a worker thread, awaited
                self._tls = _green.run_blocking(_tls_context, self._verify, self._cert)
            except (OSError, ValueError, ssl.SSLError) as exc:
                raise ConfigurationError(
                    f"the TLS settings for {self.provider.label} cannot be used ({type(exc).__name__}): "
                    "check REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE"
                ) from None
        return self._tls

    def close(self) -> None:
        """Close the sessions; awaited inside an async call, handed to their loop otherwise.
        Never raises."""
        with contextlib.suppress(Exception):
            super().close()
        with self._sessions_lock:
            sessions, self._sessions = self._sessions, {}
        here: asyncio.AbstractEventLoop | None = None
        if _green.in_async():
            with contextlib.suppress(RuntimeError):
                here = asyncio.get_running_loop()
        for loop, opened in sessions.items():
            if loop is here:
                with contextlib.suppress(Exception):
                    _green.await_only(opened.session.close())
                opened.guard.cancel()
            else:
                opened.close_quietly()

    # -- one exchange ------------------------------------------------------------------------------

    def _send(
        self, call: _Call, hdrs: dict[str, str], slot: Slot | None, expect: Container[int], limit: int, **body: Any
    ) -> HttpResponse:
        """The sync ``_send``, awaited: same preparation, caps, slot release and failure verdicts."""
        self._check_async()
        call.started = time.perf_counter()
        with self._info_lock:
            self.request_count += 1
        try:
            try:
                prepared = requests.Request(call.method, call.url, headers=hdrs, hooks=self.session.hooks, **body)
                options = self._wire(prepared.prepare(), call.timeout)
                resp = _green.await_only(_open(self._session(), options))
            except ConfigurationError:
                raise
            except Exception as exc:  # every failure is typed; a cancellation passes
                _scrub(exc)
                raise self._lost_as(exc, call, _aio_lost_kind(exc)) from exc
        finally:
            if slot is not None and self.limiter is not None:
                # the answer's headers are back: an upper bound on when the vendor counted it
                self.limiter.release(slot)
        success = resp.status < 300 or resp.status in expect
        complete = False
        try:
            data = _green.await_only(
                _read_capped(resp, limit if success else self.MAX_ERROR_BODY_BYTES, cut=not success)
            )
            complete = True
        except _TooLarge:
            raise self._too_large(call, resp.status, limit) from None
        except Exception as exc:  # as above
            _scrub(exc)
            raise self._lost_as(exc, call, _aio_lost_kind(exc)) from exc
        finally:
            if complete and resp.content.at_eof():
                resp.release()  # the connection goes back to the pool
            else:
                resp.close()  # an unread rest goes with the connection
        headers = _headers(resp)
        encoding = requests.utils.get_encoding_from_headers(headers) or "utf-8"
        try:
            text = data.decode(encoding, errors="replace")
        except LookupError:
            text = data.decode("utf-8", errors="replace")
        return HttpResponse(resp.status, headers, text, call.method, call.path)

    def _wire(self, prepared: requests.PreparedRequest, timeout: float) -> dict[str, Any]:
        """aiohttp's arguments for sending ``prepared`` byte for byte as the sync transport would."""
        url = prepared.url or ""
        payload = prepared.body
        if isinstance(payload, str):
            payload = payload.encode("iso-8859-1")  # how http.client sends a str body
        headers = [
            (name, value.decode("latin-1") if isinstance(value, bytes) else value)
            for name, value in prepared.headers.items()
        ]
        options: dict[str, Any] = {
            "method": prepared.method or "GET",
            "url": yarl.URL(url, encoded=True),  # requests quoted it already: sent as it is
            "headers": headers,
            "data": payload,
            "allow_redirects": False,
            "timeout": aiohttp.ClientTimeout(total=timeout),
        }
        proxy = requests.utils.select_proxy(url, self._proxies)
        if proxy:
            options["proxy"] = proxy
        tls = self._tls_for(url)
        if tls is not None:
            options["ssl"] = tls
        return options
