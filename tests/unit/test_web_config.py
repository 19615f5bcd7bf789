"""The webserver's config checks, its memory store, and the session-mode cookie file of our client."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from ai.backend.client.cookies import clear_cookies, cookie_file, load_cookies, save_cookies
from ai.backend.web.config import WebConfig
from ai.backend.web.store import MemoryStore


def test_config_defaults_and_checks() -> None:
    conf = WebConfig.model_validate({"api": {"endpoint": "http://a:1/, https://b:2"}})
    assert conf.api.endpoint == ["http://a:1", "https://b:2"] and conf.session.cookie_samesite == "Lax"
    for bad in (
        {"session": {"cookie-samesite": "None"}},
        {"api": {"endpoint": "ftp://x"}},
        {"session": {"redis-url": "http://x"}},
        {"service": {"ssl-cert": "/nope"}},
        {"bogus": {}},
    ):
        with pytest.raises(ValidationError):
            WebConfig.model_validate(bad)


async def test_memory_store_sessions_and_failures() -> None:
    store = MemoryStore()
    await store.put_session("sid", {"authenticated": True}, 60)
    assert await store.get_session("sid") == {"authenticated": True}
    assert await store.get_session("other") is None
    await store.delete_session("sid")
    assert await store.get_session("sid") is None
    assert [await store.add_failure("a", 60) for _ in range(3)] == [1, 2, 3]
    await store.clear_failures("a")
    assert await store.failures("a") == 0
    await store.put_session("gone", {}, 0)
    assert await store.get_session("gone") is None  # expired at once


def test_cookie_file_per_endpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    save_cookies("http://a:1/", {"AIOHTTP_SESSION": "x"})
    save_cookies("http://b:2", {"AIOHTTP_SESSION": "y"})
    assert load_cookies("http://a:1") == {"AIOHTTP_SESSION": "x"} and load_cookies("http://c") == {}
    assert cookie_file().stat().st_mode & 0o077 == 0
    clear_cookies("http://a:1")
    clear_cookies("http://b:2")
    assert not cookie_file().exists()
