"""The ``pms-integration`` command (also ``python -m pms_integration``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .config import load_config
from .errors import PMSError
from .models import ProviderStatus

__all__ = ["main", "format_status_table"]


def format_status_table(statuses: Sequence[ProviderStatus]) -> str:
    """An aligned text table of provider statuses; never contains a secret."""
    rows = [("PROVIDER", "STATUS", "DETAIL")]
    for s in statuses:
        if s.enabled:
            rows.append((s.name.value, "enabled", f"API {s.api_version} at {s.base_url}"))
        else:
            detail = []
            if s.missing:
                detail.append("missing " + ", ".join(s.missing))
            detail.extend(s.problems)
            rows.append((s.name.value, "disabled", "; ".join(detail)))
    widths = [max(len(r[i]) for r in rows) for i in range(2)]
    return "\n".join(f"{r[0].ljust(widths[0])}  {r[1].ljust(widths[1])}  {r[2]}".rstrip() for r in rows)


def _cmd_providers(args: argparse.Namespace) -> int:
    config = load_config(env_file=args.env_file if args.env_file else ...)
    print(format_status_table(config.statuses()))
    for problem in config.problems:
        print(f"problem: {problem}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pms-integration",
        description="Book appointments and push reports into GoHighLevel, Salesforce and HubSpot.",
    )
    parser.add_argument("--env-file", help="read PMS_* variables from this .env file (default: ./.env if present)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("providers", help="show each provider's status and missing variables")
    p.set_defaults(func=_cmd_providers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except PMSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
