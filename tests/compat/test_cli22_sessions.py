"""The official 22.03 CLI against a real cluster: sessions, code execution and session templates.

One test (or one parametrised test) per OK/FAIL row of "1. 22.03 CLI / Sessions, execution, templates" in
``official-client-matrix.md``: ``config``, ``run`` (query, files, build/exec, ranges, input, media, mounts,
``--rm -s``), ``create``/``start`` (options, batch, enqueue/``--starts-at``, reuse and ``--no-reuse``,
``-o``), ``ps`` and its variants and format keys, ``info``, session file commands, ``logs``,
``task-logs``, ``restart``, ``rename``, ``events``, ``destroy`` and its aliases, and ``sesstpl``.
Rows marked N/A, CLIENT and HANG are not tested here. The read-only commands share one module-scoped
session; every state change is checked through the server's own API.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ai.backend.manager.fixtures import ADMIN, USER
from ai.backend.testutils.cluster import Cluster

from .conftest import CLI, Run, Who, unique

RES = ("-r", "cpu=1", "-r", "mem=256m")  # keep every session small
DEAD = ("TERMINATED", "CANCELLED")


# --- helpers -----------------------------------------------------------------------------------------


def info_of(cluster: Cluster, ref: str, who: Who = USER) -> dict[str, Any] | None:
    """The session document of ``GET /session/{ref}``, or None when the server does not know it."""
    r = cluster.request("GET", f"/session/{ref}", who=who)
    if r.status_code == 404:
        return None
    assert r.status_code == 200, f"GET /session/{ref}: {r.status_code} {r.text}"
    return r.json()


def api_create(cluster: Cluster, name: str, who: Who = USER, **extra: Any) -> dict[str, Any]:
    """Create a small python session with our own API (waits until it runs unless enqueue-only)."""
    body = {"image": "python", "name": name, "config": {"resources": {"cpu": "1", "mem": "256m"}}, **extra}
    r = cluster.request("POST", "/session", body, who=who)
    assert r.status_code in (200, 201), f"creating {name}: {r.status_code} {r.text}"
    return r.json()


def reserved_at() -> str:
    """An ISO 8601 start time one hour ahead (a session reserved for it stays PENDING, using nothing)."""
    return (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")


def cleanup(cluster: Cluster, *refs: str, who: Who = USER) -> None:
    """Destroy whatever is still alive of ``refs`` (names or ids); errors are ignored."""
    for ref in refs:
        try:
            doc = info_of(cluster, ref, who)
            if doc is not None and doc["status"] not in DEAD:
                cluster.request("DELETE", f"/session/{doc['sessionId']}?forced=true", who=who)
        except Exception:  # noqa: BLE001 - best effort
            pass


def wait_status(
    cluster: Cluster, ref: str, statuses: tuple[str, ...], timeout: float = 60, who: Who = USER
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    doc = None
    while time.monotonic() < deadline:
        doc = info_of(cluster, ref, who)
        if doc is not None and doc["status"] in statuses:
            return doc
        time.sleep(0.5)
    raise AssertionError(f"session {ref} did not reach {statuses}: {doc}")


def table_rows(text: str) -> list[str]:
    """The data rows of a tabulate table (the lines after the dashed header rule)."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.strip() and set(line.strip()) <= {"-", " "}:
            return [ln for ln in lines[i + 1 :] if ln.strip()]
    return []


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def client_log(home: Path, name: str) -> str:
    """What ``run`` with several cases wrote for the session ``name`` (it keeps their stdout in files)."""
    return (home / ".cache" / "backend.ai" / "client-logs" / f"{name}.stdout.log").read_text()


# --- the module's shared sessions -------------------------------------------------------------------


@dataclass
class Shared:
    prefix: str
    run: str  # a RUNNING interactive session (tag cs-tag, FOO=bar), with files made by the fixture
    pend: str  # a PENDING session reserved an hour ahead
    dead: str  # a TERMINATED session
    sid: str  # the running session's id
    kernel_id: str
    user_id: str
    group_id: str


@pytest.fixture(scope="module")
def shared(cluster: Cluster, cli22: CLI) -> Iterator[Shared]:
    prefix = unique("cs22")
    run, pend, dead = f"{prefix}-run", f"{prefix}-pend", f"{prefix}-dead"
    try:
        api_create(cluster, dead)
        cluster.request("DELETE", f"/session/{dead}")
        # The bootstrap script's output is the line the interactive session's log must show.
        doc = api_create(
            cluster,
            run,
            tag="cs-tag",
            bootstrap_script="echo cs-log-marker",
            config={"resources": {"cpu": "1", "mem": "256m"}, "environ": {"FOO": "bar"}},
        )
        api_create(cluster, pend, enqueueOnly=True, starts_at=reserved_at())
        # files for ls/download
        cli22(
            "run",
            "-t",
            run,
            "python",
            "-c",
            "import os; os.makedirs('ddir', exist_ok=True); open('ddir/inner.txt', 'w').write('inner-text');"
            "open('seed.txt', 'w').write('seed-text')",
        ).ok()
        info = info_of(cluster, run)
        assert info is not None
        yield Shared(prefix, run, pend, dead, doc["sessionId"], info["kernelId"], info["userId"], info["groupId"])
    finally:
        cleanup(cluster, run, pend, dead)


@pytest.fixture(scope="module")
def batch_job(cluster: Cluster, cli22: CLI) -> Iterator[tuple[Run, str]]:
    """``create --type batch -c 'python3 -c "print(42)"'``, finished: (the create run, the session id)."""
    name = unique("cs-job")
    try:
        r = cli22("create", "-t", name, "--type", "batch", "-c", 'python3 -c "print(42)"', *RES, "python")
        doc = wait_status(cluster, name, DEAD)
        yield r, doc["sessionId"]
    finally:
        cleanup(cluster, name)


# --- config and run ----------------------------------------------------------------------------------


def test_config(cli22: CLI, cluster: Cluster) -> None:
    out = cli22("config").ok().out
    assert cluster.endpoint in out and USER["access_key"] in out
    assert "Negotiated API version" in out


def test_run_rm_prints_result(cli22: CLI, cluster: Cluster) -> None:
    name = unique("cs-run")
    try:
        r = cli22("run", "--rm", "-t", name, *RES, "python", "-c", "print(6*7)").ok()
        assert "42" in r.stdout.split()
        doc = info_of(cluster, name)
        assert doc is None or doc["status"] in DEAD, doc
    finally:
        cleanup(cluster, name)


def test_run_reuses_session_and_keeps_globals(cli22: CLI, cluster: Cluster) -> None:
    name = unique("cs-run1")
    try:
        r1 = cli22("run", "-t", name, *RES, "python", "-c", "x = 1; print('hi')").ok()
        assert "hi" in r1.stdout
        r2 = cli22("run", "-t", name, "python", "-c", "print(x + 1)").ok()
        assert "2" in r2.stdout.split() and "Reusing session" in r2.out
        assert info_of(cluster, name)["status"] == "RUNNING"  # type: ignore[index]
    finally:
        cleanup(cluster, name)


def test_run_build_and_exec_c(cli22: CLI, workdir: Path, cluster: Cluster) -> None:
    write(workdir / "main.c", '#include <stdio.h>\nint main(void){printf("hello from c %d\\n", 6*7);return 0;}\n')
    name = unique("cs-runb")
    try:
        r = cli22("run", "--rm", "-t", name, *RES, "c", "main.c", "--build", "*", "--exec", "./main", cwd=workdir).ok()
        assert "hello from c 42" in r.stdout
        assert "Build finished. (exit code = 0)" in r.out
    finally:
        cleanup(cluster, name)


def test_run_file_with_env(cli22: CLI, workdir: Path, cluster: Cluster) -> None:
    write(workdir / "main.py", 'import os\nprint("N is", os.environ.get("N"))\n')
    name = unique("cs-runf")
    try:
        r = cli22("run", "--rm", "-t", name, *RES, "python", "main.py", "-e", "N=5", cwd=workdir).ok()
        assert "N is 5" in r.stdout
    finally:
        cleanup(cluster, name)


def test_run_rm_stats(cli22: CLI, cluster: Cluster) -> None:
    """FAIL R3 in the matrix: the destroy answer's ``stats`` needs a ``status`` key."""
    name = unique("cs-runst")
    try:
        r = cli22("run", "--rm", "-s", "-t", name, *RES, "python", "-c", "print(1)").ok()
        assert "Statistics:" in r.out and "cpu_used_msec" in r.out and "mem_max_bytes" in r.out
        assert "Error while printing stats" not in r.out
    finally:
        cleanup(cluster, name)


def test_run_env_range(cli22: CLI, cluster: Cluster, home: Path) -> None:
    name = unique("cs-runr")
    names = [f"{name}-{i}" for i in range(3)]
    try:
        r = cli22(
            "run",
            "--rm",
            "-t",
            name,
            *RES,
            "-e",
            "N=$X",
            "--env-range",
            "X=range:1,4",
            "--max-parallel",
            "2",
            "-c",
            'import os; print("val", int(os.environ["N"]) * 10)',
            "python",
            timeout=150,
        ).ok()
        for i in (1, 2, 3):
            assert f"env = 'N={i}'" in r.out
        assert [client_log(home, n).split() for n in names] == [["val", "10"], ["val", "20"], ["val", "30"]]
        for n in names:
            doc = info_of(cluster, n)
            assert doc is not None and doc["status"] in DEAD, doc
    finally:
        cleanup(cluster, *names)


def test_run_resources_and_tag(cli22: CLI, cluster: Cluster) -> None:
    name = unique("cs-runres")
    try:
        r = cli22(
            "run",
            "--rm",
            "-t",
            name,
            "-r",
            "cpu=1",
            "-r",
            "mem=256m",
            "--tag",
            "cs-tag",
            "python",
            "-c",
            "print('res-ok')",
        ).ok()
        assert "res-ok" in r.stdout
        doc = info_of(cluster, name)
        assert doc is not None and doc["tag"] == "cs-tag"
        assert doc["requestedSlots"]["cpu"] in ("1", 1) and int(doc["requestedSlots"]["mem"]) == 256 * 2**20
    finally:
        cleanup(cluster, name)


def test_run_basedir_quiet(cli22: CLI, workdir: Path, cluster: Cluster) -> None:
    write(workdir / "src" / "main.py", 'print("from basedir")\n')
    name = unique("cs-runbd")
    try:
        r = cli22(
            "run",
            "--rm",
            "-t",
            name,
            *RES,
            "python",
            "src/main.py",
            "--basedir",
            "src",
            "--exec",
            "python3 main.py",
            "-q",
            cwd=workdir,
        ).ok()
        assert r.stdout.strip() == "from basedir"
        assert "Session name prefix" not in r.out  # -q
    finally:
        cleanup(cluster, name)


def test_run_clean_build_exec(cli22: CLI, workdir: Path, cluster: Cluster) -> None:
    write(workdir / "main.py", 'print("main ran")\n')
    name = unique("cs-runcl")
    try:
        r = cli22(
            "run",
            "--rm",
            "-t",
            name,
            *RES,
            "python",
            "main.py",
            "--clean",
            "echo cleaning",
            "--build",
            "echo building",
            "--exec",
            "python3 main.py",
            cwd=workdir,
        ).ok()
        assert r.stdout.split("\n")[:3] == ["cleaning", "building", "main ran"]
    finally:
        cleanup(cluster, name)


def test_run_exec_range(cli22: CLI, workdir: Path, cluster: Cluster, home: Path) -> None:
    write(workdir / "main.py", 'import sys\nprint("arg", sys.argv[1])\n')
    name = unique("cs-runer")
    names = [f"{name}-0", f"{name}-1"]
    try:
        r = cli22(
            "run",
            "--rm",
            "-t",
            name,
            *RES,
            "python",
            "main.py",
            "--exec",
            "python3 main.py $X",
            "--exec-range",
            "X=case:a,b",
            "--max-parallel",
            "1",
            cwd=workdir,
            timeout=150,
        ).ok()
        assert "exec = 'python3 main.py a'" in r.out and "exec = 'python3 main.py b'" in r.out
        assert client_log(home, names[0]).split() == ["arg", "a"]
        assert client_log(home, names[1]).split() == ["arg", "b"]
    finally:
        cleanup(cluster, *names)


def test_run_preopen(cli22: CLI, cluster: Cluster) -> None:
    name = unique("cs-runpp")
    try:
        r = cli22("run", "--rm", "-t", name, *RES, "--preopen", "8080", "python", "-c", "print('pp-ok')").ok()
        assert "pp-ok" in r.stdout
    finally:
        cleanup(cluster, name)


@pytest.fixture
def folder_with_entry(cluster: Cluster) -> Iterator[str]:
    """A user vfolder holding a directory ``sub`` (made with our own API)."""
    name = unique("cs-vf")
    r = cluster.request("POST", "/folders", {"name": name, "host": "local:volume1"})
    assert r.status_code == 201, r.text
    try:
        r = cluster.request("POST", f"/folders/{name}/mkdir", {"path": "sub"})
        assert r.status_code in (200, 201), r.text
        yield name
    finally:
        cluster.request("DELETE", f"/folders/{name}")


def test_run_mount(cli22: CLI, cluster: Cluster, folder_with_entry: str) -> None:
    name = unique("cs-runm")
    vf = folder_with_entry
    try:
        r = cli22(
            "run", "--rm", "-t", name, *RES, "-m", vf, "python", "-c", f"import os; print(os.listdir({vf!r}))"
        ).ok()
        assert "['sub']" in r.stdout
    finally:
        cleanup(cluster, name)


def test_run_user_input(cli22: CLI, cluster: Cluster) -> None:
    name = unique("cs-runin")
    try:
        r = cli22(
            "run", "--rm", "-t", name, *RES, "python", "-c", 'x = input("num? "); print(int(x) * 2)', input="21\n"
        ).ok()
        assert "42" in r.stdout and "num?" in r.stdout
    finally:
        cleanup(cluster, name)


def test_run_stderr_and_exit_code(cli22: CLI, cluster: Cluster) -> None:
    name = unique("cs-runerr")
    try:
        r = cli22(
            "run",
            "--rm",
            "-t",
            name,
            *RES,
            "python",
            "-c",
            "import sys; print('to-stderr', file=sys.stderr); sys.exit(3)",
        )
        assert r.rc == 0, r.describe()
        assert "to-stderr" in r.stderr and "to-stderr" not in r.stdout
        assert "exit code = 3" in r.out
    finally:
        cleanup(cluster, name)


def test_run_media_output(cli22: CLI, cluster: Cluster) -> None:
    name = unique("cs-runmedia")
    try:
        r = cli22(
            "run",
            "--rm",
            "-t",
            name,
            *RES,
            "python",
            "-c",
            "import matplotlib.pyplot as plt; plt.plot([1, 2, 3]); plt.show()",
        ).ok()
        assert "output record (type: media)" in r.stdout
        assert "data:image/png;base64,iVBORw0KGgo" in r.stdout
    finally:
        cleanup(cluster, name)


def test_run_assign_agent_as_admin(cli22: CLI, cluster: Cluster) -> None:
    name = unique("cs-runaa")
    try:
        r = cli22(
            "run",
            "--rm",
            "-t",
            name,
            *RES,
            "--assign-agent",
            cluster.agent_id,
            "python",
            "-c",
            "print('aa-ok')",
            who=ADMIN,
        ).ok()
        assert "aa-ok" in r.stdout
        doc = info_of(cluster, name, who=ADMIN)
        assert doc is not None and doc["agent"] == cluster.agent_id
    finally:
        cleanup(cluster, name, who=ADMIN)


# --- create ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cmd", [("create",), ("start",)], ids=["create", "start"])
def test_create_and_start(cli22: CLI, cluster: Cluster, cmd: tuple[str, ...]) -> None:
    name = unique("cs-s1")
    try:
        r = cli22(*cmd, "-t", name, *RES, "python").ok()
        doc = info_of(cluster, name)
        assert doc is not None and doc["status"] == "RUNNING"
        assert f"Session ID {doc['sessionId']} is created and ready." in r.out
    finally:
        cleanup(cluster, name)


def test_session_create_with_options(cli22: CLI, cluster: Cluster) -> None:
    name = unique("cs-s2")
    try:
        r = cli22(
            "session",
            "create",
            "-t",
            name,
            "-r",
            "cpu=1",
            "-r",
            "mem=256m",
            "-e",
            "FOO=bar",
            "--tag",
            "cs-tag",
            "python",
        ).ok()
        assert "is created and ready" in r.out
        doc = info_of(cluster, name)
        assert doc is not None and doc["status"] == "RUNNING"
        assert doc["tag"] == "cs-tag" and doc["environ"].get("FOO") == "bar"
        assert int(doc["requestedSlots"]["mem"]) == 256 * 2**20
    finally:
        cleanup(cluster, name)


def test_create_batch(batch_job: tuple[Run, str], cluster: Cluster) -> None:
    r, sid = batch_job
    r.ok()
    doc = info_of(cluster, sid)
    assert doc is not None and doc["type"] == "batch"
    assert doc["status"] == "TERMINATED" and doc["result"] == "SUCCESS"


def test_create_enqueue_only(cli22: CLI, cluster: Cluster) -> None:
    name = unique("cs-enq")
    try:
        r = cli22("create", "-t", name, "--enqueue-only", "-r", "cpu=1", "-r", "mem=256m", "python").ok()
        doc = info_of(cluster, name)
        assert doc is not None and doc["status"] not in DEAD + ("ERROR",)
        assert f"Session ID {doc['sessionId']} is enqueued for scheduling." in r.out
    finally:
        cleanup(cluster, name)


def test_create_starts_at_relative(cli22: CLI, cluster: Cluster) -> None:
    """FAIL R14 in the matrix: ``--starts-at 1h`` must reserve the session an hour ahead."""
    name = unique("cs-later2")
    try:
        before = datetime.now(UTC)
        r = cli22("create", "-t", name, "--enqueue-only", "--starts-at", "1h", *RES, "python").ok()
        assert "is enqueued for scheduling" in r.out
        doc = info_of(cluster, name)
        assert doc is not None and doc["status"] == "PENDING"
        starts = datetime.fromisoformat(doc["startsAt"])
        assert abs((starts - before - timedelta(hours=1)).total_seconds()) < 120, doc["startsAt"]
    finally:
        cleanup(cluster, name)


def test_create_starts_at_iso(cli22: CLI, cluster: Cluster) -> None:
    name = unique("cs-later3")
    at = reserved_at()
    try:
        r = cli22("create", "-t", name, "--enqueue-only", "--starts-at", at, *RES, "python").ok()
        assert "is enqueued for scheduling" in r.out
        time.sleep(1.5)  # a scheduler pass: it must leave the session waiting
        doc = info_of(cluster, name)
        assert doc is not None and doc["status"] == "PENDING"
        assert datetime.fromisoformat(doc["startsAt"]) == datetime.fromisoformat(at.replace("Z", "+00:00"))
    finally:
        cleanup(cluster, name)


def test_create_no_reuse_on_used_name(cli22: CLI, shared: Shared) -> None:
    """FAIL R13 in the matrix: the 409 problem needs ``data.existingSessionId``."""
    r = cli22("create", "-t", shared.run, "--no-reuse", *RES, "python")
    assert r.rc == 1, r.describe()
    assert "already exists" in r.out, r.describe()
    assert "Traceback" not in r.out and "KeyError" not in r.out, r.describe()
    assert shared.sid in r.out, r.describe()  # "- Existing session ID: <id>"


def test_create_reuses_used_name(cli22: CLI, shared: Shared, cluster: Cluster) -> None:
    r = cli22("create", "-t", shared.run, *RES, "python").ok()
    assert f"Session ID {shared.sid} is already running and ready." in r.out
    active = [s for s in (info_of(cluster, shared.run),) if s]
    assert active and active[0]["sessionId"] == shared.sid


def test_create_bootstrap_and_depends(cli22: CLI, cluster: Cluster, workdir: Path) -> None:
    write(workdir / "boot.sh", "#!/bin/sh\necho booted > /home/work/booted.txt\n")
    s4, s5 = unique("cs-s4"), unique("cs-s5")
    try:
        cli22(
            "create",
            "-t",
            s4,
            *RES,
            "--bootstrap-script",
            "boot.sh",
            "--resource-opts",
            "shmem=64m",
            "--cluster-size",
            "1",
            "--cluster-mode",
            "single-node",
            "python",
            cwd=workdir,
        ).ok()
        doc = info_of(cluster, s4)
        assert doc is not None and doc["status"] == "RUNNING"
        assert doc["clusterSize"] == 1 and doc["clusterMode"] == "single-node"
        r = cli22("run", "-t", s4, "python", "-c", "print(open('/home/work/booted.txt').read())").ok()
        assert "booted" in r.stdout
        r = cli22(
            "create",
            "-t",
            s5,
            "--depends",
            s4,
            "--callback-url",
            "http://127.0.0.1:9/cb",
            "--enqueue-only",
            *RES,
            "python",
        ).ok()
        doc5 = info_of(cluster, s5)
        assert doc5 is not None and f"Session ID {doc5['sessionId']} is enqueued for scheduling." in r.out
    finally:
        cleanup(cluster, s5, s4)


def test_create_with_volume_mapping(cli22: CLI, cluster: Cluster, folder_with_entry: str) -> None:
    name = unique("cs-s6")
    try:
        cli22("create", "-t", name, *RES, "-v", f"{folder_with_entry}=/home/work/data", "python").ok()
        r = cli22("run", "-t", name, "python", "-c", "import os; print(os.listdir('/home/work/data'))").ok()
        assert "['sub']" in r.stdout
    finally:
        cleanup(cluster, name)


# --- admin-owned operations on a user's session ------------------------------------------------------


def test_admin_create_events_destroy_for_owner(cli22: CLI, cluster: Cluster) -> None:
    """``create -o``, ``events -o`` and ``destroy -o`` by an admin on a session of the user."""
    name = unique("cs-s7")
    ak = USER["access_key"]
    try:
        cli22("create", "-t", name, *RES, "-o", ak, "python", who=ADMIN).ok()
        doc = info_of(cluster, name)  # visible to its owner, the user
        assert doc is not None and doc["ownerAccessKey"] == ak and doc["status"] == "RUNNING"
        events = EventsListener(cli22, ("events", "-o", ak, name), ADMIN)
        r = cli22("destroy", "-o", ak, name, who=ADMIN).ok()
        assert "Done." in r.out
        ev = events.result()
        assert "session_terminated" in ev.out and "server_close" in ev.out, ev.describe()
        assert info_of(cluster, name)["status"] in DEAD  # type: ignore[index]
    finally:
        cleanup(cluster, name)


def test_admin_forced_destroy_for_owner(cli22: CLI, cluster: Cluster) -> None:
    name = unique("cs-s3")
    try:
        api_create(cluster, name)
        r = cli22("destroy", "-f", "-o", USER["access_key"], name, who=ADMIN).ok()
        assert "Done." in r.out
        assert info_of(cluster, name)["status"] in DEAD  # type: ignore[index]
    finally:
        cleanup(cluster, name)


# --- ps ----------------------------------------------------------------------------------------------


def _ps_check(variant: str, r: Run, s: Shared) -> None:
    rows = table_rows(r.stdout)
    if variant == "ps":
        assert "Session ID" in r.stdout and any(s.run in x and "RUNNING" in x for x in rows)
        assert any(s.pend in x for x in rows) and not any(s.dead in x for x in rows)
    elif variant == "detail":
        assert "Occupied Slots" in r.stdout and any(s.run in x and "cs-tag" in x for x in rows)
    elif variant == "json":
        items = {i["name"]: i for i in r.json()["items"]}
        assert items[s.run]["status"] == "RUNNING" and items[s.run]["session_id"] == s.sid
        assert s.pend in items and s.dead not in items
    elif variant == "json-detail":
        item = {i["name"]: i for i in r.json()["items"]}[s.run]
        assert item["tag"] == "cs-tag" and item["occupied_slots"] and item["created_at"]
    elif variant == "name-only":
        assert "Session ID" not in r.stdout and "Image" not in r.stdout
        assert s.run in [x.strip() for x in rows]
    elif variant == "fields":
        assert r.stdout.split()[:3] == ["Name", "Status", "Image"]
        assert any(x.split()[:2] == [s.run, "RUNNING"] and "python" in x for x in rows)
    elif variant == "all-limit":
        assert 1 <= len(rows) <= 3
    elif variant == "pending":
        assert any(s.pend in x and "PENDING" in x for x in rows) and not any(s.run in x for x in rows)
    elif variant == "dead":
        assert 1 <= len(rows) <= 3 and all(("TERMINATED" in x or "CANCELLED" in x) for x in rows)
        assert not any(s.run in x for x in rows)
    elif variant == "running":
        assert any(s.run in x for x in rows) and not any(s.pend in x for x in rows)
    elif variant == "filter-order":
        assert [x.split()[0] for x in rows] == [s.pend, s.run]
    elif variant == "offset-limit":
        assert len(rows) == 1
    else:  # pragma: no cover
        raise AssertionError(variant)


PS_VARIANTS = {
    "ps": ["ps"],
    "detail": ["ps", "--detail"],
    "json": ["--output", "json", "ps"],
    "json-detail": ["--output", "json", "ps", "--detail"],
    "name-only": ["ps", "--name-only"],
    "fields": ["ps", "-f", "name,status,image"],
    "all-limit": ["ps", "-s", "ALL", "--limit", "3"],
    "pending": ["ps", "-s", "PENDING"],
    "dead": ["ps", "--dead", "--limit", "3"],
    "running": ["session", "list", "--running"],
    "filter-order": ["ps", "--filter", 'name like "{prefix}%"', "--order", "-created_at"],
    "offset-limit": ["ps", "--offset", "1", "--limit", "1"],
}


@pytest.mark.parametrize("variant", list(PS_VARIANTS))
def test_ps_variants(cli22: CLI, shared: Shared, variant: str) -> None:
    args = [a.format(prefix=shared.prefix) for a in PS_VARIANTS[variant]]
    r = cli22(*args).ok()
    try:
        _ps_check(variant, r, shared)
    except (AssertionError, KeyError) as e:
        raise AssertionError(f"{e}\n{r.describe()}") from None


# Every format key of the 22.03 client's ``session_fields`` except its own typo ``resoucre_opts`` (CLIENT);
# ``created_user_id`` (R16) and ``containers`` (R1) are FAIL rows. Value: what the running session shows.
PS_FIELDS = [
    "kernel_id",
    "tag",
    "name",
    "type",
    "session_id",
    "image",
    "registry",
    "cluster_template",
    "cluster_mode",
    "cluster_size",
    "domain_name",
    "group_name",
    "group_id",
    "user_email",
    "user_id",
    "access_key",
    "created_user_email",
    "created_user_id",
    "status",
    "status_info",
    "status_data",
    "status_changed",
    "created_at",
    "terminated_at",
    "starts_at",
    "startup_command",
    "result",
    "scaling_group",
    "mounts",
    "occupied_slots",
    "containers",
    "dependencies",
]


def _field_expect(field: str, s: Shared) -> list[str]:
    """Strings one of which the session's row must show for ``field`` (empty: anything)."""
    return {
        "tag": ["cs-tag"],
        "type": ["interactive"],
        "session_id": [s.sid],
        "image": ["python"],
        "cluster_mode": ["single-node"],
        "cluster_size": ["1"],
        "domain_name": ["default"],
        "group_name": ["default"],
        "group_id": [s.group_id],
        "user_email": [USER["email"]],
        "user_id": [s.user_id],
        "access_key": [USER["access_key"]],
        "created_user_email": [USER["email"]],
        "created_user_id": [s.user_id],
        "status": ["RUNNING"],
        "result": ["UNDEFINED"],
        "occupied_slots": ["cpu:1"],
        "containers": [s.kernel_id, s.sid],
        "dependencies": ["no dependency"],
    }.get(field, [])


@pytest.mark.parametrize("field", PS_FIELDS)
def test_ps_format_field(cli22: CLI, shared: Shared, field: str) -> None:
    fmt = "name" if field == "name" else f"name,{field}"
    r = cli22("ps", "-f", fmt, "--filter", f'name == "{shared.run}"').ok()
    assert shared.run in r.stdout, r.describe()
    want = _field_expect(field, shared)
    assert not want or any(w in r.stdout for w in want), r.describe()


# --- info --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cmd", [("info",), ("session", "info")], ids=["info", "session-info"])
def test_info(cli22: CLI, shared: Shared, cmd: tuple[str, ...]) -> None:
    """FAIL R1 in the matrix: ``ComputeContainer.status_data`` is missing."""
    r = cli22(*cmd, shared.sid).ok()
    for want in (shared.run, shared.sid, "cs-tag", "RUNNING", "python"):
        assert want in r.stdout, r.describe()


def test_info_json(cli22: CLI, shared: Shared) -> None:
    """FAIL R1 in the matrix."""
    item = cli22("--output", "json", "session", "info", shared.sid).ok().json()["items"][0]
    assert item["name"] == shared.run and item["session_id"] == shared.sid
    assert item["status"] == "RUNNING" and item["tag"] == "cs-tag"
    assert isinstance(item["containers"], list) and len(item["containers"]) == 1


# --- session files and logs --------------------------------------------------------------------------


def test_session_upload(cli22: CLI, shared: Shared, workdir: Path) -> None:
    write(workdir / "data.csv", "a,b\n1,2\n")
    write(workdir / "main.py", "print('uploaded main')\n")
    r = cli22("session", "upload", shared.run, "data.csv", "main.py", cwd=workdir).ok()
    assert "Uploaded." in r.out
    check = cli22(
        "run",
        "-t",
        shared.run,
        "python",
        "-c",
        "print(repr(open('data.csv').read())); print(repr(open('main.py').read()))",
    ).ok()
    assert "'a,b\\n1,2\\n'" in check.stdout and "\"print('uploaded main')\\n\"" in check.stdout


@pytest.mark.parametrize("path", [".", "/home/work"])
def test_session_ls(cli22: CLI, shared: Shared, path: str) -> None:
    r = cli22("session", "ls", shared.run, path).ok()
    rows = {x.split()[0]: x for x in table_rows(r.stdout)}
    assert "seed.txt" in rows and "9 Bytes" in rows["seed.txt"], r.describe()
    assert "ddir" in rows and rows["ddir"].split()[-1].startswith("d"), r.describe()


def test_session_download_files(cli22: CLI, shared: Shared, workdir: Path) -> None:
    cli22(
        "run", "-t", shared.run, "python", "-c", "open('dl1.txt', 'w').write('one'); open('dl2.txt', 'w').write('two')"
    ).ok()
    r = cli22("session", "download", shared.run, "dl1.txt", "dl2.txt", "--dest", "dl", cwd=workdir).ok()
    assert "Downloaded to" in r.out
    assert (workdir / "dl" / "dl1.txt").read_text() == "one" and (workdir / "dl" / "dl2.txt").read_text() == "two"


def test_session_download_directory(cli22: CLI, shared: Shared, workdir: Path) -> None:
    cli22("session", "download", shared.run, "ddir", "--dest", "dl", cwd=workdir).ok()
    assert (workdir / "dl" / "ddir" / "inner.txt").read_text() == "inner-text"


def test_session_logs_interactive(cli22: CLI, shared: Shared) -> None:
    r = cli22("session", "logs", shared.run).ok()
    assert "cs-log-marker" in r.stdout and "End of logs." in r.out


def test_session_logs_batch(cli22: CLI, batch_job: tuple[Run, str]) -> None:
    r = cli22("session", "logs", batch_job[1]).ok()
    assert "42" in r.stdout.split()


def test_task_logs(cli22: CLI, batch_job: tuple[Run, str]) -> None:
    r = cli22("task-logs", batch_job[1]).ok()
    assert "42" in r.stdout.split()


# --- restart, rename, events, destroy ----------------------------------------------------------------


@pytest.mark.parametrize("cmd", [("restart",), ("session", "restart")], ids=["restart", "session-restart"])
def test_restart(cli22: CLI, cluster: Cluster, cmd: tuple[str, ...]) -> None:
    name = unique("cs-rs")
    try:
        api_create(cluster, name)
        cli22("run", "-t", name, "python", "-c", "x = 5").ok()
        r = cli22(*cmd, name).ok()
        assert "Done." in r.out
        assert info_of(cluster, name)["status"] == "RUNNING"  # type: ignore[index]
        after = cli22("run", "-t", name, "python", "-c", "print(x)")  # a fresh kernel: x is gone
        assert after.rc == 0 and "NameError" in after.out, after.describe()
    finally:
        cleanup(cluster, name)


def test_session_rename(cli22: CLI, cluster: Cluster) -> None:
    """FAIL R10 in the matrix: ``POST /session/{name}/rename?name=NEW`` is missing."""
    old, new = unique("cs-s2"), unique("cs-s2r")
    try:
        sid = api_create(cluster, old)["sessionId"]
        r = cli22("session", "rename", old, new).ok()
        assert f"Session renamed to {new}." in r.out
        doc = info_of(cluster, new)
        assert doc is not None and doc["sessionId"] == sid and doc["sessionName"] == new
        assert info_of(cluster, old) is None
    finally:
        cleanup(cluster, old, new)


class EventsListener:
    """Runs an ``events`` command in a thread (it ends when the server closes the stream)."""

    def __init__(self, cli22: CLI, args: tuple[str, ...], who: Who = USER) -> None:
        self.run: Run | None = None
        self.thread = threading.Thread(target=self._go, args=(cli22, args, who), daemon=True)
        self.thread.start()
        time.sleep(4)  # let it subscribe before anything happens

    def _go(self, cli22: CLI, args: tuple[str, ...], who: Who) -> None:
        self.run = cli22(*args, who=who, timeout=60)

    def result(self) -> Run:
        self.thread.join(70)
        assert self.run is not None, "the events command did not end"
        return self.run


def test_events_while_destroyed(cli22: CLI, cluster: Cluster) -> None:
    """``events NAME`` and ``events --scope session NAME`` while ``session destroy NAME`` runs."""
    name = unique("cs-ev")
    try:
        api_create(cluster, name)
        all_ev = EventsListener(cli22, ("events", name))
        sess_ev = EventsListener(cli22, ("session", "events", "--scope", "session", name))
        cli22("session", "destroy", name).ok()
        a, s = all_ev.result(), sess_ev.result()
        for ev in ("kernel_terminated", "session_terminated", "server_close"):
            assert ev in a.out, a.describe()
        assert "session_terminated" in s.out and "server_close" in s.out, s.describe()
        assert "kernel_terminated" not in s.out, s.describe()
        assert name in a.out
    finally:
        cleanup(cluster, name)


@pytest.mark.parametrize(
    "cmd,count",
    [(("session", "destroy"), 1), (("rm",), 1), (("kill",), 1), (("rm",), 2)],
    ids=["session-destroy", "rm", "kill", "rm-two"],
)
def test_destroy_aliases(cli22: CLI, cluster: Cluster, cmd: tuple[str, ...], count: int) -> None:
    names = [unique("cs-d") for _ in range(count)]
    try:
        if count == 1:
            api_create(cluster, names[0])
        else:  # reserved ones, as in the matrix (cs-later, cs-enq)
            for n in names:
                api_create(cluster, n, enqueueOnly=True, starts_at=reserved_at())
        r = cli22(*cmd, *names).ok()
        assert "Done." in r.out
        for n in names:
            assert info_of(cluster, n)["status"] in DEAD  # type: ignore[index]
    finally:
        cleanup(cluster, *names)


def test_kill_stats(cli22: CLI, cluster: Cluster) -> None:
    """FAIL R3 in the matrix: the destroy answer's ``stats`` needs a ``status`` key."""
    name = unique("cs-ks")
    try:
        api_create(cluster, name)
        r = cli22("kill", "-s", name).ok()
        assert "cpu_used_msec" in r.stdout and "mem_max_bytes" in r.stdout
        assert info_of(cluster, name)["status"] in DEAD  # type: ignore[index]
    finally:
        cleanup(cluster, name)


# --- session templates -------------------------------------------------------------------------------


def template_yaml(name: str, foo: str = "bar") -> str:
    return (
        f"api_version: v1\nkind: taskTemplate\nmetadata:\n  name: {name}\n  tag: cs-tag\nspec:\n"
        f"  kernel:\n    environ:\n      FOO: {foo}\n    image: python\n  resources:\n    cpu: '1'\n"
        f"    mem: 256m\n  sessionType: interactive\n"
    )


def templates_named(cluster: Cluster, name: str) -> list[dict[str, Any]]:
    r = cluster.request("GET", "/template/session")
    assert r.status_code == 200, r.text
    return [t for t in r.json() if t.get("name") == name]


def delete_templates(cluster: Cluster, name: str) -> None:
    for t in templates_named(cluster, name):
        cluster.request("DELETE", f"/template/session/{t['id']}")


def api_template(cluster: Cluster, name: str) -> str:
    r = cluster.request("POST", "/template/session", {"payload": template_yaml(name)})
    assert r.status_code in (200, 201), r.text
    body = r.json()
    return str((body[0] if isinstance(body, list) else body)["id"])


def _same_id(a: str, b: str) -> bool:
    try:
        return uuid.UUID(a) == uuid.UUID(b)
    except ValueError:
        return a == b


@pytest.mark.parametrize("source", ["file", "stdin"])
def test_sesstpl_create(cli22: CLI, cluster: Cluster, workdir: Path, source: str) -> None:
    """FAIL R11 in the matrix: the create answer must be ``{"id", "user"}``, not a list."""
    name = unique("cs-tpl")
    try:
        if source == "file":
            write(workdir / "tpl.yaml", template_yaml(name))
            r = cli22("session-template", "create", "-f", "tpl.yaml", cwd=workdir)
        else:
            r = cli22("sesstpl", "create", input=template_yaml(name))
        r.ok()
        stored = templates_named(cluster, name)
        assert len(stored) == 1, stored
        printed = r.out.split("Task template ", 1)[1].split()[0]
        assert _same_id(printed, stored[0]["id"]) and "created and ready" in r.out
    finally:
        delete_templates(cluster, name)


@pytest.fixture
def template(cluster: Cluster) -> Iterator[tuple[str, str]]:
    """A template of the user made with our own API: (name, id)."""
    name = unique("cs-tpl")
    tid = api_template(cluster, name)
    try:
        yield name, tid
    finally:
        delete_templates(cluster, name)


@pytest.mark.parametrize(
    "args,who", [(("sesstpl", "list"), USER), (("sesstpl", "list", "-a"), ADMIN)], ids=["list", "list-all-admin"]
)
def test_sesstpl_list(cli22: CLI, template: tuple[str, str], args: tuple[str, ...], who: Who) -> None:
    r = cli22(*args, who=who).ok()
    row = [x for x in table_rows(r.stdout) if template[0] in x]
    assert len(row) == 1 and template[1].replace("-", "") in row[0].replace("-", ""), r.describe()


def test_sesstpl_get(cli22: CLI, template: tuple[str, str]) -> None:
    name, tid = template
    y = cli22("sesstpl", "get", tid).ok().stdout
    assert f"name: {name}" in y and "FOO: bar" in y and "image: python" in y
    j = json.loads(cli22("sesstpl", "get", "-f", "json", tid).ok().stdout)
    assert j["template"]["metadata"]["name"] == name
    assert j["template"]["spec"]["kernel"]["environ"] == {"FOO": "bar"}


@pytest.mark.parametrize("source", ["file", "stdin"])
def test_sesstpl_update(cli22: CLI, cluster: Cluster, template: tuple[str, str], workdir: Path, source: str) -> None:
    name, tid = template
    if source == "file":
        write(workdir / "tpl2.yaml", template_yaml(name, foo="baz"))
        r = cli22("sesstpl", "update", tid, "-f", "tpl2.yaml", cwd=workdir).ok()
    else:
        r = cli22("sesstpl", "update", tid, input=template_yaml(name, foo="baz")).ok()
    assert "updated" in r.out
    got = cluster.request("GET", f"/template/session/{tid}")
    assert got.status_code == 200, got.text
    assert got.json()["template"]["spec"]["kernel"]["environ"] == {"FOO": "baz"}, got.text


@pytest.mark.parametrize("how", ["force", "confirm"])
def test_sesstpl_delete(cli22: CLI, cluster: Cluster, template: tuple[str, str], how: str) -> None:
    name, tid = template
    if how == "force":
        r = cli22("sesstpl", "delete", tid, "-f").ok()
    else:
        r = cli22("sesstpl", "delete", tid, input="y\n").ok()
    assert "deleted" in r.out
    assert templates_named(cluster, name) == []
    assert cluster.request("GET", f"/template/session/{tid}").status_code == 404
