"""How to install the optional extras, said for the way this copy of the project was installed."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["server_extra_hint"]


def server_extra_hint() -> str:
    """How to install Starlette and uvicorn, said for the way this copy was installed.

    The project is not on a package index, so ``pip install 'pms-integration[server]'`` would
    fail: the hint names the checkout or URL pip recorded when the project was installed.
    """
    plain = "pip install starlette uvicorn"
    origin: Any = {}
    try:
        from importlib.metadata import distributions

        for dist in distributions(name="pms-integration"):
            text = dist.read_text("direct_url.json")  # what pip recorded (PEP 610)
            if text:
                origin = json.loads(text)
                break
    except (ImportError, ValueError, OSError):
        origin = {}
    if not isinstance(origin, dict):
        origin = {}
    url = origin.get("url")
    if url is None:
        from pathlib import Path

        root = Path(__file__).resolve().parent.parent
        if (root / "pyproject.toml").is_file() and (root / "pms_integration" / "cli.py").is_file():
            # Running from a checkout (a source tree on sys.path).
            return f"Install them with: pip install -e '{root}[server]' (or: {plain})."
    if isinstance(url, str) and url.startswith("file://") and isinstance(origin.get("dir_info"), dict):
        from urllib.parse import unquote, urlsplit

        where = unquote(urlsplit(url).path)
        editable = " -e" if origin["dir_info"].get("editable") else ""
        return f"Install them with: pip install{editable} '{where}[server]' (or: {plain})."
    if isinstance(url, str) and isinstance(origin.get("vcs_info"), dict):
        from urllib.parse import urlsplit, urlunsplit

        parts = urlsplit(url)
        host = parts.netloc.rpartition("@")[2]  # never repeat credentials kept in the URL
        url = urlunsplit((parts.scheme, host, parts.path, "", ""))
        vcs = origin["vcs_info"].get("vcs", "git")
        return f"Install them with: pip install 'pms-integration[server] @ {vcs}+{url}' (or: {plain})."
    return f"Install them with: {plain} (or, from a checkout of the project: pip install -e '.[server]')."
