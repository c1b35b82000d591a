"""Record the HTTP requests the library sends, and replay them with a bare ``requests.Session``.

The overhead figure compares an operation through the library with "the same requests, sent
by hand". Writing those requests by hand would drift from the adapters as they change, so the
benchmark records them instead: a :class:`RecordingSession` (handed to the client as its
``session_factory``) keeps every request's method, URL, headers and body and every response.
:func:`compile_script` turns one recorded operation into a :class:`Script` that a bare session
can replay any number of times. Ids the vendor hands out (the new event's id, the contact id)
differ on every run, so the script notes where each id first appears in a response and where
later requests use it; a replay reads the id from its own response and puts it in its place.
Everything else - method, path, headers, JSON body - is sent exactly as the library sent it.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import attrs
import requests
import urllib3

__all__ = ["Exchange", "RecordingSession", "Script", "Step", "compile_script"]

Path = tuple[Any, ...]


@attrs.frozen
class Exchange:
    """One recorded request and its response."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes | None
    status: int
    response: bytes


class RecordingSession(requests.Session):
    """A ``requests.Session`` that appends every exchange to a shared list."""

    def __init__(self, log: list[Exchange]) -> None:
        super().__init__()
        self._log = log

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        response = super().send(request, **kwargs)
        body = request.body.encode("utf-8") if isinstance(request.body, str) else request.body
        self._log.append(
            Exchange(
                method=str(request.method),
                url=str(request.url),
                headers=dict(request.headers),
                body=body if isinstance(body, bytes) else None,
                status=response.status_code,
                response=response.content,
            )
        )
        # the library streams the body and reads it from ``raw`` itself: hand it a fresh copy
        # of what was just consumed (already decoded, so without its Content-Encoding)
        response.headers.pop("Content-Encoding", None)
        response.raw = urllib3.HTTPResponse(
            body=io.BytesIO(response.content),
            headers=dict(response.headers),
            status=response.status_code,
            preload_content=False,
        )
        return response


@attrs.frozen
class Step:
    """One request of a script, with holes where ids from earlier responses go."""

    method: str
    url_parts: tuple[str, ...]
    """The URL split at ``/``; parts that are ids of earlier responses are filled in at replay."""
    url_holes: tuple[int, ...]
    headers: Mapping[str, str]
    body: Any
    """The JSON body (``None`` for no body)."""
    body_holes: tuple[tuple[Path, str], ...]
    """(path in the body, recorded id) pairs to fill in."""
    status: int
    produces: tuple[tuple[Path, str], ...]
    """(path in this response, recorded id) pairs: ids that later steps use."""

    def url(self, ids: Mapping[str, str]) -> str:
        if not self.url_holes:
            return "/".join(self.url_parts)
        parts = list(self.url_parts)
        for index in self.url_holes:
            recorded, mark, query = parts[index].partition("?")  # the last part keeps the query
            parts[index] = ids[recorded] + mark + query
        return "/".join(parts)

    def json(self, ids: Mapping[str, str]) -> Any:
        if not self.body_holes:
            return self.body
        copies: dict[int, Any] = {}

        def copy(node: Any) -> Any:
            key = id(node)
            if key not in copies:
                copies[key] = dict(node) if isinstance(node, dict) else list(node)
            return copies[key]

        root = copy(self.body)
        for path, recorded in self.body_holes:
            node = root
            for key in path[:-1]:
                child = copy(node[key])
                node[key] = child
                node = child
            node[path[-1]] = ids[recorded]
        return root


@attrs.frozen
class Script:
    """A recorded operation, replayable with a bare session."""

    steps: tuple[Step, ...]

    def replay(self, session: requests.Session, timeout: float = 30.0) -> list[int]:
        """Send every step; return the status codes (compare them with :meth:`statuses`)."""
        ids: dict[str, str] = {}
        statuses = []
        for step in self.steps:
            response = session.request(
                step.method, step.url(ids), headers=step.headers, json=step.json(ids), timeout=timeout
            )
            statuses.append(response.status_code)
            if step.produces:
                data = response.json()
                for path, recorded in step.produces:
                    ids[recorded] = str(_get(data, path))
        return statuses

    @property
    def statuses(self) -> list[int]:
        return [s.status for s in self.steps]

    def __len__(self) -> int:
        return len(self.steps)


def compile_script(exchanges: Sequence[Exchange]) -> Script:
    """Turn recorded exchanges into a :class:`Script` (ids become holes)."""
    produced: dict[str, tuple[int, Path]] = {}  # recorded id -> (step, path in its response)
    steps: list[dict[str, Any]] = []
    used: dict[int, set[tuple[Path, str]]] = {}
    for index, ex in enumerate(exchanges):
        url_parts = ex.url.split("/")
        path_start = 3  # "http:", "", host, then the path
        url_holes = tuple(i for i in range(path_start, len(url_parts)) if url_parts[i].partition("?")[0] in produced)
        body = json.loads(ex.body) if ex.body else None
        body_holes = tuple((p, v) for p, v in _leaves(body) if isinstance(v, str) and v in produced)
        for recorded in [url_parts[i].partition("?")[0] for i in url_holes] + [v for _, v in body_holes]:
            source, source_path = produced[recorded]
            used.setdefault(source, set()).add((source_path, recorded))
        headers = {k: v for k, v in ex.headers.items() if k.lower() != "content-length"}
        steps.append(
            {
                "method": ex.method,
                "url_parts": tuple(url_parts),
                "url_holes": url_holes,
                "headers": headers,
                "body": body,
                "body_holes": body_holes,
                "status": ex.status,
            }
        )
        try:
            response = json.loads(ex.response) if ex.response else None
        except ValueError:
            response = None
        for path, value in _leaves(response):
            if _is_id_key(path) and isinstance(value, (str, int)) and not isinstance(value, bool):
                produced.setdefault(str(value), (index, path))
    return Script(
        tuple(Step(**step, produces=tuple(sorted(used.get(i, ()), key=repr))) for i, step in enumerate(steps))
    )


def _is_id_key(path: Path) -> bool:
    return bool(path) and isinstance(path[-1], str) and path[-1].lower().endswith("id")


def _leaves(node: Any, path: Path = ()) -> Iterator[tuple[Path, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _leaves(value, (*path, index))
    elif node is not None:
        yield path, node


def _get(node: Any, path: Path) -> Any:
    for key in path:
        node = node[key]
    return node
