"""Where each benchmark's table goes: between its own markers in ``docs/performance.md``
(``<!-- NAME:start -->`` and ``<!-- NAME:end -->``), the rest of the page left as written."""

from __future__ import annotations

from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "performance.md"


def write_table(name: str, table: str) -> None:
    """Replace what lies between the ``name`` markers with ``table``."""
    start_mark, end_mark = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = DOC.read_text(encoding="utf-8")
    start, end = text.find(start_mark), text.find(end_mark)
    if start < 0 or end < start:
        raise SystemExit(f"{DOC} has no {start_mark} ... {end_mark} block to replace")
    DOC.write_text(text[: start + len(start_mark)] + "\n" + table + text[end:], encoding="utf-8")
