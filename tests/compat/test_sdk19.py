"""The official 19.09 SDK (``backend.ai-client==19.9.10``: ``Kernel`` and ``VFolder``, API v4) against a
real cluster.

One test per row marked OK or FAIL in section "4. 19.09 SDK" of the compatibility matrix
(``/work/shared/compat/official-client-matrix.md``). FAIL rows are written for the correct behaviour.
The per-session calls run on ``Kernel(<session name>)`` as in the matrix; ``Kernel.get_or_create`` is
tested directly (its answer must carry ``kernelId``, R4) and the object it returns is used afterwards.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ai.backend.testutils.cluster import Cluster

from .conftest import SDK, VOLUME, Who, unique
from .helpers import RES, delete_vfolder, destroy, gone, session_status, vf_names, vfolders, wait_status
from .helpers import snippet as snippet22


def snippet(body: str, **params: Any) -> str:
    """The 19.09 SDK imports, ``NAME = value`` lines for ``params`` and the dedented ``body``."""
    head = "import asyncio, base64, json, os, time\nfrom ai.backend.client.session import Session, AsyncSession\n"
    head += "from ai.backend.client.exceptions import BackendAPIError\n"
    head += "".join(f"{k} = {v!r}\n" for k, v in params.items())
    return head + textwrap.dedent(body)


@pytest.fixture(scope="module")
def sess(sdk22: SDK, cluster: Cluster) -> Iterator[dict[str, str]]:
    """An interactive session for the per-session calls (started with the 22.03 SDK, an OK row)."""
    name = unique("cs-19k")
    sid = sdk22(
        snippet22(
            """
        with Session() as s:
            emit(str(s.ComputeSession.get_or_create('python', name=NAME, resources=RES).id))
    """,
            NAME=name,
            RES=RES,
        )
    )
    yield {"name": name, "id": str(sid)}
    destroy(cluster, str(sid))


def test_hello(sdk19: SDK) -> None:
    got = sdk19(
        snippet("""
        with Session() as s:
            emit(s.Kernel.hello())
    """)
    )
    assert got["version"].startswith("v4.") or got["version"].startswith("v6."), got


def test_get_or_create(sdk19: SDK, cluster: Cluster) -> None:
    """FAIL R4: the create answer must carry ``kernelId``; the returned object must work."""
    name = unique("cs-19kc")
    try:
        got = sdk19(
            snippet(
                """
            with Session() as s:
                k = s.Kernel.get_or_create('python', client_token=NAME, resources=RES, envs={'K19': 'yes'})
                r = k.execute(code="import os; print(os.environ['K19'])")
                emit({'kid': k.kernel_id, 'created': k.created, 'status': k.status, 'console': r['console']})
        """,
                NAME=name,
                RES=RES,
            )
        )
        assert got["created"] is True and got["status"] == "RUNNING", got
        assert got["kid"] and got["console"] == [["stdout", "yes\n"]]
        assert session_status(cluster, name) == "RUNNING"
    finally:
        destroy(cluster, name)


def test_get_or_create_again_reuses(sess: dict[str, str], sdk19: SDK) -> None:
    """FAIL R4 (the reuse answer lacks ``kernelId`` too)."""
    got = sdk19(
        snippet(
            """
        with Session() as s:
            k = s.Kernel.get_or_create('python', client_token=NAME, resources=RES)
            emit({'kid': k.kernel_id, 'created': k.created, 'status': k.status, 'info': k.get_info()['status']})
    """,
            NAME=sess["name"],
            RES=RES,
        )
    )
    assert got["created"] is False and got["status"] == "RUNNING" and got["info"] == "RUNNING", got
    assert got["kid"] in (sess["name"], sess["id"])


def test_get_or_create_batch(sdk19: SDK, cluster: Cluster) -> None:
    """FAIL R4."""
    name = unique("cs-19kb")
    try:
        got = sdk19(
            snippet(
                """
            with Session() as s:
                k = s.Kernel.get_or_create('python', client_token=NAME, type_='batch', resources=RES,
                                           startup_command='python3 -c "print(6*7)"')
                emit({'kid': k.kernel_id, 'status': k.status})
        """,
                NAME=name,
                RES=RES,
            )
        )
        assert got["kid"], got
        st = wait_status(cluster, name, lambda st: st is None or st in ("TERMINATED", "ERROR"))
        assert st == "TERMINATED", st
        r = cluster.request("GET", f"/session/{name}")
        assert r.json().get("result") == "SUCCESS", r.text
    finally:
        destroy(cluster, name)


def test_get_info(sess: dict[str, str], sdk19: SDK) -> None:
    got = sdk19(
        snippet(
            """
        with Session() as s:
            emit(s.Kernel(NAME).get_info())
    """,
            NAME=sess["name"],
        )
    )
    assert got["status"] == "RUNNING" and "python" in json.dumps(got.get("image") or got.get("lang")), got


def test_execute_query(sess: dict[str, str], sdk19: SDK) -> None:
    got = sdk19(
        snippet(
            """
        with Session() as s:
            emit(s.Kernel(NAME).execute(code='print(1+2)', mode='query'))
    """,
            NAME=sess["name"],
        )
    )
    assert got["status"] == "finished" and got["console"] == [["stdout", "3\n"]], got


def test_execute_batch_and_continue(sess: dict[str, str], sdk19: SDK) -> None:
    got = sdk19(
        snippet(
            """
        with Session() as s:
            k = s.Kernel(NAME)
            run_id = os.urandom(8).hex()
            r = k.execute(run_id, code='', mode='batch', opts={'exec': 'python3 -c "print(6*7)"'})
            out, n = [], 0
            while r['status'] != 'finished' and n < 100:
                out += [c[1] for c in r['console'] if c[0] == 'stdout']
                r = k.execute(run_id, code='', mode='continue')
                n += 1
            out += [c[1] for c in r['console'] if c[0] == 'stdout']
            emit({'out': ''.join(out), 'status': r['status'], 'continued': n, 'exit': r.get('exitCode')})
    """,
            NAME=sess["name"],
        )
    )
    assert got["status"] == "finished" and "42" in got["out"] and got["exit"] == 0, got
    assert got["continued"] >= 1


def test_execute_user_input(sess: dict[str, str], sdk19: SDK) -> None:
    got = sdk19(
        snippet(
            """
        with Session() as s:
            k = s.Kernel(NAME)
            run_id = os.urandom(8).hex()
            r = k.execute(run_id, code="x = input('num? '); print(int(x) * 2)")
            seen, out = [], []
            for _ in range(100):
                seen.append(r['status'])
                out += [c[1] for c in r['console'] if c[0] == 'stdout']
                if r['status'] == 'finished':
                    break
                if r['status'] == 'waiting-input':
                    r = k.execute(run_id, code='21', mode='input')
                else:
                    r = k.execute(run_id, code='', mode='continue')
            emit({'seen': seen, 'out': ''.join(out)})
    """,
            NAME=sess["name"],
        )
    )
    assert "waiting-input" in got["seen"] and "42" in got["out"], got


def test_complete(sess: dict[str, str], sdk19: SDK) -> None:
    got = sdk19(
        snippet(
            """
        with Session() as s:
            emit(s.Kernel(NAME).complete('import o'))
    """,
            NAME=sess["name"],
        )
    )
    result = got["result"] if isinstance(got, dict) else got
    assert isinstance(result, list) and all(isinstance(c, str) for c in result), got


def test_upload_list_download(sess: dict[str, str], sdk19: SDK, workdir: Path) -> None:
    (workdir / "k19.txt").write_text("kernel 19.09 upload\n")
    got = sdk19(
        snippet(
            """
        with Session() as s:
            k = s.Kernel(NAME)
            k.upload(['k19.txt'])
            listing = k.list_files('.')
            dl = k.download(['k19.txt'], dest='dl')
            emit({'files': listing['files'], 'dl': dl})
    """,
            NAME=sess["name"],
        ),
        cwd=workdir,
    )
    entries = {e["filename"]: e for e in json.loads(got["files"])}
    assert entries["k19.txt"]["size"] == len("kernel 19.09 upload\n")
    assert "k19.txt" in got["dl"]["file_names"]
    assert (workdir / "dl" / "k19.txt").read_text() == "kernel 19.09 upload\n"


def test_logs_interrupt_restart(sess: dict[str, str], sdk19: SDK, cluster: Cluster) -> None:
    got = sdk19(
        snippet(
            """
        with Session() as s:
            k = s.Kernel(NAME)
            k.execute(code='mark19 = 1')
            logs = k.get_logs()
            k.interrupt()
            k.restart()
            emit({'logs': logs, 'after': k.execute(code="print('mark19' in globals())")})
    """,
            NAME=sess["name"],
        )
    )
    assert isinstance(got["logs"]["result"]["logs"], str), got
    assert got["after"]["console"] == [["stdout", "False\n"]], got
    assert session_status(cluster, sess["id"]) == "RUNNING"


def test_stream_execute(sess: dict[str, str], sdk19: SDK) -> None:
    got = sdk19(
        snippet(
            """
        async def main():
            async with AsyncSession() as s:
                out, last = [], None
                async with s.Kernel(NAME).stream_execute('print("s19")') as ws:
                    async for msg in ws:
                        last = json.loads(msg.data)
                        out += [c[1] for c in last.get('console') or [] if c[0] == 'stdout']
                        if last.get('status') == 'finished':
                            break
                return {'out': ''.join(out), 'status': last and last.get('status')}
        emit(asyncio.new_event_loop().run_until_complete(main()))
    """,
            NAME=sess["name"],
        )
    )
    assert got == {"out": "s19\n", "status": "finished"}


def test_stream_pty(sess: dict[str, str], sdk19: SDK) -> None:
    got = sdk19(
        snippet(
            """
        async def main():
            async with AsyncSession() as s:
                buf = b''
                async with s.Kernel(NAME).stream_pty() as pty:
                    cmd = b'echo pty19-$((6*7))\\n'
                    await pty.send_str(json.dumps({'type': 'stdin', 'chars': base64.b64encode(cmd).decode()}))
                    deadline = time.monotonic() + 30
                    while b'pty19-42' not in buf and time.monotonic() < deadline:
                        ev = json.loads(await asyncio.wait_for(pty.receive_str(), 30))
                        if ev['type'] == 'out':
                            buf += base64.b64decode(ev['data'])
                return buf.decode(errors='replace')
        emit(asyncio.new_event_loop().run_until_complete(main()))
    """,
            NAME=sess["name"],
        )
    )
    assert "pty19-42" in got, got


def test_destroy(sdk22: SDK, sdk19: SDK, cluster: Cluster) -> None:
    name = unique("cs-19kd")
    sdk22(
        snippet22(
            """
        with Session() as s:
            emit(str(s.ComputeSession.get_or_create('python', name=NAME, resources=RES).id))
    """,
            NAME=name,
            RES=RES,
        )
    )
    try:
        got = sdk19(
            snippet(
                """
            with Session() as s:
                emit(s.Kernel(NAME).destroy())
        """,
                NAME=name,
            )
        )
        assert isinstance(got["stats"], dict), got
        assert gone(wait_status(cluster, name, gone, 30))
    finally:
        destroy(cluster, name)


def test_stream_events(sdk22: SDK, sdk19: SDK, cluster: Cluster) -> None:
    """FAIL R15: ``GET /stream/kernel/_/events?sessionId=...``."""
    name = unique("cs-19ke")
    sid = sdk22(
        snippet22(
            """
        with Session() as s:
            emit(str(s.ComputeSession.get_or_create('python', name=NAME, resources=RES).id))
    """,
            NAME=name,
            RES=RES,
        )
    )
    try:
        got = sdk19(
            snippet(
                """
            async def main():
                async with AsyncSession() as s:
                    k = s.Kernel(NAME)
                    events = []
                    async with k.stream_events() as resp:
                        task = asyncio.ensure_future(k.destroy())
                        async def collect():
                            async for ev in resp.fetch_events():
                                events.append([ev['event'], json.loads(ev['data'])])
                                if ev['event'] in ('session_terminated', 'kernel_terminated'):
                                    break
                        try:
                            await asyncio.wait_for(collect(), 60)
                        except asyncio.TimeoutError:
                            pass
                        await task
                    return events
            emit(asyncio.new_event_loop().run_until_complete(main()))
        """,
                NAME=name,
            )
        )
        names = [e[0] for e in got]
        assert any(n.endswith("_terminated") for n in names), got
        assert all(e[1].get("sessionId") in (sid, name) or e[1].get("sessionName") == name for e in got), got
    finally:
        destroy(cluster, name)


def test_get_task_logs(sdk22: SDK, sdk19: SDK, cluster: Cluster) -> None:
    name = unique("cs-19kt")
    sid = sdk22(
        snippet22(
            """
        with Session() as s:
            emit(str(s.ComputeSession.get_or_create('python', name=NAME, type_='batch', resources=RES,
                                                    startup_command='python3 -c "print(6*7)"').id))
    """,
            NAME=name,
            RES=RES,
        )
    )
    try:
        wait_status(cluster, sid, lambda st: st is None or st in ("TERMINATED", "ERROR"))
        got = sdk19(
            snippet(
                """
            async def main():
                async with AsyncSession() as s:
                    chunks = []
                    async for chunk in s.Kernel.get_task_logs(SID):
                        chunks.append(chunk)
                    return b''.join(chunks).decode()
            emit(asyncio.new_event_loop().run_until_complete(main()))
        """,
                SID=sid,
            )
        )
        assert "42" in got.split(), got
    finally:
        destroy(cluster, sid)


# --- virtual folders ------------------------------------------------------------------------------------------


@pytest.fixture
def vfolder(cluster: Cluster) -> Iterator[str]:
    name = unique("cs-19sdkvf")
    r = cluster.request("POST", "/folders", {"name": name, "host": VOLUME})
    assert r.status_code in (200, 201), r.text
    yield name
    delete_vfolder(cluster, name)


def seed(sdk22: SDK, name: str, workdir: Path, files: dict[str, str]) -> None:
    """Put files into a folder with the 22.03 SDK (an OK row)."""
    src = workdir / "seed"
    src.mkdir(exist_ok=True)
    for fn, text in files.items():
        (src / fn).parent.mkdir(parents=True, exist_ok=True)
        (src / fn).write_text(text)
    sdk22(
        snippet22(
            """
        with Session() as s:
            for f in FILES:
                s.VFolder(NAME).upload([f])
            emit(1)
    """,
            NAME=name,
            FILES=list(files),
        ),
        cwd=src,
    )


def test_vfolder_basics(sdk19: SDK, cluster: Cluster) -> None:
    name, new, other = unique("cs-19sdkvf"), unique("cs-19sdkvfr"), unique("cs-19sdkvfo")
    try:
        got = sdk19(
            snippet(
                """
            with Session() as s:
                c = s.VFolder.create(NAME, HOST)
                o = s.VFolder.create(OTHER, HOST)
                listed = [f['name'] for f in s.VFolder.list()]
                hosts = s.VFolder.list_hosts()
                types = s.VFolder.list_allowed_types()
                info = s.VFolder(NAME).info()
                s.VFolder(NAME).mkdir('d19')
                s.VFolder(NAME).rename(NEW)
                emit({'c': c, 'o': o, 'listed': listed, 'hosts': hosts, 'types': types, 'info': info})
        """,
                NAME=name,
                OTHER=other,
                NEW=new,
                HOST=VOLUME,
            )
        )
        assert got["c"]["name"] == name and name in got["listed"] and other in got["listed"]
        assert VOLUME in got["hosts"]["allowed"] and "user" in got["types"]
        assert got["info"]["name"] == name
        mine = vfolders(cluster)
        assert new in mine and name not in mine
        assert vf_names(cluster, new) == {"d19"}
        sdk19(
            snippet(
                """
            with Session() as s:
                s.VFolder(NEW).delete()
                s.VFolder.delete_by_id(OID)
                emit(1)
        """,
                NEW=new,
                OID=got["o"]["id"],
            )
        )
        mine = vfolders(cluster)
        assert new not in mine and other not in mine
    finally:
        for n in (name, new, other):
            delete_vfolder(cluster, n)


def test_vfolder_upload(vfolder: str, sdk19: SDK, workdir: Path, cluster: Cluster) -> None:
    """FAIL R7: ``POST /folders/{name}/upload`` (multipart)."""
    (workdir / "v19.txt").write_text("v19 upload\n")
    sdk19(
        snippet(
            """
        with Session() as s:
            s.VFolder(NAME).upload(['v19.txt'])
            emit(1)
    """,
            NAME=vfolder,
        ),
        cwd=workdir,
    )
    r = cluster.request("GET", f"/folders/{vfolder}/files?path=.")
    files = r.json()["files"]
    entries = {e["filename"]: e for e in (json.loads(files) if isinstance(files, str) else files)}
    assert entries["v19.txt"]["size"] == len("v19 upload\n")


def test_vfolder_list_files(vfolder: str, sdk19: SDK, sdk22: SDK, workdir: Path) -> None:
    """FAIL R6: ``files`` must be a JSON string."""
    seed(sdk22, vfolder, workdir, {"v19.txt": "123"})
    got = sdk19(
        snippet(
            """
        with Session() as s:
            emit(s.VFolder(NAME).list_files('.'))
    """,
            NAME=vfolder,
        )
    )
    assert isinstance(got["files"], str), got
    entries = {e["filename"]: e for e in json.loads(got["files"])}
    assert entries["v19.txt"]["size"] == 3


def test_vfolder_rename_file(vfolder: str, sdk19: SDK, sdk22: SDK, workdir: Path, cluster: Cluster) -> None:
    """FAIL R7: ``POST /folders/{name}/rename_file``."""
    seed(sdk22, vfolder, workdir, {"d19/in.txt": "i"})
    sdk19(
        snippet(
            """
        with Session() as s:
            emit(s.VFolder(NAME).rename_file('d19', 'd19b'))
    """,
            NAME=vfolder,
        )
    )
    assert vf_names(cluster, vfolder) == {"d19b"}


def test_vfolder_download(vfolder: str, sdk19: SDK, sdk22: SDK, workdir: Path) -> None:
    """FAIL R7: ``GET /folders/{name}/download`` answering ``multipart/mixed``."""
    seed(sdk22, vfolder, workdir, {"v19.txt": "download me\n"})
    dest = workdir / "dl"
    dest.mkdir()
    sdk19(
        snippet(
            """
        with Session() as s:
            s.VFolder(NAME).download(['v19.txt'])
            emit(1)
    """,
            NAME=vfolder,
        ),
        cwd=dest,
    )
    assert (dest / "v19.txt").read_text() == "download me\n"


def test_vfolder_delete_files(vfolder: str, sdk19: SDK, sdk22: SDK, workdir: Path, cluster: Cluster) -> None:
    """FAIL R7: ``DELETE /folders/{name}/delete_files``."""
    seed(sdk22, vfolder, workdir, {"d19b/in.txt": "i", "keep.txt": "k"})
    sdk19(
        snippet(
            """
        with Session() as s:
            emit(s.VFolder(NAME).delete_files(['d19b'], recursive=True))
    """,
            NAME=vfolder,
        )
    )
    assert vf_names(cluster, vfolder) == {"keep.txt"}


def test_vfolder_invitations(vfolder: str, sdk19: SDK, user2: Who, cluster: Cluster) -> None:
    sdk19(
        snippet(
            """
        with Session() as s:
            emit(s.VFolder(NAME).invite('ro', [EMAIL]))
    """,
            NAME=vfolder,
            EMAIL=user2["email"],
        )
    )
    got = sdk19(
        snippet(
            """
        with Session() as s:
            mine = [i for i in s.VFolder.invitations()['invitations'] if i['vfolder_name'] == NAME]
            s.VFolder.accept_invitation(mine[0]['id'])
            emit(mine)
    """,
            NAME=vfolder,
        ),
        who=user2,
    )
    assert len(got) == 1 and got[0]["perm"] == "ro"
    assert vfolders(cluster, user2)[vfolder]["permission"] == "ro"
    cluster.request("POST", f"/folders/{vfolder}/leave", who=user2)
    sdk19(
        snippet(
            """
        with Session() as s:
            emit(s.VFolder(NAME).invite('rw', [EMAIL]))
    """,
            NAME=vfolder,
            EMAIL=user2["email"],
        )
    )
    got = sdk19(
        snippet(
            """
        with Session() as s:
            mine = [i for i in s.VFolder.invitations()['invitations'] if i['vfolder_name'] == NAME]
            s.VFolder.delete_invitation(mine[0]['id'])
            emit([i for i in s.VFolder.invitations()['invitations'] if i['vfolder_name'] == NAME])
    """,
            NAME=vfolder,
        ),
        who=user2,
    )
    assert got == []
    assert vfolder not in vfolders(cluster, user2)
