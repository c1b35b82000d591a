"""An asyncio conversation manager: many calls at once on one event loop, none blocking another.

The receptionist below is the asyncio sibling of ``examples/conversation_manager.py``. Each
phone call is a task; every library call is awaited through ``pms_integration.aio``, so while
one caller's booking waits for the vendor, the loop keeps answering the others. The outcomes
are handled as in the sync example:

* ``ConflictError``: the slot was just taken. Offer the next free one (``free_slots``).
* ``ValidationError``: nothing was sent. Ask for the detail that is missing.
* A booking that takes longer than the caller should wait (``asyncio.wait_for``): say "one
  moment" and ask again with the *same* request (same reference). The first attempt was not
  abandoned: it goes on in the background, bounded by ``PMS_DEADLINE_MS``, and the retry gets
  the booking it makes, so the calendar holds it once.
* Any other ``PMSError``: nothing changed (or, with ``outcome_unknown``, staff confirm it).

The guide is docs/asyncio.md. Run it as a script to watch several scripted calls at once against
the built-in sandbox (no credentials, nothing leaves the machine)::

    python examples/asyncio_conversation_manager.py
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import pms_integration as pms
from pms_integration import aio

log = logging.getLogger("receptionist")

QUESTIONS = {
    "start": "What day and time would suit you?",
    "patient.email": "What is the best e-mail address or mobile number to reach you?",
    "patient.name": "May I have your name?",
}


@dataclass
class Call:
    """What the bot remembers about one phone call."""

    id: str
    patient: dict[str, str] = field(default_factory=dict)
    request: dict[str, Any] | None = None  # the booking being made, with its reference
    appointment: pms.Appointment | None = None
    offered: dt.datetime | None = None
    attempt: int = 0  # bumps for each *new* booking request, never for a retry of one


class AsyncReceptionist:
    """Turns a caller's intents into awaited library calls, and their outcomes into sentences.

    ``turn_timeout`` is how long a caller is left waiting before the bot says "one moment" and
    asks again (same reference); ``retry_timeout`` bounds that second wait.
    """

    def __init__(
        self,
        client: aio.AsyncPMSClient,
        *,
        provider: str | None = None,
        zone: str = "America/New_York",
        turn_timeout: float = 5.0,
        retry_timeout: float = 30.0,
    ) -> None:
        self.client = client
        self.provider = provider
        self.zone = ZoneInfo(zone)
        self.turn_timeout = turn_timeout
        self.retry_timeout = retry_timeout
        self.calls: dict[str, Call] = {}

    async def handle(self, call_id: str, intent: str, details: Mapping[str, Any] | None = None) -> str:
        """One turn: ``offer_slots``, ``book``, ``accept_offer``, ``reschedule`` or ``cancel``."""
        call = self.calls.setdefault(call_id, Call(call_id))
        handlers: dict[str, Callable[[Call, dict[str, Any]], Awaitable[str]]] = {
            "offer_slots": self._offer_slots,
            "book": self._book,
            "accept_offer": self._accept_offer,
            "reschedule": self._reschedule,
            "cancel": self._cancel,
        }
        handler = handlers.get(intent)
        if handler is None:
            return "Sorry, I can book, move or cancel an appointment. What would you like to do?"
        return await handler(call, dict(details or {}))

    async def _offer_slots(self, call: Call, details: dict[str, Any]) -> str:
        try:
            slots = await self.client.free_slots(details["from"], details["until"], provider=self.provider)
        except pms.PMSError as exc:
            return self._failure(exc, "search", None)
        if not slots:
            return "I'm afraid that's fully booked. Would another day suit you?"
        times = [self._say(s.start).split(" at ")[1] for s in slots[:3]]
        return f"I have {', '.join(times[:-1])} or {times[-1]}. Which suits you?"

    async def _book(self, call: Call, details: dict[str, Any]) -> str:
        call.patient.update({k: v for k, v in details.pop("patient", {}).items() if v})
        if call.request is None or "start" in details:
            call.attempt += 1
            # one reference per booking request: a retry of this request reuses it
            call.request = {"duration_minutes": 30, "timezone": self.zone.key, "reference": f"{call.id}-{call.attempt}"}
        call.request.update(details)
        call.request["patient"] = dict(call.patient)
        return await self._send_booking(call)

    async def _accept_offer(self, call: Call, details: dict[str, Any]) -> str:
        if call.offered is None or call.request is None:
            return "Which time would you like?"
        call.attempt += 1  # another slot is another booking: a new reference
        call.request = {**call.request, "start": call.offered.isoformat(), "reference": f"{call.id}-{call.attempt}"}
        call.offered = None
        return await self._send_booking(call)

    async def _send_booking(self, call: Call) -> str:
        assert call.request is not None
        request = dict(call.request)
        try:
            try:
                appointment = await asyncio.wait_for(
                    self.client.book_appointment(request, provider=self.provider), self.turn_timeout
                )
            except asyncio.TimeoutError:
                # The booking goes on in the background under its reference; asking again with
                # the same request waits for it (or returns it) - it never books twice.
                log.warning("booking %s is slow; asking again with the same reference", request["reference"])
                print(f"{'Bot':>8} [{call.id}]: One moment, I'm just confirming that with the calendar.")
                appointment = await asyncio.wait_for(
                    self.client.book_appointment(request, provider=self.provider), self.retry_timeout
                )
        except asyncio.TimeoutError:
            return f"The calendar is very slow today; a team member will confirm by text. Your reference is {request['reference']}."
        except pms.ValidationError as exc:
            return next((QUESTIONS[p] for p in exc.fields if p in QUESTIONS), "Could you say that again?")
        except pms.ConflictError:
            call.offered = await self._next_slot(request["start"])
            if call.offered is None:
                return "Sorry, that time was just taken, and nothing else is free that day. Another day?"
            return f"Sorry, that time was just taken. Would {self._say(call.offered)} work instead?"
        except pms.PMSError as exc:
            return self._failure(exc, "booking", request["reference"])
        call.appointment, call.request = appointment, None
        return f"You're booked for {self._say(appointment.start)}. Your reference is {appointment.reference}."

    async def _reschedule(self, call: Call, details: dict[str, Any]) -> str:
        if call.appointment is None:
            return "Which appointment would you like to move?"
        changes = {"start": details["start"], "duration_minutes": 30, "timezone": self.zone.key}
        try:
            moved = await self.client.update_appointment(call.appointment.id, changes, provider=self.provider)
        except pms.ConflictError:
            return "That time is taken, I'm afraid. Is there another time that suits you?"
        except pms.PMSError as exc:
            return self._failure(exc, "change", None)
        call.appointment = moved
        return f"Done: I've moved you to {self._say(moved.start)}."

    async def _cancel(self, call: Call, details: dict[str, Any]) -> str:
        if call.appointment is None:
            return "I don't have an appointment to cancel on this call."
        try:  # cancelling twice succeeds on every provider, so a retried turn is harmless
            await self.client.cancel_appointment(
                call.appointment.id, reason=details.get("reason"), provider=self.provider
            )
        except pms.PMSError as exc:
            return self._failure(exc, "cancellation", None)
        call.appointment = None
        return "Your appointment is cancelled. Call us any time to book again."

    def _failure(self, exc: pms.PMSError, what: str, reference: str | None) -> str:
        if isinstance(exc, pms.ProviderError) and exc.outcome_unknown:
            log.error("%s %s may exist; staff to confirm: %s", what, reference, exc)
            return f"I'm still confirming that {what}; a team member will text you. Your reference is {reference}."
        log.error("%s failed: %r", what, exc)
        return "I couldn't reach the clinic's calendar, so nothing has changed. Shall I try again in a minute?"

    async def _next_slot(self, start: str) -> dt.datetime | None:
        local = dt.datetime.fromisoformat(start).astimezone(self.zone)
        try:
            slots = await self.client.free_slots(local, local.replace(hour=23, minute=59), provider=self.provider)
        except pms.PMSError as exc:
            log.warning("no free-slot search: %s", exc)
            return None
        later = [s.start for s in slots if s.start > local]
        return later[0] if later else None

    def _say(self, when: dt.datetime | None) -> str:
        if when is None:  # a vendor that did not say (the booking stands all the same)
            return "the time we agreed"
        return when.astimezone(self.zone).strftime("%A %B %d at %I:%M %p").replace(" 0", " ")


# -- the scripted calls ---------------------------------------------------------------------------


async def run_calls(session: Any) -> int:
    from pms_integration.sandbox import Fault

    tuesday = dt.datetime(2030, 3, 5, 10, 0, tzinfo=ZoneInfo("America/New_York"))
    async with aio.AsyncPMSClient(environ=session.environ, env_file=None) as client:
        bot = AsyncReceptionist(client)

        async def turn(call: str, says: str, intent: str, details: dict[str, Any] | None = None) -> str:
            print(f"{'Patient':>8} [{call}]: {says}")
            reply = await bot.handle(call, intent, details)
            print(f"{'Bot':>8} [{call}]: {reply}")
            return reply

        jane_booked = asyncio.Event()

        async def jane() -> None:
            await turn("jane", "What do you have on Tuesday morning?", "offer_slots",
                       {"from": tuesday.replace(hour=9).isoformat(), "until": tuesday.replace(hour=12).isoformat()})  # fmt: skip
            await turn(
                "jane",
                "10 please, I'm Jane Doe.",
                "book",
                {"start": tuesday.isoformat(), "patient": {"name": "Jane Doe"}},
            )
            await turn("jane", "jane.doe@example.com", "book", {"patient": {"email": "jane.doe@example.com"}})
            jane_booked.set()

        async def john() -> None:
            await jane_booked.wait()  # John asks for the slot Jane has just taken
            await turn("john", "John Smith, john@example.com, Tuesday at 10.", "book",
                       {"start": tuesday.isoformat(), "patient": {"name": "John Smith", "email": "john@example.com"}})  # fmt: skip
            await turn("john", "Yes, that works.", "accept_offer")

        async def ana() -> None:
            await turn("ana", "Ana Ruiz, ana@example.com. Tuesday at 2pm?", "book",
                       {"start": (tuesday + dt.timedelta(hours=4)).isoformat(), "patient": {"name": "Ana Ruiz", "email": "ana@example.com"}})  # fmt: skip

        async def mo() -> None:
            await turn("mo", "Mo Ali, mo@example.com. Tuesday at 4pm?", "book",
                       {"start": (tuesday + dt.timedelta(hours=6)).isoformat(), "patient": {"name": "Mo Ali", "email": "mo@example.com"}})  # fmt: skip

        print("--- Four calls at once: find slots, book, a taken slot, a detail missing")
        await asyncio.gather(jane(), john(), ana(), mo())

        print("\n--- Lee's booking is slow to confirm: the bot times out, then asks again with the same reference")
        # The calendar takes 2 s to answer this create; the bot waits 0.3 s before saying "one
        # moment". The create it stopped waiting for is not abandoned: the retry gets its booking.
        session.sandbox.inject("ghl", Fault.delay(2.0), operation="appointments.create", times=1)
        bot.turn_timeout = 0.3
        await turn("lee", "Lee Park, lee@example.com, Tuesday 3pm.", "book",
                   {"start": (tuesday + dt.timedelta(hours=5)).isoformat(), "patient": {"name": "Lee Park", "email": "lee@example.com"}})  # fmt: skip
        bot.turn_timeout = 5.0
        lee = [b for b in session.state("ghl")["bookings"] if "Booking reference: lee-1" in b["description"]]
        print(f"  (the calendar holds {len(lee)} booking with reference lee-1)")

        print("\n--- Ana moves and Mo cancels, at the same time")
        wednesday_2pm = (tuesday + dt.timedelta(days=1, hours=4)).isoformat()
        await asyncio.gather(
            turn("ana", "Can we make it Wednesday at 2 instead?", "reschedule", {"start": wednesday_2pm}),
            turn("mo", "Something came up, please cancel.", "cancel", {"reason": "Patient called to cancel"}),
        )

    bookings = session.state("ghl")["bookings"]
    live = [b for b in bookings if b["appointmentStatus"] != "cancelled"]
    references = [b["description"].split("Booking reference: ", 1)[-1].split()[0] for b in bookings]
    assert len(references) == len(set(references)), "a reference was booked twice"
    assert len(bookings) == 5 and len(live) == 4, bookings
    print(f"\nAll calls finished: {len(live)} live bookings, 1 cancelled, no reference booked twice.")
    return 0


def main() -> int:
    from pms_integration.testing import sandbox_session

    logging.basicConfig(level=logging.WARNING, format="  [%(name)s] %(message)s", stream=sys.stdout)
    with sandbox_session(default_provider="gohighlevel") as session:
        session.sandbox.latency = 0.02  # every answer takes 20 ms, so the calls really overlap
        return asyncio.run(run_calls(session))


if __name__ == "__main__":
    raise SystemExit(main())
