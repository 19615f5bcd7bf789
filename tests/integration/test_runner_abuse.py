"""Output kept however a run ends, and the agent and manager kept safe from what runs in a container.

Real containers.  Each attack runs while a neighbour session executes ``print(1)`` in a loop; the
neighbour's worst latency is printed (``pytest -s``) and must stay reasonable.  The memory of the
manager and the agent is sampled from ``/proc/<pid>/status`` while an attack runs.
"""

from __future__ import annotations

import ctypes
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from .conftest import Cluster

pytestmark = pytest.mark.docker

MiB = 1024 * 1024
#: How much the manager's or the agent's resident memory may grow during an attack.
RSS_GROWTH_LIMIT = 150 * MiB
#: The worst latency of the neighbour's ``print(1)`` during an attack.
NEIGHBOUR_LIMIT = 5.0


def _run(
    cluster: Cluster, name: str, code: str, run_id: str, opts: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Execute ``code`` and follow it with ``continue`` until it ends; every answer."""
    seen = [cluster.exec(name, code, run_id=run_id, options=opts, timeout=300)]
    while seen[-1]["status"] not in ("finished", "exec-timeout"):
        seen.append(cluster.exec(name, mode="continue", run_id=run_id, timeout=300))
    return seen


def _text(answers: list[dict[str, Any]], stream: str = "stdout") -> str:
    return "".join(item[1] for r in answers for item in r["console"] if item[0] == stream)


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class Watch:
    """Samples the servers' RSS and the neighbour's ``print(1)`` latency while an attack runs."""

    def __init__(self, cluster: Cluster, neighbour: str) -> None:
        self.cluster = cluster
        self.neighbour = neighbour
        self.pids = {name: p.pid for name, p in cluster.procs.items() if name in ("manager", "agent")}
        self.base = {name: _rss(pid) for name, pid in self.pids.items()}
        self.peak = dict(self.base)
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._sample, daemon=True),
            threading.Thread(target=self._neighbour, daemon=True),
        ]

    def _sample(self) -> None:
        while not self._stop.is_set():
            for name, pid in self.pids.items():
                self.peak[name] = max(self.peak[name], _rss(pid))
            time.sleep(0.01)

    def _neighbour(self) -> None:
        while not self._stop.is_set():
            t = time.monotonic()
            res = self.cluster.exec(self.neighbour, "print(1)", timeout=300)
            self.latencies.append(time.monotonic() - t)
            assert res["console"] == [["stdout", "1\n"]], res
            time.sleep(0.05)

    def __enter__(self) -> Watch:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)

    def check(self, label: str) -> None:
        growth = {name: self.peak[name] - self.base[name] for name in self.pids}
        worst = max(self.latencies, default=0.0)
        print(
            f"\n[{label}] RSS growth: "
            + ", ".join(f"{n} {g / MiB:.0f} MiB" for n, g in growth.items())
            + f"; neighbour print(1): {len(self.latencies)} runs, worst {worst * 1000:.0f} ms,"
            f" median {sorted(self.latencies)[len(self.latencies) // 2] * 1000 if self.latencies else 0:.0f} ms"
        )
        assert self.latencies, "the neighbour never got an answer"
        assert worst < NEIGHBOUR_LIMIT, (label, worst)
        for name, g in growth.items():
            assert g < RSS_GROWTH_LIMIT, (label, name, g / MiB)


@pytest.fixture(scope="module")
def neighbour(cluster: Cluster) -> Iterator[str]:
    cluster.create_session("abuse-nb", config={"resources": {"mem": "256m"}})
    yield "abuse-nb"
    cluster.request("DELETE", "/session/abuse-nb")


@pytest.fixture
def watch(cluster: Cluster, neighbour: str) -> Callable[[], Watch]:
    return lambda: Watch(cluster, neighbour)


# --------------------------------------------------------------------------------------------
# Output before the end of a run
# --------------------------------------------------------------------------------------------


def test_output_before_an_oom_kill_reaches_the_user(cluster: Cluster, watch: Callable[[], Watch]) -> None:
    cluster.create_session("abuse-oom", config={"resources": {"mem": "512m"}})
    try:
        with watch() as w:
            answers = _run(
                cluster,
                "abuse-oom",
                "print('STARTED', flush=True)\nprint('UNFLUSHED')\nb = bytearray(3 * 1024**3)",
                "oom1",
            )
        w.check("oom")
    finally:
        cluster.request("DELETE", "/session/abuse-oom")
    out, err = _text(answers), _text(answers, "stderr")
    assert "STARTED\n" in out and "UNFLUSHED\n" in out, answers
    assert "out-of-memory" in err, answers


def test_output_before_a_timeout_is_kept(cluster: Cluster, neighbour: str) -> None:
    # sum() over a range holds the GIL: no helper thread of the Python process runs before the kill.
    answers = _run(cluster, neighbour, "print('BEFORE-TIMEOUT')\nsum(range(10**12))", "to1", {"timeout": 1.5})
    assert answers[-1]["status"] == "exec-timeout", answers
    assert "BEFORE-TIMEOUT\n" in _text(answers), answers
    assert "timed out" in _text(answers, "stderr")


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("print('BEFORE-EXIT')\nimport os\nos._exit(3)", ["BEFORE-EXIT\n"]),
        ("import os\nos.write(1, b'FD-WRITE\\n')\nprint('PY-WRITE')\nos._exit(4)", ["FD-WRITE\n", "PY-WRITE\n"]),
        ("print('BEFORE-SIGNAL')\nimport os, signal\nos.kill(os.getpid(), signal.SIGKILL)", ["BEFORE-SIGNAL\n"]),
        ("import ctypes\nprint('BEFORE-CRASH')\nctypes.string_at(0)", ["BEFORE-CRASH\n"]),
    ],
    ids=["os-exit", "fd-write", "sigkill", "segfault"],
)
def test_output_before_the_process_dies_is_kept(
    cluster: Cluster, neighbour: str, code: str, expected: list[str]
) -> None:
    answers = _run(cluster, neighbour, code, f"die-{abs(hash(code))}")
    out = _text(answers)
    for text in expected:
        assert text in out, answers
    # A fresh Python process takes over.
    assert cluster.exec(neighbour, "print('alive')", timeout=300)["console"] == [["stdout", "alive\n"]]


# --------------------------------------------------------------------------------------------
# Unbounded answers
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_sessions(cluster: Cluster) -> Iterator[list[str]]:
    """Three sessions (with the neighbour, the test cluster's 4 CPUs); 4 requests go to them at once."""
    names = [f"abuse-big{i}" for i in range(3)]
    for name in names:
        cluster.create_session(name, config={"resources": {"mem": "768m"}})
    yield names
    for name in names:
        cluster.request("DELETE", f"/session/{name}")


def test_huge_completions_are_capped(cluster: Cluster, big_sessions: list[str], watch: Callable[[], Watch]) -> None:
    for name in big_sessions:
        cluster.exec(name, "globals()['zq' + 'a' * 200_000_000] = 1\nzqshort = 2", timeout=300)

    def complete(name: str) -> dict[str, Any]:
        r = cluster.request("POST", f"/session/{name}/complete", {"code": "zq", "options": {}}, timeout=300)
        assert r.status_code == 200, r.text
        return dict(r.json())

    with watch() as w, ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(complete, [*big_sessions, big_sessions[0]]))
    w.check("4 x 200 MB completions")
    for a in answers:
        assert "zqshort" in a["result"]
        assert sum(len(c) for c in a["result"]) < 100_000


def test_huge_execute_output_is_capped_head_and_tail(
    cluster: Cluster, big_sessions: list[str], watch: Callable[[], Watch]
) -> None:
    code = "s = 'HEAD' + 'x' * 200_000_000 + 'TAIL'\nprint(s)\ndel s\nprint('LAST')"

    def run(name_and_id: tuple[str, str]) -> list[dict[str, Any]]:
        return _run(cluster, name_and_id[0], code, name_and_id[1])

    runs = [(name, f"big-{i}") for i, name in enumerate([*big_sessions, big_sessions[0]])]
    with watch() as w, ThreadPoolExecutor(4) as pool:
        all_answers = list(pool.map(run, runs))
    w.check("4 x 200 MB execute output")
    for answers in all_answers:
        out = _text(answers)
        assert out.startswith("HEAD") and out.endswith("TAIL\nLAST\n"), (out[:50], out[-50:])
        assert "characters cut" in out
        for a in answers:
            assert sum(len(item[1]) for item in a["console"]) < 1_100_000


# --------------------------------------------------------------------------------------------
# The agent does not trust the container
# --------------------------------------------------------------------------------------------


PTRACE_CODE = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
target = os.getppid()  # the runner that started this Python process
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
rc = libc.ptrace(16, target, None, None)  # PTRACE_ATTACH
print('attach', rc, ctypes.get_errno())
if rc == 0:
    os.waitpid(target, os.__dict__.get('WALL', 0x40000000))
    libc.ptrace(17, target, None, None)  # PTRACE_DETACH: do not leave the runner stopped
try:
    open(f'/proc/{target}/mem', 'rb').close()
    print('mem', 'open')
except OSError as e:
    print('mem', type(e).__name__)
try:
    print('fds', len(os.listdir(f'/proc/{target}/fd')))
except OSError as e:
    print('fds', type(e).__name__)
for pid in (1, target):
    print('pid', pid, open(f'/proc/{pid}/cmdline', 'rb').read().split(b'\\0')[1:3])
"""


def test_user_code_cannot_trace_the_runner(cluster: Cluster, neighbour: str) -> None:
    out = _text(_run(cluster, neighbour, PTRACE_CODE, "ptrace1"))
    lines = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
    assert "runner.py" in out  # it did find the runner
    assert lines["attach"].split()[0] == "-1", out  # EPERM
    assert lines["mem"] == "PermissionError", out
    assert lines["fds"] == "PermissionError", out
    assert cluster.exec(neighbour, "print(2)", timeout=300)["console"] == [["stdout", "2\n"]]


def _container_id(cluster: Cluster, name: str) -> str:
    r = cluster.request("GET", f"/session/{name}")
    assert r.status_code == 200, r.text
    return str(r.json()["containerId"])


def _supervisor_pid(container_id: str) -> int:
    pid1 = int(subprocess.check_output(["docker", "inspect", "-f", "{{.State.Pid}}", container_id]).strip())
    for child in open(f"/proc/{pid1}/task/{pid1}/children").read().split():
        if b"runner.py" in open(f"/proc/{child}/cmdline", "rb").read():
            return int(child)
    return pid1


def _agent_connections(pid: int, agent_pid: int) -> list[int]:
    """The runner's fds of its connections from the agent: the peers of the agent's Unix sockets."""
    peers = set()
    for line in subprocess.check_output(["ss", "-xpH"], text=True).splitlines():
        parts = line.split()
        if f"pid={agent_pid}," in line and len(parts) >= 8:
            peers.add(parts[7])  # Netid State Recv-Q Send-Q Local Port Peer Port ...
    fds = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        target = os.readlink(f"/proc/{pid}/fd/{fd}")
        if target.startswith("socket:[") and target[8:-1] in peers:
            fds.append(int(fd))
    return fds


def _steal_fd(pid: int, fd: int) -> int:
    """A copy of another process's fd (pidfd_getfd: what a process able to trace the runner could do)."""
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    try:
        got = libc.syscall(438, pidfd, fd, 0)  # SYS_pidfd_getfd
        if got < 0:
            raise OSError(ctypes.get_errno(), "pidfd_getfd")
        return int(got)
    finally:
        os.close(pidfd)


def _push(fd: int, frames: list[bytes]) -> None:
    sock = socket.socket(fileno=fd)
    sock.settimeout(60)
    try:
        for frame in frames:
            sock.sendall(frame)
    except OSError:
        pass  # the agent hung up: what it should do
    finally:
        sock.detach()
        os.close(fd)


def _frame(size: int, rid: Any = 987_654_321) -> bytes:
    head = b'{"id":%s,"x":"' % str(rid).encode()
    body = head + b"a" * (size - len(head) - 2) + b'"}'
    return len(body).to_bytes(4, "big") + body


@pytest.mark.skipif(os.geteuid() != 0, reason="copying the runner's socket from the host needs root")
def test_unsolicited_frames_from_the_container_are_capped(
    cluster: Cluster, big_sessions: list[str], watch: Callable[[], Watch]
) -> None:
    # Simulates a compromised runner: the test writes into the runner's connection to the agent.
    target = big_sessions[1]
    assert cluster.exec(target, "print('ok')", timeout=300)["console"]
    pid = _supervisor_pid(_container_id(cluster, target))
    agent_pid = cluster.procs["agent"].pid
    conns = _agent_connections(pid, agent_pid)
    assert conns, "no connection from the agent found in the runner"
    log_size = (cluster.state / "agent.log").stat().st_size
    with watch() as w:
        threads = []
        for fd in conns:
            stolen = _steal_fd(pid, fd)
            threads.append(threading.Thread(target=_push, args=(stolen, [_frame(200 * MiB)])))
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        time.sleep(0.5)
    w.check("200 MiB frame from the container")
    log = (cluster.state / "agent.log").read_bytes()[log_size:].decode(errors="replace")
    assert "over the limit" in log, log[-2000:]
    # A few small unsolicited frames close the connection too; the kernel stays usable after each.
    assert cluster.exec(target, "print('again')", timeout=300)["console"] == [["stdout", "again\n"]]
    for fd in _agent_connections(pid, agent_pid):
        _push(_steal_fd(pid, fd), [_frame(1024, rid=10**9 + i) for i in range(200)])
    time.sleep(0.5)
    log = (cluster.state / "agent.log").read_bytes()[log_size:].decode(errors="replace")
    assert "unsolicited" in log, log[-2000:]
    assert cluster.exec(target, "print('still')", timeout=300)["console"] == [["stdout", "still\n"]]
    assert cluster.procs["agent"].poll() is None
