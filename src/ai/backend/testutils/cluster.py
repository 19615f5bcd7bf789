"""A throw-away real cluster (manager + Docker agent processes) for tests and benchmarks.

Each instance gets its own state directory, free ports, agent id and database (an SQLite file in the
state directory unless a ``db_url`` is given, e.g. a PostgreSQL database from
``ai.backend.testutils.databases``), so it never touches a cluster started with ``make demo``.
:func:`launch_manager` starts the manager alone (no agent, no Docker needed). With ``managers=2`` (on PostgreSQL
and Redis) :func:`launch_cluster` starts several managers sharing the database, and an agent that knows them all
(ADR 0014); :meth:`Cluster.at` addresses one of them.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx

from ai.backend.common.auth import CLUSTER_SECRET_HEADER, sign_request_headers
from ai.backend.manager.fixtures import ADMIN, USER

from .appproxy import AppProxy, launch_appproxy
from .ports import free_port_block
from .processes import agent_containers, stop_process, unmount_under, wait_until
from .storage import StorageProxy, launch_storage_proxy

REPO = Path(__file__).resolve().parents[4]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def docker_available() -> bool:
    try:
        out = subprocess.run(["docker", "image", "inspect", "python:latest"], capture_output=True, timeout=20)
        return out.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@dataclass
class Cluster:
    state: Path
    endpoint: str
    secret: str
    agent_id: str  # "" for a manager-only server
    procs: dict[str, subprocess.Popen[bytes]]
    db_url: str = ""
    redis_url: str | None = None
    storage: StorageProxy | None = None  # the storage proxy of this cluster, if it has one
    appproxy: AppProxy | None = None  # the browser-facing app proxy of this cluster, if it has one
    # Every manager's endpoint when there are several ("manager", "manager-2", ...: the processes' names).
    endpoints: list[str] = field(default_factory=list)

    def at(self, index: int) -> Cluster:
        """This cluster as seen through its ``index``-th manager (the processes are shared)."""
        return replace(self, endpoint=(self.endpoints or [self.endpoint])[index])

    @staticmethod
    def manager_name(index: int) -> str:
        """The process (and config) name of the ``index``-th manager: ``manager``, ``manager-2``, ..."""
        return "manager" if index == 0 else f"manager-{index + 1}"

    def env(self, who: dict[str, Any] = USER) -> dict[str, str]:
        """Environment for the SDK/CLI acting as ``who``."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BACKEND_", "SORNA_"))}
        env.update(
            BACKEND_ENDPOINT=self.endpoint,
            BACKEND_ACCESS_KEY=who["access_key"],
            BACKEND_SECRET_KEY=who["secret_key"],
            BACKEND_ENDPOINT_TYPE="api",
        )
        return env

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        who: dict[str, Any] = USER,
        headers: dict[str, str] | None = None,
        timeout: float = 120,
    ) -> httpx.Response:
        """A signed request as ``who``; ``headers`` override the signed ones (to test failures)."""
        host = self.endpoint.split("//", 1)[1]
        h = sign_request_headers(
            method=method,
            path_with_query=path,
            host=host,
            content_type="application/json",
            version="v6.20220615",
            access_key=who["access_key"],
            secret_key=who["secret_key"],
        )
        h.update(headers or {})
        content = json.dumps(body) if body is not None else None
        return httpx.request(method, self.endpoint + path, headers=h, content=content, timeout=timeout)

    def gql_request(
        self, query: str, variables: dict[str, Any] | None = None, *, who: dict[str, Any] = ADMIN, legacy: bool = False
    ) -> httpx.Response:
        """Send a GraphQL document to ``/admin/gql`` (or the seed's ``/admin/graphql`` with ``legacy``)."""
        path = "/admin/graphql" if legacy else "/admin/gql"
        return self.request("POST", path, {"query": query, "variables": variables or {}}, who=who)

    def gql(
        self, query: str, variables: dict[str, Any] | None = None, *, who: dict[str, Any] = ADMIN, legacy: bool = False
    ) -> dict[str, Any]:
        """The data of a GraphQL document that must succeed: a 200 without errors.

        ``/admin/gql`` wraps the data in ``{"data": ...}``; the legacy endpoint answers the fields at the top.
        """
        r = self.gql_request(query, variables, who=who, legacy=legacy)
        assert r.status_code == 200, r.text
        doc = r.json()
        assert not doc.get("errors"), doc
        data: dict[str, Any] = doc if legacy else doc["data"]
        return data

    def create_session(
        self,
        name: str,
        *,
        who: dict[str, Any] = USER,
        image: str = "python",
        config: dict[str, Any] | None = None,
        expect: tuple[int, ...] = (201,),
        running: bool = True,
        **extra: Any,
    ) -> dict[str, Any]:
        """``POST /session`` for ``name``; assert its status is one of ``expect`` and, with ``running``, that the
        session is RUNNING; return the answer. ``extra`` are more request fields (``enqueueOnly``, ...)."""
        body: dict[str, Any] = {"image": image, "name": name, **extra}
        if config is not None:
            body["config"] = config
        r = self.request("POST", "/session", body, who=who)
        assert r.status_code in expect, r.text
        doc: dict[str, Any] = r.json()
        if running:
            assert doc["status"] == "RUNNING", doc
        return doc

    def exec(
        self,
        name: str,
        code: str = "",
        *,
        mode: str = "query",
        run_id: str | None = None,
        who: dict[str, Any] = USER,
        timeout: float = 120,
        **fields: Any,
    ) -> dict[str, Any]:
        """Run ``code`` in the session ``name`` (``POST /session/{name}``; ``fields`` such as ``options`` are
        added to the body); assert a 200 and return its ``result``."""
        body: dict[str, Any] = {"mode": mode, "code": code, **fields}
        if run_id is not None:
            body["runId"] = run_id
        r = self.request("POST", f"/session/{name}", body, who=who, timeout=timeout)
        assert r.status_code == 200, r.text
        result: dict[str, Any] = r.json()["result"]
        return result

    def session_info(self, name: str, *, who: dict[str, Any] = USER) -> dict[str, Any]:
        """``GET /session/{name}``: the session's current answer (asserting a 200)."""
        r = self.request("GET", f"/session/{name}", who=who)
        assert r.status_code == 200, r.text
        info: dict[str, Any] = r.json()
        return info

    def wait_for_status(
        self, name: str, *statuses: str, who: dict[str, Any] = USER, timeout: float = 60
    ) -> dict[str, Any]:
        """Poll :meth:`session_info` until the session's status is one of ``statuses``; return that answer."""
        return wait_until(
            f"session {name} to be {' or '.join(statuses)}",
            lambda: self.session_info(name, who=who),
            lambda info: info["status"] in statuses,
            timeout,
            interval=0.3,
        )

    def start(self, name: str) -> None:
        module = "ai.backend.manager.server" if name.startswith("manager") else "ai.backend.agent.server"
        log = open(self.state / f"{name}.log", "ab")
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", module, "-f", str(self.state / f"{name}.toml")],
            stdout=log,
            stderr=log,
            start_new_session=True,
        )

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc:
            stop_process(proc, 15)

    def kill(self, name: str) -> None:
        """SIGKILL a server (a crash: no shutdown code runs) and reap it."""
        proc = self.procs.pop(name, None)
        if proc and proc.poll() is None:
            proc.kill()
            proc.wait()

    def wait_ready(self, timeout: float = 60, *, agents: bool | None = None) -> None:
        """Wait until the manager answers ``/internal/status`` and, with ``agents`` (the default when this
        cluster has an agent), until an agent is alive and the ``python`` image is known."""
        need_agents = bool(self.agent_id) if agents is None else agents
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            req = urllib.request.Request(
                self.endpoint + "/internal/status", headers={CLUSTER_SECRET_HEADER: self.secret}
            )
            try:
                with urllib.request.urlopen(req, timeout=2) as resp:
                    st = json.load(resp)
                    if not need_agents or (
                        st["agents_alive"] and "python" in st["image_aliases"] and self.agent_answers()
                    ):
                        return
            except OSError:
                pass
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise RuntimeError(f"{name} died: " + (self.state / f"{name}.log").read_text()[-3000:])
            time.sleep(0.2)
        raise RuntimeError("cluster not ready: " + (self.state / "manager.log").read_text()[-2000:])

    def agent_answers(self) -> bool:
        """Whether this cluster's agent process answers its RPC port (the manager may still list an agent
        that was just restarted as alive from before)."""
        m = re.search(r"rpc-listen-port = (\d+)", (self.state / "agent.toml").read_text())
        if m is None:
            return True
        req = urllib.request.Request(
            f"http://127.0.0.1:{m.group(1)}/v1/health", headers={CLUSTER_SECRET_HEADER: self.secret}
        )
        try:
            with urllib.request.urlopen(req, timeout=2):
                return True
        except OSError:
            return False

    def containers(self) -> list[str]:
        return agent_containers(self.agent_id) if self.agent_id else []

    def shutdown(self) -> None:
        """Stop the servers and remove this cluster's containers."""
        self.stop("agent")
        for name in [n for n in self.procs if n.startswith("manager")]:
            self.stop(name)
        ids = self.containers()
        if ids:
            subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)
        unmount_under(self.state / "scratches")  # the scratch images of the containers just removed
        if self.appproxy is not None:
            self.appproxy.shutdown()
        if self.storage is not None:
            self.storage.shutdown()


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def _write_manager_config(
    state: Path,
    port: int,
    secret: str,
    db_url: str | None,
    redis_url: str | None,
    settings: dict[str, Any] | None,
    extra_toml: str = "",
    name: str = "manager",
) -> None:
    lines = [
        "[manager]",
        f"service-addr-port = {port}",
        f"cluster-secret = {_toml_str(secret)}",
        f"state-dir = {_toml_str(str(state))}",
    ]
    if "heartbeat-timeout" not in (settings or {}):  # a setting of the caller replaces the default
        lines.append("heartbeat-timeout = 30.0")
    for key, value in (settings or {}).items():
        lines.append(f"{key} = {json.dumps(value)}")
    if db_url:
        lines += ["", "[db]", f"url = {_toml_str(db_url)}"]
    if redis_url:
        lines += ["", "[redis]", f"url = {_toml_str(redis_url)}"]
    if extra_toml:
        lines += ["", extra_toml]
    (state / f"{name}.toml").write_text("\n".join(lines) + "\n")


def prepare_database(config_path: Path) -> None:
    """``schema oneshot`` and ``fixture populate`` for the manager configured in ``config_path``."""
    cli = [sys.executable, "-m", "ai.backend.manager.cli", "-f", str(config_path)]
    for step in (["schema", "oneshot"], ["fixture", "populate"]):
        out = subprocess.run([*cli, *step], capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(
                f"`backend.ai mgr {' '.join(step)}` failed ({out.returncode}):\n" + (out.stdout + out.stderr)[-4000:]
            )


def launch_manager(
    state: Path,
    *,
    db_url: str | None = None,
    redis_url: str | None = None,
    settings: dict[str, Any] | None = None,
    manager_toml: str = "",
    host: str = "127.0.0.1",
) -> Cluster:
    """Start a manager without agents: write ``manager.toml`` under ``state``, create the schema and the
    default fixtures in ``db_url`` (an SQLite file under ``state`` when not given), start it and wait
    until it answers. ``redis_url`` goes to ``[redis] url``; ``settings`` are extra ``[manager]`` keys
    (e.g. ``{"anonymous-rate-limit": 0}``); ``manager_toml`` is appended (e.g. ``[storage-proxies.local]``);
    ``host`` is the address it listens on (and the endpoint's host)."""
    state.mkdir(parents=True, exist_ok=True)
    mport = _free_port()
    secret = secrets.token_urlsafe(24)
    if host != "127.0.0.1":
        settings = {**(settings or {}), "service-addr-host": host}
    _write_manager_config(state, mport, secret, db_url, redis_url, settings, manager_toml)
    prepare_database(state / "manager.toml")
    c = Cluster(
        state, f"http://{host}:{mport}", secret, "", {}, db_url or f"sqlite+aiosqlite:///{state}/manager.db", redis_url
    )
    c.start("manager")
    try:
        c.wait_ready()
    except Exception:
        c.shutdown()
        raise
    return c


def launch_cluster(
    state: Path,
    *,
    cpu: int = 4,
    mem: str = "4g",
    db_url: str | None = None,
    redis_url: str | None = None,
    manager_toml: str = "",
    storage: bool = True,
    agent_toml: str = "",
    manager_settings: dict[str, Any] | None = None,
    container_settings: dict[str, Any] | None = None,
    appproxy: bool = False,
    managers: int = 1,
) -> Cluster:
    """Write configs under ``state``, create the schema and fixtures, start the servers and wait.
    ``manager_toml`` is appended to ``manager.toml`` (extra tables, e.g. ``[docker-registries."..."]``);
    ``agent_toml`` goes right after the ``[agent]`` keys (its leading keys extend ``[agent]``, then tables);
    ``manager_settings`` and ``container_settings`` are extra keys of ``[manager]`` and of the agent's
    ``[container]`` (e.g. ``{"warm-pool-size": 0}``);
    with ``storage`` a storage proxy (volume host ``local:volume1``) serves the cluster's virtual folders;
    with ``appproxy`` a browser-facing app proxy runs beside the manager (``Cluster.appproxy``); ``managers`` > 1
    starts that many managers on the same ``db_url`` and ``redis_url`` (PostgreSQL and Redis), the agent knowing
    them all (``Cluster.endpoints``, ``Cluster.at``)."""
    state.mkdir(parents=True, exist_ok=True)
    proxy = launch_storage_proxy(state / "storage") if storage else None
    if proxy is not None:
        manager_toml = proxy.manager_toml() + "\n" + manager_toml
    mport, aport = _free_port(), _free_port()
    secret = secrets.token_urlsafe(24)
    agent_ports = free_port_block(200)
    app_ports = None
    while appproxy and (app_ports is None or not (app_ports[1] < agent_ports[0] or app_ports[0] > agent_ports[1])):
        app_ports = free_port_block(9, "127.0.0.1")
    app_secret = secrets.token_urlsafe(24)
    if app_ports is not None:
        manager_toml += f'\n[appproxy]\nurl = "http://127.0.0.1:{app_ports[0]}"\nsecret = {_toml_str(app_secret)}\n'
    # Each agent its own block of host ports for app ports: test clusters run side by side.
    container_settings = {"port-range": list(agent_ports), **(container_settings or {})}
    agent_id = f"i-test-{secrets.token_hex(4)}"
    mports = [mport] + [_free_port() for _ in range(managers - 1)]
    for i, port in enumerate(mports):
        _write_manager_config(
            state, port, secret, db_url, redis_url, manager_settings, manager_toml, name=Cluster.manager_name(i)
        )
    manager_urls = ",".join(f"http://127.0.0.1:{p}" for p in mports)
    container = "".join(f"{k} = {json.dumps(v)}\n" for k, v in (container_settings or {}).items())
    (state / "agent.toml").write_text(
        f'[agent]\nid = "{agent_id}"\nrpc-listen-port = {aport}\nmanager-url = "{manager_urls}"\n'
        f'cluster-secret = "{secret}"\nheartbeat-interval = 1.0\n{agent_toml}\n\n'
        f'[container]\nscratch-root = "{state}/scratches"\n{container}\n[resource]\ncpu = {cpu}\nmem = "{mem}"\n'
    )
    prepare_database(state / "manager.toml")
    c = Cluster(
        state,
        f"http://127.0.0.1:{mport}",
        secret,
        agent_id,
        {},
        db_url or f"sqlite+aiosqlite:///{state}/manager.db",
        redis_url,
        storage=proxy,
        endpoints=[f"http://127.0.0.1:{p}" for p in mports] if managers > 1 else [],
    )
    for i in range(managers):
        c.start(Cluster.manager_name(i))
    c.start("agent")
    try:
        c.wait_ready()
        for i in range(1, managers):
            c.at(i).wait_ready(agents=False)
        if app_ports is not None:
            c.appproxy = launch_appproxy(
                state / "appproxy", secret=app_secret, manager_url=c.endpoint, alive_interval=2.0, ports=app_ports
            )
    except Exception:
        c.shutdown()
        raise
    return c
