"""The one place where wire timestamps are read and written.

Every vendor sends instants in one of a few shapes: ISO-8601 with ``Z`` or an offset (``+00:00``
or Salesforce's ``+0000``), with any number of fraction digits, or epoch milliseconds (as a
number or as digits in a string). :func:`parse_instant` reads them all; :func:`parse_iso` is the
lenient reader behind the models' input, which may return a naive value.
"""

from __future__ import annotations

import datetime as _dt
import re

__all__ = ["UTC", "parse_iso", "parse_instant", "utc_text", "epoch_ms"]

UTC = _dt.timezone.utc
_FRACTION = re.compile(r"\.(\d+)")
_COMPACT_OFFSET = re.compile(r"([+-]\d{2})(\d{2})$")


def parse_iso(value: object) -> _dt.datetime | None:
    """ISO-8601 text to ``datetime`` (naive when the text has no offset), else None."""
    if not isinstance(value, str) or not 10 <= len(value) <= 40:
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    elif len(text) > 19:
        text = _COMPACT_OFFSET.sub(r"\1:\2", text)  # Salesforce's +0000
    # Python 3.10's fromisoformat takes only 3 or 6 fraction digits
    text = _FRACTION.sub(lambda m: "." + (m.group(1) + "000000")[:6], text, count=1)
    try:
        return _dt.datetime.fromisoformat(text)
    except ValueError:
        return None


def parse_instant(value: object, *, naive_as_utc: bool = False) -> _dt.datetime | None:
    """A vendor's timestamp as an aware datetime, or None when it is not one.

    Accepts ISO-8601 text and epoch milliseconds (a number, or a string of digits). Text without
    an offset is None unless ``naive_as_utc`` (HubSpot writes UTC without saying so).
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit() and len(value) <= 16:
        value = int(value.strip())
    if isinstance(value, (int, float)):
        try:
            return _dt.datetime.fromtimestamp(value / 1000, tz=UTC)
        except (OverflowError, OSError, ValueError):
            return None
    parsed = parse_iso(value)
    if parsed is None or parsed.tzinfo is not None:
        return parsed
    return parsed.replace(tzinfo=UTC) if naive_as_utc else None


def utc_text(value: _dt.datetime, *, milliseconds: bool = False) -> str:
    """An aware datetime in UTC with a ``Z``: ``2026-10-05T13:00:00Z`` (or ``...00.000Z``)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("a naive datetime has no place on the wire")
    moved = value.astimezone(UTC)
    if milliseconds:
        return moved.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return moved.strftime("%Y-%m-%dT%H:%M:%SZ")


def epoch_ms(value: _dt.datetime) -> int:
    """An aware datetime as whole epoch milliseconds."""
    return int(value.timestamp() * 1000)
