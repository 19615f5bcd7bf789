"""The console's admin pages (``/admin/...``) in Debian's Chromium, against the real cluster.

What a test creates gets a random suffix (the cluster is shared by the whole test session) and is removed
again: deleted where the manager deletes (presets, policies, keypairs, scaling groups), else deactivated
(users are soft-deleted; projects and domains deactivated).
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from ai.backend.manager.fixtures import USER
from ai.backend.testutils.cluster import Cluster
from ai.backend.testutils.web import WebServer
from ai.backend.web.console.filters import human_bytes

from .conftest import PageFactory

PASSWORD = "console-pw-1234"


def _tag() -> str:
    return secrets.token_hex(3)


def _post(page: Any, button: Any, url_part: str) -> int:
    """Click ``button`` (a form's submit) and return the status of the POST it sends."""
    with page.expect_response(lambda r: r.request.method == "POST" and url_part in r.url) as info:
        button.click()
    status: int = info.value.status
    page.wait_for_load_state()
    return status


def _accept_next_dialog(page: Any) -> None:
    page.once("dialog", lambda d: d.accept())


def _create_user(cluster: Cluster, email: str, role: str = "user") -> None:
    cluster.gql(
        "mutation($e: String!, $p: UserInput!) { create_user(email: $e, props: $p) { ok } }",
        {"e": email, "p": {"password": PASSWORD, "role": role, "domain_name": "default", "group_ids": ["default"]}},
    )


def _delete_user(cluster: Cluster, email: str) -> None:
    r = cluster.gql_request("mutation($e: String!) { delete_user(email: $e) { ok } }", {"e": email})
    assert r.status_code in (200, 404), r.text


def _user(cluster: Cluster, email: str) -> dict[str, Any] | None:
    found: dict[str, Any] | None = cluster.gql(
        "query($e: String) { user(email: $e) { email status full_name role } }", {"e": email}
    )["user"]
    return found


@pytest.fixture(scope="module")
def kp_user(cluster: Cluster) -> Iterator[str]:
    """A user of its own for the keypair test (its keypairs are created and deleted there)."""
    email = f"console-kp-{_tag()}@example.com"
    _create_user(cluster, email)
    try:
        yield email
    finally:
        _delete_user(cluster, email)


# ------------------------------------------------------------------------------------------- users


def test_admin_creates_user_who_logs_in(
    admin_page: Any, new_page: PageFactory, cluster: Cluster, shot: Callable[[Any, str], Any]
) -> None:
    page = admin_page
    email = f"console-new-{_tag()}@example.com"
    try:
        page.goto("/admin/users/new")
        shot(page, "admin-user-new")
        page.get_by_label("E-mail").fill(email)
        page.get_by_label("User name").fill(email.split("@")[0])
        page.get_by_label("Password", exact=True).fill(PASSWORD)
        page.get_by_label("Full name").fill("Console Tester")
        assert page.get_by_label("Role").input_value() == "user"
        page.get_by_role("button", name="Create user").click()
        page.wait_for_url("**/admin/users?*done=created*")
        expect(page.locator(".notice")).to_contain_text(email)
        row = page.locator(f'tr[data-email="{email}"]')
        expect(row).to_contain_text("active")
        expect(row).to_contain_text("default")  # domain and the preselected default project
        shot(page, "admin-users")

        # The new user logs in with the password the admin set and lands on the sessions page.
        theirs = new_page({"email": email, "password": PASSWORD})
        assert theirs.url.endswith("/sessions")

        # Edit: full name and status; the manager has them afterwards.
        row.get_by_role("link", name=email, exact=True).click()
        page.wait_for_url("**/admin/users/*")
        shot(page, "admin-user-detail")
        page.get_by_label("Full name").fill("Renamed Tester")
        page.get_by_label("Status").select_option("inactive")
        page.get_by_role("button", name="Save").click()
        expect(page.locator(".notice")).to_contain_text("was saved")
        found = _user(cluster, email)
        assert found is not None and found["status"] == "inactive" and found["full_name"] == "Renamed Tester"

        # Delete (after confirming): the manager's soft delete.
        page.once("dialog", lambda d: d.dismiss())
        page.get_by_role("button", name="Delete user").click()
        assert _user(cluster, email)["status"] == "inactive"  # type: ignore[index]  # dismissed: nothing changed
        _accept_next_dialog(page)
        page.get_by_role("button", name="Delete user").click()
        page.wait_for_url("**/admin/users?*done=deleted*")
        assert _user(cluster, email)["status"] == "deleted"  # type: ignore[index]
    finally:
        _delete_user(cluster, email)


def _user_count(cluster: Cluster) -> int:
    total: int = cluster.gql(
        'query { user_list(limit: 1, offset: 0, status: "active,inactive,deleted") { total_count } }'
    )["user_list"]["total_count"]
    return total


def test_invalid_user_forms_create_nothing(admin_page: Any, cluster: Cluster) -> None:
    page = admin_page
    before = _user_count(cluster)
    page.goto("/admin/users/new")
    create = page.get_by_role("button", name="Create user")

    page.get_by_label("E-mail").fill("not-an-email")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    assert _post(page, create, "/admin/users") == 400
    expect(page.locator(".form-error")).to_contain_text("not a valid e-mail")
    assert page.get_by_label("E-mail").input_value() == "not-an-email"  # the form comes back filled in
    assert page.get_by_label("Password", exact=True).input_value() == ""  # but never with the password

    page.get_by_label("E-mail").fill(USER["email"])
    page.get_by_label("User name").fill(f"dup-{_tag()}")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    assert _post(page, create, "/admin/users") == 409
    expect(page.locator(".form-error")).to_contain_text("already exists")

    page.get_by_label("E-mail").fill(f"short-{_tag()}@example.com")
    page.get_by_label("Password", exact=True).fill("short")
    assert _post(page, create, "/admin/users") == 400
    expect(page.locator(".form-error")).to_contain_text("at least 8 characters")
    assert _user_count(cluster) == before


def test_user_gets_403_on_admin_pages_and_forms(user_page: Any, console: WebServer, cluster: Cluster) -> None:
    page = user_page
    expect(page.get_by_role("navigation", name="Main")).not_to_contain_text("Admin")
    for path in ("/admin", "/admin/users", "/admin/agents", "/admin/presets/default"):
        resp = page.goto(path)
        assert resp is not None and resp.status == 403, path
        expect(page.get_by_role("heading", name="Administrators only")).to_be_visible()
    # A forged POST with the user's own, valid CSRF token is refused all the same, and changes nothing.
    token = page.locator('meta[name="csrf-token"]').get_attribute("content")
    sid = next(c["value"] for c in page.context.cookies() if c["name"] == "AIOHTTP_SESSION")
    name = f"console-forged-{_tag()}"
    with httpx.Client(base_url=console.url, cookies={"AIOHTTP_SESSION": sid}) as http:
        r = http.post("/admin/presets", data={"_csrf": token, "name": name, "slot.cpu": "1"})
        assert r.status_code == 403 and "Administrators only" in r.text
        r = http.post(
            "/admin/users",
            data={"_csrf": token, "email": f"{name}@example.com", "password": PASSWORD, "role": "superadmin"},
        )
        assert r.status_code == 403
    assert (
        cluster.gql("query($n: String!) { resource_preset(name: $n) { name } }", {"n": name})["resource_preset"] is None
    )
    assert _user(cluster, f"{name}@example.com") is None


def test_domain_admin_sees_the_domain_but_not_the_cluster(new_page: PageFactory, cluster: Cluster) -> None:
    email = f"console-dadmin-{_tag()}@example.com"
    _create_user(cluster, email, role="admin")
    try:
        page = new_page({"email": email, "password": PASSWORD})
        page.goto("/admin")
        expect(page.get_by_text("You are a domain administrator")).to_be_visible()
        expect(page.get_by_role("navigation", name="Administration")).not_to_contain_text("Agents")
        page.goto("/admin/users")
        expect(page.locator(f'tr[data-email="{USER["email"]}"]')).to_be_visible()
        expect(page.get_by_role("link", name="New user")).to_have_count(0)
        resp = page.goto("/admin/agents")  # the manager refuses: its 403 and message
        assert resp is not None and resp.status == 403
        expect(page.locator("main")).to_contain_text("superadmin")
    finally:
        _delete_user(cluster, email)


# ------------------------------------------------------------------------------------ cluster pages


def test_agents_page_shows_the_cluster_agent(
    admin_page: Any, cluster: Cluster, shot: Callable[[Any, str], Any]
) -> None:
    agent = cluster.gql("query($id: String!) { agent(agent_id: $id) { available_slots } }", {"id": cluster.agent_id})
    slots = json.loads(agent["agent"]["available_slots"])
    page = admin_page
    page.goto("/admin/agents")
    row = page.locator(f'tr[data-agent="{cluster.agent_id}"]')
    expect(row).to_contain_text("ALIVE")
    expect(row.locator('td[data-slot="cpu"]')).to_contain_text(f"/ {slots['cpu']}")
    expect(row.locator('td[data-slot="mem"]')).to_contain_text(f"/ {human_bytes(slots['mem'])}")
    expect(row).to_contain_text("default")  # its scaling group
    shot(page, "admin-agents")
    page.get_by_role("link", name="Terminated").click()
    page.wait_for_url("**tab=terminated")
    expect(page.locator(f'tr[data-agent="{cluster.agent_id}"]')).to_have_count(0)


def test_images_page_lists_python_and_aliases(
    admin_page: Any, cluster: Cluster, shot: Callable[[Any, str], Any]
) -> None:
    page = admin_page
    page.goto("/admin/images")
    listed = cluster.gql("query { images { reference tag architecture } }")["images"]
    python = next(i for i in listed if i["reference"].startswith("python:"))
    reference = python["reference"]
    row = page.locator(f'tr[data-reference="{reference}"]')
    expect(row).to_contain_text("python")
    expect(row).to_contain_text(python["tag"])
    expect(row).to_contain_text(python["architecture"])
    expect(row.locator(".aliases")).to_contain_text("python3")
    expect(row).to_contain_text(re.compile(r"cpu\s+1\s+mem\s+128\.0 MiB"))
    shot(page, "admin-images")
    alias = f"console-py-{_tag()}"
    try:
        page.get_by_text("New alias").click()
        page.get_by_label("Alias", exact=True).fill(alias)
        page.get_by_label("Image", exact=True).select_option(reference)
        page.get_by_role("button", name="Add alias").click()
        expect(page.locator(".notice")).to_contain_text(alias)
        expect(row.locator(".aliases")).to_contain_text(alias)
        found = cluster.gql("query($r: String!) { image(reference: $r) { reference } }", {"r": alias})["image"]
        assert found == {"reference": reference}
        _accept_next_dialog(page)
        page.get_by_role("button", name=f"Remove alias {alias}").click()
        expect(page.locator(".notice")).to_contain_text("removed")
        expect(row.locator(".aliases")).not_to_contain_text(alias)
    finally:
        cluster.gql_request("mutation($a: String!) { dealias_image(alias: $a) { ok } }", {"a": alias})


def test_resource_preset_create_edit_delete(
    admin_page: Any, cluster: Cluster, console: WebServer, shot: Callable[[Any, str], Any]
) -> None:
    page = admin_page
    name = f"console-preset-{_tag()}"
    query = "query($n: String!) { resource_preset(name: $n) { name resource_slots shared_memory } }"
    try:
        # The admin's own login without the page's CSRF token (a forged cross-site form): refused.
        sid = next(c["value"] for c in page.context.cookies() if c["name"] == "AIOHTTP_SESSION")
        with httpx.Client(base_url=console.url, cookies={"AIOHTTP_SESSION": sid}) as http:
            r = http.post("/admin/presets", data={"name": name, "slot.cpu": "1"})
            assert r.status_code == 403 and "security token" in r.text
        assert cluster.gql(query, {"n": name})["resource_preset"] is None

        page.goto("/admin/presets")
        page.get_by_text("New preset").click()
        page.get_by_label("Name", exact=True).fill(name)
        create = page.get_by_role("button", name="Create preset")
        assert _post(page, create, "/admin/presets") == 400  # no amounts at all
        expect(page.locator(".form-error")).to_contain_text("at least one")
        assert cluster.gql(query, {"n": name})["resource_preset"] is None

        page.get_by_label("cpu", exact=True).fill("1")
        page.get_by_label("mem (size)").fill("1g")
        page.get_by_label("Shared memory").fill("64m")
        page.get_by_role("button", name="Create preset").click()
        expect(page.locator(".notice")).to_contain_text(name)
        row = page.locator(f'tr[data-name="{name}"]')
        expect(row).to_contain_text("1.0 GiB")
        expect(row).to_contain_text("64.0 MiB")
        shot(page, "admin-presets")

        row.get_by_role("link", name=name, exact=True).click()
        page.wait_for_url(f"**/admin/presets/{name}")
        shot(page, "admin-preset-detail")
        page.get_by_label("cpu", exact=True).fill("2")
        page.get_by_label("Shared memory").fill("2g")  # more than mem: the manager refuses
        assert _post(page, page.get_by_role("button", name="Save"), f"/admin/presets/{name}") == 400
        expect(page.locator(".form-error")).to_contain_text("shared_memory")
        page.get_by_label("Shared memory").fill("")
        page.get_by_role("button", name="Save").click()
        expect(page.locator(".notice")).to_contain_text("was saved")
        saved = cluster.gql(query, {"n": name})["resource_preset"]
        assert '"cpu": "2"' in saved["resource_slots"] and saved["shared_memory"] is None

        page.once("dialog", lambda d: d.dismiss())
        page.get_by_role("button", name=f"Delete preset {name}").click()
        assert cluster.gql(query, {"n": name})["resource_preset"] is not None
        _accept_next_dialog(page)
        page.get_by_role("button", name=f"Delete preset {name}").click()
        expect(page.locator(".notice")).to_contain_text("was deleted")
        expect(page.locator(f'tr[data-name="{name}"]')).to_have_count(0)
        assert cluster.gql(query, {"n": name})["resource_preset"] is None
    finally:
        cluster.gql_request("mutation($n: String!) { delete_resource_preset(name: $n) { ok } }", {"n": name})


def test_keypair_secret_is_shown_once(
    admin_page: Any, cluster: Cluster, kp_user: str, shot: Callable[[Any, str], Any]
) -> None:
    page = admin_page
    page.goto("/admin/keypairs")
    page.get_by_text("New keypair").click()
    page.get_by_label("User's e-mail").fill(kp_user)
    page.get_by_label("Resource policy", exact=True).select_option("default")
    assert _post(page, page.get_by_role("button", name="Create keypair"), "/admin/keypairs") == 201
    access_key = page.locator("#new-access-key").inner_text()
    secret_key = page.locator("#new-secret-key").inner_text()
    try:
        assert len(secret_key) >= 20
        shot(page, "admin-keypair-created")
        # The secret is real: a request signed with it is let in.
        r = cluster.request("GET", "/auth/role", who={"access_key": access_key, "secret_key": secret_key})
        assert r.status_code == 200, r.text

        page.goto(f"/admin/keypairs?q={kp_user}")
        row = page.locator(f'tr[data-access-key="{access_key}"]')
        expect(row).to_contain_text(kp_user)
        assert secret_key not in page.content()  # never listed again
        shot(page, "admin-keypairs")

        _accept_next_dialog(page)
        row.get_by_role("button", name=f"Deactivate {access_key}").click()
        expect(page.locator(".notice")).to_contain_text("deactivated")
        r = cluster.request("GET", "/auth/role", who={"access_key": access_key, "secret_key": secret_key})
        assert r.status_code in (401, 403), r.text

        _accept_next_dialog(page)
        page.locator(f'tr[data-access-key="{access_key}"]').get_by_role("button", name=f"Delete {access_key}").click()
        expect(page.locator(".notice")).to_contain_text("was deleted")
        expect(page.locator(f'tr[data-access-key="{access_key}"]')).to_have_count(0)
    finally:
        cluster.gql_request("mutation($a: String!) { delete_keypair(access_key: $a) { ok } }", {"a": access_key})

    # A keypair for nobody is refused with the manager's 404, on the form.
    page.goto("/admin/keypairs")
    page.get_by_text("New keypair").click()
    page.get_by_label("User's e-mail").fill(f"nobody-{_tag()}@example.com")
    assert _post(page, page.get_by_role("button", name="Create keypair"), "/admin/keypairs") == 404
    expect(page.locator(".form-error")).to_contain_text("No such user")


# ------------------------------------------------------------------------------- tenancy and groups


def test_projects_and_domains(admin_page: Any, cluster: Cluster, shot: Callable[[Any, str], Any]) -> None:
    page = admin_page
    project, domain = f"console-proj-{_tag()}", f"console-dom-{_tag()}"
    gid = ""
    try:
        page.goto("/admin/projects")
        page.get_by_text("New project").click()
        page.get_by_label("Name", exact=True).fill("bad name!")
        assert _post(page, page.get_by_role("button", name="Create project"), "/admin/projects") == 400
        expect(page.locator(".form-error")).to_contain_text("is not valid")
        page.get_by_label("Name", exact=True).fill(project)
        page.get_by_label("Description").fill("made by the console test")
        page.get_by_label("cpu", exact=True).fill("8")
        page.get_by_role("button", name="Create project").click()
        page.wait_for_url("**/admin/projects/*?*done=created*")
        gid = page.url.split("/admin/projects/")[1].split("?")[0]

        page.get_by_label("Add users (e-mail addresses)").fill(f"{USER['email']}, nobody-{_tag()}@example.com")
        assert _post(page, page.get_by_role("button", name="Add", exact=True), "/members") == 404
        expect(page.locator(".form-error")).to_contain_text("No user has")
        page.get_by_label("Add users (e-mail addresses)").fill(USER["email"])
        page.get_by_role("button", name="Add", exact=True).click()
        expect(page.locator(f'.members tr[data-email="{USER["email"]}"]')).to_be_visible()
        shot(page, "admin-project-detail")
        _accept_next_dialog(page)
        page.get_by_role("button", name=f"Remove {USER['email']}").click()
        expect(page.locator(f'.members tr[data-email="{USER["email"]}"]')).to_have_count(0)
        _accept_next_dialog(page)
        page.get_by_role("button", name="Deactivate project").click()
        page.wait_for_url("**/admin/projects?*done=deactivated*")
        expect(page.locator(f'tr[data-name="{project}"]')).to_contain_text("inactive")
        expect(page.locator(f'tr[data-name="{project}"]')).to_contain_text("cpu 8")
        shot(page, "admin-projects")

        page.goto("/admin/domains")
        page.get_by_text("New domain").click()
        page.get_by_label("Name", exact=True).fill(domain)
        page.get_by_label("Storage hosts").fill("local:volume1")
        page.get_by_role("button", name="Create domain").click()
        page.wait_for_url(f"**/admin/domains/{domain}?*")
        page.get_by_label("Description").fill("edited")
        page.get_by_label("mem (size)").fill("not-a-size")
        assert _post(page, page.get_by_role("button", name="Save"), f"/admin/domains/{domain}") == 400
        expect(page.locator(".form-error")).to_contain_text("mem")
        page.get_by_label("mem (size)").fill("16g")
        page.get_by_role("button", name="Save").click()
        expect(page.locator(".notice")).to_contain_text("was saved")
        shot(page, "admin-domain-detail")
        _accept_next_dialog(page)
        page.get_by_role("button", name="Deactivate domain").click()
        page.wait_for_url("**/admin/domains?*done=deactivated*")
        row = page.locator(f'tr[data-name="{domain}"]')
        expect(row).to_contain_text("inactive")
        expect(row).to_contain_text("16.0 GiB")
        expect(row).to_contain_text("edited")
        shot(page, "admin-domains")
    finally:
        if gid:
            cluster.gql_request("mutation($g: UUID!) { delete_group(gid: $g) { ok } }", {"g": gid})
        cluster.gql_request("mutation($n: String!) { delete_domain(name: $n) { ok } }", {"n": domain})


def test_policies_scaling_groups_and_overview(
    admin_page: Any, cluster: Cluster, shot: Callable[[Any, str], Any]
) -> None:
    page = admin_page
    policy, sgroup = f"console-pol-{_tag()}", f"console-sg-{_tag()}"
    try:
        page.goto("/admin/policies")
        page.get_by_text("New policy").click()
        page.get_by_label("Name", exact=True).fill(policy)
        page.get_by_label("Containers per session").fill("0")
        assert _post(page, page.get_by_role("button", name="Create policy"), "/admin/policies") == 400
        expect(page.locator(".form-error")).to_contain_text("Containers per session must be at least 1")
        page.get_by_label("Containers per session").fill("2")
        page.get_by_label("cpu", exact=True).fill("4")
        page.get_by_label("Folder size").fill("10g")
        page.get_by_role("button", name="Create policy").click()
        row = page.locator(f'tr[data-name="{policy}"]')
        expect(row).to_contain_text("cpu 4")
        expect(row).to_contain_text("10.0 GiB")
        shot(page, "admin-policies")
        row.get_by_role("link", name=policy, exact=True).click()
        page.get_by_label("Concurrent sessions").fill("7")
        page.get_by_role("button", name="Save").click()
        expect(page.locator(".notice")).to_contain_text("was saved")
        saved = cluster.gql(
            "query($n: String) { keypair_resource_policy(name: $n) { max_concurrent_sessions max_vfolder_size } }",
            {"n": policy},
        )["keypair_resource_policy"]
        assert saved == {"max_concurrent_sessions": 7, "max_vfolder_size": 10 * 2**30}
        page.goto(f"/admin/policies/{policy}")
        shot(page, "admin-policy-detail")
        _accept_next_dialog(page)
        page.get_by_role("button", name="Delete policy").click()
        expect(page.locator(f'tr[data-name="{policy}"]')).to_have_count(0)

        page.goto("/admin/scaling-groups")
        page.get_by_text("New scaling group").click()
        page.get_by_label("Name", exact=True).fill(sgroup)
        page.get_by_label("Scheduler").select_option("drf")
        page.get_by_label("App proxy address").fill("ftp://nope")
        assert _post(page, page.get_by_role("button", name="Create scaling group"), "/admin/scaling-groups") == 400
        expect(page.locator(".form-error")).to_contain_text("http://")
        page.get_by_label("App proxy address").fill("http://127.0.0.1:10200")
        page.get_by_role("button", name="Create scaling group").click()
        page.wait_for_url(f"**/admin/scaling-groups/{sgroup}?*")
        page.get_by_label("Agent selection").select_option("concentrated")
        page.get_by_role("button", name="Save").click()
        expect(page.locator(".notice")).to_contain_text("was saved")
        page.get_by_role("button", name="Associate with domain default").click()
        expect(page.locator('.assoc-domains tr[data-name="default"]')).to_contain_text("Yes")
        shot(page, "admin-scaling-group-detail")
        found = cluster.gql('query { domain(name: "default") { scaling_groups } }')["domain"]["scaling_groups"]
        assert sgroup in found
        page.goto("/admin/scaling-groups")
        row = page.locator(f'tr[data-name="{sgroup}"]')
        expect(row).to_contain_text("drf")
        expect(row).to_contain_text("concentrated")
        expect(row).to_contain_text("http://127.0.0.1:10200")
        shot(page, "admin-scaling-groups")
        row.get_by_role("link", name=sgroup, exact=True).click()
        _accept_next_dialog(page)
        page.get_by_role("button", name="Delete scaling group").click()
        page.wait_for_url("**/admin/scaling-groups?*done=deleted*")
        expect(page.locator(f'tr[data-name="{sgroup}"]')).to_have_count(0)

        page.goto("/admin")
        expect(page.locator('[data-count="Agents"]')).to_have_text("1")
        images = cluster.gql("query { images { reference } }")["images"]
        expect(page.locator('[data-count="Images"]')).to_have_text(str(len(images)))
        shot(page, "admin-overview")
    finally:
        cluster.gql_request("mutation($n: String!) { delete_keypair_resource_policy(name: $n) { ok } }", {"n": policy})
        cluster.gql_request("mutation($n: String!) { delete_scaling_group(name: $n) { ok } }", {"n": sgroup})
