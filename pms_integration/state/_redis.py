"""Placeholder: replaced by the real store in this issue."""

from __future__ import annotations

from ..errors import ConfigurationError
from . import StateStore


class RedisStore:
    @classmethod
    def from_url(cls, url: str, *, namespace: str = "") -> StateStore:
        raise ConfigurationError("not built yet")
