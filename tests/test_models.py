from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from pms_integration.errors import ValidationError
from pms_integration.models import (
    AppointmentRequest,
    AppointmentUpdate,
    Patient,
    PerformanceReport,
    structure,
    unstructure,
    validate_appointment_id,
)

NY = ZoneInfo("America/New_York")


def booking(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "start": "2030-03-05T10:00:00-05:00",
        "patient": {"name": "Jane Doe", "email": "jane@example.com"},
    }
    data.update(overrides)
    return data


def fields_of(exc: pytest.ExceptionInfo[ValidationError]) -> list[str]:
    return exc.value.fields


def test_dict_input_is_structured_with_defaults() -> None:
    req = structure(booking(duration_minutes=45, reference="conv-42"), AppointmentRequest)
    assert req.end == dt.datetime(2030, 3, 5, 10, 45, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    assert req.duration_minutes == 45
    assert req.reference == "conv-42"
    assert req.title == "Dental appointment"


def test_reference_is_generated_when_absent_and_unique() -> None:
    a, b = structure(booking(), AppointmentRequest), structure(booking(), AppointmentRequest)
    assert a.reference.startswith("bk-") and a.reference != b.reference


def test_timezone_comes_from_zoneinfo_start() -> None:
    req = AppointmentRequest(start=dt.datetime(2026, 3, 8, 9, 0, tzinfo=NY), patient=Patient(phone="+15555550123"))
    assert req.timezone == "America/New_York"
    assert req.end is not None and req.end.utcoffset() == dt.timedelta(hours=-4)  # DST began that morning


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (booking(start="2030-03-05T10:00:00"), "start"),
        (booking(end="2030-03-05T09:00:00-05:00"), "end"),
        (booking(patient={"name": "No Contact"}), "patient.email"),
        (booking(patient={"email": "not-an-email"}), "patient.email"),
        (booking(patient={"phone": "555-0123"}), "patient.phone"),
        (booking(duration_minutes=2), "duration_minutes"),
        (booking(duration_minutes=24 * 60), "duration_minutes"),
        (booking(duration_minutes="30"), "duration_minutes"),
        (booking(title=123), "title"),
        (booking(title="x" * 201), "title"),
        (booking(title="line\r\nbreak"), "title"),
        (booking(timezone="Mars/Olympus"), "timezone"),
        (booking(reference="../etc"), "reference"),
        (booking(color="blue"), "color"),
        (booking(patient={"email": "a@b.co", "shoe": 9}), "patient.shoe"),
        (booking(start=12345), "start"),
        (booking(patient="jane"), "patient"),
        (booking(extra={"x": object()}), "extra"),
        ({"patient": {"email": "a@b.co"}}, "start"),
    ],
)
def test_each_bad_field_is_named(data: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as exc:
        structure(data, AppointmentRequest)
    assert field in fields_of(exc), exc.value.errors
    assert field in str(exc.value)


def test_all_bad_fields_are_listed_at_once() -> None:
    with pytest.raises(ValidationError) as exc:
        structure(booking(start="2030-03-05T10:00:00", patient={"email": "bad"}, color="x", duration_minutes=True), AppointmentRequest)
    assert set(fields_of(exc)) == {"start", "patient.email", "color", "duration_minutes"}


def test_validation_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        structure({"nope": 1}, AppointmentRequest)


def test_direct_construction_validates_too() -> None:
    with pytest.raises(ValidationError) as exc:
        AppointmentRequest(start=dt.datetime(2026, 1, 1, 9), patient=Patient(email="a@b.co"))
    assert fields_of(exc) == ["start"]
    with pytest.raises(ValidationError) as exc2:
        Patient(email=42)  # type: ignore[arg-type]
    assert fields_of(exc2) == ["email"]


def test_non_mapping_input() -> None:
    with pytest.raises(ValidationError):
        structure(["start"], AppointmentRequest)


def test_phone_is_normalised_to_e164() -> None:
    assert Patient(phone="+1 (555) 555-0123").phone == "+15555550123"
    assert Patient(phone="0044 20 7946 0958").phone == "+442079460958"


def test_patient_names() -> None:
    p = Patient(name="Jane van Doe", email="j@x.io")
    assert (p.given_name, p.family_name, p.display_name) == ("Jane", "van Doe", "Jane van Doe")


def test_z_suffix_is_accepted() -> None:
    req = structure(booking(start="2030-03-05T15:00:00Z"), AppointmentRequest)
    assert req.start.utcoffset() == dt.timedelta(0)


def test_end_and_duration_must_agree() -> None:
    with pytest.raises(ValidationError) as exc:
        structure(booking(end="2030-03-05T10:30:00-05:00", duration_minutes=45), AppointmentRequest)
    assert fields_of(exc) == ["duration_minutes"]
    ok = structure(booking(end="2030-03-05T10:30:00-05:00", duration_minutes=30), AppointmentRequest)
    assert ok.duration_minutes == 30


def test_update_needs_length_with_new_start() -> None:
    with pytest.raises(ValidationError) as exc:
        structure({"start": "2030-03-06T10:00:00-05:00"}, AppointmentUpdate)
    assert fields_of(exc) == ["end"]
    upd = structure({"start": "2030-03-06T10:00:00-05:00", "duration_minutes": 60}, AppointmentUpdate)
    assert upd.end is not None and upd.end.hour == 11
    with pytest.raises(ValidationError):
        structure({}, AppointmentUpdate)
    assert structure({"title": "Crown fitting"}, AppointmentUpdate).title == "Crown fitting"


def test_report_defaults_and_checks() -> None:
    rep = structure(
        {"period_start": "2026-11-01", "period_end": "2026-11-07", "metrics": {"calls_handled": 142, "conversion_rate": 0.261}},
        PerformanceReport,
    )
    assert rep.report_id == "pms-report-2026-11-01-2026-11-07"
    assert rep.title and "2026-11-01" in rep.title
    text = rep.render_text()
    assert "calls_handled" in text and "142" in text and rep.report_id in text
    assert rep.metrics_json() == '{"calls_handled":142,"conversion_rate":0.261}'
    with pytest.raises(ValidationError) as exc:
        structure({"period_start": "2026-11-07", "period_end": "2026-11-01", "metrics": {"x": float("nan"), "ok": True}}, PerformanceReport)
    assert set(fields_of(exc)) == {"period_end", "metrics.x", "metrics.ok"}
    with pytest.raises(ValidationError):
        structure({"period_start": "2026-11-01", "period_end": "2026-11-01", "metrics": {}}, PerformanceReport)


def test_unstructure_is_json_ready_and_round_trips() -> None:
    req = structure(booking(notes="Prefers mornings"), AppointmentRequest)
    data = unstructure(req)
    assert data["start"] == "2030-03-05T10:00:00-05:00"
    assert structure(data, AppointmentRequest) == req


@pytest.mark.parametrize("bad", ["../x", "..", "%2F", "a/b", "a?b", "a#b", "a\r\nb", "é", "", " ", "x" * 129, None, 5])
def test_hostile_ids_are_rejected(bad: object) -> None:
    with pytest.raises(ValidationError) as exc:
        validate_appointment_id(bad)
    assert exc.value.fields == ["appointment_id"]


def test_good_ids() -> None:
    for good in ("00U5e00000AbCdEFGH", "4821:9931", "abc-DEF_1.2"):
        assert validate_appointment_id(good) == good


@pytest.mark.parametrize(
    "start",
    ["0001-01-01T00:00:00+14:00", "9999-12-31T23:50:00-12:00", "1999-12-31T10:00:00Z", "2200-01-01T10:00:00Z"],
)
def test_dates_outside_sensible_years_are_named_errors(start: str) -> None:
    with pytest.raises(ValidationError) as exc:
        structure(booking(start=start), AppointmentRequest)
    assert fields_of(exc) == ["start"] and "years" in str(exc.value)


def test_report_bounds_and_huge_metrics() -> None:
    with pytest.raises(ValidationError) as exc:
        structure({"period_start": "1900-01-01", "period_end": "2026-01-01", "metrics": {"a": 10**400}}, PerformanceReport)
    assert set(fields_of(exc)) == {"period_start", "metrics.a"}


def test_phone_digits_must_be_ascii() -> None:
    with pytest.raises(ValidationError):
        Patient(phone="+1٥٥٥٥٥٥٠١٢٣")


# -- patient as a dict -------------------------------------------------------------------------


def test_request_accepts_the_patient_as_a_dict_like_book_appointment_does() -> None:
    start = dt.datetime(2030, 3, 5, 10, tzinfo=NY)
    from_dict = AppointmentRequest(start=start, patient={"name": "Jane Doe", "phone": "+1 (555) 555-0123"}, reference="r1")
    from_model = AppointmentRequest(start=start, patient=Patient(name="Jane Doe", phone="+15555550123"), reference="r1")
    assert isinstance(from_dict.patient, Patient) and from_dict == from_model
    assert structure(booking(reference="r1"), AppointmentRequest).patient == Patient(name="Jane Doe", email="jane@example.com")


def test_a_bad_patient_dict_names_its_fields_with_the_requests_other_errors() -> None:
    with pytest.raises(ValidationError) as err:
        AppointmentRequest(start=dt.datetime(2030, 3, 5, 10), patient={"email": "nope", "colour": "red"})
    assert set(err.value.fields) == {"start", "patient.email", "patient.colour"}
    with pytest.raises(ValidationError) as err:
        AppointmentRequest(start=dt.datetime(2030, 3, 5, 10, tzinfo=NY), patient={})
    assert err.value.fields == ["patient.email"]
    with pytest.raises(ValidationError) as err:
        AppointmentRequest(start=dt.datetime(2030, 3, 5, 10, tzinfo=NY), patient="Jane")  # type: ignore[arg-type]
    assert err.value.fields == ["patient"]


# -- an offset must agree with the named zone --------------------------------------------------


@pytest.mark.parametrize(
    ("start", "zone"),
    [
        ("2030-07-09T10:00:00-05:00", "America/New_York"),  # New York is at -04:00 in July
        ("2030-01-09T10:00:00-04:00", "America/New_York"),  # and at -05:00 in January
        ("2030-01-09T10:00:00+01:00", "Europe/London"),  # London is at +00:00 in January
        ("2030-07-09T10:00:00+02:00", "America/New_York"),
    ],
)
def test_an_offset_that_contradicts_the_named_zone_is_refused(start: str, zone: str) -> None:
    with pytest.raises(ValidationError) as err:
        structure(booking(start=start, timezone=zone), AppointmentRequest)
    assert err.value.fields == ["start"] and zone in str(err.value)
    with pytest.raises(ValidationError) as err:
        structure({"start": start, "duration_minutes": 30, "timezone": zone}, AppointmentUpdate)
    assert err.value.fields == ["start"]


@pytest.mark.parametrize(
    ("start", "zone"),
    [
        ("2030-07-09T10:00:00-04:00", "America/New_York"),
        ("2030-01-09T10:00:00-05:00", "America/New_York"),
        ("2030-07-09T14:00:00Z", "America/New_York"),  # UTC names an instant: always consistent
        ("2030-07-09T14:00:00+00:00", "America/Los_Angeles"),
        ("2030-11-03T01:30:00-05:00", "America/New_York"),  # the repeated hour, second time
        ("2030-11-03T01:30:00-04:00", "America/New_York"),  # the repeated hour, first time
    ],
)
def test_an_offset_that_agrees_with_the_named_zone_is_kept(start: str, zone: str) -> None:
    req = structure(booking(start=start, timezone=zone), AppointmentRequest)
    assert req.timezone == zone and req.start.isoformat().startswith(start[:19])


def test_a_zoneinfo_start_in_another_zone_than_named_is_refused() -> None:
    with pytest.raises(ValidationError) as err:
        AppointmentRequest(
            start=dt.datetime(2030, 7, 9, 10, tzinfo=ZoneInfo("Europe/Berlin")),
            patient=Patient(email="a@b.co"),
            timezone="America/New_York",
        )
    assert err.value.fields == ["start"]


# -- providers() in a plain REPL ----------------------------------------------------------------


def test_provider_status_list_repr_is_a_readable_multi_line_table() -> None:
    import pms_integration as pms

    statuses = pms.providers()
    text = repr(statuses)
    lines = text.splitlines()
    assert len(lines) == 4 and lines[0].split() == ["PROVIDER", "STATUS", "DETAIL"]
    assert all(len(line) < 200 for line in lines)
    assert statuses._repr_html_().count("<tr>") == 4  # notebooks keep their HTML table
    assert statuses == list(statuses)  # still a plain list


# -- one structurer: dict input and direct construction agree -------------------------------------


def test_dict_input_takes_a_patient_model_and_names_a_missing_one() -> None:
    patient = Patient(email="a@b.co")
    assert structure(booking(patient=patient, reference="r1"), AppointmentRequest).patient is patient
    with pytest.raises(ValidationError) as exc:
        structure({"start": "2030-03-05T10:00:00-05:00"}, AppointmentRequest)
    assert exc.value.fields == ["patient"]


def test_cross_field_problems_are_listed_with_the_other_bad_fields() -> None:
    with pytest.raises(ValidationError) as exc:
        structure(booking(end="2030-03-05T10:30:30-05:00", title=5, patient={"phone": "1"}), AppointmentRequest)
    assert set(fields_of(exc)) == {"end", "title", "patient.phone"}
    with pytest.raises(ValidationError) as exc:
        structure(booking(end="2030-03-05T09:00:00-05:00", duration_minutes=45, reason=7), AppointmentRequest)
    assert set(fields_of(exc)) == {"end", "duration_minutes", "reason"}


def test_normalisation_applies_on_construction_and_on_evolve() -> None:
    import attrs

    patient = Patient(name="  Jane  ", email=" jane@example.com ", phone="+44 (20) 7946-0958")
    assert (patient.name, patient.email, patient.phone) == ("Jane", "jane@example.com", "+442079460958")
    assert attrs.evolve(patient, phone="0044 20 7946 0959").phone == "+442079460959"
    report = PerformanceReport(period_start=dt.datetime(2026, 11, 1, 9), period_end=dt.date(2026, 11, 7), metrics={"a": 1}, title="  ")  # type: ignore[arg-type]
    assert report.period_start == dt.date(2026, 11, 1) and report.title and report.title.startswith("AI receptionist")
    update = AppointmentUpdate(title="  ", notes=" n ")
    assert (update.title, update.notes) == (None, "n")


def test_the_converter_structures_input_models_with_the_same_errors() -> None:
    from pms_integration.models import get_converter

    assert get_converter().structure(booking(reference="r1"), AppointmentRequest) == structure(booking(reference="r1"), AppointmentRequest)
    with pytest.raises(ValidationError) as exc:
        get_converter().structure(booking(color="x"), AppointmentRequest)
    assert exc.value.fields == ["color"]
