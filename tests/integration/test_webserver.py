"""The webserver (``ai.backend.web``) in front of a real cluster: logins, throttling, cookies, CSRF, and the
``/func/`` proxy for REST, GraphQL, SSE and WebSocket; our own SDK and CLI in session mode."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from ai.backend.client.config import APIConfig
from ai.backend.client.exceptions import BackendAPIError
from ai.backend.client.session import AsyncSession
from ai.backend.testutils.databases import check_redis, fresh_redis
from ai.backend.testutils.web import WebServer, launch_webserver

from .conftest import ADMIN, USER, Cluster

pytestmark = pytest.mark.docker

V = {"X-BackendAI-Version": "v6.20220615"}  # what every API client sends; the CSRF proof of our clients
SECRETS = (USER["access_key"], USER["secret_key"], ADMIN["access_key"], ADMIN["secret_key"])


def _no_keys(resp: httpx.Response) -> None:
    """Neither half of any keypair in the answer's body, headers or cookies."""
    blob = resp.content.decode("utf-8", "replace") + json.dumps(dict(resp.headers))
    for s in SECRETS:
        assert s not in blob, f"keypair material in {resp.request.method} {resp.request.url}: {blob[:300]}"


@pytest.fixture(scope="module")
def web(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    w = launch_webserver(tmp_path_factory.mktemp("web"), cluster.endpoint)
    try:
        yield w
    finally:
        w.shutdown()


def _login(web: WebServer, who: dict[str, Any] = USER, username: str | None = None) -> httpx.Client:
    client = httpx.Client(base_url=web.url, timeout=120)
    r = client.post(
        "/server/login", json={"username": username or who["email"], "password": who["password"]}, headers=V
    )
    assert r.status_code == 200 and r.json()["authenticated"] is True, r.text
    _no_keys(r)
    return client


def test_version_probe_is_anonymous(web: WebServer) -> None:
    r = httpx.get(web.url + "/func/")
    assert r.status_code == 200 and r.json()["version"].startswith("v6."), r.text


def test_login_check_logout_and_cookie_flags(web: WebServer) -> None:
    client = httpx.Client(base_url=web.url)
    assert client.post("/server/login-check", headers=V).json() == {"authenticated": False, "data": None}
    r = client.post("/server/login", json={"username": USER["email"], "password": USER["password"]}, headers=V)
    assert r.status_code == 200, r.text
    _no_keys(r)
    assert r.json()["data"]["role"] == "user"
    cookie = r.headers["set-cookie"]
    flags = [p.strip().lower() for p in cookie.split(";")]
    assert "httponly" in flags and "samesite=lax" in flags and "path=/" in flags, cookie
    assert any(f.startswith("max-age=") for f in flags), cookie
    check = client.post("/server/login-check", headers=V)
    assert check.json()["authenticated"] is True and check.json()["data"]["username"] == USER["email"]
    _no_keys(check)
    role = client.get("/func/auth/role")
    assert role.status_code == 200 and role.json()["global_role"] == "user", role.text
    _no_keys(role)
    again = client.post("/server/login", json={"username": USER["email"], "password": USER["password"]}, headers=V)
    assert again.status_code == 400 and "already logged in" in again.json()["detail"]
    sid = client.cookies.get("AIOHTTP_SESSION")
    out = client.post("/server/logout", headers=V)
    assert out.status_code == 201 and out.content == b""
    assert client.post("/server/login-check", headers=V).json()["authenticated"] is False
    # The old cookie is dead on the server, not only deleted in this client.
    stale = httpx.get(web.url + "/func/auth/role", cookies={"AIOHTTP_SESSION": sid or ""})
    assert stale.status_code == 401 and "expired or is not valid" in stale.json()["detail"]


def test_login_by_user_name(web: WebServer) -> None:
    client = _login(web, USER, username="user")
    assert client.get("/func/auth/role").status_code == 200


def test_bad_logins(web: WebServer) -> None:
    r = httpx.post(web.url + "/server/login", json={"username": USER["email"], "password": "nope-nope"}, headers=V)
    assert r.status_code == 401 and r.json()["authenticated"] is False, r.text
    assert "Wrong" in r.json()["detail"] and "set-cookie" not in r.headers
    for body in ({"username": USER["email"]}, {"password": "x"}, [1, 2], {"username": "", "password": "x"}):
        r = httpx.post(web.url + "/server/login", json=body, headers=V)
        assert r.status_code == 400 and r.json()["title"] == "Invalid API parameters", r.text
    r = httpx.post(web.url + "/server/login", content=b"{not json", headers=V)
    assert r.status_code == 400


def test_no_login_and_forged_cookie(web: WebServer) -> None:
    r = httpx.get(web.url + "/func/auth/role")
    assert r.status_code == 401 and "not logged in" in r.json()["detail"]
    r = httpx.get(web.url + "/func/auth/role", cookies={"AIOHTTP_SESSION": "forged-" + uuid.uuid4().hex})
    assert r.status_code == 401 and "log in again" in r.json()["detail"]


def test_csrf_refusals_change_nothing(web: WebServer) -> None:
    client = _login(web)
    name = f"csrf-{uuid.uuid4().hex[:6]}"
    attempts = [
        {},  # a plain cross-site form post carries none of the custom headers
        {**V, "Origin": "http://evil.example"},
        {"X-Requested-With": "XMLHttpRequest", "Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
    ]
    for headers in attempts:
        r = client.post("/func/folders", json={"name": name}, headers=headers)
        assert r.status_code == 403 and "cross-site" in r.json()["detail"].lower(), (headers, r.text)
    listing = client.get("/func/folders")
    assert listing.status_code == 200 and name not in {f["name"] for f in listing.json()}
    # The login and logout are state-changing too.
    assert (
        httpx.post(
            web.url + "/server/login", json={"username": USER["email"], "password": USER["password"]}
        ).status_code
        == 403
    )
    assert client.post("/server/logout").status_code == 403
    assert client.get("/func/auth/role").status_code == 200  # still logged in
    # A same-origin browser call (Origin = this server) with the custom header passes.
    ok = client.post(
        "/func/folders", json={"name": name}, headers={"X-Requested-With": "XMLHttpRequest", "Origin": web.url}
    )
    assert ok.status_code in (200, 201), ok.text
    assert client.delete(f"/func/folders/{name}", headers=V).status_code in (200, 204)
    # A cross-site WebSocket handshake is refused before any upgrade.
    ws = client.get(
        "/func/stream/session/x/execute",
        headers={
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version": "13",
            "Origin": "http://evil.example",
        },
    )
    assert ws.status_code == 403, ws.text


def test_another_users_folder_by_url(web: WebServer, cluster: Cluster) -> None:
    name = f"admin-only-{uuid.uuid4().hex[:6]}"
    r = cluster.request("POST", "/folders", {"name": name}, who=ADMIN)
    assert r.status_code in (200, 201), r.text
    try:
        client = _login(web)
        for method in ("GET", "DELETE"):
            r = client.request(method, f"/func/folders/{name}", headers=V)
            assert r.status_code in (403, 404), (method, r.text)
        assert cluster.request("GET", f"/folders/{name}", who=ADMIN).status_code == 200  # untouched
    finally:
        cluster.request("DELETE", f"/folders/{name}", who=ADMIN)


def test_rest_graphql_sse_through_the_webserver(web: WebServer) -> None:
    client = _login(web)
    gql = client.post("/func/admin/gql", json={"query": "{ user { email role } }"}, headers=V)
    assert gql.status_code == 200 and gql.json()["data"]["user"]["email"] == USER["email"], gql.text
    name = f"web-{uuid.uuid4().hex[:6]}"
    events: list[str] = []
    with client.stream("GET", "/func/events/session", params={"name": "*"}, timeout=120) as sse:
        assert sse.status_code == 200 and sse.headers["content-type"].startswith("text/event-stream")
        created = client.post("/func/session", json={"image": "python", "name": name}, headers=V)
        assert created.status_code in (200, 201) and created.json()["status"] == "RUNNING", created.text
        _no_keys(created)
        run = client.post(
            f"/func/session/{name}", json={"mode": "query", "code": "print(6*7)", "runId": "r1"}, headers=V
        )
        assert run.status_code == 200, run.text
        assert ["stdout", "42\n"] in run.json()["result"]["console"], run.text
        for line in sse.iter_lines():
            if line.startswith("event:"):
                events.append(line.split(":", 1)[1].strip())
            if "session_started" in events:
                break
    assert "session_enqueued" in events and "session_started" in events, events
    gone = client.delete(f"/func/session/{name}", headers=V)
    assert gone.status_code == 200, gone.text


def test_limits_throttle_then_block(cluster: Cluster, tmp_path: Path) -> None:
    w = launch_webserver(
        tmp_path,
        cluster.endpoint,
        session={"login-allowed-fail-count": 3, "login-allowed-fail-count-per-ip": 6, "login-block-time": 60},
    )
    try:

        def attempt(username: str, password: str) -> httpx.Response:
            return httpx.post(w.url + "/server/login", json={"username": username, "password": password}, headers=V)

        for _ in range(3):
            assert attempt(ADMIN["email"], "wrong-password").status_code == 401
        blocked = attempt(ADMIN["email"], ADMIN["password"])  # even the right password, while blocked
        assert blocked.status_code == 429 and "Too many failed login attempts" in blocked.json()["detail"]
        assert "set-cookie" not in blocked.headers
        # Another account from the same address is not blocked yet ...
        assert attempt(USER["email"], USER["password"]).status_code == 200
        # ... until the address itself has failed too often (unknown accounts count for the address).
        for i in range(3):
            assert attempt(f"nobody{i}@example.org", "x").status_code == 401
        assert attempt(USER["email"], USER["password"]).status_code == 429
    finally:
        w.shutdown()


def test_expired_login(cluster: Cluster, tmp_path: Path) -> None:
    w = launch_webserver(tmp_path, cluster.endpoint, session={"max-age": 2})
    try:
        client = _login(w)
        assert client.get("/func/auth/role").status_code == 200
        time.sleep(2.5)
        r = httpx.get(w.url + "/func/auth/role", cookies={"AIOHTTP_SESSION": client.cookies["AIOHTTP_SESSION"]})
        assert r.status_code == 401 and "expired" in r.json()["detail"], r.text
    finally:
        w.shutdown()


def test_sessions_shared_in_redis(cluster: Cluster, tmp_path: Path) -> None:
    try:
        check_redis()
    except Exception as e:  # noqa: BLE001 - the message says how to start it
        pytest.fail(str(e), pytrace=False)
    with ExitStack() as stack:
        url = stack.enter_context(fresh_redis())
        a = launch_webserver(tmp_path / "a", cluster.endpoint, redis_url=url)
        stack.callback(a.shutdown)
        b = launch_webserver(tmp_path / "b", cluster.endpoint, redis_url=url)
        stack.callback(b.shutdown)
        client = _login(a)
        sid = client.cookies["AIOHTTP_SESSION"]
        assert httpx.get(b.url + "/func/auth/role", cookies={"AIOHTTP_SESSION": sid}).status_code == 200
        assert httpx.post(b.url + "/server/logout", cookies={"AIOHTTP_SESSION": sid}, headers=V).status_code == 201
        assert client.get("/func/auth/role").status_code == 401


async def test_sdk_session_mode_stream_execute(
    web: WebServer, cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Our SDK logs in (the cookie is saved), then streams an execution over the WebSocket proxy."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    config = APIConfig(endpoint=web.url, endpoint_type="session")
    async with AsyncSession(config=config) as api:
        with pytest.raises(BackendAPIError) as exc:
            await api.Auth.login(USER["email"], "wrong-password")
        assert exc.value.status == 401
        answer = await api.Auth.login(USER["email"], USER["password"])
        assert answer["authenticated"] is True
    saved = tmp_path / "backend.ai" / "session-cookies.json"
    assert saved.stat().st_mode & 0o077 == 0
    name = f"webws-{uuid.uuid4().hex[:6]}"
    async with AsyncSession(config=config) as api:  # a new client: the saved cookie logs it in
        sess = await api.ComputeSession.get_or_create("python", name=name)
        try:
            results: list[dict[str, Any]] = []
            async with sess.stream_execute("a = int(input())\nprint(a * 7)") as stream:
                async for msg in stream:
                    result = msg.json()
                    results.append(result)
                    if result["status"] == "waiting-input":
                        await stream.send_str("6")
            out = "".join(item[1] for r in results for item in r["console"] if item[0] == "stdout")
            assert out.strip().endswith("42"), results
        finally:
            await sess.destroy()
        await api.Auth.logout()
    assert not saved.exists()
    async with AsyncSession(config=config) as api:
        with pytest.raises(BackendAPIError) as exc:
            await api.Auth.get_role()
        assert exc.value.status == 401


def test_cli_session_mode(web: WebServer, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKEND_")}
    env.update(web.env(), XDG_CONFIG_HOME=str(tmp_path / "conf"), PYTHONWARNINGS="ignore")

    def cli(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ai.backend.client.cli", *args],
            input=input,
            text=True,
            capture_output=True,
            env=env,
            timeout=180,
            cwd=tmp_path,
        )

    bad = cli("login", "-u", USER["email"], "--password-stdin", input="wrong-password\n")
    assert bad.returncode == 1 and "Login failed" in bad.stderr, bad.stderr
    ok = cli("login", "-u", USER["email"], "--password-stdin", input=USER["password"] + "\n")
    assert ok.returncode == 0 and "Login succeeded" in ok.stderr, ok.stderr
    run = cli("run", "--rm", "python", "-c", "print(6*7)")
    assert run.returncode == 0 and run.stdout.strip() == "42", run.stdout + run.stderr
    (tmp_path / "data.txt").write_text("hello through the webserver\n")
    folder = f"webcli-{uuid.uuid4().hex[:6]}"
    assert cli("vfolder", "create", folder).returncode == 0
    up = cli("vfolder", "upload", folder, "data.txt")
    assert up.returncode == 0, up.stdout + up.stderr
    ls = cli("vfolder", "ls", folder)
    assert "data.txt" in ls.stdout, ls.stdout + ls.stderr
    assert cli("vfolder", "delete", folder).returncode == 0
    out = cli("logout")
    assert out.returncode == 0 and "Logout done" in out.stderr, out.stderr
    after = cli("ps")
    assert after.returncode == 1 and "not logged in" in after.stderr, after.stdout + after.stderr
    api_mode = dict(env, BACKEND_ENDPOINT_TYPE="api")
    refused = subprocess.run(
        [sys.executable, "-m", "ai.backend.client.cli", "login"],
        text=True,
        capture_output=True,
        env=api_mode,
        timeout=60,
    )
    assert refused.returncode == 2 and 'endpoint type must be "session"' in refused.stderr, refused.stderr
