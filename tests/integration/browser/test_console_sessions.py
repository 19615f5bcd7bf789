"""The console's sessions pages in Debian's Chromium against the real cluster (python image, real containers).

One session is launched from the launcher and followed through the module's ordered tests: it reaches
RUNNING on the list and on its page without a reload (the session event stream), its logs show, Jupyter
opens from the app launcher in a new tab through the app proxy, and it is terminated from its page.
Sessions reserved a day ahead (``starts_at``) stay PENDING without a container: they fill the pagination
and pending-reason checks, and one of them belongs to a second user (the 404 check).
"""

from __future__ import annotations

import re
import secrets
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from ai.backend.manager.fixtures import ADMIN, DEFAULT_GROUP_ID, USER
from ai.backend.testutils.cluster import Cluster
from ai.backend.testutils.web import WebServer
from ai.backend.web.console.pages.sessions.launcher import (
    InvalidLaunch,
    LauncherChoices,
    launch_body,
    launcher_defaults,
)

from .conftest import PageFactory

pytestmark = pytest.mark.docker

PREFIX = f"cs-{uuid.uuid4().hex[:6]}"
RESERVED = 3  # pending (reserved) sessions of the user for the list checks


def _reserve(cluster: Cluster, name: str, who: dict[str, Any]) -> str:
    """A session reserved a day ahead: PENDING with a reason, never started (no container)."""
    body = {"image": "python", "name": name, "enqueueOnly": True, "starts_at": "1d"}
    r = cluster.request("POST", "/session", body, who=who)
    assert r.status_code == 201, r.text
    sid: str = r.json()["sessionId"]
    return sid


def _count(cluster: Cluster, who: dict[str, Any], status: str = "") -> int:
    args = f'(status: "{status}")' if status else ""
    data = cluster.gql(f"{{ compute_session_list{args} {{ total_count }} }}", who=who)
    total: int = data["compute_session_list"]["total_count"]
    return total


@pytest.fixture(scope="module")
def reserved(cluster: Cluster) -> Iterator[list[str]]:
    ids = [_reserve(cluster, f"{PREFIX}-r{i}", USER) for i in range(RESERVED)]
    try:
        yield ids
    finally:
        for sid in ids:
            cluster.request("DELETE", f"/session/{sid}")


@pytest.fixture(scope="module")
def other_user(cluster: Cluster) -> Iterator[dict[str, Any]]:
    """A second plain user (through the admin API) with a reserved session of their own."""
    email = f"{PREFIX}-{secrets.token_hex(3)}@example.org"
    props = {
        "username": email.split("@")[0],
        "password": "pass-word-1",
        "domain_name": "default",
        "role": "user",
        "group_ids": [str(DEFAULT_GROUP_ID)],
        "need_password_change": False,
    }
    data = cluster.gql(
        "mutation($e: String!, $p: UserInput!) { create_user(email: $e, props: $p) { ok msg } }",
        {"e": email, "p": props},
    )
    assert data["create_user"]["ok"], data
    kp = cluster.gql("query($e: String) { keypairs(email: $e) { access_key secret_key } }", {"e": email})["keypairs"][0]
    who = {"email": email, "password": "pass-word-1", **kp}
    sid = _reserve(cluster, f"{PREFIX}-other", who)
    try:
        yield {**who, "session_id": sid}
    finally:
        cluster.request("DELETE", f"/session/{sid}", who=who)


@pytest.fixture(scope="module")
def launched() -> dict[str, str]:
    """The session the launcher test starts, for the tests after it (id, name)."""
    return {}


# ---- the list ----------------------------------------------------------------------------------------


def test_list_is_paginated_and_shows_why_sessions_wait(
    new_page: PageFactory, cluster: Cluster, reserved: list[str], shot: Any
) -> None:
    page = new_page(USER)
    total = _count(cluster, USER, "PENDING,SCHEDULED,PREPARING,PULLING,RUNNING,RESTARTING,RUNNING_DEGRADED,TERMINATING")
    assert total >= RESERVED
    resp = page.goto("/sessions?size=2")
    assert resp is not None and resp.status == 200
    rows = page.locator("#sessions-table tbody tr")
    assert rows.count() == 2
    assert page.locator("#sessions-summary").inner_text().startswith(f"Showing 1–2 of {total} running")
    assert page.locator('.tabs [data-count="running"]').inner_text() == f"({total})"
    # The newest first: the last reserved session is on page 1 with its pending reason.
    row = page.locator(f"#session-{reserved[-1]}")
    assert row.locator('[data-role="status"]').inner_text() == "PENDING"
    assert "reserved to start at" in row.locator('[data-role="reason"]').inner_text()
    shot(page, "sessions-list")
    page.get_by_role("link", name="Next").click()
    page.wait_for_url("**page=2**")
    assert page.locator("#sessions-summary").inner_text().startswith(f"Showing 3–{min(4, total)} of {total}")
    assert page.locator("#sessions-table tbody tr").count() == min(2, total - 2)
    # Page links and the finished tab keep the page size; a bad page number is a 400 page, not a 500.
    assert page.get_by_role("link", name="Page 1").get_attribute("href") == "/sessions?size=2"
    resp = page.goto("/sessions?page=zero")
    assert resp is not None and resp.status == 400
    assert "whole number" in page.locator("main").inner_text()

    # Terminating from the list (a queued session is cancelled) comes back to the same list without it.
    finished = _count(cluster, USER, "TERMINATED,CANCELLED,ERROR")
    page.goto("/sessions?size=2")
    page.on("dialog", lambda d: d.accept())
    with page.expect_response(lambda r: r.url.endswith("/terminate")) as answer:
        page.get_by_role("button", name=f"Terminate {PREFIX}-r{RESERVED - 1}").click()
    assert answer.value.status == 303
    page.wait_for_load_state()
    assert urlsplit(page.url).query == "size=2"
    assert page.locator(f"#session-{reserved[-1]}").count() == 0
    assert page.locator('.tabs [data-count="finished"]').inner_text() == f"({finished + 1})"


def test_admin_may_list_every_users_sessions(
    new_page: PageFactory, other_user: dict[str, Any], reserved: list[str]
) -> None:
    page = new_page(ADMIN)
    page.goto("/sessions")
    assert page.locator(f"#session-{other_user['session_id']}").count() == 0  # "mine" by default
    page.get_by_role("link", name="Show all users' sessions").click()
    page.wait_for_url("**scope=all**")
    row = page.locator(f"#session-{other_user['session_id']}")
    row.wait_for()
    assert other_user["email"] in row.inner_text()
    # An admin may open it: the page names the owner, and the calls act for the owner (owner_access_key).
    row.get_by_role("link", name=f"{PREFIX}-other", exact=True).click()
    page.wait_for_url(f"**/sessions/{other_user['session_id']}")
    assert other_user["email"] in page.locator("#session-live").inner_text()
    page.locator("#session-logs").get_by_text("The log is empty").wait_for()
    # A plain user cannot ask for everything.
    user = new_page(USER)
    resp = user.goto("/sessions?scope=all")
    assert resp is not None and resp.status == 403


# ---- the launcher ------------------------------------------------------------------------------------


def _submit(page: Any) -> Any:
    with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/sessions/new")) as info:
        page.get_by_role("button", name="Start session").click()
    return info.value


def test_launcher_refuses_invalid_values(
    new_page: PageFactory, cluster: Cluster, reserved: list[str], shot: Any
) -> None:
    page = new_page(USER)
    before = _count(cluster, USER)
    page.goto("/sessions/new")
    shot(page, "sessions-launcher")
    page.get_by_label("Session name").fill("no spaces allowed!")
    resp = _submit(page)
    assert resp.status == 400
    error = page.locator("#launch-error")
    assert "session name" in error.inner_text().lower()
    assert page.get_by_label("Session name").get_attribute("aria-invalid") == "true"
    assert page.get_by_label("Session name").input_value() == "no spaces allowed!"  # the form keeps the values
    shot(page, "sessions-launcher-invalid")

    page.get_by_label("Session name").fill(f"{PREFIX}-bad")
    page.get_by_role("radio", name="Custom").check()
    page.get_by_label("Memory", exact=True).fill("lots")
    resp = _submit(page)
    assert resp.status == 400 and "Memory" in page.locator("#launch-error").inner_text()

    page.get_by_label("Memory", exact=True).fill("1g")
    page.get_by_label("Environment variables").fill("1BAD=x")
    resp = _submit(page)
    assert resp.status == 400 and "Environment line 1" in page.locator("#launch-error").inner_text()

    page.get_by_label("Environment variables").fill("")
    page.get_by_role("radio", name=re.compile("^Batch")).check()
    resp = _submit(page)
    assert resp.status == 400 and "startup command" in page.locator("#launch-error").inner_text()

    # What only the manager knows is its refusal, shown the same way: the name is taken by an active session.
    page.get_by_role("radio", name="Interactive").check()
    page.get_by_label("Session name").fill(f"{PREFIX}-r0")
    resp = _submit(page)
    assert 400 <= resp.status < 500
    assert "The manager refused the session" in page.locator("#launch-error").inner_text()
    assert _count(cluster, USER) == before  # nothing was created


def test_launch_and_watch_it_start_live(
    new_page: PageFactory, cluster: Cluster, launched: dict[str, str], shot: Any
) -> None:
    name = f"{PREFIX}-live"
    page = new_page(USER)
    listing = page.context.new_page()
    listing.goto("/sessions")
    listing.evaluate("window.__notReloaded = true")

    page.goto("/sessions/new")
    page.get_by_label("Session name").fill(name)
    page.get_by_role("radio", name="Custom").check()
    page.get_by_label("CPU cores").fill("1")
    page.get_by_label("Memory", exact=True).fill("512m")
    page.get_by_label("Environment variables").fill("GREETING=hello from the console")
    page.get_by_label("Bootstrap script").fill("#!/bin/bash\necho console-bootstrap-$((6 * 7))\n")
    page.get_by_role("button", name="Start session").click()
    page.wait_for_url(re.compile(r"/sessions/[0-9a-f-]{36}$"))
    sid = page.url.rsplit("/", 1)[-1]
    launched.update(id=sid, name=name)
    page.evaluate("window.__notReloaded = true")
    assert page.get_by_role("heading", name=f"Session {name}").is_visible()

    # Both pages follow the session's events: RUNNING shows up without a reload.
    status = page.locator("#session-status [data-role=status]")
    status.filter(has_text=re.compile("^RUNNING$")).wait_for(timeout=90_000)
    row_status = listing.locator(f"#session-{sid} [data-role=status]")
    row_status.filter(has_text=re.compile("^RUNNING$")).wait_for(timeout=30_000)
    assert page.evaluate("window.__notReloaded") is True
    assert listing.evaluate("window.__notReloaded") is True
    assert "512.0 MiB RAM" in listing.locator(f"#session-{sid}").inner_text()
    shot(listing, "sessions-list-running")

    info = cluster.session_info(sid)
    assert info["environ"].get("GREETING") == "hello from the console" and info["status"] == "RUNNING"
    page.locator("#session-live").get_by_role("heading", name="Apps").wait_for()
    shot(page, "sessions-detail")


def test_logs_show_on_the_session_page(new_page: PageFactory, cluster: Cluster, launched: dict[str, str]) -> None:
    assert launched, "the launch test did not start a session"
    page = new_page(USER)
    page.goto(f"/sessions/{launched['id']}")
    logs = page.locator("#session-logs")
    logs.locator("pre, p").first.wait_for()
    page.get_by_role("button", name="Refresh logs").click()
    pre = logs.locator("pre.logs")
    pre.wait_for()
    assert "console-bootstrap-42" in pre.inner_text()


def test_open_jupyter_from_the_app_launcher(
    new_page: PageFactory, cluster: Cluster, console: WebServer, launched: dict[str, str], shot: Any
) -> None:
    assert launched, "the launch test did not start a session"
    assert cluster.appproxy is not None
    page = new_page(USER)
    page.goto(f"/sessions/{launched['id']}")
    apps = page.locator("#session-live .apps")
    assert {"jupyter", "sshd", "ttyd"} <= set(apps.locator("li").evaluate_all("els => els.map(e => e.dataset.app)"))
    ssh = page.locator("#ssh-details")
    assert f"backend.ai ssh {launched['name']}" in ssh.inner_text()
    with page.expect_download() as dl:
        ssh.get_by_role("link", name=re.compile("download the private key")).click()
    key = dl.value.path().read_text()
    assert "PRIVATE KEY" in key
    with page.expect_popup() as popup_info:
        page.get_by_role("button", name="Open jupyter in a new tab").click()
    tab = popup_info.value
    # The tab goes through the app proxy's one-use link to Jupyter itself (the start takes a few seconds).
    # Read the tab's own location: Playwright's page.url may keep the popup's first URL (about:blank).
    where: dict[str, Any] = {}
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            where = tab.evaluate("({origin: location.origin, title: document.title})")
        except Exception:  # noqa: BLE001 - navigating: the page's context went away; ask again
            where = {}
        if where.get("origin", "null") not in ("null", console.url) and where.get("title"):
            break
        time.sleep(0.3)
    lo, hi = cluster.appproxy.port_range
    assert lo <= (urlsplit(where["origin"]).port or 0) <= hi, where  # one of the app proxy's circuit ports
    assert "jupyter" in tab.evaluate("document.documentElement.outerHTML").lower()
    # It is Jupyter's own page, and its API answers there (the app proxy's permit cookie is set).
    version = tab.evaluate("fetch('/api').then(r => r.json())")
    assert "version" in version, version
    tab.wait_for_load_state()
    shot(tab, "sessions-app-jupyter")
    assert page.locator("#app-status").inner_text() == "jupyter was opened in a new tab."


def test_terminate_from_the_session_page(
    new_page: PageFactory, cluster: Cluster, launched: dict[str, str], shot: Any
) -> None:
    assert launched, "the launch test did not start a session"
    page = new_page(USER)
    listing = page.context.new_page()
    listing.goto("/sessions")
    listing.locator(f"#session-{launched['id']}").wait_for()
    page.goto(f"/sessions/{launched['id']}")
    # Renaming first (the manager allows it for active sessions); a bad name is a 400 page.
    renamed = f"{launched['name']}-2"
    page.get_by_label("New name").fill("x")
    with page.expect_response(lambda r: r.url.endswith("/rename")) as answer:
        page.get_by_role("button", name="Rename").click()
    assert answer.value.status == 400
    page.goto(f"/sessions/{launched['id']}")
    page.get_by_label("New name").fill(renamed)
    page.get_by_role("button", name="Rename").click()
    page.get_by_role("heading", name=f"Session {renamed}").wait_for()
    launched["name"] = renamed
    page.on("dialog", lambda d: d.accept())
    with page.expect_response(lambda r: r.url.endswith("/terminate")) as answer:
        page.locator("#session-live").get_by_role("button", name="Terminate").click()
    assert answer.value.status == 303  # back to the session's page
    status = page.locator("#session-status [data-role=status]")
    status.filter(has_text=re.compile("^TERMINATED$")).wait_for(timeout=60_000)
    assert page.locator("#session-live").get_by_role("button", name="Terminate").count() == 0
    shot(page, "sessions-detail-terminated")
    # The list drops it from the running tab by itself.
    listing.locator(f"#session-{launched['id']}").wait_for(state="detached", timeout=30_000)
    assert cluster.session_info(launched["id"])["status"] == "TERMINATED"


# ---- the launcher's checks, without a browser ------------------------------------------------------------


def _choices() -> LauncherChoices:
    return LauncherChoices(
        images=[{"reference": "python:3.11-debian12", "aliases": ["python"]}],
        presets=[{"name": "small", "resource_slots": {"cpu": "1", "mem": "1073741824"}, "shared_memory": 67108864}],
        slot_types={"cpu": "count", "mem": "bytes", "cuda.shares": "count"},
        folders=[{"name": "data"}],
        groups=[{"name": "default"}],
        scaling_groups=["default", "gpu"],
        default_image="python:3.11-debian12",
    )


def test_launch_body_from_the_form_values() -> None:
    c = _choices()
    v = {**launcher_defaults(c), "name": "my-run"}
    assert v["resource_mode"] == "preset" and v["preset"] == "small"
    body = launch_body(v, c)
    assert body["image"] == "python:3.11-debian12" and body["name"] == "my-run" and body["enqueueOnly"] is True
    assert body["config"] == {"resources": {"cpu": "1", "mem": "1073741824"}, "resource_opts": {"shmem": "67108864"}}
    v.update(
        resource_mode="custom",
        cpu="2",
        mem="2g",
        shmem="256m",
        accel={"cuda.shares": "0.5"},
        mounts=["data"],
        environ="# a comment\nA=1\n\nURL=http://x/?a=b\n",
        scaling_group="gpu",
        type="batch",
        startup_command="python train.py",
    )
    body = launch_body(v, c)
    assert body["config"] == {
        "resources": {"cpu": "2", "mem": "2g", "cuda.shares": "0.5"},
        "resource_opts": {"shmem": "256m"},
        "mounts": ["data"],
        "environ": {"A": "1", "URL": "http://x/?a=b"},
        "scalingGroup": "gpu",
    }
    assert body["type"] == "batch" and body["startupCommand"] == "python train.py" and body["group"] == "default"
    bad = {
        "name": "ab",
        "image": "someone-elses:latest",
        "preset": "huge",
        "cpu": "0",
        "shmem": "4g",
        "mounts": ["nope"],
        "scaling_group": "private",
        "group": "not-mine",
    }
    for key, value in bad.items():
        mode = "preset" if key == "preset" else "custom"
        with pytest.raises(InvalidLaunch) as e:
            launch_body({**v, "resource_mode": mode, key: value}, c)
        assert e.value.field_name == key, (key, e.value.message)
    with pytest.raises(InvalidLaunch) as e:
        launch_body({**v, "accel": {"cuda.shares": "many"}}, c)
    assert e.value.field_name == "accel.cuda.shares"


# ---- other users' sessions and forged requests --------------------------------------------------------


def test_another_users_session_is_a_404(
    new_page: PageFactory, console: WebServer, other_user: dict[str, Any], shot: Any
) -> None:
    page = new_page(USER)
    sid = other_user["session_id"]
    resp = page.goto(f"/sessions/{sid}")
    assert resp is not None and resp.status == 404
    assert page.get_by_role("heading", name="Session not found").is_visible()
    shot(page, "sessions-404")
    for path in (f"/sessions/{sid}/logs", f"/sessions/{sid}/live", "/sessions/not-a-session-id"):
        resp = page.goto(path)
        assert resp is not None and resp.status == 404, path
    # Terminating it with a valid token is refused too, and it lives on; without the token nothing is asked.
    csrf = page.locator('meta[name="csrf-token"]').get_attribute("content")
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    with httpx.Client(base_url=console.url, cookies=cookies) as http:
        r = http.post(f"/sessions/{sid}/terminate", data={"_csrf": csrf or ""})
        assert r.status_code == 404
        r = http.post(f"/sessions/{sid}/terminate", data={"_csrf": "forged"})
        assert r.status_code == 403
        r = http.post(f"/sessions/{sid}/apps/jupyter", json={}, headers={"X-CSRF-Token": csrf or ""})
        assert r.status_code == 404
