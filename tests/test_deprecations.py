"""Names the adapter-shape refactor retired keep working, with a DeprecationWarning."""

from __future__ import annotations

import datetime as dt

import pytest

from pms_integration.client import BookingMemory
from pms_integration.models import Appointment, AppointmentRequest, AppointmentStatus, Patient, ProviderName

KEY = (ProviderName.HUBSPOT, "https://api.hubapi.com|pipeline", "conv-1")


def _request() -> AppointmentRequest:
    start = dt.datetime(2031, 1, 6, 9, tzinfo=dt.timezone.utc)
    return AppointmentRequest(patient=Patient(email="ada@example.com"), start=start, reference="conv-1")


def test_booking_memory_pieces_still_work_and_warn() -> None:
    memory, request = BookingMemory(), _request()
    appointment = Appointment(ProviderName.HUBSPOT, "m-1", AppointmentStatus.BOOKED, request.start, request.end)
    with pytest.warns(DeprecationWarning, match="mark_uncertain"):
        memory.mark_uncertain(KEY)
    with pytest.warns(DeprecationWarning, match="is_uncertain"):
        assert memory.is_uncertain(KEY)
    with pytest.warns(DeprecationWarning, match="hold"):
        hold = memory.hold(KEY)
    with hold, pytest.warns(DeprecationWarning, match="remember"):
        memory.remember(KEY, request, appointment)
    with pytest.warns(DeprecationWarning, match="booked"):
        assert memory.booked(KEY) == (request, appointment)

    def must_not_create() -> Appointment:
        raise AssertionError("a remembered booking is returned, not created again")

    assert memory.book(KEY, request, must_not_create, lambda: None) is appointment


def test_settings_keep_their_positional_field_order() -> None:
    """Code that builds settings positionally keeps working: new fields only ever go last."""
    import attrs

    from pms_integration.config import GoHighLevelSettings, HubSpotSettings, SalesforceSettings

    before = {
        GoHighLevelSettings: "api_key location_id calendar_id base_url api_version timezone timeout "
        "report_contact_id rate_limit",
        SalesforceSettings: "base_url token owner_id event_record_type api_version timeout cancel_mode "
        "client_id client_secret refresh_token rate_limit",
        HubSpotSettings: "token base_url api_version pipeline_id stage_id cancel_stage_id report_company_id "
        "reference_property timeout rate_limit",
    }
    for cls, names in before.items():
        fields = attrs.fields(cls)
        assert [f.name for f in fields][: len(names.split())] == names.split()
        assert all(f.default is not attrs.NOTHING for f in fields[len(names.split()) :]), cls.__name__


def test_the_old_client_lifecycle_methods_still_answer_and_warn() -> None:
    import pms_integration as pms

    client = pms.PMSClient(environ={}, env_file=None)
    with pytest.warns(DeprecationWarning, match="usable"):
        assert client.usable
    with pytest.warns(DeprecationWarning, match="acquire"):
        assert client.acquire()
    with pytest.warns(DeprecationWarning, match="release"):
        client.release()
    with pytest.warns(DeprecationWarning, match="retire"):
        client.retire()
    assert not client.closed  # retiring no longer closes: an unused client is collected
    client.close()
    with pytest.warns(DeprecationWarning):
        assert not client.acquire()
