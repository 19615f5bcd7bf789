"""The console's settings and usage pages in Debian's Chromium, against the real cluster: password change,
SSH keypair, dotfiles, bootstrap script, and usage charts drawn from the manager's numbers.

Everything runs as fresh users made here through the admin API (the shared fixture USER keeps its password
and settings); what is created is removed again.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ai.backend.manager.fixtures import DEFAULT_GROUP_ID
from ai.backend.testutils.cluster import Cluster
from ai.backend.testutils.web import WebServer

from .conftest import PageFactory, login


def _new_user(cluster: Cluster) -> dict[str, Any]:
    """A user of the default domain and project, with its main keypair and password."""
    email = f"settings-{secrets.token_hex(4)}@example.org"
    password = "first-pass-" + secrets.token_hex(3)
    out = cluster.gql(
        "mutation($e: String!, $p: UserInput!) { create_user(email: $e, props: $p) { ok msg } }",
        {
            "e": email,
            "p": {
                "password": password,
                "domain_name": "default",
                "role": "user",
                "group_ids": [str(DEFAULT_GROUP_ID)],
                "need_password_change": False,
            },
        },
    )
    assert out["create_user"]["ok"], out
    kp = cluster.gql("query($e: String) { keypairs(email: $e) { access_key secret_key } }", {"e": email})["keypairs"][0]
    return {"email": email, "password": password, **kp}


def _delete_user(cluster: Cluster, who: dict[str, Any]) -> None:
    cluster.gql("mutation($e: String!) { delete_user(email: $e) { ok } }", {"e": who["email"]})


@pytest.fixture(scope="module")
def fresh(cluster: Cluster) -> Iterator[dict[str, Any]]:
    who = _new_user(cluster)
    try:
        yield who
    finally:
        _delete_user(cluster, who)


def _get(cluster: Cluster, who: dict[str, Any], path: str) -> Any:
    r = cluster.request("GET", path, who=who)
    assert r.status_code == 200, r.text
    return r.json()


def _status_of(page: Any, action: Any, url_part: str) -> int:
    """The HTTP status of the request to ``url_part`` that ``action`` (a click) makes."""
    with page.expect_response(lambda r: url_part in r.url and r.request.method == "POST") as info:
        action()
    status: int = info.value.status
    return status


def _alert(page: Any, text: str) -> None:
    """Wait for an alert that contains ``text`` (htmx puts a refused form's message there)."""
    page.locator("#alerts .alert", has_text=text).first.wait_for()


# ------------------------------------------------------------------------------------------- password


def test_change_password_and_log_in_with_the_new_one(
    cluster: Cluster, new_page: PageFactory, console: WebServer
) -> None:
    who = _new_user(cluster)
    try:
        page = new_page(who)
        page.goto("/settings")
        form = page.locator("#password")
        submit = form.get_by_role("button", name="Change password")

        # Wrong current password: a clear message and a 4xx; the password stays.
        form.get_by_label("Current password").fill("not-my-password")
        form.get_by_label("New password", exact=True).fill("second-pass-123")
        form.get_by_label("Repeat the new password").fill("second-pass-123")
        assert _status_of(page, submit.click, "/settings/password") == 400
        _alert(page, "The current password is wrong")

        # The repetition differs: the console says so without asking the manager.
        form.get_by_label("Current password").fill(who["password"])
        form.get_by_label("Repeat the new password").fill("second-pass-124")
        assert _status_of(page, submit.click, "/settings/password") == 400
        _alert(page, "differ")

        # The manager's policy: too short.
        for label in ("New password", "Repeat the new password"):
            form.get_by_label(label, exact=True).fill("short")
        assert _status_of(page, submit.click, "/settings/password") == 400
        _alert(page, "8 to 72 characters")

        # The old password still works for the API's login.
        r = httpx.post(
            console.url + "/server/login",
            json={"username": who["email"], "password": who["password"]},
            headers={"X-Requested-With": "XMLHttpRequest"},
        )
        assert r.status_code == 200, r.text

        new_password = "second-pass-" + secrets.token_hex(3)
        form.get_by_label("Current password").fill(who["password"])
        for label in ("New password", "Repeat the new password"):
            form.get_by_label(label, exact=True).fill(new_password)
        assert _status_of(page, submit.click, "/settings/password") == 200
        page.locator("#password .notice").filter(has_text="has been changed").wait_for()

        page.get_by_role("button", name="Log out").click()
        page.wait_for_url("**/login?bye=1")
        login(page, {**who, "password": new_password})
        assert page.url.endswith("/sessions")
    finally:
        _delete_user(cluster, who)


# ----------------------------------------------------------------------------------------- SSH keypair


def test_ssh_keypair_view_regenerate_and_upload(
    cluster: Cluster, new_page: PageFactory, fresh: dict[str, Any], console: WebServer, shot: Any
) -> None:
    page = new_page(fresh)
    page.goto("/settings")
    # The account: e-mail and access key, never the secret key.
    account = page.locator("#account")
    assert fresh["email"] in account.inner_text() and fresh["access_key"] in account.inner_text()
    assert fresh["secret_key"] not in page.content()

    public = page.get_by_label("Public key", exact=True)
    before = _get(cluster, fresh, "/auth/ssh-keypair")["ssh_public_key"]
    assert public.input_value().strip() == before and before.startswith("ssh-ed25519 ")

    # Replacing needs the confirmation box (the console refuses the form without it, too).
    sid = next(c["value"] for c in page.context.cookies() if c["name"] == "AIOHTTP_SESSION")
    with httpx.Client(base_url=console.url, cookies={"AIOHTTP_SESSION": sid}) as http:
        csrf = page.locator('meta[name="csrf-token"]').get_attribute("content")
        r = http.post("/settings/ssh/regenerate", data={"_csrf": csrf})
        assert r.status_code == 400 and "confirm" in r.text
        r = http.post("/settings/ssh/regenerate", data={"_csrf": "forged", "confirm": "yes"})
        assert r.status_code == 403
    assert _get(cluster, fresh, "/auth/ssh-keypair")["ssh_public_key"] == before

    page.get_by_label("Yes, replace my SSH keypair").check()
    page.get_by_role("button", name="Generate a new keypair").click()
    link = page.locator("#private-key-download")
    link.wait_for()
    assert "will not be shown again" in page.locator("#ssh").inner_text()
    with page.expect_download() as dl:
        link.click()
    private = Path(dl.value.path()).read_text()
    assert private.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    after = _get(cluster, fresh, "/auth/ssh-keypair")["ssh_public_key"]
    assert after != before and page.get_by_label("Public key", exact=True).input_value().strip() == after
    key = serialization.load_ssh_private_key(private.encode(), password=None)
    assert (
        key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
        in after
    )
    shot(page, "settings-page")

    # Shown once: a reload has no private key.
    page.reload()
    assert page.locator("#private-key-download").count() == 0

    # A pair of one's own; a mismatched one is refused with the manager's reason.
    mine = Ed25519PrivateKey.generate()
    priv_text = mine.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    pub_text = (
        mine.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    )
    page.get_by_text("Use a keypair of my own").click()
    page.get_by_label("Public key (OpenSSH, one line)").fill(after)  # not the half of this private key
    page.get_by_label("Private key (OpenSSH, unencrypted)").fill(priv_text)
    store = page.get_by_role("button", name="Store this keypair")
    assert _status_of(page, store.click, "/settings/ssh/upload") == 400
    _alert(page, "public half")
    page.get_by_label("Public key (OpenSSH, one line)").fill(pub_text)
    assert _status_of(page, store.click, "/settings/ssh/upload") == 200
    page.locator("#ssh .notice").filter(has_text="stored").wait_for()
    assert _get(cluster, fresh, "/auth/ssh-keypair")["ssh_public_key"] == pub_text.strip()


# --------------------------------------------------------------------------- dotfiles, bootstrap script


def test_dotfiles_create_edit_delete(cluster: Cluster, new_page: PageFactory, fresh: dict[str, Any]) -> None:
    page = new_page(fresh)
    page.goto("/settings#dotfiles")
    section = page.locator("#dotfiles")
    path = ".console-rc"

    # Refusals of the manager come back as messages; nothing is created.
    section.get_by_label("Path (relative to /home/work)").fill("../escape")
    section.get_by_label("Content", exact=True).fill("x")
    create = section.get_by_role("button", name="Create dotfile")
    assert _status_of(page, create.click, "/settings/dotfiles") == 400
    _alert(page, "must not contain '..'")
    section.get_by_label("Path (relative to /home/work)").fill(path)
    section.get_by_label("Content", exact=True).fill("x" * (70 * 1024))
    assert _status_of(page, create.click, "/settings/dotfiles") == 400
    _alert(page, "64 KiB")
    assert _get(cluster, fresh, "/user-config/dotfiles") == []

    section.get_by_label("Content", exact=True).fill("export CONSOLE=1\n")
    section.get_by_label("Mode (octal)").fill("600")
    assert _status_of(page, create.click, "/settings/dotfiles") == 200
    page.locator("#dotfile-table").get_by_text(path).wait_for()
    assert _get(cluster, fresh, "/user-config/dotfiles") == [
        {"path": path, "permission": "600", "data": "export CONSOLE=1\n"}
    ]

    page.get_by_role("link", name=f"Edit {path}").click()
    editor = page.locator("#dotfile-edit")
    assert editor.get_by_label("Content").input_value() == "export CONSOLE=1\n"
    editor.get_by_label("Content").fill("export CONSOLE=2\n")
    editor.get_by_label("Mode (octal)").fill("644")
    editor.get_by_role("button", name=f"Save {path}").click()
    page.locator("#dotfiles .notice").filter(has_text=f"Saved {path}").wait_for()
    assert _get(cluster, fresh, "/user-config/dotfiles") == [
        {"path": path, "permission": "644", "data": "export CONSOLE=2\n"}
    ]

    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name=f"Delete {path}").click()
    page.locator("#no-dotfiles").wait_for()
    assert _get(cluster, fresh, "/user-config/dotfiles") == []


def test_bootstrap_script(cluster: Cluster, new_page: PageFactory, fresh: dict[str, Any]) -> None:
    page = new_page(fresh)
    page.goto("/settings#bootstrap")
    script = page.get_by_label("Script", exact=True)
    script.fill("echo hello from the console\r\npip list > /dev/null\n")  # stored with LF line ends
    page.get_by_role("button", name="Save bootstrap script").click()
    page.locator("#bootstrap .notice").filter(has_text="Saved").wait_for()
    assert (
        _get(cluster, fresh, "/user-config/bootstrap-script") == "echo hello from the console\npip list > /dev/null\n"
    )
    page.reload()
    assert page.get_by_label("Script", exact=True).input_value().startswith("echo hello from the console")
    page.get_by_label("Script", exact=True).fill("")
    page.get_by_role("button", name="Save bootstrap script").click()
    page.locator("#bootstrap .notice").filter(has_text="Cleared").wait_for()
    assert _get(cluster, fresh, "/user-config/bootstrap-script") == ""


# ------------------------------------------------------------------------------------------------ usage


def test_usage_charts_show_the_managers_numbers(
    cluster: Cluster, new_page: PageFactory, fresh: dict[str, Any], shot: Any
) -> None:
    name = f"usage-{secrets.token_hex(3)}"
    cluster.create_session(name, who=fresh, config={"resources": {"cpu": 1, "mem": "256m"}})
    r = cluster.request("DELETE", f"/session/{name}", who=fresh)
    assert r.status_code in (200, 204), r.text
    stats = _get(cluster, fresh, "/resource/usage-stats?days=30&bin=day")
    today = stats["bins"][-1]
    assert today["sessions"] == 1 and today["cpu_hours"] > 0, today

    page = new_page(fresh)
    page.goto("/usage")
    charts = page.locator(".chart svg")
    assert charts.count() == 4
    sessions_chart = page.locator("#chart-sessions svg")
    assert sessions_chart.locator("rect.bar").count() == 30
    last = sessions_chart.locator("rect.bar").last
    assert last.locator("title").text_content() == f"{today['start'][:10]}: 1 session"
    assert float(last.get_attribute("height") or 0) > 0
    cpu_title = page.locator("#chart-cpu_hours rect.bar").last.locator("title").text_content() or ""
    assert cpu_title.startswith(today["start"][:10]) and "CPU-hour" in cpu_title

    # The table holds the manager's numbers, bin by bin.
    page.get_by_text("Show as table").click()
    rows = page.locator("#usage-table tbody tr")
    assert rows.count() == len(stats["bins"])
    for key in ("sessions", "cpu_hours", "mem_gib_hours", "accelerator_hours"):
        cell = page.locator(f'#usage-table tr[data-start="{today["start"][:10]}"] td[data-key="{key}"]')
        assert float(cell.inner_text()) == pytest.approx(today[key], abs=1e-4), key

    # The allocation summary: nothing held now, against the policy's limits.
    alloc = page.locator('#alloc-table tr[data-slot="cpu"]')
    assert alloc.locator("td").first.inner_text() == "0"
    shot(page, "usage-page")

    page.get_by_role("link", name="Weekly, last 12 weeks").click()
    page.wait_for_url("**/usage?view=week")
    weeks = page.locator("#chart-sessions rect.bar")
    assert weeks.count() in (12, 13)
    assert (weeks.last.locator("title").text_content() or "").endswith(": 1 session")

    for bad in ("/usage?view=month", "/usage?group=not-my-project"):
        resp = page.goto(bad)
        assert resp is not None and resp.status == 400, bad
