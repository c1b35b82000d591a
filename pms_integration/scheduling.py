"""Opening hours and free-slot arithmetic, for vendors that store bookings but not availability.

GoHighLevel computes free slots itself. Salesforce and HubSpot keep only busy time (Events,
meetings), so the library combines the practice's opening hours with that busy time:
:class:`OpenHours` reads a weekly schedule such as ``Mon-Fri 08:00-17:00; Sat 09:00-12:00``
and :func:`fit_slots` lays appointments of a given length on a grid inside the open hours,
leaving out every one that overlaps busy time. All arithmetic is on absolute instants, so a
window that crosses a daylight-saving change gives slots at the right wall-clock times.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Iterable, Sequence
from zoneinfo import ZoneInfo

import attrs

__all__ = ["Busy", "OpenHours", "fit_slots"]

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_UTC = _dt.timezone.utc
_DAY = r"(?:mon|tue|wed|thu|fri|sat|sun)[a-z]*"
_RANGE = r"(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})"
_PART = re.compile(rf"^\s*({_DAY})(?:\s*-\s*({_DAY}))?\s+((?:{_RANGE}\s*)+)$", re.IGNORECASE)
_TIMES = re.compile(_RANGE)
_RULE = "weekdays and times like 'Mon-Fri 08:00-17:00; Sat 09:00-12:00' (24-hour clock, ranges may repeat)"


@attrs.frozen
class Busy:
    """Time that is taken: a booking (``appointment_id`` set) or time blocked in the calendar."""

    start: _dt.datetime
    end: _dt.datetime
    appointment_id: str | None = None
    #: the booking reference the library wrote on it, when it is one of ours
    reference: str | None = None

    def overlaps(self, start: _dt.datetime, end: _dt.datetime) -> bool:
        return self.start < end and start < self.end


@attrs.frozen
class OpenHours:
    """A weekly opening schedule: for each weekday (0 = Monday), its open ranges in local time."""

    days: tuple[tuple[tuple[_dt.time, _dt.time], ...], ...]

    @classmethod
    def parse(cls, text: str) -> OpenHours:
        """Read ``Mon-Fri 08:00-17:00; Sat 09:00-12:00`` (a day may have several ranges,
        ``Mon 08:00-12:00 13:00-17:00``); ``ValueError("must be ...")`` when it cannot."""
        days: list[list[tuple[_dt.time, _dt.time]]] = [[] for _ in _DAYS]
        parts = [p for p in re.split(r"[;,]", text or "") if p.strip()]
        if not parts:
            raise ValueError(f"must be {_RULE}")
        for part in parts:
            match = _PART.match(part)
            if not match:
                raise ValueError(f"must be {_RULE}; cannot read {part.strip()[:40]!r}")
            first = _DAYS.index(match.group(1)[:3].lower())
            last = _DAYS.index(match.group(2)[:3].lower()) if match.group(2) else first
            if last < first:
                raise ValueError(f"must be {_RULE}; {part.strip()[:40]!r} runs backwards")
            for h1, m1, h2, m2 in _TIMES.findall(match.group(3)):
                try:
                    opens, closes = _dt.time(int(h1), int(m1)), _dt.time(int(h2), int(m2))
                except ValueError:
                    raise ValueError(f"must be {_RULE}; {part.strip()[:40]!r} has a time that does not exist") from None
                if closes <= opens:
                    raise ValueError(f"must be {_RULE}; in {part.strip()[:40]!r} a range closes before it opens")
                for day in range(first, last + 1):
                    days[day].append((opens, closes))
        return cls(tuple(tuple(sorted(ranges)) for ranges in days))

    def __str__(self) -> str:
        parts: list[str] = []
        day = 0
        while day < len(_DAYS):
            last = day
            while last + 1 < len(_DAYS) and self.days[last + 1] == self.days[day]:
                last += 1
            if self.days[day]:
                span = _DAYS[day].title() + (f"-{_DAYS[last].title()}" if last > day else "")
                parts.append(span + " " + " ".join(f"{a:%H:%M}-{b:%H:%M}" for a, b in self.days[day]))
            day = last + 1
        return "; ".join(parts) or "closed"

    def intervals(
        self, start: _dt.datetime, end: _dt.datetime, zone: _dt.tzinfo
    ) -> list[tuple[_dt.datetime, _dt.datetime]]:
        """The open ranges overlapping ``start``-``end``, as aware datetimes in ``zone``."""
        found = []
        day = start.astimezone(zone).date() - _dt.timedelta(days=1)
        while day <= end.astimezone(zone).date():
            for opens, closes in self.days[day.weekday()]:
                # a local time that does not exist (the spring-forward hour) resolves forward
                a = _local(day, opens, zone)
                b = _local(day, closes, zone)
                if a < end and start < b:
                    found.append((a, b))
            day += _dt.timedelta(days=1)
        return found


def _local(day: _dt.date, time: _dt.time, zone: _dt.tzinfo) -> _dt.datetime:
    """``day`` at ``time`` in ``zone``, normalised through UTC (a skipped time moves forward)."""
    return _dt.datetime.combine(day, time, tzinfo=zone).astimezone(_UTC).astimezone(zone)


def fit_slots(
    open_ranges: Iterable[tuple[_dt.datetime, _dt.datetime]],
    busy: Sequence[Busy],
    *,
    start: _dt.datetime,
    end: _dt.datetime,
    duration: _dt.timedelta,
    step: _dt.timedelta,
    zone: _dt.tzinfo,
) -> list[tuple[_dt.datetime, _dt.datetime]]:
    """Appointments of ``duration`` starting every ``step`` from each open range's opening,
    inside ``start``-``end``, that overlap no busy time; in ``zone``, earliest first."""
    slots = set()
    for opens, closes in open_ranges:
        at = opens.astimezone(_UTC)
        limit = closes.astimezone(_UTC)
        while at + duration <= limit:
            finish = at + duration
            if at >= start and finish <= end and not any(b.overlaps(at, finish) for b in busy):
                slots.add((at, finish))
            at += step
    return [(a.astimezone(zone), b.astimezone(zone)) for a, b in sorted(slots)]


def zone_named(name: str | None) -> _dt.tzinfo | None:
    """The IANA zone ``name``, or None when unset (configuration has already checked it)."""
    return ZoneInfo(name) if name else None
