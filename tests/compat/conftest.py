"""Fixtures of the compatibility suite: the unmodified official clients against a real cluster.

* ``clients``: the two official client virtualenvs (``scripts/official-clients.sh``, cached outside the
  checkout), as :class:`OfficialClients`.
* ``cluster``: one real cluster (manager + Docker agent + storage proxy, SQLite) for the whole suite.
* ``cli22`` / ``cli19``: run a command of the official 22.03 / 19.09 ``backend.ai`` CLI.
* ``sdk22`` / ``sdk19``: run a Python snippet with the official 22.03 / 19.09 SDK; whatever it prints
  last as JSON comes back decoded.
* ``user2``: a second normal user (for invitations and shares), created once.
* ``gql``: a GraphQL call of our own (signed with the test client) to prepare or check state.

Each CLI call returns a :class:`Run` with ``rc``, ``out`` (stdout + stderr) and helpers. The 22.03 CLI
exits 0 after many failures, so tests check the output, not only the exit code.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ai.backend.manager.fixtures import ADMIN, USER
from ai.backend.testutils.cluster import REPO, Cluster, docker_available, launch_cluster

VOLUME = "local:volume1"  # the storage host of the test cluster
Who = dict[str, Any]


@dataclass
class Run:
    """One finished command of an official client."""

    args: list[str]
    rc: int
    stdout: str
    stderr: str

    @property
    def out(self) -> str:
        return self.stdout + self.stderr

    def ok(self) -> Run:
        """Assert a clean run: exit 0 and no traceback or error line; returns self for chaining."""
        bad = ("Traceback", "Error:", "error:", "KeyError", "TypeError")
        assert self.rc == 0 and not any(b in self.out for b in bad), self.describe()
        return self

    def json(self) -> Any:
        """stdout decoded as JSON (``--output json`` commands)."""
        try:
            return json.loads(self.stdout)
        except json.JSONDecodeError:
            raise AssertionError("not JSON:\n" + self.describe()) from None

    def describe(self) -> str:
        return (
            f"$ backend.ai {' '.join(self.args)}\n(exit {self.rc})\n--- stdout\n{self.stdout}\n"
            f"--- stderr\n{self.stderr}"
        )


@dataclass
class OfficialClients:
    root: Path

    def python(self, version: str) -> str:
        return str(self.root / version / "bin" / "python")

    def cli(self, version: str) -> str:
        return str(self.root / version / "bin" / "backend.ai")


@pytest.fixture(scope="session")
def clients() -> OfficialClients:
    out = subprocess.run(["bash", str(REPO / "scripts" / "official-clients.sh")], capture_output=True, text=True)
    if out.returncode != 0:
        pytest.fail("installing the official clients failed:\n" + out.stderr[-3000:], pytrace=False)
    return OfficialClients(Path(out.stdout.strip().splitlines()[-1]))


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if not docker_available():
        pytest.fail("Docker engine or the python kernel image is missing: run scripts/setup.sh first")
    # Room for the module-scoped sessions of several modules at once (declared capacity, not real cores).
    c = launch_cluster(tmp_path_factory.mktemp("compat-cluster"), cpu=8, mem="8g")
    try:
        yield c
    finally:
        c.shutdown()


@pytest.fixture(scope="session")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A HOME of their own for the clients (they keep caches and cookies there)."""
    return tmp_path_factory.mktemp("compat-home")


def client_env(cluster: Cluster, who: Who, home: Path) -> dict[str, str]:
    """The environment an official client runs with: the BACKEND_* variables of ``who``, its own HOME."""
    env = cluster.env(who)
    env.update(
        HOME=str(home),
        PYTHONWARNINGS="ignore",
        COLUMNS="200",
        LANG="C.UTF-8",
        LC_ALL="C.UTF-8",
        NO_COLOR="1",
        TERM="dumb",
    )
    env.pop("PYTHONPATH", None)
    return env


CLI = Callable[..., Run]


def _runner(clients: OfficialClients, cluster: Cluster, home: Path, version: str) -> CLI:
    def run(
        *args: str,
        who: Who = USER,
        input: str | None = None,
        timeout: float = 90,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> Run:
        e = client_env(cluster, who, home)
        e.update(env or {})
        try:
            p = subprocess.run(
                [clients.cli(version), *args],
                input=input,
                capture_output=True,
                text=True,
                timeout=timeout,
                cwd=cwd or home,
                env=e,
            )
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(
                f"`backend.ai {' '.join(args)}` ({version}) did not end within {timeout} s:\n"
                f"{exc.stdout!r}\n{exc.stderr!r}"
            ) from None
        return Run(list(args), p.returncode, p.stdout, p.stderr)

    return run


@pytest.fixture(scope="session")
def cli22(clients: OfficialClients, cluster: Cluster, home: Path) -> CLI:
    return _runner(clients, cluster, home, "22.03")


@pytest.fixture(scope="session")
def cli19(clients: OfficialClients, cluster: Cluster, home: Path) -> CLI:
    return _runner(clients, cluster, home, "19.09")


SDK = Callable[..., Any]

_SDK_PRELUDE = """\
import json, sys
def emit(value):
    sys.stdout.write("\\n@@RESULT@@" + json.dumps(value, default=str) + "\\n")
"""


def _sdk(clients: OfficialClients, cluster: Cluster, home: Path, version: str) -> SDK:
    def run(code: str, who: Who = USER, timeout: float = 120, cwd: Path | None = None, check: bool = True) -> Any:
        """Run ``code`` (which calls ``emit(value)`` to hand back a JSON-able value) with the official SDK;
        with ``check`` a non-zero exit fails the test, else ``(rc, output, value)`` comes back."""
        p = subprocess.run(
            [clients.python(version), "-c", _SDK_PRELUDE + code],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=cwd or home,
            env=client_env(cluster, who, home),
        )
        value = None
        for line in p.stdout.splitlines():
            if line.startswith("@@RESULT@@"):
                value = json.loads(line[len("@@RESULT@@") :])
        if check:
            assert p.returncode == 0, (
                f"SDK snippet ({version}) failed ({p.returncode}):\n{code}\n{p.stdout}\n{p.stderr}"
            )
            return value
        return p.returncode, p.stdout + p.stderr, value

    return run


@pytest.fixture(scope="session")
def sdk22(clients: OfficialClients, cluster: Cluster, home: Path) -> SDK:
    return _sdk(clients, cluster, home, "22.03")


@pytest.fixture(scope="session")
def sdk19(clients: OfficialClients, cluster: Cluster, home: Path) -> SDK:
    return _sdk(clients, cluster, home, "19.09")


GQL = Callable[..., Any]


@pytest.fixture(scope="session")
def gql(cluster: Cluster) -> GQL:
    def call(query: str, variables: dict[str, Any] | None = None, who: Who = ADMIN) -> Any:
        """The ``data`` of a GraphQL call of our own (standard envelope); errors fail the test."""
        r = cluster.request("POST", "/admin/gql", {"query": query, "variables": variables or {}}, who=who)
        body = r.json()
        assert r.status_code == 200 and not body.get("errors"), f"GraphQL failed ({r.status_code}): {body}"
        return body["data"]

    return call


@pytest.fixture(scope="session")
def user2(gql: GQL) -> Who:
    """A second normal user in the default domain and project, with a keypair."""
    email = f"compat-user2-{uuid.uuid4().hex[:6]}@example.org"
    password = "compat-pass-2"
    data = gql(
        "mutation($email: String!, $props: UserInput!) { create_user(email: $email, props: $props) "
        "{ ok msg user { uuid } } }",
        {
            "email": email,
            "props": {
                "username": email.split("@")[0],
                "password": password,
                "need_password_change": False,
                "full_name": "Compat User Two",
                "domain_name": "default",
                "role": "user",
                "status": "active",
                "group_ids": [str(_default_group_id())],
            },
        },
    )
    assert data["create_user"]["ok"], data
    keys = gql("query($email: String) { keypairs(email: $email) { access_key secret_key } }", {"email": email})
    kp = keys["keypairs"][0]
    return {
        "email": email,
        "password": password,
        "access_key": kp["access_key"],
        "secret_key": kp["secret_key"],
        "uuid": data["create_user"]["user"]["uuid"],
        "role": "user",
        "is_admin": False,
    }


def _default_group_id() -> uuid.UUID:
    from ai.backend.manager.fixtures import DEFAULT_GROUP_ID

    return DEFAULT_GROUP_ID


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A fresh directory to run a client in (uploads are read from it, downloads land in it)."""
    return tmp_path


def unique(prefix: str) -> str:
    """A name no other test uses (sessions, folders, accounts)."""
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


os.environ.setdefault("BACKEND_COMPAT_SUITE", "1")
