"""Starting, stopping and checking the all-in-one cluster.

State lives under one directory (default ``./.backend.ai``; ``--state-dir`` or ``BACKENDAI_HOME``):
``manager.toml``, ``agent.toml``, ``webserver.toml``, ``appproxy.toml``, the SQLite database, scratch directories,
logs and pid files.
``up`` is idempotent: it reuses running processes and existing files.

``up --managers N --db postgresql`` starts N managers on one PostgreSQL database and one Redis database (those of
``scripts/test-services.sh``, started with it when they do not answer; ADR 0014) on ports 8091, 8092, ...
There is no load balancer in front: the agent, the app proxy, the webserver and the env files list every manager,
and each fails over to the next when one cannot be reached (client-side failover). The state directory remembers
its shape (``manager.toml`` and ``manager-2.toml``...; ``db-url`` and ``redis-url``).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from ai.backend.common.auth import CLUSTER_SECRET_HEADER
from ai.backend.manager.fixtures import ADMIN, USER

MANAGER_PORT = 8091
AGENT_PORT = 6011
STORAGE_CLIENT_PORT = 6021
STORAGE_MANAGER_PORT = 6022
WEB_PORT = 8090  # the webserver: cookie logins and the /func/ proxy (session mode)
APPPROXY_PORT = 10200  # the app proxy's API port (browsers open apps there, ADR 0012)
APPPROXY_RANGE = (10205, 10300)  # its circuit ports, one per open app
APPPROXY_URL = f"http://127.0.0.1:{APPPROXY_PORT}"
#: Start order (stopped in reverse): the manager needs the storage proxy, the agent the manager.
SERVICES = (
    ("storage-proxy", "ai.backend.storage.server"),
    ("manager", "ai.backend.manager.server"),
    ("appproxy", "ai.backend.appproxy.server"),
    ("agent", "ai.backend.agent.server"),
    ("webserver", "ai.backend.web.server"),
)


def _manager_names(count: int) -> list[str]:
    """``manager``, ``manager-2``, ... (their configs, pid files and logs)."""
    return ["manager"] + [f"manager-{i}" for i in range(2, count + 1)]


def _manager_count(state: Path) -> int:
    """How many managers the state directory was set up with."""
    n = 1
    while (state / f"manager-{n + 1}.toml").exists():
        n += 1
    return n


def _manager_urls(count: int) -> list[str]:
    return [f"http://127.0.0.1:{MANAGER_PORT + i}" for i in range(count)]


def _services(count: int) -> list[tuple[str, str]]:
    """:data:`SERVICES` with ``count`` managers."""
    out: list[tuple[str, str]] = []
    for name, module in SERVICES:
        out += [(m, module) for m in _manager_names(count)] if name == "manager" else [(name, module)]
    return out


def _state_dir(arg: str | None) -> Path:
    return Path(arg or os.environ.get("BACKENDAI_HOME") or ".backend.ai").resolve()


def _write_configs(state: Path, *, managers: int = 1, db_url: str = "", redis_url: str = "") -> str:
    """Write manager.toml/agent.toml once (with ``db_url`` and ``redis_url`` when given: several managers) and
    manager-2.toml... for ``managers`` > 1; returns the cluster secret (kept across runs)."""
    state.mkdir(parents=True, exist_ok=True)
    secret_file = state / "cluster-secret"
    if not secret_file.exists():
        secret_file.write_text(secrets.token_urlsafe(32))
        secret_file.chmod(0o600)
    secret = secret_file.read_text().strip()
    mgr = state / "manager.toml"
    if not mgr.exists():
        mgr.write_text(
            "[manager]\n"
            f'service-addr-host = "127.0.0.1"\nservice-addr-port = {MANAGER_PORT}\n'
            f'cluster-secret = "{secret}"\nstate-dir = "{state}"\n\n'
            f'[db]\nurl = "{db_url or f"sqlite+aiosqlite:///{state}/manager.db"}"\n'
            + (f'\n[redis]\nurl = "{redis_url}"\n' if redis_url else "")
        )
    storage_secret = _secret(state / "storage-secret")
    sp = state / "storage-proxy.toml"
    if not sp.exists():
        sp.write_text(
            "[storage-proxy]\n"
            f'node-id = "local"\nsecret = "{_secret(state / "storage-token-secret")}"\n'
            'session-expire = "1h"\n\n'
            f'[api.client]\nservice-addr = {{ host = "127.0.0.1", port = {STORAGE_CLIENT_PORT} }}\n\n'
            f'[api.manager]\nservice-addr = {{ host = "127.0.0.1", port = {STORAGE_MANAGER_PORT} }}\n'
            f'secret = "{storage_secret}"\n\n'
            f'[volume.volume1]\nbackend = "vfs"\npath = "{state}/vfroot/volume1"\n'
            # Folder quotas hold for writes from sessions only with an image per folder, which needs root.
            + ("options = { quota-images = true }\n" if os.geteuid() == 0 else "")
        )
    if "[storage-proxies." not in mgr.read_text():
        # State directories made before virtual folders existed get the proxy added.
        with mgr.open("a") as f:
            f.write(
                f'\n[storage-proxies.local]\nclient-api = "http://127.0.0.1:{STORAGE_CLIENT_PORT}"\n'
                f'manager-api = "http://127.0.0.1:{STORAGE_MANAGER_PORT}"\nsecret = "{storage_secret}"\n'
            )
    _write_appproxy_config(state, mgr, managers)
    # The other managers: the first one's configuration on the next ports (same database, Redis and secrets).
    for i, name in enumerate(_manager_names(managers)[1:], start=1):
        other = state / f"{name}.toml"
        if not other.exists():
            other.write_text(
                mgr.read_text().replace(
                    f"service-addr-port = {MANAGER_PORT}\n", f"service-addr-port = {MANAGER_PORT + i}\n", 1
                )
            )
    urls = _manager_urls(managers)
    ag = state / "agent.toml"
    if not ag.exists():
        ag.write_text(
            "[agent]\n"
            f'id = "i-local"\nrpc-listen-host = "127.0.0.1"\nrpc-listen-port = {AGENT_PORT}\n'
            f"manager-url = {json.dumps(urls if managers > 1 else urls[0])}\n"
            f'cluster-secret = "{secret}"\n'
            "heartbeat-interval = 3.0\n\n"
            f'[container]\nscratch-root = "{state}/scratches"\n'
            'scratch-size = "2g"            # each session\'s writable space (ADR 0009)\n'
        )
    web = state / "webserver.toml"
    if not web.exists():
        # Sessions in memory: one webserver, and a restart only asks its users to log in again.
        web.write_text(
            f'[service]\nhost = "127.0.0.1"\nport = {WEB_PORT}\n\n'
            f'[api]\nendpoint = {json.dumps(urls if managers > 1 else urls[0])}\ndomain = "default"\n'
        )
    return secret


def _write_appproxy_config(state: Path, mgr: Path, managers: int = 1) -> None:
    """``appproxy.toml`` (once) and the manager's ``[appproxy]`` section, sharing one secret."""
    secret = _secret(state / "appproxy-secret")
    ap = state / "appproxy.toml"
    if not ap.exists():
        ap.write_text(
            "[appproxy]\n"
            f'bind-host = "127.0.0.1"\napi-port = {APPPROXY_PORT}\n'
            f"port-range = [{APPPROXY_RANGE[0]}, {APPPROXY_RANGE[1]}]\n"
            f'secret = "{secret}"\nmanager-url = "{",".join(_manager_urls(managers))}"\n'
        )
    if not any(line.strip() == "[appproxy]" for line in mgr.read_text().splitlines()):
        # State directories made before the app proxy existed get it too.
        with mgr.open("a") as f:
            f.write(f'\n[appproxy]\nurl = "{APPPROXY_URL}"\nsecret = "{secret}"\n')


def _secret(path: Path) -> str:
    """A random secret kept in ``path`` (created on first use, readable by its owner only)."""
    if not path.exists():
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()


def _pid_alive(pidfile: Path) -> int | None:
    try:
        pid = int(pidfile.read_text())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def _spawn(state: Path, name: str, module: str, config: Path) -> None:
    pidfile = state / f"{name}.pid"
    if _pid_alive(pidfile):
        print(f"∙ {name} is already running (pid {pidfile.read_text().strip()})", file=sys.stderr)
        return
    logdir = state / "logs"
    logdir.mkdir(exist_ok=True)
    log = open(logdir / f"{name}.log", "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", module, "-f", str(config)],
        stdout=log,
        stderr=log,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    pidfile.write_text(str(proc.pid))
    print(f"∙ started {name} (pid {proc.pid}, log {logdir / f'{name}.log'})", file=sys.stderr)


def _status(secret: str, port: int = MANAGER_PORT) -> dict[str, Any] | None:
    url = f"http://127.0.0.1:{port}/internal/status"
    req = urllib.request.Request(url, headers={CLUSTER_SECRET_HEADER: secret})
    try:
        with urllib.request.urlopen(req, timeout=2) as resp:
            data: dict[str, Any] = json.load(resp)
            return data
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _web_answers() -> bool:
    """Whether the webserver answers its version probe (which it relays from the manager)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{WEB_PORT}/func/", timeout=2):
            return True
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _appproxy_answers() -> bool:
    """Whether the app proxy answers its status call."""
    try:
        with urllib.request.urlopen(f"{APPPROXY_URL}/v2/status", timeout=2):
            return True
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _write_env_files(where: Path, managers: int = 1) -> None:
    # Several managers: the SDK and CLI fail over between them (client-side; there is no load balancer).
    endpoint = ",".join(_manager_urls(managers))
    for fname, spec in (("env-local-admin-api.sh", ADMIN), ("env-local-user-api.sh", USER)):
        (where / fname).write_text(
            f"# Source this file to use the local cluster as {spec['email']}.\n"
            f"export BACKEND_ENDPOINT={endpoint}\nexport BACKEND_ENDPOINT_TYPE=api\n"
            f"export BACKEND_ACCESS_KEY={spec['access_key']}\nexport BACKEND_SECRET_KEY={spec['secret_key']}\n"
        )
    (where / "env-local-user-session.sh").write_text(
        f"# Source this file to use the local cluster through the webserver, then run `backend.ai login`\n"
        f"# ({USER['email']} / {USER['password']}).\n"
        f"export BACKEND_ENDPOINT=http://127.0.0.1:{WEB_PORT}\nexport BACKEND_ENDPOINT_TYPE=session\n"
        "unset BACKEND_ACCESS_KEY BACKEND_SECRET_KEY\n"
    )


def _shape(state: Path, managers: int | None, db: str | None) -> tuple[int, str, str, str] | str:
    """``(managers, db kind, db url, redis url)`` for ``up``, or why not: a state directory keeps the shape it
    was first set up with (``None`` arguments: that shape)."""
    mgr = state / "manager.toml"
    if mgr.exists():
        have_db = "postgresql" if "postgresql" in mgr.read_text() else "sqlite"
        have = _manager_count(state)
        if (db or have_db) != have_db or (managers or have) != have:
            return (
                f"{state} holds a cluster of {have} manager(s) on {have_db}; run `backend.ai server down` and use "
                "another --state-dir for another shape"
            )
        urls = [(state / f).read_text().strip() if (state / f).exists() else "" for f in ("db-url", "redis-url")]
        return have, have_db, urls[0], urls[1]
    kind, count = db or "sqlite", managers or 1
    if kind == "sqlite" and count > 1:
        return "several managers need PostgreSQL and Redis: add --db postgresql (SQLite allows one manager)"
    if kind == "sqlite":
        return count, kind, "", ""
    try:
        db_url, redis_url = _prepare_postgresql(state)
    except RuntimeError as e:
        return str(e)
    return count, kind, db_url, redis_url


def _prepare_postgresql(state: Path) -> tuple[str, str]:
    """A PostgreSQL database and a Redis database for this state directory, on the servers of
    ``scripts/test-services.env`` (``BACKENDAI_TEST_PG``/``BACKENDAI_TEST_REDIS`` override it); when they do not
    answer, ``scripts/test-services.sh`` starts them (Debian packages, loopback only)."""
    import asyncio

    from ai.backend.testutils import databases as dbs

    if not (dbs.pg_available() and dbs.redis_available()):
        script = dbs.REPO / "scripts" / "test-services.sh"
        if not script.exists():
            raise RuntimeError("PostgreSQL or Redis does not answer; set BACKENDAI_TEST_PG and BACKENDAI_TEST_REDIS")
        print(f"∙ starting PostgreSQL and Redis with {script}", file=sys.stderr)
        if subprocess.run(["bash", str(script)]).returncode != 0:
            raise RuntimeError(f"{script} failed: PostgreSQL and Redis could not be started")
    name = "backendai_" + secrets.token_hex(4)

    async def create() -> str:
        conn = await dbs._pg_connect()
        try:
            await conn.execute(f"CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'UTF8'")
        finally:
            await conn.close()
        return dbs._sqlalchemy_url(name)

    async def claim_redis() -> str:
        # A database number of its own, claimed for good (the tests' claims expire, this one must not).
        import redis.asyncio as aioredis

        r: Any = aioredis.Redis.from_url(dbs._redis_url(0), socket_connect_timeout=5)
        try:
            count = int((await r.config_get("databases")).get("databases") or 16)
            for n in range(count - 1, 0, -1):
                if await r.set(f"{dbs.CLAIM_PREFIX}{n}", f"allinone:{state}", nx=True):
                    return dbs._redis_url(n)
        finally:
            await r.aclose()
        raise RuntimeError("every Redis database is claimed")

    db_url = asyncio.run(create())
    redis_url = asyncio.run(claim_redis())
    state.mkdir(parents=True, exist_ok=True)
    for fname, value in (("db-url", db_url), ("redis-url", redis_url)):
        (state / fname).write_text(value + "\n")
    return db_url, redis_url


def up(state: Path, env_dir: Path, timeout: float, *, managers: int | None = None, db: str | None = None) -> int:
    """Start the cluster (or reuse the running one) and wait until it can run a session; ``managers`` and
    ``db`` choose the shape of a new state directory (several managers need ``db="postgresql"``)."""
    shape = _shape(state, managers, db)
    if isinstance(shape, str):
        print(f"✘ {shape}", file=sys.stderr)
        return 1
    count, _kind, db_url, redis_url = shape
    secret = _write_configs(state, managers=count, db_url=db_url, redis_url=redis_url)
    from ai.backend.manager.cli import main as mgr

    for args in (["schema", "oneshot"], ["fixture", "populate"]):
        try:
            mgr(["-f", str(state / "manager.toml"), *args], standalone_mode=False)
        except Exception as e:  # noqa: BLE001 - report one line, not a traceback
            print(f"✘ manager {' '.join(args)} failed: {e}", file=sys.stderr)
            return 1
    services = _services(count)
    for name, module in services:
        _spawn(state, name, module, state / f"{name}.toml")
    _write_env_files(env_dir, count)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = _status(secret)
        others = all(_status(secret, MANAGER_PORT + i) for i in range(1, count))
        if (
            st
            and others
            and st.get("agents_alive")
            and st.get("image_aliases")
            and _web_answers()
            and _appproxy_answers()
        ):
            print(
                f"✔ The cluster is up at {', '.join(_manager_urls(count))} "
                f"(images: {', '.join(map(str, st['image_aliases']))}).",
                file=sys.stderr,
            )
            if count > 1:
                print(
                    f"∙ {count} managers on PostgreSQL and Redis, no load balancer: clients, the agent, the webserver "
                    "and the app proxy fail over between them (backend.ai admin cluster status shows the leader).",
                    file=sys.stderr,
                )
            print(
                f"∙ source {env_dir / 'env-local-user-api.sh'} (or env-local-admin-api.sh) to use it.", file=sys.stderr
            )
            print(
                f"∙ The web console is at http://127.0.0.1:{WEB_PORT}/ (log in as {USER['email']} / "
                f"{USER['password']}, or {ADMIN['email']} / {ADMIN['password']} for the admin pages).",
                file=sys.stderr,
            )
            print(
                f"∙ The webserver is at http://127.0.0.1:{WEB_PORT} (session mode: source "
                f"{env_dir / 'env-local-user-session.sh'}, then backend.ai login).",
                file=sys.stderr,
            )
            print(f"∙ The app proxy is at {APPPROXY_URL} (apps open in the browser from there).", file=sys.stderr)
            return 0
        for name, _ in services:
            if not _pid_alive(state / f"{name}.pid"):
                tail = (state / "logs" / f"{name}.log").read_text(errors="replace").splitlines()[-15:]
                print(f"✘ the {name} exited during start-up; last log lines:\n" + "\n".join(tail), file=sys.stderr)
                return 1
        time.sleep(0.3)
    print(
        f"✘ the cluster did not become ready in time: no agent or no kernel image registered (see {state / 'logs'}).",
        file=sys.stderr,
    )
    return 1


def down(state: Path) -> int:
    """Stop the webserver, the agent, the app proxy, the manager and the storage proxy (kernel containers keep
    running and are re-attached on ``up``)."""
    for name, _ in reversed(_services(_manager_count(state))):
        pidfile = state / f"{name}.pid"
        pid = _pid_alive(pidfile)
        if pid is None:
            pidfile.unlink(missing_ok=True)
            continue
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            if not _pid_alive(pidfile):
                break
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)
        pidfile.unlink(missing_ok=True)
        print(f"✔ stopped {name} (pid {pid})", file=sys.stderr)
    return 0


def status(state: Path) -> int:
    """Print whether the processes run and what the manager reports; exit 0 only if all is up."""
    ok = True
    count = _manager_count(state)
    for name, _ in _services(count):
        pid = _pid_alive(state / f"{name}.pid")
        ok &= pid is not None
        print(f"{name}: {f'running (pid {pid})' if pid else 'stopped'}")
    secret_file = state / "cluster-secret"
    secret = secret_file.read_text().strip() if secret_file.exists() else None
    st = None
    for i, url in enumerate(_manager_urls(count)):
        answer = _status(secret, MANAGER_PORT + i) if secret else None
        st = st or answer
        print(f"endpoint: {url} ({'ready' if answer else 'not answering'})")
    web_ok = _web_answers()
    ok &= web_ok
    print(f"webserver: http://127.0.0.1:{WEB_PORT} ({'ready' if web_ok else 'not answering'}; the web console is at /)")
    proxy_ok = _appproxy_answers()
    ok &= proxy_ok
    print(f"app proxy: {APPPROXY_URL} ({'ready' if proxy_ok else 'not answering'})")
    if st:
        print(f"agents alive: {st['agents_alive']}; images: {', '.join(map(str, st['image_aliases']))}")
    return 0 if ok and st else 1


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="backend.ai server", description="The all-in-one local cluster.")
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--state-dir", default=None, help="where state lives (default ./.backend.ai)")
    parser.add_argument("--env-dir", default=".", help="where env-local-*.sh are written (default .)")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument(
        "--managers",
        type=int,
        default=None,
        metavar="N",
        help="up: how many managers (default 1; several need --db postgresql)",
    )
    parser.add_argument(
        "--db",
        choices=["sqlite", "postgresql"],
        default=None,
        help="up: the database of a new state directory (postgresql: with Redis, from scripts/test-services.sh)",
    )
    args = parser.parse_args(argv)
    if args.managers is not None and not 1 <= args.managers <= 9:
        parser.error("--managers must be between 1 and 9")
    state = _state_dir(args.state_dir)
    if args.command == "up":
        sys.exit(up(state, Path(args.env_dir).resolve(), args.timeout, managers=args.managers, db=args.db))
    elif args.command == "down":
        sys.exit(down(state))
    else:
        sys.exit(status(state))
