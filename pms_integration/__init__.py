"""pms-integration: book, reschedule and cancel appointments and push performance reports
into GoHighLevel, Salesforce and HubSpot from an AI dental receptionist.

Importing the package has no side effects: no environment is read and no connection is made
until the first call.
"""

import logging as _logging

from . import errors as _errors
from ._default import (
    book_appointment,
    cancel_appointment,
    changes,
    check_state,
    find_appointments,
    find_patient,
    free_slots,
    get_appointment,
    get_client,
    on_change,
    parse_webhook,
    providers,
    push_performance_report,
    reload,
    update_appointment,
    use_client,
)
from ._version import __version__
from .changes import AppointmentChange, ChangeBatch, ChangeKind
from .client import PMSClient
from .config import Secret, load_config
from .errors import *  # noqa: F403 - every error class, as errors.__all__ lists them
from .models import (
    Appointment,
    AppointmentList,
    AppointmentRequest,
    AppointmentStatus,
    AppointmentUpdate,
    Patient,
    PatientList,
    PatientRecord,
    PerformanceReport,
    ProviderName,
    ProviderStatus,
    ReportReceipt,
    Slot,
    SlotList,
)
from .provider import Capability, Provider
from .reports import set_report_source
from .tokens import CallbackTokenStore, FileTokenStore, TokenStore

# A library adds a NullHandler and nothing else: where logs go is the application's choice.
_logging.getLogger("pms_integration").addHandler(_logging.NullHandler())

# The camelCase names the product brief promises: the very same function objects.
bookAppointment = book_appointment
updateAppointment = update_appointment
cancelAppointment = cancel_appointment
pushPerformanceReport = push_performance_report
getFreeSlots = free_slots
findPatient = find_patient
getAppointment = get_appointment
findAppointments = find_appointments
checkState = check_state
getChanges = changes
parseWebhook = parse_webhook
onChange = on_change

__all__ = [
    "__version__",
    # functions
    "book_appointment",
    "update_appointment",
    "cancel_appointment",
    "push_performance_report",
    "bookAppointment",
    "updateAppointment",
    "cancelAppointment",
    "pushPerformanceReport",
    "free_slots",
    "find_patient",
    "get_appointment",
    "find_appointments",
    "getFreeSlots",
    "findPatient",
    "getAppointment",
    "findAppointments",
    "check_state",
    "checkState",
    "changes",
    "getChanges",
    "parseWebhook",
    "onChange",
    "parse_webhook",
    "on_change",
    "providers",
    "reload",
    "get_client",
    "use_client",
    "set_report_source",
    "load_config",
    # classes
    "PMSClient",
    "Provider",
    "ProviderName",
    "Capability",
    "Secret",
    "Patient",
    "AppointmentRequest",
    "AppointmentUpdate",
    "Appointment",
    "AppointmentStatus",
    "PerformanceReport",
    "ReportReceipt",
    "Slot",
    "SlotList",
    "PatientRecord",
    "PatientList",
    "AppointmentList",
    "ProviderStatus",
    "TokenStore",
    "FileTokenStore",
    "CallbackTokenStore",
    "ChangeKind",
    "AppointmentChange",
    "ChangeBatch",
]
__all__ += _errors.__all__
