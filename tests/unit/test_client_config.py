"""Unit tests of ai.backend.client.config: env lookup, parsing and defaults."""

from __future__ import annotations

import os

import pytest

from ai.backend.client.config import (
    API_VERSION,
    APIConfig,
    bool_env,
    get_config,
    get_env,
    parse_api_version,
    set_config,
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith(("BACKEND_", "SORNA_")):
            monkeypatch.delenv(key)
    set_config(None)


def test_get_env_prefers_backend_then_sorna(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SORNA_DOMAIN", "legacy")
    assert get_env("domain") == "legacy"
    monkeypatch.setenv("BACKEND_DOMAIN", "new")
    assert get_env("domain") == "new"


def test_get_env_default_and_missing() -> None:
    assert get_env("NOPE", "fallback") == "fallback"
    assert get_env("NOPE", "3.5", clean=float) == 3.5  # clean applies to the default too
    with pytest.raises(KeyError):
        get_env("NOPE")


def test_get_env_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKEND_SKIP_SSLCERT_VALIDATION", "maybe")
    with pytest.raises(ValueError, match="BACKEND_SKIP_SSLCERT_VALIDATION"):
        get_env("SKIP_SSLCERT_VALIDATION", "no", clean=bool_env)


@pytest.mark.parametrize("word", ["y", "YES", "t", "True", "1"])
def test_bool_env_true(word: str) -> None:
    assert bool_env(word) is True


@pytest.mark.parametrize("word", ["n", "No", "f", "FALSE", "0"])
def test_bool_env_false(word: str) -> None:
    assert bool_env(word) is False


@pytest.mark.parametrize("word", ["", "maybe", "2", "on"])
def test_bool_env_rejects(word: str) -> None:
    with pytest.raises(ValueError):
        bool_env(word)


def test_defaults() -> None:
    assert APIConfig.DEFAULTS["version"] == "v6.20220615"
    assert API_VERSION == (6, "20220615")
    conf = APIConfig()
    assert str(conf.endpoint) == "https://api.backend.ai"
    assert conf.endpoint_type == "api"
    assert conf.version == "v6.20220615"
    assert conf.domain == "default"
    assert conf.group == "default"
    assert conf.hash_type == "sha256"
    assert conf.connection_timeout == 10.0
    assert conf.read_timeout == 0.0
    assert conf.skip_sslcert_validation is False
    assert conf.vfolder_mounts == []
    assert conf.storage_proxy_address_map == {}
    assert conf.is_anonymous  # no access key configured
    assert conf.user_agent.startswith("Backend.AI Client for Python")


def test_keyword_only() -> None:
    with pytest.raises(TypeError):
        APIConfig("http://localhost:8081")  # type: ignore[misc]


def test_env_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKEND_ENDPOINT", "http://127.0.0.1:8081")
    monkeypatch.setenv("BACKEND_ACCESS_KEY", "AKTEST")
    monkeypatch.setenv("BACKEND_SECRET_KEY", "SKTEST")
    monkeypatch.setenv("BACKEND_DOMAIN", "dom")
    monkeypatch.setenv("SORNA_GROUP", "grp")
    monkeypatch.setenv("BACKEND_VFOLDER_MOUNTS", "a, b,,a")
    monkeypatch.setenv("BACKEND_SKIP_SSLCERT_VALIDATION", "yes")
    monkeypatch.setenv("BACKEND_CONNECTION_TIMEOUT", "2.5")
    monkeypatch.setenv("BACKEND_READ_TIMEOUT", "30")
    monkeypatch.setenv("BACKEND_OVERRIDE_STORAGE_PROXY", "x1=y1,x2=y2")
    conf = APIConfig()
    assert str(conf.endpoint) == "http://127.0.0.1:8081"
    assert (conf.access_key, conf.secret_key) == ("AKTEST", "SKTEST")
    assert not conf.is_anonymous
    assert (conf.domain, conf.group) == ("dom", "grp")
    assert conf.vfolder_mounts == ["a", "b"]
    assert conf.skip_sslcert_validation is True
    assert conf.connection_timeout == 2.5
    assert conf.read_timeout == 30.0
    assert conf.storage_proxy_address_map == {"x1": "y1", "x2": "y2"}


def test_arguments_override_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKEND_DOMAIN", "dom")
    monkeypatch.setenv("BACKEND_SKIP_SSLCERT_VALIDATION", "yes")
    monkeypatch.setenv("BACKEND_VFOLDER_MOUNTS", "envmount")
    conf = APIConfig(domain="argdom", skip_sslcert_validation=False, vfolder_mounts=["argmount"])
    assert conf.domain == "argdom"
    assert conf.skip_sslcert_validation is False
    assert conf.vfolder_mounts == ["argmount", "envmount"]


def test_multiple_endpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKEND_ENDPOINT", "http://a:1, http://b:2,http://c:3")
    conf = APIConfig()
    assert sorted(str(e) for e in conf.endpoints) == ["http://a:1", "http://b:2", "http://c:3"]
    first = conf.endpoint
    conf.rotate_endpoints()
    assert conf.endpoint != first
    assert len(conf.endpoints) == 3


@pytest.mark.parametrize("value", ["not a url", "ftp://host", "http://", "/relative/path"])
def test_bad_endpoint_env(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("BACKEND_ENDPOINT", value)
    with pytest.raises(ValueError, match="BACKEND_ENDPOINT"):
        APIConfig()


def test_bad_endpoint_argument() -> None:
    with pytest.raises(ValueError, match="endpoint"):
        APIConfig(endpoint="localhost:8081")


@pytest.mark.parametrize("value", ["abc", "-1", "nan", ""])
def test_bad_timeouts(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("BACKEND_CONNECTION_TIMEOUT", value)
    with pytest.raises(ValueError, match="BACKEND_CONNECTION_TIMEOUT"):
        APIConfig()


def test_bad_endpoint_type(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKEND_ENDPOINT_TYPE", "webui")
    with pytest.raises(ValueError, match="BACKEND_ENDPOINT_TYPE"):
        APIConfig()


def test_bad_storage_proxy_map(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKEND_OVERRIDE_STORAGE_PROXY", "x1=y1,broken")
    with pytest.raises(ValueError, match="BACKEND_OVERRIDE_STORAGE_PROXY"):
        APIConfig()


def test_bad_version_and_hash() -> None:
    with pytest.raises(ValueError, match="API version"):
        APIConfig(version="6.2022")
    with pytest.raises(ValueError, match="hash"):
        APIConfig(hash_type="nohash")


def test_session_endpoint_type_uses_dummy_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKEND_ACCESS_KEY", "AKTEST")
    conf = APIConfig(endpoint_type="session")
    assert conf.access_key == "dummy"
    assert conf.secret_key == "dummy"


def test_empty_access_key_is_anonymous(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKEND_ACCESS_KEY", "")
    assert APIConfig().is_anonymous


def test_parse_api_version() -> None:
    assert parse_api_version("v6.20220615") == (6, "20220615")
    assert parse_api_version("v10.20250101") > parse_api_version("v9.20250101")
    for bad in ("6.20220615", "v6", "v6.2022061", "vx.20220615"):
        with pytest.raises(ValueError):
            parse_api_version(bad)


def test_get_and_set_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKEND_DOMAIN", "first")
    conf = get_config()
    assert conf.domain == "first"
    assert get_config() is conf  # created once
    other = APIConfig(domain="second")
    set_config(other)
    assert get_config() is other
