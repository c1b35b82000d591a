"""An in-memory Salesforce org for the sandbox, mounted under ``/salesforce``.

What it serves and how strictly: docs/providers/salesforce.md ("Sandbox"). The package is laid
out by concern: :mod:`.routes` (the route table), :mod:`.handlers` (requests in, Salesforce's
answers out), :mod:`.state` (the org's records), :mod:`.validation` (ids, field specs, the
org's rules for values) and :mod:`.soql` (the query language).
"""

from .emulator import SalesforceEmulator
from .soql import DATE_LITERALS, DATE_LITERALS_N, QUERY_BATCH, date_literal_range, parse_soql
from .validation import (
    API_LIMIT,
    EVENT_FIELDS,
    NAME_FIELDS,
    NOT_EMULATED_SOBJECTS,
    PERSON_FIELDS,
    QUERYABLE,
    RELATIONSHIPS,
    SOBJECTS,
    TASK_FIELDS,
    USER_FIELDS,
    FieldSpec,
    id_suffix,
    salesforce_id,
)

EMULATOR = SalesforceEmulator

__all__ = [
    "API_LIMIT",
    "DATE_LITERALS",
    "DATE_LITERALS_N",
    "EMULATOR",
    "EVENT_FIELDS",
    "NAME_FIELDS",
    "NOT_EMULATED_SOBJECTS",
    "PERSON_FIELDS",
    "QUERYABLE",
    "QUERY_BATCH",
    "RELATIONSHIPS",
    "SOBJECTS",
    "TASK_FIELDS",
    "USER_FIELDS",
    "FieldSpec",
    "SalesforceEmulator",
    "date_literal_range",
    "id_suffix",
    "parse_soql",
    "salesforce_id",
]
