"""The documentation and the examples tell the truth: their code runs and their tables match.

Conventions for Markdown pages (README.md and everything under docs/):

* A fenced block opened with ```python runs, unless the line just before the fence is
  ``<!-- not-run -->``. A page's runnable blocks run in order, in one namespace, in a fresh
  subprocess whose environment holds the ``PMS_*`` variables of a fresh sandbox (default
  provider ``hubspot``), with a temporary directory as the working directory.
* A ```python block preceded by ``<!-- pytest -->`` is a test file: the page's such blocks are
  written to one file and run with pytest (the project's own ``pms_sandbox`` plugin included).
* ```bash, ```text and other languages are never run.

The tables checked here: the variables in docs/configuration.md against ``config.VARIABLES``,
the capability matrix and the requests-per-operation table in docs/providers.md against the
adapters and the sandbox, and the exit codes in docs/errors.md against ``cli.EXIT_CODES``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import pms_integration as pms
from pms_integration import cli
from pms_integration._http import Runtime
from pms_integration.config import VARIABLES, load_config
from pms_integration.models import ProviderName
from pms_integration.provider import Capability
from pms_integration.providers import load_factory
from pms_integration.sandbox import Sandbox

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
EXAMPLES = ROOT / "examples"
PAGES = sorted([ROOT / "README.md", *DOCS.rglob("*.md")])
DEFAULT_PROVIDER = "hubspot"
SUBPROCESS_TIMEOUT = 60

FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<lang>[\w+-]*)[^\n]*$")


# -- reading Markdown ------------------------------------------------------------------------


def code_blocks(path: Path) -> list[dict[str, Any]]:
    """Every fenced block of a page: language, first code line, code, and the marker before it."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[dict[str, Any]] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = m.group("indent"), m.group("fence"), m.group("lang").lower()
        marker = lines[i - 1].strip() if i > 0 else ""
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not (
            lines[j].strip().startswith(fence[0] * len(fence)) and lines[j].strip().strip(fence[0]) == ""
        ):
            body.append(lines[j][len(indent) :] if lines[j].startswith(indent) else lines[j].lstrip())
            j += 1
        blocks.append({"lang": lang, "line": i + 2, "code": "\n".join(body) + "\n", "marker": marker})
        i = j + 1
    return blocks


def runnable_blocks(path: Path) -> list[dict[str, Any]]:
    return [
        b
        for b in code_blocks(path)
        if b["lang"] == "python" and b["marker"] not in ("<!-- not-run -->", "<!-- pytest -->")
    ]


def pytest_blocks(path: Path) -> list[dict[str, Any]]:
    return [b for b in code_blocks(path) if b["lang"] == "python" and b["marker"] == "<!-- pytest -->"]


def tables(path: Path) -> list[list[list[str]]]:
    """Every pipe table of a page as rows of stripped cells (the separator row dropped)."""
    found: list[list[list[str]]] = []
    current: list[list[str]] = []
    in_code = False
    for line in [*path.read_text(encoding="utf-8").splitlines(), ""]:
        if FENCE.match(line):
            in_code = not in_code
        stripped = line.strip()
        if not in_code and stripped.startswith("|") and stripped.endswith("|"):
            cells = [c.strip() for c in stripped[1:-1].split("|")]
            if not all(re.fullmatch(r":?-{3,}:?", c) for c in cells):
                current.append(cells)
            continue
        if current:
            found.append(current)
            current = []
    return found


def table_with_header(path: Path, first: str) -> list[list[str]]:
    matches = [t for t in tables(path) if t and t[0][0] == first]
    assert len(matches) == 1, f"{path.name}: expected one table whose first header cell is {first!r}"
    return matches[0]


def clean_env() -> dict[str, str]:
    """The test process's environment without any PMS_* variable."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PMS_")}


def python(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python *args`` in ``cwd`` with no PMS_* variable, its output captured."""
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT
    )


# -- every runnable block runs -----------------------------------------------------------------

RUNNER = textwrap.dedent(
    """
    import json, linecache, os, sys, traceback

    page, blocks_file, default_provider = sys.argv[1], sys.argv[2], sys.argv[3]
    blocks = json.loads(open(blocks_file, encoding="utf-8").read())

    from pms_integration.sandbox import Sandbox

    with Sandbox() as sandbox:
        os.environ.update(sandbox.environ(default_provider=default_provider))
        namespace = {"__name__": "__main__"}
        for block in blocks:
            filename = f"{page}, block at line {block['line']}"
            linecache.cache[filename] = (len(block["code"]), None, block["code"].splitlines(True), filename)
            print(f"=== {filename}", flush=True)
            try:
                exec(compile(block["code"], filename, "exec"), namespace)
            except BaseException:
                traceback.print_exc()
                print(f"FAILED: {filename}", file=sys.stderr, flush=True)
                sys.exit(1)
            sys.stdout.flush()
    print("ALL BLOCKS RAN", flush=True)
    """
)


#: Pages owned by other authors whose examples cannot run here but are not marked
#: ``<!-- not-run -->`` yet. The waiver only holds while a block containing one of these snippets
#: is still unmarked: once they are marked, the page runs like every other.
WAIVERS: dict[str, dict[str, str]] = {}


@pytest.mark.parametrize("page", [p for p in PAGES if runnable_blocks(p)], ids=lambda p: str(p.relative_to(ROOT)))
def test_python_blocks_run(page: Path, tmp_path: Path) -> None:
    blocks = runnable_blocks(page)
    name = str(page.relative_to(ROOT))
    waived = [why for snippet, why in WAIVERS.get(name, {}).items() if any(snippet in b["code"] for b in blocks)]
    if waived:
        pytest.skip(f"{name}: blocks to be marked <!-- not-run --> by the page's owner: {'; '.join(waived)}")
    blocks_file = tmp_path / "blocks.json"
    blocks_file.write_text(json.dumps(blocks), encoding="utf-8")
    runner = tmp_path / "run_blocks.py"
    runner.write_text(RUNNER, encoding="utf-8")
    work = tmp_path / "cwd"
    work.mkdir()
    try:
        proc = python(str(runner), name, str(blocks_file), DEFAULT_PROVIDER, cwd=work)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        last = [line for line in out.splitlines() if line.startswith("=== ")][-1:]
        pytest.fail(f"{name}: a block did not finish in {SUBPROCESS_TIMEOUT} s: {last}")
    assert proc.returncode == 0, f"{name}\n--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"
    assert "ALL BLOCKS RAN" in proc.stdout


def test_pytest_blocks_pass(tmp_path: Path) -> None:
    files = []
    for page in PAGES:
        blocks = pytest_blocks(page)
        if blocks:
            stem = re.sub(r"\W", "_", str(page.relative_to(ROOT)).removesuffix(".md"))
            file = tmp_path / f"test_doc_{stem}.py"
            file.write_text("\n\n".join(b["code"] for b in blocks), encoding="utf-8")
            files.append(file)
    assert files, "docs/testing.md shows a test file; it should be marked <!-- pytest -->"
    proc = python(
        "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path), *map(str, files), cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert re.search(r"\b[1-9]\d* passed\b", proc.stdout), proc.stdout


def test_the_blocks_found_are_the_ones_meant() -> None:
    """Guards the extractor: the pages that must have runnable code do, and no fence is left open."""
    for page in ("README.md", "docs/getting-started.md", "docs/configuration.md", "docs/errors.md"):
        assert runnable_blocks(ROOT / page), page
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        fences = [line for line in text.splitlines() if FENCE.match(line)]
        assert len(fences) % 2 == 0, f"{page.name}: unbalanced code fences"


# -- the two commands --------------------------------------------------------------------------

DEMO_COMMAND = "python3 -m venv .venv && .venv/bin/pip install -q . && .venv/bin/pms-integration demo"
TEST_COMMAND = "python3 -m venv .venv && .venv/bin/pip install -q -e '.[dev]' && .venv/bin/python -m pytest -q"


@pytest.mark.parametrize("page", ["README.md", "docs/getting-started.md"])
def test_the_two_commands_are_shown_exactly(page: str) -> None:
    bash = [b["code"].strip() for b in code_blocks(ROOT / page) if b["lang"] == "bash"]
    assert DEMO_COMMAND in bash
    assert TEST_COMMAND in bash
    assert bash.index(DEMO_COMMAND) < bash.index(TEST_COMMAND)


def test_demo_succeeds_on_every_provider(tmp_path: Path) -> None:
    proc = python("-m", "pms_integration", "demo", cwd=tmp_path)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "All providers: book, reschedule, cancel and push-report succeeded." in out
    for name in ProviderName:
        for step in ("book", "reschedule", "cancel", "push-report"):
            assert re.search(rf"^{name.value}\s+{step}\s+(?!FAILED)", out, re.M), (name, step)


# -- configuration.md ----------------------------------------------------------------------------


def test_configuration_page_lists_every_variable_as_the_code_does() -> None:
    rows = [
        r
        for t in tables(DOCS / "configuration.md")
        if t[0][:5] == ["Variable", "Required", "Default", "Secret", "Meaning"]
        for r in t[1:]
    ]
    documented = {}
    for row in rows:
        name = row[0].strip("`")
        assert name not in documented, f"{name} is documented twice"
        documented[name] = row
    assert set(documented) == {v.name for v in VARIABLES}
    for var in VARIABLES:
        _, required, default, secret, meaning = documented[var.name]
        assert required == ("yes" if var.required else "no"), var.name
        assert secret == ("yes" if var.secret else "no"), var.name
        if var.default is None:
            assert default == "—", var.name
        else:
            assert default.replace("`", "").startswith(var.default), (var.name, default, var.default)
        assert meaning, var.name


# -- providers.md --------------------------------------------------------------------------------

BASE_ENV = {
    "PMS_GHL_API_KEY": "pit-docs-0000-0000-0000",
    "PMS_GHL_LOCATION_ID": "loc123",
    "PMS_GHL_CALENDAR_ID": "cal456",
    "PMS_SALESFORCE_BASE_URL": "https://example.my.salesforce.com",
    "PMS_SALESFORCE_TOKEN": "00Ddocs!AQdocs-token",
    "PMS_SALESFORCE_OWNER_ID": "005000000000001AAA",
    "PMS_HUBSPOT_PRIVATE_APP_TOKEN": "pat-na1-docs-0000",
}
MATRIX_ROWS: dict[str, tuple[ProviderName, dict[str, str]]] = {
    "GoHighLevel v2": (ProviderName.GOHIGHLEVEL, {}),
    "GoHighLevel v1": (ProviderName.GOHIGHLEVEL, {"PMS_GHL_BASE_URL": "https://rest.gohighlevel.com/v1"}),
    "Salesforce": (ProviderName.SALESFORCE, {}),
    "HubSpot v3": (ProviderName.HUBSPOT, {}),
    "HubSpot date version (`2026-09`)": (ProviderName.HUBSPOT, {"PMS_HUBSPOT_API_VERSION": "2026-09"}),
}


def test_capability_matrix_matches_the_adapters() -> None:
    table = table_with_header(DOCS / "providers.md", "Provider and API")
    assert table[0][1:] == [c.value for c in Capability]
    assert [r[0] for r in table[1:]] == list(MATRIX_ROWS)
    for row in table[1:]:
        name, extra = MATRIX_ROWS[row[0]]
        config = load_config({**BASE_ENV, **extra}, env_file=None)
        settings = config.get(name).settings
        assert settings is not None, (row[0], config.get(name).problems)
        adapter = load_factory(name)(settings, Runtime())
        try:
            documented = {c for c, cell in zip(Capability, row[1:], strict=True) if cell.startswith("yes")}
            assert all(cell.startswith(("yes", "no")) for cell in row[1:]), row
            assert documented == set(adapter.capabilities), row[0]
        finally:
            adapter.close()


COLUMNS: dict[str, tuple[ProviderName, str]] = {
    "GoHighLevel v2": (ProviderName.GOHIGHLEVEL, "v2"),
    "GoHighLevel v1": (ProviderName.GOHIGHLEVEL, "v1"),
    "Salesforce": (ProviderName.SALESFORCE, "v2"),
    "HubSpot": (ProviderName.HUBSPOT, "v2"),
}
ZONE = "America/New_York"


def measure_operations(sandbox: Sandbox, name: ProviderName, ghl_version: str, day: int) -> dict[str, int | None]:
    """Run the table's scenarios in order on a fresh client; requests per step, None if unsupported.

    ``day`` keeps each column's bookings on its own day: GoHighLevel v1 and v2 share a calendar.
    """
    client = pms.PMSClient(environ=sandbox.environ(ghl_api_version=ghl_version), env_file=None)
    first_slot = dt.datetime(2030, 3, 4 + day, 9, 0, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    slots: Iterator[dt.datetime] = (first_slot + dt.timedelta(hours=h) for h in range(100))
    counts: dict[str, int | None] = {}
    state: dict[str, Any] = {}

    def step(label: str, call: Callable[[], Any]) -> Any:
        before = sandbox.request_count(name)
        try:
            result = call()
        except pms.UnsupportedOperationError:
            assert sandbox.request_count(name) == before, f"{label}: sent a request before refusing"
            counts[label] = None
            return None
        counts[label] = sandbox.request_count(name) - before
        return result

    patient = {"name": "Ann Lee", "email": f"ann.lee.{name.value}.{ghl_version}@example.com"}

    def book(**patient_extra: str) -> pms.Appointment:
        request = {"start": next(slots), "timezone": ZONE, "patient": {**patient, **patient_extra}}
        return client.book_appointment(request, provider=name)

    report = {"period_start": "2030-02-25", "period_end": "2030-03-03", "metrics": {"calls_handled": 3}}
    with client:
        first = step("book, new patient", book)
        state["first"] = first
        step("book, returning patient (same e-mail)", book)
        contact_id = first.contact_id
        if name is ProviderName.SALESFORCE:  # a Contact of the emulated org, usable as WhoId
            contact_id = sandbox.state("salesforce")["contacts"][0]["Id"]
        assert contact_id
        step("book with `patient.contact_id`", lambda: book(contact_id=contact_id))
        step(
            "reschedule (new start)",
            lambda: client.update_appointment(
                first.id, {"start": next(slots), "duration_minutes": 30, "timezone": ZONE}, provider=name
            ),
        )
        step("change title or notes", lambda: client.update_appointment(first.id, {"title": "Check-up"}, provider=name))
        step("cancel", lambda: client.cancel_appointment(first.id, provider=name))
        step("push report, first push of a client", lambda: client.push_performance_report(report, provider=name))
        other = {**report, "period_start": "2030-03-04", "period_end": "2030-03-10"}
        step("push report, another new report", lambda: client.push_performance_report(other, provider=name))
        again = step(
            "push report again (same `report_id`)", lambda: client.push_performance_report(report, provider=name)
        )
        if again is not None:
            assert again.created is False
    return counts


def test_requests_per_operation_match_the_sandbox() -> None:
    table = table_with_header(DOCS / "providers.md", "Operation")
    assert table[0][1:] == list(COLUMNS)
    with Sandbox() as sandbox:
        measured = {column: measure_operations(sandbox, *COLUMNS[column], day) for day, column in enumerate(COLUMNS)}
    assert [r[0] for r in table[1:]] == list(measured["Salesforce"]), "rows differ from the scenarios measured"
    mismatches = []
    for row in table[1:]:
        for column, cell in zip(COLUMNS, row[1:], strict=True):
            documented = None if cell == "—" else int(cell)
            if documented != measured[column][row[0]]:
                mismatches.append(f"{row[0]} / {column}: page says {cell}, sandbox counted {measured[column][row[0]]}")
    assert not mismatches, "\n".join(mismatches)


# -- errors.md -----------------------------------------------------------------------------------


def test_exit_code_table_matches_the_cli() -> None:
    table = table_with_header(DOCS / "errors.md", "Code")
    documented = [(row[1].replace("`", ""), int(row[0])) for row in table[1:]]
    assert documented == cli.EXIT_CODES


def test_every_error_class_is_explained() -> None:
    table = table_with_header(DOCS / "errors.md", "Error")
    explained = {row[0].strip("`") for row in table[1:]}
    concrete = {n for n in pms.__all__ if n.endswith("Error") and n not in ("PMSError", "ProviderError", "APIError")}
    assert concrete <= explained, concrete - explained


# -- examples ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        (
            "conversation_manager.py",
            ["Bot:", "Would Tuesday March 5 at 11:00 AM work instead?", "All conversations finished"],
        ),
        ("analytics_push.py", ["gohighlevel", "salesforce", "hubspot", "updated"]),
    ],
)
def test_example_script_runs_against_the_sandbox(script: str, expected: list[str], tmp_path: Path) -> None:
    proc = python(str(EXAMPLES / script), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    for text in expected:
        assert text in proc.stdout, (text, proc.stdout[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr


NOTEBOOK = EXAMPLES / "quickstart.ipynb"


def test_notebook_is_saved_without_outputs() -> None:
    import nbformat

    nb = nbformat.read(str(NOTEBOOK), as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]


def _private_kernelspec(root: Path) -> str:
    """A kernelspec for this very interpreter, so the test needs no `ipykernel install`."""
    name = "pms-docs-python3"
    spec_dir = root / "kernels" / name
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (pms-integration tests)",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")
    return name


def test_notebook_runs_headless(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import nbformat
    from nbclient import NotebookClient

    jupyter = tmp_path / "jupyter"
    kernel_name = _private_kernelspec(jupyter)
    monkeypatch.setenv("JUPYTER_PATH", str(jupyter))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    work = tmp_path / "cwd"
    work.mkdir()
    nb = nbformat.read(str(NOTEBOOK), as_version=4)
    client = NotebookClient(
        nb, kernel_name=kernel_name, timeout=60, startup_timeout=60, resources={"metadata": {"path": str(work)}}
    )
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert errors == []
    html = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "text/html" in o.get("data", {})]
    # the providers table, an appointment, a receipt and an error render as HTML tables
    assert len(html) >= 4
    text = json.dumps([c.outputs for c in nb.cells if c.cell_type == "code"])
    for expected in ("enabled", "booked", "cancelled", "ValidationError", "ConflictError"):
        assert expected in text, expected
