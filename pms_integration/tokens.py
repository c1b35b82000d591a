"""Where rotated OAuth refresh tokens are kept (``PMSClient(token_store=...)``), so a restart or a
second process can use them. Anything with ``load(key)`` and ``save(key, value)`` is a
:class:`TokenStore`; keys name an account, never a secret. When and why:
docs/providers/salesforce.md, "Keeping rotated refresh tokens".
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, runtime_checkable

from .errors import ConfigurationError

__all__ = ["TokenStore", "FileTokenStore", "CallbackTokenStore", "MemoryTokenStore", "check_token_store"]


@runtime_checkable
class TokenStore(Protocol):
    """Keeps one secret string per key. Both methods may be called from several threads."""

    def load(self, key: str) -> str | None:
        """The value saved under ``key``, or None when there is none."""
        ...

    def save(self, key: str, value: str) -> None:
        """Keep ``value`` under ``key`` (replacing any earlier one) durably before returning."""
        ...


def check_token_store(store: object) -> TokenStore | None:
    """``store`` if it is None or has callable ``load`` and ``save``; else ConfigurationError."""
    if store is None:
        return None
    if not (callable(getattr(store, "load", None)) and callable(getattr(store, "save", None))):
        raise ConfigurationError(
            f"token_store must have load(key) and save(key, value) methods (a TokenStore such as "
            f"pms_integration.FileTokenStore), not {type(store).__name__}"
        )
    return store  # type: ignore[return-value]


class MemoryTokenStore:
    """Keeps values in this process only (tests, or several clients in one process)."""

    def __init__(self) -> None:
        self._values: dict[str, str] = {}
        self._lock = threading.Lock()

    def load(self, key: str) -> str | None:
        with self._lock:
            return self._values.get(key)

    def save(self, key: str, value: str) -> None:
        with self._lock:
            self._values[key] = value

    def __repr__(self) -> str:
        return f"MemoryTokenStore({len(self._values)} keys)"


class CallbackTokenStore:
    """A store made of two functions: ``load(key) -> str | None`` and ``save(key, value)``."""

    def __init__(self, load: Callable[[str], str | None], save: Callable[[str, str], None]) -> None:
        if not (callable(load) and callable(save)):
            raise ConfigurationError("CallbackTokenStore needs two functions: load(key) and save(key, value)")
        self._load = load
        self._save = save

    def load(self, key: str) -> str | None:
        value = self._load(key)
        return value if isinstance(value, str) and value else None

    def save(self, key: str, value: str) -> None:
        self._save(key, value)

    def __repr__(self) -> str:
        return "CallbackTokenStore()"


class FileTokenStore:
    """Values in one JSON file (``{key: value}``, mode ``0600``), replaced atomically on each save.

    Saves from threads of one process are serialised; processes that save under *different*
    keys at the same moment may lose one of the two (use one file per account for that).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        if not isinstance(path, (str, os.PathLike)) or not str(path):
            raise ConfigurationError("FileTokenStore needs a file path (a str or pathlib.Path)")
        self.path = Path(path)
        self._lock = threading.Lock()

    def load(self, key: str) -> str | None:
        value = self._read().get(key)
        return value if isinstance(value, str) and value else None

    def save(self, key: str, value: str) -> None:
        if not isinstance(key, str) or not isinstance(value, str) or not value:
            raise ConfigurationError("FileTokenStore.save needs a text key and a non-empty text value")
        with self._lock:
            data = self._read()
            data[key] = value
            self._write(data)

    def _read(self) -> dict[str, str]:
        import json  # only a file store needs it; keep it off `import pms_integration`

        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        try:
            data = json.loads(text)
        except ValueError:
            raise ConfigurationError(f"the token file {self.path} is not valid JSON; remove it or fix it") from None
        if not isinstance(data, dict):
            raise ConfigurationError(f"the token file {self.path} must hold a JSON object")
        return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)}

    def _write(self, data: dict[str, str]) -> None:
        import json
        import tempfile  # like json: loaded by the first write, not at import

        directory = self.path.parent
        directory.mkdir(parents=True, exist_ok=True)
        # mkstemp creates the file with mode 0600 before anything is written into it
        fd, temporary = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(data, handle, indent=1, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(temporary, 0o600)
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        if hasattr(os, "O_DIRECTORY"):
            # make the rename itself durable
            with contextlib.suppress(OSError):
                dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)

    def __repr__(self) -> str:
        return f"FileTokenStore({str(self.path)!r})"
