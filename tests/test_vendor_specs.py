"""The vendor specs the contract tests validate against ship with the tests (not only in ../shared).

Each copy must still be byte-identical to its source: its git blob id is the one recorded in
``tests/vendor_specs/README.md``.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from tests._gohighlevel_support import SPEC_DIR, specs_available

HERE = Path(__file__).resolve().parent / "vendor_specs"


def _blob_id(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def _recorded() -> dict[str, str]:
    text = (HERE / "README.md").read_text(encoding="utf-8")
    return dict(re.findall(r"^\| `([^`]+\.json)` \| `([0-9a-f]{40})`", text, flags=re.M))


def test_specs_are_inside_the_repository() -> None:
    assert SPEC_DIR.is_relative_to(Path(__file__).resolve().parent)
    assert specs_available()
    assert (HERE / "LICENSE-CC0-1.0.txt").read_text(encoding="utf-8").startswith("CC0 1.0 Universal")


@pytest.mark.parametrize(
    "relative",
    [
        "gohighlevel/apps/calendars.json",
        "gohighlevel/apps/contacts.json",
        "gohighlevel/common/common-schemas.json",
        *(f"salesforce/rest/{n}.json" for n in ("sobject_create", "sobject_rows", "sobject_rows_update",
                                               "sobject_rows_delete", "query", "versions")),
    ],
)
def test_each_copy_is_unmodified(relative: str) -> None:
    recorded = _recorded()
    name = relative.split("/", 1)[1] if relative.startswith("gohighlevel/") else relative.rsplit("/", 1)[1]
    assert name in recorded, f"{name} has no recorded blob id in vendor_specs/README.md"
    assert _blob_id(HERE / relative) == recorded[name]
