"""A small conversation manager: turns a patient's intents into pms-integration calls.

The language understanding (turning "can I come in Tuesday at ten?" into a date) is not the
point here; the bot receives structured intents. The point is what a real receptionist bot must
do with each outcome of a booking call:

* ``ValidationError``: nothing was sent. Ask the patient for the detail that is missing.
* ``ConflictError``: the slot is taken (GoHighLevel refuses it; on Salesforce and HubSpot the
  library checks before it writes). Offer the next free slots (``free_slots``).
* ``RateLimitError``: the vendor asked us to slow down. Wait ``retry_after`` seconds and send the
  *same* request again (same reference).
* ``outcome_unknown``: the booking may exist. Never book again under a new reference; retry the
  same request with the same reference once (the library looks the booking up before it creates
  anything), and otherwise hand over to staff with the reference.
* ``ProviderNotConfiguredError`` / ``UnsupportedOperationError``: the practice's system cannot
  take this booking online. Hand over to staff; tell the operators which variables to set.
* Any other ``ProviderError``: nothing was booked. Say so, offer to try again later.

It also reads the calendar: it offers free slots when asked "what do you have on Tuesday?",
and when a patient calls back in a new conversation to move or cancel, it finds their
appointment by e-mail or phone (``find_appointments``): no booking id is needed. The guide to
all of this is docs/conversation.md.

Run it as a script to watch a scripted conversation against the built-in sandbox (no
credentials, nothing leaves the machine)::

    python examples/conversation_manager.py
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import pms_integration as pms

log = logging.getLogger("receptionist")
T = TypeVar("T")

#: What to ask for when a field is missing or wrong (by the ValidationError's field path).
QUESTIONS = {
    "start": "What day and time would suit you?",
    "patient.email": "What is the best e-mail address or mobile number to reach you?",
    "patient.phone": "Could you give me that phone number with the country code, like +1 555 555 0123?",
    "patient.name": "May I have your name?",
    "duration_minutes": "How long should I book you for?",
    "timezone": "Which time zone are you in?",
}


@dataclass
class Conversation:
    """What the bot remembers about one conversation (one call, one chat)."""

    id: str
    patient: dict[str, str] = field(default_factory=dict)
    request: dict[str, Any] | None = None  # the booking being made, with its reference
    appointment: pms.Appointment | None = None
    offered: dt.datetime | None = None  # an alternative slot the bot has offered
    attempt: int = 0  # bumps for each *new* booking request, never for a retry


class ReceptionistBot:
    """Turns intents into library calls and library outcomes into sentences.

    ``client`` is a :class:`pms_integration.PMSClient`; ``None`` uses the library's default
    client (configured from ``PMS_*`` variables). ``provider`` picks the practice's system, or
    ``None`` for the configured default.
    """

    def __init__(
        self,
        *,
        client: pms.PMSClient | None = None,
        provider: str | None = None,
        zone: str = "America/New_York",
        title: str = "Dental appointment",
        sleep: Callable[[float], None] = time.sleep,
        max_wait: float = 30.0,
        lookahead_days: int = 366,
    ) -> None:
        self.client = client
        self.provider = provider
        self.zone = ZoneInfo(zone)
        self.title = title
        self.sleep = sleep
        self.max_wait = max_wait
        self.lookahead = dt.timedelta(days=lookahead_days)  # how far ahead a caller's appointment is looked for
        self.conversations: dict[str, Conversation] = {}

    # -- intents ----------------------------------------------------------------------------

    def handle(self, conversation_id: str, intent: str, details: Mapping[str, Any] | None = None) -> str:
        """One turn: an intent (``offer_slots``, ``book``, ``accept_offer``, ``reschedule``,
        ``cancel``) -> a reply."""
        conv = self.conversations.setdefault(conversation_id, Conversation(conversation_id))
        details = dict(details or {})
        handlers: dict[str, Callable[[Conversation, dict[str, Any]], str]] = {
            "offer_slots": self._offer_slots,
            "book": self._book,
            "accept_offer": self._accept_offer,
            "reschedule": self._reschedule,
            "cancel": self._cancel,
        }
        handler = handlers.get(intent)
        if handler is None:
            return "Sorry, I can book, move or cancel an appointment. What would you like to do?"
        return handler(conv, details)

    def _offer_slots(self, conv: Conversation, details: dict[str, Any]) -> str:
        """What do you have on Tuesday morning? The first free slots from ``from`` to ``until``."""
        try:
            slots = self._free_slots(details["from"], details["until"])
        except pms.PMSError as exc:
            return self._failure(exc, "search", None)
        if not slots:
            return "I'm afraid that's fully booked. Would another day suit you?"
        times = [self._say(s.start).split(" at ")[1] for s in slots[:3]]
        day = self._say(slots[0].start).split(" at ")[0]
        if len(times) == 1:
            return f"On {day} I have {times[0]}. Does that suit you?"
        return f"On {day} I have {', '.join(times[:-1])} or {times[-1]}. Which suits you?"

    def _book(self, conv: Conversation, details: dict[str, Any]) -> str:
        conv.patient.update({k: v for k, v in details.pop("patient", {}).items() if v})
        if conv.request is None or "start" in details:
            conv.attempt += 1
            conv.request = {
                "title": self.title,
                "duration_minutes": 30,
                "timezone": self.zone.key,
                # One reference per booking request: a retry of this request reuses it.
                "reference": f"{conv.id}-{conv.attempt}",
            }
        conv.request.update(details)
        conv.request["patient"] = dict(conv.patient)
        return self._send_booking(conv)

    def _accept_offer(self, conv: Conversation, details: dict[str, Any]) -> str:
        if conv.offered is None or conv.request is None:
            return "Which time would you like?"
        conv.attempt += 1  # a different slot is a different booking: a new reference
        conv.request = {**conv.request, "start": conv.offered.isoformat(), "reference": f"{conv.id}-{conv.attempt}"}
        conv.offered = None
        return self._send_booking(conv)

    def _send_booking(self, conv: Conversation) -> str:
        assert conv.request is not None
        request = dict(conv.request)
        try:
            appointment = self._call(lambda: self._api("book_appointment", request, provider=self.provider))
        except pms.ValidationError as exc:
            return self._ask_for(exc)
        except pms.ConflictError:
            conv.offered = self._next_slot(request["start"], request.get("duration_minutes", 30))
            if conv.offered is None:
                return "Sorry, that time was just taken, and nothing else is free that day. Another day?"
            return f"Sorry, that time was just taken. Would {self._say(conv.offered)} work instead?"
        except pms.PMSError as exc:
            return self._failure(exc, "booking", request.get("reference"))
        conv.appointment = appointment
        conv.request = None
        return f"You're booked for {self._say(appointment.start)}. Your reference is {appointment.reference}."

    def _find_existing(self, conv: Conversation, details: dict[str, Any]) -> str | None:
        """A caller with no booking in this conversation: look their appointment up by the
        e-mail or phone they give (the vendor's records, so it works from any conversation).
        Returns what to say when it cannot settle on one appointment."""
        conv.patient.update({k: v for k, v in details.pop("patient", {}).items() if v})
        who = {k: conv.patient[k] for k in ("email", "phone") if conv.patient.get(k)}
        if not who:
            return "Could you give me the e-mail address or phone number you booked with?"
        now = dt.datetime.now(self.zone)
        window = {"start": now, "end": now + self.lookahead}
        try:
            found = self._call(lambda: self._api("find_appointments", provider=self.provider, **who, **window))
        except pms.ValidationError as exc:
            return self._ask_for(exc)
        except pms.PMSError as exc:
            return self._failure(exc, "search", None)
        if not found:
            return "I can't find an upcoming appointment under those details. When was it booked for?"
        if len(found) > 1:  # a real bot would ask which one; the script keeps the first
            log.warning("%d upcoming appointments found; using the earliest", len(found))
        conv.appointment = found[0]
        return None

    def _reschedule(self, conv: Conversation, details: dict[str, Any]) -> str:
        if conv.appointment is None and (question := self._find_existing(conv, details)):
            return question
        assert conv.appointment is not None
        changes = {"start": details["start"], "duration_minutes": details.get("duration_minutes", 30)}
        changes["timezone"] = self.zone.key
        appointment_id = conv.appointment.id
        try:
            moved = self._call(lambda: self._api("update_appointment", appointment_id, changes, provider=self.provider))
        except pms.ValidationError as exc:
            return self._ask_for(exc)
        except pms.ConflictError:
            return "That time is taken, I'm afraid. Is there another time that suits you?"
        except pms.NotFoundError:
            return "I can't find that appointment any more; let me put you through to the front desk."
        except pms.PMSError as exc:
            return self._failure(exc, "change", None)
        conv.appointment = moved
        return f"Done: I've moved you to {self._say(moved.start)}."

    def _cancel(self, conv: Conversation, details: dict[str, Any]) -> str:
        if conv.appointment is None and (question := self._find_existing(conv, details)):
            return question
        assert conv.appointment is not None
        appointment_id = conv.appointment.id
        reason = details.get("reason")
        try:
            # Cancelling twice succeeds on every provider, so a retried turn is harmless.
            self._call(lambda: self._api("cancel_appointment", appointment_id, reason=reason, provider=self.provider))
        except pms.NotFoundError:
            return "That appointment is no longer in the calendar, so there is nothing to cancel."
        except pms.PMSError as exc:
            return self._failure(exc, "cancellation", None)
        conv.appointment = None
        return "Your appointment is cancelled. Call us any time to book again."

    # -- outcomes ---------------------------------------------------------------------------

    def _call(self, send: Callable[[], T]) -> T:
        """Send a request; on a rate limit or an unknown outcome, send the *same* request again.

        The library has already retried what is safe to retry within its own limits; what
        reaches us needs a decision. ``send`` always sends the same request (same reference).
        """
        unknown_once = False
        rate_limited = 0
        while True:
            try:
                return send()
            except pms.RateLimitError as exc:
                rate_limited += 1
                wait = exc.retry_after if exc.retry_after is not None else 2.0
                if rate_limited > 2 or wait > self.max_wait:
                    raise
                log.warning("rate limited by %s; waiting %.1f s, then the same request again", exc.provider, wait)
                self.sleep(wait)
            except pms.ProviderError as exc:
                if not exc.outcome_unknown or unknown_once:
                    raise
                unknown_once = True
                log.warning("outcome unknown for reference %s; retrying the same request", exc.reference)
                self.sleep(1.0)

    def _ask_for(self, exc: pms.ValidationError) -> str:
        for path in exc.fields:
            if path in QUESTIONS:
                return QUESTIONS[path]
        log.error("invalid request built by the bot: %s", exc)
        return "Sorry, I didn't catch all of that. Could you tell me the day and time again?"

    def _failure(self, exc: pms.PMSError, what: str, reference: str | None) -> str:
        if isinstance(exc, pms.ProviderError) and exc.outcome_unknown:
            log.error("%s %s may exist; staff to confirm: %s", what, reference, exc)
            return (
                f"I'm still confirming that {what} with the clinic's calendar. A team member will "
                f"text you to confirm within the hour; your reference is {reference}."
            )
        if isinstance(exc, (pms.ProviderNotConfiguredError, pms.UnsupportedOperationError)):
            log.error("online %s unavailable (operators: %s)", what, exc)
            return f"I can't make that {what} online right now. Let me put you through to the front desk."
        if isinstance(exc, pms.RateLimitError):
            return "Our booking system is very busy right now. Could I call you back in a few minutes?"
        log.error("%s failed: %r", what, exc)
        return "I couldn't reach the clinic's calendar, so nothing has changed. Shall I try again in a minute?"

    # -- helpers ----------------------------------------------------------------------------

    def _api(self, name: str, *args: Any, **kwargs: Any) -> Any:
        target: Any = self.client if self.client is not None else pms
        return getattr(target, name)(*args, **kwargs)

    def _free_slots(self, start: str | dt.datetime, end: str | dt.datetime, minutes: int = 30) -> list[pms.Slot]:
        slots: list[pms.Slot] = self._call(
            lambda: self._api("free_slots", start, end, duration_minutes=minutes, provider=self.provider)
        )
        return slots

    def _next_slot(self, start: str | dt.datetime, minutes: int) -> dt.datetime | None:
        """The first free slot after the one that was taken, the same day (None: none left)."""
        when = start if isinstance(start, dt.datetime) else dt.datetime.fromisoformat(start)
        local = when.astimezone(self.zone)
        end_of_day = local.replace(hour=23, minute=59)
        try:
            slots = self._free_slots(local, end_of_day, minutes)
        except pms.PMSError as exc:  # no slot search here (or it failed): ask instead of guessing
            log.warning("no free-slot search: %s", exc)
            return None
        later = [s.start for s in slots if s.start > local]
        return later[0] if later else None

    def _say(self, when: dt.datetime | None) -> str:
        if when is None:
            return "the time we agreed"
        local = when.astimezone(self.zone)
        return local.strftime("%A %B %d at %I:%M %p").replace(" 0", " ")


# -- the scripted conversation ------------------------------------------------------------------


def _say(who: str, text: str) -> None:
    print(f"{who:>8}: {text}")


def main() -> int:
    from pms_integration.sandbox import Fault
    from pms_integration.testing import sandbox_session

    # Log lines go to stdout, so they appear in order between the turns they explain.
    logging.basicConfig(level=logging.WARNING, format="  [%(name)s] %(message)s", stream=sys.stdout)
    start = dt.datetime(2030, 3, 5, 10, 0, tzinfo=ZoneInfo("America/New_York"))

    # Any provider shows the ConflictError path now (GoHighLevel refuses a taken slot itself;
    # on Salesforce and HubSpot the library checks first); the faults below name GoHighLevel's.
    with sandbox_session(default_provider="gohighlevel") as session:
        sandbox = session.sandbox
        bot = ReceptionistBot(lookahead_days=6 * 366)  # the script's appointments are in 2030

        def turn(conversation: str, patient_says: str, intent: str, details: dict[str, Any] | None = None) -> str:
            _say("Patient", patient_says)
            reply = bot.handle(conversation, intent, details)
            _say("Bot", reply)
            return reply

        print("--- Jane asks what is free, then books; the bot asks for the detail it is missing (ValidationError)")
        turn("jane", "Hi, I'm Jane Doe. What do you have on Tuesday morning?", "offer_slots",
             {"from": start.replace(hour=9).isoformat(), "until": start.replace(hour=12).isoformat()})  # fmt: skip
        turn("jane", "10 would be great, for a cleaning.", "book",
             {"start": start.isoformat(), "title": "Cleaning", "patient": {"name": "Jane Doe"}})  # fmt: skip
        turn("jane", "Sure, it's jane.doe@example.com.", "book", {"patient": {"email": "jane.doe@example.com"}})

        # Meanwhile staff block 10:30-11:00 for a meeting, in the CRM itself.
        sandbox.block_time("ghl", start + dt.timedelta(minutes=30), start + dt.timedelta(hours=1), "Staff meeting")

        print("\n--- John wants the same slot; the bot offers the next free one (ConflictError, free_slots)")
        turn("john", "John Smith, john@example.com. Tuesday at 10 please.", "book",
             {"start": start.isoformat(), "patient": {"name": "John Smith", "email": "john@example.com"}})  # fmt: skip
        turn("john", "11 works.", "accept_offer")

        print("\n--- Ana books while the calendar is busy (RateLimitError: wait, same request again)")
        # Three 429s in a row outlast the library's own three attempts, so the bot sees one.
        sandbox.inject("ghl", Fault.rate_limit(retry_after=0.2), operation="appointments.create", times=3)
        turn("ana", "Ana Ruiz, +1 555 555 0188. Tuesday at 2pm?", "book",
             {"start": (start + dt.timedelta(hours=4)).isoformat(), "patient": {"name": "Ana Ruiz", "phone": "+1 555 555 0188"}})  # fmt: skip

        print("\n--- Lee books; the answer is lost (outcome_unknown: same reference, never a new one)")
        # The request is dropped before the calendar stores it, and the library's look-up by
        # reference fails too, so nobody can tell whether the booking exists. The bot retries
        # the same request under the same reference, which books it exactly once.
        sandbox.inject("ghl", Fault.drop(), operation="appointments.create", times=1)
        sandbox.inject("ghl", Fault.expired_token(), operation="appointments.list", times=1)
        turn("lee", "Lee Park, lee@example.com, Tuesday 3pm.", "book",
             {"start": (start + dt.timedelta(hours=5)).isoformat(), "patient": {"name": "Lee Park", "email": "lee@example.com"}})  # fmt: skip
        lee_bookings = [b for b in session.state("ghl")["bookings"] if "reference: lee-1" in b["description"]]
        print(f"  (the calendar holds {len(lee_bookings)} booking with reference lee-1)")

        print("\n--- A week later Jane calls back (a new conversation, no booking id): found by e-mail, moved")
        turn("jane-again", "Hi, it's Jane Doe. I need to move my appointment.", "reschedule",
             {"start": (start + dt.timedelta(days=1, hours=4)).isoformat()})  # fmt: skip
        turn("jane-again", "It's jane.doe@example.com. Wednesday at 2, please.", "reschedule",
             {"patient": {"email": "jane.doe@example.com"}, "start": (start + dt.timedelta(days=1, hours=4)).isoformat()})  # fmt: skip

        print("\n--- John cancels (same conversation: the bot still has his booking)")
        turn("john", "Something came up, please cancel.", "cancel", {"reason": "Patient called to cancel"})

        print("\n--- A second practice whose Salesforce is not set up yet (ProviderNotConfiguredError)")
        with pms.PMSClient(environ={}, env_file=None) as unconfigured:
            other = ReceptionistBot(client=unconfigured, provider="salesforce")
            _say("Patient", "Book me Thursday at 9, sam@example.com.")
            _say("Bot", other.handle("sam", "book", {"start": (start + dt.timedelta(days=2, hours=-1)).isoformat(),
                                                    "patient": {"name": "Sam", "email": "sam@example.com"}}))  # fmt: skip

        bookings = session.state("ghl")["bookings"]
        live = [b for b in bookings if b["appointmentStatus"] != "cancelled"]
        # the library keeps the reference in the appointment's description, not in its title
        references = [b["description"].split("Booking reference: ", 1)[-1].split()[0] for b in bookings]
        assert len(references) == len(set(references)), "a reference was booked twice"
        assert len(bookings) == 4 and len(live) == 3, bookings
        print(f"\nAll conversations finished: {len(live)} live bookings, 1 cancelled, no reference booked twice.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
