"""Helpers shared by the modules of the compatibility suite: SDK snippets, session states through our
own API, and throw-away accounts, projects and folders made with our own GraphQL."""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import Callable
from typing import Any

from ai.backend.manager.fixtures import ADMIN, DEFAULT_GROUP_ID, USER
from ai.backend.testutils.cluster import Cluster

from .conftest import GQL, VOLUME, Who, unique

RES = {"cpu": 1, "mem": "256m"}


def snippet(body: str, **params: Any) -> str:
    """The SDK imports, ``NAME = value`` lines for ``params`` and the dedented ``body``."""
    head = "import asyncio, base64, json, os, time\nfrom ai.backend.client.session import Session, AsyncSession\n"
    head += "from ai.backend.client.exceptions import BackendAPIError\n"
    head += "".join(f"{k} = {v!r}\n" for k, v in params.items())
    return head + textwrap.dedent(body)


def session_status(cluster: Cluster, name: str, who: Who = USER) -> str | None:
    """The status of a session by name or id through our API; ``None`` when it is gone (404)."""
    r = cluster.request("GET", f"/session/{name}", who=who)
    if r.status_code == 404:
        return None
    assert r.status_code == 200, r.text
    return str(r.json()["status"])


def wait_status(
    cluster: Cluster, name: str, accept: Callable[[str | None], bool], timeout: float = 90, who: Who = USER
) -> str | None:
    deadline = time.monotonic() + timeout
    st = session_status(cluster, name, who)
    while not accept(st) and time.monotonic() < deadline:
        time.sleep(0.5)
        st = session_status(cluster, name, who)
    return st


def gone(st: str | None) -> bool:
    return st is None or st in ("TERMINATED", "CANCELLED")


def destroy(cluster: Cluster, ref: str, who: Who = USER) -> None:
    cluster.request("DELETE", f"/session/{ref}?forced=true", who=who)


def make_user(gql: GQL, prefix: str = "cs-sdku") -> Who:
    """A fresh normal user in the default domain and project, with its keypair."""
    email = f"{unique(prefix)}@example.org"
    data = gql(
        "mutation($email: String!, $props: UserInput!) { create_user(email: $email, props: $props) "
        "{ ok msg user { uuid } } }",
        {
            "email": email,
            "props": {
                "username": email.split("@")[0],
                "password": "pw-orig-1",
                "need_password_change": False,
                "full_name": "Compat SDK",
                "domain_name": "default",
                "role": "user",
                "status": "active",
                "group_ids": [str(DEFAULT_GROUP_ID)],
            },
        },
    )
    assert data["create_user"]["ok"], data
    kp = gql("query($e: String) { keypairs(email: $e) { access_key secret_key } }", {"e": email})["keypairs"][0]
    return {
        "email": email,
        "password": "pw-orig-1",
        "access_key": kp["access_key"],
        "secret_key": kp["secret_key"],
        "uuid": data["create_user"]["user"]["uuid"],
        "role": "user",
        "is_admin": False,
    }


def try_gql(cluster: Cluster, query: str, variables: dict[str, Any]) -> None:
    """A GraphQL call of our own whose failure does not matter (cleanup of what a test may have removed)."""
    cluster.request("POST", "/admin/gql", {"query": query, "variables": variables}, who=ADMIN)


def delete_user(gql: GQL, email: str) -> None:
    gql("mutation($e: String!) { delete_user(email: $e) { ok msg } }", {"e": email})


def vfolders(cluster: Cluster, who: Who = USER) -> dict[str, dict[str, Any]]:
    r = cluster.request("GET", "/folders", who=who)
    assert r.status_code == 200, r.text
    return {f["name"]: f for f in r.json()}


def delete_vfolder(cluster: Cluster, name: str, who: Who = USER) -> None:
    cluster.request("DELETE", f"/folders/{name}", who=who)


def vf_names(cluster: Cluster, name: str, path: str = ".") -> set[str]:
    r = cluster.request("GET", f"/folders/{name}/files?path={path}")
    assert r.status_code == 200, r.text
    files = r.json()["files"]
    return {e["filename"] for e in (json.loads(files) if isinstance(files, str) else files)}


def create_group(gql: GQL, name: str) -> str:
    data = gql(
        "mutation($n: String!, $p: GroupInput!) { create_group(name: $n, props: $p) { ok msg group { id } } }",
        {
            "n": name,
            "p": {
                "domain_name": "default",
                "description": "orig desc",
                "total_resource_slots": json.dumps({"cpu": "4"}),
                "allowed_vfolder_hosts": [VOLUME],
            },
        },
    )
    assert data["create_group"]["ok"], data
    return str(data["create_group"]["group"]["id"])


def delete_group(gql: GQL, gid: str) -> None:
    gql("mutation($g: UUID!) { delete_group(gid: $g) { ok msg } }", {"g": gid})


def create_domain(gql: GQL, name: str) -> None:
    data = gql(
        "mutation($n: String!, $p: DomainInput!) { create_domain(name: $n, props: $p) { ok msg } }",
        {
            "n": name,
            "p": {
                "description": "orig dom",
                "total_resource_slots": json.dumps({"cpu": "8"}),
                "allowed_vfolder_hosts": [VOLUME],
                "allowed_docker_registries": ["cr.backend.ai"],
            },
        },
    )
    assert data["create_domain"]["ok"], data


def delete_domain(gql: GQL, name: str) -> None:
    gql("mutation($n: String!) { delete_domain(name: $n) { ok msg } }", {"n": name})
