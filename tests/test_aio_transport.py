"""The async transport (pms_integration._aio_http.AioTransport): the sync transport's rules, awaited.

Each test drives the ordinary (sync) transport or client code with ``_green.run_sync`` inside
``asyncio.run``, as ``pms_integration.aio`` does, so every exchange goes over aiohttp through
``await_only``. The hostile servers are the raw loopback sockets of test_transport_limits;
assertions check that a call *ended* (with the right typed error and verdict), never how fast:
``ends_within`` only gives up, generously, on a call that would otherwise hang the run.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import gzip
import random
import secrets
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time
import tracemalloc
import warnings
import zlib
from collections.abc import Callable
from typing import Any

import pytest

from pms_integration import PMSClient, _green
from pms_integration._aio_http import AioTransport
from pms_integration._http import BearerAuth, Transport
from pms_integration._ratelimit import RateLimiter, Slot
from pms_integration._retry import RetryPolicy, deadline_scope
from pms_integration.config import Secret
from pms_integration.errors import (
    ConfigurationError,
    PMSError,
    RateLimitError,
    ResponseTooLargeError,
    ServerError,
    TransportError,
)
from pms_integration.models import ProviderName
from pms_integration.sandbox import Sandbox
from pms_integration.state import reset_memory_state

from .test_transport_limits import HEADERS_200, RawServer, trickle

TOKEN = "tok-aio-canary-0123456789abcdef"
QUICK = RetryPolicy(max_attempts=3, backoff_initial=0.01, backoff_max=0.02, jitter=0.0)


def aio(url: str, *, timeout: float = 30.0, **kwargs: Any) -> AioTransport:
    kwargs.setdefault("policy", QUICK)
    kwargs.setdefault("sleep", _green.sleep)
    return AioTransport(
        provider=ProviderName.GOHIGHLEVEL,
        base_url=url,
        auth=BearerAuth(Secret(TOKEN)),
        timeout=timeout,
        token_variable="PMS_GHL_API_KEY",
        **kwargs,
    )


def drive(t: Transport, call: Callable[[], Any]) -> Any:
    """``call()`` as an async call on a new loop; the transport is closed inside it afterwards."""

    def body() -> Any:
        try:
            return call()
        finally:
            t.close()

    return asyncio.run(_green.run_sync(body))


def outcome(t: Transport, call: Callable[[], Any], give_up: float = 30.0) -> Any:
    """``drive(t, call)`` in a thread: its result or exception; the test fails if it is still
    running after ``give_up`` seconds (a watchdog against a hang, not a timing assertion)."""
    box: dict[str, Any] = {}
    done = threading.Event()

    def run() -> None:
        try:
            box["value"] = drive(t, call)
        except BaseException as exc:  # handed to the test
            box["value"] = exc
        finally:
            done.set()

    threading.Thread(target=run, daemon=True).start()
    assert done.wait(give_up), f"the call was still running after {give_up} s"
    return box["value"]


def causes(error: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    cause: BaseException | None = error
    while cause is not None and cause not in chain:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    return chain


def assert_no_token(error: BaseException) -> None:
    for cause in causes(error):
        text = f"{cause!s} {cause!r} {vars(cause) if hasattr(cause, '__dict__') else ''}"
        assert TOKEN not in text, type(cause).__name__


def refused_url() -> str:
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens there now


# -- 1. the same bytes on the wire as the sync API -----------------------------------------------


def _scenario(provider: str, sb: Sandbox) -> Callable[[PMSClient], None]:
    def run(c: PMSClient) -> None:
        if provider == "salesforce":
            sb.emulator("salesforce").expire_token()  # type: ignore[attr-defined]  # the OAuth refresh is a form POST
        found = c.find_patient(email="jane@example.com")
        who = {"name": "Jane Doe", "email": "jane@example.com"}
        if provider == "salesforce" and len(found):
            who["contact_id"] = found[0].id
        appt = c.book_appointment(
            {
                "start": "2037-03-09T09:00:00-05:00",
                "duration_minutes": 45,
                "patient": who,
                "title": "Cleaning",
                "notes": "Prefers mornings; é and 😀",
                "reference": f"conv-{provider}-1",
            }
        )
        c.free_slots("2037-03-10T08:00:00-05:00", "2037-03-10T12:00:00-05:00")
        c.update_appointment(appt.id, {"title": "Check-up"})
        c.get_appointment(appt.id)
        c.cancel_appointment(appt.id, reason="patient asked")
        c.push_performance_report(
            {"period_start": "2026-03-02", "period_end": "2026-03-08", "metrics": {"calls_handled": 40}}
        )

    return run


def _same_secrets(mp: pytest.MonkeyPatch) -> None:
    """The sandbox draws ids and tokens from ``secrets``: the same draws for both runs."""
    rng = random.Random(5)
    mp.setattr(secrets, "choice", rng.choice)
    mp.setattr(secrets, "randbelow", rng.randrange)
    mp.setattr(secrets, "token_hex", lambda n=32: rng.randbytes(n).hex())
    mp.setattr(secrets, "token_urlsafe", lambda n=32: base64.urlsafe_b64encode(rng.randbytes(n)).rstrip(b"=").decode())


def _record(provider: str, *, via_aio: bool) -> tuple[list[tuple[Any, ...]], int]:
    reset_memory_state()
    with pytest.MonkeyPatch.context() as mp:
        _same_secrets(mp)
        return _record_here(provider, via_aio=via_aio)


def _record_here(provider: str, *, via_aio: bool) -> tuple[list[tuple[Any, ...]], int]:
    tokens = {name: f"sandbox-{name}-aio-parity" for name in ("gohighlevel", "salesforce", "hubspot")}
    with Sandbox(seed=11, tokens=tokens) as sb:
        seen: list[tuple[Any, ...]] = []
        dispatch = sb._dispatch

        def recording(method: str, target: str, headers: Any, body: bytes) -> Any:
            hdrs = [(k, v) for k, v in headers.items() if k.lower() != "host"]
            assert headers["Host"] == sb.url.split("://", 1)[1]
            seen.append((method, target, hdrs, body))
            return dispatch(method, target, headers, body)

        sb._dispatch = recording  # type: ignore[method-assign]
        env = sb.environ(default_provider=provider)
        if provider == "salesforce":
            env.update(sb.emulator("salesforce").refresh_environ())  # type: ignore[attr-defined]
        client = PMSClient(environ=env, env_file=None, sleep=_green.sleep if via_aio else time.sleep)
        scenario = _scenario(provider, sb)
        if via_aio:
            client._runtime_options = {"transport_class": AioTransport}

            async def main() -> None:
                await _green.run_sync(scenario, client)
                await _green.run_sync(client.close)

            asyncio.run(main())
            assert all(type(a.transport) is AioTransport for a in client._adapters.values())  # type: ignore[attr-defined]
        else:
            with client:
                scenario(client)
        return seen, sb.connections_opened


@pytest.mark.parametrize("provider", ["gohighlevel", "salesforce", "hubspot"])
def test_the_async_transport_sends_the_same_requests_as_the_sync_one(provider: str) -> None:
    sync, _ = _record(provider, via_aio=False)
    awaited, connections = _record(provider, via_aio=True)
    assert len(sync) >= 6
    # method, target (path and query), every header but Host in order, and the body bytes
    for number, (got, expected) in enumerate(zip(awaited, sync)):
        assert got == expected, f"request {number}"
    assert len(awaited) == len(sync)
    assert connections <= 2  # kept alive and reused (one more for Salesforce's token host is fine)


# -- 2. only inside an async call ------------------------------------------------------------------


def test_outside_an_async_call_it_is_a_configuration_error_and_nothing_is_sent() -> None:
    with RawServer(lambda c, s: c.sendall(HEADERS_200 + b'{"ok": true}' + b" " * 8)) as server:
        t = aio(server.url)
        with pytest.raises(ConfigurationError, match=r"pms_integration\.aio"):
            t.request("GET", "/things", operation="read")
        with pytest.raises(ConfigurationError, match=r"pms_integration\.aio"):
            t.send_once("POST", server.url + "/token", operation="refresh", data={"a": "b"})
        t.close()  # no session yet: nothing to do, and no error
        assert server.requests == 0 and t.request_count == 0
        # the same transport works inside one
        assert drive(t, lambda: t.request("GET", "/things", operation="read").json()) == {"ok": True}
        assert server.requests == 1 and t.request_count == 1


# -- 3. the whole request is bounded ---------------------------------------------------------------


@pytest.mark.parametrize(
    "serve",
    [
        pytest.param(lambda c, s: s.wait(30), id="silent"),
        pytest.param(lambda c, s: trickle(c, s, HEADERS_200 + b'{"ok": true}' + b" " * 8), id="trickled-headers"),
        pytest.param(lambda c, s: (c.sendall(HEADERS_200), trickle(c, s, b'{"ok": true}        ')), id="trickled-body"),
    ],
)
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_the_deadline_ends_a_silent_or_trickling_server(serve: Any, method: str) -> None:
    with RawServer(serve) as server:
        t = aio(server.url, timeout=30.0)

        def call() -> None:
            with deadline_scope(1.0):
                t.request(method, "/things", operation="book", reference="bk-aio-slow")

        error = outcome(t, call)
    assert isinstance(error, TransportError), repr(error)
    assert "deadline" in str(error)
    if method == "POST":
        assert error.outcome_unknown and error.reference == "bk-aio-slow"
        assert server.requests == 1  # a create that may have been applied is never sent again
    else:
        assert not error.outcome_unknown
    assert_no_token(error)


def test_the_request_timeout_is_a_total_too() -> None:
    with RawServer(lambda c, s: (c.sendall(HEADERS_200), trickle(c, s, b"{}" + b" " * 18))) as server:
        t = aio(server.url, timeout=1.0, policy=RetryPolicy(max_attempts=1))
        error = outcome(t, lambda: t.request("GET", "/things", operation="read"))
    assert isinstance(error, TransportError), repr(error)
    assert "request timeout" in str(error)


# -- 4. size caps ----------------------------------------------------------------------------------


def _big(
    status: bytes, *, length: bool, size: int = 100 * 1024 * 1024
) -> Callable[[socket.socket, threading.Event], None]:
    def serve(conn: socket.socket, stop: threading.Event) -> None:
        head = b"HTTP/1.1 " + status + b"\r\nContent-Type: text/plain\r\n"
        head += f"Content-Length: {size}\r\n".encode() if length else b"Connection: close\r\n"
        conn.sendall(head + b"\r\n")
        block = b"x" * (1024 * 1024)
        for _ in range(size // len(block)):
            if stop.is_set():
                return
            conn.sendall(block)

    return serve


@pytest.mark.parametrize("length", [True, False], ids=["content-length", "until-close"])
def test_a_100_mb_error_body_is_read_only_up_to_the_excerpt_cap(length: bool) -> None:
    with RawServer(_big(b"500 Internal Server Error", length=length)) as server:
        t = aio(server.url, policy=RetryPolicy(max_attempts=1))
        tracemalloc.start()
        try:
            with deadline_scope(20.0):
                error = outcome(t, lambda: t.request("GET", "/things", operation="read"))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert isinstance(error, ServerError), repr(error)
    assert peak < 50 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"
    assert error.body_excerpt is not None and 0 < len(error.body_excerpt) <= 300


@pytest.mark.parametrize("length", [True, False], ids=["content-length", "until-close"])
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_success_body_over_the_cap_is_a_typed_error_and_not_retried(length: bool, method: str) -> None:
    size = Transport.MAX_BODY_BYTES + 2 * 1024 * 1024
    with RawServer(_big(b"200 OK", length=length, size=size)) as server:
        t = aio(server.url)
        error = outcome(t, lambda: t.request(method, "/things", operation="book", reference="bk-big"))
    assert isinstance(error, ResponseTooLargeError), repr(error)
    assert error.outcome_unknown == (method == "POST")
    assert server.requests == 1


def _answer(
    body: bytes, headers: bytes = b"", status: bytes = b"200 OK"
) -> Callable[[socket.socket, threading.Event], None]:
    def serve(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(
            b"HTTP/1.1 "
            + status
            + b"\r\nContent-Type: application/json\r\n"
            + headers
            + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )

    return serve


def test_a_gzip_bomb_is_refused_on_its_inflated_size() -> None:
    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024))  # 64 MiB inflated, about 64 KB on the wire
    with RawServer(_answer(bomb, b"Content-Encoding: gzip\r\n")) as server:
        t = aio(server.url)
        tracemalloc.start()
        try:
            error = outcome(t, lambda: t.request("GET", "/things", operation="read"))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert isinstance(error, ResponseTooLargeError), repr(error)
    assert peak < 40 * 1024 * 1024
    assert server.requests == 1


@pytest.mark.parametrize(
    "encoded,encoding",
    [
        (gzip.compress(b'{"a": 1}'), b"gzip"),
        (zlib.compress(b'{"a": 1}'), b"deflate"),
        (zlib.compressobj(wbits=-zlib.MAX_WBITS).compress(b'{"a": 1}'), b"deflate-raw"),
    ],
)
def test_gzip_and_deflate_bodies_under_the_cap_are_read(encoded: bytes, encoding: bytes) -> None:
    if encoding == b"deflate-raw":
        raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        encoded, encoding = raw.compress(b'{"a": 1}') + raw.flush(), b"deflate"
    with RawServer(_answer(encoded, b"Content-Encoding: " + encoding + b"\r\n")) as server:
        t = aio(server.url)
        assert drive(t, lambda: t.request("GET", "/things", operation="read").json()) == {"a": 1}


def test_an_error_body_is_read_only_up_to_the_error_cap() -> None:
    body = ('{"message": "' + "é" * Transport.MAX_ERROR_BODY_BYTES + '"}').encode()
    seen: list[int] = []

    def parser(resp: Any) -> Any:
        from pms_integration._http import ErrorInfo

        seen.append(len(resp.text.encode()))
        return ErrorInfo("bad")

    with RawServer(_answer(body, status=b"400 Bad Request")) as server:
        t = aio(server.url, error_parser=parser)
        error = outcome(t, lambda: t.request("PUT", "/things", operation="update"))
    assert isinstance(error, PMSError) and error.__class__.__name__ == "InvalidRequestError", repr(error)
    assert seen and seen[0] <= Transport.MAX_ERROR_BODY_BYTES + 3


# -- 5. redirects, refused connections, resets: the sync verdicts ----------------------------------


def test_a_redirect_is_never_followed_and_the_target_sees_no_credential() -> None:
    with RawServer(_answer(b"{}")) as target:

        def redirect(conn: socket.socket, stop: threading.Event) -> None:
            conn.sendall(
                f"HTTP/1.1 307 Temporary Redirect\r\nLocation: {target.url}/elsewhere\r\n"
                "Content-Length: 0\r\nConnection: close\r\n\r\n".encode()
            )

        with RawServer(redirect) as server:
            sync = Transport(
                provider=ProviderName.GOHIGHLEVEL,
                base_url=server.url,
                auth=BearerAuth(Secret(TOKEN)),
                timeout=10,
                token_variable="PMS_GHL_API_KEY",
                policy=QUICK,
            )
            with pytest.raises(PMSError) as expected:
                sync.request("POST", "/things", operation="book", json={"a": 1})
            t = aio(server.url)
            error = outcome(t, lambda: t.request("POST", "/things", operation="book", json={"a": 1}))
            t2 = aio(server.url)
            answer = drive(
                t2, lambda: t2.send_once("POST", server.url + "/token", operation="refresh", data={"a": "b"})
            )
    assert type(error) is type(expected.value) and str(error) == str(expected.value)
    assert answer.status == 307 and answer.header("location") == f"{target.url}/elsewhere"
    assert target.requests == 0
    assert server.requests == 3  # the sync and the async create, once each, and the token call


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_refused_port_was_never_sent_so_even_a_create_is_retried(method: str) -> None:
    t = aio(refused_url())
    error = outcome(t, lambda: t.request(method, "/things", operation="book", reference="bk-refused"))
    assert isinstance(error, TransportError), repr(error)
    assert "could not be reached" in str(error)
    assert not error.outcome_unknown and error.reference is None
    assert t.request_count == QUICK.max_attempts  # nothing left, so every attempt was safe


def test_a_name_that_does_not_resolve_was_never_sent() -> None:
    t = aio("http://pms-integration-aio-test.invalid", policy=RetryPolicy(max_attempts=1))
    error = outcome(t, lambda: t.request("POST", "/things", operation="book", reference="bk-dns"))
    assert isinstance(error, TransportError), repr(error)
    assert not error.outcome_unknown and error.reference is None


def _reset(conn: socket.socket, stop: threading.Event) -> None:
    """Abort the connection (RST) once the request's head was read."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def test_a_reset_after_a_create_was_read_is_outcome_unknown_and_not_resent() -> None:
    with RawServer(_reset) as server:
        t = aio(server.url)
        error = outcome(t, lambda: t.request("POST", "/things", operation="book", reference="bk-reset", json={}))
    assert isinstance(error, TransportError), repr(error)
    assert "lost the connection" in str(error)
    assert error.outcome_unknown and error.reference == "bk-reset"
    assert server.requests == 1 and t.request_count == 1
    assert_no_token(error)


def test_a_reset_read_is_retried() -> None:
    answers = iter([_reset, _answer(b'{"ok": 1}')])
    with RawServer(lambda c, s: next(answers)(c, s)) as server:
        t = aio(server.url)
        assert drive(t, lambda: t.request("GET", "/things", operation="read").json()) == {"ok": 1}
    assert server.requests == 2 and t.request_count == 2


def test_a_local_error_is_not_retried() -> None:
    t = aio("http://127.0.0.1:1")
    error = outcome(t, lambda: t.request("GET", "/things", operation="read", headers={"X-Bad": "a\r\nb"}))
    assert isinstance(error, TransportError), repr(error)
    assert "failed before sending" in str(error)
    assert not error.outcome_unknown and t.request_count == 1


class _TellingLimiter(RateLimiter):
    """A generous limiter that says when a slot comes back."""

    def __init__(self) -> None:
        super().__init__(1000, 1.0)
        self.released = threading.Event()
        self.taken = 0
        self.returned = 0

    def acquire(self, timeout: float | None = None) -> Slot:
        self.taken += 1
        return super().acquire(timeout)

    def release(self, slot: Slot) -> None:
        self.returned += 1
        super().release(slot)
        self.released.set()


def test_the_slot_goes_back_when_the_headers_are_in_not_after_the_body() -> None:
    limiter = _TellingLimiter()

    def serve(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(HEADERS_200)
        # the body only follows once the slot is back: released after it, the call would hang
        if limiter.released.wait(20):
            conn.sendall(b'{"ok": true}' + b" " * 8)

    with RawServer(serve) as server:
        t = aio(server.url, limiter=limiter)
        assert outcome(t, lambda: t.request("GET", "/things", operation="read").json()) == {"ok": True}
    # a request that never got an answer gives its slot back too
    t = aio(refused_url(), limiter=limiter)
    assert isinstance(outcome(t, lambda: t.request("GET", "/things", operation="read")), TransportError)
    assert limiter.taken == limiter.returned == 1 + QUICK.max_attempts


def test_a_cancelled_call_gives_its_slot_back_and_drops_its_connection() -> None:
    limiter = _TellingLimiter()
    arrived, hung_up = threading.Event(), threading.Event()

    def serve(conn: socket.socket, stop: threading.Event) -> None:
        arrived.set()
        try:
            if conn.recv(65536) == b"":  # nothing more is sent: this returns when the client hangs up
                hung_up.set()
        except OSError:
            hung_up.set()

    with RawServer(serve) as server:
        t = aio(server.url, limiter=limiter)

        async def main() -> None:
            call = asyncio.ensure_future(
                _green.run_sync(lambda: t.request("POST", "/things", operation="book", reference="bk-cancel"))
            )
            assert await asyncio.get_running_loop().run_in_executor(None, arrived.wait, 20)
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            await _green.run_sync(t.close)

        asyncio.run(main())
        assert hung_up.wait(20)
    assert limiter.taken == limiter.returned == 1
    assert server.requests == 1


def _self_signed(tmp: Any) -> tuple[str, str]:
    cert, key = str(tmp / "cert.pem"), str(tmp / "key.pem")
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            key,
            "-out",
            cert,
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


class TlsServer:
    """Answers ``{"ok": 1}`` to each request over TLS on 127.0.0.1 (a failed handshake is skipped)."""

    def __init__(self, cert: str, key: str) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.sock = context.wrap_socket(socket.create_server(("127.0.0.1", 0)), server_side=True)
        self.sock.settimeout(0.2)
        self.url = f"https://127.0.0.1:{self.sock.getsockname()[1]}"
        self.answered = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> TlsServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (OSError, ssl.SSLError):
                continue  # a timeout, or a client that refused the certificate
            with conn:
                try:
                    conn.settimeout(5)
                    head = b""
                    while b"\r\n\r\n" not in head:
                        data = conn.recv(65536)
                        if not data:
                            break
                        head += data
                    if head:
                        conn.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 9\r\nConnection: close\r\n\r\n{"ok": 1}')
                        self.answered += 1
                except OSError:
                    continue


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a certificate")
def test_tls_is_verified_as_the_sync_transport_verifies_it(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = _self_signed(tmp_path)
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    with TlsServer(cert, key) as server:
        # an unknown certificate: refused by both, with the same typed error
        sync = Transport(
            provider=ProviderName.GOHIGHLEVEL,
            base_url=server.url,
            auth=BearerAuth(Secret(TOKEN)),
            timeout=10,
            token_variable="PMS_GHL_API_KEY",
            policy=RetryPolicy(max_attempts=1),
        )
        with pytest.raises(TransportError) as expected:
            sync.request("POST", "/things", operation="book", reference="bk-tls")
        t = aio(server.url, policy=RetryPolicy(max_attempts=1))
        error = outcome(t, lambda: t.request("POST", "/things", operation="book", reference="bk-tls"))
        assert type(error) is TransportError and str(error) == str(expected.value), repr(error)
        assert error.outcome_unknown == expected.value.outcome_unknown
        assert server.answered == 0
        # trusted through REQUESTS_CA_BUNDLE, read when the transport is made
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", cert)
        t = aio(server.url)
        assert drive(t, lambda: t.request("GET", "/things", operation="read").json()) == {"ok": 1}
        assert server.answered == 1


# -- 6. waits the vendor asked for are awaited ------------------------------------------------------


@pytest.mark.parametrize(
    "status,cls", [(b"429 Too Many Requests", RateLimitError), (b"503 Service Unavailable", ServerError)]
)
def test_retry_after_is_waited_out_with_the_loop_free(status: bytes, cls: type[PMSError]) -> None:
    answers = iter([_answer(b"{}", b"Retry-After: 1\r\n", status), _answer(b'{"ok": 2}')])
    waits: list[tuple[float, bool]] = []
    loop_ran: list[int] = []

    def sleep(seconds: float) -> None:
        waits.append((seconds, _green.in_async()))
        before = len(ticks)
        _green.sleep(seconds)
        loop_ran.append(len(ticks) - before)

    ticks: list[None] = []

    with RawServer(lambda c, s: next(answers)(c, s)) as server:
        t = aio(server.url, sleep=sleep)

        async def main() -> Any:
            done = asyncio.Event()

            async def ticker() -> None:
                while not done.is_set():
                    ticks.append(None)
                    await asyncio.sleep(0)

            tick = asyncio.create_task(ticker())
            try:
                return await _green.run_sync(lambda: t.request("GET", "/things", operation="read").json())
            finally:
                done.set()
                await tick
                await _green.run_sync(t.close)

        assert asyncio.run(main()) == {"ok": 2}
    assert waits == [(1.0, True)]
    assert loop_ran[0] > 0  # other coroutines ran while the call waited: the wait was awaited
    assert server.requests == 2


# -- 7. the session: reused, closed, a new one for a new loop ---------------------------------------


def _keep_alive(conn: socket.socket, stop: threading.Event) -> None:
    """Answer every request on the connection until the client closes it."""
    while True:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
        head = b""
        while b"\r\n\r\n" not in head:
            data = conn.recv(65536)
            if not data:
                return
            head += data


def test_one_session_per_loop_reused_and_closed_without_warnings() -> None:
    with RawServer(_keep_alive) as server:
        t = aio(server.url)

        def twice() -> None:
            t.request("GET", "/a", operation="read")
            t.request("GET", "/b", operation="read")

        with warnings.catch_warnings():
            warnings.simplefilter("error", ResourceWarning)
            drive(t, twice)  # closed inside the async call
            drive(t, twice)  # a new loop: a new session, closed again
            # left open, then closed outside any async call once its loop is gone: no error
            asyncio.run(_green.run_sync(twice))
            t.close()
            t.close()
            gc.collect()
        assert t.request_count == 6
        assert server.requests == 3  # one connection per session, kept alive for both requests


def test_a_secret_never_reaches_an_error_or_its_causes() -> None:
    garbled = _answer(b"", status=b"XYZ")  # not an HTTP status line
    with RawServer(lambda c, s: garbled(c, s)) as server:
        t = aio(server.url, policy=RetryPolicy(max_attempts=1))
        error = outcome(t, lambda: t.request("GET", "/things", operation="read"))
    assert isinstance(error, TransportError), repr(error)
    assert_no_token(error)
