"""Interactive apps end to end, with real containers: service ports in every answer, Jupyter and the web
terminal in a browser's way through the app proxy, SSH and SCP with our CLI, and the refusals (another
user's session, a token that expired or was used, a kernel reaching another kernel's app, a closed session,
bad app requests).

The browser is played by an ``httpx`` client with a cookie jar: it follows the one-use link that
``start-service`` answers, holds the permit cookie the app proxy sets, and talks to the app through the
circuit's port (REST and WebSockets). The official 22.03 CLI's ``app``/``ssh``/``scp`` are in
``tests/compat/test_cli22_apps.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect as ws_connect

from ai.backend.common.app_tokens import AppGrant, issue
from ai.backend.manager.fixtures import ADMIN, USER
from ai.backend.testutils.cluster import Cluster
from ai.backend.testutils.jupyter import run_cell, wait_api

pytestmark = pytest.mark.docker

APPS = {"jupyter": "http", "jupyterlab": "http", "sshd": "tcp", "ttyd": "http"}
CLI = [sys.executable, "-m", "ai.backend.client.cli"]


def _create(cluster: Cluster, name: str, who: dict[str, Any] = USER, **extra: Any) -> dict[str, Any]:
    body = {"image": "python", "name": name, "config": {"resources": {"cpu": "1", "mem": "1g"}}, **extra}
    r = cluster.request("POST", "/session", body, who=who)
    assert r.status_code in (200, 201), r.text
    doc: dict[str, Any] = r.json()
    return doc


def _destroy(cluster: Cluster, name: str, who: dict[str, Any] = USER) -> None:
    cluster.request("DELETE", f"/session/{name}?forced=true", who=who)


@pytest.fixture(scope="module")
def session(cluster: Cluster) -> Iterator[tuple[str, dict[str, Any]]]:
    name = f"apps-{uuid.uuid4().hex[:8]}"
    doc = _create(cluster, name)
    assert doc["status"] == "RUNNING", doc
    try:
        yield name, doc
    finally:
        _destroy(cluster, name)


@pytest.fixture(scope="module")
def admins_session(cluster: Cluster) -> Iterator[str]:
    name = f"apps-adm-{uuid.uuid4().hex[:8]}"
    doc = _create(cluster, name, who=ADMIN)
    assert doc["status"] == "RUNNING", doc
    try:
        yield name
    finally:
        _destroy(cluster, name, who=ADMIN)


def _open(cluster: Cluster, name: str, app: str, who: dict[str, Any] = USER) -> tuple[httpx.Client, str]:
    """Open ``app`` like the console does: start-service, then the link; the client holds the permit."""
    r = cluster.request("POST", f"/session/{name}/start-service", {"app": app}, who=who)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["token"] and doc["url"].startswith(doc["wsproxy_addr"]), doc
    client = httpx.Client(follow_redirects=True, timeout=120)
    resp = client.get(doc["url"])
    assert resp.status_code == 200, resp.text[:500]
    assert any(k.startswith("bai_permit_") for k in client.cookies), dict(client.cookies)
    return client, f"http://{resp.url.host}:{resp.url.port}"


def _service_ports(cluster: Cluster, name: str, who: dict[str, Any] = USER) -> list[dict[str, Any]]:
    data = cluster.gql(
        "query($f: String) { compute_session_list(filter: $f) { items { name service_ports } } }",
        {"f": f'name == "{name}"'},
        who=who,
    )
    items = [i for i in data["compute_session_list"]["items"] if i["name"] == name]
    ports: list[dict[str, Any]] = json.loads(items[0]["service_ports"])
    return ports


def _terminal_output(ws: Any, needle: str, timeout: float = 30) -> str:
    seen = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            msg = ws.recv(timeout=max(deadline - time.monotonic(), 0.1))
        except TimeoutError:
            break
        seen += msg if isinstance(msg, bytes) else msg.encode()
        if needle.encode() in seen:
            return seen.decode(errors="replace")
    raise AssertionError(f"{needle!r} never appeared; the terminal showed:\n{seen.decode(errors='replace')[-2000:]}")


# ---- what the session offers ----------------------------------------------------------------------


def test_service_ports_in_every_answer(cluster: Cluster, session: tuple[str, dict[str, Any]]) -> None:
    name, created = session
    offered = {p["name"]: p["protocol"] for p in created["servicePorts"]}
    assert offered == APPS, created["servicePorts"]
    r = cluster.request("GET", f"/stream/session/{name}/apps")
    assert r.status_code == 200, r.text
    apps = {a["name"]: a for a in r.json()}
    assert set(apps) == set(APPS)
    assert apps["jupyter"]["ports"] == [8090] and apps["sshd"]["ports"] == [2200] and apps["ttyd"]["ports"] == [7681]
    raw = {p["name"]: p for p in _service_ports(cluster, name)}
    for app in APPS:
        (host_port,) = raw[app]["host_ports"]
        assert isinstance(host_port, int) and host_port > 1024


def test_published_ports_are_bound_to_loopback_only(cluster: Cluster, session: tuple[str, dict[str, Any]]) -> None:
    out = "".join(
        subprocess.run(["docker", "port", c], capture_output=True, text=True, check=True).stdout
        for c in cluster.containers()
    )
    bindings = [line.split(" -> ")[1] for line in out.splitlines() if " -> " in line]
    assert len(bindings) >= len(APPS), out
    assert all(b.startswith("127.0.0.1:") for b in bindings), out


# ---- the browser's way ----------------------------------------------------------------------------


def test_jupyter_runs_a_cell_through_the_app_proxy(cluster: Cluster, session: tuple[str, dict[str, Any]]) -> None:
    name, _ = session
    client, base = _open(cluster, name, "jupyter")
    with contextlib.closing(client):  # _open used it already: closed, not re-entered
        assert "version" in wait_api(client, base)
        assert run_cell(client, base, "import numpy; int(numpy.arange(7).sum() * 2)") == "42"
        # The app never sees the permit.
        r = client.get(f"{base}/api/status")
        assert r.status_code == 200


def _terminal(client: httpx.Client, base: str) -> Any:
    cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
    return ws_connect(
        base.replace("http://", "ws://") + "/ws",
        additional_headers={"Cookie": cookie, "Origin": base},
        open_timeout=30,
    )


def test_web_terminal_runs_a_command_and_tabs_share_tmux(cluster: Cluster, session: tuple[str, dict[str, Any]]) -> None:
    name, _ = session
    client, base = _open(cluster, name, "ttyd")
    with contextlib.closing(client):  # _open used it already: closed, not re-entered
        page = client.get(base + "/")
        assert page.status_code == 200 and "xterm" in page.text.lower()
        with _terminal(client, base) as tab1, _terminal(client, base) as tab2:
            tab1.send("r30,100")
            tab1.send("iecho hello-$((6*7)) && whoami\r")
            assert "work" in _terminal_output(tab1, "hello-42")
            # The second tab shows the same tmux session: what was typed in the first appears there.
            _terminal_output(tab2, "hello-42")


def test_another_users_session_is_refused(cluster: Cluster, admins_session: str) -> None:
    for method, path, body in (
        ("GET", f"/stream/session/{admins_session}/apps", None),
        ("POST", f"/session/{admins_session}/start-service", {"app": "jupyter"}),
        ("POST", f"/session/{admins_session}/shutdown-service", {"service_name": "jupyter"}),
    ):
        r = cluster.request(method, path, body, who=USER)
        assert r.status_code == 404, (path, r.status_code, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")


def test_admin_may_open_a_users_app(cluster: Cluster, session: tuple[str, dict[str, Any]]) -> None:
    name, _ = session
    sid = session[1]["sessionId"]
    client, base = _open(cluster, sid, "ttyd", who=ADMIN)
    with contextlib.closing(client):  # _open used it already: closed, not re-entered
        assert client.get(base + "/").status_code == 200


def _proxy_secret(cluster: Cluster) -> str:
    assert cluster.appproxy is not None
    doc = tomllib.loads(cluster.appproxy.config.read_text())
    return str(doc["appproxy"]["secret"])


def test_expired_forged_and_reused_tokens_are_refused(cluster: Cluster, session: tuple[str, dict[str, Any]]) -> None:
    name, created = session
    assert cluster.appproxy is not None
    r = cluster.request("POST", f"/session/{name}/start-service", {"app": "ttyd"})
    assert r.status_code == 200, r.text
    url = r.json()["url"]
    with httpx.Client(follow_redirects=True, timeout=60) as c:
        assert c.get(url).status_code == 200
    with httpx.Client(follow_redirects=True, timeout=60) as c:
        assert c.get(url).status_code == 401  # one use only
    raw = {p["name"]: p for p in _service_ports(cluster, name)}
    grant = AppGrant(
        user=str(uuid.uuid4()),
        access_key=USER["access_key"],
        session_id=created["sessionId"],
        kernel_id=created["sessionId"],
        app="ttyd",
        protocol="http",
        host="127.0.0.1",
        port=raw["ttyd"]["host_ports"][0],
        container_port=7681,
    )
    expired = issue(grant, _proxy_secret(cluster), ttl=-1)
    forged = issue(grant, "not-the-secret-of-this-cluster")
    for token, status in ((expired, 401), (forged, 403)):
        with httpx.Client(follow_redirects=True, timeout=60) as c:
            resp = c.get(f"{cluster.appproxy.url}/v2/proxy/auth", params={"token": token})
            assert resp.status_code == status, resp.text
            assert not any(k.startswith("bai_permit_") for k in c.cookies)


def test_a_circuit_without_the_permit_is_refused(cluster: Cluster, session: tuple[str, dict[str, Any]]) -> None:
    name, _ = session
    client, base = _open(cluster, name, "ttyd")
    client.close()
    with httpx.Client(timeout=30) as stranger:  # another browser: no permit
        assert stranger.get(base + "/").status_code == 401
    with httpx.Client(timeout=30, cookies={"bai_permit_x": "forged"}) as forger:  # a made-up permit
        assert forger.get(base + "/").status_code == 401


def test_another_kernel_cannot_reach_the_app(
    cluster: Cluster, session: tuple[str, dict[str, Any]], admins_session: str
) -> None:
    """Jupyter of the user's session listens; the admin's kernel can reach neither its published host port
    (bound to the host's loopback) nor its container address (no traffic between kernels)."""
    name, _ = session
    client, base = _open(cluster, name, "jupyter")
    with contextlib.closing(client):  # _open used it already: closed, not re-entered
        wait_api(client, base)
    host_port = {p["name"]: p for p in _service_ports(cluster, name)}["jupyter"]["host_ports"][0]
    with socket.create_connection(("127.0.0.1", host_port), timeout=5):
        pass  # the host itself can (the manager and the app proxy connect this way)
    sid = session[1]["sessionId"]
    kernels = cluster.gql(
        "query($s: UUID!) { compute_session(id: $s) { containers { container_id } } }", {"s": sid}, who=ADMIN
    )
    cid = kernels["compute_session"]["containers"][0]["container_id"]
    ip = json.loads(subprocess.run(["docker", "inspect", cid], capture_output=True, text=True, check=True).stdout)[0]
    addr = next(iter(ip["NetworkSettings"]["Networks"].values()))["IPAddress"]
    code = (
        "import socket, struct\n"
        "gw = next(socket.inet_ntoa(struct.pack('<L', int(l.split()[2], 16))) for l in open('/proc/net/route')"
        " if l.split()[1] == '00000000')\n"
        "res = []\n"
        f"for target in ((gw, {host_port}), ('{addr}', 8090), ('127.0.0.1', {host_port})):\n"
        "    try:\n"
        "        socket.create_connection(target, timeout=3).close(); res.append('open')\n"
        "    except OSError as e:\n"
        "        res.append(type(e).__name__)\n"
        "print(res)\n"
    )
    r = cluster.request("POST", f"/session/{admins_session}", {"mode": "query", "code": code, "runId": "x"}, who=ADMIN)
    assert r.status_code == 200, r.text
    result = r.json()["result"]
    console = list(result["console"])
    while result["status"] == "continued":  # the three attempts take a few seconds: collect the rest
        r = cluster.request("POST", f"/session/{admins_session}", {"mode": "continue", "runId": "x"}, who=ADMIN)
        assert r.status_code == 200, r.text
        result = r.json()["result"]
        console += result["console"]
    out = "".join(t for s, t in console if s == "stdout")
    assert "open" not in out and out.count("Error") + out.count("timeout") == 3, out


def test_closing_the_session_closes_its_circuits(cluster: Cluster) -> None:
    name = f"apps-close-{uuid.uuid4().hex[:6]}"
    _create(cluster, name)
    client, base = _open(cluster, name, "ttyd")
    with contextlib.closing(client):  # _open used it already: closed, not re-entered
        assert client.get(base + "/").status_code == 200
        _destroy(cluster, name)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                client.get(base + "/", timeout=3)
            except httpx.HTTPError:
                break
            time.sleep(0.3)
        else:
            raise AssertionError("the circuit still answers after the session ended")


# ---- bad requests -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"app": "no-such-app"}, 404),
        ({"app": "jupyter", "port": 9999}, 400),
        ({"app": "jupyter", "envs": "{not json"}, 400),
        ({"app": "jupyter", "envs": json.dumps({"LD_PRELOAD": "/tmp/x.so"})}, 400),
        ({"app": "jupyter", "arguments": json.dumps({"--ServerApp.token": "x"})}, 400),
        ({}, 400),
    ],
)
def test_bad_app_requests_are_refused(
    cluster: Cluster, session: tuple[str, dict[str, Any]], body: dict[str, Any], status: int
) -> None:
    name, _ = session
    r = cluster.request("POST", f"/session/{name}/start-service", body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json().get("title")


def test_apps_of_a_session_that_does_not_run(cluster: Cluster) -> None:
    name = f"apps-pend-{uuid.uuid4().hex[:6]}"
    _create(cluster, name, enqueueOnly=True, starts_at="2099-01-01T00:00:00Z")
    try:
        r = cluster.request("POST", f"/session/{name}/start-service", {"app": "jupyter"})
        assert r.status_code == 409, r.text
    finally:
        _destroy(cluster, name)


# ---- our CLI --------------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("ssh") is None or shutil.which("scp") is None, reason="no OpenSSH client")
def test_our_ssh_and_scp(cluster: Cluster, session: tuple[str, dict[str, Any]], tmp_path: Path) -> None:
    name, _ = session
    env = {**cluster.env(USER), "HOME": str(tmp_path)}
    ssh = subprocess.run(
        [*CLI, "ssh", name, "--", "echo ssh-$((6*7)); id -un"], capture_output=True, text=True, env=env, timeout=120
    )
    assert ssh.returncode == 0, ssh.stdout + ssh.stderr
    assert "ssh-42" in ssh.stdout and "work" in ssh.stdout
    payload = os.urandom(200_000)
    (tmp_path / "up.bin").write_bytes(payload)
    up = subprocess.run(
        [*CLI, "scp", name, str(tmp_path / "up.bin"), f"{name}:up2.bin"], capture_output=True, text=True, env=env,
        timeout=120,
    )  # fmt: skip
    assert up.returncode == 0, up.stdout + up.stderr
    down = subprocess.run(
        [*CLI, "scp", name, f"{name}:up2.bin", str(tmp_path / "back.bin")], capture_output=True, text=True, env=env,
        timeout=120,
    )  # fmt: skip
    assert down.returncode == 0, down.stdout + down.stderr
    assert (tmp_path / "back.bin").read_bytes() == payload


# ---- preopen ports --------------------------------------------------------------------------------


def test_preopen_port_serves_the_users_own_server(cluster: Cluster) -> None:
    name = f"apps-pre-{uuid.uuid4().hex[:6]}"
    doc = _create(cluster, name, config={"resources": {"cpu": "1", "mem": "1g"}, "preopen_ports": [8877]})
    try:
        assert {"name": "8877", "protocol": "preopen", "ports": [8877]} in doc["servicePorts"], doc["servicePorts"]
        code = (
            "import subprocess, time, urllib.request\n"
            "open('hello.txt', 'w').write('preopen-42')\n"
            "subprocess.Popen(['python3', '-m', 'http.server', '8877'], start_new_session=True,"
            " stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
            "for _ in range(50):\n"
            "    try:\n"
            "        urllib.request.urlopen('http://127.0.0.1:8877/hello.txt'); break\n"
            "    except OSError:\n"
            "        time.sleep(0.1)\n"
            "print('serving')\n"
        )
        r = cluster.request("POST", f"/session/{name}", {"mode": "query", "code": code, "runId": "p"})
        assert r.status_code == 200, r.text
        client, base = _open(cluster, name, "8877")
        try:
            page = client.get(base + "/hello.txt")
            assert page.status_code == 200 and page.text == "preopen-42", page.text[:300]
        finally:
            client.close()
    finally:
        _destroy(cluster, name)


@pytest.mark.parametrize("ports", [[2200], [80], [8877, 8877], ["http"], [8877.5], list(range(9000, 9011))])
def test_bad_preopen_ports_are_refused(cluster: Cluster, ports: list[Any]) -> None:
    name = f"apps-bad-{uuid.uuid4().hex[:6]}"
    body = {"image": "python", "name": name, "config": {"resources": {"cpu": "1", "mem": "1g"}, "preopen_ports": ports}}
    r = cluster.request("POST", "/session", body)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert cluster.request("GET", f"/session/{name}").status_code == 404
