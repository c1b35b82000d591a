"""Scrubbing of secrets and personal data out of text that may reach a log or an exception.

Every token the library is configured with is registered here (see :class:`config.Secret`), so
any string built from a vendor response or a library exception can be passed through
:func:`redact` before it is shown. Patterns catch bearer headers and the shapes of well-known
vendor tokens even when they were never configured (a token echoed back by a vendor, say).
"""

from __future__ import annotations

import re
import threading

__all__ = ["redact", "register_secret", "excerpt"]

_MASK = "[redacted]"

_PATTERNS = (
    re.compile(r"(?i)(bearer\s+)[^\s\"',;]+"),
    re.compile(r"(?i)((?:access_token|refresh_token|client_secret|api_key|apikey|token)\"?\s*[:=]\s*\"?)[^\s\"',;&]+"),
    re.compile(r"pat-(?:na|eu|ap)\d-[0-9a-fA-F-]{8,}"),
    re.compile(r"pit-[0-9a-fA-F-]{8,}"),
    re.compile(r"00D[0-9A-Za-z]{12,15}![0-9A-Za-z._]{8,}"),
    re.compile(r"eyJ[0-9A-Za-z_-]{8,}\.[0-9A-Za-z_-]{8,}(?:\.[0-9A-Za-z_-]*)?"),
)

_lock = threading.Lock()
# Secrets register their plain values; the set only ever grows within a process, which is
# the safe direction (a rotated-out token is still scrubbed).
_known: set[str] = set()


def register_secret(value: str) -> None:
    """Remember ``value`` so :func:`redact` masks it wherever it appears."""
    if len(value) >= 4:
        with _lock:
            _known.add(value)


def redact(text: str) -> str:
    """Return ``text`` with every registered secret and token-like string masked."""
    if not text:
        return text
    with _lock:
        known = sorted(_known, key=len, reverse=True)
    for value in known:
        if value in text:
            text = text.replace(value, _MASK)
    for pattern in _PATTERNS:
        if pattern.groups:
            text = pattern.sub(lambda m: m.group(1) + _MASK, text)
        else:
            text = pattern.sub(_MASK, text)
    return text


def excerpt(text: str, limit: int = 200) -> str:
    """A short, single-line, redacted excerpt of a response body for error messages.

    Redacted before it is cut (a token straddling the cut would no longer match as a whole
    and would leak its first part) and again after.
    """
    flat = redact(" ".join(text.split()))
    if len(flat) > limit:
        flat = flat[: limit - 1] + "…"
    return redact(flat)
