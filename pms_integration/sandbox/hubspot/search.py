"""HubSpot's CRM search: the request checks (:func:`parse`) and how a :class:`Query` picks and
orders records (filters, the free-text ``query``, ``sorts``); paging is the handler's."""

from __future__ import annotations

import datetime as _dt
import fnmatch
import re
from typing import Any

import attrs

from ..._time import parse_instant
from .errors import HubSpotError, invalid, no_such_property
from .schema import CALCULATED, QUERY_PROPERTIES, READ_ONLY, is_datetime, known, national_number
from .validation import strings

_OPERATORS = {
    "EQ", "NEQ", "LT", "LTE", "GT", "GTE", "BETWEEN", "IN", "NOT_IN", "HAS_PROPERTY", "NOT_HAS_PROPERTY",
    "CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN",
}  # fmt: skip
_TOKEN = re.compile(r"[A-Za-z0-9*]+")


@attrs.frozen
class Query:
    """A search request, checked (see :func:`parse`)."""

    object_type: str
    groups: list[list[dict[str, Any]]]
    sorts: list[tuple[str, bool]]
    text: str | None
    wanted: list[str]
    limit: int
    offset: int

    def matches(self, record: dict[str, Any], props: dict[str, str]) -> bool:
        """Any filter group matches (all its filters do), and the free text does."""
        if self.groups and not any(all(self._filter(record, props, f) for f in g) for g in self.groups):
            return False
        return not self.text or _query_matches(self.object_type, props, self.text)

    def sort(self, found: list[tuple[dict[str, Any], dict[str, str]]]) -> None:
        for name, descending in reversed(self.sorts):

            def key(pair: tuple[dict[str, Any], dict[str, str]], name: str = name) -> tuple[int, int, Any]:
                return self._sort_key(pair[0], pair[1], name)

            found.sort(key=key, reverse=descending)

    def _filter(self, record: dict[str, Any], props: dict[str, str], f: dict[str, Any]) -> bool:
        name: str = f["propertyName"]
        op: str = f["operator"]
        current = _value(record, props, name) or ""
        value, high = str(f.get("value", "")), str(f.get("highValue", ""))
        if op in ("HAS_PROPERTY", "NOT_HAS_PROPERTY"):
            return bool(current) == (op == "HAS_PROPERTY")
        if is_datetime(self.object_type, name):
            # date-time filters compare instants: epoch milliseconds and ISO-8601 alike
            return _compare(op, _instant(current), _instant(value), _instant(high))
        lowered, values = current.lower(), [str(v).lower() for v in f.get("values") or []]
        if op in ("EQ", "NEQ"):
            return (lowered == value.lower()) == (op == "EQ")
        if op in ("IN", "NOT_IN"):
            return (lowered in values) == (op == "IN")
        if op in ("CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN"):
            return _contains_token(current, value) == (op == "CONTAINS_TOKEN")
        a, b, c = _number_or_text(current), _number_or_text(value), _number_or_text(high)
        if type(a) is not type(b) or (op == "BETWEEN" and type(c) is not type(a)):
            a, b, c = str(a), str(b), str(c)  # a number and a text compare as texts
        return _compare(op, a, b, c)

    def _sort_key(self, record: dict[str, Any], props: dict[str, str], name: str) -> tuple[int, int, Any]:
        value = _value(record, props, name)
        if not value:
            return (1, 0, 0.0)  # records without the property sort last
        instant = _instant(value) if is_datetime(self.object_type, name) else None
        if instant is not None:
            return (0, 0, instant.timestamp() * 1000)
        try:
            return (0, 0, float(value))
        except ValueError:
            return (0, 1, value.lower())


def parse(object_type: str, body: dict[str, Any]) -> Query:
    """A search body checked against HubSpot's limits (5 groups, 6 filters each, 18 in all, ...)."""
    groups = body.get("filterGroups") or []
    if not isinstance(groups, list):
        raise HubSpotError(400, "filterGroups must be a list")
    if len(groups) > 5:
        raise HubSpotError(400, "Too many filter groups (max 5)")
    for group in groups:
        filters = group.get("filters") if isinstance(group, dict) else None
        if not isinstance(filters, list):
            raise HubSpotError(400, "Each filter group needs 'filters'")
        if len(filters) > 6:
            raise HubSpotError(400, "Too many filters in a group (max 6)")
        for f in filters:
            if not isinstance(f, dict) or f.get("operator") not in _OPERATORS:
                raise HubSpotError(400, f"Invalid operator {f.get('operator')!r}")
            name = f.get("propertyName")
            if not isinstance(name, str) or not known(object_type, name):
                raise invalid([no_such_property(str(name))])
    if sum(len(g["filters"]) for g in groups) > 18:
        raise HubSpotError(400, "Too many filters (max 18)")
    limit = body.get("limit", 10)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 200:
        raise HubSpotError(400, "limit must be between 1 and 200")
    after = body.get("after") or "0"
    if not isinstance(after, str) or not after.isdigit():
        raise HubSpotError(400, "after must be a paging cursor from an earlier answer")
    if int(after) + limit > 10_000:
        raise HubSpotError(400, "Search results are limited to 10,000 records per query")
    sorts = _sorts(object_type, body.get("sorts"))
    text = body.get("query")
    if text is not None and (not isinstance(text, str) or len(text) > 3000):
        raise HubSpotError(400, "query must be a string of at most 3000 characters")
    wanted = strings(body.get("properties"))
    return Query(object_type, [g["filters"] for g in groups], sorts, text, wanted, limit, int(after))


def _sorts(object_type: str, value: Any) -> list[tuple[str, bool]]:
    """``sorts`` as (property, descending) pairs.

    The published spec types each entry as a string (a property name, ascending; a leading
    ``-`` sorts descending); HubSpot's guides show ``{"propertyName", "direction"}`` objects.
    Both are accepted.
    """
    if value is None:
        return []
    if not isinstance(value, list):
        raise HubSpotError(400, "sorts must be a list")
    out: list[tuple[str, bool]] = []
    for item in value:
        if isinstance(item, str):
            name, descending = item.lstrip("-"), item.startswith("-")
        elif isinstance(item, dict) and isinstance(item.get("propertyName"), str):
            direction = item.get("direction", "ASCENDING")
            if direction not in ("ASCENDING", "DESCENDING"):
                raise HubSpotError(400, f"Invalid sort direction {direction!r}")
            name, descending = item["propertyName"], direction == "DESCENDING"
        else:
            raise HubSpotError(400, "Each sort is a property name or {propertyName, direction}")
        if not known(object_type, name):
            raise invalid([no_such_property(name)])
        out.append((name, descending))
    return out


def _compare(op: str, a: Any, b: Any, high: Any) -> bool:
    """``a op b`` for the ordering operators (``BETWEEN`` takes ``high`` too); None never matches."""
    if a is None or b is None:
        return False
    if op == "BETWEEN":
        return high is not None and bool(b <= a <= high)
    return bool({"EQ": a == b, "NEQ": a != b, "LT": a < b, "LTE": a <= b, "GT": a > b, "GTE": a >= b}.get(op))


def _instant(value: str) -> _dt.datetime | None:
    """A date-time filter value or property as an instant (None if it is not one)."""
    try:
        return parse_instant(value.strip(), naive_as_utc=True) if value.strip() else None
    except ValueError:  # digits int() cannot read, such as "²"
        return None


def _number_or_text(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text


def _value(record: dict[str, Any], props: dict[str, str], name: str) -> str | None:
    """A property as the index saw it, a calculated one, or a system one (id, created, modified)."""
    source = CALCULATED.get(record["type"], {}).get(name)
    if source is not None:
        return national_number(props[source]) if props.get(source) else None
    if name not in READ_ONLY:
        return props.get(name)
    if name == "hs_object_id":
        return str(record["id"])
    if name in ("createdate", "hs_createdate"):
        return str(record["createdAt"])
    return str(record["updatedAt"])


def _tokens(text: str) -> list[str]:
    return [t.lower() for t in _TOKEN.findall(text)]


def _contains_token(haystack: str, needle: str) -> bool:
    """HubSpot-like CONTAINS_TOKEN: the needle's tokens appear in order (``*`` is a wildcard)."""
    words, wanted = _tokens(haystack), _tokens(needle)
    return bool(wanted) and any(
        all(fnmatch.fnmatchcase(words[start + i], w) for i, w in enumerate(wanted))
        for start in range(len(words) - len(wanted) + 1)
    )


def _query_matches(object_type: str, props: dict[str, str], query: str) -> bool:
    """The free-text query: every word of it starts a word of a default searchable property."""
    words = [w for p in QUERY_PROPERTIES[object_type] for w in _tokens(props.get(p) or "")]
    wanted = _tokens(query)
    return bool(wanted) and all(any(w.startswith(q) for w in words) for q in wanted)
