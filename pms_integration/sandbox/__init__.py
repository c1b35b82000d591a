"""Local emulators of the GoHighLevel, Salesforce and HubSpot APIs, for demos and tests.

``Sandbox()`` serves all three on one loopback port with in-memory state, strict request
checks like the real APIs, and fault injection (docs/testing.md). Nothing here is imported by
``import pms_integration``.
"""

from ._core import *  # noqa: F403 (the core's public names are the package's)
from ._core import __all__ as __all__
