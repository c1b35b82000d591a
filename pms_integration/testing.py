"""Helpers for testing your own code against pms-integration, without credentials.

Installed as a pytest plugin (entry point ``pytest11``), so in any project that installs
pms-integration the ``pms_sandbox`` fixture is available with no conftest import::

    def test_my_bot_books(pms_sandbox):
        my_bot.handle("book me Tuesday 10am")          # calls pms_integration.book_appointment
        assert len(pms_sandbox.state("hubspot")["bookings"]) == 1

    @pytest.mark.pms_provider("salesforce")              # the default provider for this test
    def test_salesforce_flow(pms_sandbox): ...

The fixture starts a :class:`~pms_integration.sandbox.Sandbox` on a free loopback port, builds a
:class:`~pms_integration.PMSClient` pointed at it, and makes that client the default for the
test, so the module-level functions use it. Everything is torn down afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from . import _default
from .client import PMSClient

if TYPE_CHECKING:
    from .sandbox import Sandbox

__all__ = ["SandboxSession", "sandbox_session", "use_client"]


@contextmanager
def use_client(client: PMSClient) -> Iterator[PMSClient]:
    """Make ``client`` the default client for the block, then restore the previous one."""
    if not isinstance(client, PMSClient):
        from .errors import ConfigurationError

        raise ConfigurationError(f"use_client needs a PMSClient, not {type(client).__name__}.")
    with _default._lock:
        previous = _default._client
        _default._client = client
    try:
        yield client
    finally:
        with _default._lock:
            _default._client = previous


class SandboxSession:
    """A running sandbox and a client configured against it (what ``pms_sandbox`` yields)."""

    def __init__(self, sandbox: Sandbox, client: PMSClient, environ: dict[str, str]) -> None:
        self.sandbox = sandbox
        self.client = client
        self.environ = environ

    def state(self, provider: str) -> dict[str, Any]:
        """The emulator's records for ``provider`` (bookings, notes, tasks, ...)."""
        return self.sandbox.state(provider)

    def __repr__(self) -> str:
        return f"<SandboxSession {self.sandbox.url}>"


def _check_session_arguments(default_provider: object, ghl_api_version: object, seed: object, environ: object) -> None:
    """Misuse is a ConfigurationError naming the argument, before any server starts."""
    from .errors import ConfigurationError
    from .models import ProviderName

    problems: list[str] = []
    if default_provider is not None:
        try:
            ProviderName.parse(default_provider)
        except ValueError:
            problems.append("default_provider must be gohighlevel (ghl), salesforce, hubspot or None")
    if ghl_api_version not in ("v1", "v2"):
        problems.append("ghl_api_version must be 'v1' or 'v2'")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        problems.append("seed must be an int or None")
    if environ is not None and (
        not isinstance(environ, Mapping)
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in environ.items())
    ):
        problems.append("environ must be a mapping of PMS_* names to strings")
    if problems:
        raise ConfigurationError("sandbox_session: " + "; ".join(problems) + ".", problems=problems)


@contextmanager
def sandbox_session(
    *,
    default_provider: str | None = None,
    ghl_api_version: str = "v2",
    seed: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> Iterator[SandboxSession]:
    """A sandbox plus a default client pointed at it, for use outside pytest too.

    ``environ`` adds or overrides ``PMS_*`` variables (``{"PMS_MAX_ATTEMPTS": "1"}``, say).
    """
    _check_session_arguments(default_provider, ghl_api_version, seed, environ)
    from .sandbox import Sandbox

    with Sandbox(seed=seed) as sandbox:
        env = sandbox.environ(ghl_api_version=ghl_api_version, default_provider=default_provider)
        env.update(environ or {})
        with PMSClient(environ=env, env_file=None) as client, use_client(client):
            yield SandboxSession(sandbox, client, env)


try:
    import pytest
except ImportError:  # pragma: no cover - the helpers above work without pytest
    pass
else:

    def pytest_configure(config: pytest.Config) -> None:
        config.addinivalue_line(
            "markers", "pms_provider(name): the default provider of the pms_sandbox fixture's client"
        )
        config.addinivalue_line(
            "markers", "pms_environ(mapping): extra PMS_* variables for the pms_sandbox fixture's client"
        )

    @pytest.fixture
    def pms_sandbox(request: pytest.FixtureRequest) -> Iterator[SandboxSession]:
        """A running sandbox of all three vendors and a default client pointed at it."""
        marker = request.node.get_closest_marker("pms_provider")
        provider = marker.args[0] if marker and marker.args else None
        env_marker = request.node.get_closest_marker("pms_environ")
        extra = dict(env_marker.args[0]) if env_marker and env_marker.args else {}
        with sandbox_session(default_provider=provider, environ=extra) as session:
            yield session
