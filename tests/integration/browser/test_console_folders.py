"""The console's folders pages in Debian's Chromium, against the real cluster and its storage proxy: creating
folders, uploads (tus, with progress and resumption) and downloads checked byte for byte, directories, file
operations, invitations between two users, and refusals (another user's folder, paths leaving the folder,
bad names, a file over the folder's size limit)."""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from ai.backend.manager.fixtures import ADMIN, DEFAULT_GROUP_ID, USER
from ai.backend.testutils.cluster import Cluster
from ai.backend.testutils.web import WebServer

from .conftest import PageFactory

MiB = 1024 * 1024
TAG = secrets.token_hex(3)
FRIEND_PASSWORD = "folder-friend-pw-1"


def _gql(cluster: Cluster, query: str, variables: dict[str, Any]) -> Any:
    r = cluster.request("POST", "/admin/gql", {"query": query, "variables": variables}, who=ADMIN)
    assert r.status_code == 200 and not r.json().get("errors"), r.text
    return r.json()["data"]


class Folders:
    """Folders made by the tests (through the API or the page), deleted at the end of the module."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.names: list[tuple[str, dict[str, Any]]] = []

    def track(self, name: str, who: dict[str, Any] = USER) -> str:
        self.names.append((name, who))
        return name

    def make(self, stem: str, who: dict[str, Any] = USER, **extra: Any) -> dict[str, Any]:
        name = self.track(f"con-{stem}-{TAG}", who)
        r = self.cluster.request("POST", "/folders", {"name": name, **extra}, who=who)
        assert r.status_code == 201, r.text
        folder: dict[str, Any] = r.json()
        return folder

    def names_of(self, who: dict[str, Any] = USER) -> set[str]:
        r = self.cluster.request("GET", "/folders", who=who)
        assert r.status_code == 200, r.text
        return {f["name"] for f in r.json()}

    def cleanup(self) -> None:
        for name, who in reversed(self.names):
            self.cluster.request("DELETE", f"/folders/{quote(name, safe='')}", who=who)


@pytest.fixture(scope="module")
def folders(cluster: Cluster) -> Iterator[Folders]:
    f = Folders(cluster)
    try:
        yield f
    finally:
        f.cleanup()


@pytest.fixture(scope="module")
def friend(cluster: Cluster) -> Iterator[dict[str, Any]]:
    """A second user (the invitee), deleted afterwards."""
    email = f"folder-friend-{TAG}@example.com"
    d = _gql(
        cluster,
        "mutation($e: String!, $p: UserInput!) { create_user(email: $e, props: $p) { ok msg } }",
        {
            "e": email,
            "p": {
                "password": FRIEND_PASSWORD,
                "username": f"folder-friend-{TAG}",
                "domain_name": "default",
                "role": "user",
                "group_ids": [str(DEFAULT_GROUP_ID)],
            },
        },
    )
    assert d["create_user"]["ok"], d
    kp = _gql(cluster, "query($e: String) { keypairs(email: $e) { access_key secret_key } }", {"e": email})
    who = {"email": email, "password": FRIEND_PASSWORD, **kp["keypairs"][0]}
    try:
        yield who
    finally:
        _gql(cluster, "mutation($e: String!) { delete_user(email: $e) { ok } }", {"e": email})


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """50 MiB of random bytes and their SHA-256."""
    path = tmp_path_factory.mktemp("upload") / "big.bin"
    data = os.urandom(50 * MiB)
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def _sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(MiB):
            h.update(chunk)
    return h.hexdigest()


def _record_progress(page: Any) -> None:
    page.evaluate(
        "() => { window.__progress = [];"
        " document.addEventListener('bai:upload-progress', (e) => window.__progress.push(e.detail)); }"
    )


def _upload(page: Any, selector: str, files: Any) -> str:
    """Pick ``files`` in the input ``selector``, press Upload and wait for the summary; the summary."""
    page.set_input_files(selector, files)
    page.get_by_role("button", name="Upload", exact=True).click()
    status = page.locator("#upload-status")
    status.filter(has_text=re.compile(r"Uploaded|failed")).wait_for()
    return str(status.inner_text())


def _download(page: Any, link_name: str) -> str:
    """Click the download link ``link_name``; the SHA-256 of what the browser saved."""
    with page.expect_download() as info:
        page.get_by_role("link", name=link_name, exact=True).click()
    saved = info.value.path()
    assert saved is not None
    return _sha256(saved)


# ------------------------------------------------------------------------------------------------- tests


def test_create_folder_from_the_page_and_refuse_a_bad_name(user_page: Any, folders: Folders, shot: Any) -> None:
    page = user_page
    page.goto("/folders")
    name = folders.track(f"con-made-{TAG}")
    page.get_by_label("Folder name").fill(name)
    page.get_by_label("Usage mode").select_option("data")
    page.get_by_label("Others may clone it").check()
    page.get_by_role("button", name="Create folder").click()
    page.wait_for_url("**/folders?done=created")
    row = page.locator(f'tr[data-folder="{name}"]')
    assert row.is_visible()
    assert "data" in row.inner_text() and "cloneable" in row.inner_text()
    assert "local:volume1" in row.inner_text()
    assert name in folders.names_of()
    shot(page, "folders-list")

    # A name with a '/' is the manager's 400, shown on the form; nothing is created.
    before = folders.names_of()
    page.get_by_label("Folder name").fill("bad/name")
    with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/folders")) as resp:
        page.get_by_role("button", name="Create folder").click()
    assert resp.value.status == 400
    error = page.locator("#create-error")
    assert "not a valid folder name" in error.inner_text()
    assert page.get_by_label("Folder name").input_value() == "bad/name"  # the form keeps what was typed
    assert folders.names_of() == before
    shot(page, "folders-create-error")

    # Deleting asks first; cancelling keeps the folder.
    row.get_by_role("button", name=f"Delete the folder {name}").click()
    dialog = page.locator("#confirm-dialog")
    assert "cannot be undone" in dialog.inner_text()
    dialog.get_by_role("button", name="Cancel").click()
    assert name in folders.names_of()
    page.locator(f'tr[data-folder="{name}"]').get_by_role("button", name=f"Delete the folder {name}").click()
    dialog.get_by_role("button", name="Yes, go ahead").click()
    page.wait_for_url("**/folders?done=deleted")
    assert name not in folders.names_of()


def test_upload_50_mib_with_progress_and_download_it_intact(
    user_page: Any, folders: Folders, big_file: tuple[Path, str], shot: Any
) -> None:
    path, digest = big_file
    folder = folders.make("big")
    page = user_page
    page.goto(f"/folders/{folder['name']}")
    _record_progress(page)
    summary = _upload(page, "#upload-files", str(path))
    assert summary == "Uploaded 1 file."
    samples = page.evaluate("() => window.__progress")
    total = 50 * MiB
    assert any(0 < s["sent"] < total for s in samples), samples[:5]  # the bar moved through the middle
    assert samples[-1]["sent"] == total
    assert page.locator("#upload-overall").get_attribute("value") is not None
    assert page.locator("#upload-overall-text").inner_text().startswith("100%")
    row = page.locator('#listing tr[data-entry="big.bin"]')  # the listing was refreshed
    assert "50.0 MiB" in row.inner_text()
    shot(page, "folders-browse-upload")
    assert _download(page, "Download big.bin") == digest


def test_an_interrupted_upload_resumes(user_page: Any, folders: Folders, big_file: tuple[Path, str]) -> None:
    path, digest = big_file
    folder = folders.make("resume")
    page = user_page
    page.goto(f"/folders/{folder['name']}")
    held: list[Any] = []
    offsets: list[int] = []

    def hold_second_chunk(route: Any) -> None:
        if route.request.method == "PATCH":
            offsets.append(int(route.request.headers.get("upload-offset", "-1")))
            if len(offsets) >= 2:
                held.append(route)  # not answered here: the tab is closed while this chunk is in flight
                return
        route.continue_()

    page.route(re.compile(r"/upload\?token="), hold_second_chunk)
    page.set_input_files("#upload-files", str(path))
    page.get_by_role("button", name="Upload", exact=True).click()
    for _ in range(300):
        if held:
            break
        page.wait_for_timeout(50)
    assert held and offsets == [0, 16 * MiB]
    keys = page.evaluate("() => Object.keys(localStorage).filter((k) => k.startsWith('tus::'))")
    assert len(keys) == 1 and folder["id"] in keys[0]  # the fingerprint that lets a retry resume
    # Close the tab mid-upload, then come back in a new one.
    context = page.context
    page.close()
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"/folders/{folder['name']}")

    # The same file again: tus-js-client finds the stored upload and goes on from the proxy's offset.
    sent: list[int] = []
    page.on(
        "request",
        lambda r: (
            sent.append(int(r.headers.get("upload-offset", "-1")))
            if r.method == "PATCH" and "/upload?token=" in r.url
            else None
        ),
    )
    assert _upload(page, "#upload-files", str(path)) == "Uploaded 1 file."
    # Not from 0: from what the proxy already had (the first chunk, and whatever of the second reached it
    # before the tab closed), then chunk by chunk.
    assert sent and sent[0] >= 16 * MiB and sent == list(range(sent[0], 50 * MiB, 16 * MiB)), sent
    resumed = re.search(r"done \(resumed at (\d+\.\d) MiB\)", page.locator("#upload-list").inner_text())
    assert resumed and abs(float(resumed.group(1)) - sent[0] / MiB) <= 0.051, resumed
    assert page.evaluate("() => Object.keys(localStorage).filter((k) => k.startsWith('tus::')).length") == 0
    assert _download(page, "Download big.bin") == digest
    assert not errors


def test_directory_upload_and_file_operations(user_page: Any, folders: Folders, tmp_path: Path, shot: Any) -> None:
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "a.txt").write_text("alpha\n")
    (tree / "sub" / "b.txt").write_text("beta\n")
    folder = folders.make("files")
    page = user_page
    page.goto(f"/folders/{folder['name']}")
    assert _upload(page, "#upload-dir", str(tree)) == "Uploaded 2 files."
    listing = page.locator("#listing")
    listing.get_by_role("link", name="tree/").click()
    page.wait_for_url("**path=tree")
    listing.get_by_role("link", name="sub/").click()
    page.wait_for_url("**path=tree/sub")
    assert page.locator('tr[data-entry="a.txt"]').is_visible()
    assert page.locator('tr[data-entry="b.txt"]').is_visible()
    crumbs = page.get_by_role("navigation", name="Breadcrumb")
    assert crumbs.inner_text().split() == ["Folders", folder["name"], "tree", "sub"]

    # mkdir
    page.get_by_label("New directory name").fill("made")
    page.get_by_role("button", name="Create directory").click()
    page.wait_for_url("**done=mkdir")
    assert page.locator('tr[data-entry="made"][data-type="DIRECTORY"]').is_visible()
    # rename a file (the dialog)
    page.get_by_role("button", name="Rename a.txt").click()
    dialog = page.locator("#rename-dialog")
    dialog.get_by_label("New name").fill("c.txt")
    dialog.get_by_role("button", name="Rename").click()
    page.wait_for_url("**done=renamed")
    assert page.locator('tr[data-entry="c.txt"]').is_visible()
    assert page.locator('tr[data-entry="a.txt"]').count() == 0
    shot(page, "folders-browse")
    # a bad new name: the page says why, with a 400, and nothing changes
    page.get_by_role("button", name="Rename c.txt").click()
    dialog.get_by_label("New name").fill("..")
    with page.expect_response(lambda r: r.request.method == "POST" and "rename-file" in r.url) as resp:
        dialog.get_by_role("button", name="Rename").click()
    assert resp.value.status == 400
    assert "single name" in page.locator("#page-error").inner_text()
    assert page.locator('tr[data-entry="c.txt"]').is_visible()
    # delete a file and a directory (each confirmed)
    for entry in ("b.txt", "made"):
        page.get_by_role("button", name=f"Delete {entry}", exact=True).click()
        with page.expect_navigation(url="**done=removed"):  # a new one: the URL already says so after the first
            page.locator("#confirm-dialog").get_by_role("button", name="Yes, go ahead").click()
        assert page.locator(f'tr[data-entry="{entry}"]').count() == 0
    assert [e.get_attribute("data-entry") for e in page.locator("#file-table tbody tr[data-entry]").all()] == ["c.txt"]


def test_invitations_are_answered_in_the_page(
    new_page: PageFactory, folders: Folders, friend: dict[str, Any], cluster: Cluster, shot: Any
) -> None:
    folder = folders.make("shared")
    unwanted = folders.make("unwanted")
    r = cluster.request("POST", f"/folders/{unwanted['name']}/invite", {"emails": [friend["email"]], "perm": "rw"})
    assert r.status_code == 200 and r.json()["invited_ids"] == [friend["email"]], r.text
    owner = new_page(USER)
    owner.goto(f"/folders/{folder['name']}")
    assert owner.locator("#no-shares").is_visible()
    owner.get_by_label("Invite users by e-mail").fill(friend["email"])
    owner.get_by_label("Permission", exact=True).select_option("ro")
    owner.get_by_role("button", name="Invite").click()
    owner.wait_for_url("**done=invited")
    assert friend["email"] in owner.locator("#sent-table").inner_text()

    guest = new_page(friend)
    guest.goto("/folders")
    invitations = guest.locator("#invitations tr[data-invitation]")
    assert invitations.count() == 2
    mine = invitations.filter(has_text=folder["name"])
    assert USER["email"] in mine.inner_text() and "Read only" in mine.inner_text()
    assert guest.locator(f'tr[data-folder="{folder["name"]}"]').count() == 0
    shot(guest, "folders-invitations")
    # Reject one (confirmed), accept the other.
    invitations.filter(has_text=unwanted["name"]).get_by_role("button", name=re.compile("^Reject")).click()
    guest.locator("#confirm-dialog").get_by_role("button", name="Yes, go ahead").click()
    guest.wait_for_url("**done=rejected")
    assert guest.locator("#invitations tr[data-invitation]").count() == 1
    accept = mine.locator("form").first.get_attribute("action")
    mine.get_by_role("button", name=re.compile("^Accept")).click()
    guest.wait_for_url("**done=accepted")
    # Answering it again is refused on the page (404: no such pending invitation), nothing changes.
    csrf = guest.locator('meta[name="csrf-token"]').get_attribute("content")
    r = guest.request.post(accept, form={"_csrf": csrf})
    assert r.status == 404 and "No pending invitation" in r.text()
    row = guest.locator(f'tr[data-folder="{folder["name"]}"]')
    assert "shared with you" in row.inner_text() and "Read only" in row.inner_text()
    assert guest.locator(f'tr[data-folder="{unwanted["name"]}"]').count() == 0
    assert guest.locator("#invitations").count() == 0
    row.get_by_role("link", name=folder["name"]).click()
    guest.wait_for_url(f"**/folders/{folder['name']}")
    assert guest.locator("#upload-form").count() == 0  # read only: no upload, no rename
    assert guest.get_by_role("button", name="Leave this folder").is_visible()

    owner.reload()
    assert friend["email"] in owner.locator("#share-table").inner_text()
    assert owner.locator("#sent-table").count() == 0


def test_admin_creates_a_project_folder(admin_page: Any, folders: Folders, cluster: Cluster) -> None:
    page = admin_page
    page.goto("/folders")
    name = f"con-project-{TAG}"
    page.get_by_label("Folder name").fill(name)
    page.get_by_label("Type").select_option("project")
    page.get_by_label("Project (for project folders)").select_option(label="default (default)")
    page.get_by_role("button", name="Create folder").click()
    page.wait_for_url("**/folders?done=created")
    row = page.locator(f'tr[data-folder="{name}"]')
    assert "Project" in row.inner_text() and "default" in row.inner_text()
    found = [f for f in cluster.request("GET", "/folders", who=ADMIN).json() if f["name"] == name]
    assert len(found) == 1 and found[0]["type"] == "group"
    folders.track(found[0]["id"], ADMIN)
    # A project folder without a project is refused on the form.
    page.get_by_label("Folder name").fill(f"con-noproject-{TAG}")
    page.get_by_label("Type").select_option("project")
    with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/folders")) as resp:
        page.get_by_role("button", name="Create folder").click()
    assert resp.value.status == 400 and "Choose the project" in page.locator("#create-error").inner_text()


def test_another_users_folder_is_not_found(
    new_page: PageFactory, folders: Folders, friend: dict[str, Any], shot: Any
) -> None:
    folder = folders.make("private")
    page = new_page(friend)
    for ref in (folder["name"], folder["id"]):
        resp = page.goto(f"/folders/{ref}")
        assert resp is not None and resp.status == 404
        assert page.locator(".error-page").is_visible()
        assert page.locator("#listing").count() == 0
    resp = page.goto(f"/folders/{folder['name']}/download?path=x")
    assert resp is not None and resp.status == 404
    shot(page, "folders-not-found")
    # Forged actions on it are refused too (the CSRF token is the friend's own, the folder is not).
    csrf = page.locator('meta[name="csrf-token"]').get_attribute("content")
    r = page.request.post(f"/folders/{folder['name']}/delete", form={"_csrf": csrf})
    assert r.status == 404 and 'id="page-error"' in r.text() and "No virtual folder named" in r.text()
    r = page.request.post(f"/folders/{folder['name']}/mkdir", form={"_csrf": csrf, "dirname": "x"})
    assert r.status == 404


def test_paths_leaving_the_folder_are_400(user_page: Any, folders: Folders, console: WebServer) -> None:
    folder = folders.make("paths")
    page = user_page
    for bad in ("../..", "a/../../b", "%2e%2e/etc"):
        resp = page.goto(f"/folders/{folder['name']}?path={bad}")
        assert resp is not None and resp.status == 400, bad
        assert "'..' is not allowed" in page.locator(".error-page").inner_text()
    resp = page.goto(f"/folders/{folder['name']}/download?path=../../etc/passwd")
    assert resp is not None and resp.status == 400
    # A missing directory is the manager's 404, not a 500.
    resp = page.goto(f"/folders/{folder['name']}?path=no/such/dir")
    assert resp is not None and resp.status == 404
    # Without a CSRF token nothing happens.
    sid = next(c["value"] for c in page.context.cookies() if c["name"] == "AIOHTTP_SESSION")
    with httpx.Client(base_url=console.url, cookies={"AIOHTTP_SESSION": sid}) as http:
        r = http.post(f"/folders/{folder['name']}/mkdir", data={"dirname": "x", "_csrf": "forged"})
        assert r.status_code == 403


def test_a_file_over_the_folder_limit_is_refused_clearly(user_page: Any, folders: Folders, tmp_path: Path) -> None:
    folder = folders.make("small", quota="1m")
    big = tmp_path / "two-mib.bin"
    big.write_bytes(os.urandom(2 * MiB))
    page = user_page
    page.goto(f"/folders/{folder['name']}")
    assert _upload(page, "#upload-files", str(big)) == "1 of 1 uploads failed."
    state = page.locator("#upload-list").inner_text()
    assert "two-mib.bin is too large to upload" in state and "quota" in state
    assert page.locator("#alerts").inner_text().count("too large") == 1
    assert page.locator('tr[data-entry="two-mib.bin"]').count() == 0
