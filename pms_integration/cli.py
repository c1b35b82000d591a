"""The ``pms-integration`` command (also ``python -m pms_integration``); see docs/getting-started.md.

Errors go to stderr in plain words, with an exit code per error class (``EXIT_CODES``, read from
each class's :class:`~pms_integration.errors.Outcome`).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO
from zoneinfo import ZoneInfo

from ._redact import redact, redact_raw
from ._render import text_table as _table
from .config import VARIABLES, load_config
from .errors import APIError, PMSError, ProviderError, UnsupportedOperationError, ValidationError
from .models import ProviderName, ProviderStatus, ProviderStatusList, unstructure
from .provider import Capability

__all__ = ["EXIT_CODES", "describe_error", "for_the_command_line", "format_status_table", "main"]

_TOKEN_VARIABLE = "PMS_SERVER_TOKEN"  # noqa: S105 - a variable name, not a secret (server.TOKEN_VARIABLE)

#: Exit codes, most specific first. ``outcome unknown`` wins over the error's own class: a
#: script must not book again before looking the booking up.
EXIT_CODES: list[tuple[str, int]] = [
    ("success", 0),
    ("unexpected failure", 1),
    ("usage error", 2),
    ("invalid input (ValidationError)", 3),
    ("configuration problem (ConfigurationError)", 4),
    ("operation not supported (UnsupportedOperationError)", 5),
    ("credentials rejected (AuthenticationError, PermissionDeniedError)", 6),
    ("not found (NotFoundError)", 7),
    (
        "conflict: the slot is taken (ConflictError), or the booking was cancelled and cannot be moved; "
        "book a new one (AppointmentCancelledError)",
        8,
    ),
    ("rate limited (RateLimitError)", 9),
    ("vendor rejected the data (InvalidRequestError)", 10),
    ("provider unavailable (TransportError, ServerError, other ProviderError)", 11),
    ("outcome unknown: the change may have been applied (also BookingInProgressError)", 12),
    ("the state store cannot be used (StateStoreError); nothing was sent", 13),
]


def exit_code(error: BaseException) -> int:
    """``error``'s exit code: 12 when the outcome is unknown, else its class's (1 for a bug)."""
    if isinstance(error, ProviderError) and error.outcome_unknown:
        return 12
    return error.outcome.exit_code if isinstance(error, PMSError) else 1


def format_status_table(statuses: Sequence[ProviderStatus]) -> str:
    """An aligned text table of provider statuses; never contains a secret."""
    return str(ProviderStatusList(statuses))


# -- input and output ----------------------------------------------------------------------


def _read_json(text: str | None, stdin: TextIO, what: str) -> Any:
    try:
        if text is None or text == "-":
            text = stdin.read()
        elif text.startswith("@"):
            text = Path(text[1:]).read_text(encoding="utf-8")
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationError.single(
            what, f"is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None
    except OSError as exc:
        raise ValidationError.single(what, f"cannot be read: {exc.strerror or type(exc).__name__}") from None
    except UnicodeDecodeError:
        raise ValidationError.single(what, "is not valid UTF-8") from None
    except RecursionError:
        raise ValidationError.single(what, "nests too deeply") from None


def _client(args: argparse.Namespace) -> Any:
    from .client import PMSClient

    return PMSClient(env_file=args.env_file or ...)


# -- commands ------------------------------------------------------------------------------


def _cmd_providers(args: argparse.Namespace) -> int:
    config = load_config(env_file=args.env_file or ...)
    print(format_status_table(config.statuses()))
    for problem in config.problems:
        print(f"problem: {redact(problem)}", file=sys.stderr)
    return 0


def _provider_flag(args: argparse.Namespace) -> ProviderName | None:
    try:  # checked first, so a bad value is reported under the flag's own name
        return None if args.provider is None else ProviderName.parse(args.provider)
    except ValueError as exc:
        raise ValidationError.single("--provider", str(exc)) from None


def _print_json(result: Any, *, raw: bool) -> None:
    # The model as it is, only the vendor's raw redacted: redacting the JSON text as a whole
    # would let a secret that reads "2031" or "true" mask part of a start time or break the JSON.
    data = [unstructure(item) for item in result] if isinstance(result, list) else unstructure(result)
    data = [redact_raw(d, keep=raw) for d in data] if isinstance(data, list) else redact_raw(data, keep=raw)
    print(json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False))


def _cmd_call(args: argparse.Namespace) -> int:
    """``book``, ``update``, ``cancel``, ``push-report``: the client's method ``args.method``."""
    provider = _provider_flag(args)
    positional = [args.id] if "id" in args else []
    if args.json_name:
        positional.append(_read_json(args.json, sys.stdin, args.json_name))
    keywords = {"reason": args.reason} if "reason" in args else {}
    with _client(args) as client:
        result = getattr(client, args.method)(*positional, provider=provider, **keywords)
        _print_json(result, raw=args.raw)
    return 0


def _minutes(text: str | None) -> int | None:
    if text is None:
        return None
    if not text.strip().isdigit():
        raise ValidationError.single("--duration", "must be a whole number of minutes, such as 30")
    return int(text)


def _cmd_read(args: argparse.Namespace) -> int:
    """``slots``, ``get``, ``find``, ``patients``: the scheduling reads; a JSON list (or, for
    ``get``, one appointment) on stdout. Patient e-mail and phone come as flags."""
    provider = _provider_flag(args)
    with _client(args) as client:
        if args.command == "slots":
            duration = _minutes(args.duration)
            extra = {} if duration is None else {"duration_minutes": duration}
            try:
                result = client.free_slots(args.start, args.end, provider=provider, **extra)
            except ValidationError as exc:  # the library's field is the command line's --duration
                raise ValidationError(
                    [("--duration" if path == "duration_minutes" else path, why) for path, why in exc.errors]
                ) from None
        elif args.command == "get":
            result = client.get_appointment(args.id, provider=provider)
        elif args.command == "patients":
            result = client.find_patient(email=args.email, phone=args.phone, provider=provider)
        else:
            result = client.find_appointments(
                email=args.email,
                phone=args.phone,
                reference=args.reference,
                start=args.start,
                end=args.end,
                include_cancelled=args.include_cancelled,
                provider=provider,
            )
        _print_json(result, raw=args.raw)
    return 0


def _cmd_state_check(args: argparse.Namespace) -> int:
    """``state check``: write, read, lock and delete a probe key in the configured store."""
    with _client(args) as client:
        print(client.check_state())
    return 0


#: how ``watch`` waits between polls (tests replace it)
_watch_sleep: Callable[[float], None] = time.sleep


def _since_flag(text: str | None) -> dt.datetime | str | None:
    """``--since``: an ISO-8601 time with an offset, else a cursor printed by an earlier run."""
    if text is None:
        return None
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return text
    if when.tzinfo is None:
        raise ValidationError.single("--since", "needs a UTC offset, e.g. 2031-03-04T08:00:00+00:00")
    return when


def _cmd_watch(args: argparse.Namespace) -> int:
    """``watch``: poll the change feed and print each change as one line, until Ctrl-C (or once)."""
    provider = _provider_flag(args)
    try:
        interval = float(args.interval)
    except ValueError:
        interval = -1.0
    if not 0.5 <= interval <= 3600:
        raise ValidationError.single("--interval", "must be a number of seconds from 0.5 to 3600")
    since: dt.datetime | str | None = _since_flag(args.since)
    with _client(args) as client:
        if not args.once:
            name = (provider or client.resolve(None)).label
            print(f"watching {name} for changes every {interval:g} s (Ctrl-C stops)", file=sys.stderr, flush=True)
        try:
            while True:
                # a person debugging looks without taking: without --feed the snapshots are not
                # written, so production feeds and webhooks still report what watch printed
                batch = client.changes(since, provider=provider, feed=args.feed, record=bool(args.feed))
                for change in batch:
                    if args.json:
                        data = unstructure(change)
                        if isinstance(data.get("appointment"), dict):
                            data["appointment"] = redact_raw(data["appointment"], keep=False)
                        print(json.dumps(data, ensure_ascii=False, allow_nan=False, default=str), flush=True)
                    else:
                        print(change.line(), flush=True)
                # a named feed keeps its cursor in the state store; otherwise carry it along
                since = None if args.feed else batch.cursor
                if args.once:
                    print(f"cursor: {batch.cursor}", file=sys.stderr)
                    return 0
                _watch_sleep(interval)
        except KeyboardInterrupt:
            if not args.feed:
                print(f"cursor: {since}", file=sys.stderr)
            return 0


def _next_weekday_at(hour: int, zone: str, days_ahead: int = 1) -> dt.datetime:
    tz = ZoneInfo(zone)
    day = dt.datetime.now(tz).date() + dt.timedelta(days=days_ahead)
    while day.weekday() >= 5:
        day += dt.timedelta(days=1)
    return dt.datetime(day.year, day.month, day.day, hour, 0, tzinfo=tz)


def run_demo(out: TextIO = sys.stdout, *, ghl_api_version: str = "v2") -> int:
    """Search free slots, then book, reschedule, cancel and push a report on every provider,
    against the sandbox."""
    from .client import PMSClient
    from .sandbox import Sandbox

    rows: list[list[str]] = [["PROVIDER", "STEP", "RESULT", "HTTP"]]
    failures = 0
    with (
        Sandbox() as sandbox,
        PMSClient(environ=sandbox.environ(ghl_api_version=ghl_api_version), env_file=None) as client,
    ):
        print(f"Sandbox running at {sandbox.url} (in-memory emulators; nothing leaves this machine)\n", file=out)
        for name in ProviderName:
            if name not in sandbox.emulators:
                rows.append([name.value, "-", "FAILED: no emulator in this build", "0"])
                failures += 1
                continue
            for step, result, requests in _demo_provider(client, sandbox, name):
                rows.append([name.value, step, result, str(requests)])
                failures += result.startswith("FAILED")
    print(_table(rows), file=out)
    print(file=out)
    if failures:
        print(f"{failures} step(s) failed.", file=out)
        return 1
    print("All providers: book, reschedule, cancel and push-report succeeded.", file=out)
    return 0


def _demo_provider(client: Any, sandbox: Any, name: ProviderName) -> list[tuple[str, str, int]]:
    """The four demo steps on one provider: (step, what happened, HTTP requests it took)."""
    start = _next_weekday_at(10, "America/New_York")
    moved = start + dt.timedelta(days=1, hours=4)
    today = dt.date.today()
    booking = {
        "start": start.isoformat(),
        "duration_minutes": 30,
        "timezone": "America/New_York",
        "title": "Cleaning",
        "reason": "Routine check-up and cleaning",
        "patient": {"name": "Jane Doe", "email": "jane.doe@example.com", "phone": "+15555550123"},
    }
    report = {
        "period_start": (today - dt.timedelta(days=7)).isoformat(),
        "period_end": (today - dt.timedelta(days=1)).isoformat(),
        "metrics": {"calls_handled": 142, "bookings_made": 37, "conversion_rate": 0.261},
        "summary": "Weekly AI receptionist summary (demo data).",
    }
    rows: list[tuple[str, str, int]] = []

    def step(label: str, action: Callable[[], str]) -> bool:
        before = sandbox.request_count(name)
        try:
            result = action()
        except UnsupportedOperationError as exc:
            result = f"skipped: {str(exc).split('. ')[0]}"
        except PMSError as exc:
            result = f"FAILED: {exc}"
        if len(result) > 110:
            result = result[:109] + "…"
        rows.append((label, result, sandbox.request_count(name) - before))
        return not result.startswith("FAILED")

    booked: list[Any] = []

    def slots() -> str:
        # what a receptionist does before booking: look for a free slot, then book the first
        if Capability.FREE_SLOTS not in client.adapter(name).capabilities:
            reason = client.adapter(name).unsupported_reason(Capability.FREE_SLOTS) or "no slot search"
            return f"skipped: {reason.split('. ')[0]}; booking {_when(start)} directly"
        found = client.free_slots(start, start + dt.timedelta(hours=8), provider=name)
        if not found:
            return f"no free slot from {_when(start)} for 8 hours; booking {_when(start)} anyway"
        booking["start"] = found[0].start.isoformat()
        return f"{len(found)} free, first {_when(found[0].start)}; booking it"

    def book() -> str:
        appt = client.book_appointment(booking, provider=name)
        booked.append(appt)
        return f"booked {appt.id} for {_when(appt.start)} (ref {appt.reference})"

    def reschedule() -> str:
        changes = {"start": moved.isoformat(), "duration_minutes": 45, "timezone": "America/New_York"}
        appt = client.update_appointment(booked[0].id, changes, provider=name)
        return f"moved to {_when(appt.start or moved)}, 45 min"

    def cancel() -> str:
        appt = client.cancel_appointment(booked[0].id, reason="Patient called to cancel", provider=name)
        return str(appt.status.value)

    def push() -> str:
        receipt = client.push_performance_report(report, provider=name)
        return f"report {receipt.report_id} stored as {receipt.id}"

    step("slots", slots)
    if step("book", book) and step("reschedule", reschedule):
        step("cancel", cancel)
    step("push-report", push)
    return rows


def _when(value: dt.datetime | None) -> str:
    if value is None:
        return "?"
    local = value.astimezone(ZoneInfo("America/New_York"))
    return local.strftime("%a %Y-%m-%d %H:%M %Z")


def _cmd_sandbox(args: argparse.Namespace) -> int:
    from .sandbox import Sandbox

    sandbox = Sandbox(port=args.port, seed=args.seed).start()
    env = sandbox.environ()
    secret_names = {v.name for v in VARIABLES if v.secret} | {"PMS_HUBSPOT_ACCESS_TOKEN"}
    print(f"Sandbox running at {sandbox.url}; press Ctrl-C to stop.")
    if args.write_env:
        Path(args.write_env).write_text("".join(f"{k}={v}\n" for k, v in sorted(env.items())), encoding="utf-8")
        print(f"Wrote all PMS_* variables (tokens included) to {args.write_env}.")
    else:
        print("Non-secret variables below; use --write-env FILE to get the sandbox tokens too.")
    for key, value in sorted(env.items()):
        if key not in secret_names:
            print(f"{key}={value}")
    sys.stdout.flush()
    sandbox.serve_forever()
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        from .server import _resolve_token, check_exposure, is_loopback, run  # type: ignore[import-not-found,unused-ignore]
    except ImportError as exc:
        print(f"error: {exc}", file=sys.stderr)  # names how to install the server extra
        return 4
    # Everything is checked before anything is bound or started. The token comes from the same
    # sources as the configuration: --env-file (or ./.env), then the process environment.
    env_file = args.env_file or ...
    check_exposure(args.host, _resolve_token(..., env_file=env_file), insecure_no_auth=args.insecure_no_auth)
    if args.insecure_no_auth and not is_loopback(args.host):
        print(
            f"warning: serving on {args.host} WITHOUT authentication (--insecure-no-auth): anyone who can reach "
            "this address can book and cancel appointments.",
            file=sys.stderr,
        )
    if args.report_source:  # imported as uvicorn imports an app: from the current directory too
        from .reports import load_report_source, set_report_source

        if "" not in sys.path and os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        set_report_source(load_report_source(args.report_source, name="--report-source"))
    with contextlib.ExitStack() as stack:
        client = None
        if args.sandbox:
            from .client import PMSClient
            from .sandbox import Sandbox

            sandbox = stack.enter_context(Sandbox())
            client = stack.enter_context(PMSClient(environ=sandbox.environ(), env_file=None))
            print(f"Serving against the sandbox at {sandbox.url}.", flush=True)
        elif args.env_file:
            client = stack.enter_context(_client(args))  # the providers come from --env-file too
        run(host=args.host, port=args.port, client=client, insecure_no_auth=args.insecure_no_auth, env_file=env_file)
    return 0


def build_parser() -> argparse.ArgumentParser:
    codes = "\n".join(f"  {code:>2}  {what}" for what, code in EXIT_CODES)
    parser = argparse.ArgumentParser(
        prog="pms-integration",
        description="Book appointments and push reports into GoHighLevel, Salesforce and HubSpot.",
        epilog="JSON arguments may be given inline, as @file, or as - (stdin, the default).\n\nexit codes:\n" + codes,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--env-file", help="read PMS_* variables from this .env file (default: ./.env if present)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("providers", help="show each provider's status and missing variables")
    p.set_defaults(func=_cmd_providers)

    calls = (  # command (the client's <command>_appointment or push_performance_report), help, JSON argument
        ("book", "book an appointment from a JSON request", "request", "AppointmentRequest"),
        ("update", "reschedule or edit an appointment", "changes", "AppointmentUpdate"),
        ("cancel", "cancel an appointment", None, None),
        ("push-report", "push a performance report from JSON", "report", "PerformanceReport"),
    )
    for command, summary, json_name, model in calls:
        method = "push_performance_report" if command == "push-report" else f"{command}_appointment"
        p = sub.add_parser(command, help=summary)
        p.add_argument(
            "--provider", "-p", help="gohighlevel (ghl), salesforce or hubspot (default: PMS_DEFAULT_PROVIDER)"
        )
        p.add_argument("--raw", action="store_true", help="include the vendor's raw response in the output")
        if command in ("update", "cancel"):
            p.add_argument("id", help="the appointment id returned by book")
        if model:
            p.add_argument("json", nargs="?", help=f"the {model} as JSON")
        p.set_defaults(func=_cmd_call, method=method, json_name=json_name)
    sub.choices["cancel"].add_argument("--reason", help="why (kept where the vendor allows)")

    reads = (  # the scheduling reads (docs/getting-started.md, "Reading the calendar")
        ("slots", "list free slots between --start and --end (at most 31 days)"),
        ("get", "show an appointment as the vendor holds it now"),
        ("find", "find a patient's appointments (by --email or --phone) or a booking by --reference"),
        ("patients", "find the vendor's patient records by --email or --phone"),
    )
    for command, summary in reads:
        p = sub.add_parser(command, help=summary)
        p.add_argument(
            "--provider", "-p", help="gohighlevel (ghl), salesforce or hubspot (default: PMS_DEFAULT_PROVIDER)"
        )
        p.add_argument("--raw", action="store_true", help="include the vendor's raw records in the output")
        p.set_defaults(func=_cmd_read)
    slots = sub.choices["slots"]
    slots.add_argument("--start", required=True, help="ISO-8601 with an offset, e.g. 2031-03-04T08:00:00-05:00")
    slots.add_argument("--end", required=True, help="ISO-8601 with an offset; at most 31 days after --start")
    slots.add_argument("--duration", metavar="MINUTES", help="length of the appointment to fit (default 30)")
    sub.choices["get"].add_argument("id", help="the appointment id (from book or find)")
    for command in ("find", "patients"):
        sub.choices[command].add_argument("--email", help="the patient's e-mail address")
        sub.choices[command].add_argument("--phone", help="the patient's phone number, with its country code")
    find = sub.choices["find"]
    find.add_argument("--reference", help="the booking reference a conversation booked with")
    find.add_argument("--start", help="from (ISO-8601 with an offset; default: now, so upcoming appointments)")
    find.add_argument("--end", help="until (ISO-8601 with an offset; default: a year and a day after --start)")
    find.add_argument("--include-cancelled", action="store_true", help="list cancelled appointments too")

    p = sub.add_parser(
        "demo", help="run slots, book, reschedule, cancel and push-report on all providers against the sandbox"
    )
    p.add_argument("--ghl-api-version", choices=["v1", "v2"], default="v2")
    p.set_defaults(func=lambda args: run_demo(ghl_api_version=args.ghl_api_version))

    p = sub.add_parser("state", help="the shared state store (PMS_STATE_URL): `state check` tests it")
    state = p.add_subparsers(dest="state_command", required=True, metavar="ACTION")
    q = state.add_parser(
        "check",
        help="check that the state store is reachable and writable (exit 13 if not, 4 for a bad PMS_STATE_URL)",
    )
    q.set_defaults(func=_cmd_state_check)

    p = sub.add_parser(
        "watch", help="print appointment changes made in the CRM as they arrive (polls until Ctrl-C)"
    )
    p.add_argument("--provider", "-p", help="gohighlevel (ghl), salesforce or hubspot (default: PMS_DEFAULT_PROVIDER)")
    p.add_argument("--interval", default="15", metavar="SECONDS", help="seconds between polls (default 15)")
    p.add_argument(
        "--since",
        help="start from this time (ISO-8601 with an offset) or from a cursor an earlier run printed (default: now)",
    )
    p.add_argument(
        "--feed",
        metavar="NAME",
        help="keep the cursor in the state store under NAME, so a restart resumes; the changes printed then count "
        "as reported (without --feed, watch only looks: other feeds and webhooks still report them)",
    )
    p.add_argument("--once", action="store_true", help="poll once, print the changes and the cursor, and exit")
    p.add_argument("--json", action="store_true", help="one JSON object per change instead of a line of text")
    p.set_defaults(func=_cmd_watch)

    p = sub.add_parser("sandbox", help="run the vendor emulators in the foreground")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--write-env", metavar="FILE", help="write the PMS_* variables (with the sandbox tokens) to FILE")
    p.set_defaults(func=_cmd_sandbox)

    p = sub.add_parser("serve", help="serve the /api/integrations/pms HTTP endpoints (needs the server extra)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help=f"the address to bind (default: loopback only); any other address needs {_TOKEN_VARIABLE}",
    )
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--sandbox", action="store_true", help="serve against a fresh sandbox instead of the configuration")
    p.add_argument(
        "--report-source",
        metavar="MODULE:FUNCTION",
        help="the callable that returns the current report, pushed by POST .../performance without a body "
        "(imported and checked at start-up; the current directory is searched too)",
    )
    p.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help=f"serve beyond loopback without {_TOKEN_VARIABLE}: anyone who can reach the address can book "
        "and cancel (only behind another layer that authenticates)",
    )
    p.set_defaults(func=_cmd_serve)
    return parser


# The library's messages name Python arguments; the command line has flags instead.
_CLI_WORDS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\bprovider=(?:\.\.\.|<[^>\s]*>)"), "--provider NAME"),
    (re.compile(r"\bprovider=([\"']?)([\w-]+)\1"), r"--provider \2"),
    (re.compile(r"\binsecure_no_auth=True\b"), "--insecure-no-auth"),
    (
        re.compile(r"\(PMS_\* variables\) and call reload\(\)"),
        "(the PMS_* variables, in the environment or the .env file) and run the command again",
    ),
    (re.compile(r"\band call reload\(\)"), "and run the command again"),
)


def for_the_command_line(text: str) -> str:
    """A library message in the command line's own words (``provider=...`` is ``--provider``)."""
    for pattern, replacement in _CLI_WORDS:
        text = pattern.sub(replacement, text)
    return text


def describe_error(error: PMSError) -> list[str]:
    """The lines the command prints for ``error``: the message, then one line per detail."""
    lines = [f"error: {for_the_command_line(str(error))}"]
    if isinstance(error, ValidationError):
        lines += [f"  {field or '(input)'}: {for_the_command_line(message)}" for field, message in error.errors]
    if isinstance(error, APIError) and error.request_id:
        # Scrubbed when the error was built; redacted again here, never shown raw.
        lines.append(f"  vendor request id: {redact(error.request_id)} (quote it to the vendor's support)")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except PMSError as exc:
        for line in describe_error(exc):
            print(line, file=sys.stderr)
        return exit_code(exc)
    except KeyboardInterrupt:
        return 130
