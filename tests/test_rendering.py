"""What a person sees: terminal text and notebook HTML for statuses, results and errors."""

from __future__ import annotations

import datetime as dt

import pms_integration as pms
from pms_integration.models import Appointment, AppointmentStatus, ProviderName, ReportReceipt

from .conftest import CANARY, full_environ

TZ = dt.timezone(dt.timedelta(hours=-5))
APPT = Appointment(
    ProviderName.HUBSPOT, "11:22", AppointmentStatus.BOOKED,
    dt.datetime(2026, 12, 1, 10, tzinfo=TZ), dt.datetime(2026, 12, 1, 10, 30, tzinfo=TZ),
    "bk-1", "c1", "Cleaning <b>", raw={"secret": "nope"},
)  # fmt: skip


def test_status_list_is_a_list_that_prints_as_a_table() -> None:
    statuses = pms.providers()
    assert isinstance(statuses, list) and len(statuses) == 3
    lines = str(statuses).splitlines()
    assert lines[0].split() == ["PROVIDER", "STATUS", "DETAIL"]
    assert lines[1].startswith("gohighlevel  disabled  missing PMS_GHL_API_KEY")
    html = statuses._repr_html_()
    assert html.startswith("<table>") and html.count("<tr>") == 4


def test_enabled_statuses_render_without_secrets() -> None:
    statuses = pms.PMSClient(environ=full_environ(), env_file=None).providers()
    text = str(statuses) + statuses._repr_html_() + repr(statuses)
    assert "enabled" in text
    for value in CANARY.values():
        assert value not in text


def test_appointment_renders_readably_and_escapes_html() -> None:
    assert repr(APPT) == "<Appointment hubspot 11:22 booked Tue 2026-12-01 10:00-10:30 -0500 ref=bk-1>"
    text = str(APPT)
    assert "when       Tue 2026-12-01 10:00-10:30 -0500" in text
    assert "nope" not in text + repr(APPT)
    html = APPT._repr_html_()
    assert "Cleaning &lt;b&gt;" in html and "<b>" not in html


def test_receipt_and_errors_render() -> None:
    receipt = ReportReceipt(ProviderName.SALESFORCE, "00T000000000001AAA", "pms-report-x", created=False)
    assert "updated" in repr(receipt) and "updated" in str(receipt) and "<table>" in receipt._repr_html_()
    err = pms.ValidationError([("start", "must include a time zone"), ("patient.email", "is <bad>")])
    html = err._repr_html_()
    assert "field start" in html and "is &lt;bad&gt;" in html
