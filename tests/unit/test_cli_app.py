"""The client side of session apps: ``backend.ai app|apps|ssh|scp`` and the SDK calls behind them.

The parsers are tested directly. Everything that talks to a server talks to :class:`FakeManager`, a
real aiohttp server written here that verifies the request signatures and answers the 22.03 wire
(``/stream/session/:id/apps``, ``start-service``, ``shutdown-service``, ``download``, and ``tcpproxy``
WebSockets whose "apps" echo, greet, refuse or stall). It stands in for the manager in these unit
tests only; the real manager routes are tested against the cluster. ``app``, ``ssh`` and ``scp`` run
as real ``backend.ai`` processes (they handle signals); ``ssh``/``scp`` find fake ``ssh``/``scp``
programs on ``PATH`` that check the key file and talk through the proxy.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import socket
import sys
import tarfile
import textwrap
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSMsgType, web
from click.testing import CliRunner, Result
from dateutil.parser import isoparse

from ai.backend.client.app_options import (
    app_option_params,
    format_app_url,
    parse_app_argument,
    parse_app_arguments,
    parse_app_env,
    parse_bind,
)
from ai.backend.client.app_proxy import LocalAppProxy, error_reply
from ai.backend.client.cli.main import main
from ai.backend.client.cli.ssh import rewrite_scp_path, split_port_option
from ai.backend.client.config import APIConfig, set_config
from ai.backend.client.exceptions import BackendAPIError, BackendClientError
from ai.backend.client.session import AsyncSession
from ai.backend.common.auth import BODY_HASH_HEADER, make_signature, parse_authorization

SRC = Path(__file__).resolve().parents[2] / "src"
AK = "AKIAIOSFODNN7EXAMPLE"
SK = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
KEY_TEXT = "-----BEGIN OPENSSH PRIVATE KEY-----\nfake key of the session\n-----END OPENSSH PRIVATE KEY-----\n"
APPS: list[dict[str, Any]] = [
    {"name": "echo", "protocol": "tcp", "ports": [7000]},
    {
        "name": "jupyter",
        "protocol": "http",
        "ports": [8090],
        "allowed_arguments": ["--NotebookApp.token", "--debug"],
        "allowed_envs": ["PASSWORD"],
    },
    {"name": "vnc", "protocol": "http", "ports": [5901], "url_template": "{protocol}://{host}:{port}/vnc.html"},
    {"name": "sshd", "protocol": "tcp", "ports": [2200]},
    {"name": "refused", "protocol": "tcp", "ports": [7001]},
    {"name": "broken", "protocol": "tcp", "ports": [7002]},
    {"name": "slow", "protocol": "tcp", "ports": [7003]},
    {"name": "silent", "protocol": "tcp", "ports": [7004]},
]


# ---- pure parsing ----


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("--debug", ("--debug", None)),
        ("--opt val", ("--opt", "val")),
        ("--opt a b", ("--opt", ["a", "b"])),
        ("--opt=val", ("--opt", "val")),
        ("--opt=a b", ("--opt", ["a", "b"])),
        ("--title 'a b'", ("--title", "a b")),
        ('--title "x y" z', ("--title", ["x y", "z"])),
        ("--define a=b", ("--define", "a=b")),  # only the flag is split at "="
        ("  --auth   none  ", ("--auth", "none")),
    ],
)
def test_parse_app_argument(line: str, expected: tuple[str, Any]) -> None:
    assert parse_app_argument(line) == expected


@pytest.mark.parametrize(("line", "needle"), [("", "empty"), ("   ", "empty"), ("'--x", "quotation"), ("=v", "option")])
def test_parse_app_argument_errors(line: str, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        parse_app_argument(line)


def test_repeated_app_arguments_keep_the_last() -> None:
    assert parse_app_arguments(["--a 1", "--b", "--a 2 3"]) == {"--a": ["2", "3"], "--b": None}


@pytest.mark.parametrize(
    ("text", "expected"),
    [("A=b", ("A", "b")), ("A=b=c", ("A", "b=c")), ("A=", ("A", "")), ("A", ("A", "")), ("_x1= sp ", ("_x1", " sp "))],
)
def test_parse_app_env(text: str, expected: tuple[str, str]) -> None:
    assert parse_app_env(text) == expected


@pytest.mark.parametrize("text", ["=x", "", "1A=x", "A-B=x", "A B=x"])
def test_parse_app_env_errors(text: str) -> None:
    with pytest.raises(ValueError):
        parse_app_env(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8080", ("127.0.0.1", 8080)),
        (":9000", ("127.0.0.1", 9000)),
        ("0.0.0.0:9000", ("0.0.0.0", 9000)),
        ("localhost:1", ("localhost", 1)),
        ("[::1]:8080", ("::1", 8080)),
        ("127.0.0.1:0", ("127.0.0.1", 0)),
    ],
)
def test_parse_bind(text: str, expected: tuple[str, int]) -> None:
    assert parse_bind(text) == expected


@pytest.mark.parametrize(
    ("text", "needle"),
    [("abc", "port number"), ("host:", "port number"), ("h:70000", "port number"), ("::1:80", "brackets")],
)
def test_parse_bind_errors(text: str, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        parse_bind(text)
    with pytest.raises(ValueError):
        parse_bind("[::1]")


@pytest.mark.parametrize(
    ("template", "protocol", "host", "expected"),
    [
        (None, "http", "127.0.0.1", "http://127.0.0.1:8080"),
        (None, "preopen", "127.0.0.1", "http://127.0.0.1:8080"),
        (None, "tcp", "127.0.0.1", "tcp://127.0.0.1:8080"),
        (None, "http", "::1", "http://[::1]:8080"),
        ("{protocol}://{host}:{port}/vnc.html", "http", "localhost", "http://localhost:8080/vnc.html"),
        ("{protocol}://{host}:{port}/?t={token}", "http", "localhost", "http://localhost:8080"),  # unfillable
    ],
)
def test_format_app_url(template: str | None, protocol: str, host: str, expected: str) -> None:
    assert format_app_url(template, protocol, host, 8080) == expected


def test_app_option_params() -> None:
    assert app_option_params() == {}
    params = app_option_params(port=8081, envs={"PASSWORD": "pw"}, arguments={"--a": None, "--b": ("x", "y")})
    assert params["port"] == "8081"
    assert json.loads(params["envs"]) == {"PASSWORD": "pw"}
    assert json.loads(params["arguments"]) == {"--a": None, "--b": ["x", "y"]}
    for bad in ({"port": 0}, {"port": True}, {"envs": {"1X": "y"}}, {"envs": {"X": 1}}, {"arguments": {"--a": 3}}):
        with pytest.raises(ValueError):
            app_option_params(**bad)  # type: ignore[arg-type]


def test_split_port_option() -> None:
    assert split_port_option([]) == (9922, [])
    assert split_port_option(["-p", "9000", "-v", "ls", "-la"]) == (9000, ["-v", "ls", "-la"])
    assert split_port_option(["-p9001", "--port=9002", "cmd"]) == (9002, ["cmd"])
    # ssh's own options are left alone, even those containing a "p"; so is all after "--".
    args = ["-oUserKnownHostsFile=/tmp/x", "-L", "8888:localhost:8888", "--", "-p", "5"]
    assert split_port_option(args) == (9922, args)
    for bad in (["-p"], ["-p", "x"], ["--port=70000"]):
        with pytest.raises(ValueError):
            split_port_option(bad)


def test_rewrite_scp_path() -> None:
    assert rewrite_scp_path("mysess:data/x.csv", "mysess") == ("work@localhost:data/x.csv", True)
    assert rewrite_scp_path("work@localhost:/tmp", "mysess") == ("work@localhost:/tmp", True)
    assert rewrite_scp_path("other:x", "mysess") == ("other:x", False)
    assert rewrite_scp_path("./local", "mysess") == ("./local", False)


# ---- a fake manager ----


@dataclass
class FakeManager:
    version: str = "v6.20220615"
    port: int = 0
    queries: list[dict[str, str]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    ws_opened: int = 0
    ws_closed: int = 0
    key_text: str = KEY_TEXT
    # Where the "sshd" app really is (a dropbear in a container), as the manager would connect to it;
    # None: it echoes.
    ssh_target: tuple[str, int] | None = None
    start_service_answer: dict[str, Any] = field(
        default_factory=lambda: {"token": "tok/en+1", "wsproxy_addr": "http://proxy.example:10200/"}
    )

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _problem(status: int, title: str, detail: str) -> web.Response:
    body = {"type": "https://api.backend.ai/probs/x", "title": title, "detail": detail}
    return web.json_response(body, status=status, content_type="application/problem+json")


def _signed(request: web.Request) -> bool:
    try:
        auth = parse_authorization(request.headers["Authorization"])
        expected = make_signature(
            method=request.method,
            path_with_query=request.raw_path,
            date_header=request.headers["Date"],
            date=isoparse(request.headers["Date"]),
            host=request.headers["Host"],
            content_type=request.headers.get("Content-Type", ""),
            version=request.headers["X-BackendAI-Version"],
            secret_key=SK,
            body_sha256=request.headers.get(BODY_HASH_HEADER),
        )
    except (KeyError, ValueError):
        return False
    return auth.access_key == AK and auth.signature == expected


def _key_download(key_text: str) -> web.Response:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = key_text.encode()
        info = tarfile.TarInfo("id_container")
        info.size, info.mode = len(data), 0o644  # the client must make it 0600 itself
        tar.addfile(info, io.BytesIO(data))
    body = (
        b'--BOUNDARY\r\nContent-Type: application/x-tar\r\nContent-Disposition: attachment; filename="x.tar"\r\n\r\n'
        + buf.getvalue()
        + b"\r\n--BOUNDARY--\r\n"
    )
    return web.Response(body=body, headers={"Content-Type": "multipart/mixed; boundary=BOUNDARY"})


async def _relay_to(ws: web.WebSocketResponse, host: str, port: int) -> None:
    """What the manager does for a tcpproxy WebSocket: one TCP connection, BINARY both ways."""
    reader, writer = await asyncio.open_connection(host, port)

    async def down() -> None:
        while chunk := await reader.read(256 * 1024):
            await ws.send_bytes(chunk)
        await ws.close(code=1001)

    task = asyncio.create_task(down())
    try:
        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                writer.write(msg.data)
                await writer.drain()
    finally:
        task.cancel()
        writer.close()


def _build_app(state: FakeManager) -> web.Application:
    sessions = {"mysess": APPS, "nossh": [a for a in APPS if a["name"] != "sshd"], "pendsess": []}

    @web.middleware
    async def check(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path == "/":  # the version probe is anonymous
            return await handler(request)
        if not _signed(request):
            return _problem(401, "Unauthorized", "bad signature")
        state.paths.append(request.path)
        ref = request.match_info.get("ref")
        if ref is not None and ref not in sessions:
            return _problem(404, "Session Not Found", f"No such session: {ref}")
        return await handler(request)

    async def root(request: web.Request) -> web.Response:
        return web.json_response({"version": state.version})

    async def apps(request: web.Request) -> web.Response:
        state.queries.append(dict(request.query))
        return web.json_response(sessions[request.match_info["ref"]])

    async def info(request: web.Request) -> web.Response:
        return web.json_response({"status": "PENDING" if request.match_info["ref"] == "pendsess" else "RUNNING"})

    async def start_service(request: web.Request) -> web.Response:
        state.bodies.append(await request.json())
        return web.json_response(state.start_service_answer)

    async def shutdown_service(request: web.Request) -> web.Response:
        state.bodies.append(await request.json())
        return web.json_response({"status": "stopped"})

    async def download(request: web.Request) -> web.Response:
        state.queries.append(dict(request.query))
        return _key_download(state.key_text)

    async def tcpproxy(request: web.Request) -> web.StreamResponse:
        state.queries.append(dict(request.query))
        app_name = request.query.get("app")
        if app_name == "broken":
            return _problem(500, "Failed to launch the app service", "the executable file is not found: /bin/x")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        state.ws_opened += 1
        try:
            if app_name == "refused":
                await ws.close(code=1013, message=b"Connection refused by the app")
            elif app_name == "slow":  # answers a while after the request, then closes like an app at EOF
                msg = await ws.receive()
                await asyncio.sleep(0.3)
                await ws.send_bytes(b"answer:" + msg.data)
                await ws.close(code=1001)
            elif app_name == "sshd" and state.ssh_target is not None:
                await _relay_to(ws, *state.ssh_target)
            elif app_name == "silent":
                async for _msg in ws:
                    pass
            else:  # echo, jupyter, vnc, sshd: echo BINARY messages back
                async for msg in ws:
                    if msg.type == WSMsgType.BINARY:
                        await ws.send_bytes(msg.data)
        finally:
            state.ws_closed += 1
        return ws

    app = web.Application(middlewares=[check])
    app.router.add_get("/", root)
    for prefix in ("session", "kernel"):
        app.router.add_get(f"/stream/{prefix}/{{ref}}/apps", apps)
        app.router.add_get(f"/stream/{prefix}/{{ref}}/tcpproxy", tcpproxy)
        app.router.add_get(f"/{prefix}/{{ref}}", info)
        app.router.add_post(f"/{prefix}/{{ref}}/start-service", start_service)
        app.router.add_post(f"/{prefix}/{{ref}}/shutdown-service", shutdown_service)
        app.router.add_get(f"/{prefix}/{{ref}}/download", download)
    return app


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith(("BACKEND_", "SORNA_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("BACKEND_ACCESS_KEY", AK)
    monkeypatch.setenv("BACKEND_SECRET_KEY", SK)
    set_config(None)


@pytest.fixture
async def manager(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeManager]:
    state = FakeManager()
    runner = web.AppRunner(_build_app(state))
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    state.port = sock.getsockname()[1]
    await web.SockSite(runner, sock).start()
    monkeypatch.setenv("BACKEND_ENDPOINT", state.endpoint)
    try:
        yield state
    finally:
        await runner.cleanup()


def _api(state: FakeManager) -> AsyncSession:
    return AsyncSession(config=APIConfig(endpoint=state.endpoint, access_key=AK, secret_key=SK))


async def _until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


# ---- SDK ----


@pytest.mark.filterwarnings("ignore::ai.backend.client.exceptions.APIVersionWarning")
async def test_stream_app_info_and_the_v4_naming(manager: FakeManager) -> None:
    async with _api(manager) as api:
        assert await api.ComputeSession("mysess").stream_app_info() == APPS
        await api.ComputeSession("mysess", "OWNERKEY").stream_app_info()
        with pytest.raises(BackendAPIError) as e:
            await api.ComputeSession("nosuch").stream_app_info()
    assert e.value.status == 404
    assert manager.paths[:2] == ["/stream/session/mysess/apps"] * 2
    assert manager.queries[1] == {"owner_access_key": "OWNERKEY"}
    manager.version = "v4.20190615"
    async with _api(manager) as api:
        await api.ComputeSession("mysess").stream_app_info()
    assert manager.paths[-1] == "/stream/kernel/mysess/apps"


async def test_start_and_shutdown_service(manager: FakeManager) -> None:
    async with _api(manager) as api:
        cs = api.ComputeSession("mysess")
        result = await cs.start_service(
            "jupyter", port=8090, envs={"PASSWORD": "pw"}, arguments={"--debug": None}, redirect="/lab"
        )
        manager.start_service_answer = {"token": "t", "wsproxy_addr": "http://p:1", "url": "http://p:1/given"}
        given = await cs.start_service("ttyd")
        assert await cs.shutdown_service("jupyter") == {"status": "stopped"}
        with pytest.raises(BackendClientError):
            await cs.start_service("jupyter", envs={"bad name": "x"})
    assert result["url"] == "http://proxy.example:10200/v2/proxy/auth?token=tok%2Fen%2B1"
    assert given["url"] == "http://p:1/given"
    assert manager.bodies[0] == {
        "app": "jupyter",
        "port": 8090,
        "envs": '{"PASSWORD": "pw"}',  # JSON text, as the 22.03 wire carries them
        "arguments": '{"--debug": null}',
        "redirect": "/lab",
    }
    assert manager.bodies[1] == {"app": "ttyd"}
    assert manager.bodies[2] == {"service_name": "jupyter"}
    assert len(manager.bodies) == 3  # the bad call never left the client


async def test_stream_tcpproxy_is_signed_and_carries_the_options(manager: FakeManager) -> None:
    async with _api(manager) as api:
        cs = api.ComputeSession("mysess")
        async with cs.stream_tcpproxy("echo", port=7000, envs={"A": "b c"}, arguments={"--x": ["1", "2"]}) as ws:
            await ws.send_bytes(b"\x00\x01binary")
            assert await ws.receive_bytes(timeout=5) == b"\x00\x01binary"
        with pytest.raises(BackendAPIError) as e:
            async with cs.stream_tcpproxy("broken"):
                pass
    assert "executable file is not found" in str(e.value)
    assert manager.queries[0] == {
        "app": "echo",
        "port": "7000",
        "envs": '{"A": "b c"}',
        "arguments": '{"--x": ["1", "2"]}',
    }


# ---- the local proxy ----


@pytest.fixture
async def proxy_of(manager: FakeManager) -> AsyncIterator[Any]:
    """``await proxy_of(app, **kw)`` → a started :class:`LocalAppProxy` on a free port, closed afterwards."""
    proxies: list[LocalAppProxy] = []
    errors: list[str] = []
    api = _api(manager)
    await api.__aenter__()

    async def make(app: str, **kwargs: Any) -> LocalAppProxy:
        p = LocalAppProxy(
            api, api.ComputeSession("mysess"), app, host="127.0.0.1", port=0, on_error=errors.append, **kwargs
        )
        await p.start()
        proxies.append(p)
        return p

    make.errors = errors  # type: ignore[attr-defined]
    try:
        yield make
    finally:
        for p in proxies:
            await p.close()
        await api.__aexit__(None, None, None)


async def test_every_connection_is_relayed_through_its_own_websocket(manager: FakeManager, proxy_of: Any) -> None:
    proxy = await proxy_of("echo")
    payload = os.urandom(3 * 1024 * 1024 + 17)  # larger than one message, so it goes in many

    async def roundtrip(data: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.bound_port)
        writer.write(data)
        await writer.drain()
        got = await reader.readexactly(len(data))
        writer.close()
        return got

    results = await asyncio.wait_for(asyncio.gather(*(roundtrip(payload[i:]) for i in range(3))), 30)
    assert results == [payload[i:] for i in range(3)]
    assert manager.ws_opened == 3
    assert manager.queries[-1] == {"app": "echo"}
    await proxy.close()
    await _until(lambda: manager.ws_closed == 3)  # closing the proxy ends every WebSocket


async def test_half_closed_client_still_gets_the_answer(manager: FakeManager, proxy_of: Any) -> None:
    proxy = await proxy_of("slow")
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.bound_port)
    writer.write(b"GET / HTTP/1.0\r\n\r\n")
    writer.write_eof()  # done sending; the answer comes 0.3 s later
    assert await asyncio.wait_for(reader.read(), 10) == b"answer:GET / HTTP/1.0\r\n\r\n"
    writer.close()
    assert proxy_of.errors == []


async def test_a_gone_client_releases_its_websocket_after_the_linger(manager: FakeManager, proxy_of: Any) -> None:
    proxy = await proxy_of("silent", linger=0.3)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.bound_port)
    writer.write(b"x")
    writer.write_eof()
    assert await asyncio.wait_for(reader.read(), 10) == b""  # closed after 0.3 s without traffic
    await _until(lambda: manager.ws_closed == 1)
    writer.close()


async def test_the_app_closing_closes_the_local_connection(manager: FakeManager, proxy_of: Any) -> None:
    proxy = await proxy_of("echo")
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.bound_port)
    writer.write(b"one")
    assert await reader.readexactly(3) == b"one"
    await _until(lambda: manager.ws_opened == 1)
    await proxy.close()
    assert await asyncio.wait_for(reader.read(), 10) == b""
    writer.close()


@pytest.mark.parametrize(
    ("app", "reason"),
    [("refused", "Connection refused by the app"), ("broken", "the executable file is not found: /bin/x")],
)
async def test_refusals_answer_503_as_the_2203_cli(manager: FakeManager, proxy_of: Any, app: str, reason: str) -> None:
    proxy = await proxy_of(app)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.bound_port)
    writer.write(b"GET / HTTP/1.1\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), 10)
    assert answer == error_reply(reason)
    assert answer.startswith(b"HTTP/1.1 503 Service Unavailable\r\nConnection: Closed\r\n\r\nWebSocket reply: ")
    assert len(proxy_of.errors) == 1 and reason in proxy_of.errors[0]
    writer.close()


async def test_a_taken_port_is_an_oserror(manager: FakeManager, proxy_of: Any) -> None:
    first = await proxy_of("echo")
    async with _api(manager) as api:
        second = LocalAppProxy(api, api.ComputeSession("mysess"), "echo", host="127.0.0.1", port=first.bound_port)
        with pytest.raises(OSError):
            await second.start()


# ---- the CLI in this process (commands that need no signal handling) ----


async def invoke(*args: str) -> Result:
    def _run() -> Result:
        set_config(None)
        return CliRunner().invoke(main, list(args), prog_name="backend.ai")  # type: ignore[arg-type]

    return await asyncio.to_thread(_run)


def assert_one_line_error(result: Result, code: int, *needles: str) -> None:
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("✘ ")
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["app", "s", "a", "-b", "nope"], "not a port number"),
        (["app", "s", "a", "-b", "::1:80"], "brackets"),
        (["app", "s", "a", "--arg", "'--x"], "No closing quotation"),
        (["app", "s", "a", "--arg", ""], "must not be empty"),
        (["app", "s", "a", "-e", "1X=2"], "not a valid environment variable name"),
        (["app", "s", "a", "-e", "=2"], "no variable name"),
        (["app", "s", "a", "--port", "0"], "--port"),
        (["app", "s", "a", "--redirect", "/lab"], "--app-proxy"),
        (["session", "app", "s", "a", "-b", "x:y"], "not a port number"),
        (["scp", "s", "a", "b"], "None of the paths is in the session"),
        (["scp", "s", "s:a"], "at least one source"),
        (["ssh", "-v", "s"], "Give the session before"),
        (["ssh", "s", "-p", "x"], "not a port number"),
    ],
)
async def test_usage_errors_are_one_line(args: list[str], needle: str) -> None:
    assert_one_line_error(await invoke(*args), 2, needle)


@pytest.mark.parametrize("path", [["app"], ["apps"], ["ssh"], ["scp"]])
async def test_help_also_under_session(path: list[str]) -> None:
    top, sub = await invoke(*path, "--help"), await invoke("session", *path, "--help")
    assert top.exit_code == sub.exit_code == 0
    assert top.stdout.startswith(f"Usage: backend.ai {path[0]}")
    assert sub.stdout.startswith(f"Usage: backend.ai session {path[0]}")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["app", "mysess", "nosuch"], 'The app "nosuch" is not supported by the session. It provides: echo, jupyter'),
        (["app", "pendsess", "jupyter"], 'The session "pendsess" is not running (it is PENDING).'),
        (["app", "nosuch", "jupyter"], "Session Not Found: No such session: nosuch (404)"),
        (["apps", "mysess", "echo", "nosuch"], 'The app "nosuch" is not supported by the session.'),
        (["session", "apps", "nosuch"], "(404)"),
        (["ssh", "nossh"], 'The app "sshd" is not supported by the session.'),
        (["scp", "nossh", "x", "nossh:y"], 'The app "sshd" is not supported by the session.'),
    ],
)
async def test_server_side_errors_are_one_line(manager: FakeManager, args: list[str], needle: str) -> None:
    assert_one_line_error(await invoke(*args), 1, needle)


async def test_bind_error_is_one_line(manager: FakeManager) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = await invoke("app", "mysess", "echo", "-b", f"127.0.0.1:{port}")
    assert_one_line_error(result, 1, f"Cannot listen on 127.0.0.1:{port}", "in use")


async def test_missing_ssh_program_is_one_line(
    manager: FakeManager, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert_one_line_error(await invoke("ssh", "mysess"), 1, 'The "ssh" command is not found')
    assert_one_line_error(await invoke("scp", "mysess", "a", "mysess:b"), 1, 'The "scp" command is not found')
    assert manager.paths == []  # nothing was asked of the server


async def test_apps_output(manager: FakeManager) -> None:
    listed = await invoke("apps", "mysess", "-l")
    assert listed.exit_code == 0, listed.output
    names = ", ".join(a["name"] for a in APPS)
    assert listed.stdout == f"∙ This session provides the following app services: {names}\n"
    detail = await invoke("session", "apps", "mysess", "jupyter", "echo")
    assert detail.exit_code == 0, detail.output
    assert detail.stdout == (
        "∙ Information for service jupyter:\n"
        "\tAvailable arguments: --NotebookApp.token, --debug\n"
        "\tAvailable environment variables: PASSWORD\n"
        "∙ Service echo does not have customizable arguments.\n"
    )
    as_json = await invoke("--output", "json", "apps", "mysess", "vnc")
    assert json.loads(as_json.stdout) == [APPS[2]]
    names_json = await invoke("--output", "json", "apps", "mysess", "-l")
    assert json.loads(names_json.stdout) == [a["name"] for a in APPS]
    empty = await invoke("apps", "pendsess", "-l")
    assert empty.stdout == "∙ This session provides no app services.\n"


async def test_app_proxy_link(manager: FakeManager) -> None:
    result = await invoke("app", "mysess", "jupyter", "--app-proxy", "--redirect", "/lab", "-e", "PASSWORD=x")
    assert result.exit_code == 0, result.output
    url = "http://proxy.example:10200/v2/proxy/auth?token=tok%2Fen%2B1"
    assert result.stdout == (f'∙ A link to the application "jupyter" provided by the session "mysess":\n  {url}\n')
    assert manager.bodies[-1] == {"app": "jupyter", "envs": '{"PASSWORD": "x"}', "redirect": "/lab"}
    as_json = await invoke("--output", "json", "app", "mysess", "jupyter", "--app-proxy")
    assert json.loads(as_json.stdout) == {"session": "mysess", "app": "jupyter", "url": url}


# ---- the CLI as a real process ----


def _cli_env(manager: FakeManager, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BACKEND_", "SORNA_"))}
    env.update(
        PYTHONPATH=str(SRC), BACKEND_ENDPOINT=manager.endpoint, BACKEND_ACCESS_KEY=AK, BACKEND_SECRET_KEY=SK, **extra
    )
    env.pop("DISPLAY", None)
    env.pop("WAYLAND_DISPLAY", None)
    env.pop("BROWSER", None)
    return env


async def _spawn(manager: FakeManager, *args: str, **env: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ai.backend.client.cli",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_cli_env(manager, **env),
    )


async def _read_url(proc: asyncio.subprocess.Process) -> tuple[str, str]:
    assert proc.stdout is not None
    head = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
    url = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode().strip()
    return head, url


@pytest.mark.parametrize(
    ("app", "bind", "scheme", "suffix"),
    [("echo", "127.0.0.1:0", "tcp", ""), ("jupyter", "0.0.0.0:0", "http", ""), ("vnc", "0", "http", "/vnc.html")],
)
async def test_app_command_serves_until_ctrl_c(
    manager: FakeManager, app: str, bind: str, scheme: str, suffix: str
) -> None:
    proc = await _spawn(manager, "app", "mysess", app, "-b", bind, "--arg", "--debug", "-e", "PASSWORD=s e=cret")
    try:
        head, url = await _read_url(proc)
        host = "0.0.0.0" if bind.startswith("0.0.0.0") else "127.0.0.1"
        assert head == f'∙ A local proxy to the application "{app}" provided by the session "mysess" is available at:\n'
        assert url.startswith(f"{scheme}://{host}:") and url.endswith(suffix)
        port = int(url.split(":")[2].split("/")[0])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"hello app")
        assert await asyncio.wait_for(reader.readexactly(9), 10) == b"hello app"
        query = manager.queries[-1]
        assert query["app"] == app
        assert json.loads(query["arguments"]) == {"--debug": None}
        assert json.loads(query["envs"]) == {"PASSWORD": "s e=cret"}
        proc.send_signal(signal.SIGINT)
        _out, err = await asyncio.wait_for(proc.communicate(), 20)
        writer.close()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    lines = err.decode().splitlines()
    assert "Traceback" not in err.decode(), err.decode()
    assert lines[-2:] == ["∙ Shutting down....", f'∙ The local proxy to "{app}" has terminated.']
    assert ('NOTE: Replace "0.0.0.0"' in err.decode()) == (host == "0.0.0.0")
    assert "Traceback" not in err.decode()
    await _until(lambda: manager.ws_closed == manager.ws_opened == 1)


async def test_app_json_output_and_open_without_display(manager: FakeManager) -> None:
    proc = await _spawn(manager, "--output", "json", "app", "mysess", "jupyter", "-b", "0", "--open")
    try:
        assert proc.stdout is not None and proc.stderr is not None
        doc = json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))
        assert doc["app"] == "jupyter" and doc["protocol"] == "http" and doc["host"] == "127.0.0.1"
        assert doc["url"] == f"http://127.0.0.1:{doc['port']}"
        line = (await asyncio.wait_for(proc.stderr.readline(), 10)).decode()
        assert line == f"∙ No display to open a browser on; open {doc['url']} yourself.\n"
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.communicate(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0


FAKE_SSH = textwrap.dedent(
    """\
    #!{python}
    # Stands in for OpenSSH: checks the key, then talks to the proxy (whose "sshd" echoes).
    import json, os, socket, stat, sys
    argv = sys.argv[1:]
    key = argv[argv.index("-i") + 1]
    port = int(argv[argv.index("-P" if sys.argv[0].endswith("scp") else "-p") + 1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"SSH-2.0-fake")
        got = b""
        while len(got) < 12:
            got += s.recv(100)
    report = {{
        "argv": argv, "key": key, "mode": stat.S_IMODE(os.stat(key).st_mode),
        "dir_mode": stat.S_IMODE(os.stat(os.path.dirname(key)).st_mode),
        "key_text": open(key).read(), "echo": got.decode(),
    }}
    with open(os.environ["FAKE_SSH_REPORT"], "w") as f:
        json.dump(report, f)
    sys.exit(int(os.environ.get("FAKE_SSH_EXIT", "0")))
    """
)


@pytest.fixture
def fake_openssh(tmp_path: Path) -> dict[str, str]:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name in ("ssh", "scp"):
        prog = bindir / name
        prog.write_text(FAKE_SSH.format(python=sys.executable))
        prog.chmod(0o755)
    return {"PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}", "FAKE_SSH_REPORT": str(tmp_path / "report")}


async def _run_to_end(manager: FakeManager, *args: str, **env: str) -> tuple[int, str]:
    code, _out, err = await _run_for_output(manager, *args, **env)
    return code, err


async def _run_for_output(manager: FakeManager, *args: str, **env: str) -> tuple[int, str, str]:
    proc = await _spawn(manager, *args, **env)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_ssh_runs_openssh_through_the_proxy(manager: FakeManager, fake_openssh: dict[str, str]) -> None:
    code, err = await _run_to_end(
        manager,
        "ssh",
        "mysess",
        "-p",
        "0",
        "-v",
        "-oUserKnownHostsFile=/tmp/x",
        "ls",
        "-la",
        FAKE_SSH_EXIT="7",
        **fake_openssh,
    )
    assert code == 7, err  # ssh's exit code
    report = json.loads(Path(fake_openssh["FAKE_SSH_REPORT"]).read_text())
    assert report["echo"] == "SSH-2.0-fake"  # went through the proxy to the "sshd" app
    assert report["mode"] == 0o600 and report["dir_mode"] == 0o700
    assert report["key_text"] == KEY_TEXT
    assert not Path(report["key"]).exists() and not Path(report["key"]).parent.exists()  # cleaned up
    argv = report["argv"]
    port = argv[argv.index("-p") + 1]
    assert argv == [
        "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
        "-o", "NoHostAuthenticationForLocalhost=yes", "-o", "IdentitiesOnly=yes",
        "-i", report["key"], "work@localhost", "-p", port, "-v", "-oUserKnownHostsFile=/tmp/x", "ls", "-la",
    ]  # fmt: skip
    assert f"running a temporary sshd proxy at localhost:{port} ..." in err
    assert "/session/mysess/download" in manager.paths
    assert manager.queries[-1] == {"app": "sshd"}
    await _until(lambda: manager.ws_closed == manager.ws_opened == 1)


async def test_scp_rewrites_session_paths(manager: FakeManager, fake_openssh: dict[str, str]) -> None:
    code, err = await _run_to_end(
        manager, "session", "scp", "mysess", "-r", "-p", "0", "./here", "mysess:there/", **fake_openssh
    )
    assert code == 0, err
    report = json.loads(Path(fake_openssh["FAKE_SSH_REPORT"]).read_text())
    argv = report["argv"]
    port = argv[argv.index("-P") + 1]
    assert argv[-7:] == ["-i", report["key"], "-P", port, "-r", "./here", "work@localhost:there/"]
    assert argv[:2] == ["-o", "StrictHostKeyChecking=no"]
    assert report["echo"] == "SSH-2.0-fake" and report["mode"] == 0o600
    assert not Path(report["key"]).exists()


# ---- real OpenSSH against a real dropbear (in a container), through the proxy ----

DROPBEAR_IMAGE = "python:3.11-debian12"  # has dropbear, sftp-server and the user work
DROPBEAR_SCRIPT = (
    'mkdir -p /home/work/.ssh && echo "$PUB" > /home/work/.ssh/authorized_keys'
    " && chmod 700 /home/work/.ssh && chmod 600 /home/work/.ssh/authorized_keys"
    " && dropbearkey -t ed25519 -f /tmp/hostkey >/dev/null 2>&1"
    " && exec dropbear -r /tmp/hostkey -E -F -s -p 0.0.0.0:2200"
)


@pytest.fixture
def dropbear(tmp_path: Path) -> Iterator[tuple[int, str]]:
    """A dropbear on a published loopback port that accepts a fresh key: ``(port, private key text)``."""
    import shutil
    import subprocess
    import time

    if shutil.which("docker") is None or shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        pytest.skip("needs docker, ssh and ssh-keygen")
    if subprocess.run(["docker", "image", "inspect", DROPBEAR_IMAGE], capture_output=True).returncode != 0:
        pytest.skip(f"needs the image {DROPBEAR_IMAGE}")
    key = tmp_path / "key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    cid = subprocess.run(
        ["docker", "run", "-d", "--rm", "-p", "127.0.0.1::2200", "-e", f"PUB={key.with_suffix('.pub').read_text()}",
         DROPBEAR_IMAGE, "sh", "-c", DROPBEAR_SCRIPT],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    try:
        mapped = subprocess.run(["docker", "port", cid, "2200"], capture_output=True, text=True, check=True).stdout
        port = int(mapped.splitlines()[0].rsplit(":", 1)[1])
        deadline = time.monotonic() + 20
        while True:  # until dropbear says hello
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                    if s.recv(4) == b"SSH-":
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "dropbear did not start"
            time.sleep(0.2)
        yield port, key.read_text()
    finally:
        subprocess.run(["docker", "rm", "-f", cid], capture_output=True)


@pytest.mark.docker
async def test_real_ssh_and_scp_through_the_proxy(
    manager: FakeManager, dropbear: tuple[int, str], tmp_path: Path
) -> None:
    manager.ssh_target = ("127.0.0.1", dropbear[0])
    manager.key_text = dropbear[1]
    code, out, err = await _run_for_output(manager, "ssh", "mysess", "-p", "0", "--", "echo hi from $(whoami); exit 3")
    assert (code, out) == (3, "hi from work\n"), err
    local = tmp_path / "up.bin"
    local.write_bytes(os.urandom(300_000))
    code, err = await _run_to_end(manager, "scp", "mysess", "-p", "0", str(local), "mysess:up.bin")
    assert code == 0, err
    back = tmp_path / "back"
    back.mkdir()
    code, err = await _run_to_end(manager, "session", "scp", "mysess", "-p", "0", "work@localhost:up.bin", str(back))
    assert code == 0, err
    assert (back / "up.bin").read_bytes() == local.read_bytes()
    await _until(lambda: manager.ws_closed == manager.ws_opened == 3)
