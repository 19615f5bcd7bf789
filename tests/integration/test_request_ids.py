"""Request ids and JSON logs on a real manager (``[logging] format = "json"``) and a webserver in front of it:
the id of a failed request is in its problem body, in the ``X-Request-ID`` answer and on the manager's log
lines of that request; a sane id from the client is kept, an insane one replaced; the webserver's id reaches
the manager; the CLI prints it. Manager-only (no agents, no Docker)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ai.backend.testutils.cluster import Cluster, _free_port, launch_manager
from ai.backend.testutils.web import WebServer, launch_webserver

from .conftest import USER

SANE = re.compile(r"[A-Za-z0-9._-]{1,64}")
V = {"X-BackendAI-Version": "v6.20220615"}
AGENT_ID = f"i-rid-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def manager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A manager and one dummy agent (no Docker), both logging JSON at debug level: a 4xx problem is logged at
    debug (nothing at all is logged per request at info)."""
    logging_toml = '[logging]\nformat = "json"\nlevel = "debug"\n'
    m = launch_manager(tmp_path_factory.mktemp("mgr-json"), manager_toml=logging_toml)
    try:
        (m.state / "agent.toml").write_text(
            f'[agent]\nid = "{AGENT_ID}"\nbackend = "dummy"\nrpc-listen-port = {_free_port()}\n'
            f'manager-url = "{m.endpoint}"\ncluster-secret = "{m.secret}"\nheartbeat-interval = 1.0\n\n'
            f'[resource]\ncpu = 2\nmem = "2g"\n\n{logging_toml}'
        )
        m.start("agent")
        m.wait_ready(agents=True)
        yield m
    finally:
        m.shutdown()


@pytest.fixture(scope="module")
def web(manager: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    toml = '\n[logging]\nformat = "json"\n'
    w = launch_webserver(tmp_path_factory.mktemp("web-json"), manager.endpoint, extra_toml=toml)
    try:
        yield w
    finally:
        w.shutdown()


def _log_lines(path: Path, request_id: str, timeout: float = 5.0) -> list[dict[str, Any]]:
    """The JSON log lines of ``path`` that carry ``request_id`` (waiting a little for them to be written)."""
    deadline = time.monotonic() + timeout
    while True:
        found = []
        for raw in path.read_text().splitlines():
            if request_id in raw:
                found.append(json.loads(raw))  # a line with the id that is not JSON fails here
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def test_every_manager_log_line_is_json(manager: Cluster) -> None:
    lines = [ln for ln in (manager.state / "manager.log").read_text().splitlines() if ln.strip()]
    assert lines, "the manager logged nothing at debug level"
    for ln in lines:
        doc = json.loads(ln)
        assert {"time", "level", "logger", "message"} <= set(doc), doc
        assert doc["time"].endswith("Z")


def test_bad_request_problem_header_and_log_share_the_id(manager: Cluster) -> None:
    rid = f"it-{uuid.uuid4().hex[:12]}"
    r = manager.request("GET", "/session/no-such-session-here", headers={"X-Request-ID": rid})
    assert r.status_code == 404, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.headers["x-request-id"] == rid
    assert r.json()["request_id"] == rid
    lines = _log_lines(manager.state / "manager.log", rid)
    assert lines, "no manager log line carries the request id"
    problem = [ln for ln in lines if "session-not-found" in ln["message"]]
    assert problem, lines
    assert problem[0]["request_id"] == rid and problem[0]["access_key"] == USER["access_key"]
    assert problem[0]["level"] == "DEBUG" and problem[0]["logger"].startswith("ai.backend.manager")


def test_one_id_through_manager_and_agent_with_session_and_agent_ids(manager: Cluster) -> None:
    name = f"rid-{uuid.uuid4().hex[:8]}"
    sid = manager.create_session(name, config={"resources": {"cpu": 1, "mem": "256m"}})["sessionId"]
    try:
        rid = f"sess-{uuid.uuid4().hex[:12]}"
        # The dummy agent refuses file listings (no container): the agent's problem, through the manager.
        r = manager.request("GET", f"/session/{name}/files?path=.", headers={"X-Request-ID": rid})
        assert r.status_code == 400 and r.json()["request_id"] == rid, r.text
        mgr_lines = _log_lines(manager.state / "manager.log", rid)
        assert any(ln.get("session_id") == sid for ln in mgr_lines), mgr_lines
        agent_lines = _log_lines(manager.state / "agent.log", rid)
        assert agent_lines, "the request id did not reach the agent's log"
        assert all(ln["agent_id"] == AGENT_ID for ln in agent_lines), agent_lines
    finally:
        manager.request("DELETE", f"/session/{name}")


def test_sane_ids_are_echoed_and_insane_ones_replaced(manager: Cluster) -> None:
    r = manager.request("GET", "/session/nope", headers={"X-Request-ID": "Client.Id_1-2"})
    assert r.headers["x-request-id"] == "Client.Id_1-2" == r.json()["request_id"]
    for insane in ("x" * 65, "two words", "a;b", "é"):
        r = httpx.get(manager.endpoint + "/session/nope", headers=[(b"X-Request-ID", insane.encode())])
        rid = r.headers["x-request-id"]
        assert rid != insane and SANE.fullmatch(rid), rid
        assert r.json()["request_id"] == rid
    # Without one, every answer still gets an id (successes too).
    ok = httpx.get(manager.endpoint + "/")
    assert ok.status_code == 200 and SANE.fullmatch(ok.headers["x-request-id"])
    other = httpx.get(manager.endpoint + "/")
    assert other.headers["x-request-id"] != ok.headers["x-request-id"]


def test_middleware_problems_carry_the_id(manager: Cluster) -> None:
    # Answered by the URL-compatibility middleware before any route: the id is there all the same.
    r = httpx.get(manager.endpoint + "/v99/session", headers={"X-Request-ID": "ver-1"})
    assert r.status_code == 404 and r.json()["request_id"] == "ver-1" and r.headers["x-request-id"] == "ver-1"


def test_webserver_forwards_its_request_id_to_the_manager(manager: Cluster, web: WebServer) -> None:
    client = httpx.Client(base_url=web.url, timeout=60)
    r = client.post("/server/login", json={"username": USER["email"], "password": USER["password"]}, headers=V)
    assert r.status_code == 200, r.text
    # The browser's id goes through the webserver to the manager and back.
    rid = f"web-{uuid.uuid4().hex[:12]}"
    r = client.get("/func/session/not-there", headers={**V, "X-Request-ID": rid})
    assert r.status_code == 404 and r.headers["x-request-id"] == rid and r.json()["request_id"] == rid
    lines = _log_lines(manager.state / "manager.log", rid)
    assert any("session-not-found" in ln["message"] and ln["request_id"] == rid for ln in lines), lines
    # Without one, the webserver's own id is the manager's too.
    r = client.get("/func/session/not-there-either", headers=V)
    rid = r.headers["x-request-id"]
    assert r.json()["request_id"] == rid
    assert _log_lines(manager.state / "manager.log", rid)
    # The webserver's own problems carry its id.
    r = httpx.post(web.url + "/server/login", content=b"not json", headers={**V, "X-Request-ID": "web-own"})
    assert r.status_code == 400 and r.json()["request_id"] == "web-own" and r.headers["x-request-id"] == "web-own"


def test_cli_shows_the_request_id_found_in_the_log(manager: Cluster) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "ai.backend.client.cli", "session", "info", "no-such-session-cli"],
        env=manager.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0, out
    m = re.search(r"\[request id: ([A-Za-z0-9._-]+)\]$", out.stderr, re.M)
    assert m, out.stderr
    assert _log_lines(manager.state / "manager.log", m.group(1)), "the CLI's request id is not in the manager log"
