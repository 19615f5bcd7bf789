"""Virtual folders mounted into sessions (real storage proxy, manager, agent and containers)."""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from .conftest import ADMIN, USER, Cluster

pytestmark = pytest.mark.docker


def _folder(cluster: Cluster, name: str, who: dict[str, Any] = USER, **extra: Any) -> dict[str, Any]:
    r = cluster.request("POST", "/folders", {"name": name, **extra}, who=who)
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def _run(cluster: Cluster, sess: str, code: str, who: dict[str, Any] = USER) -> str:
    r = cluster.request("POST", f"/session/{sess}", {"mode": "query", "code": code}, who=who)
    assert r.status_code == 200, r.text
    result = r.json()["result"]
    assert result["status"] == "finished", result
    return "".join(item[1] for item in result["console"])


def _files(cluster: Cluster, folder: str, path: str = ".", who: dict[str, Any] = USER) -> list[str]:
    r = cluster.request("GET", f"/folders/{folder}/files?path={path}", who=who)
    assert r.status_code == 200, r.text
    files = r.json()["files"]
    import json

    items = json.loads(files) if isinstance(files, str) else files
    return sorted(i["filename"] if "filename" in i else i["name"] for i in items)


def test_data_written_in_a_session_stays_in_the_folder(cluster: Cluster) -> None:
    name = f"data-{secrets.token_hex(3)}"
    _folder(cluster, name)
    sess = f"mnt-{secrets.token_hex(3)}"
    r = cluster.request("POST", "/session", {"image": "python", "name": sess, "config": {"mounts": [name]}})
    assert r.status_code == 201 and r.json()["status"] == "RUNNING", r.text
    out = _run(
        cluster,
        sess,
        f"import os\nopen('/home/work/{name}/result.txt', 'w').write('42')\n"
        f"os.makedirs('/home/work/{name}/sub', exist_ok=True)\n"
        f"print(os.stat('/home/work/{name}/result.txt').st_uid)",
    )
    assert out == "1000\n"
    # Deleting a mounted folder is refused while the session runs.
    busy = cluster.request("DELETE", f"/folders/{name}")
    assert busy.status_code == 409, busy.text
    assert cluster.request("DELETE", f"/session/{sess}").status_code == 200
    assert _files(cluster, name) == ["result.txt", "sub"]
    # A second session sees the data.
    sess2 = f"mnt-{secrets.token_hex(3)}"
    r = cluster.request(
        "POST",
        "/session",
        {"image": "python", "name": sess2, "config": {"mounts": [name], "mount_map": {name: "/data/in"}}},
    )
    assert r.status_code == 201, r.text
    assert _run(cluster, sess2, "print(open('/data/in/result.txt').read())") == "42\n"
    assert cluster.request("DELETE", f"/session/{sess2}").status_code == 200
    assert cluster.request("DELETE", f"/folders/{name}").status_code in (200, 204)


def test_read_only_mounts_and_dot_folders(cluster: Cluster) -> None:
    name = f"ro-{secrets.token_hex(3)}"
    dot = f".dot{secrets.token_hex(2)}"
    _folder(cluster, name)
    _folder(cluster, dot)
    sess = f"mnt-{secrets.token_hex(3)}"
    r = cluster.request(
        "POST",
        "/session",
        {"image": "python", "name": sess, "config": {"mounts": [name], "mount_options": {name: {"permission": "ro"}}}},
    )
    assert r.status_code == 201, r.text
    out = _run(
        cluster,
        sess,
        f"try:\n    open('/home/work/{name}/x', 'w')\nexcept OSError as e:\n"
        f"    print(type(e).__name__)\nimport os\nprint(os.path.isdir('/home/work/{dot}'))",
    )
    assert out == "OSError\nTrue\n"
    assert cluster.request("DELETE", f"/session/{sess}").status_code == 200
    for f in (name, dot):
        assert cluster.request("DELETE", f"/folders/{f}").status_code in (200, 204)


def test_mount_refusals_create_nothing(cluster: Cluster) -> None:
    theirs = f"adm-{secrets.token_hex(3)}"
    _folder(cluster, theirs, who=ADMIN)
    mine = f"mine-{secrets.token_hex(3)}"
    _folder(cluster, mine)
    cases = [
        ({"mounts": [theirs]}, 403),
        ({"mounts": ["no-such-folder-xyz"]}, 403),
        ({"mounts": [mine], "mount_map": {mine: "/etc"}}, 400),
        ({"mounts": [mine], "mount_map": {mine: "../../root"}}, 400),
        ({"mounts": [mine], "mount_options": {mine: {"permission": "admin"}}}, 400),
        ({"mounts": "mine"}, 400),
    ]
    for i, (config, status) in enumerate(cases):
        sess = f"refused-{i}-{secrets.token_hex(2)}"
        r = cluster.request("POST", "/session", {"image": "python", "name": sess, "config": config})
        assert r.status_code == status, (config, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        assert cluster.request("GET", f"/session/{sess}").status_code == 404
    assert cluster.request("DELETE", f"/folders/{mine}").status_code in (200, 204)
    assert cluster.request("DELETE", f"/folders/{theirs}", who=ADMIN).status_code in (200, 204)


def test_keypair_vfolders_lists_the_owners_folders(cluster: Cluster) -> None:
    name = f"kpv-{secrets.token_hex(3)}"
    _folder(cluster, name)
    q = "query($a: String) { keypair(access_key: $a) { access_key vfolders { name host ownership_type } } }"
    r = cluster.request("POST", "/admin/gql", {"query": q, "variables": {"a": USER["access_key"]}})
    assert r.status_code == 200, r.text
    folders = {f["name"]: f for f in r.json()["data"]["keypair"]["vfolders"]}
    assert folders[name] == {"name": name, "host": "local:volume1", "ownership_type": "user"}
    r = cluster.request("POST", "/admin/gql", {"query": q, "variables": {"a": ADMIN["access_key"]}}, who=ADMIN)
    assert name not in {f["name"] for f in r.json()["data"]["keypair"]["vfolders"]}
    assert cluster.request("DELETE", f"/folders/{name}").status_code in (200, 204)
