"""The asyncio guide, its example and the plugin's async fixture do what the docs say.

docs/asyncio.md's own code blocks run in tests/test_docs.py like every page's (each block ends
in ``asyncio.run(...)``, so the docs runner needs nothing new); the testing page's
``<!-- pytest -->`` blocks, the async ones included, run there too. Here: the asyncio example
script, the anyio test shown in docs/testing.md (marked not-run there, since it needs anyio's
plugin), the fixture without the ``[aio]`` extra, and the guide's links and coverage.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.test_docs import DOCS, EXAMPLES, ROOT, clean_env, code_blocks, python, runnable_blocks

GUIDE = DOCS / "asyncio.md"


def run_pytest(tmp_path: Path, source: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """``source`` as a test file, run by pytest in a fresh process (the installed plugin loads)."""
    (tmp_path / "test_user_code.py").write_text(source, encoding="utf-8")
    return python(
        "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "--rootdir", str(tmp_path), *extra,
        "test_user_code.py", cwd=tmp_path,
    )  # fmt: skip


# -- the example ---------------------------------------------------------------------------------


def test_asyncio_example_runs_against_the_sandbox(tmp_path: Path) -> None:
    proc = python(str(EXAMPLES / "asyncio_conversation_manager.py"), cwd=tmp_path)
    out = proc.stdout
    assert proc.returncode == 0, out[-4000:] + proc.stderr[-4000:]
    assert "Traceback" not in proc.stderr, proc.stderr
    for expected in (
        "Bot [jane]: What is the best e-mail address",  # ValidationError: the detail it lacks
        "Bot [jane]: You're booked for Tuesday March 5 at 10:00 AM. Your reference is jane-1.",
        "Bot [john]: Sorry, that time was just taken. Would",  # ConflictError: the next free slot
        "Bot [john]: You're booked for",
        "Bot [lee]: One moment",  # the turn's timeout, then the same request again
        "Your reference is lee-1.",
        "(the calendar holds 1 booking with reference lee-1)",
        "Bot [ana]: Done: I've moved you to Wednesday March 6 at 2:00 PM.",
        "Bot [mo]: Your appointment is cancelled.",
        "All calls finished: 4 live bookings, 1 cancelled, no reference booked twice.",
    ):
        assert expected in out, (expected, out[-3000:])


# -- the pytest plugin ---------------------------------------------------------------------------


def anyio_block() -> str:
    blocks = [b["code"] for b in code_blocks(DOCS / "testing.md") if "pytest.mark.anyio" in b["code"]]
    assert len(blocks) == 1, "docs/testing.md shows one anyio test"
    return blocks[0]


def test_the_async_fixture_serves_an_anyio_test(tmp_path: Path) -> None:
    pytest.importorskip("anyio")
    proc = run_pytest(tmp_path, anyio_block())
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert re.search(r"\b1 passed\b", proc.stdout), proc.stdout


def test_the_async_fixture_serves_sync_tests_and_the_module_functions(tmp_path: Path) -> None:
    """A client per ``asyncio.run``; the marks apply; the sync default client and the module
    functions of ``aio`` reach the sandbox, and only during the test."""
    source = textwrap.dedent(
        """
        import asyncio

        import pytest

        import pms_integration as pms
        from pms_integration import aio


        @pytest.mark.pms_provider("salesforce")
        @pytest.mark.pms_environ({"PMS_MAX_ATTEMPTS": "1"})
        def test_two_loops(pms_async_sandbox):
            async def book(reference, hour):
                async with pms_async_sandbox.async_client() as client:
                    return await client.book_appointment({
                        "start": f"2030-03-05T{hour}:00:00-05:00", "reference": reference,
                        "patient": {"name": "Jane Doe", "email": "jane@example.com"},
                    })

            first = asyncio.run(book("r-1", 10))
            second = asyncio.run(book("r-2", 11))
            assert (first.reference, second.reference) == ("r-1", "r-2")
            assert pms_async_sandbox.environ["PMS_MAX_ATTEMPTS"] == "1"
            assert pms.get_appointment(first.id).reference == "r-1"  # the default client: same sandbox
            third = asyncio.run(aio.book_appointment({  # the module functions: same sandbox
                "start": "2030-03-05T12:00:00-05:00", "reference": "r-3",
                "patient": {"name": "Jane Doe", "email": "jane@example.com"},
            }))
            assert third.provider.value == "salesforce"
            assert len(pms_async_sandbox.state("salesforce")["bookings"]) == 3


        def test_afterwards_the_module_functions_read_the_environment_again(monkeypatch):
            monkeypatch.setenv("PMS_DEFAULT_PROVIDER", "hubspot")  # and nothing else configured
            with pytest.raises(pms.ProviderNotConfiguredError):
                asyncio.run(aio.book_appointment({
                    "start": "2030-03-05T10:00:00-05:00",
                    "patient": {"name": "Jane Doe", "email": "jane@example.com"},
                }))
        """
    )
    proc = run_pytest(tmp_path, source)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert re.search(r"\b2 passed\b", proc.stdout), proc.stdout


WITHOUT_AIO = textwrap.dedent(
    """
    import sys

    # as if the [aio] extra were not installed: importing either package fails
    sys.modules["aiohttp"] = None
    sys.modules["greenlet"] = None
    """
)


def test_without_the_aio_extra_the_async_fixture_skips_and_the_rest_works(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(WITHOUT_AIO, encoding="utf-8")
    source = textwrap.dedent(
        """
        import pytest

        import pms_integration as pms
        from pms_integration.errors import ConfigurationError


        def test_async(pms_async_sandbox):
            raise AssertionError("must have been skipped")


        @pytest.mark.pms_provider("hubspot")
        def test_sync_still_works(pms_sandbox):
            pms.book_appointment({"start": "2030-03-05T10:00:00-05:00",
                                  "patient": {"name": "Jane Doe", "email": "jane@example.com"}})
            assert len(pms_sandbox.state("hubspot")["deals"]) == 1
            with pytest.raises(ConfigurationError, match=r"\\[aio\\] extra .*pip install 'pms-integration\\[aio\\]'"):
                pms_sandbox.async_client()
        """
    )
    proc = run_pytest(tmp_path, source)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert re.search(r"\b1 passed, 1 skipped\b", proc.stdout), proc.stdout
    assert "pms_async_sandbox needs the [aio] extra (aiohttp, greenlet not installed)" in proc.stdout
    assert "pip install 'pms-integration[aio]'" in proc.stdout


def test_the_plugin_does_not_import_the_aio_packages() -> None:
    code = (
        "import sys, pms_integration, pms_integration.testing as t; "
        "assert t.aio_missing() == []; "
        "print(sorted(m for m in ('aiohttp', 'greenlet', 'pms_integration.aio') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=clean_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


# -- the guide -----------------------------------------------------------------------------------


def test_the_guide_is_in_the_nav_and_linked() -> None:
    assert re.search(r"^\s+- Asyncio: asyncio\.md$", (ROOT / "mkdocs.yml").read_text(encoding="utf-8"), re.M)
    assert "docs/asyncio.md" in (ROOT / "README.md").read_text(encoding="utf-8")
    assert "[aio]" in (ROOT / "README.md").read_text(encoding="utf-8")


def anchors(page: Path) -> set[str]:
    """The ids MkDocs gives a page's headings (toc's default slugify, ASCII pages)."""
    found = set()
    for line in page.read_text(encoding="utf-8").splitlines():
        if m := re.match(r"^#{1,6}\s+(.*?)\s*$", line):
            text = re.sub(r"[^\w\s-]", "", m.group(1).lower().replace("`", ""))
            found.add(re.sub(r"[-\s]+", "-", text.strip()))
    return found


def test_the_guides_links_to_other_pages_land_on_headings() -> None:
    for page in (GUIDE, DOCS / "testing.md"):
        for target, anchor in re.findall(r"\]\(([\w-]+\.md)#([\w-]+)\)", page.read_text(encoding="utf-8")):
            assert anchor in anchors(DOCS / target), f"{page.name}: {target}#{anchor}"


def test_the_guides_examples_all_run_and_are_asyncio() -> None:
    """No block of the guide is excused from running, and every one drives the async API."""
    blocks = [b for b in code_blocks(GUIDE) if b["lang"] == "python"]
    assert blocks and blocks == runnable_blocks(GUIDE)
    for block in blocks:
        assert "asyncio.run(" in block["code"], block["line"]
