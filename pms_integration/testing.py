"""Helpers for testing your own code against pms-integration (a pytest plugin).

Installed as a pytest plugin through the ``pytest11`` entry point, so the fixtures are
available in any project that installs pms-integration - no conftest import needed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from . import _default
from .client import PMSClient

__all__ = ["use_client"]


@contextmanager
def use_client(client: PMSClient) -> Iterator[PMSClient]:
    """Make ``client`` the default client for the block, then restore the previous one.

    The module-level functions (``book_appointment`` and friends) use it inside the block.
    """
    with _default._lock:
        previous = _default._client
        _default._client = client
    try:
        yield client
    finally:
        with _default._lock:
            _default._client = previous
