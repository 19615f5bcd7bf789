"""Sessions cannot fill the host disk: a bounded scratch space per session and folder quotas that hold for
writes from sessions (ADR 0009). Real manager, agent, storage proxy and containers."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ai.backend.testutils.cluster import Cluster, launch_cluster

from .conftest import USER

pytestmark = pytest.mark.docker

SCRATCH = 64 * 1024 * 1024

# Writes 1 MiB blocks until the file system refuses; prints the errno's name and the MiB written.
FILL = """
import errno, os
written = 0
try:
    with open({path!r}, 'wb') as f:
        for _ in range({mib}):
            f.write(b'x' * (1 << 20))
            f.flush()
            os.fsync(f.fileno())
            written += 1
    print('no error', written)
except OSError as e:
    print(errno.errorcode.get(e.errno, e.errno), written)
"""


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A cluster whose agent gives each session 64 MiB of scratch (no spare containers, so that the test's
    session is created with this agent's settings straight away)."""
    c = launch_cluster(tmp_path_factory.mktemp("disklimits"), container_settings={"scratch-size": "64m"})
    try:
        yield c
    finally:
        c.shutdown()


def _run(cluster: Cluster, sess: str, code: str) -> str:
    """Run ``code`` to the end: a slow run (fsyncs on a loaded machine) answers ``continued`` first, and is
    followed with ``mode: continue`` as a client would."""
    body: dict[str, Any] = {"mode": "query", "code": code}
    out: list[str] = []
    for _ in range(60):
        r = cluster.request("POST", f"/session/{sess}", body)
        assert r.status_code == 200, r.text
        result = r.json()["result"]
        out += [item[1] for item in result["console"] if item[0] == "stdout"]
        if result["status"] != "continued":
            assert result["status"] == "finished", result
            return "".join(out)
        body = {"mode": "continue", "runId": result["runId"], "code": ""}
    raise AssertionError(f"the run did not finish: {result}")


def _start(cluster: Cluster, **config: Any) -> str:
    sess = f"disk-{secrets.token_hex(3)}"
    r = cluster.request("POST", "/session", {"image": "python", "name": sess, "config": config})
    assert r.status_code == 201 and r.json()["status"] == "RUNNING", r.text
    return sess


def _allocated(path: Path) -> int:
    """Bytes the host file system holding ``path`` has allocated for it and everything below it (other file
    systems mounted below, such as a scratch image's own, are not entered: their blocks are in the image)."""
    dev = path.lstat().st_dev
    total = 0
    for p in [path, *path.rglob("*")]:
        st = p.lstat()
        if st.st_dev == dev:
            total += st.st_blocks * 512
    return total


def test_scratch_is_bounded_and_the_session_lives_on(small: Cluster) -> None:
    sess = _start(small)
    info = small.request("GET", f"/session/{sess}").json()
    scratch = small.state / "scratches" / info["kernelId"]
    before = _allocated(scratch)
    # /home/work, /tmp and /var/tmp share the limit: 100 MiB do not fit in 64 MiB anywhere.
    out = _run(small, sess, FILL.format(path="/home/work/big", mib=100))
    code, written = out.split()
    assert code == "ENOSPC" and 50 <= int(written) < 64, out
    assert _run(small, sess, FILL.format(path="/tmp/more", mib=20)).split()[0] == "ENOSPC"
    # Nothing else is writable: the image's files and the container layer are read-only.
    out = _run(
        small,
        sess,
        "for p in ('/big', '/usr/lib/x', '/opt/x'):\n"
        "    try:\n        open(p, 'w')\n    except OSError as e:\n        print(e.errno)",
    )
    assert out.split() == ["30", "30", "30"], out  # EROFS
    # The host grew by at most the limit.
    assert _allocated(scratch) - before <= SCRATCH + (1 << 20)
    # The session is still usable: deleting frees the space again.
    assert _run(small, sess, "import os\nos.remove('/home/work/big')\nos.remove('/tmp/more')\nprint(1)") == "1\n"
    assert _run(small, sess, FILL.format(path="/home/work/again", mib=10)) == "no error 10\n"
    # session info (REST and CLI) shows the limit and the use.
    deadline = time.monotonic() + 15
    stats: dict[str, Any] = {}
    while time.monotonic() < deadline:
        stats = small.request("GET", f"/session/{sess}").json().get("stats") or {}
        if stats.get("io_cur_scratch_size", 0) >= 10 << 20:
            break
        time.sleep(0.5)
    assert stats.get("io_max_scratch_size") == SCRATCH, stats
    assert 10 << 20 <= stats["io_cur_scratch_size"] < SCRATCH, stats
    cli = subprocess.run(
        [sys.executable, "-m", "ai.backend.client.cli", "--output", "json", "session", "info", sess],
        capture_output=True,
        text=True,
        env=small.env(USER),
        timeout=60,
    )
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["stats"]["io_max_scratch_size"] == SCRATCH
    assert small.request("DELETE", f"/session/{sess}").status_code == 200
    # The image is unmounted and removed with the session.
    deadline = time.monotonic() + 15
    while scratch.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not scratch.exists()
    assert str(scratch) not in Path("/proc/self/mountinfo").read_text()


def test_folder_quota_holds_for_writes_from_sessions(small: Cluster) -> None:
    name = f"q-{secrets.token_hex(3)}"
    r = small.request("POST", "/folders", {"name": name, "quota": 10 * 1024 * 1024})
    assert r.status_code == 201, r.text
    folder = r.json()
    sess = _start(small, mounts=[name])
    out = _run(small, sess, FILL.format(path=f"/home/work/{name}/big", mib=30))
    code, written = out.split()
    assert code in ("ENOSPC", "EDQUOT") and 8 <= int(written) <= 11, out
    assert _run(small, sess, "print(1)") == "1\n"
    assert small.request("DELETE", f"/session/{sess}").status_code == 200
    # The folder keeps what fitted; the host holds no more than the quota.
    assert small.storage is not None
    usage = small.storage.request("GET", "/folder/usage", {"volume": "volume1", "vfid": folder["id"]}).json()
    assert 8 << 20 <= usage["used_bytes"] <= (10 << 20) + (1 << 20), usage
    assert _allocated(small.storage.folder_path(folder["id"])) <= (10 << 20) + (1 << 20)
    assert small.request("DELETE", f"/folders/{name}").status_code in (200, 204)
