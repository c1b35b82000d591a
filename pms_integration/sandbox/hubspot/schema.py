"""HubSpot's data model as the sandbox knows it: object types, properties, associations, ids."""

from __future__ import annotations

import re

#: The unique-value custom deal property the sandbox defines (``hasUniqueValue: true``).
REFERENCE_PROPERTY = "pms_booking_id"

#: HUBSPOT_DEFINED default association type ids, (from, to) -> id.
ASSOCIATION_TYPES: dict[tuple[str, str], int] = {
    ("deals", "contacts"): 3,
    ("contacts", "deals"): 4,
    ("deals", "companies"): 5,
    ("deals", "meetings"): 211,
    ("deals", "notes"): 213,
    ("meetings", "contacts"): 200,
    ("meetings", "companies"): 188,
    ("meetings", "deals"): 212,
    ("contacts", "meetings"): 199,
    ("contacts", "notes"): 201,
    ("notes", "contacts"): 202,
    ("notes", "companies"): 190,
    ("notes", "deals"): 214,
    ("companies", "notes"): 189,
    ("companies", "meetings"): 187,
    ("companies", "deals"): 342,
    ("contacts", "companies"): 279,
    ("companies", "contacts"): 280,
}
#: Type ids valid besides the default one (the "primary" company labels).
_EXTRA_VALID: dict[tuple[str, str], set[int]] = {("deals", "companies"): {5, 341}, ("contacts", "companies"): {1, 279}}

DEFAULT_PIPELINE_STAGES = (
    "appointmentscheduled",
    "qualifiedtobuy",
    "presentationscheduled",
    "decisionmakerboughtin",
    "contractsent",
    "closedwon",
    "closedlost",
)
MEETING_OUTCOMES = ("SCHEDULED", "COMPLETED", "RESCHEDULED", "NO_SHOW", "CANCELED")
NOTE_BODY_LIMIT = 65_536

OBJECT_TYPE_IDS = {"contacts": "0-1", "companies": "0-2", "deals": "0-3", "notes": "0-46", "meetings": "0-47"}
#: Every way a path or a parameter names an object type -> its plural name.
ALIASES = {
    "contact": "contacts",
    "company": "companies",
    "deal": "deals",
    "meeting": "meetings",
    "note": "notes",
    **{t: t for t in OBJECT_TYPE_IDS},
    **{v: k for k, v in OBJECT_TYPE_IDS.items()},
}
#: The first id of each type (HubSpot ids are sparse numbers; each new one is 7 further).
FIRST_IDS = {
    "contacts": 75_100_000_001,
    "companies": 31_200_000_001,
    "deals": 20_450_000_001,
    "meetings": 61_300_000_001,
    "notes": 82_700_000_001,
}
READ_ONLY = {"hs_object_id", "createdate", "hs_createdate", "lastmodifieddate", "hs_lastmodifieddate"}
SYSTEM_DATETIMES = READ_ONLY - {"hs_object_id"}
STRING = "string"
DATETIME = "datetime"
ENUM = "enumeration"
NUMBER = "number"
#: The writable properties of each type and their kinds (every value travels as a string).
PROPERTIES: dict[str, dict[str, str]] = {
    "contacts": dict.fromkeys(
        ["email", "firstname", "lastname", "phone", "mobilephone", "company", "website", "address", "city", "state",
         "zip", "country", "jobtitle", "lifecyclestage", "hs_lead_status", "hubspot_owner_id"],
        STRING,
    ),
    "companies": dict.fromkeys(["name", "domain", "phone", "city", "hubspot_owner_id"], STRING),
    "deals": {
        **dict.fromkeys(
            ["dealname", "pipeline", "dealtype", "description", "closed_lost_reason", "closed_won_reason",
             "hubspot_owner_id", "hs_priority", REFERENCE_PROPERTY],
            STRING,
        ),
        "dealstage": ENUM,
        "closedate": DATETIME,
        "amount": NUMBER,
    },
    "meetings": {
        **dict.fromkeys(
            ["hs_meeting_title", "hs_meeting_body", "hs_internal_meeting_notes", "hubspot_owner_id",
             "hs_meeting_external_url", "hs_meeting_location", "hs_activity_type", "hs_attachment_ids"],
            STRING,
        ),
        "hs_timestamp": DATETIME,
        "hs_meeting_start_time": DATETIME,
        "hs_meeting_end_time": DATETIME,
        "hs_meeting_outcome": ENUM,
    },
    "notes": {"hs_timestamp": DATETIME, "hs_note_body": STRING, "hubspot_owner_id": STRING, "hs_attachment_ids": STRING},
}  # fmt: skip
#: Properties that identify one record (``idProperty``); e-mail compares without case.
UNIQUE = {"contacts": {"email", "hs_object_id"}, "deals": {REFERENCE_PROPERTY, "hs_object_id"}}
#: What a read without ``properties`` returns (HubSpot answers with a small default set).
DEFAULT_READ = {
    "contacts": ("email", "firstname", "lastname"),
    "companies": ("name", "domain"),
    "deals": ("dealname", "dealstage", "pipeline", "closedate", "amount"),
    "meetings": ("hs_timestamp",),
    "notes": ("hs_timestamp",),
}
CREATED_PROPERTY = {"contacts": "createdate", "companies": "createdate", "deals": "createdate"}
#: The modification time's name where it is not ``hs_lastmodifieddate`` (HubSpot's contacts).
MODIFIED_PROPERTY = {"contacts": "lastmodifieddate"}
#: Properties the free-text ``query`` of a search looks in (HubSpot's default searchable ones).
QUERY_PROPERTIES = {
    "contacts": ("firstname", "lastname", "email", "phone", "company", "website"),
    "companies": ("name", "domain", "website", "phone"),
    "deals": ("dealname",),
    "meetings": ("hs_meeting_title", "hs_meeting_body"),
    "notes": ("hs_note_body",),
}
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
NUMERIC_ID = re.compile(r"^\d{1,20}$")


#: Search-only properties HubSpot calculates from a phone property: the number without its
#: country code (the sandbox knows North American numbers: "+1" and ten digits).
CALCULATED = {
    "contacts": {
        "hs_searchable_calculated_phone_number": "phone",
        "hs_searchable_calculated_mobile_number": "mobilephone",
    }
}
#: The title ``block_time`` gives a meeting that only blocks the calendar.
BLOCK_BODY = "Time blocked in the calendar by staff."


def national_number(phone: str) -> str:
    """What HubSpot's calculated phone properties hold: the digits without the country code."""
    digits = re.sub(r"\D", "", phone)
    return digits[1:] if phone.strip().startswith("+1") and len(digits) == 11 else digits


def known(object_type: str, name: str) -> bool:
    """Whether a search may filter or sort on ``name`` (a property, or a system one)."""
    return name in PROPERTIES[object_type] or name in READ_ONLY or name in CALCULATED.get(object_type, {})


def is_datetime(object_type: str, name: str) -> bool:
    return name in SYSTEM_DATETIMES or PROPERTIES[object_type].get(name) == DATETIME


def valid_association_ids(from_type: str, to_type: str) -> set[int | None]:
    return {ASSOCIATION_TYPES.get((from_type, to_type))} | _EXTRA_VALID.get((from_type, to_type), set())
