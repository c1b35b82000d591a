"""A real ``redis-server`` for the tests, on a free loopback port, never a fake.

``.ci/run`` installs Debian's ``redis-server`` package when it is missing and starts one,
exporting ``PMS_TEST_REDIS_URL``; without that variable the tests start their own from the
binary on ``PATH``. ``RedisServer`` is also used directly by tests that stop and restart
Redis mid-run (they need one of their own). Where neither exists the Redis tests skip, and with
``PMS_REQUIRE_REDIS=1`` (set by ``.ci/run``) such a skip fails the run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

REQUIRE_REDIS = "PMS_REQUIRE_REDIS"
SKIP_REASON = "redis-server is not installed (apt-get install redis-server) and PMS_TEST_REDIS_URL is not set"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """One ``redis-server`` process of our own: no persistence, loopback only."""

    def __init__(self, port: int | None = None) -> None:
        self.binary = shutil.which("redis-server")
        self.port = port or free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="pms-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def available(self) -> bool:
        return self.binary is not None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 20.0) -> RedisServer:
        """Start the server and wait until it answers PING (a readiness check, not a timing one)."""
        assert self.binary is not None, SKIP_REASON
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.directory),
                "--protected-mode", "yes",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        give_up = time.monotonic() + timeout
        while not self.ping():
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode} on port {self.port}")
            if time.monotonic() > give_up:
                raise RuntimeError(f"redis-server did not answer on port {self.port} within {timeout} s")
            time.sleep(0.02)
        return self

    def ping(self) -> bool:
        """A raw RESP PING over a socket (no client library needed)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as conn:
                conn.sendall(b"*1\r\n$4\r\nPING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        """Kill the server at once (as a crash or an outage would), and wait for it to be gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)
        self.process = None

    def close(self) -> None:
        self.stop()
        with contextlib.suppress(OSError):
            shutil.rmtree(self.directory)


def external_url() -> str | None:
    """The URL of a server ``.ci/run`` (or the developer) started, if any."""
    return os.environ.get("PMS_TEST_REDIS_URL") or None
