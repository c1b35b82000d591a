"""docs/conversation.md offers "hubspot" as the practice's system: its whole flow runs on HubSpot
here, with the sandbox's search lag on (HubSpot's index shows a new booking about a second late).

The guide itself waits for a new booking to show in search where it plays two callers back to
back (``wait_until_taken``: it polls until the slot is gone, with a deadline, and asserts
nothing about time), so the second caller is refused with ``ConflictError`` and finding the
first caller by e-mail works, as the page says.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pms_integration.sandbox.hubspot import HubSpotEmulator
from pms_integration.testing import sandbox_session

from .test_docs import runnable_blocks

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "conversation.md"
CHOICE = 'PRACTICE = "salesforce"'


def test_the_conversation_guide_runs_on_hubspot_with_the_search_lag_on(capsys: pytest.CaptureFixture[str]) -> None:
    blocks = runnable_blocks(GUIDE)
    assert blocks and CHOICE in blocks[0]["code"]
    blocks[0]["code"] = blocks[0]["code"].replace(CHOICE, 'PRACTICE = "hubspot"', 1)
    with sandbox_session() as session:
        emulator = session.sandbox.emulator("hubspot")
        assert isinstance(emulator, HubSpotEmulator) and emulator.search_lag > 0  # the lag is on
        namespace = {"__name__": "__main__"}
        for block in blocks:
            exec(compile(block["code"], f"conversation.md, line {block['line']}", "exec"), namespace)
        out = capsys.readouterr().out
        meetings = session.state("hubspot")["meetings"]
    assert "Sorry, that time was just taken." in out  # the second caller was refused, not double-booked
    assert "Done: I've moved you to" in out  # the first caller was found by e-mail and moved
    assert "cancelled" in out
    starts = [m["properties"]["hs_meeting_start_time"] for m in meetings]
    assert len(meetings) == 2 and len(set(starts)) == 2  # Jane (moved, then cancelled) and John
