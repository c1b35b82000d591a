from __future__ import annotations

import os
from pathlib import Path

import pytest

import pms_integration as pms
from pms_integration.config import VARIABLES, Secret, load_config
from pms_integration.errors import ConfigurationError
from pms_integration.models import ProviderName

from .conftest import full_environ

REQUIRED = {
    ProviderName.GOHIGHLEVEL: ["PMS_GHL_API_KEY", "PMS_GHL_LOCATION_ID", "PMS_GHL_CALENDAR_ID"],
    ProviderName.SALESFORCE: ["PMS_SALESFORCE_BASE_URL", "PMS_SALESFORCE_TOKEN", "PMS_SALESFORCE_OWNER_ID"],
    ProviderName.HUBSPOT: ["PMS_HUBSPOT_PRIVATE_APP_TOKEN"],
}


def test_empty_environment_disables_all_three_and_names_the_missing_variables() -> None:
    statuses = pms.providers()
    assert [s.name for s in statuses] == list(ProviderName)
    for status in statuses:
        assert not status.enabled
        assert list(status.missing) == REQUIRED[status.name]
        assert status.problems == ()


def test_every_variable_set_enables_all() -> None:
    config = load_config(full_environ())
    assert [s.enabled for s in config.statuses()] == [True, True, True]
    assert config.enabled() == list(ProviderName)


def test_empty_string_counts_as_missing() -> None:
    config = load_config(full_environ(PMS_GHL_LOCATION_ID="  ", PMS_HUBSPOT_PRIVATE_APP_TOKEN=""))
    ghl = config.get(ProviderName.GOHIGHLEVEL)
    assert not ghl.enabled and ghl.missing == ("PMS_GHL_LOCATION_ID",)
    assert config.get(ProviderName.HUBSPOT).missing == ("PMS_HUBSPOT_PRIVATE_APP_TOKEN",)


@pytest.mark.parametrize(
    ("variable", "value", "fragment"),
    [
        ("PMS_GHL_TIMEOUT_MS", "fast", "PMS_GHL_TIMEOUT_MS must be a whole number"),
        ("PMS_SALESFORCE_TIMEOUT_MS", "-5", "PMS_SALESFORCE_TIMEOUT_MS must be a whole number"),
        ("PMS_SALESFORCE_BASE_URL", "http://example.my.salesforce.com", "must be an https URL"),
        ("PMS_HUBSPOT_BASE_URL", "ftp://api.hubapi.com", "must be an https URL"),
        ("PMS_HUBSPOT_BASE_URL", "https://user:pw@api.hubapi.com", "must not contain credentials"),
        ("PMS_GHL_API_VERSION", "v9", "PMS_GHL_API_VERSION must be v1 or v2"),
        ("PMS_SALESFORCE_OWNER_ID", "not-an-id", "PMS_SALESFORCE_OWNER_ID must be"),
        ("PMS_SALESFORCE_API_VERSION", "30.0", "46.0 or later"),
        ("PMS_HUBSPOT_API_VERSION", "v5", "PMS_HUBSPOT_API_VERSION must be"),
        ("PMS_GHL_TIMEZONE", "Mars/Olympus", "IANA"),
        ("PMS_GHL_RATE_LIMIT", "lots", "PMS_GHL_RATE_LIMIT must look like"),
    ],
)
def test_invalid_value_disables_the_provider_with_a_problem(variable: str, value: str, fragment: str) -> None:
    config = load_config(full_environ(**{variable: value}))
    provider = next(v.provider for v in VARIABLES if v.name == variable)
    assert provider is not None
    pc = config.get(provider)
    assert not pc.enabled
    assert any(fragment in p for p in pc.problems), pc.problems
    status = pc.status()
    assert not status.enabled and status.problems == pc.problems


def test_loopback_http_is_allowed_for_emulators() -> None:
    for url in ("http://127.0.0.1:8080/sf", "http://localhost:1", "http://[::1]:9/x"):
        assert load_config(full_environ(PMS_SALESFORCE_BASE_URL=url)).get(ProviderName.SALESFORCE).enabled


def test_ghl_version_is_inferred_from_the_base_url() -> None:
    v1 = load_config(full_environ(PMS_GHL_BASE_URL="https://rest.gohighlevel.com/v1"))
    settings = v1.get(ProviderName.GOHIGHLEVEL).settings
    assert settings is not None and settings.api_version == "v1"  # type: ignore[union-attr]
    v2 = load_config(full_environ()).get(ProviderName.GOHIGHLEVEL).settings
    assert v2 is not None and v2.api_version == "v2" and v2.base_url == "https://services.leadconnectorhq.com"  # type: ignore[union-attr]


@pytest.mark.parametrize("url", ["https://rest.gohighlevel.com", "https://rest.gohighlevel.com/", "https://rest.gohighlevel.com/v1"])
def test_ghl_v1_base_url_always_ends_in_v1(url: str) -> None:
    settings = load_config(full_environ(PMS_GHL_BASE_URL=url)).get(ProviderName.GOHIGHLEVEL).settings
    assert settings is not None
    assert (settings.api_version, settings.base_url) == ("v1", "https://rest.gohighlevel.com/v1")  # type: ignore[union-attr]


def test_hubspot_access_token_alias_is_accepted() -> None:
    env = full_environ()
    env["PMS_HUBSPOT_ACCESS_TOKEN"] = env.pop("PMS_HUBSPOT_PRIVATE_APP_TOKEN")
    assert load_config(env).get(ProviderName.HUBSPOT).enabled


def test_partial_salesforce_refresh_configuration_is_a_problem() -> None:
    pc = load_config(full_environ(PMS_SALESFORCE_CLIENT_ID="abc")).get(ProviderName.SALESFORCE)
    assert not pc.enabled
    assert "PMS_SALESFORCE_CLIENT_SECRET" in pc.problems[0] and "PMS_SALESFORCE_REFRESH_TOKEN" in pc.problems[0]


def test_unknown_default_provider_is_a_problem() -> None:
    config = load_config(full_environ(PMS_DEFAULT_PROVIDER="zoho"))
    assert config.default_provider is None
    assert any("PMS_DEFAULT_PROVIDER" in p for p in config.problems)
    assert load_config(full_environ(PMS_DEFAULT_PROVIDER="GHL")).default_provider is ProviderName.GOHIGHLEVEL


def test_tokens_are_secrets() -> None:
    settings = load_config(full_environ()).get(ProviderName.HUBSPOT).settings
    assert settings is not None
    assert isinstance(settings.token, Secret)  # type: ignore[union-attr]
    assert "canary" not in repr(settings) and "canary" not in str(settings.token)  # type: ignore[union-attr]
    assert f"{settings.token}" == "**********"  # type: ignore[union-attr]


# -- .env files ----------------------------------------------------------------------------


def _write_env(path: Path, values: dict[str, str]) -> Path:
    path.write_text("".join(f'{k}="{v}"\n' for k, v in values.items()), encoding="utf-8")
    return path


def test_env_file_values_are_used_without_touching_os_environ(tmp_path: Path) -> None:
    before = dict(os.environ)
    env_file = _write_env(tmp_path / "practice.env", {"PMS_HUBSPOT_PRIVATE_APP_TOKEN": "pat-na1-from-the-env-file-4f2a", "PMS_HUBSPOT_STAGE_ID": "fromfile"})
    config = load_config(env_file=env_file)
    settings = config.get(ProviderName.HUBSPOT).settings
    assert settings is not None and settings.stage_id == "fromfile"  # type: ignore[union-attr]
    assert dict(os.environ) == before


def test_process_environment_wins_over_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = _write_env(tmp_path / ".env", {"PMS_HUBSPOT_PRIVATE_APP_TOKEN": "pat-na1-from-the-env-file-4f2a", "PMS_HUBSPOT_STAGE_ID": "fromfile"})
    monkeypatch.setenv("PMS_HUBSPOT_STAGE_ID", "fromenv")
    monkeypatch.chdir(tmp_path)
    before = dict(os.environ)
    for config in (load_config(), load_config(env_file=env_file)):
        settings = config.get(ProviderName.HUBSPOT).settings
        assert settings is not None and settings.stage_id == "fromenv"  # type: ignore[union-attr]
    assert dict(os.environ) == before
    assert "PMS_HUBSPOT_PRIVATE_APP_TOKEN" not in os.environ


def test_explicit_mapping_replaces_environment_and_default_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_env(tmp_path / ".env", {"PMS_HUBSPOT_PRIVATE_APP_TOKEN": "pat-na1-from-the-env-file-4f2a"})
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PMS_GHL_API_KEY", "pit-from-the-environment-9c1d")
    config = load_config({"PMS_HUBSPOT_STAGE_ID": "x"})
    assert config.enabled() == []


def test_missing_explicit_env_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_config(env_file=tmp_path / "nope.env")


ROOT = Path(__file__).resolve().parent.parent


def test_the_docs_tables_are_generated_from_the_declarations() -> None:
    from pms_integration.config import _page_with_variables

    page = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert _page_with_variables(page) == page, "run `python -m pms_integration.config` from the repository root"
    for var in VARIABLES:
        assert f"| `{var.name}` |" in page


def test_the_env_template_is_generated_from_the_declarations() -> None:
    from pms_integration.config import env_template

    template = (ROOT / ".env.example").read_text(encoding="utf-8")
    assert template == env_template(), "run `python -m pms_integration.config` from the repository root"
    from dotenv import dotenv_values

    listed = dotenv_values(ROOT / ".env.example")  # the required variables, left empty to fill in
    assert set(listed) == {v.name for v in VARIABLES if v.required} and set(listed.values()) == {""}
    assert load_config(listed, env_file=None).enabled() == []  # copied as is, it enables nothing


def test_python_m_config_rewrites_the_generated_tables_and_the_template(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pms_integration.config import _page_with_variables, env_template
    from pms_integration.config.__main__ import main

    page = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    start, end = page.index("### General"), page.index("<!-- end of the generated tables -->")
    (tmp_path / "page.md").write_text(page[:start] + "stale table\n" + page[end:], encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    main(["page.md", "env.txt"])
    assert (tmp_path / "page.md").read_text(encoding="utf-8") == page == _page_with_variables(page)
    assert (tmp_path / "env.txt").read_text(encoding="utf-8") == env_template()


def test_the_server_token_is_declared_with_the_general_variables() -> None:
    from pms_integration.server import TOKEN_VARIABLE

    (var,) = [v for v in VARIABLES if v.name == TOKEN_VARIABLE]
    assert var.provider is None and var.secret and not var.required
    config = load_config(full_environ(PMS_SERVER_TOKEN="srv-canary-4b1d9e77c0ffee5a"))
    assert isinstance(config.server_token, Secret) and config.server_token.reveal() == "srv-canary-4b1d9e77c0ffee5a"
    assert "canary" not in repr(config)


def test_every_missing_and_invalid_variable_of_a_provider_is_reported_at_once() -> None:
    env = full_environ(PMS_SALESFORCE_TIMEOUT_MS="fast", PMS_SALESFORCE_CANCEL_MODE="archive", PMS_SALESFORCE_CLIENT_ID="abc")
    del env["PMS_SALESFORCE_TOKEN"], env["PMS_SALESFORCE_OWNER_ID"]
    pc = load_config(env).get(ProviderName.SALESFORCE)
    assert pc.missing == ("PMS_SALESFORCE_TOKEN", "PMS_SALESFORCE_OWNER_ID")
    assert [p.split()[0] for p in pc.problems] == ["PMS_SALESFORCE_TIMEOUT_MS", "PMS_SALESFORCE_CANCEL_MODE", "token"]


@pytest.mark.parametrize(
    ("overrides", "account", "version"),
    [
        ({}, "https://services.leadconnectorhq.com|loc123|cal456", "v2"),
        ({"PMS_GHL_BASE_URL": "https://rest.gohighlevel.com"}, "https://rest.gohighlevel.com/v1|loc123|cal456", "v1"),
    ],
)
def test_gohighlevel_account_and_version_label(overrides: dict[str, str], account: str, version: str) -> None:
    env = full_environ(PMS_GHL_LOCATION_ID="loc123", PMS_GHL_CALENDAR_ID="cal456", **overrides)
    pc = load_config(env).get(ProviderName.GOHIGHLEVEL)
    assert pc.settings is not None
    assert (pc.settings.account, pc.settings.version_label) == (account, version)
    assert pc.status().api_version == version


def test_salesforce_and_hubspot_account_and_version_label() -> None:
    config = load_config(full_environ(PMS_HUBSPOT_PIPELINE_ID="dental"))
    sf = config.get(ProviderName.SALESFORCE).settings
    hs = config.get(ProviderName.HUBSPOT).settings
    assert sf is not None and hs is not None
    assert sf.account == f"{sf.base_url}|{sf.owner_id}" and sf.version_label == "v67.0"  # type: ignore[union-attr]
    assert (hs.account, hs.version_label) == (f"{hs.base_url}|dental", "v3")
    for settings in (sf, hs):
        assert "canary" not in settings.account


@pytest.mark.parametrize("bad", ["tok\nen", "tok\ren", "“quoted”", "has space", "tab\tbed"])
@pytest.mark.parametrize("variable", ["PMS_GHL_API_KEY", "PMS_SALESFORCE_TOKEN", "PMS_HUBSPOT_PRIVATE_APP_TOKEN"])
def test_tokens_must_be_one_line_of_printable_ascii(variable: str, bad: str) -> None:
    config = load_config(full_environ(**{variable: bad}))
    provider = next(v.provider for v in VARIABLES if v.name == variable)
    assert provider is not None
    pc = config.get(provider)
    assert not pc.enabled and any("printable ASCII" in p for p in pc.problems)
    assert bad not in repr(pc) + str(pc.status())


# -- numbers are ASCII digits ----------------------------------------------------------------

NON_ASCII_NUMBERS = ["²", "١٠", "１０", "10²", "٣٠٠٠٠"]


@pytest.mark.parametrize("value", NON_ASCII_NUMBERS)
@pytest.mark.parametrize("variable", ["PMS_GHL_TIMEOUT_MS", "PMS_SALESFORCE_TIMEOUT_MS", "PMS_HUBSPOT_TIMEOUT_MS"])
def test_non_ascii_digits_in_a_timeout_are_a_problem_not_a_crash(variable: str, value: str) -> None:
    config = load_config(full_environ(**{variable: value}))
    provider = next(v.provider for v in VARIABLES if v.name == variable)
    assert provider is not None
    pc = config.get(provider)
    assert not pc.enabled and any(p.startswith(variable) for p in pc.problems), pc.problems


@pytest.mark.parametrize("value", NON_ASCII_NUMBERS)
@pytest.mark.parametrize("variable", ["PMS_MAX_ATTEMPTS", "PMS_DEADLINE_MS"])
def test_non_ascii_digits_in_a_global_number_are_a_problem_everywhere(variable: str, value: str) -> None:
    config = load_config(full_environ(**{variable: value}))
    assert any(p.startswith(variable) for p in config.problems), config.problems
    assert (config.max_attempts, config.deadline) == (3, 30.0)  # the defaults, not a misread
    with pms.PMSClient(environ=full_environ(**{variable: value}), env_file=None) as client:
        assert client.config.problems == config.problems
    with pytest.raises(ConfigurationError, match=variable):
        pms.reload(full_environ(**{variable: value}), env_file=None)


@pytest.mark.parametrize("value", ["١٠٠/١٠", "100/١٠", "²/10"])
def test_non_ascii_digits_in_a_rate_limit_are_a_problem(value: str) -> None:
    pc = load_config(full_environ(PMS_HUBSPOT_RATE_LIMIT=value)).get(ProviderName.HUBSPOT)
    assert not pc.enabled and any("PMS_HUBSPOT_RATE_LIMIT" in p for p in pc.problems)


def test_non_ascii_digits_in_ids_and_versions_are_a_problem() -> None:
    sf = load_config(full_environ(PMS_SALESFORCE_API_VERSION="٦٧.0")).get(ProviderName.SALESFORCE)
    assert not sf.enabled and any("PMS_SALESFORCE_API_VERSION" in p for p in sf.problems)
    hs = load_config(full_environ(PMS_HUBSPOT_REPORT_COMPANY_ID="١٢٣")).get(ProviderName.HUBSPOT)
    assert not hs.enabled and any("PMS_HUBSPOT_REPORT_COMPANY_ID" in p for p in hs.problems)


# -- secrets must look like secrets ----------------------------------------------------------

SECRET_VARIABLES = [
    "PMS_GHL_API_KEY",
    "PMS_SALESFORCE_TOKEN",
    "PMS_SALESFORCE_CLIENT_SECRET",
    "PMS_SALESFORCE_REFRESH_TOKEN",
    "PMS_HUBSPOT_PRIVATE_APP_TOKEN",
    "PMS_HUBSPOT_ACCESS_TOKEN",
]
WEAK_SECRETS = [
    "2031",
    "true",
    "null",
    "changeme",
    "short-but-15-ch",
    "your-api-key-here",
    "changeme-changeme",
    "test-token-test-token",
    "xxxxxxxxxxxxxxxxxxxxxxxx",
    "0000-0000-0000-0000",
    "1234567890123456",
    "<your-private-app-token>",
    "pat-na1-................",
]


def _env_with_secret(variable: str, value: str) -> dict[str, str]:
    env = full_environ(PMS_SALESFORCE_CLIENT_ID="3MVG9canaryconsumerkey")
    env.setdefault("PMS_SALESFORCE_CLIENT_SECRET", "canary-sf-client-secret-31337")
    env.setdefault("PMS_SALESFORCE_REFRESH_TOKEN", "canary-sf-refresh-token-8086")
    if variable == "PMS_HUBSPOT_ACCESS_TOKEN":
        del env["PMS_HUBSPOT_PRIVATE_APP_TOKEN"]
    env[variable] = value
    return env


def test_the_strong_secrets_the_suite_uses_are_accepted() -> None:
    config = load_config(_env_with_secret("PMS_GHL_API_KEY", "pit-canary-ghl-7f3e9a1b2c4d"))
    assert config.enabled() == list(ProviderName), config.all_problems()


@pytest.mark.parametrize("value", WEAK_SECRETS)
@pytest.mark.parametrize("variable", SECRET_VARIABLES)
def test_a_short_or_common_secret_disables_its_provider(variable: str, value: str) -> None:
    from pms_integration import _redact

    config = load_config(_env_with_secret(variable, value))
    provider = ProviderName.HUBSPOT if variable == "PMS_HUBSPOT_ACCESS_TOKEN" else next(
        v.provider for v in VARIABLES if v.name == variable
    )
    assert provider is not None
    pc = config.get(provider)
    assert not pc.enabled
    named = "PMS_HUBSPOT_PRIVATE_APP_TOKEN" if variable == "PMS_HUBSPOT_ACCESS_TOKEN" else variable
    assert any(p.startswith(named) for p in pc.problems), pc.problems
    shown = repr(pc) + str(pc.status()) + " ".join(config.all_problems())
    assert value not in shown
    # a refused value never reaches the redaction layer (it would mask ordinary data)
    assert value not in _redact._known
    # the other providers are untouched
    assert len(config.enabled()) == 2


@pytest.mark.parametrize("value", ["2031", "true", "your-server-token-here"])
def test_a_weak_server_token_is_a_configuration_problem(value: str) -> None:
    config = load_config(full_environ(PMS_SERVER_TOKEN=value))
    assert any(p.startswith("PMS_SERVER_TOKEN") for p in config.problems), config.problems
    assert all(value not in p for p in config.all_problems())
    with pytest.raises(ConfigurationError, match="PMS_SERVER_TOKEN") as info:
        pms.reload(full_environ(PMS_SERVER_TOKEN=value), env_file=None)
    assert value not in str(info.value)
    assert load_config(full_environ(PMS_SERVER_TOKEN="srv-canary-4b1d9e77c0ffee5a")).problems == ()


def test_secret_problem_is_the_validator_the_server_shares() -> None:
    from pms_integration.config import MIN_SECRET_LENGTH, secret_problem

    assert MIN_SECRET_LENGTH == 16
    assert secret_problem("PMS_SERVER_TOKEN", "srv-canary-4b1d9e77c0ffee5a") is None
    problem = secret_problem("PMS_SERVER_TOKEN", "2031")
    assert problem is not None and problem.startswith("PMS_SERVER_TOKEN") and "2031" not in problem
    assert secret_problem("x", None) is not None


@pytest.mark.parametrize("value", ["", "   ", None, 2031, b"bytes-are-not-a-secret", ["x" * 20]])
def test_secret_refuses_a_non_string_or_empty_value_with_a_configuration_error(value: object) -> None:
    with pytest.raises(ConfigurationError) as info:
        Secret(value, name="PMS_SERVER_TOKEN")  # type: ignore[arg-type]
    assert "PMS_SERVER_TOKEN" in str(info.value)


@pytest.mark.parametrize("value", ["2031", "true", "changeme-changeme", "your-server-token-here"])
def test_secret_checked_refuses_weak_values_without_showing_them(value: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        Secret.checked(value, name="PMS_SERVER_TOKEN")
    assert "PMS_SERVER_TOKEN" in str(info.value) and value not in str(info.value) + repr(info.value)


def test_a_short_vendor_issued_secret_is_kept_but_never_registered_for_redaction() -> None:
    from pms_integration import _redact

    secret = Secret("tok-2031-short")  # what a vendor issued: used as is
    assert secret.reveal() == "tok-2031-short"
    assert "tok-2031-short" not in getattr(_redact, "_known", set())


def test_secret_accepts_a_real_looking_value() -> None:
    for secret in (Secret("srv-canary-4b1d9e77c0ffee5a"), Secret.checked("srv-canary-4b1d9e77c0ffee5a")):
        assert secret.reveal() == "srv-canary-4b1d9e77c0ffee5a" and "canary" not in repr(secret)


# -- wrong argument types ---------------------------------------------------------------------


@pytest.mark.parametrize("environ", [0, "PMS_GHL_API_KEY=x", b"", ["PMS_X"], object()])
def test_load_config_with_a_non_mapping_is_a_configuration_error(environ: object) -> None:
    with pytest.raises(ConfigurationError, match="environ"):
        load_config(environ)  # type: ignore[arg-type]


@pytest.mark.parametrize("env_file", [b"practice.env", 0, 1.5, ["a.env"], "", "   "])
def test_load_config_with_a_bad_env_file_is_a_configuration_error(env_file: object) -> None:
    with pytest.raises(ConfigurationError, match="env_file"):
        load_config({}, env_file)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="env_file"):
        pms.reload({}, env_file=env_file)  # type: ignore[arg-type]


def test_a_general_problem_is_logged_once_when_a_client_is_built(caplog: pytest.LogCaptureFixture) -> None:
    with pms.PMSClient(environ={"PMS_MAX_ATTEMPTS": "²", "PMS_SERVER_TOKEN": "2031"}, env_file=None):
        pass
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("PMS_MAX_ATTEMPTS" in w for w in warnings) and any("PMS_SERVER_TOKEN" in w for w in warnings)
    assert not any("2031" in w for w in warnings)


@pytest.mark.parametrize(
    "environ",
    [{1: 2}, {"PMS_MAX_ATTEMPTS": b"3"}, {"PMS_GHL_API_KEY": None}, {b"PMS_MAX_ATTEMPTS": "3"}, {"OTHER": 5}],
    ids=["int-key-int-value", "bytes-value", "none-value", "bytes-key", "non-pms-int-value"],
)
def test_an_environ_with_keys_or_values_that_are_not_strings_is_refused(environ: dict[object, object]) -> None:
    # Before, these were silently dropped and the configuration said problems=().
    for load in (
        lambda: load_config(environ, env_file=None),  # type: ignore[arg-type]
        lambda: pms.PMSClient(environ=environ, env_file=None),  # type: ignore[arg-type]
        lambda: pms.reload(environ, env_file=None),  # type: ignore[arg-type]
    ):
        with pytest.raises(ConfigurationError, match=r"^environ must map variable names") as info:
            load()
        assert "b'3'" not in str(info.value) and " a int" not in str(info.value)


def test_the_type_in_an_environ_message_takes_the_right_article() -> None:
    with pytest.raises(ConfigurationError) as info:
        load_config({1: "x"}, env_file=None)  # type: ignore[dict-item]
    assert "it has an int key" in str(info.value)
    with pytest.raises(ConfigurationError) as info:
        load_config({"PMS_MAX_ATTEMPTS": b"3"}, env_file=None)  # type: ignore[dict-item]
    assert "it has a bytes value for PMS_MAX_ATTEMPTS" in str(info.value)


def test_read_variables_is_what_load_config_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pms_integration.config import read_variables

    (tmp_path / ".env").write_text("PMS_SERVER_TOKEN=from-the-file-7Qw2Lk9Zp4\nPMS_MAX_ATTEMPTS=2\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert read_variables() == {"PMS_SERVER_TOKEN": "from-the-file-7Qw2Lk9Zp4", "PMS_MAX_ATTEMPTS": "2"}
    monkeypatch.setenv("PMS_MAX_ATTEMPTS", "4")
    assert read_variables()["PMS_MAX_ATTEMPTS"] == "4"  # the process environment wins
    assert read_variables({"PMS_X": "1"}) == {"PMS_X": "1"}  # a mapping alone: no ./.env
    assert read_variables({"PMS_X": "1"}, env_file=tmp_path / ".env")["PMS_X"] == "1"
