"""The app proxy's parts that need no traffic: its config checks (and the one-line refusal of a bad file),
permits and setup tickets, the nonce book, header helpers, and how circuits take ports."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from ai.backend.appproxy.circuits import CircuitTable, _host_netloc, _netloc
from ai.backend.appproxy.config import AppProxyConfig
from ai.backend.appproxy.errors import NoFreePort
from ai.backend.appproxy.forward import _sendable, strip_permits
from ai.backend.appproxy.permits import (
    BadTicket,
    NonceBook,
    issue_ticket,
    permit_value,
    safe_redirect,
    verify_ticket,
)
from ai.backend.common.app_tokens import AppGrant, issue
from ai.backend.testutils.appproxy import free_port_range

SECRET = "0123456789abcdef-unit"


def conf(**kw: object) -> AppProxyConfig:
    return AppProxyConfig.model_validate({"appproxy": {"secret": SECRET, **kw}})


def test_config_defaults_and_checks() -> None:
    c = conf().appproxy
    assert (c.bind_host, c.api_port, c.advertised_host, c.port_range) == (
        "127.0.0.1",
        10200,
        "127.0.0.1",
        (10205, 10300),
    )
    assert (c.alive_interval, c.idle_timeout, c.public_scheme) == (5.0, 3600.0, "http")
    assert (
        conf(**{"bind-host": "0.0.0.0", "advertised-host": "apps.example"}).appproxy.advertised_host == "apps.example"
    )
    assert conf(**{"manager-url": "http://m:8091/"}).appproxy.manager_url == "http://m:8091"
    for bad in (
        {"secret": "short"},
        {"port-range": [10300, 10205]},
        {"port-range": [10205, 70000]},
        {"api-port": 10210},
        {"bind-host": "0.0.0.0"},  # browsers cannot be sent to 0.0.0.0
        {"manager-url": "ftp://m"},
        {"alive-interval": 0},
        {"bogus": 1},
    ):
        with pytest.raises(ValidationError):
            conf(**bad)
    with pytest.raises(ValidationError):
        AppProxyConfig.model_validate({"appproxy": {}})  # no secret


def test_bad_config_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "appproxy.toml"
    bad.write_text('[appproxy]\nsecret = "short"\n')
    for module in ("ai.backend.appproxy.server", "ai.backend.appproxy"):
        r = subprocess.run([sys.executable, "-m", module, "--config", str(bad)], capture_output=True, text=True)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and "secret" in r.stderr, r.stderr


def test_setup_tickets() -> None:
    t = issue_ticket(SECRET, "c1", "u1", "/lab", now=1000.0)
    got = verify_ticket(SECRET, t, now=1010.0)
    assert (got.circuit, got.user, got.redirect) == ("c1", "u1", "/lab")
    with pytest.raises(BadTicket, match="expired"):
        verify_ticket(SECRET, t, now=1000.0 + 61)
    with pytest.raises(BadTicket, match="not genuine"):
        verify_ticket("another-secret-value", t, now=1010.0)
    payload, sig = t.split(".")
    with pytest.raises(BadTicket, match="not genuine"):
        verify_ticket(SECRET, payload[:-1] + "A." + sig, now=1010.0)
    # An app token signed with the same secret is no ticket (separate signing domains).
    grant = AppGrant("u", "ak", "s", "k", "jupyter", "http", "127.0.0.1", 30000, 8888)
    with pytest.raises(BadTicket):
        verify_ticket(SECRET, issue(grant, SECRET), now=0)
    for junk in ("", "x", "a.b"):
        with pytest.raises(BadTicket):
            verify_ticket(SECRET, junk)


def test_permits_are_bound_to_circuit_and_user() -> None:
    v = permit_value(SECRET, "c1", "u1")
    assert v == permit_value(SECRET, "c1", "u1")
    assert (
        len({v, permit_value(SECRET, "c2", "u1"), permit_value(SECRET, "c1", "u2"), permit_value("x" * 16, "c1", "u1")})
        == 4
    )


def test_nonce_book() -> None:
    book = NonceBook()
    assert book.spend("n1", expires=100.0, now=50.0) and not book.spend("n1", expires=100.0, now=60.0)
    assert book.spend("n2", expires=100.0, now=60.0)
    book.spend("n3", expires=500.0, now=200.0)  # a sweep: n1 and n2 expired long ago
    assert len(book) == 1


def test_header_helpers() -> None:
    assert strip_permits("a=1; bai_permit_x=2;b=3 ; bai_permit_=4") == "a=1; b=3"
    assert strip_permits("bai_permit_x=2") == ""
    assert [
        safe_redirect(p) for p in ("/lab?x=1", "//evil", "http://evil/", "lab", "/\\evil", "/a\r\nSet-Cookie:")
    ] == ["/lab?x=1", "/", "/", "/", "/", "/"]
    assert [_sendable(c) for c in (None, 1000, 1005, 1006, 4001, 2000, 1011)] == [
        1001,
        1000,
        1000,
        1001,
        4001,
        1001,
        1011,
    ]
    assert _netloc("http://127.0.0.1:10205") == _host_netloc("127.0.0.1:10205")
    assert _netloc("http://Apps.Example") == _host_netloc("apps.example") == "apps.example:80"
    assert _netloc("http://[::1]:5") == _host_netloc("[::1]:5")
    assert _netloc("null") == "" and _netloc("http://127.0.0.1:10206") != _host_netloc("127.0.0.1:10205")


def _grant(session: str, cport: int = 8888) -> AppGrant:
    return AppGrant("u", "ak", session, "k", "jupyter", "http", "127.0.0.1", 30000, cport)


async def test_circuits_take_the_lowest_free_port() -> None:
    lo, hi = free_port_range(3)
    table = CircuitTable(conf(**{"port-range": [lo, hi], "api-port": 1}).appproxy, NonceBook())
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", lo))  # another process holds the first port
    squatter.listen()
    try:
        a, reused = await table.open(_grant("s1"))
        assert a.port == lo + 1 and not reused and a.origin == f"http://127.0.0.1:{lo + 1}"
        assert (await table.open(_grant("s1")))[0] is a
        b, _ = await table.open(_grant("s1", 9999))
        assert b.port == hi
        with pytest.raises(NoFreePort):
            await table.open(_grant("s2"))
        assert table.sessions() == {"s1"} and len(table) == 2
        await table.close(a, "test")
        c, _ = await table.open(_grant("s2"))
        assert c.port == lo + 1 and c.id != a.id
        assert await table.close_session("s1", "test") == 1 and len(table) == 1
        assert await table.close_idle(3600.0) == 0 and await table.close_idle(0.0) == 1
    finally:
        squatter.close()
        await table.close_all()


def test_allinone_writes_the_shared_secret_once(tmp_path: Path) -> None:
    import tomllib

    from ai.backend.allinone.launcher import SERVICES, _write_configs
    from ai.backend.common.config import load_config

    names = [n for n, _ in SERVICES]
    assert names.index("appproxy") == names.index("manager") + 1
    _write_configs(tmp_path)
    proxy = load_config(AppProxyConfig, "appproxy", tmp_path / "appproxy.toml", environ={}).appproxy
    assert (proxy.api_port, proxy.port_range, proxy.manager_url) == (10200, (10205, 10300), "http://127.0.0.1:8091")
    manager = tomllib.loads((tmp_path / "manager.toml").read_text())
    assert manager["appproxy"] == {"url": "http://127.0.0.1:10200", "secret": proxy.secret}
    assert (tmp_path / "appproxy-secret").read_text().strip() == proxy.secret
    assert (tmp_path / "appproxy-secret").stat().st_mode & 0o077 == 0
    before = (tmp_path / "manager.toml").read_text(), (tmp_path / "appproxy.toml").read_text()
    _write_configs(tmp_path)  # `up` again: nothing changes, no second [appproxy]
    assert ((tmp_path / "manager.toml").read_text(), (tmp_path / "appproxy.toml").read_text()) == before
