"""MkDocs hook: tidy reStructuredText left in the package's docstrings for the API reference.

The docstrings cross-reference with Sphinx roles (:class:`~pms_integration.errors.ValidationError`)
and introduce examples with ``::``. mkdocstrings renders them as Markdown, which leaves the role
names and the double colon visible. This hook drops them after rendering: a role becomes plain
code (with a leading ``~`` meaning "show only the last name", as in Sphinx).
"""

from __future__ import annotations

import re
from typing import Any

_ROLE = re.compile(r":(?:py:)?(?:class|meth|func|attr|mod|exc|data|obj|const):<code>(~?)([^<]*)</code>")
_LITERAL_ALONE = re.compile(r"<p>::</p>")
_LITERAL_INTRO = re.compile(r"::</p>")


def _role(match: re.Match[str]) -> str:
    tilde, target = match.groups()
    shown = target.rsplit(".", 1)[-1] if tilde else target
    return f"<code>{shown}</code>"


def on_page_content(html: str, **_: Any) -> str:
    html = _ROLE.sub(_role, html)
    html = _LITERAL_ALONE.sub("", html)
    return _LITERAL_INTRO.sub(":</p>", html)
