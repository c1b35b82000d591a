"""pms_integration.aio: the same operations awaited, with the same results, errors and guarantees.

Coroutines run with ``asyncio.run`` inside ordinary tests (no pytest-asyncio), each await bounded
by a generous give-up so a hang fails instead of stalling the suite. Nothing asserts on timing:
cancellations land at points chosen by a seeded random generator, counted in requests the
sandbox has received (an event from its threads), never in seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import inspect
import logging
import random
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import attrs
import pytest

import pms_integration as pms
from pms_integration import _default, aio
from pms_integration._retry import RetryPolicy
from pms_integration.aio import AsyncPMSClient
from pms_integration.client import PMSClient
from pms_integration.sandbox import Fault, Sandbox
from pms_integration.state import reset_memory_state

T = TypeVar("T")

#: How long any one test's coroutine may take before the test fails (a hang, not a timing).
HANG = 120.0
VENDORS = ["gohighlevel", "salesforce", "hubspot"]
#: the operation that makes each vendor's booking record (Salesforce, linking the patient as it
#: does by default: the second of two composite requests)
CREATE = {"gohighlevel": "appointments.create", "salesforce": "composite", "hubspot": "meetings.create"}
FAST = RetryPolicy(max_attempts=3, backoff_initial=0.02, backoff_max=0.1, jitter=0.02)
START = dt.datetime(2030, 1, 7, 9, 0, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
REPORT = {"period_start": "2030-03-01", "period_end": "2030-03-07", "metrics": {"calls handled": 142}}
MOVE = {"start": "2030-03-06T14:00:00-05:00", "duration_minutes": 45}
#: find_appointments looks at upcoming weeks by default: the window of these tests' bookings
WINDOW = {"start": "2030-01-01T00:00:00-05:00", "end": "2030-01-30T00:00:00-05:00"}


def run(coro: Awaitable[T]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, HANG)

    return asyncio.run(bounded())


def request_for(i: int, prefix: str = "aio") -> dict[str, Any]:
    """Booking ``i``: a slot of its own (weekdays, 9:00 to 16:30), a patient of its own."""
    day, slot = divmod(i, 16)
    start = START + dt.timedelta(days=7 * (day // 5) + day % 5, minutes=30 * slot)
    return {
        "start": start.isoformat(),
        "duration_minutes": 30,
        "timezone": "America/New_York",
        "title": "Cleaning",
        "patient": {"name": f"Patient {prefix} {i}", "email": f"{prefix}.{i}@example.com", "phone": f"+1555{i:07d}"},
        "reference": f"{prefix}-{i:04d}",
    }


def environ(sb: Sandbox, vendor: str, **extra: str) -> dict[str, str]:
    return {**sb.environ(default_provider=vendor), **extra}


@pytest.fixture(params=VENDORS)
def vendor(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@contextlib.contextmanager
def latency(sb: Sandbox, seconds: float) -> Iterator[None]:
    """The module's sandbox answers every request ``seconds`` late (then on time again)."""
    before, sb.latency = sb.latency, seconds
    try:
        yield
    finally:
        sb.latency = before


class Landed:
    """Requests the sandbox has received so far, as an event on the test's loop: ``await
    landed.reached(n)`` returns once n requests were answered (or dropped)."""

    def __init__(self, sb: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        self.loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        record = sb._record

        def recording(*args: Any, **kwargs: Any) -> None:
            record(*args, **kwargs)
            with contextlib.suppress(RuntimeError):  # the test's loop is gone
                self.loop.call_soon_threadsafe(self._bump)

        monkeypatch.setattr(sb, "_record", recording)

    def _bump(self) -> None:
        self.count += 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def reached(self, n: int) -> None:
        while self.count < n:
            await self._changed.wait()


def creates(sb: Sandbox, vendor: str) -> int:
    """The booking records the vendor holds."""
    return len(sb.state(vendor)["bookings"])


# -------------------------------------------------------------------------------------------------
# parity: the same operations, the same parameters


IO_METHODS = [
    "book_appointment",
    "recover_booking",
    "update_appointment",
    "cancel_appointment",
    "push_performance_report",
    "free_slots",
    "find_patient",
    "get_appointment",
    "find_appointments",
    "check_state",
    "providers",
    "changes",
    "classify_observed",
    "parse_webhook",
]
#: PMSClient's public methods that do no I/O (plain methods on AsyncPMSClient too), and the rest
PLAIN_METHODS = ["enabled_providers", "resolve", "adapter", "rate_limit_info", "on_change"]
NOT_MIRRORED = ["close", "acquire", "release", "retire"]  # close is aclose(); the rest are deprecated


def _public_methods(cls: type) -> set[str]:
    return {n for n, v in vars(cls).items() if not n.startswith("_") and inspect.isfunction(v)}


def test_every_io_method_of_the_client_has_an_async_twin_with_the_same_parameters() -> None:
    assert _public_methods(PMSClient) == {*IO_METHODS, *PLAIN_METHODS, *NOT_MIRRORED}, "a new method: mirror it"
    for name in IO_METHODS:
        twin = getattr(AsyncPMSClient, name)
        assert inspect.iscoroutinefunction(twin), name
        assert inspect.signature(twin) == inspect.signature(getattr(PMSClient, name)), name
        assert twin.__doc__, name
    for name in PLAIN_METHODS:
        twin = getattr(AsyncPMSClient, name)
        assert not inspect.iscoroutinefunction(twin), name
        assert inspect.signature(twin) == inspect.signature(getattr(PMSClient, name)), name
    assert inspect.iscoroutinefunction(AsyncPMSClient.aclose)
    init, sync_init = inspect.signature(AsyncPMSClient), inspect.signature(PMSClient)
    for name, parameter in init.parameters.items():
        assert sync_init.parameters[name] == parameter, name


#: module-level names of pms_integration that are not operations (nothing to await)
NOT_OPERATIONS = {"get_client", "use_client", "set_report_source", "load_config", "on_change"}


def _module_operations() -> dict[str, Callable[..., Any]]:
    return {
        name: getattr(pms, name)
        for name in pms.__all__
        if inspect.isfunction(getattr(pms, name)) and getattr(pms, name).__name__ == name and name not in NOT_OPERATIONS
    }


def test_every_module_operation_has_an_async_twin_with_the_same_parameters() -> None:
    operations = _module_operations()
    assert {"book_appointment", "free_slots", "check_state", "providers", "reload"} <= set(operations)
    for name, function in operations.items():
        twin = getattr(aio, name)
        assert inspect.iscoroutinefunction(twin), name
        assert inspect.signature(twin).parameters == inspect.signature(function).parameters, name
        assert name in aio.__all__
    # registering a callback does no I/O: a plain function in both APIs, with the same parameters
    assert not inspect.iscoroutinefunction(aio.on_change)
    assert inspect.signature(aio.on_change).parameters == inspect.signature(pms.on_change).parameters


def test_the_camel_case_aliases_mirror_the_sync_ones() -> None:
    aliases = {
        name: getattr(pms, name).__name__
        for name in pms.__all__
        if inspect.isfunction(getattr(pms, name)) and getattr(pms, name).__name__ != name
    }
    assert {"bookAppointment", "getFreeSlots", "checkState"} <= set(aliases)
    for alias, target in aliases.items():
        assert getattr(aio, alias) is getattr(aio, target), alias
        assert alias in aio.__all__


def test_importing_the_package_imports_neither_aio_nor_its_dependencies() -> None:
    import subprocess
    import sys

    code = (
        "import sys, pms_integration\n"
        "pms_integration.PMSClient(environ={}, env_file=None).providers()\n"
        "bad = [m for m in ('pms_integration.aio', 'pms_integration._aio_http', 'aiohttp', 'greenlet') if m in sys.modules]\n"
        "assert not bad, bad\n"
        "import pms_integration.aio\n"
        "bad = [m for m in ('aiohttp', 'greenlet') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd="/")


# -------------------------------------------------------------------------------------------------
# end to end on every vendor: the same results and the same requests as the sync API


def _plain(value: Any) -> Any:
    """A result with what differs between two runs left out (vendor ids, raw bodies, timings)."""
    if attrs.has(type(value)):
        skip = {"id", "raw", "contact_id", "round_trip_ms"}
        return (
            type(value).__name__,
            {k: _plain(v) for k, v in attrs.asdict(value, recurse=False).items() if k not in skip},
        )
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


async def _scenario(call: Callable[..., Awaitable[Any]], vendor: str, sb: Sandbox) -> list[tuple[str, Any, list[str]]]:
    """Every operation once; each step's result (as :func:`_plain`) and the requests it sent."""
    steps: list[tuple[str, Any, list[str]]] = []
    request = request_for(1, "e2e")

    async def step(name: str, *args: Any, **kwargs: Any) -> Any:
        mark = len(sb.records)
        result = await call(name, *args, **kwargs)
        steps.append((name, _plain(result), [r.operation for r in list(sb.records)[mark:]]))
        return result

    booked = await step("book_appointment", request)
    await step("book_appointment", request)  # the same reference: remembered, nothing sent
    await step("recover_booking", request)
    await step("get_appointment", booked.id)
    await step("find_appointments", reference=request["reference"], **WINDOW)
    if vendor == "hubspot":
        sb.emulator("hubspot").settle()  # type: ignore[attr-defined]
    await step("find_patient", email=request["patient"]["email"])
    await step("find_appointments", email=request["patient"]["email"], **WINDOW)
    await step("free_slots", "2030-03-05T09:00:00-05:00", "2030-03-05T12:00:00-05:00")
    await step("update_appointment", booked.id, MOVE)
    await step("cancel_appointment", booked.id, reason="Patient called to cancel")
    await step("push_performance_report", REPORT)
    await step("check_state")
    await step("providers")
    return steps


def test_every_operation_gives_the_same_results_and_sends_the_same_requests(sb: Sandbox, vendor: str) -> None:
    env = environ(sb, vendor)

    async def synchronously() -> list[tuple[str, Any, list[str]]]:
        with PMSClient(environ=env, env_file=None) as client:

            async def call(name: str, *args: Any, **kwargs: Any) -> Any:
                return getattr(client, name)(*args, **kwargs)

            return await _scenario(call, vendor, sb)

    async def awaited() -> list[tuple[str, Any, list[str]]]:
        async with AsyncPMSClient(environ=env, env_file=None) as client:

            async def call(name: str, *args: Any, **kwargs: Any) -> Any:
                return await getattr(client, name)(*args, **kwargs)

            return await _scenario(call, vendor, sb)

    expected = run(synchronously())
    sb.reset()
    reset_memory_state()
    got = run(awaited())
    assert [s[0] for s in got] == [s[0] for s in expected]
    for (name, result, sent), (_, want, want_sent) in zip(got, expected):
        assert sent == want_sent, name
        assert result == want, name
    assert got[1][2] == [], "the same reference was sent again"


def test_the_module_functions_run_on_a_default_client_per_loop_closed_with_it(
    sb: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(aio, "_config", None)  # what reload() applies below is undone after the test
    for key, value in environ(sb, "gohighlevel").items():
        monkeypatch.setenv(key, value)
    request = request_for(2, "module")

    async def first() -> tuple[pms.Appointment, AsyncPMSClient]:
        booked = await aio.bookAppointment(request)
        assert (await aio.getAppointment(booked.id)).id == booked.id
        assert [a.id for a in await aio.findAppointments(reference=request["reference"], **WINDOW)] == [booked.id]
        assert await aio.providers() == pms.PMSClient(env_file=None).providers()
        assert (await aio.checkState()).kind == "memory"
        client = await aio.get_client()
        assert client is await aio.get_client()
        return booked, client

    booked, client = run(first())
    assert client.closed, "the loop's default client is closed when the loop shuts down"
    mark = len(sb.records)

    async def second() -> AsyncPMSClient:
        assert (await aio.book_appointment(request)).id == booked.id  # a new loop, the same memory
        assert len(sb.records) == mark
        old = await aio.get_client()
        fresh = await aio.reload({**environ(sb, "gohighlevel"), "PMS_DEADLINE_MS": "20000"}, env_file=None)
        assert fresh is await aio.get_client() and fresh is not old and fresh.config.deadline == 20.0
        assert (await aio.cancel_appointment(booked.id)).status == pms.AppointmentStatus.CANCELLED
        with pytest.raises(pms.ConfigurationError):
            await aio.reload({"PMS_DEFAULT_PROVIDER": "hubspot"}, env_file=None)
        assert await aio.get_client() is fresh
        return old

    old = run(second())
    assert old.closed
    assert _default._client is None, "the sync API's default client was not touched"


# -------------------------------------------------------------------------------------------------
# errors: the same classes, raised at the same point


BAD_CALLS: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
    ("book_appointment", ({"start": "2030-03-05T10:00:00", "patient": {}},), {}),
    ("book_appointment", (request_for(3),), {"provider": "nope"}),
    ("book_appointment", ({**request_for(3), "start": "2001-03-05T10:00:00-05:00"},), {}),
    ("update_appointment", ("../etc/passwd", MOVE), {}),
    ("cancel_appointment", ("x" * 300,), {"reason": 5}),
    ("get_appointment", ("a/b",), {}),
    ("free_slots", ("2030-03-05T09:00:00-05:00", "2030-05-05T09:00:00-05:00"), {}),
    ("find_patient", (), {}),
    ("find_appointments", (), {"start": "tomorrow"}),
    ("push_performance_report", ({"period_start": "2030-03-07", "period_end": "2030-03-01", "metrics": {}},), {}),
]


def _error_facts(error: BaseException) -> tuple[Any, ...]:
    return (type(error), str(error), getattr(error, "errors", None), getattr(error, "outcome_unknown", None))


def test_bad_input_raises_the_same_errors_before_any_request(sb: Sandbox, vendor: str) -> None:
    env = environ(sb, vendor)
    with PMSClient(environ=env, env_file=None) as client:
        expected = []
        for name, args, kwargs in BAD_CALLS:
            with pytest.raises(pms.PMSError) as info:
                getattr(client, name)(*args, **kwargs)
            expected.append(_error_facts(info.value))

    async def awaited() -> list[tuple[Any, ...]]:
        got = []
        async with AsyncPMSClient(environ=env, env_file=None) as client:
            for name, args, kwargs in BAD_CALLS:
                with pytest.raises(pms.PMSError) as info:
                    await getattr(client, name)(*args, **kwargs)
                got.append(_error_facts(info.value))
        return got

    assert run(awaited()) == expected
    assert sb.request_count() == 0


def test_vendor_errors_are_the_same_typed_errors(sb: Sandbox, vendor: str) -> None:
    """A read answered 503 every time (retried, then ServerError), a create refused with 400
    (nothing made: InvalidRequestError, not outcome_unknown): the same classes and facts."""
    env = environ(sb, vendor, PMS_SALESFORCE_PATIENT_RECORD="off")  # Salesforce's create: sobjects.create
    create = {**CREATE, "salesforce": "sobjects.create"}[vendor]
    calls: list[tuple[Fault, str, Callable[[Any], Any]]] = [
        (Fault.server_error(503), "*", lambda c: c.find_patient(email="jane@example.com")),
        (Fault.server_error(400), create, lambda c: c.book_appointment(request_for(4))),
    ]

    def facts(error: BaseException) -> tuple[Any, ...]:
        return (*_error_facts(error), getattr(error, "status_code", None))

    expected = []
    with PMSClient(environ=env, env_file=None, retry_policy=FAST) as client:
        for fault, operation, call in calls:
            sb.reset()
            sb.inject(vendor, fault, operation=operation)
            with pytest.raises(pms.ProviderError) as info:
                call(client)
            expected.append(facts(info.value))

    async def awaited() -> list[tuple[Any, ...]]:
        got = []
        async with AsyncPMSClient(environ=env, env_file=None, retry_policy=FAST) as client:
            for fault, operation, call in calls:
                sb.reset()
                sb.inject(vendor, fault, operation=operation)
                with pytest.raises(pms.ProviderError) as info:
                    await call(client)
                got.append(facts(info.value))
        return got

    reset_memory_state()
    assert run(awaited()) == expected
    assert [e[0] for e in expected] == [pms.ServerError, pms.InvalidRequestError]


def test_a_closed_client_and_a_missing_extra_are_configuration_errors(
    sb: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def closed() -> None:
        client = AsyncPMSClient(environ=environ(sb, "hubspot"), env_file=None)
        assert repr(client) == "<AsyncPMSClient enabled: gohighlevel, salesforce, hubspot>"
        await client.aclose()
        assert "closed" in repr(client)
        with pytest.raises(pms.ConfigurationError, match="closed"):
            await client.get_appointment("1:2")
        await client.aclose()  # twice is fine

    run(closed())
    with pytest.raises(pms.ConfigurationError, match="config must be a PMSConfig"):
        AsyncPMSClient({"PMS_GHL_API_KEY": "x"})  # type: ignore[arg-type]
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(pms.ConfigurationError, match=r"\[aio\] extra") as info:
        AsyncPMSClient(environ={}, env_file=None)
    assert list(info.value.missing) == ["greenlet", "aiohttp"]


# -------------------------------------------------------------------------------------------------
# cancellation: never an orphan, never a duplicate


@pytest.mark.parametrize("vendor", VENDORS)
def test_cancelling_100_awaited_creates_at_random_points_then_retrying_books_each_reference_once(
    sb: Sandbox, vendor: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """THE acceptance: 100 concurrent bookings, each cancelled once the sandbox has received a
    random number of requests (seeded); the vendor holds each create's answer after making the
    record, so many cancellations land between the record and its answer. Then every request is
    retried with its reference: each returns its booking and the vendor has exactly one record
    per reference."""
    caplog.set_level(logging.INFO, logger="pms_integration")
    rng = random.Random(f"cancel-100-{vendor}")
    requests = [request_for(i, f"c{vendor[:2]}") for i in range(100)]
    per_booking = {"gohighlevel": 3, "salesforce": 3, "hubspot": 5}[vendor]
    # bookings go in ten waves of ten; each is cancelled once the sandbox has received a random
    # number of requests since its wave began: before its first request, between two, after its
    # create made the record but before the answer, or never (it finished first)
    waves = [requests[n : n + 10] for n in range(0, len(requests), 10)]
    targets = [rng.randrange(0, per_booking * 12) for _ in requests]
    # rate limits are another test's subject: lifted here, on both sides, so 100 bookings fit in
    # one deadline (HubSpot's emulator keeps the vendor's burst window and search rate by default)
    env = environ(sb, vendor, PMS_GHL_RATE_LIMIT="off", PMS_HUBSPOT_RATE_LIMIT="off")
    if vendor == "hubspot":
        monkeypatch.setattr(sb.emulator("hubspot"), "burst_limit", None)
        monkeypatch.setattr(sb.emulator("hubspot"), "search_rate", None)
    sb.inject(vendor, Fault.delay(0.05), operation=CREATE[vendor])  # the record is made, its answer held

    async def main() -> tuple[list[str], list[pms.Appointment]]:
        landed = Landed(sb, monkeypatch)
        async with AsyncPMSClient(environ=env, env_file=None, retry_policy=FAST) as client:

            async def cancelled_at(i: int, mark: int) -> str:
                booking = asyncio.ensure_future(client.book_appointment(requests[i]))
                reached = asyncio.ensure_future(landed.reached(mark + targets[i]))
                await asyncio.wait({booking, reached}, return_when=asyncio.FIRST_COMPLETED)
                reached.cancel()
                booking.cancel()
                try:
                    await booking
                except asyncio.CancelledError:
                    return "cancelled"
                except pms.PMSError as exc:  # a failure the retry settles (none expected)
                    return type(exc).__name__
                return "finished"

            outcomes: list[str] = []
            for n, wave in enumerate(waves):
                mark = landed.count
                outcomes += await asyncio.gather(*(cancelled_at(10 * n + i, mark) for i in range(len(wave))))
            # the retries start at once: some creates are still running in the background
            retried = await asyncio.gather(*(client.book_appointment(r) for r in requests))
        return outcomes, retried

    with latency(sb, 0.005):
        outcomes, retried = run(main())
    tally = {o: outcomes.count(o) for o in set(outcomes)}
    assert tally.get("cancelled", 0) >= 10 and tally.get("finished", 0) >= 1, tally
    assert [a.reference for a in retried] == [r["reference"] for r in requests]
    ids = {a.id for a in retried}
    assert len(ids) == len(requests), "two references share one booking"
    bookings = sb.state(vendor)["bookings"]
    # 100 distinct bookings returned and 100 records at the vendor: exactly one per reference
    assert len(bookings) == len(requests), (tally, len(bookings))
    assert "was itself cancelled" not in caplog.text, "aclose() let every background create finish"
    # cancellations landed mid-flight: creates whose callers were gone went on and were settled
    went_on = caplog.text.count("a create whose caller was cancelled finished")
    assert went_on >= 1, tally
    print(vendor, tally, "creates that went on without their caller:", went_on)


def test_concurrent_async_bookings_of_one_reference_create_once(sb: Sandbox, vendor: str) -> None:
    request = request_for(5, "same")

    async def main() -> list[pms.Appointment]:
        async with AsyncPMSClient(environ=environ(sb, vendor), env_file=None) as client:
            return await asyncio.gather(*(client.book_appointment(request) for _ in range(20)))

    with latency(sb, 0.005):
        booked = run(main())
    assert len({a.id for a in booked}) == 1
    assert creates(sb, vendor) == 1


def test_a_cancelled_create_finishes_in_the_background_and_aclose_waits_for_it(
    sb: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    request = request_for(6, "bg")
    sb.inject("hubspot", Fault.delay(0.2), operation=CREATE["hubspot"], times=1)
    env = environ(sb, "hubspot")

    async def main() -> None:
        landed = Landed(sb, monkeypatch)
        client = AsyncPMSClient(environ=env, env_file=None)
        booking = asyncio.ensure_future(client.book_appointment(request))
        await landed.reached(1)  # the conflict check is answered: the create is on its way
        booking.cancel()
        with pytest.raises(asyncio.CancelledError):
            await booking
        assert client._creates, "the create goes on"
        await client.aclose()  # waits for it
        assert not client._creates
        assert creates(sb, "hubspot") == 1
        mark = len(sb.records)
        async with AsyncPMSClient(environ=env, env_file=None) as again:  # the same memory:// store
            assert (await again.book_appointment(request)).reference == request["reference"]
        assert len(sb.records) == mark, "the retry was answered from the booking memory"

    run(main())


def test_a_cancelled_read_stops_where_it_waits_and_the_client_goes_on(
    sb: Sandbox, vendor: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = environ(sb, vendor)

    async def main() -> None:
        async with AsyncPMSClient(environ=env, env_file=None) as client:
            booked = await client.book_appointment(request_for(7, "read"))
            landed = Landed(sb, monkeypatch)
            sb.inject(vendor, Fault.delay(5), operation="*", times=1)  # its answer held far longer than needed
            read = asyncio.ensure_future(client.get_appointment(booked.id))
            await landed.reached(1)  # the read's request was answered by the sandbox (its answer is held)
            read.cancel()
            with pytest.raises(asyncio.CancelledError):
                await read
            assert not client._creates
            sb.clear_faults()
            assert (await client.get_appointment(booked.id)).id == booked.id

    run(main())


def test_the_deadline_bounds_a_call_that_would_wait_forever(sb: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    """The safety net: a call still waiting past its deadline is stopped with a typed error."""
    from pms_integration import _green

    monkeypatch.setattr(aio, "DEADLINE_GRACE", 0.0)

    def stuck() -> None:
        _green.await_only(asyncio.Event().wait())

    async def main() -> None:
        async with AsyncPMSClient(environ={**sb.environ(), "PMS_DEADLINE_MS": "1000"}, env_file=None) as client:
            with pytest.raises(pms.TransportError, match="deadline") as info:
                await client._call(True, stuck)
            assert info.value.outcome_unknown

    run(main())


# -------------------------------------------------------------------------------------------------
# the rate limiter under asyncio


def test_the_rate_limiter_keeps_concurrent_async_calls_within_the_vendors_limit(sb: Sandbox) -> None:
    async def main() -> None:
        async with AsyncPMSClient(environ=environ(sb, "gohighlevel"), env_file=None) as client:
            booked = await client.book_appointment(request_for(8, "limit"))
        sb.set_rate_limit("gohighlevel", 5, 1.0)
        before = sb.request_count("gohighlevel")
        env = environ(sb, "gohighlevel", PMS_GHL_RATE_LIMIT="5/1")
        async with AsyncPMSClient(environ=env, env_file=None) as client:
            got = await asyncio.gather(*(client.get_appointment(booked.id) for _ in range(16)))
        assert {a.id for a in got} == {booked.id}
        assert sb.request_count("gohighlevel") - before == 16
        assert sb.request_count("gohighlevel", status=429) == 0 and sb.rate_limited == 0

    run(main())


# -------------------------------------------------------------------------------------------------
# token refresh and shared state under asyncio


def test_sixteen_concurrent_calls_on_an_expired_salesforce_token_refresh_it_once(sb: Sandbox) -> None:
    org: Any = sb.emulator("salesforce")
    env = environ(sb, "salesforce", **org.refresh_environ())

    async def main() -> None:
        async with AsyncPMSClient(environ=env, env_file=None) as client:
            booked = await client.book_appointment(request_for(9, "refresh"))
            org.expire_token()
            moved = await asyncio.gather(
                *(client.update_appointment(booked.id, {"location": f"Chair {n}"}) for n in range(16))
            )
            assert {a.id for a in moved} == {booked.id}

    run(main())
    assert sb.state("salesforce")["token_refreshes"] == 1


def _books_each_reference_once_through(sb: Sandbox, state: str) -> None:
    """Two async clients on one shared store (SQLite or Redis, reached off the loop) book ten
    references, each five times at once across both: one record per reference."""
    requests = [request_for(i, "shared") for i in range(10)]
    env = environ(sb, "gohighlevel")

    async def main() -> list[pms.Appointment]:
        async with (
            AsyncPMSClient(environ=env, env_file=None, state=state) as one,
            AsyncPMSClient(environ=env, env_file=None, state=state) as two,
        ):
            assert type(one.state).__name__ == "OffLoopStore"
            calls = [(one if n % 2 else two).book_appointment(r) for r in requests for n in range(5)]
            return await asyncio.gather(*calls)

    with latency(sb, 0.005):
        booked = run(main())
    by_reference: dict[str | None, set[str]] = {}
    for appointment in booked:
        by_reference.setdefault(appointment.reference, set()).add(appointment.id)
    assert all(len(ids) == 1 for ids in by_reference.values()) and len(by_reference) == len(requests)
    assert creates(sb, "gohighlevel") == len(requests)


def test_a_sqlite_state_store_books_each_reference_once(sb: Sandbox, tmp_path: Any) -> None:
    _books_each_reference_once_through(sb, f"sqlite:///{tmp_path}/state.db")


def test_a_redis_state_store_books_each_reference_once(sb: Sandbox, redis_url: str, redis_namespace: str) -> None:
    separator = "&" if "?" in redis_url else "?"
    _books_each_reference_once_through(sb, f"{redis_url}{separator}namespace={redis_namespace}")


#: where each vendor keeps a pushed report
REPORT_RECORDS = {"gohighlevel": "notes", "salesforce": "tasks", "hubspot": "notes"}


def test_a_cancelled_report_push_retried_at_once_makes_one_record(
    sb: Sandbox, vendor: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A push whose caller is cancelled goes on; the retries (five at once, the same report)
    wait for it and update the record it made, never a second one."""
    env = environ(sb, vendor)

    async def main() -> list[pms.ReportReceipt]:
        landed = Landed(sb, monkeypatch)
        async with AsyncPMSClient(environ=env, env_file=None) as client:
            first = asyncio.ensure_future(client.push_performance_report(REPORT))
            await landed.reached(1)
            first.cancel()
            with pytest.raises(asyncio.CancelledError):
                await first
            return await asyncio.gather(*(client.push_performance_report(REPORT) for _ in range(5)))

    with latency(sb, 0.01):
        receipts = run(main())
    assert len({r.id for r in receipts}) == 1
    assert len(sb.state(vendor)[REPORT_RECORDS[vendor]]) == 1
