"""Scrubbing of secrets out of text that may reach a log, an exception or a response.

:func:`redact` masks free text, :func:`redact_data` JSON-ready data, :func:`redact_path` only whole
segments of the caller's own field paths, :func:`redact_raw` a model's vendor ``raw`` (so a secret
reading ``2031`` never masks a start time). Where and why: docs/errors.md, "What is masked, and where".
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, quote_plus

__all__ = ["redact", "redact_data", "redact_path", "redact_raw", "register_secret", "excerpt", "MASK"]

MASK = "[redacted]"

# Keys whose value is a credential, in "key=value", "key: value" and JSON/dict forms.
_KEYS = r"access_token|refresh_token|id_token|client_secret|api_key|apikey|password|token"
_KEY_VALUE = re.compile(
    r"(?i)(?P<key>(?:" + _KEYS + r")(?P<q>\\?[\"']?)\s*(?P<sep>[:=])\s*)"
    r"(?!\[redacted\])(?:"  # a value masked already stays as it is
    r"\\\"(?P<edq>(?:[^\"\\]|\\(?!\"))*)\\\""  # an escaped-quoted value (JSON inside a JSON string)
    r"|\"(?P<dq>(?:[^\"\\]|\\.)*)\""  # a double-quoted (JSON) string
    r"|'(?P<sq>[^'\\]*)'"  # a single-quoted (Python repr) string
    r"|(?P<bare>[^\s\"'\\,;&}\])]+)"  # a bare value: query strings, forms, numbers, true
    r")"
)
_TOKEN_LIKE = re.compile(r"[0-9_]")
_CREDENTIAL_KEY = re.compile(r"(?i)(?:" + _KEYS + r")")
_BEARER = re.compile(r"(?i)\b(bearer\s+)([^\s\"'\\,;()]+)")
_PROSE_WORD = re.compile(r"[a-z]{1,15}")
# Shapes of vendor tokens; none of their characters is a quote or a backslash.
_SHAPES = (
    re.compile(r"pat-(?:na|eu|ap)\d-[0-9a-fA-F-]{8,}"),
    re.compile(r"pit-[0-9a-fA-F-]{8,}"),
    re.compile(r"00D[0-9A-Za-z]{12,15}![0-9A-Za-z._]{8,}"),
    re.compile(r"eyJ[0-9A-Za-z_-]{8,}\.[0-9A-Za-z_-]{8,}(?:\.[0-9A-Za-z_-]*)?"),
)

_lock = threading.Lock()
# Secrets register their plain values (and the forms they take inside JSON text and URLs); the
# set only ever grows within a process, which is the safe direction (a rotated-out token is
# still scrubbed).
_known: set[str] = set()
# The plain values alone, for the whole-segment match of :func:`redact_path`.
_plain: set[str] = set()
# Shorter values are not worth masking in free text (the configuration refuses them anyway).
_MIN_LENGTH = 4


def register_secret(value: str) -> None:
    """Remember ``value`` so :func:`redact` masks it wherever it appears in free text."""
    if not isinstance(value, str) or len(value) < _MIN_LENGTH:
        return
    forms = {value, json.dumps(value)[1:-1], quote(value, safe=""), quote_plus(value, safe="")}
    with _lock:
        _plain.add(value)
        _known.update(f for f in forms if len(f) >= _MIN_LENGTH)


def _known_longest_first() -> list[str]:
    with _lock:
        return sorted(_known, key=len, reverse=True)


def _mask_pair(m: re.Match[str]) -> str:
    key = m.group("key")
    if m.group("edq") is not None:
        return f'{key}\\"{MASK}\\"'
    if m.group("dq") is not None:
        return f'{key}"{MASK}"'
    if m.group("sq") is not None:
        return f"{key}'{MASK}'"
    # A bare value after a quoted key is a JSON number or literal: keep the document valid.
    if m.group("q"):
        return f'{key}"{MASK}"'
    bare = m.group("bare")
    if m.group("sep") == ":" and not _TOKEN_LIKE.search(bare) and len(bare) < 16:
        return m.group(0)  # prose ("a token: anyone who ..."), not a credential
    return key + MASK


def _mask_bearer(m: re.Match[str]) -> str:
    if _PROSE_WORD.fullmatch(m.group(2)):
        return m.group(0)  # "a bearer token": a word, not a credential
    return m.group(1) + MASK


def redact(text: str) -> str:
    """Return free ``text`` with every registered secret and token-like string masked."""
    if not text:
        return text
    if not isinstance(text, str):
        text = str(text)
    for value in _known_longest_first():
        if value in text:
            text = text.replace(value, MASK)
    text = _KEY_VALUE.sub(_mask_pair, text)
    text = _BEARER.sub(_mask_bearer, text)
    for pattern in _SHAPES:
        text = pattern.sub(MASK, text)
    return text


def redact_data(value: Any) -> Any:
    """A JSON-ready copy of ``value`` with every string (keys included) passed through :func:`redact`.

    Non-finite floats become ``None`` (JSON has no NaN); anything that is not a JSON type is
    shown as its redacted text.
    """
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {
            redact(str(k)): MASK if _CREDENTIAL_KEY.fullmatch(str(k)) and v not in (None, "") else redact_data(v)
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [redact_data(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return redact(str(value))


def redact_raw(data: Any, *, keep: bool = True) -> Any:
    """A model's JSON data as it is, but its vendor ``raw`` part redacted (or, ``keep=False``, left out)."""
    if isinstance(data, dict) and "raw" in data:
        if keep:
            data["raw"] = redact_data(data["raw"])
        else:
            del data["raw"]
    return data


def redact_path(path: str) -> str:
    """Mask the segments of a dotted field path (or a whole reference) that *are* secrets.

    ``metrics.2031_calls`` stays as it is even if ``2031`` were registered; a caller who sent
    a token as a JSON key (``{"<token>": 1}``) does not get it echoed back.
    """
    if not path:
        return path
    with _lock:
        plain = [v for v in _plain if v in path]
    for value in sorted(plain, key=len, reverse=True):
        path = re.sub(r"(?:^|(?<=[.\[]))" + re.escape(value) + r"(?=[.\[\]]|$)", MASK, path)
    return path


def excerpt(text: str, limit: int = 200) -> str:
    """A short, single-line, redacted excerpt of a response body for error messages.

    Redacted before it is cut (a token straddling the cut would no longer match as a whole
    and would leak its first part) and again after.
    """
    scan = limit * 20 + 1024
    cut = len(text) > scan
    if cut:
        text = text[:scan]  # a huge body: only its start can be shown, so only its start is read
    flat = " ".join(text.split())
    if cut and " " in flat:
        flat = flat.rsplit(" ", 1)[0]  # the last word may be a token cut in half
    flat = redact(flat)
    if len(flat) > limit:
        flat = flat[: limit - 1] + "…"
    return redact(flat)
