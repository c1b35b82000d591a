"""The user-facing surface of the shared state store: ``PMSClient.check_state()``, the module
function ``check_state`` (and ``checkState``), ``pms-integration state check``, ``GET
/api/integrations/pms/state``, and the examples of docs/deployment.md that need a store of a
kind the docs runner cannot start (Redis). Real stores only: the process-wide memory store, a
SQLite file under ``tmp_path``, a real ``redis-server`` (the ``redis_url`` fixture).

A password in a Redis URL must never show: each surface is tried against
``redis://:pw-secret@127.0.0.1:<a port nobody listens on>/0``.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

import pms_integration as pms
from pms_integration import cli
from pms_integration.server import PREFIX, create_app
from pms_integration.state import StateCheck

from .test_docs import ROOT, code_blocks, python
from .test_server import Served

PASSWORD = "pw-secret"
TOKEN = "state-surface-token-5f1c9a7e2b"


def dead_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def dead_redis_url() -> str:
    return f"redis://:{PASSWORD}@127.0.0.1:{dead_port()}/0"


@pytest.fixture(params=["memory", "sqlite", "redis"])
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A usable store's URL of each kind, in a namespace of its own."""
    if request.param == "memory":
        return "memory://?namespace=surface"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}?namespace=surface"
    redis_url = request.getfixturevalue("redis_url")
    return f"{redis_url}?namespace={request.getfixturevalue('redis_namespace')}"


def expected_kind(url: str) -> str:
    return url.split("://", 1)[0].replace("rediss", "redis")


# -- the client method and the module function ---------------------------------------------------


def test_client_check_state_reports_the_store(state_url: str) -> None:
    with pms.PMSClient(environ={"PMS_STATE_URL": state_url}, env_file=None) as client:
        check = client.check_state()
    assert isinstance(check, StateCheck)
    assert check.kind == expected_kind(state_url)
    assert check.namespace == state_url.rsplit("=", 1)[1]
    assert check.round_trip_ms >= 0
    assert str(check).startswith(f"state store {check.kind} at ")
    assert "reachable and writable" in str(check)


def test_module_function_and_alias_check_the_default_clients_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert pms.checkState is pms.check_state
    assert "check_state" in pms.__all__ and "checkState" in pms.__all__
    check = pms.check_state()  # nothing configured: the process-wide memory store
    assert (check.kind, check.url, check.namespace) == ("memory", "memory://", "")
    monkeypatch.setenv("PMS_STATE_URL", f"sqlite:///{tmp_path / 'default.db'}")
    pms.reload()
    check = pms.checkState()
    assert check.kind == "sqlite"
    assert check.url.endswith("default.db")


def test_check_state_fails_closed_with_a_typed_error_and_no_password(dead_redis_url: str) -> None:
    client = pms.PMSClient(state=dead_redis_url, environ={}, env_file=None)
    with pytest.raises(pms.StateStoreError) as caught:
        client.check_state()
    err = caught.value
    assert err.code == "STATE_UNAVAILABLE"
    for text in (str(err), repr(err), repr(err.args), str(err.store), client.state.url, repr(client.state)):
        assert PASSWORD not in text, text
    assert "127.0.0.1" in str(err)  # says which store, without the password
    assert exit_code_for(err) == 13


def exit_code_for(err: pms.PMSError) -> int:
    return cli.exit_code(err)


def test_a_bad_state_url_is_a_configuration_error_not_a_fallback() -> None:
    with pytest.raises(pms.ConfigurationError):
        pms.PMSClient(environ={"PMS_STATE_URL": "postgres://nowhere"}, env_file=None)


# -- pms-integration state check -----------------------------------------------------------------


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_state_check_prints_the_line(
    state_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PMS_STATE_URL", state_url)
    code, out, err = run_cli(capsys, "state", "check")
    assert code == 0, err
    line = out.strip()
    assert re.fullmatch(
        rf"state store {expected_kind(state_url)} at \S+ \(namespace '[\w.-]+'\): reachable and writable "
        r"\(\d+\.\d ms a step\)",
        line,
    ), line


def test_cli_state_check_default_is_memory(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "state", "check")
    assert code == 0
    assert out.startswith("state store memory at memory://: reachable and writable")


def test_cli_state_check_unreachable_store_is_exit_13_without_the_password(
    dead_redis_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PMS_STATE_URL", dead_redis_url)
    code, out, err = run_cli(capsys, "state", "check")
    assert code == 13
    assert out == ""
    assert err.startswith("error: state store (redis://")
    assert PASSWORD not in out + err


@pytest.mark.parametrize("bad", ["postgres://db/0", "sqlite://", "not a url", f"redis://:{PASSWORD}@host:port/0"])
def test_cli_state_check_bad_url_is_exit_4(
    bad: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PMS_STATE_URL", bad)
    code, out, err = run_cli(capsys, "state", "check")
    assert code == 4, err
    assert err.startswith("error: ")
    assert PASSWORD not in out + err


def test_cli_state_check_in_a_real_process_reads_the_env_file(tmp_path: Path, dead_redis_url: str) -> None:
    """As a deploy step would run it: a fresh process, the URL in ./.env."""
    (tmp_path / ".env").write_text(f"PMS_STATE_URL=sqlite:///{tmp_path / 'deploy.db'}\n", encoding="utf-8")
    proc = python("-m", "pms_integration", "state", "check", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("state store sqlite at sqlite:///")
    (tmp_path / ".env").write_text(f"PMS_STATE_URL={dead_redis_url}\n", encoding="utf-8")
    proc = python("-m", "pms_integration", "state", "check", cwd=tmp_path)
    assert proc.returncode == 13, proc.stderr
    assert PASSWORD not in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_help_lists_the_state_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["state", "--help"])
    assert "check" in capsys.readouterr().out


# -- GET /api/integrations/pms/state ---------------------------------------------------------------


@pytest.fixture
def serve() -> Iterator[list[Served]]:
    running: list[Served] = []
    yield running
    for served in running:
        served.stop()


def start(serve: list[Served], client: pms.PMSClient | None, token: str | None = TOKEN) -> str:
    served = Served(create_app(client, token=token)).start()
    serve.append(served)
    return served.url + PREFIX + "/state"


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_http_state_answers_the_check(state_url: str, serve: list[Served]) -> None:
    with pms.PMSClient(environ={"PMS_STATE_URL": state_url}, env_file=None) as client:
        url = start(serve, client)
        response = requests.get(url, headers=AUTH, timeout=30)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"kind", "url", "namespace", "round_trip_ms"}
    assert body["kind"] == expected_kind(state_url)
    assert body["namespace"]
    assert isinstance(body["round_trip_ms"], (int, float)) and body["round_trip_ms"] >= 0
    assert response.headers["Cache-Control"] == "no-store"


def test_http_state_on_the_default_client(serve: list[Served], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PMS_STATE_URL", f"sqlite:///{tmp_path / 'served.db'}")
    url = start(serve, None)
    body = requests.get(url, headers=AUTH, timeout=30).json()
    assert body["kind"] == "sqlite" and body["url"].endswith("served.db")


def test_http_state_needs_a_token(serve: list[Served]) -> None:
    client = pms.PMSClient(environ={}, env_file=None)
    with_token = start(serve, client)
    missing = requests.get(with_token, timeout=30)
    assert missing.status_code == 401
    wrong = requests.get(with_token, headers={"Authorization": "Bearer not-the-token-at-all"}, timeout=30)
    assert wrong.status_code == 401
    without_token = start(serve, client, token=None)
    refused = requests.get(without_token, timeout=30)
    assert refused.status_code == 403
    assert refused.json()["type"].endswith(":token-required")
    assert requests.post(with_token, headers=AUTH, timeout=30).status_code == 405
    unknown = requests.get(with_token + "?verbose=1", headers=AUTH, timeout=30)
    assert unknown.status_code == 422


def test_http_state_unreachable_is_503_without_the_password(dead_redis_url: str, serve: list[Served]) -> None:
    client = pms.PMSClient(state=dead_redis_url, environ={}, env_file=None)
    response = requests.get(start(serve, client), headers=AUTH, timeout=30)
    assert response.status_code == 503
    assert response.headers["Content-Type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["type"] == "urn:pms-integration:problem:state-unavailable"
    assert problem["code"] == "STATE_UNAVAILABLE"
    assert "redis://" in problem["detail"]
    assert PASSWORD not in response.text
    assert PASSWORD not in json.dumps(dict(response.headers))


def test_http_state_with_a_bad_state_url_is_a_configuration_problem(
    serve: list[Served], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PMS_STATE_URL", f"redis://:{PASSWORD}@host:port/0")
    response = requests.get(start(serve, None), headers=AUTH, timeout=30)
    assert response.status_code == 503
    assert response.json()["type"].endswith(":configuration")
    assert PASSWORD not in response.text


# -- docs/deployment.md ---------------------------------------------------------------------------

DEPLOYMENT = ROOT / "docs" / "deployment.md"


def test_deployment_page_is_in_the_nav() -> None:
    assert "deployment.md" in (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    assert "deployment.md" in (ROOT / "README.md").read_text(encoding="utf-8")


def redis_blocks() -> list[str]:
    """The page's Python examples that need a Redis server (not run by tests/test_docs.py)."""
    return [b["code"] for b in code_blocks(DEPLOYMENT) if b["lang"] == "python" and "redis://" in b["code"]]


def test_deployment_redis_examples_run_against_a_real_redis(redis_url: str, tmp_path: Path) -> None:
    """The Redis examples, run as written but with the server's address in place of the page's
    ``redis.internal:6379`` (and without the page's placeholder password)."""
    blocks = redis_blocks()
    assert blocks, "docs/deployment.md shows no Redis example"
    host_port = redis_url.split("://", 1)[1].split("/", 1)[0]
    for code in blocks:
        code = re.sub(r"rediss?://(:[^@\"']*@)?redis\.internal:6379", f"redis://{host_port}", code)
        script = tmp_path / "redis_example.py"
        script.write_text(code, encoding="utf-8")
        proc = subprocess.run(
            [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
        )
        assert proc.returncode == 0, code + proc.stdout + proc.stderr


# -- benchmarks/state_overhead.py ---------------------------------------------------------------------


def test_the_overhead_benchmark_runs_and_measures_every_store(redis_url: str, tmp_path: Path) -> None:
    """Two rounds, nothing written: the script runs and has a row per store. No timing is asserted
    (``--quick`` never fails on its ratios)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PMS_")}
    env["PMS_TEST_REDIS_URL"] = redis_url
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "state_overhead.py"), "--quick", "--no-write", "--rounds", "2"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for store in ("memory", "sqlite", "redis"):
        assert re.search(rf"^\| {store} \| `{store}:///?[^`]*` .*\| \d+\.\d ms \|", proc.stdout, re.M), proc.stdout
    assert "skipped" not in proc.stdout
