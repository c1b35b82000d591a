"""The GoHighLevel sandbox's route table: method, path below ``/ghl``, operation name, handler.

``/v1/...`` is the legacy API, the rest is v2 (LeadConnector). The operation names are what
``Sandbox.inject(..., operation=...)`` matches.
"""

from __future__ import annotations

from .._core import Endpoint
from . import handlers as h
from .state import CalendarStore

_CONTACT, _NOTE, _EVENT = r"(?P<contact_id>[^/]+)", r"(?P<note_id>[^/]+)", r"(?P<event_id>[^/]+)"
_NOTES = rf"/contacts/{_CONTACT}/notes"
_APPOINTMENTS = r"/calendars/events/appointments"

ROUTES: tuple[Endpoint[CalendarStore], ...] = (
    Endpoint("POST", r"/contacts/upsert", "contacts.upsert", h.upsert_contact),
    Endpoint("POST", r"/contacts/search", "contacts.search", h.search_contacts, mutating=False),
    Endpoint("GET", rf"/contacts/{_CONTACT}/appointments", "contacts.appointments", h.contact_appointments),
    Endpoint("GET", _NOTES, "notes.list", h.list_notes),
    Endpoint("POST", _NOTES, "notes.create", h.create_note),
    Endpoint("GET", rf"{_NOTES}/{_NOTE}", "notes.get", h.get_note),
    Endpoint("PUT", rf"{_NOTES}/{_NOTE}", "notes.update", h.update_note),
    Endpoint("POST", _APPOINTMENTS, "appointments.create", h.create_event),
    Endpoint("GET", rf"{_APPOINTMENTS}/{_EVENT}", "appointments.get", h.get_event),
    Endpoint("PUT", rf"{_APPOINTMENTS}/{_EVENT}", "appointments.update", h.edit_event),
    Endpoint("GET", r"/calendars/events", "appointments.list", h.list_events),
    Endpoint("DELETE", rf"/calendars/events/{_EVENT}", "appointments.delete", h.delete_event),
    Endpoint("GET", r"/calendars/(?P<calendar_id>[^/]+)/free-slots", "slots.list", h.free_slots),
    Endpoint("POST", r"/v1/appointments/?", "v1.appointments.create", h.v1_create),
    Endpoint("GET", r"/v1/appointments/?", "v1.appointments.list", h.v1_list),
    Endpoint("GET", r"/v1/appointments/slots", "v1.appointments.slots", h.v1_slots),
    Endpoint("GET", rf"/v1/appointments/{_EVENT}", "v1.appointments.get", h.v1_get),
    Endpoint("PUT", rf"/v1/appointments/{_EVENT}", "v1.appointments.update", h.v1_update),
    Endpoint("PUT", rf"/v1/appointments/{_EVENT}/status", "v1.appointments.status", h.v1_status),
    Endpoint("DELETE", rf"/v1/appointments/{_EVENT}", "v1.appointments.delete", h.v1_delete),
)
