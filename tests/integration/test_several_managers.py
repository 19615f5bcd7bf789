"""Several managers on one PostgreSQL and one Redis (ADR 0014), against real processes.

One cluster for the module: two managers sharing a fresh PostgreSQL database and a Redis database, a Docker agent
(the python image) and one dummy agent (scaling group ``ha-dummy``, 4 cores, for fast and countable sessions),
both agents knowing both managers. The last test kills the leader with ``kill -9``.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from ai.backend.client.config import APIConfig
from ai.backend.client.request import Request
from ai.backend.client.session import Session
from ai.backend.client.sse import SSEMessage, SSEParser
from ai.backend.common.auth import sign_request_headers
from ai.backend.manager.fixtures import ADMIN, USER
from ai.backend.manager.sessions.limits import RedisActivityStore
from ai.backend.testutils.cluster import Cluster, _free_port, _write_manager_config, launch_cluster, launch_manager
from ai.backend.testutils.databases import (
    ServiceUnavailable,
    check_pg,
    check_redis,
    claim_redis_db_async,
    fresh_database,
    fresh_redis,
    release_redis_db_async,
)
from ai.backend.testutils.fleet import start_fleet
from ai.backend.testutils.processes import stop_process, wait_until

pytestmark = pytest.mark.docker

GROUP = "ha-dummy"
DUMMY = {"image": "python", "config": {"scalingGroup": GROUP, "resources": {"cpu": 1, "mem": "256m"}}}


def _uniq(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def _cluster_status(c: Cluster) -> dict[str, Any]:
    r = c.request("GET", "/admin/cluster", who=ADMIN)
    assert r.status_code == 200, r.text
    doc: dict[str, Any] = r.json()
    return doc


def _leader_and_follower(c: Cluster) -> tuple[int, int]:
    """The indexes (in ``c.endpoints``) of the leading manager and of the other one."""
    doc = wait_until("a leader", lambda: _cluster_status(c.at(0)), lambda d: d["leader"] is not None, 15)
    address = next(m["address"] for m in doc["managers"] if m["leader"])
    leader = c.endpoints.index(address)
    return leader, 1 - leader


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    try:
        check_pg()
        check_redis()
    except ServiceUnavailable as e:
        pytest.fail(str(e), pytrace=False)
    base: Path = tmp_path_factory.mktemp("several-managers")
    with ExitStack() as stack:
        db_url = stack.enter_context(fresh_database("postgresql", base))
        redis_url = stack.enter_context(fresh_redis())
        c = launch_cluster(base / "c", db_url=db_url, redis_url=redis_url, managers=2, storage=False)
        stack.callback(c.shutdown)
        c.gql(
            f'mutation {{ create_scaling_group(name: "{GROUP}", props: {{driver: "static", scheduler: "fifo", '
            "is_active: true}) { ok msg } }",
            legacy=True,
        )
        c.gql(
            f'mutation {{ associate_scaling_group_with_domain(scaling_group: "{GROUP}", domain: "default") '
            "{ ok msg } }",
            legacy=True,
        )
        fleet = start_fleet(
            c,
            base,
            1,
            heartbeat=1.0,
            id_prefix=f"i-ha-{uuid.uuid4().hex[:4]}-",
            scaling_groups=GROUP,
            manager_urls=c.endpoints,
            tables='[resource]\ncpu = 4\nmem = "4g"\n\n[dummy]\ncreate-delay = 0.2\ndestroy-delay = 0.05\n',
        )
        stack.callback(stop_process, fleet, 10)
        wait_until(
            "the dummy agent",
            lambda: _cluster_status(c),
            lambda d: sum(a["scaling_group"] == GROUP and a["status"] == "ALIVE" for a in d["agents"]["items"]) == 1,
            30,
        )
        yield c


class _Events:
    """An SSE stream of ``/events/session`` read in the background."""

    def __init__(self, resp: httpx.Response) -> None:
        self.messages: list[SSEMessage] = []
        self._parser = SSEParser()
        self._resp = resp
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for chunk in self._resp.aiter_bytes():
            self.messages.extend(self._parser.feed(chunk))

    async def until(self, name: str, event: str, timeout: float = 60) -> list[str]:
        """The events of session ``name`` so far, once ``event`` came for it."""
        deadline = time.monotonic() + timeout
        while True:
            mine = [m.event for m in self.messages if json.loads(m.data or "{}").get("sessionName") == name]
            if event in mine:
                return mine
            assert time.monotonic() < deadline and not self._task.done(), mine
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


@asynccontextmanager
async def _events(c: Cluster) -> AsyncIterator[_Events]:
    path = "/events/session?sessionId=*&scope=session"
    headers = sign_request_headers(
        method="GET",
        path_with_query=path,
        host=c.endpoint.split("//", 1)[1],
        content_type="application/json",
        version="v6.20220615",
        access_key=USER["access_key"],
        secret_key=USER["secret_key"],
    )
    async with httpx.AsyncClient(timeout=httpx.Timeout(30, read=None)) as client:
        async with client.stream("GET", c.endpoint + path, headers=headers) as resp:
            assert resp.status_code == 200
            ev = _Events(resp)
            try:
                yield ev
            finally:
                await ev.close()


async def test_created_on_one_executed_watched_and_destroyed_on_the_other(pair: Cluster) -> None:
    a, b = pair.at(0), pair.at(1)
    name = _uniq("ha")
    async with _events(b) as watched:
        await asyncio.sleep(0.5)  # the subscription is open before anything happens
        created = await asyncio.to_thread(a.create_session, name)  # on the Docker agent, RUNNING
        result = await asyncio.to_thread(b.exec, name, "print(6 * 7)")
        assert result["status"] == "finished" and ["stdout", "42\n"] in result["console"], result
        assert (await asyncio.to_thread(b.session_info, name))["status"] == "RUNNING"
        r = await asyncio.to_thread(b.request, "DELETE", f"/session/{name}")
        assert r.status_code == 200, r.text
        events = await watched.until(name, "session_terminated")
    # session_enqueued was published by manager a (the admission), the rest by whoever started and destroyed it.
    assert events[0] == "session_enqueued" and "session_started" in events, events
    assert events.index("session_started") < events.index("session_terminated"), events
    assert (await asyncio.to_thread(a.session_info, name))["status"] == "TERMINATED"
    assert created["status"] == "RUNNING"


def test_cluster_status_and_the_follower_waking_the_leader(pair: Cluster) -> None:
    leader, follower = _leader_and_follower(pair)
    doc = _cluster_status(pair.at(follower))
    assert doc["shape"] == "several" and doc["database"] == "postgresql" and doc["redis"] is True
    assert sorted(m["address"] for m in doc["managers"] if m["alive"]) == sorted(pair.endpoints)
    assert [m["this"] for m in doc["managers"] if m["address"] == pair.endpoints[follower]] == [True]
    assert doc["agents"]["by_status"] == {"ALIVE": 2} and doc["versions"]["managers"] == {"0.1.0": 2}
    assert pair.at(follower).request("GET", "/admin/cluster").status_code == 403  # superadmins only
    # Creations on the follower wake the leader's scheduler at once (NOTIFY), not at its 5 s safety pass.
    f = pair.at(follower)
    names = [_uniq("wake") for _ in range(3)]
    for name in names:
        f.create_session(name, **DUMMY, enqueueOnly=True, running=False)
        info = f.wait_for_status(name, "RUNNING", timeout=15)
        scheduled = datetime.fromisoformat(info["statusHistory"]["SCHEDULED"])
        waited = (scheduled - datetime.fromisoformat(info["creationTime"])).total_seconds()
        assert waited < 1.0, (name, waited)
    for name in names:
        assert f.request("DELETE", f"/session/{name}").status_code == 200


def test_a_second_manager_is_refused_where_it_cannot_share(pair: Cluster, tmp_path: Path) -> None:
    # SQLite: one manager per database file.
    solo = launch_manager(tmp_path / "solo")
    try:
        out = subprocess.run(
            [sys.executable, "-m", "ai.backend.manager.server", "-f", str(tmp_path / "solo" / "manager.toml")],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode != 0 and "SQLite allows one manager" in out.stderr, out.stderr[-2000:]
        assert solo.request("GET", "/").status_code == 200  # the first one is unharmed
    finally:
        solo.shutdown()
    # PostgreSQL without Redis beside managers with Redis: refused too (after the lock wait).
    state = tmp_path / "noredis"
    state.mkdir()
    _write_manager_config(state, _free_port(), pair.secret, pair.db_url, None, None)
    out = subprocess.run(
        [sys.executable, "-m", "ai.backend.manager.server", "-f", str(state / "manager.toml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0 and "Several managers need a shared Redis" in out.stderr, out.stderr[-2000:]


class _Poller(threading.Thread):
    """Reads a session again and again through the SDK with both endpoints (the leader's first), counting the
    answers and the failures: idempotent requests must survive the leader's death."""

    def __init__(self, endpoints: list[str], name: str) -> None:
        super().__init__(daemon=True)
        self.config = APIConfig(
            endpoint=",".join(endpoints), access_key=USER["access_key"], secret_key=USER["secret_key"]
        )
        while str(self.config.endpoint).rstrip("/") != endpoints[0]:
            self.config.rotate_endpoints()
        self.name_ = name
        self.ok = 0
        self.errors: list[str] = []
        self.halt = threading.Event()

    def run(self) -> None:
        with Session(config=self.config):
            while not self.halt.is_set():
                try:
                    with Request("GET", f"/session/{self.name_}").fetch() as resp:
                        assert resp.status == 200
                    self.ok += 1
                except Exception as e:  # noqa: BLE001 - counted, the test asserts there is none
                    self.errors.append(repr(e))
                time.sleep(0.02)


def test_killing_the_leader_under_load(pair: Cluster) -> None:
    leader, follower = _leader_and_follower(pair)
    lead, follow = pair.at(leader), pair.at(follower)
    tag = uuid.uuid4().hex[:6]
    # The dummy agent's 4 cores taken by 4 sessions (created through both managers), 4 more waiting.
    running = [f"fill-{tag}-{i}" for i in range(4)]
    waiting = [f"wait-{tag}-{i}" for i in range(4)]
    for i, name in enumerate(running):
        (lead, follow)[i % 2].create_session(name, **DUMMY)
    for i, name in enumerate(waiting):
        (lead, follow)[i % 2].create_session(name, **DUMMY, enqueueOnly=True, running=False)
    time.sleep(1.0)
    assert {follow.session_info(n)["status"] for n in waiting} == {"PENDING"}
    poller = _Poller([lead.endpoint, follow.endpoint], running[0])
    poller.start()
    time.sleep(0.5)
    killed_at = time.monotonic()
    pair.kill(Cluster.manager_name(leader))
    # The survivor frees the cores: the waiting sessions start there, under its new leadership.
    for name in running:
        r = follow.request("DELETE", f"/session/{name}")
        assert r.status_code == 200, r.text
    for name in waiting:
        follow.wait_for_status(name, "RUNNING", timeout=15)
    took = time.monotonic() - killed_at
    poller.halt.set()
    poller.join(10)
    assert took < 8.0, took
    assert poller.errors == [] and poller.ok > 0, poller.errors[:3]
    doc = _cluster_status(follow)
    assert doc["leader"] is not None and doc["leader"] == next(m["id"] for m in doc["managers"] if m["this"])
    assert [m["alive"] for m in doc["managers"] if m["address"] == lead.endpoint] == [False]
    # The agents moved to the survivor: both still alive, and a new session runs end to end (on a free core).
    assert doc["agents"]["by_status"] == {"ALIVE": 2}
    for n in waiting:
        assert follow.request("DELETE", f"/session/{n}").status_code == 200
    name = _uniq("after")
    follow.create_session(name, **DUMMY)
    assert follow.exec(name, "print(1)")["status"] == "finished"
    assert follow.request("DELETE", f"/session/{name}").status_code == 200


async def test_the_redis_activity_store_keeps_the_latest_use() -> None:
    try:
        await asyncio.to_thread(check_redis)
    except ServiceUnavailable as e:
        pytest.fail(str(e), pytrace=False)
    url = await claim_redis_db_async()
    store = RedisActivityStore(url)
    try:
        now = float(int(time.time()))
        await store.push({"s1": now, "s2": now - 100, "old": now - 40 * 86400})
        await store.push({"s1": now - 50})  # a slower manager's older report does not move it back
        assert await store.last(["s1", "s2", "s3"]) == {"s1": now, "s2": now - 100}
        assert await store.last([]) == {}
        for _ in range(100):  # the first push and every hundredth drop the entries past the retention
            await store.push({"s2": now})
        assert await store.last(["old", "s2"]) == {"s2": now}
    finally:
        await store.close()
        await release_redis_db_async(url)
