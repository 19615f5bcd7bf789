"""The official 22.03 client in session mode (``BACKEND_ENDPOINT_TYPE=session``) through our webserver:
``login``, ``run``, ``vfolder upload``, ``update-password``, ``logout``, and the SDK's ``Auth.login``/``logout``.

The 22.03 client keeps its cookie in ``~/.local/state/backend.ai/cookie.dat`` (appdirs' user state dir) under
the suite's own HOME, sends no signature, and prefixes every path but ``/server/...`` with ``/func/``.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ai.backend.manager.fixtures import USER
from ai.backend.testutils.cluster import Cluster
from ai.backend.testutils.web import WebServer, launch_webserver

from .conftest import CLI, OfficialClients, Run, Who, client_env, unique

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def web(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    w = launch_webserver(tmp_path_factory.mktemp("web22"), cluster.endpoint)
    try:
        yield w
    finally:
        w.shutdown()


def _session_env(web: WebServer) -> dict[str, str]:
    # No keys: in session mode the cookie is the only credential.
    return {**web.env(), "BACKEND_ACCESS_KEY": "", "BACKEND_SECRET_KEY": ""}


def _cookie_file(home: Path) -> Path:
    return home / ".local" / "state" / "backend.ai" / "cookie.dat"


def _login(cli22: CLI, web: WebServer, who: Who) -> Run:
    return cli22("login", input=f"{who['email']}\n{who['password']}\n", env=_session_env(web))


def test_login_run_upload_logout(cli22: CLI, web: WebServer, home: Path, workdir: Path, cluster: Cluster) -> None:
    env = _session_env(web)
    bad = cli22("login", input=f"{USER['email']}\nwrong-password\n", env=env)
    # A 401 (as the project answers bad input); this client prints it as an error line (and exits 0).
    assert "401" in bad.out and "Wrong" in bad.out, bad.describe()
    ok = _login(cli22, web, USER)
    assert ok.rc == 0 and "Login succeeded." in ok.out, ok.describe()
    assert _cookie_file(home).exists()

    run = cli22("run", "--rm", "python", "-c", "print(6*7)", env=env, timeout=180)
    assert run.rc == 0 and "42" in run.stdout, run.describe()

    folder = unique("web22")
    cli22("vfolder", "create", folder, "local:volume1", env=env).ok()
    (workdir / "data.csv").write_text("a,b\n1,2\n")
    up = cli22("vfolder", "upload", folder, "data.csv", cwd=workdir, env=env, timeout=120)
    assert up.rc == 0 and "Traceback" not in up.out, up.describe()
    files = cluster.request("GET", f"/folders/{folder}/files?path=.", who=USER)
    assert files.status_code == 200, files.text
    listed = files.json()["files"]
    names = {f["filename"] for f in (json.loads(listed) if isinstance(listed, str) else listed)}
    assert "data.csv" in names, files.text
    cli22("vfolder", "delete", folder, env=env).ok()

    out = cli22("logout", env=env)
    assert out.rc == 0 and "Logout done." in out.out, out.describe()
    assert not _cookie_file(home).exists()
    after = cli22("ps", env=env)
    assert "401" in after.out and "not logged in" in after.out, after.describe()


def test_update_password(cli22: CLI, web: WebServer, user2: Who) -> None:
    env = _session_env(web)
    _login(cli22, web, user2).ok()
    new = "compat-New-22"
    try:
        cli22("update-password", user2["password"], new, new, env=env).ok()
        assert (
            "Password updated." in cli22("update-password", new, user2["password"], user2["password"], env=env).ok().out
        )
    finally:
        cli22("logout", env=env)
    # The password is back to the original: a fresh login with it works.
    r = httpx.post(
        web.url + "/server/login",
        json={"username": user2["email"], "password": user2["password"]},
        headers={"X-BackendAI-Version": "v6.20220615"},
    )
    assert r.status_code == 200, r.text


def test_sdk_login_logout(clients: OfficialClients, cluster: Cluster, web: WebServer, home: Path) -> None:
    code = (
        "import json\nfrom ai.backend.client.session import Session\n"
        "with Session() as s:\n"
        f"    r = s.Auth.login({USER['email']!r}, {USER['password']!r})\n"
        "    s.aiohttp_session.cookie_jar.update_cookies(r['cookies'])\n"
        "    folders = s.VFolder.list()\n"
        "    print(json.dumps({'authenticated': r['authenticated'], 'data': r['data'],\n"
        "                      'folders': isinstance(folders, list)}))\n"
        "    s.Auth.logout()\n"
    )
    env = client_env(cluster, USER, home)
    env.update(_session_env(web))
    p = subprocess.run(
        [clients.python("22.03"), "-c", code], capture_output=True, text=True, env=env, timeout=120, cwd=home
    )
    assert p.returncode == 0, p.stdout + p.stderr
    result: dict[str, Any] = json.loads(p.stdout.strip().splitlines()[-1])
    assert result["authenticated"] is True and result["data"]["role"] == "user" and result["folders"], result
    assert USER["secret_key"] not in p.stdout and USER["access_key"] not in p.stdout
