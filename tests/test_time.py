"""The one wire-timestamp module reads every vendor's shapes and nothing else."""

from __future__ import annotations

import datetime as dt

import pytest

from pms_integration._time import epoch_ms, parse_instant, parse_iso, utc_text

UTC = dt.timezone.utc
NOON = dt.datetime(2031, 3, 4, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "text",
    [
        "2031-03-04T12:00:00Z",  # GoHighLevel, HubSpot
        "2031-03-04T12:00:00.000Z",  # HubSpot
        "2031-03-04T12:00:00.000+0000",  # Salesforce
        "2031-03-04T07:00:00-05:00",  # GoHighLevel v2 with an offset
        "2031-03-04T12:00:00.0000000Z",  # seven fraction digits
        1_930_392_000_000,  # epoch milliseconds, as a number
        "1930392000000",  # and as digits (HubSpot)
    ],
)
def test_every_vendor_shape_reads_as_the_same_instant(text: object) -> None:
    assert parse_instant(text) == NOON


@pytest.mark.parametrize("junk", ["", "soon", "²", "٣", "2031-13-04T12:00:00Z", True, None, [], "9" * 40])
def test_anything_else_is_none_not_an_exception(junk: object) -> None:
    assert parse_instant(junk) is None


def test_naive_text_is_none_unless_the_vendor_means_utc() -> None:
    assert parse_instant("2031-03-04T12:00:00") is None
    assert parse_instant("2031-03-04T12:00:00", naive_as_utc=True) == NOON
    assert parse_iso("2031-03-04T12:00:00") == NOON.replace(tzinfo=None)


def test_writing() -> None:
    local = NOON.astimezone(dt.timezone(dt.timedelta(hours=-5)))
    assert utc_text(local) == "2031-03-04T12:00:00Z"
    assert utc_text(local, milliseconds=True) == "2031-03-04T12:00:00.000Z"
    assert epoch_ms(local) == 1_930_392_000_000
    with pytest.raises(ValueError, match="naive"):
        utc_text(NOON.replace(tzinfo=None))
