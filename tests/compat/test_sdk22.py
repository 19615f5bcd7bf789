"""The official 22.03 SDK (``backend.ai-client==22.3.2``) against a real cluster.

One test per row marked OK or FAIL in section "2. 22.03 SDK" of the compatibility matrix
(``/work/shared/compat/official-client-matrix.md``). FAIL rows are written for the correct behaviour
(the root cause named in each docstring is being fixed on the server). Each snippet runs in the client's
own virtualenv; state is checked through our own API (``cluster.request`` / ``gql``).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ai.backend.manager.fixtures import ADMIN, DEFAULT_GROUP_ID, USER
from ai.backend.testutils.cluster import Cluster

from .conftest import GQL, SDK, VOLUME, Who, unique
from .helpers import (
    RES,
    create_domain,
    create_group,
    delete_domain,
    delete_group,
    delete_user,
    delete_vfolder,
    destroy,
    gone,
    make_user,
    session_status,
    snippet,
    vf_names,
    vfolders,
    wait_status,
)


@pytest.fixture(scope="module")
def sess(sdk22: SDK, cluster: Cluster) -> Iterator[dict[str, Any]]:
    """One interactive session for the read-mostly calls, created with the SDK's ``get_or_create``."""
    name = unique("cs-sdk")
    got = sdk22(
        snippet(
            """
        with Session() as s:
            cs = s.ComputeSession.get_or_create('python', name=NAME, resources=RES, envs={'A': '1'}, tag='cs')
            emit({'id': str(cs.id), 'created': cs.created, 'status': cs.status, 'name': cs.name})
    """,
            NAME=name,
            RES=RES,
        )
    )
    yield {**got, "name": name}
    destroy(cluster, got["id"])


@pytest.fixture(scope="module")
def batch(sdk22: SDK, cluster: Cluster) -> Iterator[dict[str, Any]]:
    """A batch session that prints 42, created with the SDK and waited for until it ends."""
    name = unique("cs-sdkb")
    got = sdk22(
        snippet(
            """
        with Session() as s:
            cs = s.ComputeSession.get_or_create('python', name=NAME, type_='batch', resources=RES,
                                                startup_command='python3 -c "print(6*7)"')
            emit({'id': str(cs.id), 'status': cs.status})
    """,
            NAME=name,
            RES=RES,
        )
    )
    wait_status(cluster, got["id"], lambda st: st is None or st in ("TERMINATED", "ERROR", "CANCELLED"))
    yield {**got, "name": name}
    destroy(cluster, got["id"])


# --- sessions -------------------------------------------------------------------------------------------------


def test_hello_and_versions(sdk22: SDK) -> None:
    got = sdk22(
        snippet("""
        with Session() as s:
            emit({'hello': s.ComputeSession.hello(), 'versions': s.System.get_versions(),
                  'manager': s.System.get_manager_version(), 'api': s.System.get_api_version()})
    """)
    )
    assert got["hello"]["version"].startswith("v6.")
    assert got["versions"]["version"] == got["hello"]["version"]
    assert got["manager"] and got["manager"] == got["hello"]["manager"]
    assert got["api"] == got["hello"]["version"]


def test_get_or_create(sess: dict[str, Any], cluster: Cluster, sdk22: SDK) -> None:
    assert sess["created"] is True and sess["status"] == "RUNNING"
    assert uuid.UUID(sess["id"])
    r = cluster.request("GET", f"/session/{sess['name']}")
    assert r.status_code == 200 and r.json()["status"] == "RUNNING", r.text
    out = sdk22(
        snippet(
            """
        with Session() as s:
            emit(s.ComputeSession(NAME).execute(code="import os; print(os.environ['A'])"))
    """,
            NAME=sess["name"],
        )
    )
    assert out["console"] == [["stdout", "1\n"]]
    data = gql_session(cluster, sess["id"])
    assert data["tag"] == "cs" and data["name"] == sess["name"]


def gql_session(cluster: Cluster, sid: str) -> dict[str, Any]:
    r = cluster.request(
        "POST",
        "/admin/gql",
        {
            "query": "query($id: UUID!) { compute_session(id: $id) { id name tag status type } }",
            "variables": {"id": sid},
        },
    )
    assert r.status_code == 200, r.text
    return dict(r.json()["data"]["compute_session"])


def test_get_or_create_again_reuses(sess: dict[str, Any], sdk22: SDK) -> None:
    got = sdk22(
        snippet(
            """
        with Session() as s:
            cs = s.ComputeSession.get_or_create('python', name=NAME, resources=RES)
            emit({'id': str(cs.id), 'created': cs.created, 'status': cs.status})
    """,
            NAME=sess["name"],
            RES=RES,
        )
    )
    assert got == {"id": sess["id"], "created": False, "status": "RUNNING"}


def test_execute(sess: dict[str, Any], sdk22: SDK) -> None:
    got = sdk22(
        snippet(
            """
        with Session() as s:
            emit(s.ComputeSession(NAME).execute(code='print(1+1)'))
    """,
            NAME=sess["name"],
        )
    )
    assert got["status"] == "finished" and got["console"] == [["stdout", "2\n"]]


def test_execute_batch_and_continue(sess: dict[str, Any], sdk22: SDK) -> None:
    got = sdk22(
        snippet(
            """
        with Session() as s:
            cs = s.ComputeSession(NAME)
            run_id = os.urandom(8).hex()
            r = cs.execute(run_id, code='', mode='batch', opts={'exec': 'python3 -c "print(6*7)"'})
            out, modes = [], ['batch']
            for _ in range(100):
                out += [c[1] for c in r['console'] if c[0] == 'stdout']
                if r['status'] == 'finished':
                    break
                r = cs.execute(run_id, code='', mode='continue')
                modes.append('continue')
            emit({'out': ''.join(out), 'status': r['status'], 'exit': r.get('exitCode')})
    """,
            NAME=sess["name"],
        )
    )
    assert got["status"] == "finished" and "42" in got["out"], got
    assert got["exit"] == 0


def test_execute_user_input(sess: dict[str, Any], sdk22: SDK) -> None:
    got = sdk22(
        snippet(
            """
        with Session() as s:
            cs = s.ComputeSession(NAME)
            run_id = os.urandom(8).hex()
            r = cs.execute(run_id, code="x = input('num? '); print(int(x) * 2)")
            seen, out = [], []
            for _ in range(100):
                seen.append(r['status'])
                out += [c[1] for c in r['console'] if c[0] == 'stdout']
                if r['status'] == 'finished':
                    break
                if r['status'] == 'waiting-input':
                    r = cs.execute(run_id, code='5', mode='input')
                else:
                    r = cs.execute(run_id, code='', mode='continue')
            emit({'seen': seen, 'out': ''.join(out)})
    """,
            NAME=sess["name"],
        )
    )
    assert "waiting-input" in got["seen"] and got["seen"][-1] == "finished", got
    assert "10" in got["out"]


def test_complete(sess: dict[str, Any], sdk22: SDK) -> None:
    got = sdk22(
        snippet(
            """
        with Session() as s:
            emit(s.ComputeSession(NAME).complete('import o'))
    """,
            NAME=sess["name"],
        )
    )
    assert isinstance(got, (dict, list)), got
    if isinstance(got, dict):
        assert "result" in got or "status" in got, got


def test_get_info_and_logs(sess: dict[str, Any], sdk22: SDK) -> None:
    got = sdk22(
        snippet(
            """
        with Session() as s:
            cs = s.ComputeSession(NAME)
            emit({'info': cs.get_info(), 'logs': cs.get_logs()})
    """,
            NAME=sess["name"],
        )
    )
    info = got["info"]
    assert info["status"] == "RUNNING", info
    assert "python" in json.dumps(info.get("image") or info.get("lang"))
    logs = got["logs"]
    assert isinstance(logs["result"]["logs"], str), logs


def test_stream_app_info(sess: dict[str, Any], sdk22: SDK) -> None:
    got = sdk22(
        snippet(
            """
        with Session() as s:
            emit(s.ComputeSession(NAME).stream_app_info())
    """,
            NAME=sess["name"],
        )
    )
    apps = {a["name"]: a for a in got}
    assert set(apps) == {"jupyter", "jupyterlab", "sshd", "ttyd"}, got
    assert apps["sshd"]["protocol"] == "tcp" and apps["sshd"]["ports"] == [2200]
    assert apps["jupyter"]["protocol"] == "http" and apps["jupyter"]["ports"] == [8090]


def test_upload_list_download(sess: dict[str, Any], sdk22: SDK, workdir: Path) -> None:
    (workdir / "up1.txt").write_text("uploaded by the 22.03 sdk\n")
    got = sdk22(
        snippet(
            """
        with Session() as s:
            cs = s.ComputeSession(NAME)
            cs.upload(['up1.txt'])
            listing = cs.list_files('.')
            dl = cs.download(['up1.txt'], dest='dl')
            emit({'files': listing['files'], 'dl': dl})
    """,
            NAME=sess["name"],
        ),
        cwd=workdir,
    )
    assert isinstance(got["files"], str)
    entries = {e["filename"]: e for e in json.loads(got["files"])}
    assert entries["up1.txt"]["size"] == len("uploaded by the 22.03 sdk\n")
    assert "up1.txt" in got["dl"]["file_names"]
    assert (workdir / "dl" / "up1.txt").read_text() == "uploaded by the 22.03 sdk\n"


def test_paginated_list(sess: dict[str, Any], sdk22: SDK) -> None:
    got = sdk22(
        snippet("""
        with Session() as s:
            r = s.ComputeSession.paginated_list('RUNNING')
            emit({'total': r.total_count, 'items': r.items})
    """)
    )
    ids = [str(i.get("session_id") or i.get("id")) for i in got["items"]]
    assert sess["id"] in ids, got
    assert all(i["status"] == "RUNNING" for i in got["items"])
    assert got["total"] >= 1


def test_stream_execute(sess: dict[str, Any], sdk22: SDK) -> None:
    got = sdk22(
        snippet(
            """
        async def main():
            async with AsyncSession() as s:
                out, last = [], None
                async with s.ComputeSession(NAME).stream_execute('print("streamed")') as ws:
                    async for msg in ws:
                        last = json.loads(msg.data)
                        out += [c[1] for c in last.get('console') or [] if c[0] == 'stdout']
                        if last.get('status') == 'finished':
                            break
                return {'out': ''.join(out), 'status': last and last.get('status')}
        emit(asyncio.run(main()))
    """,
            NAME=sess["name"],
        )
    )
    assert got == {"out": "streamed\n", "status": "finished"}


def test_stream_pty(sess: dict[str, Any], sdk22: SDK) -> None:
    got = sdk22(
        snippet(
            """
        async def main():
            async with AsyncSession() as s:
                buf = b''
                async with s.ComputeSession(NAME).stream_pty() as pty:
                    await pty.send_str(json.dumps({'type': 'resize', 'rows': 30, 'cols': 100}))
                    cmd = b'stty size; echo pty-$((6*7))\\n'
                    await pty.send_str(json.dumps({'type': 'stdin', 'chars': base64.b64encode(cmd).decode()}))
                    deadline = time.monotonic() + 30
                    while b'pty-42' not in buf and time.monotonic() < deadline:
                        msg = await asyncio.wait_for(pty.receive_str(), 30)
                        ev = json.loads(msg)
                        if ev['type'] == 'out':
                            buf += base64.b64decode(ev['data'])
                return buf.decode(errors='replace')
        emit(asyncio.run(main()))
    """,
            NAME=sess["name"],
        )
    )
    assert "pty-42" in got and "30 100" in got, got


def test_listen_events_by_name(sess: dict[str, Any], sdk22: SDK, cluster: Cluster) -> None:
    got = sdk22(
        snippet(
            """
        async def main():
            async with AsyncSession() as s:
                cs = s.ComputeSession(NAME)
                events = []
                async with cs.listen_events() as resp:
                    task = asyncio.create_task(cs.restart())
                    async def collect():
                        async for ev in resp:
                            events.append([ev.event, json.loads(ev.data)])
                            if ev.event == 'session_restarting':
                                break
                    try:
                        await asyncio.wait_for(collect(), 60)
                    except asyncio.TimeoutError:
                        pass
                    await task
                return events
        emit(asyncio.run(main()))
    """,
            NAME=sess["name"],
        )
    )
    names = [e[0] for e in got]
    assert "session_restarting" in names, got
    data = dict(got[names.index("session_restarting")][1])
    assert data.get("sessionId") == sess["id"] or data.get("sessionName") == sess["name"], data
    assert wait_status(cluster, sess["name"], lambda st: st == "RUNNING") == "RUNNING"


def test_interrupt_and_restart(sess: dict[str, Any], sdk22: SDK, cluster: Cluster) -> None:
    got = sdk22(
        snippet(
            """
        with Session() as s:
            cs = s.ComputeSession(NAME)
            cs.execute(code='marker = 7')
            cs.interrupt()
            cs.restart()
            r = cs.execute(code="print('marker' in globals())")
            emit(r)
    """,
            NAME=sess["name"],
        )
    )
    assert got["console"] == [["stdout", "False\n"]], got  # a restart starts a fresh interpreter
    assert session_status(cluster, sess["name"]) == "RUNNING"


def test_rename(sess: dict[str, Any], sdk22: SDK, cluster: Cluster) -> None:
    """FAIL R10: ``POST /session/{name}/rename?name=NEW``."""
    new = unique("cs-sdkr")
    try:
        sdk22(
            snippet(
                """
            with Session() as s:
                s.ComputeSession(NAME).rename(NEW)
                emit(True)
        """,
                NAME=sess["name"],
                NEW=new,
            )
        )
        r = cluster.request("GET", f"/session/{new}")
        assert r.status_code == 200, r.text
        assert gql_session(cluster, sess["id"])["name"] == new
        assert cluster.request("GET", f"/session/{sess['name']}").status_code == 404
    finally:
        cluster.request("POST", f"/session/{new}/rename?name={sess['name']}")


def test_destroy(sdk22: SDK, cluster: Cluster) -> None:
    name = unique("cs-sdkd")
    try:
        got = sdk22(
            snippet(
                """
            with Session() as s:
                cs = s.ComputeSession.get_or_create('python', name=NAME, resources=RES)
                emit({'id': str(cs.id), 'destroyed': cs.destroy()})
        """,
                NAME=name,
                RES=RES,
            )
        )
        assert isinstance(got["destroyed"]["stats"], dict), got
        assert gone(wait_status(cluster, name, gone, 60))
    finally:
        destroy(cluster, name)


def test_batch_session(batch: dict[str, Any], cluster: Cluster) -> None:
    data = gql_session(cluster, batch["id"])
    assert data["type"] in ("BATCH", "batch") and data["status"] == "TERMINATED", data
    r = cluster.request(
        "POST",
        "/admin/gql",
        {"query": "query($id: UUID!) { compute_session(id: $id) { result } }", "variables": {"id": batch["id"]}},
    )
    assert r.json()["data"]["compute_session"]["result"] == "SUCCESS", r.text


def test_get_task_logs(batch: dict[str, Any], sdk22: SDK) -> None:
    got = sdk22(
        snippet(
            """
        async def main():
            async with AsyncSession() as s:
                chunks = []
                async for chunk in s.ComputeSession.get_task_logs(ID):
                    chunks.append(chunk)
                return b''.join(chunks).decode()
        emit(asyncio.run(main()))
    """,
            ID=batch["id"],
        )
    )
    assert "42" in got, got


def test_listen_events_by_id_and_destroy(sdk22: SDK, cluster: Cluster) -> None:
    name = unique("cs-sdke")
    try:
        got = sdk22(
            snippet(
                """
            async def main():
                async with AsyncSession() as s:
                    cs = await s.ComputeSession.get_or_create('python', name=NAME, resources=RES)
                    o = s.ComputeSession.from_session_id(cs.id)
                    events = []
                    async with o.listen_events('session') as resp:
                        task = asyncio.create_task(cs.destroy())
                        async def collect():
                            async for ev in resp:
                                events.append([ev.event, json.loads(ev.data)])
                                if ev.event == 'session_terminated':
                                    break
                        try:
                            await asyncio.wait_for(collect(), 60)
                        except asyncio.TimeoutError:
                            pass
                        await task
                    return {'id': str(cs.id), 'events': events}
            emit(asyncio.run(main()))
        """,
                NAME=name,
                RES=RES,
            )
        )
        names = [e[0] for e in got["events"]]
        assert "session_terminating" in names and "session_terminated" in names, got
        assert all(n.startswith("session_") for n in names), names  # scope "session"
        assert all(e[1].get("sessionId") == got["id"] for e in got["events"]), got
    finally:
        destroy(cluster, name)


# --- session templates ----------------------------------------------------------------------------------------


def template_yaml(name: str) -> str:
    return (
        f"api_version: v1\nkind: taskTemplate\nmetadata:\n  name: {name}\n  tag: cs-tag\nspec:\n"
        f"  session_type: interactive\n  kernel:\n    image: python\n    environ:\n      TPL: 'yes'\n"
        f"  resources:\n    cpu: '1'\n    mem: 256m\n"
    )


@pytest.fixture
def template_id(cluster: Cluster) -> Iterator[str]:
    """A template created through our own API (not through the SDK's ``create``)."""
    r = cluster.request("POST", "/template/session", {"payload": template_yaml(unique("cs-tpl"))})
    assert r.status_code == 200, r.text
    body = r.json()
    tid = str((body[0] if isinstance(body, list) else body)["id"])
    yield tid
    cluster.request("DELETE", f"/template/session/{tid}")


def test_session_template_create(sdk22: SDK, cluster: Cluster) -> None:
    """FAIL R11: the single-template answer must be an object with ``id``."""
    name = unique("cs-tplc")
    before = {t["id"] for t in cluster.request("GET", "/template/session").json()}
    rc, out, got = sdk22(
        snippet(
            """
        with Session() as s:
            t = s.SessionTemplate.create(TPL)
            emit(str(t.template_id))
    """,
            TPL=template_yaml(name),
        ),
        check=False,
    )
    new = [t for t in cluster.request("GET", "/template/session").json() if t["id"] not in before]
    for t in new:
        cluster.request("DELETE", f"/template/session/{t['id']}")
    assert rc == 0, out
    assert [t["name"] for t in new] == [name]
    assert got == str(new[0]["id"])


def test_session_template_list_get_put_delete(template_id: str, sdk22: SDK, cluster: Cluster) -> None:
    got = sdk22(
        snippet(
            """
        with Session() as s:
            listed = s.SessionTemplate.list_templates()
            t = s.SessionTemplate(TID)
            as_yaml = t.get('yaml')
            as_json = t.get('json')
            t.put(NEW)
            after = t.get('yaml')
            t.delete()
            emit({'listed': listed, 'yaml': as_yaml, 'json': as_json, 'after': after})
    """,
            TID=template_id,
            NEW=template_yaml("cs-tpl-renamed"),
        )
    )
    assert template_id in [str(t["id"]) for t in got["listed"]]
    assert "kind: taskTemplate" in got["yaml"] and "TPL" in got["yaml"]
    js = got["json"] if isinstance(got["json"], dict) else json.loads(got["json"])
    assert js["template"]["spec"]["kernel"]["image"] == "python"
    assert "cs-tpl-renamed" in got["after"]
    assert cluster.request("GET", f"/template/session/{template_id}").status_code == 404


def test_create_from_template(template_id: str, sdk22: SDK, cluster: Cluster) -> None:
    name = unique("cs-sdktpl")
    try:
        got = sdk22(
            snippet(
                """
            with Session() as s:
                cs = s.ComputeSession.create_from_template(TID, name=NAME)
                r = cs.execute(code="import os; print(os.environ.get('TPL'))")
                emit({'id': str(cs.id), 'status': cs.status, 'out': r['console'], 'destroyed': cs.destroy()})
        """,
                TID=template_id,
                NAME=name,
            )
        )
        assert got["status"] == "RUNNING" and got["out"] == [["stdout", "yes\n"]], got
        assert gone(wait_status(cluster, name, gone, 60))
    finally:
        destroy(cluster, name)


# --- dotfiles, resources, misc reads --------------------------------------------------------------------------


def test_dotfiles(sdk22: SDK, cluster: Cluster) -> None:
    path = f".{unique('cs-sdkrc')}"
    got = sdk22(
        snippet(
            """
        with Session() as s:
            s.Dotfile.create('x=1\\n', PATH, '644')
            listed = s.Dotfile.list_dotfiles()
            d = s.Dotfile(PATH)
            first = d.get()
            d.update('x=2\\n', '600')
            second = d.get()
            d.delete()
            after = [x['path'] for x in s.Dotfile.list_dotfiles()]
            emit({'listed': listed, 'first': first, 'second': second, 'after': after})
    """,
            PATH=path,
        )
    )
    assert path in [x["path"] for x in got["listed"]]
    assert got["first"]["data"] == "x=1\n" and got["first"]["permission"] in ("644", 0o644, 420)
    assert got["second"]["data"] == "x=2\n" and got["second"]["permission"] in ("600", 0o600, 384)
    assert path not in got["after"]


def test_resources(sdk22: SDK) -> None:
    got = sdk22(
        snippet("""
        with Session() as s:
            emit({'presets': s.Resource.list(), 'check': s.Resource.check_presets(),
                  'slots': s.Resource.get_resource_slots(), 'registries': s.Resource.get_docker_registries()})
    """),
        who=ADMIN,
    )  # the registries are for superadmins only
    assert isinstance(got["presets"], (list, dict))
    assert "keypair_remaining" in got["check"] and "presets" in got["check"], got["check"]
    assert got["slots"]["cpu"] == "count" and got["slots"]["mem"] == "bytes"
    assert isinstance(got["registries"], dict)


def test_scaling_groups_keypair_admin_query(sess: dict[str, Any], sdk22: SDK) -> None:
    got = sdk22(
        snippet(
            """
        with Session() as s:
            emit({'sg': s.ScalingGroup.list_available('default'),
                  'kp': s.KeyPair(AK).info(),
                  'q': s.Admin.query('{ keypair { access_key is_admin resource_policy } }'),
                  'cs': s.Admin.query('query { compute_session_list(limit: 50, offset: 0, status: "RUNNING") '
                                      '{ items { id name status } total_count } }')})
    """,
            AK=USER["access_key"],
        )
    )
    assert "default" in [g["name"] for g in got["sg"]]
    assert got["kp"]["access_key"] == USER["access_key"]
    assert got["q"]["keypair"] == {"access_key": USER["access_key"], "is_admin": False, "resource_policy": "default"}
    assert sess["name"] in [i["name"] for i in got["cs"]["compute_session_list"]["items"]]


def test_image_group_user_reads(sdk22: SDK) -> None:
    got = sdk22(
        snippet("""
        with Session() as s:
            emit({'images': s.Image.list(), 'groups': s.Group.list('default'), 'me': s.User.detail()})
    """)
    )
    assert any(i["name"].endswith("python") for i in got["images"]), got["images"]
    assert "default" in [g["name"] for g in got["groups"]]
    assert got["me"]["email"] == USER["email"]


def test_auth_update_password(sdk22: SDK, gql: GQL) -> None:
    who = make_user(gql)
    try:
        got = sdk22(
            snippet(
                """
            with Session() as s:
                out = {}
                for key, args in (('wrong', ('not-the-password', 'pw-new-2', 'pw-new-2')),
                                  ('mismatch', (OLD, 'pw-new-2', 'pw-new-3')),
                                  ('ok', (OLD, 'pw-new-2', 'pw-new-2'))):
                    try:
                        out[key] = s.Auth.update_password(*args)
                    except BackendAPIError as e:
                        out[key] = e.status
                emit(out)
        """,
                OLD=who["password"],
            ),
            who=who,
        )
        assert got == {"wrong": 401, "mismatch": 400, "ok": {}}, got
        auth = sdk22(
            snippet(
                """
            with Session() as s:
                emit(s.User.authorize(EMAIL, 'pw-new-2').content['access_key'])
        """,
                EMAIL=who["email"],
            ),
            who=who,
        )
        assert auth == who["access_key"]
    finally:
        delete_user(gql, who["email"])


# --- virtual folders ------------------------------------------------------------------------------------------


@pytest.fixture
def vfolder(cluster: Cluster) -> Iterator[str]:
    """A user folder created through our own API."""
    name = unique("cs-sdkvf")
    r = cluster.request("POST", "/folders", {"name": name, "host": VOLUME})
    assert r.status_code in (200, 201), r.text
    yield name
    delete_vfolder(cluster, name)


def test_vfolder_create(sdk22: SDK, cluster: Cluster) -> None:
    a, b = unique("cs-sdkvf"), unique("cs-sdkvf2")
    try:
        got = sdk22(
            snippet(
                """
            with Session() as s:
                emit([s.VFolder.create(A, host=HOST), s.VFolder.create(B, HOST, cloneable=True)])
        """,
                A=a,
                B=b,
                HOST=VOLUME,
            )
        )
        assert [g["name"] for g in got] == [a, b]
        mine = vfolders(cluster)
        assert mine[a]["host"] == VOLUME and mine[b]["host"] == VOLUME
        assert mine[a]["cloneable"] is False and mine[b]["cloneable"] is True
    finally:
        delete_vfolder(cluster, a)
        delete_vfolder(cluster, b)


def test_vfolder_lists(vfolder: str, sdk22: SDK) -> None:
    body = """
        with Session() as s:
            out = {'list': s.VFolder.list(), 'hosts': s.VFolder.list_hosts(),
                   'types': s.VFolder.list_allowed_types()}
            out['paginated'] = s.VFolder.paginated_list().items
            try:
                out['all'] = s.VFolder.list(list_all=True)
            except BackendAPIError as e:
                out['all'] = e.status
            try:
                out['all_hosts'] = s.VFolder.list_all_hosts()
            except BackendAPIError as e:
                out['all_hosts'] = e.status
            emit(out)
    """
    user = sdk22(snippet(body))
    admin = sdk22(snippet(body), who=ADMIN)
    assert vfolder in [f["name"] for f in user["list"]]
    assert vfolder in [f["name"] for f in user["paginated"]]
    assert VOLUME in user["hosts"]["allowed"] and user["hosts"]["default"] == VOLUME
    assert "user" in user["types"]
    assert user["all_hosts"] == 403
    assert vfolder in [f["name"] for f in admin["all"]]
    assert VOLUME in admin["all_hosts"]["allowed"]


def test_vfolder_info_upload_mkdir(vfolder: str, sdk22: SDK, workdir: Path, cluster: Cluster) -> None:
    (workdir / "vf-up.txt").write_text("vfolder upload 22.03\n")
    got = sdk22(
        snippet(
            """
        with Session() as s:
            vf = s.VFolder(NAME)
            info = vf.info()
            vf.upload(['vf-up.txt'])
            vf.mkdir('d1')
            emit(info)
    """,
            NAME=vfolder,
        ),
        cwd=workdir,
    )
    assert got["name"] == vfolder and got["host"] == VOLUME
    r = cluster.request("GET", f"/folders/{vfolder}/files?path=.")
    assert r.status_code == 200, r.text
    files = r.json()["files"]
    entries = {e["filename"]: e for e in (json.loads(files) if isinstance(files, str) else files)}
    assert entries["vf-up.txt"]["size"] == len("vfolder upload 22.03\n")
    assert "d1" in entries


def test_vfolder_list_files(vfolder: str, sdk22: SDK, workdir: Path) -> None:
    """FAIL R6: ``files`` must be a JSON-encoded string, as both official CLIs (and upstream) read it."""
    (workdir / "lf.txt").write_text("12345")
    got = sdk22(
        snippet(
            """
        with Session() as s:
            vf = s.VFolder(NAME)
            vf.upload(['lf.txt'])
            emit(vf.list_files('.'))
    """,
            NAME=vfolder,
        ),
        cwd=workdir,
    )
    assert isinstance(got["files"], str), got
    entries = {e["filename"]: e for e in json.loads(got["files"])}
    assert entries["lf.txt"]["size"] == 5 and isinstance(entries["lf.txt"]["mtime"], (int, float))
    assert "mode" in entries["lf.txt"]


def test_vfolder_file_ops_and_rename(vfolder: str, sdk22: SDK, workdir: Path, cluster: Cluster) -> None:
    (workdir / "vf-up.txt").write_text("x")
    new = unique("cs-sdkvfr")
    try:
        sdk22(
            snippet(
                """
            with Session() as s:
                vf = s.VFolder(NAME)
                vf.upload(['vf-up.txt'])
                vf.mkdir('d1')
                vf.rename_file('vf-up.txt', 'vf-up2.txt')
                emit(1)
        """,
                NAME=vfolder,
            ),
            cwd=workdir,
        )
        assert vf_names(cluster, vfolder) == {"vf-up2.txt", "d1"}
        sdk22(
            snippet(
                """
            with Session() as s:
                s.VFolder(NAME).move_file('vf-up2.txt', 'd1/vf-up3.txt')
                emit(1)
        """,
                NAME=vfolder,
            )
        )
        assert vf_names(cluster, vfolder) == {"d1"} and vf_names(cluster, vfolder, "d1") == {"vf-up3.txt"}
        sdk22(
            snippet(
                """
            with Session() as s:
                vf = s.VFolder(NAME)
                vf.delete_files(['d1'], recursive=True)
                vf.rename(NEW)
                emit(1)
        """,
                NAME=vfolder,
                NEW=new,
            )
        )
        assert vf_names(cluster, new) == set()
        names = vfolders(cluster)
        assert new in names and vfolder not in names
    finally:
        delete_vfolder(cluster, new)


def test_vfolder_update_options_and_clone(vfolder: str, sdk22: SDK, cluster: Cluster, gql: GQL) -> None:
    clone = unique("cs-sdkvf3")
    try:
        got = sdk22(
            snippet(
                """
            with Session() as s:
                vf = s.VFolder(NAME)
                vf.update_options(NAME, permission='ro', cloneable=True)
                r = vf.clone(CLONE, target_host=HOST)
                emit(r)
        """,
                NAME=vfolder,
                CLONE=clone,
                HOST=VOLUME,
            )
        )
        assert got["name"] == clone, got
        deadline = time.monotonic() + 60
        while clone not in vfolders(cluster) and time.monotonic() < deadline:
            time.sleep(0.5)
        mine = vfolders(cluster)
        assert mine[vfolder]["cloneable"] is True and mine[clone]["host"] == VOLUME
        rows = gql("{ vfolders { name permission } }")["vfolders"]
        assert {r["name"]: r["permission"] for r in rows}[vfolder] == "ro"
    finally:
        delete_vfolder(cluster, clone)


def test_vfolder_invitations(vfolder: str, sdk22: SDK, user2: Who, cluster: Cluster) -> None:
    got = sdk22(
        snippet(
            """
        with Session() as s:
            emit(s.VFolder(NAME).invite('ro', [EMAIL]))
    """,
            NAME=vfolder,
            EMAIL=user2["email"],
        )
    )
    assert got["invited_ids"] == [user2["email"]] or user2["email"] in json.dumps(got), got
    got = sdk22(
        snippet(
            """
        with Session() as s:
            invs = s.VFolder.invitations()['invitations']
            mine = [i for i in invs if i['vfolder_name'] == NAME]
            s.VFolder.accept_invitation(mine[0]['id'])
            emit({'inv': mine, 'after': [f['name'] for f in s.VFolder.list()]})
    """,
            NAME=vfolder,
        ),
        who=user2,
    )
    assert got["inv"][0]["perm"] == "ro" and vfolder in got["after"]
    sdk22(
        snippet(
            """
        with Session() as s:
            s.VFolder(NAME).leave()
            emit(1)
    """,
            NAME=vfolder,
        ),
        who=user2,
    )
    assert vfolder not in vfolders(cluster, user2)
    sdk22(
        snippet(
            """
        with Session() as s:
            s.VFolder(NAME).invite('rw', [EMAIL])
            emit(1)
    """,
            NAME=vfolder,
            EMAIL=user2["email"],
        )
    )
    got = sdk22(
        snippet(
            """
        with Session() as s:
            mine = [i for i in s.VFolder.invitations()['invitations'] if i['vfolder_name'] == NAME]
            s.VFolder.delete_invitation(mine[0]['id'])
            left = [i for i in s.VFolder.invitations()['invitations'] if i['vfolder_name'] == NAME]
            emit({'left': left, 'folders': [f['name'] for f in s.VFolder.list()]})
    """,
            NAME=vfolder,
        ),
        who=user2,
    )
    assert got["left"] == [] and vfolder not in got["folders"], got


def test_vfolder_share_unshare(sdk22: SDK, user2: Who, cluster: Cluster) -> None:
    name = unique("cs-gvf")
    r = cluster.request(
        "POST",
        "/folders",
        {"name": name, "host": VOLUME, "group": str(DEFAULT_GROUP_ID), "permission": "ro"},
        who=ADMIN,
    )
    assert r.status_code in (200, 201), r.text
    try:
        assert vfolders(cluster, user2)[name]["permission"] == "ro"
        sdk22(
            snippet(
                """
            with Session() as s:
                s.VFolder(NAME).share('rw', [EMAIL])
                emit(1)
        """,
                NAME=name,
                EMAIL=user2["email"],
            ),
            who=ADMIN,
        )
        assert vfolders(cluster, user2)[name]["permission"] == "rw"
        sdk22(
            snippet(
                """
            with Session() as s:
                s.VFolder(NAME).unshare([EMAIL])
                emit(1)
        """,
                NAME=name,
                EMAIL=user2["email"],
            ),
            who=ADMIN,
        )
        assert vfolders(cluster, user2)[name]["permission"] == "ro"
    finally:
        delete_vfolder(cluster, name, ADMIN)


def test_vfolder_delete_and_delete_by_id(sdk22: SDK, cluster: Cluster) -> None:
    a, b = unique("cs-sdkvfd"), unique("cs-sdkvfe")
    ids = {}
    for n in (a, b):
        r = cluster.request("POST", "/folders", {"name": n, "host": VOLUME})
        assert r.status_code in (200, 201), r.text
        ids[n] = r.json()["id"]
    try:
        sdk22(
            snippet(
                """
            with Session() as s:
                s.VFolder(A).delete()
                s.VFolder.delete_by_id(BID)
                emit(1)
        """,
                A=a,
                BID=ids[b],
            )
        )
        names = vfolders(cluster)
        assert a not in names and b not in names
    finally:
        delete_vfolder(cluster, a)
        delete_vfolder(cluster, b)


# --- administration -------------------------------------------------------------------------------------------


def test_keypairs(sdk22: SDK, gql: GQL) -> None:
    who = make_user(gql, "cs-sdkkp")
    try:
        got = sdk22(
            snippet(
                """
            with Session() as s:
                made = s.KeyPair.create(EMAIL, resource_policy='default')
                ak = made['keypair']['access_key']
                listed = [k['access_key'] for k in s.KeyPair.list(EMAIL)]
                paged = [k['access_key'] for k in s.KeyPair.paginated_list(True, page_size=100).items]
                upd = s.KeyPair.update(ak, rate_limit=1234)
                deact = s.KeyPair.deactivate(ak)
                Q = 'query($a: String) { keypair(access_key: $a) { is_active } }'  # info() is the caller's own
                inactive = s.Admin.query(Q, {'a': ak})['keypair']['is_active']
                act = s.KeyPair.activate(ak)
                active = s.Admin.query(Q, {'a': ak})['keypair']['is_active']
                rl = s.Admin.query('query($a: String) { keypair(access_key: $a) { rate_limit } }', {'a': ak})
                dele = s.KeyPair.delete(ak)
                after = [k['access_key'] for k in s.KeyPair.list(EMAIL)]
                emit({'ak': ak, 'ok': [made['ok'], upd['ok'], deact['ok'], act['ok'], dele['ok']], 'listed': listed,
                      'paged': paged, 'inactive': inactive, 'active': active, 'rl': rl, 'after': after})
        """,
                EMAIL=who["email"],
            ),
            who=ADMIN,
        )
        assert got["ok"] == [True] * 5, got
        assert got["ak"] in got["listed"] and got["ak"] in got["paged"]
        assert got["inactive"] is False and got["active"] is True
        assert got["rl"]["keypair"]["rate_limit"] == 1234
        assert got["ak"] not in got["after"] and who["access_key"] in got["after"]
    finally:
        delete_user(gql, who["email"])


def test_keypair_resource_policies(sdk22: SDK, gql: GQL) -> None:
    name = unique("cs-sdkpol")
    got = sdk22(
        snippet(
            """
        with Session() as s:
            c = s.KeypairResourcePolicy.create(NAME, default_for_unspecified='UNLIMITED',
                total_resource_slots='{"cpu": "4"}', max_concurrent_sessions=3, max_containers_per_session=1,
                max_vfolder_count=5, max_vfolder_size=0, idle_timeout=600, allowed_vfolder_hosts=[HOST])
            listed = [p['name'] for p in s.KeypairResourcePolicy.list()]
            u = s.KeypairResourcePolicy.update(NAME, default_for_unspecified='LIMITED',
                total_resource_slots='{"cpu": "2"}', max_concurrent_sessions=4, max_containers_per_session=2,
                max_vfolder_count=6, max_vfolder_size=0, idle_timeout=60, allowed_vfolder_hosts=[HOST])
            q = s.Admin.query('query($n: String) { keypair_resource_policy(name: $n) { name max_concurrent_sessions '
                              'idle_timeout max_vfolder_count allowed_vfolder_hosts default_for_unspecified } }',
                              {'n': NAME})
            d = s.KeypairResourcePolicy.delete(NAME)
            after = [p['name'] for p in s.KeypairResourcePolicy.list()]
            emit({'ok': [c['ok'], u['ok'], d['ok']], 'listed': listed, 'q': q, 'after': after})
    """,
            NAME=name,
            HOST=VOLUME,
        ),
        who=ADMIN,
    )
    assert got["ok"] == [True, True, True], got
    assert name in got["listed"] and name not in got["after"]
    pol = got["q"]["keypair_resource_policy"]
    assert (pol["max_concurrent_sessions"], pol["idle_timeout"], pol["max_vfolder_count"]) == (4, 60, 6)
    assert pol["allowed_vfolder_hosts"] == [VOLUME] and pol["default_for_unspecified"] == "LIMITED"


def test_users(sdk22: SDK, gql: GQL) -> None:
    email = f"{unique('cs-sdkuser')}@example.org"
    try:
        got = sdk22(
            snippet(
                """
            with Session() as s:
                c = s.User.create('default', EMAIL, 'pw-sdk-123', username=EMAIL.split('@')[0], full_name='SDK User',
                                  group_ids=[GID])
                listed = [u['email'] for u in s.User.list()]
                paged = [u['email'] for u in s.User.paginated_list('active', page_size=100).items]
                detail = s.User.detail(EMAIL)
                u = s.User.update(EMAIL, full_name='SDK User 2')
                detail2 = s.Admin.query('query($e: String) { user(email: $e) { full_name } }', {'e': EMAIL})['user']
                auth = s.User.authorize(EMAIL, 'pw-sdk-123').content
                d = s.User.delete(EMAIL)
                emit({'ok': [c['ok'], u['ok'], d['ok']], 'listed': listed, 'paged': paged, 'detail': detail,
                      'detail2': detail2, 'auth': auth})
        """,
                EMAIL=email,
                GID=str(DEFAULT_GROUP_ID),
            ),
            who=ADMIN,
        )
        assert got["ok"] == [True, True, True], got
        assert email in got["listed"] and email in got["paged"]
        assert got["detail"]["email"] == email and got["detail"]["username"] == email.split("@")[0]
        assert got["detail2"]["full_name"] == "SDK User 2"
        assert got["auth"]["access_key"] and got["auth"]["secret_key"]
        st = gql("query($e: String) { user(email: $e) { status } }", {"e": email})["user"]
        assert st is None or st["status"] == "deleted"
    finally:
        if gql("query($e: String) { user(email: $e) { status } }", {"e": email})["user"]:
            delete_user(gql, email)


def test_user_detail_by_uuid(sdk22: SDK, user2: Who) -> None:
    """FAIL R9: ``user_from_uuid(user_id: ...)`` must accept the client's ``$user_id: ID``."""
    got = sdk22(
        snippet(
            """
        with Session() as s:
            emit(s.User.detail_by_uuid(UID))
    """,
            UID=user2["uuid"],
        ),
        who=ADMIN,
    )
    assert got["email"] == user2["email"]


def test_groups(sdk22: SDK, gql: GQL, user2: Who) -> None:
    name = unique("cs-sdkgrp")
    got = sdk22(
        snippet(
            """
        with Session() as s:
            c = s.Group.create('default', NAME, description='sdk group')
            gid = c['group']['id']
            detail = s.Group.detail(gid)
            a = s.Group.add_users(gid, [UID])
            members = [u['email'] for u in s.User.list(group=gid)]
            r = s.Group.remove_users(gid, [UID])
            members2 = [u['email'] for u in s.User.list(group=gid)]
            d = s.Group.delete(gid)
            emit({'gid': gid, 'ok': [c['ok'], a['ok'], r['ok'], d['ok']], 'detail': detail, 'members': members,
                  'members2': members2})
    """,
            NAME=name,
            UID=user2["uuid"],
        ),
        who=ADMIN,
    )
    assert got["ok"] == [True] * 4, got
    assert got["detail"]["name"] == name and got["detail"]["description"] == "sdk group"
    assert user2["email"] in got["members"] and user2["email"] not in got["members2"]
    g = gql("query($id: UUID!) { group(id: $id) { is_active } }", {"id": got["gid"]})["group"]
    assert g is None or g["is_active"] is False


def test_group_update_keeps_unchanged_fields(sdk22: SDK, gql: GQL) -> None:
    """FAIL R2: the ``null`` fields the SDK sends must leave the group's name, slots and hosts alone."""
    name = unique("cs-sdkgrpu")
    gid = create_group(gql, name)
    try:
        got = sdk22(
            snippet(
                """
            with Session() as s:
                emit(s.Group.update(GID, description='x'))
        """,
                GID=gid,
            ),
            who=ADMIN,
        )
        assert got["ok"] is True, got
        g = gql(
            "query($id: UUID!) { group(id: $id) { name description total_resource_slots allowed_vfolder_hosts "
            "is_active } }",
            {"id": gid},
        )["group"]
        assert g["name"] == name and g["description"] == "x" and g["is_active"] is True, g
        assert json.loads(g["total_resource_slots"]) == {"cpu": "4"}
        assert g["allowed_vfolder_hosts"] == [VOLUME]
    finally:
        delete_group(gql, gid)


def test_domains(sdk22: SDK, gql: GQL) -> None:
    name = unique("cs-sdkdom")
    got = sdk22(
        snippet(
            """
        with Session() as s:
            c = s.Domain.create(NAME, description='sdk dom')
            listed = [d['name'] for d in s.Domain.list()]
            detail = s.Domain.detail(NAME)
            d = s.Domain.delete(NAME)
            emit({'ok': [c['ok'], d['ok']], 'listed': listed, 'detail': detail})
    """,
            NAME=name,
        ),
        who=ADMIN,
    )
    assert got["ok"] == [True, True], got
    assert name in got["listed"]
    assert got["detail"]["name"] == name and got["detail"]["description"] == "sdk dom"
    d = gql("query($n: String) { domain(name: $n) { is_active } }", {"n": name})["domain"]
    assert d is None or d["is_active"] is False


def test_domain_update_keeps_unchanged_fields(sdk22: SDK, gql: GQL) -> None:
    """FAIL R2: ``new_name: null`` and the other ``null`` fields must not rename or wipe the domain."""
    name = unique("cs-sdkdomu")
    create_domain(gql, name)
    try:
        got = sdk22(
            snippet(
                """
            with Session() as s:
                emit(s.Domain.update(NAME, description='y'))
        """,
                NAME=name,
            ),
            who=ADMIN,
        )
        assert got["ok"] is True, got
        d = gql(
            "query($n: String) { domain(name: $n) { name description total_resource_slots "
            "allowed_vfolder_hosts allowed_docker_registries is_active } }",
            {"n": name},
        )["domain"]
        assert d is not None, "the domain was renamed"
        assert d["description"] == "y" and d["is_active"] is True
        assert json.loads(d["total_resource_slots"]) == {"cpu": "8"}
        assert d["allowed_vfolder_hosts"] == [VOLUME] and d["allowed_docker_registries"] == ["cr.backend.ai"]
    finally:
        delete_domain(gql, name)


def test_image_alias_dealias_rescan(sdk22: SDK, gql: GQL) -> None:
    alias = unique("cs-py")
    got = sdk22(
        snippet(
            """
        with Session() as s:
            target = [i for i in s.Image.list() if i['name'].endswith('python')][0]
            ref = target['name'] + ':' + target['tag']
            a = s.Image.alias_image(ALIAS, ref)
            q1 = s.Admin.query('query($r: String!) { image(reference: $r) { name tag } }', {'r': ALIAS})
            d = s.Image.dealias_image(ALIAS)
            q2 = s.Admin.query('query($r: String!) { image(reference: $r) { name tag } }', {'r': ALIAS})
            r = s.Image.rescan_images('local')
            emit({'ref': ref, 'ok': [a['ok'], d['ok'], r['ok']], 'q1': q1, 'q2': q2, 'task': r.get('task_id')})
    """,
            ALIAS=alias,
        ),
        who=ADMIN,
    )
    assert got["ok"] == [True, True, True], got
    img = got["q1"]["image"]
    assert img is not None and img["name"] + ":" + img["tag"] == got["ref"]
    assert got["q2"]["image"] is None
    assert got["task"]


def test_background_task_events(sdk22: SDK) -> None:
    got = sdk22(
        snippet("""
        async def main():
            async with AsyncSession() as s:
                r = await s.Image.rescan_images('local')
                events = []
                async with s.BackgroundTask(r['task_id']).listen_events() as resp:
                    async def collect():
                        async for ev in resp:
                            events.append(ev.event)
                            if ev.event in ('bgtask_done', 'bgtask_failed', 'bgtask_cancelled'):
                                break
                    await asyncio.wait_for(collect(), 90)
                return events
        emit(asyncio.run(main()))
    """),
        who=ADMIN,
        timeout=150,
    )
    assert got and got[-1] == "bgtask_done", got


def test_agents(sdk22: SDK, cluster: Cluster) -> None:
    got = sdk22(
        snippet(
            """
        with Session() as s:
            emit({'list': s.Agent.paginated_list('ALIVE', page_size=100).items, 'detail': s.Agent.detail(AID)})
    """,
            AID=cluster.agent_id,
        ),
        who=ADMIN,
    )
    assert cluster.agent_id in [a["id"] for a in got["list"]]
    assert got["detail"]["id"] == cluster.agent_id and got["detail"]["status"] == "ALIVE"


@pytest.fixture
def sgroup(gql: GQL) -> Iterator[str]:
    """A scaling group created through our own GraphQL (``ScalingGroupInput``)."""
    name = unique("cs-sg")
    data = gql(
        "mutation($n: String!, $p: ScalingGroupInput!) { create_scaling_group(name: $n, props: $p) { ok msg } }",
        {"n": name, "p": {"driver": "static", "scheduler": "fifo", "description": "orig sg"}},
    )
    assert data["create_scaling_group"]["ok"], data
    yield name
    gql("mutation($n: String!) { delete_scaling_group(name: $n) { ok msg } }", {"n": name})


def sgroups_of_domain(gql: GQL, domain: str) -> list[str]:
    return [
        g["name"]
        for g in gql("query($d: String!) { scaling_groups_for_domain(domain: $d) { name } }", {"d": domain})[
            "scaling_groups_for_domain"
        ]
    ]


def sgroups_of_group(gql: GQL, gid: str) -> list[str]:
    return [
        g["name"]
        for g in gql("query($g: String!) { scaling_groups_for_user_group(user_group: $g) { name } }", {"g": gid})[
            "scaling_groups_for_user_group"
        ]
    ]


def test_scaling_groups(sgroup: str, sdk22: SDK, gql: GQL) -> None:
    dom = unique("cs-sgdom")
    create_domain(gql, dom)
    try:
        got = sdk22(
            snippet(
                """
            with Session() as s:
                listed = [g['name'] for g in s.ScalingGroup.list()]
                detail = s.ScalingGroup.detail('default')
                u = s.ScalingGroup.update(SG, description='z')
                a = s.ScalingGroup.associate_domain(SG, DOM)
                emit({'listed': listed, 'detail': detail, 'ok': [u['ok'], a['ok']]})
        """,
                SG=sgroup,
                DOM=dom,
            ),
            who=ADMIN,
        )
        assert got["ok"] == [True, True], got
        assert sgroup in got["listed"] and got["detail"]["name"] == "default"
        assert (
            gql("query($n: String) { scaling_group(name: $n) { description } }", {"n": sgroup})["scaling_group"][
                "description"
            ]
            == "z"
        )
        assert sgroups_of_domain(gql, dom) == [sgroup]
        got = sdk22(
            snippet(
                """
            with Session() as s:
                d = s.ScalingGroup.dissociate_domain(SG, DOM)
                emit(d['ok'])
        """,
                SG=sgroup,
                DOM=dom,
            ),
            who=ADMIN,
        )
        assert got is True and sgroups_of_domain(gql, dom) == []
        gql(
            "mutation($s: String!, $d: String!) { associate_scaling_group_with_domain(scaling_group: $s, domain: $d) "
            "{ ok msg } }",
            {"s": sgroup, "d": dom},
        )
        assert sgroups_of_domain(gql, dom) == [sgroup]
        got = sdk22(
            snippet(
                """
            with Session() as s:
                emit(s.ScalingGroup.dissociate_all_domain(DOM)['ok'])
        """,
                DOM=dom,
            ),
            who=ADMIN,
        )
        assert got is True and sgroups_of_domain(gql, dom) == []
    finally:
        delete_domain(gql, dom)


def test_scaling_group_create(sdk22: SDK, gql: GQL) -> None:
    """FAIL R8: the client's ``$input: CreateScalingGroupInput!`` must be accepted."""
    name = unique("cs-sdksg")
    try:
        got = sdk22(
            snippet(
                """
            with Session() as s:
                emit(s.ScalingGroup.create(NAME, description='sdk sg', driver='static', driver_opts={},
                                           scheduler='fifo', scheduler_opts={}))
        """,
                NAME=name,
            ),
            who=ADMIN,
        )
        assert got["ok"] is True, got
        sg = gql("query($n: String) { scaling_group(name: $n) { name description driver scheduler } }", {"n": name})[
            "scaling_group"
        ]
        assert sg == {"name": name, "description": "sdk sg", "driver": "static", "scheduler": "fifo"}
    finally:
        gql("mutation($n: String!) { delete_scaling_group(name: $n) { ok msg } }", {"n": name})


@pytest.fixture
def group_id(gql: GQL) -> Iterator[str]:
    gid = create_group(gql, unique("cs-sggrp"))
    yield gid
    delete_group(gql, gid)


def associate_group(gql: GQL, sgroup: str, gid: str) -> None:
    data = gql(
        "mutation($s: String!, $g: String!) { associate_scaling_group_with_user_group(scaling_group: $s, "
        "user_group: $g) { ok msg } }",
        {"s": sgroup, "g": gid},
    )
    assert data["associate_scaling_group_with_user_group"]["ok"], data


def test_scaling_group_associate_group(sgroup: str, group_id: str, sdk22: SDK, gql: GQL) -> None:
    """FAIL R9: the client declares ``$user_group: UUID!``."""
    got = sdk22(
        snippet(
            """
        with Session() as s:
            emit(s.ScalingGroup.associate_group(SG, GID))
    """,
            SG=sgroup,
            GID=group_id,
        ),
        who=ADMIN,
    )
    assert got["ok"] is True, got
    assert sgroups_of_group(gql, group_id) == [sgroup]


def test_scaling_group_dissociate_group(sgroup: str, group_id: str, sdk22: SDK, gql: GQL) -> None:
    associate_group(gql, sgroup, group_id)
    assert sgroups_of_group(gql, group_id) == [sgroup]
    got = sdk22(
        snippet(
            """
        with Session() as s:
            emit(s.ScalingGroup.dissociate_group(SG, GID))
    """,
            SG=sgroup,
            GID=group_id,
        ),
        who=ADMIN,
    )
    assert got["ok"] is True, got
    assert sgroups_of_group(gql, group_id) == []


def test_scaling_group_dissociate_all_group(sgroup: str, group_id: str, sdk22: SDK, gql: GQL) -> None:
    """FAIL R9: the client declares ``$group_id: UUID!`` for ``user_group``."""
    associate_group(gql, sgroup, group_id)
    got = sdk22(
        snippet(
            """
        with Session() as s:
            emit(s.ScalingGroup.dissociate_all_group(GID))
    """,
            GID=group_id,
        ),
        who=ADMIN,
    )
    assert got["ok"] is True, got
    assert sgroups_of_group(gql, group_id) == []
