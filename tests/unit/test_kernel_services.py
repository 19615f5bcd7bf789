"""The kernel's apps (``ai.backend.kernel.services``) and the web terminal (``ai.backend.kernel.webterm``),
run for real on this machine: processes listening on ports, a real HTTP server and WebSocket, a real shell."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect as ws_connect

from ai.backend.agent.runner_client import RunnerClient
from ai.backend.kernel import services, webterm
from ai.backend.kernel.services import (
    ServiceDefinition,
    ServiceError,
    ServiceManager,
    build_arguments,
    check_envs,
    load_definition,
    parse_definition,
    render,
    run_prestart,
)
from ai.backend.kernel.webterm import OP_BINARY, OP_CLOSE, OP_PING, OP_TEXT, WebTerm, encode_frame

REPO = Path(__file__).resolve().parents[2]
RUNNER = REPO / "src" / "ai" / "backend" / "kernel" / "runner.py"
PYTHON_DEFS = REPO / "images" / "python" / "service-defs"
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[=>()][0-9A-Za-z]?")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (an orphan's zombie, not yet reaped by init, does not count)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except FileNotFoundError:
        return False


def write_def(defs: Path, name: str, body: dict[str, Any]) -> None:
    defs.mkdir(exist_ok=True)
    (defs / f"{name}.json").write_text(json.dumps(body))


#: A server that listens on ports[0] (argv[1]) after printing a line; the stand-in for an app.
HTTP_SERVER = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "{ports[0]}"]


@pytest.fixture
def defs(tmp_path: Path) -> Path:
    d = tmp_path / "service-defs"
    d.mkdir()
    return d


@pytest.fixture
async def manager(tmp_path: Path, defs: Path) -> AsyncIterator[ServiceManager]:
    work = tmp_path / "work"
    work.mkdir()
    mgr = ServiceManager(str(work), dict(os.environ), defs_dir=defs, key_dir=str(tmp_path / "keys"))
    yield mgr
    await mgr.close()


# --------------------------------------------------------------------------------------
# Definitions, templates, options
# --------------------------------------------------------------------------------------


def test_shipped_jupyter_definitions_parse_and_render() -> None:
    for name, module in (("jupyter", "notebook"), ("jupyterlab", "jupyterlab")):
        defn = load_definition(PYTHON_DEFS / f"{name}.json")
        assert defn.name == name and not defn.noop
        assert defn.command[:3] == ["/opt/jupyter/bin/python", "-m", module]
        assert defn.prestart[0].action == "write_tempfile" and defn.prestart[0].ref == "jupyter_cfg"
        body = "".join(render(line, {"ports": [8090]}) for line in defn.prestart[0].args["body"])
        assert "c.ServerApp.port = 8090\n" in body
        assert 'c.IdentityProvider.token = ""' in body
        assert "frame-ancestors 'self'" in body
        assert "disable_check_xsrf = False" in body
        compile(body, "jupyter_config.py", "exec")  # a valid Python config file
        assert defn.app_info()["url_template"].startswith("{protocol}://{host}:{port}/")


def test_parse_definition_reads_every_field() -> None:
    defn = parse_definition(
        "code",
        {
            "prestart": [{"action": "mkdir", "args": {"path": "/tmp/x"}}],
            "command": ["code-server", "--port", "{ports[0]}"],
            "env": {"A": "{ports[0]}"},
            "url_template": "{protocol}://{host}:{port}/",
            "allowed_envs": ["PASSWORD"],
            "allowed_arguments": ["--auth"],
            "default_arguments": {"--auth": "none", "--flag": None, "--many": ["a", "b"]},
        },
    )
    assert defn.env == {"A": "{ports[0]}"}
    assert defn.default_arguments == {"--auth": "none", "--flag": None, "--many": ["a", "b"]}
    assert defn.app_info() == {
        "name": "code",
        "url_template": "{protocol}://{host}:{port}/",
        "allowed_arguments": ["--auth"],
        "allowed_envs": ["PASSWORD"],
    }
    assert parse_definition("x", {"noop": True}).noop


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "not a JSON object"),
        ({"command": "not a list"}, "command must be a list of strings"),
        ({}, "has no command"),
        ({"command": ["x"], "prestart": [{"action": "rm_rf"}]}, "needs an action"),
        ({"command": ["x"], "prestart": [{"action": "log", "args": [], "ref": "r"}]}, "args must be an object"),
        ({"command": ["x"], "prestart": [{"action": "log", "ref": "not an id"}]}, "ref must be an identifier"),
        ({"command": ["x"], "env": {"A": 1}}, "env must map names to strings"),
        ({"command": ["x"], "noop": "yes"}, "noop must be a boolean"),
        ({"command": ["x"], "default_arguments": {"--a": 3}}, "must be a list of strings"),
        ({"command": ["x"], "allowed_envs": "PASSWORD"}, "allowed_envs must be a list"),
    ],
)
def test_parse_definition_rejects_bad_definitions(data: Any, message: str) -> None:
    with pytest.raises(ServiceError, match=message):
        parse_definition("x", data)


def test_load_definition_reports_bad_json(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(ServiceError, match="not valid JSON"):
        load_definition(tmp_path / "x.json")


def test_render_fills_ports_runtime_path_and_refs() -> None:
    variables = {"ports": [8080, 8081], "runtime_path": "/usr/bin/python3", "cfg": "/tmp/c.py", "r": {"out": "x"}}
    assert render("{runtime_path} --port {ports[1]} -c {cfg} {r[out]}", variables) == (
        "/usr/bin/python3 --port 8081 -c /tmp/c.py x"
    )
    assert render("{{literal}}", variables) == "{literal}"
    with pytest.raises(ServiceError, match="unknown variable 'nope'"):
        render("{nope}", variables)
    with pytest.raises(ServiceError, match="bad template"):
        render("{ports[5]}", variables)
    with pytest.raises(ServiceError, match="private attribute"):
        render("{ports.__class__}", variables)


def test_arguments_defaults_overrides_and_refusals() -> None:
    defn = ServiceDefinition(
        "code",
        command=["x"],
        allowed_arguments=["--auth", "--opt"],
        default_arguments={"--auth": "none", "--verbose": None},
    )
    assert build_arguments(defn, None) == ["--auth", "none", "--verbose"]
    assert build_arguments(defn, {"--auth": "password", "--opt": ["a", "b"]}) == [
        "--auth",
        "password",
        "--verbose",
        "--opt",
        "a",
        "b",
    ]
    with pytest.raises(ServiceError, match="argument --evil is not allowed for code"):
        build_arguments(defn, {"--evil": None})
    with pytest.raises(ServiceError, match="must be a list of strings"):
        build_arguments(defn, {"--opt": 5})
    with pytest.raises(ServiceError, match="options.arguments must be an object"):
        build_arguments(defn, ["--auth"])


def test_envs_allowed_refused_and_never_overriding_the_kernel() -> None:
    defn = ServiceDefinition("code", command=["x"], allowed_envs=["PASSWORD", "HOME"])
    assert check_envs(defn, {"PASSWORD": "s3"}, {"HOME": "/home/work"}) == {"PASSWORD": "s3"}
    with pytest.raises(ServiceError, match="environment variable LD_PRELOAD is not allowed for code"):
        check_envs(defn, {"LD_PRELOAD": "/x.so"}, {})
    with pytest.raises(ServiceError, match="HOME is not allowed for code: the kernel sets it"):
        check_envs(defn, {"HOME": "/tmp"}, {"HOME": "/home/work"})
    with pytest.raises(ServiceError, match="must be a string"):
        check_envs(defn, {"PASSWORD": 1}, {})


async def test_prestart_actions_and_refs(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "conf.txt"
    defn = parse_definition(
        "app",
        {
            "prestart": [
                {"action": "mkdir", "args": {"path": str(tmp_path / "sub")}},
                {
                    "action": "write_file",
                    "args": {"filename": str(target), "body": ["port={ports[0]}\n"], "mode": "600"},
                },
                {"action": "write_file", "args": {"filename": str(target), "body": ["more\n"], "append": True}},
                {"action": "write_file", "args": {"filename": str(target) + ".sh", "body": ["#!/bin/sh", "true"]}},
                {"action": "write_tempfile", "args": {"body": ["rt={runtime_path}\n"], "mode": "640"}, "ref": "tmp"},
                {"action": "run_command", "args": {"command": ["/bin/echo", "{ports[0]}"]}, "ref": "echoed"},
                {"action": "log", "args": {"body": "file at {tmp}"}},
            ],
            "command": ["x"],
        },
    )
    variables = await run_prestart(defn, {"ports": [1234], "runtime_path": "/rt"}, dict(os.environ), str(tmp_path))
    assert target.read_text() == "port=1234\nmore\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o755  # the seed's default mode, also when appending
    assert stat.S_IMODE(Path(str(target) + ".sh").stat().st_mode) == 0o755
    assert Path(str(target) + ".sh").read_text() == "#!/bin/sh\ntrue\n"  # lines without "\n" get one
    tmp = Path(variables["tmp"])
    assert tmp.suffix == ".py"  # Jupyter's --config wants the extension
    try:
        assert tmp.read_text() == "rt=/rt\n"
        assert stat.S_IMODE(tmp.stat().st_mode) == 0o640
    finally:
        tmp.unlink()
    assert variables["echoed"] == {"out": "1234\n", "err": ""}


async def test_prestart_run_command_failure_is_reported(tmp_path: Path) -> None:
    defn = parse_definition(
        "app",
        {"prestart": [{"action": "run_command", "args": {"command": ["/bin/sh", "-c", "echo bad >&2; exit 4"]}}],
         "command": ["x"]},
    )  # fmt: skip
    with pytest.raises(ServiceError, match=r"run_command failed: /bin/sh exited with code 4: bad"):
        await run_prestart(defn, {"ports": [1]}, dict(os.environ), str(tmp_path))


# --------------------------------------------------------------------------------------
# Starting and stopping real processes
# --------------------------------------------------------------------------------------


async def test_start_running_shutdown_of_a_real_server(manager: ServiceManager, defs: Path) -> None:
    write_def(defs, "web", {"command": HTTP_SERVER})
    port = free_port()
    assert await manager.start("web", [port], "http", {}) == {"status": "started"}
    assert listening(port)
    pid = manager.procs["web"].proc.pid
    assert os.getpgid(pid) == pid  # its own process group
    assert await manager.start("web", [port], "http", {}) == {"status": "running"}
    assert await manager.shutdown("web") == {"status": "stopped"}
    assert not listening(port)
    assert await manager.shutdown("web") == {"status": "not-running"}
    # Started again after a stop.
    assert await manager.start("web", [port], "http", None) == {"status": "started"}


async def test_concurrent_starts_start_one_process(manager: ServiceManager, defs: Path) -> None:
    write_def(defs, "web", {"command": HTTP_SERVER})
    port = free_port()
    answers = await asyncio.gather(*(manager.start("web", [port], "http", {}) for _ in range(3)))
    assert sorted(a["status"] for a in answers) == ["running", "running", "started"]


async def test_env_and_arguments_reach_the_process(manager: ServiceManager, defs: Path, tmp_path: Path) -> None:
    out = tmp_path / "seen.json"
    script = tmp_path / "app.py"  # a file: braces in a command are template fields
    script.write_text(
        "import json, os, sys, http.server\n"
        f"seen = {{'argv': sys.argv[1:], 'A': os.environ.get('A'), 'PW': os.environ.get('PW')}}\n"
        f"json.dump(seen, open({str(out)!r}, 'w'))\n"
        "http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), http.server.BaseHTTPRequestHandler).serve_forever()\n"
    )
    write_def(
        defs,
        "app",
        {
            "command": [sys.executable, str(script), "{ports[0]}"],
            "env": {"A": "port-{ports[0]}"},
            "allowed_envs": ["PW"],
            "allowed_arguments": ["--mode"],
            "default_arguments": {"--mode": "safe", "--quiet": None},
        },
    )
    port = free_port()
    answer = await manager.start("app", [port], "http", {"envs": {"PW": "s3cret"}, "arguments": {"--mode": "fast"}})
    assert answer == {"status": "started"}
    seen = json.loads(out.read_text())
    assert seen == {"argv": [str(port), "--mode", "fast", "--quiet"], "A": f"port-{port}", "PW": "s3cret"}


async def test_failure_reasons(manager: ServiceManager, defs: Path) -> None:
    port = free_port()
    answer = await manager.start("nothing", [port], "http", {})
    assert answer["status"] == "failed" and "unknown service: nothing" in answer["error"]

    write_def(defs, "missing", {"command": ["/no/such/binary", "{ports[0]}"]})
    answer = await manager.start("missing", [port], "http", {})
    assert answer == {"status": "failed", "error": "the executable file is not found: /no/such/binary"}

    crash = "import sys; print('starting up'); sys.stderr.write('boom: cannot bind\\n'); sys.exit(3)"
    write_def(defs, "crash", {"command": [sys.executable, "-c", crash]})
    answer = await manager.start("crash", [port], "http", {})
    assert answer["status"] == "failed"
    assert f"crash exited with code 3 before opening port {port}" in answer["error"]
    assert "boom: cannot bind" in answer["error"] and "starting up" in answer["error"]
    assert "crash" not in manager.procs

    write_def(defs, "web", {"command": HTTP_SERVER, "allowed_arguments": ["--ok"], "allowed_envs": ["OK"]})
    answer = await manager.start("web", [port], "http", {"arguments": {"--directory": "/"}})
    assert answer == {"status": "failed", "error": "argument --directory is not allowed for web"}
    answer = await manager.start("web", [port], "http", {"envs": {"LD_PRELOAD": "x"}})
    assert answer == {"status": "failed", "error": "environment variable LD_PRELOAD is not allowed for web"}
    answer = await manager.start("web", [], "http", {})
    assert answer == {"status": "failed", "error": "no container port given for web"}
    answer = await manager.start("web", ["80"], "http", {})
    assert answer == {"status": "failed", "error": "ports must be a list of TCP port numbers"}
    answer = await manager.start("../etc/passwd", [port], "http", {})
    assert answer["status"] == "failed" and "invalid service name" in answer["error"]
    answer = await manager.start("ttyd", [port], "http", {"arguments": {"-W": None}})
    assert answer == {"status": "failed", "error": "argument -W is not allowed for ttyd"}
    (defs / "broken.json").write_text("[1, 2]")
    answer = await manager.start("broken", [port], "http", {})
    assert answer["status"] == "failed" and "not a JSON object" in answer["error"]
    assert not listening(port)


async def test_a_start_that_times_out_is_stopped(tmp_path: Path, defs: Path) -> None:
    marker = tmp_path / "pid"
    write_def(
        defs,
        "sleepy",
        {"command": [sys.executable, "-c", f"import os, time; open({str(marker)!r}, 'w').write(str(os.getpid())); "
                     "print('warming up', flush=True); time.sleep(60)"]},
    )  # fmt: skip
    mgr = ServiceManager(str(tmp_path), dict(os.environ), defs_dir=defs, start_timeouts={"sleepy": 1.0})
    try:
        answer = await mgr.start("sleepy", [free_port()], "http", {})
        assert answer["status"] == "failed"
        assert "did not open port" in answer["error"] and "within 1 s" in answer["error"]
        assert "warming up" in answer["error"]
        assert not alive(int(marker.read_text()))
    finally:
        await mgr.close()


def test_jupyter_gets_a_longer_start_timeout() -> None:
    assert services.START_TIMEOUTS == {"jupyter": 120.0, "jupyterlab": 120.0}
    assert services.DEFAULT_START_TIMEOUT == 30.0


async def test_preopen_noop_and_a_port_already_served(manager: ServiceManager, defs: Path) -> None:
    assert await manager.start("8888", [8888], "preopen", {}) == {"status": "started"}
    write_def(defs, "nothing", {"noop": True})
    assert await manager.start("nothing", [free_port()], "http", {}) == {"status": "started"}
    assert "nothing" not in manager.procs
    # A server the user started on the app's port: the app counts as running.
    write_def(defs, "web", {"command": HTTP_SERVER})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert await manager.start("web", [s.getsockname()[1]], "http", {}) == {"status": "running"}
    assert "web" not in manager.procs


async def test_get_apps_lists_intrinsic_and_valid_definitions(manager: ServiceManager, defs: Path) -> None:
    write_def(defs, "web", {"command": ["x"], "url_template": "http://{host}:{port}/", "allowed_envs": ["PW"]})
    write_def(defs, "plain", {"command": ["x"]})
    write_def(defs, "sshd", {"command": ["evil"]})  # the intrinsic names are reserved
    (defs / "broken.json").write_text("{")
    assert manager.list_apps() == [
        {"name": "sshd"},
        {"name": "ttyd"},
        {"name": "plain"},
        {"name": "web", "url_template": "http://{host}:{port}/", "allowed_envs": ["PW"]},
    ]


async def test_close_stops_every_app_and_what_it_started(tmp_path: Path, defs: Path) -> None:
    pidfile = tmp_path / "child.pid"
    script = tmp_path / "parent.py"
    script.write_text(
        "import subprocess, sys, http.server\n"
        f"c = subprocess.Popen(['sleep', '300']); open({str(pidfile)!r}, 'w').write(str(c.pid))\n"
        "http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), http.server.BaseHTTPRequestHandler).serve_forever()\n"
    )
    write_def(defs, "parent", {"command": [sys.executable, str(script), "{ports[0]}"]})
    mgr = ServiceManager(str(tmp_path), dict(os.environ), defs_dir=defs)
    port = free_port()
    assert (await mgr.start("parent", [port], "http", {}))["status"] == "started"
    child = int(pidfile.read_text())
    await mgr.close()
    assert not listening(port)
    await asyncio.sleep(0.2)
    assert not alive(child)
    assert (await mgr.start("parent", [port], "http", {}))["error"] == "the kernel is shutting down"


async def test_ttyd_is_the_web_terminal(manager: ServiceManager) -> None:
    port = free_port()
    assert await manager.start("ttyd", [port], "http", {}) == {"status": "started"}
    status, headers, body = await http_get(port, "/")
    assert status == 200 and b'src="xterm.js"' in body
    assert await manager.shutdown("ttyd") == {"status": "stopped"}


@pytest.mark.skipif(os.path.exists("/usr/sbin/dropbear"), reason="dropbear is installed here")
async def test_sshd_without_dropbear_says_so(manager: ServiceManager) -> None:
    answer = await manager.start("sshd", [free_port()], "tcp", {})
    assert answer["status"] == "failed"
    assert "the executable file is not found: dropbear" in answer["error"]


def test_key_paths_writable_by_others_are_fixed_or_refused(tmp_path: Path) -> None:
    d = tmp_path / "home"
    d.mkdir()
    d.chmod(0o775)
    services._check_key_path(d)
    assert stat.S_IMODE(d.stat().st_mode) == 0o755
    if os.getuid() == 0:
        other = tmp_path / "other"
        other.mkdir(mode=0o777)
        other.chmod(0o777)
        os.chown(other, 4242, 4242)
        with pytest.raises(ServiceError, match="belongs to uid 4242"):
            services._check_key_path(other)


# --------------------------------------------------------------------------------------
# The runner's ops
# --------------------------------------------------------------------------------------


async def test_runner_ops(tmp_path: Path, defs: Path) -> None:
    write_def(defs, "web", {"command": HTTP_SERVER, "url_template": "{protocol}://{host}:{port}/"})
    sock_dir = tempfile.mkdtemp(prefix="bai-svc-")
    sock = os.path.join(sock_dir, "runner.sock")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-I", str(RUNNER), "--socket", sock, "--runtime-type", "lua",
        "--workdir", str(tmp_path), "--service-defs-dir", str(defs),
    )  # fmt: skip
    client = RunnerClient()
    port = free_port()
    try:
        await client.connect(sock, timeout=15)
        apps = await client.request("get_apps")
        assert apps["apps"] == [
            {"name": "sshd"},
            {"name": "ttyd"},
            {"name": "web", "url_template": "{protocol}://{host}:{port}/"},
        ]
        answer = await client.request("start_service", name="web", ports=[port], protocol="http", options={})
        assert answer["status"] == "started"
        assert listening(port)
        answer = await client.request("start_service", name="web", ports=[port], protocol="http", options={})
        assert answer["status"] == "running"
        answer = await client.request("start_service", name="nope", ports=[port], protocol="http", options={})
        assert answer["status"] == "failed" and "unknown service: nope" in answer["error"]
        assert (await client.request("shutdown_service", name="web"))["status"] == "stopped"
        assert (await client.request("shutdown_service", name="web"))["status"] == "not-running"
        assert not listening(port)
        # Started again, then the runner exits: the app goes with it.
        assert (await client.request("start_service", name="web", ports=[port], protocol="http"))["status"] == "started"
        await client.request("shutdown")
        await asyncio.wait_for(proc.wait(), 10)
        assert not listening(port)
    finally:
        await client.close()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        shutil.rmtree(sock_dir, ignore_errors=True)


# --------------------------------------------------------------------------------------
# The web terminal
# --------------------------------------------------------------------------------------


async def http_get(
    port: int, path: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", *(f"{k}: {v}" for k, v in (headers or {}).items())]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    return int(status_line.split()[1]), parsed, body


class WsClient:
    """A minimal WebSocket client (masked frames), enough to drive the terminal."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.output = b""

    @classmethod
    async def connect(cls, port: int, path: str = "/ws", origin: str | None = None) -> WsClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket", "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13",
        ]  # fmt: skip
        if origin:
            lines.append(f"Origin: {origin}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 101 "), head
        assert f"Sec-WebSocket-Accept: {webterm.accept_key(key)}".encode() in head
        return cls(reader, writer)

    async def send(self, opcode: int, payload: bytes) -> None:
        self.writer.write(encode_frame(opcode, payload, mask=os.urandom(4)))
        await self.writer.drain()

    async def frame(self) -> tuple[int, bytes]:
        b0, b1 = await self.reader.readexactly(2)
        assert not b1 & 0x80  # server frames are not masked
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack(">H", await self.reader.readexactly(2))
        elif n == 127:
            (n,) = struct.unpack(">Q", await self.reader.readexactly(8))
        return b0 & 0x0F, await self.reader.readexactly(n)

    async def read_until(self, pattern: str, timeout: float = 10.0) -> str:
        async def _read() -> str:
            while True:
                text = _ANSI.sub("", self.output.decode("utf-8", "replace"))
                if re.search(pattern, text):
                    return text
                opcode, payload = await self.frame()
                if opcode == OP_BINARY:
                    self.output += payload
                elif opcode == OP_CLOSE:
                    raise AssertionError(f"closed: {payload!r}; output so far: {text!r}")

        return await asyncio.wait_for(_read(), timeout)

    async def close_code(self) -> int:
        """The status code of the server's close frame (terminal output before it is skipped)."""
        while True:
            opcode, payload = await asyncio.wait_for(self.frame(), 10)
            if opcode == OP_CLOSE:
                return int(struct.unpack(">H", payload[:2])[0])

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
def xterm_dir(tmp_path: Path) -> Path:
    d = tmp_path / "xterm"
    (d / "addons" / "fit").mkdir(parents=True)
    (d / "xterm.js").write_text("var Terminal = function () {};")
    (d / "xterm.css").write_text(".xterm {}")
    (d / "addons" / "fit" / "xterm-addon-fit.js").write_text("var FitAddon = {};")
    return d


@pytest.fixture
async def term_server(tmp_path: Path, xterm_dir: Path) -> AsyncIterator[int]:
    env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(tmp_path), "PS1": "$ ", "ENV": ""}
    wt = WebTerm(["/bin/sh"], env=env, cwd=str(tmp_path), xterm_dir=str(xterm_dir))
    server = await asyncio.start_server(wt.handle, "127.0.0.1", 0, limit=webterm.MAX_HEADER)
    port = server.sockets[0].getsockname()[1]
    yield port
    server.close()
    await wt.close()
    await server.wait_closed()


async def test_webterm_serves_the_page_under_any_prefix(term_server: int) -> None:
    for path in ("/", "/proxy/sess/ttyd/", "/proxy/sess/ttyd", "/?x=1"):
        status, headers, body = await http_get(term_server, path)
        assert status == 200 and headers["content-type"].startswith("text/html")
        assert b'src="xterm.js"' in body and b'href="xterm.css"' in body and b'src="webterm.js"' in body
        assert b'src="/' not in body and b'href="/' not in body  # relative URLs only
        assert "frame-ancestors 'self'" in headers["content-security-policy"]
        assert f"'sha256-{webterm.FIX_BASE_HASH}'" in headers["content-security-policy"]
    status, headers, body = await http_get(term_server, "/proxy/sess/ttyd/xterm.js")
    assert status == 200 and body == b"var Terminal = function () {};"
    assert headers["content-type"].startswith("text/javascript")
    status, _, body = await http_get(term_server, "/p/xterm-addon-fit.js")
    assert status == 200 and body == b"var FitAddon = {};"
    status, _, body = await http_get(term_server, "/p/webterm.js")
    assert status == 200 and b"new WebSocket" in body and b"KeyV" in body
    status, headers, body = await http_get(term_server, "/", method="HEAD")
    assert status == 200 and body == b"" and int(headers["content-length"]) > 100
    status, headers, _ = await http_get(term_server, "/", method="POST")
    assert status == 405 and headers["allow"] == "GET, HEAD"
    status, headers, _ = await http_get(term_server, "/ws")
    assert status == 426
    status, _, _ = await http_get(
        term_server, "/ws", {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Key": "short"}
    )
    assert status == 400
    status, _, _ = await http_get(term_server, "/x", {"X-Big": "a" * (webterm.MAX_HEADER + 10)})
    assert status == 431


async def test_webterm_reports_missing_xterm(tmp_path: Path) -> None:
    wt = WebTerm(["/bin/sh"], xterm_dir=str(tmp_path / "none"))
    server = await asyncio.start_server(wt.handle, "127.0.0.1", 0)
    try:
        status, _, body = await http_get(server.sockets[0].getsockname()[1], "/xterm.js")
        assert status == 404 and b"not installed" in body
    finally:
        server.close()


async def test_webterm_runs_a_shell_over_the_websocket(term_server: int) -> None:
    ws = await WsClient.connect(term_server, "/prefix/ws", origin=f"http://127.0.0.1:{term_server}")
    try:
        await ws.send(OP_TEXT, b"r30,100")
        await ws.read_until(r"\$ $")  # the prompt: typing before it would mix the echo with it
        await ws.send(OP_TEXT, b"iecho hi; echo $((40+2)); stty size\r")
        text = await ws.read_until(r"42\r?\n.*30 100")
        assert re.search(r"(?m)^hi\r?$", text)
        # A ping is answered with a pong carrying the same payload.
        await ws.send(OP_PING, b"are you there")
        while True:
            opcode, payload = await ws.frame()
            if opcode == 0xA:
                assert payload == b"are you there"
                break
        # The shell exiting ends the WebSocket with a close frame.
        await ws.send(OP_TEXT, b"iexit\r")
        assert await ws.close_code() == 1000
    finally:
        ws.close()


async def test_webterm_with_a_third_party_client_and_fragmented_messages(term_server: int) -> None:
    async with ws_connect(f"ws://127.0.0.1:{term_server}/ws") as ws:
        await ws.send("r24,80")
        await ws.send(["iecho frag", "ment-$((1+1))\r"])  # one message in two frames (continuation)
        seen = ""
        async with asyncio.timeout(10):
            while "fragment-2" not in seen:
                frame = await ws.recv()
                assert isinstance(frame, bytes)  # the terminal's output is binary
                seen += _ANSI.sub("", frame.decode("utf-8", "replace"))


async def test_webterm_refuses_cross_origin_and_big_or_unmasked_messages(term_server: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", term_server)
    writer.write(
        b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + base64.b64encode(os.urandom(16)) + b"\r\nSec-WebSocket-Version: 13\r\n"
        b"Origin: http://evil.example\r\n\r\n"
    )
    assert (await asyncio.wait_for(reader.read(), 10)).startswith(b"HTTP/1.1 403 ")
    writer.close()
    # Behind a proxy that rewrites Host, X-Forwarded-Host names the browser's host.
    status, _, _ = await http_get(
        term_server, "/ws", {"Origin": "https://apps.example:8443", "X-Forwarded-Host": "apps.example:8443"}
    )
    assert status == 426  # passed the origin check, then wanted the upgrade headers

    ws = await WsClient.connect(term_server)
    await ws.send(OP_TEXT, b"i" + b"x" * (webterm.MAX_MESSAGE + 1))
    assert await ws.close_code() == 1009
    ws.close()

    ws = await WsClient.connect(term_server)
    ws.writer.write(bytes([0x81, 0x02]) + b"ix")  # not masked
    assert await ws.close_code() == 1002
    ws.close()


def test_resize_messages_are_validated() -> None:
    assert webterm.parse_resize("24,80") == (24, 80)
    for bad in ("0,80", "24", "a,b", "24,80000", "-1,5"):
        assert webterm.parse_resize(bad) is None


@pytest.fixture
def tmux_socket(tmp_path: Path) -> Iterator[str]:
    """A tmux server of the test's own (socket under ``TMUX_TMPDIR`` = the test's directory)."""
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    name = f"bai-test-{uuid.uuid4().hex[:8]}"
    yield name
    subprocess.run(["tmux", "-L", name, "kill-server"], env={**os.environ, "TMUX_TMPDIR": str(tmp_path)},
                   capture_output=True, timeout=10)  # fmt: skip


async def test_every_tab_shares_one_tmux_session(tmp_path: Path, xterm_dir: Path, tmux_socket: str) -> None:
    argv = webterm.terminal_command(True, tmux_socket)
    assert argv[-5:] == ["-2", "new-session", "-A", "-s", "main"]
    env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(tmp_path), "SHELL": "/bin/sh",
           "TERM": "xterm-256color", "ENV": "", "PS1": "$ ", "TMUX_TMPDIR": str(tmp_path)}  # fmt: skip
    wt = WebTerm(argv, env=env, cwd=str(tmp_path), xterm_dir=str(xterm_dir))
    server = await asyncio.start_server(wt.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    first = await WsClient.connect(port)
    second: WsClient | None = None
    try:
        await first.send(OP_TEXT, b"r24,80")
        await first.send(OP_TEXT, b"iecho one-$((20+1))\r")
        await first.read_until(r"one-21")
        second = await WsClient.connect(port)
        await second.send(OP_TEXT, b"r24,80")
        # The second tab attaches to the same session: it sees what the first one did.
        await second.read_until(r"one-21")
        await second.send(OP_TEXT, b"iecho two-$((30+3))\r")
        await first.read_until(r"two-33")
    finally:
        first.close()
        if second is not None:
            second.close()
        server.close()
        await wt.close()
