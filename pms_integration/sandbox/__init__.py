"""Local emulators of the GoHighLevel, Salesforce and HubSpot APIs, for demos and tests.

``Sandbox()`` serves all three on one loopback port with in-memory state, strict request
checks like the real APIs, and fault injection. Nothing here is imported by
``import pms_integration``.
"""

from ._core import (
    Emulator,
    Fault,
    FaultRule,
    Reply,
    RequestRecord,
    Route,
    Sandbox,
    SandboxRequest,
    SandboxResponse,
    json_response,
)

__all__ = [
    "Emulator",
    "Fault",
    "FaultRule",
    "Reply",
    "RequestRecord",
    "Route",
    "Sandbox",
    "SandboxRequest",
    "SandboxResponse",
    "json_response",
]
