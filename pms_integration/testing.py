"""Helpers for testing your own code against pms-integration, without credentials.

A pytest plugin (entry point ``pytest11``): the ``pms_sandbox`` fixture runs the three vendor
emulators and makes a client pointed at them the default. See docs/testing.md.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from . import _default
from .client import PMSClient
from .errors import ConfigurationError
from .models import ProviderName

if TYPE_CHECKING:
    from .sandbox import Sandbox

__all__ = ["SandboxSession", "as_default", "sandbox_session"]


def __getattr__(name: str) -> Any:
    if name == "use_client":  # its old name, which pms_integration.use_client also had
        warnings.warn(
            "pms_integration.testing.use_client is deprecated; use pms_integration.testing.as_default",
            DeprecationWarning,
            stacklevel=2,
        )
        return as_default
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@contextmanager
def as_default(client: PMSClient) -> Iterator[PMSClient]:
    """Make ``client`` the default client for the block, then put the previous one back."""
    if not isinstance(client, PMSClient):
        raise ConfigurationError(f"as_default needs a PMSClient, not {type(client).__name__}.")
    with _default._lock:
        previous, _default._client = _default._client, client
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
        with PMSClient(environ=env, env_file=None) as client, as_default(client):
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
