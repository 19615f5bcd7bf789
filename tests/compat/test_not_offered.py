"""Every command and SDK call the server does not offer yet (``not_offered.NOT_OFFERED``) is still refused.

Each record runs once with the official client it names. The test passes while the refusal (its regex)
is in the output. When a feature lands, the test fails with "this command works now: move it into the
checked set of the compatibility suite"; when the refusal merely changes (another error), it fails with
the new output so that the record's regex or reason can be corrected.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ai.backend.manager.fixtures import ADMIN, USER
from ai.backend.testutils.cluster import Cluster

from .conftest import CLI, GQL, SDK, OfficialClients, unique
from .not_offered import CLIENT_BUGS, NOT_OFFERED, NotOffered

WORKS_NOW = "this command works now: move it into the checked set of the compatibility suite"
ERROR_MARKS = ("Traceback", "Error:", "error:", "BackendAPIError", "✘")


@pytest.fixture(scope="module")
def throwaway(gql: GQL) -> Iterator[dict[str, str]]:
    """A group, a domain and a user that the purge commands may remove (they never do today)."""
    domain = unique("cs-nodom")
    out = gql(
        'mutation($n: String!) { create_domain(name: $n, props: {description: "compat n/a"}) { ok msg } }',
        {"n": domain},
    )["create_domain"]
    assert out["ok"], out
    group = gql(
        'mutation($n: String!) { create_group(name: $n, props: {domain_name: "default"}) { ok msg group { id } } }',
        {"n": unique("cs-nogrp")},
    )["create_group"]
    assert group["ok"], group
    email = f"{unique('cs-nousr')}@example.org"
    user = gql(
        "mutation($e: String!, $p: UserInput!) { create_user(email: $e, props: $p) { ok msg } }",
        {
            "e": email,
            "p": {
                "username": email.split("@")[0],
                "password": "compat-pass-n",
                "domain_name": "default",
                "need_password_change": False,
                "role": "user",
                "status": "active",
            },
        },
    )["create_user"]
    assert user["ok"], user
    yield {"gid": str(group["group"]["id"]), "domain": domain, "email": email}
    for query, var in (
        ("mutation($e: String!) { delete_user(email: $e) { ok } }", {"e": email}),
        ("mutation($g: UUID) { delete_group(gid: $g) { ok } }", {"g": str(group["group"]["id"])}),
        ("mutation($n: String!) { delete_domain(name: $n) { ok } }", {"n": domain}),
    ):
        try:
            gql(query, var)
        except AssertionError:
            pass  # already purged by a command that works now


@pytest.fixture(scope="module")
def user_session(cli22: CLI, cluster: Cluster) -> Iterator[str]:
    """A running ``python`` session of the normal user (for the app/ssh commands)."""
    name = unique("cs-nosess")
    run = cli22("create", "-t", name, "python", timeout=180)
    assert run.rc == 0 and "Traceback" not in run.out, run.describe()
    yield name
    cluster.request("DELETE", f"/session/{name}?forced=true", who=USER)


@pytest.fixture
def values(
    request: pytest.FixtureRequest, entry: NotOffered, cluster: Cluster, throwaway: dict[str, str]
) -> Iterator[dict[str, str]]:
    """The placeholder values of ``entry`` (the session only when it needs one); a folder created under
    ``{name}`` by a command that works now is removed afterwards."""
    v = {
        "agent": cluster.agent_id,
        "name": unique("cs-nofolder"),
        "admin_email": ADMIN["email"],
        "admin_password": ADMIN["password"],
        "user_password": USER["password"],
        **throwaway,
    }
    if "session" in entry.tags:
        v["session"] = request.getfixturevalue("user_session")
    yield v
    if "{name}" in str(entry.call):
        cluster.request("DELETE", f"/folders/{v['name']}", who=ADMIN if entry.who == "admin" else USER)


@pytest.fixture
def entry(request: pytest.FixtureRequest) -> NotOffered:
    return request.param  # type: ignore[no-any-return]


def _fill(text: str, values: dict[str, str]) -> str:
    return text.format(**values)


def _run_cli(
    e: NotOffered, values: dict[str, str], cli22: CLI, cli19: CLI, clients: OfficialClients, workdir: Path
) -> tuple[int, str]:
    (workdir / "vimrc").write_text("set number\n")
    (workdir / "data.csv").write_text("a,b\n1,2\n")
    assert isinstance(e.call, tuple)
    args = [_fill(a, values) for a in e.call]
    env = dict(e.env)
    # `ssh`/`scp` call `backend.ai` from PATH: the same official client
    env["PATH"] = str(Path(clients.cli(e.version)).parent) + os.pathsep + os.environ.get("PATH", "")
    runner = cli22 if e.version == "22.03" else cli19
    run = runner(
        *args,
        who=ADMIN if e.who == "admin" else USER,
        cwd=workdir,
        env=env,
        input=_fill(e.stdin, values) if e.stdin is not None else None,
        timeout=90,
    )
    return run.rc, f"$ backend.ai {' '.join(args)}\n(exit {run.rc})\n{run.out}"


def _run_sdk(e: NotOffered, values: dict[str, str], sdk22: SDK, sdk19: SDK, workdir: Path) -> tuple[int, str]:
    assert isinstance(e.call, str)
    expr = _fill(e.call, values)
    code = (
        "from ai.backend.client.session import Session\n"
        "with Session() as session:\n"
        f"    result = {expr}\n"
        "emit(result)\n"
    )
    runner = sdk22 if e.version == "22.03" else sdk19
    rc, out, _ = runner(code, who=ADMIN if e.who == "admin" else USER, cwd=workdir, check=False)
    return rc, f">>> {expr}\n(exit {rc})\n{out}"


@pytest.mark.parametrize(
    "entry",
    [pytest.param(e, id=e.id, marks=[pytest.mark.skip(reason=e.skip)] if e.skip else []) for e in NOT_OFFERED],
    indirect=True,
)
def test_still_refused(
    entry: NotOffered,
    values: dict[str, str],
    cli22: CLI,
    cli19: CLI,
    sdk22: SDK,
    sdk19: SDK,
    clients: OfficialClients,
    workdir: Path,
) -> None:
    if entry.kind == "cli":
        rc, out = _run_cli(entry, values, cli22, cli19, clients, workdir)
    else:
        rc, out = _run_sdk(entry, values, sdk22, sdk19, workdir)
    print(out)  # shown with `pytest -rP`: what the client printed
    if re.search(entry.refusal, out):
        return
    if rc == 0:
        marks = [m for m in ERROR_MARKS if m in out]
        pytest.fail(
            f"{WORKS_NOW} ({entry.version} {entry.kind}; was N/A: {entry.reason})"
            + (f" [the output still shows {marks}: check it]" if marks else "")
            + f"\n{out}",
            pytrace=False,
        )
    pytest.fail(
        f"the refusal changed (expected /{entry.refusal}/; {entry.reason}): fix the record in "
        f"not_offered.py or move the command into the checked set\n{out}",
        pytrace=False,
    )


def test_records_are_well_formed() -> None:
    ids = [e.id for e in NOT_OFFERED]
    assert len(ids) == len(set(ids)), [i for i in ids if ids.count(i) > 1]
    for e in NOT_OFFERED:
        re.compile(e.refusal)
        assert e.version in ("22.03", "19.09") and e.kind in ("cli", "sdk") and e.who in ("user", "admin"), e
        assert e.reason and (isinstance(e.call, tuple) if e.kind == "cli" else isinstance(e.call, str)), e
        assert e.tags in ((), ("session",)), e
    kinds: set[Any] = {(e.version, e.kind) for e in NOT_OFFERED}
    assert kinds == {("22.03", "cli"), ("22.03", "sdk"), ("19.09", "cli"), ("19.09", "sdk")}, kinds
    assert CLIENT_BUGS and all(b.reason and b.call for b in CLIENT_BUGS)
