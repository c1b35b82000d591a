"""Push the AI receptionist's weekly performance report into every connected system.

Two pieces:

* an analytics module registers a *report source* with ``pms.set_report_source``: a callable
  that returns the current report (a ``PerformanceReport`` or a plain dict). After that,
  ``pms.push_performance_report()`` with no argument - and the HTTP endpoint with no body - sends
  whatever the source returns;
* a scheduled job (cron, a task queue) pushes it to every enabled provider. A report's id is
  stable for its period, so running the job twice updates the first records instead of adding
  new ones.

Run it as a script to push to all three vendors of the built-in sandbox::

    python examples/analytics_push.py
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

import pms_integration as pms

log = logging.getLogger("analytics")


@dataclass(frozen=True)
class Call:
    """One call the receptionist handled (what your telephony or chat logs hold)."""

    day: dt.date
    seconds: int
    outcome: str  # "booked", "rescheduled", "cancelled", "question", "hung_up"
    after_hours: bool = False


@dataclass
class CallAnalytics:
    """A stand-in for your analytics store: calls in, a weekly report out."""

    calls: list[Call] = field(default_factory=list)
    today: dt.date = field(default_factory=dt.date.today)

    def weekly_report(self) -> pms.PerformanceReport:
        """The last full Monday-to-Sunday week. This is the report source."""
        end = self.today - dt.timedelta(days=self.today.weekday() + 1)
        start = end - dt.timedelta(days=6)
        week = [c for c in self.calls if start <= c.day <= end]
        booked = sum(c.outcome == "booked" for c in week)
        metrics: dict[str, float] = {
            "calls_handled": len(week),
            "after_hours_calls": sum(c.after_hours for c in week),
            "bookings_made": booked,
            "reschedules": sum(c.outcome == "rescheduled" for c in week),
            "cancellations": sum(c.outcome == "cancelled" for c in week),
            "conversion_rate": round(booked / len(week), 3) if week else 0.0,
            "avg_call_seconds": round(sum(c.seconds for c in week) / len(week), 1) if week else 0.0,
        }
        return pms.PerformanceReport(
            period_start=start,
            period_end=end,
            metrics=metrics,
            summary=f"{booked} of {len(week)} calls ended in a booking.",
        )


def push_everywhere(client: pms.PMSClient | None = None) -> dict[str, pms.ReportReceipt | str]:
    """Push the current report to every enabled provider; one failure does not stop the others.

    Returns each provider's receipt, or a short reason why it was skipped or failed.
    """
    target = client or pms.get_client()
    results: dict[str, pms.ReportReceipt | str] = {}
    for status in target.providers():
        name = status.name.value
        if not status.enabled:
            results[name] = f"skipped: not configured ({status.detail})"
            continue
        try:
            results[name] = target.push_performance_report(provider=name)
        except pms.UnsupportedOperationError as exc:
            results[name] = f"skipped: {str(exc).split('. ')[0]}"
        except pms.ValidationError as exc:
            # The report source returned something invalid: the same for every provider.
            raise SystemExit(f"the report source is broken: {exc}") from exc
        except pms.ProviderError as exc:
            # Safe to run the job again later: the report id makes a re-push an update.
            log.error("report push to %s failed: %s", name, exc)
            results[name] = f"failed: {type(exc).__name__}; will retry on the next run"
    return results


def _print(results: dict[str, pms.ReportReceipt | str]) -> None:
    for name, result in results.items():
        if isinstance(result, pms.ReportReceipt):
            action = "created" if result.created else "updated"
            print(f"  {name:<12} {action:<8} {result.id}  (report {result.report_id})")
        else:
            print(f"  {name:<12} {result}")


def _sample_calls(today: dt.date) -> list[Call]:
    """A deterministic week of calls, for the demo."""
    last_sunday = today - dt.timedelta(days=today.weekday() + 1)
    outcomes = ["booked", "question", "booked", "hung_up", "rescheduled", "booked", "cancelled", "question"]
    calls = []
    for i in range(142):
        day = last_sunday - dt.timedelta(days=i % 7)
        calls.append(Call(day, 60 + (i * 37) % 240, outcomes[i % len(outcomes)], after_hours=i % 5 == 0))
    return calls


def main() -> int:
    from pms_integration.testing import sandbox_session

    logging.basicConfig(level=logging.WARNING, format="  [%(name)s] %(message)s")
    analytics = CallAnalytics()
    analytics.calls.extend(_sample_calls(analytics.today))
    pms.set_report_source(analytics.weekly_report)
    try:
        report = analytics.weekly_report()
        print(report.render_text(), end="\n\n")

        with sandbox_session() as session:
            print("First run of the job:")
            first = push_everywhere()
            _print(first)

            print("Second run (same week): every record is updated, none added:")
            second = push_everywhere()
            _print(second)

            assert all(isinstance(r, pms.ReportReceipt) and r.created for r in first.values()), first
            assert all(isinstance(r, pms.ReportReceipt) and not r.created for r in second.values()), second
            print("\nWhere the report landed:")
            print(f"  gohighlevel  a contact note: {session.state('ghl')['notes'][0]['title']!r}")
            print(f"  salesforce   a completed Task: {session.state('salesforce')['tasks'][0]['Subject']!r}")
            hubspot_notes = session.state("hubspot")["notes"]
            print(f"  hubspot      {len(hubspot_notes)} note on the practice's company timeline")

        # A location still on GoHighLevel's legacy API v1 cannot hold reports: skipped, not fatal.
        with sandbox_session(ghl_api_version="v1"):
            print("\nWith GoHighLevel on API v1:")
            _print(push_everywhere())
    finally:
        pms.set_report_source(None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
