"""The manager's side of interactive apps (ADR 0012) over real HTTP and WebSockets: the apps list, the
``tcpproxy``/``httpproxy`` streams, ``start-service`` tokens, ``shutdown-service``, the app proxy's
``alive`` call and what happens to a session's app streams when it ends.

A real manager runs with one dummy agent (sessions are scheduled and started as usual). Its kernels offer
the intrinsic apps (``sshd``: a TCP echo server, ``ttyd``: a small HTTP server, started on their host ports
by the agent's ``services/start``): :func:`test_the_dummy_agents_apps_end_to_end` uses them as they are.

The other tests need apps the dummy agent cannot play (options an app allows, an app failing to start, one
refusing connections, an app that outlives its kernel so that only the manager can close its streams), so
each of their sessions' main kernel row is pointed (written directly in the manager's SQLite database) at
apps this test serves on loopback: a TCP echo server and an HTTP server, with their "host ports" being the
servers' ports. The kernel's ``agent_addr`` is pointed at a small HTTP server of this test playing the
agent's ``services/start|shutdown`` API (and the kernel destroy) and, on the same port, the app proxy's
``DELETE /v2/sessions/{id}``; every call it gets is recorded.
"""

from __future__ import annotations

import asyncio
import json
import socket
import socketserver
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from ai.backend.agent.fleet import loopback_host
from ai.backend.common.app_tokens import APPPROXY_SECRET_HEADER, verify
from ai.backend.common.auth import CLUSTER_SECRET_HEADER, sign_request_headers
from ai.backend.testutils.cluster import Cluster, launch_manager
from ai.backend.testutils.fleet import start_fleet
from ai.backend.testutils.processes import stop_process, wait_until

from .conftest import ADMIN, USER

SECRET = "the-app-proxy-secret-of-this-test"
# The intrinsic apps of every main kernel, as clients see them.
INTRINSIC = [
    # The python image's own apps (its label, as the dummy agent reports it), then the intrinsic ones.
    {"name": "jupyter", "protocol": "http", "ports": [8090]},
    {"name": "jupyterlab", "protocol": "http", "ports": [8091]},
    {"name": "sshd", "protocol": "tcp", "ports": [2200]},
    {"name": "ttyd", "protocol": "http", "ports": [7681]},
]
PROXY_URL = "http://127.0.0.1:10299"  # what browsers would open; nothing needs to listen there


# ---- the loopback apps ----------------------------------------------------------------------------------


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server: EchoServer = self.server  # type: ignore[assignment]
        with server.lock:
            server.open += 1
        try:
            while data := self.request.recv(65536):
                self.request.sendall(data)
        except OSError:
            pass
        finally:
            with server.lock:
                server.open -= 1


class EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Echo)
        self.lock = threading.Lock()
        self.open = 0  # connections being served


class _Web(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        body = f"hello from the app at {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


# ---- the agent's services API and the app proxy's DELETE ----------------------------------------------


@dataclass
class Fake:
    """What the fake agent/proxy answers per app, and every call it got: (method, path, headers, body)."""

    answers: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    calls: list[tuple[str, str, dict[str, str], Any]] = field(default_factory=list)

    def called(self, method: str, suffix: str) -> list[tuple[str, str, dict[str, str], Any]]:
        return [c for c in self.calls if c[0] == method and c[1].endswith(suffix)]


def _fake_handler(fake: Fake, cluster_secret: list[str]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: int, doc: Any) -> None:
            body = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json" if status < 400 else "application/problem+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _record(self) -> Any:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = json.loads(raw) if raw else None
            fake.calls.append((self.command, self.path, dict(self.headers), body))
            return body

        def do_POST(self) -> None:  # noqa: N802
            body = self._record()
            if self.headers.get(CLUSTER_SECRET_HEADER) != cluster_secret[0]:
                return self._answer(401, {"title": "bad cluster secret"})
            if self.path.endswith("/services/start"):
                status, doc = fake.answers.get(body["name"], (404, {"title": "Not found", "detail": "no such app"}))
                return self._answer(status, doc)
            if self.path.endswith("/services/shutdown"):
                return self._answer(200, {"status": "stopped"})
            self._answer(404, {"title": "Not found"})

        def do_DELETE(self) -> None:  # noqa: N802
            self._record()
            if self.path.startswith("/v2/sessions/"):  # the app proxy's
                ok = self.headers.get(APPPROXY_SECRET_HEADER) == SECRET
                return self._answer(200 if ok else 401, {"closed": 1} if ok else {"title": "bad secret"})
            self._answer(200, {"stats": {}})  # a kernel destroy

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


def _serve(server: socketserver.BaseServer) -> None:
    threading.Thread(target=server.serve_forever, daemon=True).start()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Env:
    m: Cluster
    fake: Fake
    fake_url: str
    echo: EchoServer
    echo_port: int
    web_port: int
    closed_port: int

    def stored_ports(self) -> list[dict[str, Any]]:
        return [
            {
                "name": "echo",
                "protocol": "tcp",
                "container_ports": [7000],
                "host_ports": [self.echo_port],
                "allowed_envs": ["PASSWORD"],
                "allowed_arguments": ["--auth"],
            },
            {
                "name": "web",
                "protocol": "http",
                "container_ports": [8080, 8081],
                "host_ports": [self.web_port, 0],
                "url_template": "{protocol}://{host}:{port}/",
            },
            {"name": "broken", "protocol": "tcp", "container_ports": [7100], "host_ports": [1]},
            {"name": "closed", "protocol": "tcp", "container_ports": [7200], "host_ports": [self.closed_port]},
        ]

    def db(self) -> sqlite3.Connection:
        path = self.m.db_url.split(":///", 1)[1]
        return sqlite3.connect(path, timeout=30)

    def session(self, name: str, who: dict[str, Any] = USER) -> dict[str, Any]:
        """A RUNNING session of ``who`` whose main kernel offers this test's apps."""
        doc = self.m.create_session(name, who=who, resources={"cpu": 1, "mem": "256m"})
        with self.db() as db:
            db.execute(
                "UPDATE kernels SET service_ports = ?, agent_addr = ?, kernel_host = '127.0.0.1' "
                "WHERE session_id = ? AND cluster_role = 'main'",
                (json.dumps(self.stored_ports()), self.fake_url, doc["sessionId"]),
            )
        return doc

    def kernel_row(self, session_id: str) -> tuple[Any, ...]:
        with self.db() as db:
            row = db.execute(
                "SELECT kernel_host, service_ports FROM kernels WHERE session_id = ? AND cluster_role = 'main'",
                (session_id,),
            ).fetchone()
        assert row is not None
        return tuple(row)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    state: Path = tmp_path_factory.mktemp("apps")
    fake = Fake()
    secret_box = [""]
    agent = ThreadingHTTPServer(("127.0.0.1", 0), _fake_handler(fake, secret_box))
    echo = EchoServer()
    web = ThreadingHTTPServer(("127.0.0.1", 0), _Web)
    for server in (agent, echo, web):
        _serve(server)
    fake_url = f"http://127.0.0.1:{agent.server_address[1]}"
    m = launch_manager(
        state, manager_toml=f'[appproxy]\nurl = "{PROXY_URL}"\napi-url = "{fake_url}"\nsecret = "{SECRET}"\n'
    )
    secret_box[0] = m.secret
    proc = None
    try:
        proc = start_fleet(m, state, 1, heartbeat=1.0, tables='[resource]\ncpu = 64\nmem = "64g"\n')
        wait_until(
            "the dummy agent and its python image",
            lambda: m.request("GET", "/internal/status", headers={CLUSTER_SECRET_HEADER: m.secret}).json(),
            lambda st: st["agents_alive"] == 1 and "python" in st["image_aliases"],
            60,
        )
        e = Env(m, fake, fake_url, echo, echo.server_address[1], web.server_address[1], _free_port())
        fake.answers.update(
            {
                "echo": (200, {"status": "started", "host": "127.0.0.1", "ports": [e.echo_port]}),
                "web": (200, {"status": "running"}),  # no host or ports: the stored ones are used
                "broken": (
                    502,
                    {
                        "type": "https://api.backend.ai/probs/app-start-failed",
                        "title": "Failed to launch the app service",
                        "detail": "the executable file is not found: /usr/bin/broken",
                    },
                ),
                "closed": (200, {"status": "started", "host": "127.0.0.1", "ports": [e.closed_port]}),
            }
        )
        yield e
    finally:
        if proc is not None:
            stop_process(proc, 10)
        m.shutdown()
        for server in (agent, echo, web):
            server.shutdown()
            server.server_close()


# ---- clients ------------------------------------------------------------------------------------------


def ws_url_and_headers(m: Cluster, path: str, who: dict[str, Any]) -> tuple[str, dict[str, str]]:
    host = m.endpoint.split("//", 1)[1]
    h = sign_request_headers(
        method="GET",
        path_with_query=path,
        host=host,
        content_type="application/octet-stream",
        version="v6.20220615",
        access_key=who["access_key"],
        secret_key=who["secret_key"],
    )
    h.pop("Content-Type")  # like the 22.03 client
    return f"ws://{host}{path}", h


def app_path(session: str, kind: str = "tcpproxy", prefix: str = "session", **params: Any) -> str:
    query = urlencode({k: json.dumps(v) if isinstance(v, dict) else v for k, v in params.items()})
    return f"/stream/{prefix}/{session}/{kind}" + (f"?{query}" if query else "")


def open_app(m: Cluster, path: str, who: dict[str, Any] = USER) -> Any:
    url, headers = ws_url_and_headers(m, path, who)
    return connect(url, additional_headers=headers, proxy=None, open_timeout=30, max_size=None)


async def refused(m: Cluster, path: str, who: dict[str, Any] = USER) -> tuple[int, dict[str, Any]]:
    """The status and problem body of a stream handshake the manager refuses before the upgrade."""
    with pytest.raises(InvalidStatus) as e:
        async with open_app(m, path, who):
            pass
    resp = e.value.response
    assert resp.headers.get("Content-Type", "").startswith("application/problem+json")
    return resp.status_code, json.loads(resp.body or b"{}")


async def recv_exactly(ws: Any, n: int) -> bytes:
    got = b""
    while len(got) < n:
        msg = await asyncio.wait_for(ws.recv(), 10)
        assert isinstance(msg, bytes), "app streams carry BINARY frames only"
        got += msg
    return got


def name() -> str:
    return f"apps-{uuid.uuid4().hex[:8]}"


# ---- tests --------------------------------------------------------------------------------------------


def test_apps_are_listed_in_the_22_03_shape(env: Env) -> None:
    m, sname = env.m, name()
    doc = env.session(sname)
    assert doc["servicePorts"] == INTRINSIC  # what the dummy agent published at the creation
    expected = [
        {
            "name": "echo",
            "protocol": "tcp",
            "ports": [7000],
            "allowed_arguments": ["--auth"],
            "allowed_envs": ["PASSWORD"],
        },
        {"name": "web", "protocol": "http", "ports": [8080, 8081], "url_template": "{protocol}://{host}:{port}/"},
        {"name": "broken", "protocol": "tcp", "ports": [7100]},
        {"name": "closed", "protocol": "tcp", "ports": [7200]},
    ]
    for prefix in ("session", "kernel"):
        r = m.request("GET", f"/stream/{prefix}/{sname}/apps")
        assert r.status_code == 200, r.text
        assert r.json() == expected
    # The creation answer of the existing session lists the same; GraphQL gives the stored list as it is.
    again = m.request("POST", "/session", {"image": "python", "name": sname})
    assert again.status_code == 200 and again.json()["servicePorts"] == expected, again.text
    gql = m.gql("query($id: UUID!) { compute_session(id: $id) { service_ports } }", {"id": doc["sessionId"]}, who=USER)
    assert json.loads(gql["compute_session"]["service_ports"]) == env.stored_ports()
    # Signed like any call: another user's session is not found, unsigned calls are refused.
    assert m.request("GET", f"/stream/session/{sname}/apps", who=ADMIN).status_code == 404
    assert httpx.get(f"{m.endpoint}/stream/session/{sname}/apps").status_code == 401
    r = m.request("GET", f"/stream/session/{sname}/apps?owner_access_key={USER['access_key']}", who=ADMIN)
    assert r.status_code == 200 and r.json() == expected
    r = m.request("GET", f"/stream/session/{doc['sessionId']}/apps", who=ADMIN)
    assert r.status_code == 200 and r.json() == expected
    # ... but a user may not name another user's session by its id.
    other = env.session(name(), who=ADMIN)
    assert m.request("GET", f"/stream/session/{other['sessionId']}/apps").status_code == 404
    # The session's owner got an SSH keypair at its first session start.
    with env.db() as db:
        pub, priv = db.execute(
            "SELECT ssh_public_key, ssh_private_key FROM keypairs WHERE access_key = ?", (USER["access_key"],)
        ).fetchone()
    assert pub.startswith("ssh-ed25519 ") and "OPENSSH PRIVATE KEY" in priv


def test_tcpproxy_echoes_binary_frames(env: Env) -> None:
    m, sname = env.m, name()
    sid = env.session(sname)["sessionId"]
    env.fake.calls.clear()

    async def run() -> None:
        path = app_path(sname, app="echo", envs={"PASSWORD": "s3cret"}, arguments={"--auth": "none"})
        async with open_app(m, path) as ws:
            payload = bytes(range(256)) * 4
            await ws.send(payload)
            assert await recv_exactly(ws, len(payload)) == payload
            big = uuid.uuid4().bytes * 40_000  # 640 KB: several 256 KiB reads on the way back
            await ws.send(big)
            assert await recv_exactly(ws, len(big)) == big
            await asyncio.wait_for(await ws.ping(), 10)  # pings are answered
        # The kernel spelling (v4) and an admin acting for the owner reach the same app.
        path = app_path(sname, prefix="kernel", service="echo") + f"&owner_access_key={USER['access_key']}"
        async with open_app(m, path, who=ADMIN) as ws:
            await ws.send(b"admin")
            assert await recv_exactly(ws, 5) == b"admin"
        # An admin may also name a session of their domain by its id alone.
        async with open_app(m, app_path(sid, app="echo"), who=ADMIN) as ws:
            await ws.send(b"by id")
            assert await recv_exactly(ws, 5) == b"by id"

    asyncio.run(run())
    starts = env.fake.called("POST", "/services/start")
    assert [c[3] for c in starts] == [
        {"name": "echo", "options": {"envs": {"PASSWORD": "s3cret"}, "arguments": {"--auth": "none"}}},
        {"name": "echo", "options": {"envs": {}, "arguments": {}}},
        {"name": "echo", "options": {"envs": {}, "arguments": {}}},
    ]
    wait_until("the echo connections to close", lambda: env.echo.open, lambda n: n == 0, 10)


def test_httpproxy_carries_an_http_exchange(env: Env) -> None:
    m, sname = env.m, name()
    env.session(sname)

    async def run() -> tuple[bytes, int]:
        async with open_app(m, app_path(sname, "httpproxy", app="web", port=8080)) as ws:
            await ws.send(b"GET /tree HTTP/1.0\r\nHost: app\r\n\r\n")
            got = b""
            try:
                while True:
                    msg = await asyncio.wait_for(ws.recv(), 10)
                    assert isinstance(msg, bytes)
                    got += msg
            except ConnectionClosed as e:
                assert e.rcvd is not None
                return got, e.rcvd.code

    response, code = asyncio.run(run())
    assert response.startswith(b"HTTP/1.0 200") and response.endswith(b"hello from the app at /tree"), response
    assert code == 1001  # the app closed the connection (EOF)


def test_refusals_before_the_upgrade(env: Env) -> None:
    m, sname = env.m, name()
    env.session(sname)
    env.fake.calls.clear()

    async def run() -> None:
        status, doc = await refused(m, app_path(sname, app="jupyter"))
        assert status == 404 and doc["type"].endswith("/app-not-found") and "jupyter" in doc["detail"]
        status, doc = await refused(m, app_path(sname, app="web", port=9999))
        assert (status, doc["detail"]) == (400, "Service web does not open the port number 9999.")
        status, doc = await refused(m, app_path(sname, app="web", port="http"))
        assert status == 400 and "'port'" in doc["detail"]
        status, doc = await refused(m, app_path(sname, app="echo", envs="{PASSWORD: 1"))
        assert status == 400 and "'envs' is not valid JSON" in doc["detail"]
        status, doc = await refused(m, app_path(sname, app="echo", envs={"LD_PRELOAD": "/x.so"}))
        assert status == 400 and "LD_PRELOAD" in doc["detail"]
        status, doc = await refused(m, app_path(sname, app="echo", arguments={"--auth": 1}))
        assert status == 400 and "--auth" in doc["detail"]
        status, doc = await refused(m, app_path(sname))
        assert status == 400 and "'app'" in doc["detail"]
        # Another user's session does not exist for them; acting for another key needs an admin.
        status, doc = await refused(m, app_path(sname, app="echo"), who=ADMIN)
        assert status == 404 and doc["type"].endswith("/session-not-found")
        status, _ = await refused(m, app_path(sname, app="echo") + f"&owner_access_key={ADMIN['access_key']}")
        assert status == 403
        # The agent's failure to start the app: a 502 with its reason.
        status, doc = await refused(m, app_path(sname, app="broken"))
        assert status == 502 and doc["type"].endswith("/app-start-failed")
        assert "the executable file is not found: /usr/bin/broken" in doc["detail"]

    asyncio.run(run())
    # Nothing was started for a refused request: only the broken app was asked for.
    assert [c[3]["name"] for c in env.fake.called("POST", "/services/start")] == ["broken"]


def test_an_app_that_refuses_the_connection_closes_with_1013(env: Env) -> None:
    m, sname = env.m, name()
    env.session(sname)

    async def run() -> int:
        async with open_app(m, app_path(sname, app="closed")) as ws:
            with pytest.raises(ConnectionClosed) as e:
                await asyncio.wait_for(ws.recv(), 10)
            assert e.value.rcvd is not None
            return e.value.rcvd.code

    assert asyncio.run(run()) == 1013


def test_start_service_issues_a_token_for_the_app_proxy(env: Env) -> None:
    m, sname = env.m, name()
    doc = env.session(sname)
    env.fake.calls.clear()
    body = {"app": "echo", "envs": '{"PASSWORD": "pw"}', "arguments": {"--auth": None}, "login_session_token": "x"}
    r = m.request("POST", f"/session/{sname}/start-service", {**body, "redirect": "/lab?reset"})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["wsproxy_addr"] == PROXY_URL
    assert answer["url"] == f"{PROXY_URL}/v2/proxy/auth?token={answer['token']}"
    grant = verify(answer["token"], SECRET)
    kernel_id = m.session_info(sname)["kernelId"]
    assert (grant.session_id, grant.kernel_id, grant.app, grant.protocol) == (
        doc["sessionId"],
        kernel_id,
        "echo",
        "tcp",
    )
    assert (grant.host, grant.port, grant.container_port) == ("127.0.0.1", env.echo_port, 7000)
    assert (grant.access_key, grant.is_admin, grant.redirect) == (USER["access_key"], False, "/lab?reset")
    assert uuid.UUID(grant.user) and grant.expires > time.time()
    assert env.fake.called("POST", "/services/start")[0][3] == {
        "name": "echo",
        "options": {"envs": {"PASSWORD": "pw"}, "arguments": {"--auth": None}},
    }
    # The second container port of "web" (its stored host port: none recorded) cannot be opened.
    r = m.request("POST", f"/session/{sname}/start-service", {"service": "web", "port": 8081})
    assert r.status_code == 502 and "8081" in r.json()["detail"], r.text
    r = m.request("POST", f"/session/{sname}/start-service", {"app": "web"})
    assert r.status_code == 200 and verify(r.json()["token"], SECRET).port == env.web_port
    for bad, status in (
        ({"app": "nope"}, 404),
        ({"app": "echo", "redirect": "//evil.example/"}, 400),
        ({"app": "echo", "envs": "not json"}, 400),
        ({"app": "web", "port": 1}, 400),
        ({}, 400),
    ):
        r = m.request("POST", f"/session/{sname}/start-service", bad)
        assert r.status_code == status, (bad, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    assert m.request("POST", f"/session/{sname}/start-service", {"app": "echo"}, who=ADMIN).status_code == 404
    # shutdown-service asks the agent to stop the app.
    r = m.request("POST", f"/session/{sname}/shutdown-service", {"service_name": "echo"})
    assert r.status_code == 204, r.text
    assert env.fake.called("POST", "/services/shutdown")[-1][3] == {"name": "echo"}
    assert m.request("POST", f"/session/{sname}/shutdown-service", {"service_name": "nope"}).status_code == 404


def test_start_service_without_an_app_proxy_is_503(tmp_path: Path) -> None:
    m = launch_manager(tmp_path)
    try:
        r = m.request("POST", "/session/any/start-service", {"app": "jupyter"})
        assert r.status_code == 503 and r.json()["title"] == "No app proxy is configured", r.text
        # The app proxy's calls are refused: there is no secret to present.
        r = m.request("POST", "/internal/appproxy/alive", {"session_ids": []}, headers={APPPROXY_SECRET_HEADER: "x"})
        assert r.status_code == 401
    finally:
        m.shutdown()


def test_alive_needs_the_secret_and_lists_running_sessions(env: Env) -> None:
    m = env.m
    running, ended = env.session(name()), env.session(name())
    assert m.request("DELETE", f"/session/{ended['sessionName']}").status_code == 200
    ids = [running["sessionId"], ended["sessionId"], str(uuid.uuid4()), "not-a-uuid"]

    def alive(headers: dict[str, str], body: Any = None) -> httpx.Response:
        return httpx.post(
            f"{m.endpoint}/internal/appproxy/alive",
            content=json.dumps(body if body is not None else {"session_ids": ids}),
            headers={"Content-Type": "application/json", **headers},
        )

    assert alive({}).status_code == 401
    assert alive({APPPROXY_SECRET_HEADER: "wrong-secret-wrong-secret"}).status_code == 401
    assert alive({CLUSTER_SECRET_HEADER: m.secret}).status_code == 401  # the agents' secret is not the proxy's
    r = alive({APPPROXY_SECRET_HEADER: SECRET})
    assert r.status_code == 200 and r.json() == {"alive": [running["sessionId"]]}, r.text
    assert alive({APPPROXY_SECRET_HEADER: SECRET}, {"session_ids": "x"}).status_code == 400


def test_app_streams_close_when_the_session_ends(env: Env) -> None:
    m, sname = env.m, name()
    doc = env.session(sname)
    env.fake.calls.clear()

    async def run() -> list[int]:
        async with open_app(m, app_path(sname, app="echo")) as a, open_app(m, app_path(sname, app="echo")) as b:
            for ws in (a, b):
                await ws.send(b"ping")
                assert await recv_exactly(ws, 4) == b"ping"
            assert env.echo.open >= 2
            r = await asyncio.to_thread(m.request, "DELETE", f"/session/{sname}")
            assert r.status_code == 200, r.text
            codes = []
            for ws in (a, b):
                with pytest.raises(ConnectionClosed) as e:
                    while True:
                        await asyncio.wait_for(ws.recv(), 10)
                assert e.value.rcvd is not None
                codes.append(e.value.rcvd.code)
            return codes

    assert asyncio.run(run()) == [1001, 1001]
    wait_until("the app connections to close", lambda: env.echo.open, lambda n: n == 0, 10)
    # The app proxy is told to close the session's circuits, with the shared secret.
    deletes = wait_until(
        "the app proxy to hear of the end",
        lambda: env.fake.called("DELETE", f"/v2/sessions/{doc['sessionId']}"),
        lambda calls: len(calls) >= 1,
        10,
    )
    assert deletes[0][2].get(APPPROXY_SECRET_HEADER) == SECRET
    # An ended session's apps cannot be opened any more.

    async def after() -> tuple[int, dict[str, Any]]:
        return await refused(m, app_path(sname, app="echo"))

    status, problem = asyncio.run(after())
    assert status == 409 and problem["type"].endswith("/session-not-running")
    assert m.request("POST", f"/session/{sname}/start-service", {"app": "echo"}).status_code == 409


def test_the_dummy_agents_apps_end_to_end(env: Env) -> None:
    """No rows written: the apps the dummy agent published at the kernel's creation, started by the agent."""
    m, sname = env.m, name()
    doc = m.create_session(sname, resources={"cpu": 1, "mem": "256m"})
    assert doc["servicePorts"] == INTRINSIC
    assert m.request("GET", f"/stream/session/{sname}/apps").json() == INTRINSIC
    host, stored = env.kernel_row(doc["sessionId"])
    assert host == loopback_host(1)  # where the fleet's first agent publishes its kernels' apps
    ports = {a["name"]: a["host_ports"][0] for a in json.loads(stored)}

    async def streams() -> bytes:
        async with open_app(m, app_path(sname, app="sshd")) as ws:
            await ws.send(b"SSH-2.0-test\r\n")
            assert await recv_exactly(ws, 14) == b"SSH-2.0-test\r\n"
        async with open_app(m, app_path(sname, "httpproxy", app="ttyd")) as ws:
            await ws.send(b"GET /x HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n")
            got = b""
            with pytest.raises(ConnectionClosed):
                while True:
                    got += await asyncio.wait_for(ws.recv(), 10)
            return got

    response = asyncio.run(streams())
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), response
    assert json.loads(body) == {
        "app": "ttyd",
        "kernel_id": m.session_info(sname)["kernelId"],
        "container_port": 7681,
        "path": "/x",
    }
    # A token for the browser names where the agent published the app; the app is up there.
    r = m.request("POST", f"/session/{sname}/start-service", {"app": "ttyd"})
    assert r.status_code == 200, r.text
    grant = verify(r.json()["token"], SECRET)
    assert (grant.host, grant.port, grant.container_port, grant.protocol) == (host, ports["ttyd"], 7681, "http")
    assert httpx.get(f"http://{grant.host}:{grant.port}/y").json()["path"] == "/y"
    # The intrinsic apps take no options; shutting an app down stops it.
    r = m.request("POST", f"/session/{sname}/start-service", {"app": "ttyd", "envs": {"X": "1"}})
    assert r.status_code == 400, r.text
    assert m.request("POST", f"/session/{sname}/shutdown-service", {"service_name": "ttyd"}).status_code == 204
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://{grant.host}:{grant.port}/y")
    assert m.request("DELETE", f"/session/{sname}").status_code == 200
