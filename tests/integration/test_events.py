"""SSE event streams: session lifecycle events (``/events/session``) against real containers, background
tasks (``/events/background-task``), the ``backend.ai events`` command, disconnect handling on an
in-process manager and the Redis fan-out between managers."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import select

from ai.backend.client.sse import SSEMessage, SSEParser
from ai.backend.common.auth import sign_request_headers
from ai.backend.common.config import load_config
from ai.backend.manager.bgtask import ProgressReporter, RedisTaskStore, TaskInfo
from ai.backend.manager.config import ManagerConfig
from ai.backend.manager.events import Event, RedisEventBus
from ai.backend.manager.models import UserRow
from ai.backend.manager.server import create_app
from ai.backend.testutils.cluster import _write_manager_config, launch_manager, prepare_database
from ai.backend.testutils.databases import (
    ServiceUnavailable,
    check_pg,
    check_redis,
    claim_redis_db_async,
    fresh_database,
    fresh_redis,
    release_redis_db_async,
)

from .conftest import ADMIN, USER, Cluster

ALL_LIFECYCLE = [
    "session_enqueued",
    "session_preparing",
    "session_creating",
    "session_started",
    "session_terminating",
    "session_terminated",
]


def _headers(endpoint: str, path: str, who: dict[str, Any]) -> dict[str, str]:
    return sign_request_headers(
        method="GET",
        path_with_query=path,
        host=endpoint.split("//", 1)[1],
        content_type="application/json",
        version="v6.20220615",
        access_key=who["access_key"],
        secret_key=who["secret_key"],
    )


class Stream:
    """An open SSE response, read by a background task (so a timed-out wait never cuts the stream) and
    parsed with the SDK's parser."""

    def __init__(self, resp: httpx.Response) -> None:
        self.resp = resp
        self.raw = b""
        self._parser = SSEParser()
        self._chunks: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._pending: list[SSEMessage] = []
        self.eof = False
        self._pump = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for chunk in self.resp.aiter_bytes():
                self.raw += chunk
                self._chunks.put_nowait(chunk)
        finally:
            self._chunks.put_nowait(None)

    async def close(self) -> None:
        self._pump.cancel()
        await asyncio.gather(self._pump, return_exceptions=True)

    async def next(self, timeout: float = 60) -> SSEMessage | None:
        """The next event, or None at the end of the stream (TimeoutError if none comes in time)."""
        deadline = time.monotonic() + timeout
        while not self._pending:
            if self.eof:
                return None
            chunk = await asyncio.wait_for(self._chunks.get(), max(deadline - time.monotonic(), 0.01))
            if chunk is None:
                self.eof = True
                self._pending.extend(self._parser.close())
            else:
                self._pending.extend(self._parser.feed(chunk))
        return self._pending.pop(0)

    async def wait_raw(self, needle: bytes, count: int = 1, timeout: float = 10) -> None:
        """Wait until ``needle`` (e.g. a keep-alive comment) was received ``count`` times."""
        deadline = time.monotonic() + timeout
        while self.raw.count(needle) < count:
            assert time.monotonic() < deadline and not self.eof, self.raw
            await asyncio.sleep(0.05)

    async def until(self, pred: Any, timeout: float = 90) -> list[SSEMessage]:
        """Events up to and including the first one satisfying ``pred``."""
        out: list[SSEMessage] = []
        deadline = time.monotonic() + timeout
        while True:
            msg = await self.next(max(deadline - time.monotonic(), 0.01))
            assert msg is not None, f"stream ended before the expected event; got {[m.event for m in out]}"
            out.append(msg)
            if pred(msg):
                return out

    async def rest(self, timeout: float = 30) -> list[SSEMessage]:
        """Everything until the server ends the stream."""
        out: list[SSEMessage] = []
        while (msg := await self.next(timeout)) is not None:
            out.append(msg)
        return out


@asynccontextmanager
async def stream(endpoint: str, path: str, who: dict[str, Any] = USER) -> AsyncIterator[Stream]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(30, read=None)) as client:
        async with client.stream("GET", endpoint + path, headers=_headers(endpoint, path, who)) as resp:
            if resp.status_code != 200:
                await resp.aread()
            st = Stream(resp)
            try:
                yield st
            finally:
                await st.close()


def _for(name: str) -> Any:
    return lambda m: m.json().get("sessionName") == name


def _names(msgs: list[SSEMessage], session: str | None = None) -> list[str]:
    return [m.event for m in msgs if session is None or m.json().get("sessionName") == session]


async def _req(cluster: Cluster, method: str, path: str, body: Any = None, who: dict[str, Any] = USER) -> Any:
    return await asyncio.to_thread(cluster.request, method, path, body, who)


def _uniq(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


# ---- session events, real containers ----------------------------------------------------------------------


@pytest.mark.docker
async def test_interactive_session_lifecycle_in_order(cluster: Cluster) -> None:
    name = _uniq("ev-life")
    async with stream(cluster.endpoint, "/events/session?sessionId=*&scope=*") as s:
        assert s.resp.status_code == 200 and s.resp.headers["content-type"].startswith("text/event-stream")
        r = await _req(cluster, "POST", "/session", {"image": "python", "name": name})
        assert r.status_code == 201 and r.json()["status"] == "RUNNING", r.text
        sid = r.json()["sessionId"]
        assert (await _req(cluster, "DELETE", f"/session/{name}")).status_code == 200
        msgs = await s.until(lambda m: m.event == "session_terminated" and m.json()["sessionName"] == name)
    mine = [m for m in msgs if m.json().get("sessionName") == name]
    assert _names([m for m in mine if m.event.startswith("session_")]) == ALL_LIFECYCLE
    kernel = [m for m in mine if m.event.startswith("kernel_")]
    assert [m.event for m in kernel] == [
        "kernel_preparing",
        "kernel_creating",
        "kernel_started",
        "kernel_terminating",
        "kernel_terminated",
    ]
    # Each kernel event comes right before its session twin and names the main kernel.
    order = [m.event for m in mine]
    assert order.index("kernel_started") + 1 == order.index("session_started")
    assert {m.json()["kernelId"] for m in kernel} == {kernel[0].json()["kernelId"]}
    assert kernel[0].json()["clusterRole"] == "main"
    for m in mine:
        d = m.json()
        assert d["sessionId"] == sid and d["ownerAccessKey"] == USER["access_key"] and "reason" in d
    last = mine[-1].json()
    assert last["result"] == "UNDEFINED" and last["reason"] == "user-requested"


@pytest.mark.docker
async def test_batch_session_reports_its_result(cluster: Cluster) -> None:
    ok_name, bad_name = _uniq("ev-batch-ok"), _uniq("ev-batch-bad")
    async with stream(cluster.endpoint, "/events/session?name=*&scope=session") as s:
        for name, cmd in ((ok_name, "sleep 2; echo fine"), (bad_name, "sleep 2; exit 3")):
            r = await _req(
                cluster,
                "POST",
                "/session",
                {"image": "python", "name": name, "type": "batch", "startupCommand": cmd, "enqueueOnly": True},
            )
            assert r.status_code == 201, r.text
        done: dict[str, dict[str, Any]] = {}
        seen: list[SSEMessage] = []
        while len(done) < 2:
            got = await s.until(
                lambda m: m.event == "session_terminated" and m.json()["sessionName"] in (ok_name, bad_name)
            )
            seen += got
            done[got[-1].json()["sessionName"]] = got[-1].json()
    assert all(not m.event.startswith("kernel_") for m in seen)  # scope=session
    for name in (ok_name, bad_name):
        assert _names(seen, name)[:4] == ALL_LIFECYCLE[:4], (name, _names(seen, name))
        assert _names(seen, name)[-1] == "session_terminated"
    assert done[ok_name]["result"] == "SUCCESS" and done[ok_name]["exitCode"] == 0, done
    assert done[bad_name]["result"] == "FAILURE" and done[bad_name]["exitCode"] == 3
    # Watching a session that is over: its final event at once, then server_close.
    async with stream(cluster.endpoint, f"/events/session?sessionId={bad_name}") as s:
        rest = await s.rest()
    assert [m.event for m in rest] == ["kernel_terminated", "session_terminated", "server_close"]
    assert rest[1].json()["result"] == "FAILURE" and rest[2].data == "{}"


@pytest.mark.docker
async def test_single_session_stream_closes_after_the_final_event(cluster: Cluster) -> None:
    name = _uniq("ev-single")
    r = await _req(cluster, "POST", "/session", {"image": "python", "name": name})
    assert r.status_code == 201, r.text
    sid = r.json()["sessionId"]
    other = _uniq("ev-other")
    async with stream(cluster.endpoint, f"/events/session?name={name}&scope=session") as s:
        assert s.resp.status_code == 200
        # Another session's events do not show up on this stream.
        assert (await _req(cluster, "POST", "/session", {"image": "python", "name": other})).status_code == 201
        assert (await _req(cluster, "DELETE", f"/session/{name}")).status_code == 200
        msgs = await s.rest()
    assert [m.event for m in msgs] == ["session_terminating", "session_terminated", "server_close"]
    assert {m.json().get("sessionId") for m in msgs[:2]} == {sid}
    assert s.eof
    # By UUID, after the end: the final event alone.
    async with stream(cluster.endpoint, f"/events/session?sessionId={sid}&scope=session") as s:
        assert [m.event for m in await s.rest()] == ["session_terminated", "server_close"]
    # The legacy URL and a JSON body instead of the query string.
    path = "/stream/session/_/events"
    h = _headers(cluster.endpoint, path, USER)
    async with httpx.AsyncClient(timeout=30) as client:
        r2 = await client.request(
            "GET", cluster.endpoint + path, headers=h, content=json.dumps({"sessionId": sid, "scope": "kernel"})
        )
    assert r2.status_code == 200 and "event: kernel_terminated" in r2.text and "session_terminated" not in r2.text
    assert (await _req(cluster, "DELETE", f"/session/{other}")).status_code == 200


@pytest.mark.docker
async def test_visibility_and_filters(cluster: Cluster) -> None:
    mine, theirs = _uniq("ev-mine"), _uniq("ev-admins")
    r = await _req(cluster, "POST", "/session", {"image": "python", "name": theirs}, who=ADMIN)
    assert r.status_code == 201, r.text
    their_id = r.json()["sessionId"]
    # Another user's session cannot be watched, by name or by UUID; naming its owner is refused.
    for q in (f"sessionId={theirs}", f"sessionId={their_id}", f"name={their_id}"):
        bad = await _req(cluster, "GET", f"/events/session?{q}")
        assert bad.status_code == 404 and bad.headers["content-type"].startswith("application/problem+json")
    refused = await _req(cluster, "GET", f"/events/session?name={theirs}&ownerAccessKey={ADMIN['access_key']}")
    assert refused.status_code == 403
    async with (
        stream(cluster.endpoint, "/events/session?sessionId=*&scope=session") as user_s,
        stream(
            cluster.endpoint, f"/events/session?sessionId=*&ownerAccessKey={USER['access_key']}", who=ADMIN
        ) as admin_s,
        stream(cluster.endpoint, f"/events/session?name={their_id}", who=ADMIN) as admin_one,
    ):
        assert admin_one.resp.status_code == 200  # an admin watches any session by UUID
        assert (await _req(cluster, "POST", "/session", {"image": "python", "name": mine})).status_code == 201
        assert (await _req(cluster, "DELETE", f"/session/{theirs}", who=ADMIN)).status_code == 200
        assert (await _req(cluster, "DELETE", f"/session/{mine}")).status_code == 200
        user_msgs = await user_s.until(lambda m: m.event == "session_terminated" and _for(mine)(m))
        admin_msgs = await admin_s.until(lambda m: m.event == "session_terminated" and _for(mine)(m))
        one = await admin_one.rest()
    # '*' as a user: own sessions only; an admin naming the owner: that owner's sessions only.
    assert {m.json()["ownerAccessKey"] for m in user_msgs} == {USER["access_key"]}
    assert {m.json()["ownerAccessKey"] for m in admin_msgs} == {USER["access_key"]}
    assert _names(user_msgs, mine) == ALL_LIFECYCLE and theirs not in {m.json()["sessionName"] for m in user_msgs}
    assert [m.event for m in one][-3:] == ["kernel_terminated", "session_terminated", "server_close"]
    assert {m.json().get("sessionName") for m in one[:-1]} == {theirs}


@pytest.mark.docker
async def test_bad_parameters_and_keepalive(cluster: Cluster) -> None:
    for q, status, word in (
        ("scope=pod", 400, "scope"),
        ("keepalive=0", 400, "keepalive"),
        ("keepalive=soon", 400, "keepalive"),
        ("group=no-such-group", 404, "group"),
        ("sessionId=no-such-session", 404, "no-such-session"),
    ):
        r = await _req(cluster, "GET", f"/events/session?{q}")
        assert r.status_code == status and word in r.json()["detail"], (q, r.text)
    unsigned = httpx.get(cluster.endpoint + "/events/session", timeout=10)
    assert unsigned.status_code == 401
    async with stream(cluster.endpoint, "/events/session?name=*&group=default&keepalive=1") as s:
        t0 = time.monotonic()
        await s.wait_raw(b": keep-alive\n\n", count=2)
        assert time.monotonic() - t0 >= 1.5  # one per idle second, not a flood
        assert s.resp.headers["cache-control"] == "no-cache"


# ---- background tasks --------------------------------------------------------------------------------------


@pytest.mark.docker
async def test_rescan_images_runs_as_a_background_task(cluster: Cluster) -> None:
    q = 'mutation { rescan_images(registry: "local") { ok msg task_id } }'
    r = await _req(cluster, "POST", "/admin/graphql", {"query": q}, who=ADMIN)
    res = r.json()["rescan_images"]
    assert res["ok"] is True and "1 alive agent" in res["msg"]
    tid = str(uuid.UUID(res["task_id"]))
    async with stream(cluster.endpoint, f"/events/background-task?taskId={tid}", who=ADMIN) as s:
        msgs = await s.rest()
        assert s.eof
    names = [m.event for m in msgs]
    assert names[-1] == "server_close"
    # Finished before we connected (one step per agent): the final event alone, under both names.
    if "bgtask_updated" in names:
        assert names.index("bgtask_updated") < names.index("bgtask_done")
    assert names[-3:] == ["bgtask_done", "task_done", "server_close"]
    done = msgs[-3].json()
    assert done == msgs[-2].json()
    assert done["task_id"] == tid and done["current_progress"] == done["total_progress"] == 1
    assert "1 alive agent" in done["message"] and done["status"] == "done"
    # The 22.03 spelling of the parameter works too.
    async with stream(cluster.endpoint, f"/events/background-task?task_id={tid}", who=ADMIN) as s:
        assert [m.event for m in await s.rest()] == ["bgtask_done", "task_done", "server_close"]
    # Only its creator may watch it; unknown and malformed ids are refused before any event.
    other = await _req(cluster, "GET", f"/events/background-task?taskId={tid}")
    assert other.status_code == 403 and "started" in other.json()["detail"]
    unknown = await _req(cluster, "GET", f"/events/background-task?taskId={uuid.uuid4()}")
    assert unknown.status_code == 404 and "24 hours" in unknown.json()["detail"]
    for bad in ("?taskId=12", ""):
        r = await _req(cluster, "GET", f"/events/background-task{bad}")
        assert r.status_code == 400 and "taskId" in r.json()["detail"]


@pytest.mark.docker
def test_sdk_background_task_and_session_events(cluster: Cluster) -> None:
    script = r"""
import asyncio, json
from ai.backend.client.session import AsyncSession, Session
async def main():
    async with AsyncSession() as api:
        res = await api.Image.rescan_images()
        async with api.BackgroundTask(res["task_id"]).listen_events() as resp:
            print(json.dumps([[e.event, e.json()["status"] if e.event != "server_close" else None]
                              async for e in resp]))
        cs = await api.ComputeSession.get_or_create("python", name=NAME)
        await cs.destroy()
        async with cs.listen_events(scope="session") as resp:
            print(json.dumps([e.event async for e in resp]))
asyncio.run(main())
with Session() as api:
    with api.ComputeSession(NAME).stream_events() as resp:
        print(json.dumps([e.event for e in resp]))
"""
    name = _uniq("ev-sdk")
    p = subprocess.run(
        [sys.executable, "-c", script.replace("NAME", repr(name))],
        env=cluster.env(ADMIN),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert p.returncode == 0, p.stderr
    bg, sess, sync = (json.loads(line) for line in p.stdout.splitlines())
    # Progress events only while it ran (it may have finished before the stream opened), then the end.
    assert bg[-3:] == [["bgtask_done", "done"], ["task_done", "done"], ["server_close", None]]
    assert set(map(tuple, bg[:-3])) <= {("bgtask_updated", "running"), ("task_updated", "running")}
    assert sess == ["session_terminated", "server_close"]
    assert sync == ["kernel_terminated", "session_terminated", "server_close"]


# ---- the CLI ---------------------------------------------------------------------------------------------


def _cli(cluster: Cluster, *args: str, who: dict[str, Any] = USER) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "ai.backend.client.cli", *args],
        env=cluster.env(who),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_watching(p: subprocess.Popen[str]) -> str:
    assert p.stderr is not None
    line = p.stderr.readline()
    assert "Watching the events" in line, line + p.stderr.read()
    return line


@pytest.mark.docker
def test_cli_events_follows_a_session_until_it_ends(cluster: Cluster) -> None:
    name = _uniq("ev-cli")
    assert cluster.request("POST", "/session", {"image": "python", "name": name}).status_code == 201
    console = _cli(cluster, "events", name)
    js = _cli(cluster, "--output", "json", "session", "events", name, "--scope", "session")
    _wait_watching(console)
    _wait_watching(js)
    assert cluster.request("DELETE", f"/session/{name}").status_code == 200
    out, err = console.communicate(timeout=60)
    assert console.returncode == 0, err
    lines = out.splitlines()
    assert [ln.split()[1] for ln in lines] == [
        "kernel_terminating",
        "session_terminating",
        "kernel_terminated",
        "session_terminated",
    ]
    assert all(name in ln for ln in lines) and "reason: user-requested" in lines[-1]
    assert "result: UNDEFINED" in lines[-1] and "Traceback" not in err
    jout, jerr = js.communicate(timeout=60)
    assert js.returncode == 0, jerr
    docs = [json.loads(ln) for ln in jout.splitlines()]
    assert [d["event"] for d in docs] == ["session_terminating", "session_terminated"]
    assert docs[-1]["data"]["sessionName"] == name and docs[-1]["data"]["result"] == "UNDEFINED"
    assert all({"time", "event", "data"} == set(d) for d in docs)


@pytest.mark.docker
def test_cli_events_errors_and_ctrl_c(cluster: Cluster) -> None:
    p = _cli(cluster, "events", "no-such-session-here")
    out, err = p.communicate(timeout=60)
    assert p.returncode == 1 and out == ""
    assert len(err.strip().splitlines()) == 1 and "(404)" in err and "no-such-session-here" in err
    p = _cli(cluster, "events", "*", "--scope", "pod")
    _, err = p.communicate(timeout=60)
    assert p.returncode == 2 and "--scope" in err
    watcher = _cli(cluster, "events", "*")
    _wait_watching(watcher)
    watcher.send_signal(signal.SIGINT)
    out, err = watcher.communicate(timeout=30)
    assert watcher.returncode == 130 and "Traceback" not in err and err.strip() == ""


# ---- an in-process manager: disconnects and live task progress ----------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def manager_config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    state = tmp_path_factory.mktemp("inproc")
    _write_manager_config(state, _free_port(), "in-process-secret", None, None, None)
    prepare_database(state / "manager.toml")
    yield state / "manager.toml"


@asynccontextmanager
async def in_process_manager(config_path: Path) -> AsyncIterator[tuple[Any, str]]:
    config = load_config(ManagerConfig, "manager", str(config_path))
    app = create_app(config)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=config.manager.service_addr_port, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), task
        await asyncio.sleep(0.05)
    try:
        yield app, f"http://127.0.0.1:{config.manager.service_addr_port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


async def test_client_disconnect_releases_the_subscription(manager_config: Path) -> None:
    async with in_process_manager(manager_config) as (app, endpoint):
        bus = app.state.ctx.bus
        base = bus.subscriber_count
        async with stream(endpoint, "/events/session?name=*&keepalive=1") as s:
            assert s.resp.status_code == 200
            await s.wait_raw(b": keep-alive\n\n")
            assert bus.subscriber_count == base + 1
        for _ in range(50):
            if bus.subscriber_count == base:
                break
            await asyncio.sleep(0.1)
        assert bus.subscriber_count == base
        # A refused request never leaves a subscription behind either.
        async with stream(endpoint, "/events/session?sessionId=nope") as s:
            assert s.resp.status_code == 404
        assert bus.subscriber_count == base


async def test_live_task_progress_then_done_then_close(manager_config: Path) -> None:
    async with in_process_manager(manager_config) as (app, endpoint):
        async with app.state.ctx.db() as db:
            user_uuid = (await db.execute(select(UserRow.uuid).where(UserRow.email == USER["email"]))).scalar_one()
        steps = asyncio.Queue[str]()

        async def work(p: ProgressReporter) -> str:
            await p.update(total=2, message="two steps")
            for _ in range(2):
                await p.update(1, message=await steps.get())
            return "finished both"

        tid = await app.state.ctx.bgtasks.start(
            work, name="demo", owner_access_key=USER["access_key"], owner_user=str(user_uuid)
        )
        async with stream(endpoint, f"/events/background-task?taskId={tid}&keepalive=1") as s:
            first = await s.until(lambda m: m.event == "task_updated")
            assert [m.event for m in first] == ["bgtask_updated", "task_updated"]
            assert first[0].json()["total_progress"] == 2 and first[0].json()["current_progress"] == 0
            steps.put_nowait("step one")
            one = await s.until(lambda m: m.event == "task_updated")
            assert one[0].json()["current_progress"] == 1 and one[0].json()["message"] == "step one"
            await s.wait_raw(b": keep-alive\n\n")  # idle: a keep-alive comment, the stream stays open
            assert not s.eof
            steps.put_nowait("step two")
            rest = await s.rest()
        assert [m.event for m in rest] == ["bgtask_updated", "task_updated", "bgtask_done", "task_done", "server_close"]
        assert rest[2].json() == {
            "task_id": tid,
            "current_progress": 2,
            "total_progress": 2,
            "message": "finished both",
            "status": "done",
        }
        # Watched by another user: refused; by a superadmin: allowed.
        async with stream(endpoint, f"/events/background-task?taskId={tid}", who=ADMIN) as s:
            assert [m.event for m in await s.rest()][-1] == "server_close"


# ---- several managers: Redis fan-out -----------------------------------------------------------------------


async def test_redis_bus_and_task_store_are_shared() -> None:
    try:
        await asyncio.to_thread(check_redis)
    except ServiceUnavailable as e:
        pytest.fail(str(e), pytrace=False)
    url = await claim_redis_db_async()
    other_db = await claim_redis_db_async()
    a, b, stranger = RedisEventBus(url), RedisEventBus(url), RedisEventBus(other_db)
    store_a, store_b = RedisTaskStore(url), RedisTaskStore(url)
    try:
        for bus in (a, b, stranger):
            await bus.start()
            await bus.wait_listening()
        async with a.subscribe() as qa, b.subscribe() as qb, stranger.subscribe() as qs:
            a.publish(Event("session_started", "s1", {"sessionName": "x"}))
            got_b = await asyncio.wait_for(qb.get(), 5)
            assert (got_b.name, got_b.session_id, got_b.data) == ("session_started", "s1", {"sessionName": "x"})
            assert (await asyncio.wait_for(qa.get(), 5)).name == "session_started"
            b.publish(Event("bgtask_done", "t1", {"n": 2}))
            assert (await asyncio.wait_for(qa.get(), 5)).data == {"n": 2}
            await asyncio.sleep(0.3)
            assert qa.empty()  # its own event did not come back a second time
            assert qs.empty()  # another Redis database is another deployment
        info = TaskInfo(task_id=str(uuid.uuid4()), name="n", owner_access_key="AK", owner_user="u", total=5)
        await store_a.put(info)
        assert await store_b.get(info.task_id) == info
        assert await store_b.get(str(uuid.uuid4())) is None
    finally:
        for bus in (a, b, stranger):
            await bus.close()
        await store_a.close()
        await store_b.close()
        await release_redis_db_async(url)
        await release_redis_db_async(other_db)


@pytest.fixture(scope="module")
def twin_managers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, Cluster]]:
    try:
        check_pg()
        check_redis()
    except ServiceUnavailable as e:
        pytest.fail(str(e), pytrace=False)
    from contextlib import ExitStack

    with ExitStack() as stack:
        base = tmp_path_factory.mktemp("ev-twins")
        db_url = stack.enter_context(fresh_database("postgresql", base))
        redis_url = stack.enter_context(fresh_redis())
        first = launch_manager(base / "a", db_url=db_url, redis_url=redis_url)
        stack.callback(first.shutdown)
        second = launch_manager(base / "b", db_url=db_url, redis_url=redis_url)
        stack.callback(second.shutdown)
        yield first, second


async def test_any_manager_answers_for_a_task(twin_managers: tuple[Cluster, Cluster]) -> None:
    a, b = twin_managers
    r = await _req(a, "POST", "/admin/graphql", {"query": "mutation { rescan_images { ok task_id } }"}, who=ADMIN)
    tid = r.json()["rescan_images"]["task_id"]
    async with stream(b.endpoint, f"/events/background-task?taskId={tid}", who=ADMIN) as s:
        msgs = await s.rest()
    assert [m.event for m in msgs] == ["bgtask_done", "task_done", "server_close"]
    assert msgs[0].json()["task_id"] == tid
    assert (await _req(b, "GET", f"/events/background-task?taskId={tid}")).status_code == 403
