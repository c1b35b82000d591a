"""The sandbox core: one loopback HTTP server hosting the three vendor emulators, with faults.

Writing a vendor emulator
-------------------------
A vendor package ``pms_integration/sandbox/<vendor>/`` is split by concern, as moto does it:

* ``routes.py``: the route table, a tuple of :class:`Endpoint` rows (method, path pattern below
  the prefix, operation name for faults, handler). A pattern is a regular expression matched
  (``fullmatch``) against the raw path; its named groups, percent-decoded, are the ``params``;
* ``handlers.py``: ``handler(context, req, params) -> SandboxResponse``: read the request, check
  it like the vendor, call the state, answer in the vendor's format (or ``raise Reply(...)``);
* ``state.py``: a :class:`Store` subclass holding the records and the operations on them (no
  HTTP; each operation holds ``store.lock``, which is the emulator's ``lock`` too);
* the :class:`Emulator` subclass, ``EMULATOR`` at package level, which sets ``provider`` and
  ``prefix`` (``"/ghl"``), ``endpoints`` (the table), ``store``, and overrides :meth:`Emulator.handle`
  for what every route shares (auth, quota headers; it picks the ``context`` handlers get),
  :meth:`Emulator.error_response` / :meth:`Emulator.error_for` (the vendor's error body for a
  status, used for injected faults too), :meth:`Emulator.rate_limit_headers` and
  :meth:`Emulator.environ` (the ``PMS_*`` variables pointing at it).

Adding an operation is one row in the table, one handler and one store method. Older emulators
may still return :class:`Route` objects from their own :meth:`Emulator.routes`.

Faults
------
``sandbox.inject(provider, Fault.server_error(503), operation="appointments.create", times=2)`` or
``probability=0.1`` (seeded by the sandbox's ``seed``); the kinds are listed on :class:`Fault` and
in docs/testing.md.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import datetime as _dt
import functools
import importlib
import json
import logging
import random
import re
import secrets
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Generic, TypeVar, cast, overload
from urllib.parse import parse_qs, unquote, urlsplit

import attrs

from .._time import UTC, utc_text
from ..models import ProviderName

__all__ = [
    "REASONS",
    "Emulator",
    "Endpoint",
    "EndpointHandler",
    "Fault",
    "FaultRule",
    "Forwarded",
    "Reply",
    "RequestRecord",
    "RollingWindow",
    "Route",
    "Sandbox",
    "SandboxRequest",
    "SandboxResponse",
    "Store",
    "json_response",
    "now_text",
]

log = logging.getLogger("pms_integration.sandbox")

EMULATOR_MODULES: dict[ProviderName, str] = {
    ProviderName.GOHIGHLEVEL: "pms_integration.sandbox.gohighlevel",
    ProviderName.SALESFORCE: "pms_integration.sandbox.salesforce",
    ProviderName.HUBSPOT: "pms_integration.sandbox.hubspot",
}


# ---------------------------------------------------------------------------------------------
# requests and responses


@attrs.define
class SandboxRequest:
    """One HTTP request as an emulator sees it."""

    method: str
    path: str
    """The raw path below the emulator's prefix (still percent-encoded)."""
    query: dict[str, list[str]]
    headers: Message
    body: bytes
    operation: str = ""

    def header(self, name: str) -> str | None:
        value = self.headers.get(name)
        return None if value is None else str(value)

    def bearer(self) -> str | None:
        auth = self.header("Authorization") or ""
        if auth[:7].lower() == "bearer ":
            return auth[7:].strip()
        return None

    def arg(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None

    def json(self) -> Any:
        """The body as JSON; raises ``ValueError`` if it is not JSON."""
        if not self.body:
            raise ValueError("empty body")
        return json.loads(self.body.decode("utf-8"))

    def form(self) -> dict[str, str]:
        """An ``application/x-www-form-urlencoded`` body."""
        return {k: v[0] for k, v in parse_qs(self.body.decode("utf-8"), keep_blank_values=True).items()}


@attrs.define
class SandboxResponse:
    status: int
    body: Any = None
    """JSON-serialisable data, or ``str``/``bytes`` sent as they are."""
    headers: dict[str, str] = attrs.field(factory=dict)
    content_type: str = "application/json;charset=UTF-8"

    def encode(self) -> bytes:
        if self.body is None:
            return b""
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode("utf-8")
        return json.dumps(self.body, separators=(",", ":")).encode("utf-8")


def json_response(status: int, body: Any = None, headers: Mapping[str, str] | None = None) -> SandboxResponse:
    return SandboxResponse(status, body, dict(headers or {}))


class Reply(Exception):
    """Raised by a handler to answer with ``response`` at once."""

    def __init__(self, response: SandboxResponse) -> None:
        super().__init__(response.status)
        self.response = response


Handler = Callable[[SandboxRequest, dict[str, str]], SandboxResponse]


@attrs.frozen
class Route:
    method: str
    pattern: str
    handler: Handler
    operation: str
    mutating: bool = False

    @property
    def regex(self) -> re.Pattern[str]:
        return re.compile(self.pattern)


C = TypeVar("C")
T = TypeVar("T")
#: a route table's handler: (the context :meth:`Emulator.handle` passes, request, path parameters)
EndpointHandler = Callable[[Any, SandboxRequest, dict[str, str]], SandboxResponse]


@attrs.frozen
class Endpoint(Generic[C]):
    """One row of an emulator's route table; :meth:`Emulator.routes` binds it into a :class:`Route`.

    ``handler`` takes the context :meth:`Emulator.handle` passes (the emulator's store, say), the
    request and the path parameters. ``mutating`` defaults to "not a GET".
    """

    method: str
    pattern: str
    operation: str
    handler: Callable[[C, SandboxRequest, dict[str, str]], SandboxResponse]
    mutating: bool = attrs.field(
        default=attrs.Factory(lambda self: self.method != "GET", takes_self=True), kw_only=True
    )


def now_text() -> str:
    """Now in UTC with milliseconds and a ``Z``, as the vendors stamp their records."""
    return utc_text(_dt.datetime.now(UTC), milliseconds=True)


class RollingWindow:
    """The moments of the requests of the last ``seconds``: a vendor's rolling quota.

    Not thread-safe by itself: callers hold their lock around :meth:`take`.
    """

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self.clock = clock
        self._moments: collections.deque[float] = collections.deque()

    def __len__(self) -> int:
        return len(self._moments)

    def take(self, limit: int | None = None) -> float | None:
        """Count one request; with ``limit`` requests already in the window, count nothing and
        return the seconds until the oldest of them leaves it."""
        now = self.clock()
        while self._moments and self._moments[0] <= now - self.seconds:
            self._moments.popleft()
        if limit is not None and len(self._moments) >= limit:
            return self.seconds - (now - self._moments[0]) if self._moments else self.seconds
        self._moments.append(now)
        return None

    def clear(self) -> None:
        self._moments.clear()


class Store:
    """An emulator's records and the operations on them (no HTTP): each operation holds ``lock``."""

    def __init__(self) -> None:
        self.lock = threading.RLock()

    def snapshot(self) -> dict[str, Any]:
        """The records, JSON-ready (what :meth:`Sandbox.state` returns)."""
        return {}

    def clear(self) -> None:
        """Forget every record."""


class Forwarded(Generic[T]):
    """An emulator attribute that lives on its store: ``open_hours: Forwarded[X] = Forwarded()``."""

    name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type) -> Forwarded[T]: ...

    @overload
    def __get__(self, obj: Emulator, owner: type) -> T: ...

    def __get__(self, obj: Emulator | None, owner: type) -> Forwarded[T] | T:
        return self if obj is None else cast(T, getattr(obj.store, self.name))

    def __set__(self, obj: Emulator, value: T) -> None:
        setattr(obj.store, self.name, value)


# ---------------------------------------------------------------------------------------------
# emulators


class Emulator:
    """Base class of the vendor emulators (see the module docstring)."""

    provider: ClassVar[ProviderName]
    prefix: ClassVar[str]
    #: the route table (see :class:`Endpoint`), bound by the default :meth:`routes`
    endpoints: ClassVar[Sequence[Endpoint[Any]]] = ()
    #: the records, for an emulator that keeps them in a :class:`Store` (set before ``__init__``)
    store: Store | None = None

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.lock = self.store.lock if self.store is not None else threading.RLock()
        self.token = sandbox.tokens[self.provider]
        self._compiled = [(r, re.compile(r.pattern)) for r in self.routes()]

    # -- to override -----------------------------------------------------------------------

    def routes(self) -> list[Route]:
        return [
            Route(e.method, e.pattern, functools.partial(self.handle, e.handler), e.operation, e.mutating)
            for e in self.endpoints
        ]

    def handle(self, handler: EndpointHandler, req: SandboxRequest, params: dict[str, str]) -> SandboxResponse:
        """Run one route's handler; override for what every route shares (auth, quota headers)."""
        return handler(self.store, req, params)

    def environ(self, base_url: str) -> dict[str, str]:
        raise NotImplementedError

    def state(self) -> dict[str, Any]:
        return {} if self.store is None else self.store.snapshot()

    def reset(self) -> None:
        """Forget all state."""
        if self.store is not None:
            self.store.clear()

    def error_response(
        self,
        status: int,
        *,
        message: str | None = None,
        retry_after: float | None = None,
    ) -> SandboxResponse:
        headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
        return json_response(status, {"message": message or REASONS.get(status, "error")}, headers)

    def error_for(
        self, req: SandboxRequest, status: int, *, message: str | None = None, retry_after: float | None = None
    ) -> SandboxResponse:
        """The vendor's error answer to ``req`` (faults, auth, crashes): :meth:`error_response`
        unless the shape depends on the request (GoHighLevel's v1 and v2)."""
        return self.error_response(status, message=message, retry_after=retry_after)

    def rate_limit_headers(self, remaining: int, limit: int, interval_ms: int) -> dict[str, str]:
        return {}

    # -- what staff do in the CRM, without the library (tests and demos) -----------------------

    def staff_move(self, appointment_id: str, start: _dt.datetime, end: _dt.datetime) -> None:
        """Move a booking as staff would in the vendor's own screens (no API call is recorded)."""
        raise NotImplementedError

    def staff_cancel(self, appointment_id: str) -> None:
        """Cancel a booking the way staff would in the CRM."""
        raise NotImplementedError

    def staff_delete(self, appointment_id: str) -> None:
        """Delete a booking the way staff would in the CRM (where the vendor can delete)."""
        raise NotImplementedError

    def block_time(self, start: _dt.datetime, end: _dt.datetime, title: str = "Blocked") -> str:
        """Make time unbookable (a block slot, a busy Event, a meeting); returns the record's id."""
        raise NotImplementedError

    # -- helpers -----------------------------------------------------------------------------

    def check_auth(self, req: SandboxRequest) -> SandboxResponse | None:
        """``None`` when the bearer token is the valid one, else the vendor's 401."""
        if req.bearer() == self.token:
            return None
        return self.error_for(req, 401)

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        for route, regex in self._compiled:
            if route.method != method:
                continue
            m = regex.fullmatch(path)
            if m:
                return route, {k: unquote(v) for k, v in m.groupdict().items() if v is not None}
        return None

    def not_found(self, req: SandboxRequest) -> SandboxResponse:
        """The answer for a route the emulator does not implement: ``501``, naming the route.

        Never the vendor's 404, which a caller would take for "record not found". Emulators
        override it to word it like the vendor (or to answer 405 for a known path).
        """
        message = f"Not emulated: the pms-integration sandbox does not implement {req.method} {self.prefix}{req.path}"
        return json_response(501, {"message": message, "error": "NOT_EMULATED"})


#: HTTP reason phrases (the status line, and default error messages)
REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


# ---------------------------------------------------------------------------------------------
# faults


@attrs.frozen
class Fault:
    """What an injected fault does: ``server_error`` (5xx, optionally after committing),
    ``rate_limit`` (429 + ``Retry-After``), ``delay`` (commit, then wait before answering: a client
    times out on a request that *did* take effect), ``reset_after_commit`` (commit, then reset the
    connection without answering), ``drop`` (reset without committing), ``expired_token`` (401)."""

    kind: str
    status: int = 0
    retry_after: float | None = None
    seconds: float = 0.0
    commit: bool = False

    @classmethod
    def server_error(cls, status: int = 503, *, commit: bool = False) -> Fault:
        """Answer ``status`` (5xx); with ``commit=True`` the change is applied first."""
        return cls("server_error", status=status, commit=commit)

    @classmethod
    def rate_limit(cls, retry_after: float | None = 1.0) -> Fault:
        return cls("rate_limit", status=429, retry_after=retry_after)

    @classmethod
    def delay(cls, seconds: float) -> Fault:
        """Apply the request, then wait ``seconds`` before answering."""
        return cls("delay", seconds=seconds, commit=True)

    @classmethod
    def reset_after_commit(cls) -> Fault:
        return cls("reset", commit=True)

    @classmethod
    def drop(cls) -> Fault:
        """Reset the connection without applying the request."""
        return cls("reset", commit=False)

    @classmethod
    def expired_token(cls) -> Fault:
        return cls("expired_token", status=401)


@attrs.define
class FaultRule:
    provider: ProviderName
    fault: Fault
    operation: str = "*"
    times: int | None = None
    probability: float | None = None
    fired: int = 0
    rng: random.Random = attrs.field(factory=random.Random, repr=False)

    def matches(self, provider: ProviderName, operation: str) -> bool:
        if provider != self.provider:
            return False
        return self.operation in ("*", operation) or (
            self.operation.endswith("*") and operation.startswith(self.operation[:-1])
        )

    def fire(self) -> bool:
        if self.times is not None and self.fired >= self.times:
            return False
        if self.probability is not None and self.rng.random() >= self.probability:
            return False
        self.fired += 1
        return True


@attrs.frozen
class RequestRecord:
    provider: ProviderName
    operation: str
    method: str
    path: str
    status: int
    fault: str | None


# ---------------------------------------------------------------------------------------------
# the server


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # The stdlib writes headers and body separately; with Nagle on, the client's delayed ACK
    # stalls each keep-alive response ~40 ms. We send one buffer and disable Nagle anyway.
    disable_nagle_algorithm = True
    timeout = 60
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.sandbox._opened(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.sandbox._closed(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("sandbox: " + format, *args)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        outcome = self.server.sandbox._dispatch(self.command, self.path, self.headers, body)
        if outcome is None:
            self._reset()
            return
        response, delay = outcome
        if delay:
            time.sleep(delay)
        payload = response.encode()
        lines = [f"HTTP/1.1 {response.status} {REASONS.get(response.status, 'OK')}"]
        headers = {"Content-Length": str(len(payload)), "Connection": "keep-alive"}
        if payload:
            headers["Content-Type"] = response.content_type
        headers.update(response.headers)
        lines += [f"{k}: {v}" for k, v in headers.items()]
        try:
            self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload)
        except (BrokenPipeError, ConnectionResetError):
            # the client gave up (a timeout fault did its job); nothing to answer
            self.close_connection = True

    def _reset(self) -> None:
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.close()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # clients that hang up mid-request are normal here (timeouts, resets); log, don't print
        log.debug("sandbox: connection from %s ended abruptly", client_address, exc_info=True)

    daemon_threads = True
    allow_reuse_address = True
    # the default listen backlog (5) makes a burst of new keep-alive connections from many
    # threads wait for SYN retries (~1 s); real vendors accept far more
    request_queue_size = 128
    sandbox: Sandbox


class _Server6(_Server):
    address_family = socket.AF_INET6


def _post(url: str, headers: Mapping[str, str], body: bytes) -> int:
    """POST ``body`` to ``url`` (a webhook delivery); the answer's status."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")  # noqa: S310 - a test URL
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _default_tokens() -> dict[ProviderName, str]:
    return {p: f"sandbox-{p.value}-{secrets.token_hex(8)}" for p in ProviderName}


class Sandbox:
    """Local emulators of the GoHighLevel, Salesforce and HubSpot APIs on one loopback port.

    ::

        with Sandbox() as sandbox:
            client = PMSClient(environ=sandbox.environ(), env_file=None)
            client.book_appointment({...}, provider="ghl")
            sandbox.state("gohighlevel")["bookings"]
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int | None = None,
        latency: float = 0.0,
        tokens: Mapping[ProviderName | str, str] | None = None,
    ) -> None:
        from ..config import is_loopback_host

        if not is_loopback_host(host):
            raise ValueError(f"the sandbox serves loopback only (127.0.0.1, ::1 or localhost), not {host!r}")
        self.host = host
        self.port = port
        self.latency = latency
        self.seed = seed
        self._rng = random.Random(seed)
        self.tokens: dict[ProviderName, str] = _default_tokens()
        self.tokens.update({ProviderName.parse(k): v for k, v in (tokens or {}).items()})
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []
        self._limits: dict[ProviderName, tuple[int, RollingWindow]] = {}
        self.records: collections.deque[RequestRecord] = collections.deque(maxlen=200_000)
        self.connections_opened = 0
        self.rate_limited = 0
        self._sockets: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.emulators: dict[ProviderName, Emulator] = {}
        for name, module_name in EMULATOR_MODULES.items():
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as exc:
                if exc.name != module_name:
                    raise
                continue
            self.emulators[name] = module.EMULATOR(self)
        #: HubSpot's webhook signing secret (the app's client secret) for this sandbox's deliveries
        self.hubspot_webhook_secret = f"sandbox-hubspot-webhook-{secrets.token_hex(16)}"
        self._ghl_signing_key: Any = None  # an Ed25519 private key, made on first use (cryptography)
        self._webhooks_sent: dict[ProviderName, int] = {}

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Sandbox:
        if self._server is not None:
            return self
        server_class = _Server6 if ":" in self.host else _Server
        server = server_class((self.host, self.port), _Handler)
        server.sandbox = self
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, name="pms-sandbox", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        with self._lock:
            open_sockets = list(self._sockets)
        for sock in open_sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def serve_forever(self) -> None:
        """Run in the foreground until interrupted (the ``pms-integration sandbox`` command)."""
        self.start()
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- configuration for clients -----------------------------------------------------------

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the sandbox is not running; use it as a context manager or call start()")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def base_url(self, provider: str | ProviderName) -> str:
        name = ProviderName.parse(provider)
        return self.url + self.emulators[name].prefix

    def environ(self, *, ghl_api_version: str = "v2", default_provider: str | None = None) -> dict[str, str]:
        """The ``PMS_*`` variables that point every provider at this sandbox."""
        env: dict[str, str] = {}
        for emulator in self.emulators.values():
            env.update(emulator.environ(self.url + emulator.prefix))
        if ghl_api_version == "v1" and ProviderName.GOHIGHLEVEL in self.emulators:
            env["PMS_GHL_BASE_URL"] = self.base_url(ProviderName.GOHIGHLEVEL) + "/v1"
            env["PMS_GHL_API_VERSION"] = "v1"
        if default_provider:
            env["PMS_DEFAULT_PROVIDER"] = ProviderName.parse(default_provider).value
        env.update(self._webhook_environ())
        return env

    # -- webhooks: the vendors' signed deliveries of the changes the emulators recorded ------------

    def _webhook_environ(self) -> dict[str, str]:
        """The webhook variables: HubSpot's test secret, and the public half of this sandbox's
        GoHighLevel test key (only when ``cryptography`` is installed: it signs)."""
        env: dict[str, str] = {}
        if ProviderName.HUBSPOT in self.emulators:
            env["PMS_HUBSPOT_WEBHOOK_SECRET"] = self.hubspot_webhook_secret
        key = self._ghl_key() if ProviderName.GOHIGHLEVEL in self.emulators else None
        if key is not None:
            from cryptography.hazmat.primitives import serialization

            der = key.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            env["PMS_GHL_WEBHOOK_PUBLIC_KEY"] = base64.b64encode(der).decode("ascii")
        return env

    def _ghl_key(self) -> Any:
        """This sandbox's GoHighLevel signing key (Ed25519, generated once), or None without cryptography."""
        if self._ghl_signing_key is None:
            try:
                from cryptography.hazmat.primitives.asymmetric import ed25519
            except ImportError:
                return None
            with self._lock:
                if self._ghl_signing_key is None:
                    self._ghl_signing_key = ed25519.Ed25519PrivateKey.generate()
        return self._ghl_signing_key

    def sign_webhook(
        self, provider: str | ProviderName, url: str, body: bytes, *, method: str = "POST", timestamp_ms: int | None = None
    ) -> dict[str, str]:
        """The headers the vendor would send with ``body`` to ``url``: HubSpot's v3 signature (with
        this sandbox's secret and ``timestamp_ms``, default now) or GoHighLevel's ``x-ghl-signature``
        (Ed25519, this sandbox's key)."""
        from ..webhooks import hubspot_signature, hubspot_signed_uri

        name = ProviderName.parse(provider)
        headers = {"Content-Type": "application/json"}
        if name is ProviderName.HUBSPOT:
            stamp = str(int(time.time() * 1000) if timestamp_ms is None else timestamp_ms)
            headers["X-HubSpot-Request-Timestamp"] = stamp
            headers["X-HubSpot-Signature-v3"] = hubspot_signature(
                "v3", self.hubspot_webhook_secret, method=method, uri=hubspot_signed_uri(url), body=body, timestamp=stamp
            )
        elif name is ProviderName.GOHIGHLEVEL:
            key = self._ghl_key()
            if key is None:
                raise RuntimeError("signing GoHighLevel webhooks needs cryptography (the [webhooks] extra)")
            headers["x-ghl-signature"] = base64.b64encode(key.sign(body)).decode("ascii")
        else:
            raise ValueError(f"{name.label} sends no signed webhooks")
        return headers

    def deliver_webhooks(
        self,
        provider: str | ProviderName,
        url: str,
        *,
        since: int | None = None,
        send: Callable[[str, Mapping[str, str], bytes], int] | None = None,
    ) -> list[int]:
        """POST the emulator's webhook bodies for the changes recorded since the last delivery
        (``since``: from that index instead; 0 redelivers everything), each signed as the vendor
        signs it, to ``url``; the answers' statuses. ``send(url, headers, body) -> status``
        replaces the HTTP POST (an in-process test client, say)."""
        name = ProviderName.parse(provider)
        payloads = getattr(self.emulator(name), "webhook_payloads", None)
        if payloads is None:
            raise ValueError(f"the {name.label} emulator records no webhook payloads")
        with self._lock:
            start = self._webhooks_sent.get(name, 0) if since is None else since
        bodies = payloads(start)
        post = send or _post
        statuses = []
        for body in bodies:
            raw = json.dumps(body, separators=(",", ":")).encode("utf-8")
            statuses.append(post(url, self.sign_webhook(name, url, raw), raw))
        with self._lock:
            self._webhooks_sent[name] = max(self._webhooks_sent.get(name, 0), start + len(bodies))
        return statuses

    def staff_move(
        self, provider: str | ProviderName, appointment_id: str, start: _dt.datetime, end: _dt.datetime
    ) -> None:
        """Move a booking directly in the emulator, as staff would in the CRM."""
        self.emulator(provider).staff_move(appointment_id, start, end)

    def staff_cancel(self, provider: str | ProviderName, appointment_id: str) -> None:
        """Cancel a booking directly in the emulator, as staff would in the CRM."""
        self.emulator(provider).staff_cancel(appointment_id)

    def staff_delete(self, provider: str | ProviderName, appointment_id: str) -> None:
        """Delete a booking directly in the emulator, as staff would in the CRM."""
        self.emulator(provider).staff_delete(appointment_id)

    def block_time(
        self, provider: str | ProviderName, start: _dt.datetime, end: _dt.datetime, title: str = "Blocked"
    ) -> str:
        """Make time unbookable in the provider's calendar; the blocking record's id."""
        return self.emulator(provider).block_time(start, end, title)

    def emulator(self, provider: str | ProviderName) -> Emulator:
        return self.emulators[ProviderName.parse(provider)]

    def state(self, provider: str | ProviderName) -> dict[str, Any]:
        """A snapshot of one emulator's records (bookings, notes, tasks, ...)."""
        emulator = self.emulator(provider)
        with emulator.lock:
            return emulator.state()

    def reset(self) -> None:
        """Forget all records, faults, limits and counters."""
        for emulator in self.emulators.values():
            with emulator.lock:
                emulator.reset()
        with self._lock:
            self._rules.clear()
            self._limits.clear()
            self.records.clear()
            self._webhooks_sent.clear()
            self.rate_limited = 0

    # -- faults and limits -------------------------------------------------------------------

    def inject(
        self,
        provider: str | ProviderName,
        fault: Fault,
        *,
        operation: str = "*",
        times: int | None = None,
        probability: float | None = None,
    ) -> FaultRule:
        """Add a fault for ``provider``'s ``operation`` (``"*"`` for all; ``"contacts.*"`` prefix)."""
        rule = FaultRule(
            ProviderName.parse(provider),
            fault,
            operation,
            times,
            probability,
            rng=random.Random(self._rng.random()),
        )
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear_faults(self) -> None:
        with self._lock:
            self._rules.clear()

    def set_rate_limit(self, provider: str | ProviderName, requests: int | None, per_seconds: float = 1.0) -> None:
        """Enforce a rolling-window limit like the vendor's (429 past it); ``None`` removes it."""
        name = ProviderName.parse(provider)
        with self._lock:
            if requests is None:
                self._limits.pop(name, None)
            else:
                self._limits[name] = (requests, RollingWindow(per_seconds))

    # -- counters ----------------------------------------------------------------------------

    def request_count(self, provider: str | ProviderName | None = None, *, status: int | None = None) -> int:
        name = None if provider is None else ProviderName.parse(provider)
        with self._lock:
            return sum(
                1
                for r in self.records
                if (name is None or r.provider == name) and (status is None or r.status == status)
            )

    def _opened(self, sock: socket.socket) -> None:
        with self._lock:
            self.connections_opened += 1
            self._sockets.add(sock)

    def _closed(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(sock)

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._sockets)

    # -- dispatch ----------------------------------------------------------------------------

    def _find(self, raw_path: str) -> tuple[Emulator, str] | None:
        for emulator in self.emulators.values():
            if raw_path == emulator.prefix or raw_path.startswith(emulator.prefix + "/"):
                return emulator, raw_path[len(emulator.prefix) :] or "/"
        return None

    def _pick_fault(self, provider: ProviderName, operation: str) -> Fault | None:
        with self._lock:
            for rule in self._rules:
                if rule.matches(provider, operation) and rule.fire():
                    return rule.fault
        return None

    def _over_limit(self, provider: ProviderName) -> tuple[bool, dict[str, int]] | None:
        with self._lock:
            entry = self._limits.get(provider)
            if entry is None:
                return None
            limit, window = entry
            info = {"limit": limit, "interval_ms": int(window.seconds * 1000)}
            retry = window.take(limit)
            if retry is not None:
                self.rate_limited += 1
                return True, {**info, "remaining": 0, "retry_ms": int(retry * 1000) + 1}
            return False, {**info, "remaining": limit - len(window)}

    def _dispatch(
        self, method: str, target: str, headers: Message, body: bytes
    ) -> tuple[SandboxResponse, float] | None:
        """Route one request; ``None`` means "reset the connection"."""
        if self.latency:
            time.sleep(self.latency)
        parts = urlsplit(target)
        found = self._find(parts.path)
        if found is None:
            return json_response(404, {"message": "unknown vendor prefix"}), 0.0
        emulator, path = found
        req = SandboxRequest(method, path, parse_qs(parts.query, keep_blank_values=True), headers, body)
        matched = emulator.match(method, path)
        route = matched[0] if matched else None
        req.operation = route.operation if route else "unknown"
        fault = self._pick_fault(emulator.provider, req.operation)
        limited = self._over_limit(emulator.provider)
        delay = 0.0
        response: SandboxResponse | None
        if limited is not None and limited[0]:
            info = limited[1]
            response = emulator.error_for(req, 429, retry_after=max(info["retry_ms"] / 1000, 0.001))
            response.headers.update(emulator.rate_limit_headers(0, info["limit"], info["interval_ms"]))
            self._record(emulator, req, response.status, "rate_limit_window")
            return response, 0.0
        if fault is not None and not fault.commit:
            if fault.kind == "reset":
                self._record(emulator, req, 0, "drop")
                return None
            if fault.kind == "expired_token":
                response = emulator.error_for(req, 401)
            elif fault.kind == "rate_limit":
                response = emulator.error_for(req, 429, retry_after=fault.retry_after)
            else:
                response = emulator.error_for(req, fault.status)
            self._record(emulator, req, response.status, fault.kind)
            return response, 0.0
        response = self._invoke(emulator, req, matched)
        if limited is not None:
            info = limited[1]
            response.headers.update(emulator.rate_limit_headers(info["remaining"], info["limit"], info["interval_ms"]))
        if fault is not None:
            if fault.kind == "reset":
                self._record(emulator, req, 0, "reset_after_commit")
                return None
            if fault.kind == "delay":
                delay = fault.seconds
            elif fault.kind == "server_error":
                response = emulator.error_for(req, fault.status)
        self._record(emulator, req, response.status, fault.kind if fault else None)
        return response, delay

    def _invoke(
        self, emulator: Emulator, req: SandboxRequest, matched: tuple[Route, dict[str, str]] | None
    ) -> SandboxResponse:
        if matched is None:
            return emulator.not_found(req)
        route, params = matched
        try:
            return route.handler(req, params)
        except Reply as reply:
            return reply.response
        except Exception:
            log.exception("sandbox %s: handler for %s failed", emulator.provider.value, route.operation)
            return emulator.error_for(req, 500, message="sandbox handler error")

    def _record(self, emulator: Emulator, req: SandboxRequest, status: int, fault: str | None) -> None:
        with self._lock:
            self.records.append(RequestRecord(emulator.provider, req.operation, req.method, req.path, status, fault))

    def faults_fired(self) -> Iterator[tuple[FaultRule, int]]:
        with self._lock:
            rules = list(self._rules)
        for rule in rules:
            yield rule, rule.fired
