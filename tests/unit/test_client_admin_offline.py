"""The admin SDK and CLI without a server: argument checks that refuse before any request, help, and the
rendering of given results.

The endpoint is a port that refuses connections, so a call that did send a request would fail with a
connection error instead of the expected usage error.  What the admin functions and commands do with a
real manager is in ``tests/integration/test_client_admin_sdk.py`` and ``test_client_admin_cli.py``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from ai.backend.client.cli.admin._common import Column, format_value, print_item, print_items, print_result
from ai.backend.client.cli.core import CLIContext
from ai.backend.client.cli.main import main
from ai.backend.client.config import APIConfig, set_config
from ai.backend.client.exceptions import BackendClientError
from ai.backend.client.func._gql import parse_page, pick_field
from ai.backend.client.session import Session

SRC = Path(__file__).resolve().parents[2] / "src"
GID = "2de2b969-1d04-48a6-af16-0bc8adb3c831"


@pytest.fixture
def refusing_endpoint() -> Iterator[str]:
    """An endpoint whose port is bound but not listening: every connection is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def offline_env(monkeypatch: pytest.MonkeyPatch, refusing_endpoint: str) -> str:
    for key in list(os.environ):
        if key.startswith(("BACKEND_", "SORNA_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("BACKEND_ENDPOINT", refusing_endpoint)
    monkeypatch.setenv("BACKEND_ACCESS_KEY", "AKIAIOSFODNN7EXAMPLE")
    monkeypatch.setenv("BACKEND_SECRET_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    set_config(None)
    return refusing_endpoint


@pytest.fixture
def api(refusing_endpoint: str) -> Iterator[Session]:
    """An SDK session that cannot reach any server (no version negotiation either)."""
    config = APIConfig(
        endpoint=refusing_endpoint,
        endpoint_type="api",
        access_key="AKIAIOSFODNN7EXAMPLE",
        secret_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    )
    with Session(config=config, proxy_mode=True) as s:
        yield s


def invoke(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), prog_name="backend.ai", input=input)  # type: ignore[arg-type]


def one_line_error(result: Result, code: int, *needles: str) -> str:
    assert result.exit_code == code, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("✘ ")
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# ---- SDK: refused before any request ----


def test_session_has_the_admin_function_classes(api: Session) -> None:
    from ai.backend.client.func.domain import Domain
    from ai.backend.client.func.keypair_resource_policy import KeypairResourcePolicy

    for name in (
        "Agent",
        "Auth",
        "Domain",
        "Group",
        "Image",
        "KeyPair",
        "KeypairResourcePolicy",
        "Resource",
        "ScalingGroup",
        "User",
    ):
        assert isinstance(getattr(api, name), type), name
    assert api.Domain is Domain and api.KeypairResourcePolicy is KeypairResourcePolicy


def test_the_refusing_endpoint_really_refuses(api: Session) -> None:
    with pytest.raises(BackendClientError):
        api.Domain.list()


BAD_CALLS: dict[str, tuple[Callable[[Session], Any], str]] = {
    "domain update": (lambda api: api.Domain.update("d1"), "Nothing to update"),
    "group update": (lambda api: api.Group.update(GID), "Nothing to update"),
    "user update": (lambda api: api.User.update("a@b.c"), "Nothing to update"),
    "keypair update": (lambda api: api.KeyPair.update("AK"), "Nothing to update"),
    "policy update": (lambda api: api.KeypairResourcePolicy.update("p"), "Nothing to update"),
    "scaling group update": (lambda api: api.ScalingGroup.update("sg"), "Nothing to update"),
    "preset update": (lambda api: api.Resource.update_preset("p"), "Nothing to update"),
    "domain bad JSON": (lambda api: api.Domain.create("d1", total_resource_slots="{cpu"), "not valid JSON"),
    "group JSON array": (lambda api: api.Group.create("default", "g", total_resource_slots="[]"), "JSON object"),
    "add no users": (lambda api: api.Group.add_users(GID, []), "at least one user"),
    "user role": (lambda api: api.User.create("default", "n@x.y", "pw", role="root"), "Unknown role 'root'"),
    "user status": (
        lambda api: api.User.create("default", "n@x.y", "pw", status="sleeping"),
        "Unknown user status 'sleeping'",
    ),
    "user empty password": (lambda api: api.User.create("default", "n@x.y", ""), "password must not be empty"),
    "user list status": (lambda api: api.User.list(status="sleeping"), "Unknown user status"),
    "user update role": (lambda api: api.User.update("a@b.c", role="root"), "Unknown role"),
    "user update empty password": (lambda api: api.User.update("a@b.c", password=""), "password must not be empty"),
    "keypair rate limit": (lambda api: api.KeyPair.create("u@x.y", rate_limit=-1), "rate limit"),
    "keypair update rate limit": (lambda api: api.KeyPair.update("AK", rate_limit=-1), "rate limit"),
    "policy default": (
        lambda api: api.KeypairResourcePolicy.create("p1", default_for_unspecified="SOMETIMES"),
        "LIMITED, UNLIMITED",
    ),
    "policy idle timeout": (lambda api: api.KeypairResourcePolicy.create("p1", idle_timeout=-5), "idle_timeout"),
    "scaling group driver": (
        lambda api: api.ScalingGroup.create("sg", driver="", scheduler="fifo"),
        "driver and a scheduler",
    ),
    "preset shared memory": (
        lambda api: api.Resource.create_preset("p", {"cpu": 1}, shared_memory="lots"),
        "shared memory",
    ),
    "agent status": (lambda api: api.Agent.paginated_list("SLEEPING"), "Unknown agent status"),
    "agent page size": (lambda api: api.Agent.paginated_list(page_size=1000), "page size"),
    "user page offset": (lambda api: api.User.paginated_list(page_offset=-1), "page offset"),
    "password confirmation": (lambda api: api.Auth.update_password("old", "new", "other"), "do not match"),
    "injected field": (
        lambda api: api.User.list(fields=['email } mutation { delete_user(email: "x") { ok']),
        "GraphQL field",
    ),
    "two fields in one": (lambda api: api.Domain.list(fields=["name description"]), "one GraphQL field"),
}


@pytest.mark.parametrize("case", list(BAD_CALLS))
def test_bad_arguments_are_refused_before_any_request(api: Session, case: str) -> None:
    call, message = BAD_CALLS[case]
    with pytest.raises(ValueError, match=message):
        call(api)


def test_login_needs_the_session_endpoint_type(api: Session) -> None:
    with pytest.raises(BackendClientError, match='endpoint type must be "session"'):
        api.Auth.login("u@x.y", "pw")
    with pytest.raises(BackendClientError, match='endpoint type must be "session"'):
        api.Auth.logout()


def test_unexpected_response_shapes() -> None:
    assert pick_field({"domains": []}, "domains") == []
    with pytest.raises(BackendClientError, match="no 'domains'"):
        pick_field({"something_else": 1}, "domains")
    with pytest.raises(BackendClientError, match="no 'domains'"):
        pick_field(None, "domains")
    page = parse_page({"items": [{"email": "a@x.y"}], "total_count": "7"}, ["email"])
    assert page.total_count == 7 and page.items == [{"email": "a@x.y"}] and tuple(page.fields) == ("email",)
    for bad in ({"items": None, "total_count": 1}, {"items": []}, {"items": [], "total_count": "x"}, None):
        with pytest.raises(BackendClientError, match="Unexpected GraphQL response"):
            parse_page(bad, ["email"])


# ---- CLI: help and structure ----

ADMIN_PATHS: list[list[str]] = [
    ["admin"],
    *(
        ["admin", g]
        for g in (
            "domain",
            "group",
            "user",
            "keypair",
            "keypair-resource-policy",
            "scaling-group",
            "resource",
            "resource-preset",
            "image",
            "agent",
            "session",
            "sessions",
        )
    ),
    *(["admin", "domain", c] for c in ("info", "list", "add", "update", "delete")),
    *(["admin", "group", c] for c in ("info", "list", "add", "update", "delete", "add-users", "remove-users")),
    *(["admin", "user", c] for c in ("info", "list", "add", "update", "delete")),
    *(["admin", "keypair", c] for c in ("info", "list", "add", "update", "delete", "activate", "deactivate")),
    *(["admin", "keypair-resource-policy", c] for c in ("info", "list", "add", "update", "delete")),
    *(
        ["admin", "scaling-group", c]
        for c in (
            "get-available",
            "info",
            "list",
            "add",
            "update",
            "delete",
            "associate-scaling-group",
            "dissociate-scaling-group",
            "associate-domain",
            "dissociate-domain",
            "dissociate-all-domain",
            "associate-group",
            "dissociate-group",
            "dissociate-all-group",
            "associate-keypair",
            "dissociate-keypair",
        )
    ),
    *(["admin", "resource", c] for c in ("query-slots", "check-presets", "presets")),
    *(["admin", "resource-preset", c] for c in ("list", "info", "add", "update", "delete")),
    *(["admin", "image", c] for c in ("list", "info", "alias", "dealias", "rescan")),
    *(["admin", "agent", c] for c in ("info", "list")),
    # The 19.09 spellings, and "scaling" for "scaling-group".
    ["admin", "agents"],
    ["admin", "list-scaling-groups"],
    *(
        ["admin", "scaling-groups", c]
        for c in ("add", "update", "delete", "associate-scaling-group", "dissociate-scaling-group")
    ),
    *(["admin", "scaling", c] for c in ("info", "list", "add")),
    ["admin", "session", "list"],
    ["admin", "session", "info"],
    ["update-password"],
]


@pytest.mark.parametrize("path", ADMIN_PATHS, ids=" ".join)
def test_help_of_every_admin_command(path: list[str]) -> None:
    result = invoke(*path, "--help")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Usage: backend.ai " + " ".join(path))


def test_admin_help_lists_the_entity_groups() -> None:
    out = invoke("admin", "--help").stdout
    for name in (
        "domain",
        "group",
        "user",
        "keypair",
        "keypair-resource-policy",
        "scaling-group",
        "resource-preset",
        "image",
        "agent",
        "session",
        "sessions",
    ):
        assert f"  {name} " in out
    sg = invoke("admin", "scaling-group", "--help").stdout
    assert "associate-scaling-group (associate-domain)" in sg
    assert "update-password" in invoke("--help").stdout


def test_admin_help_imports_no_entity_module() -> None:
    code = (
        "import sys; from ai.backend.client.cli.main import main; "
        "main(['admin', '--help'], standalone_mode=False); "
        "print(sorted(m for m in sys.modules if m.startswith('ai.backend.client.cli.admin.') or m == 'httpx'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": str(SRC)}, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "[]"


# ---- CLI: usage errors are one line, exit code 2, and send no request ----


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["admin", "domain", "add", "d1", "--total-resource-slots", "{bad"], ["--total-resource-slots", "valid JSON"]),
        (["admin", "domain", "add", "d1", "--total-resource-slots", "[1]"], ["not a JSON object"]),
        (["admin", "group", "add", "default", "g", "--total-resource-slots", "cpu"], ["neither a JSON object"]),
        (["admin", "domain", "update", "d1"], ["Nothing to update"]),
        (["admin", "group", "update", GID], ["Nothing to update"]),
        (["admin", "user", "add", "default", "u@x.y", "pw", "-r", "root"], ["'root' is not one of"]),
        (["admin", "user", "add", "default", "u@x.y", "pw", "-s", "sleeping"], ["'sleeping' is not one of"]),
        (["admin", "user", "add", "default", "not-an-email", "pw"], ["not an email address"]),
        (["admin", "user", "update", "u@x.y", "-p", ""], ["password must not be empty"]),
        (["admin", "user", "update", "u@x.y"], ["Nothing to update"]),
        (["admin", "user", "list", "--all", "--limit", "5"], ["only one of --all and --limit"]),
        (["admin", "user", "list", "--limit", "0"], ["--limit"]),
        (["admin", "keypair", "add"], ["Missing argument 'EMAIL'"]),
        (["admin", "keypair", "add", "u@x.y", "-r", "-1"], ["--rate-limit"]),
        (["admin", "keypair", "update", "AK"], ["Nothing to update"]),
        (["admin", "keypair-resource-policy", "add", "p", "--max-vfolder-size", "lots"], ["invalid size"]),
        (["admin", "keypair-resource-policy", "add", "p", "--default-for-unspecified", "SOME"], ["'SOME'"]),
        (["admin", "keypair-resource-policy", "add", "p", "--idle-timeout", "-1"], ["--idle-timeout"]),
        (["admin", "resource-preset", "add", "p"], ["Missing option '--resource-slots'"]),
        (["admin", "resource-preset", "add", "p", "--resource-slots", "{}"], ["give at least one slot"]),
        (["admin", "resource-preset", "update", "p", "--shared-memory", "x"], ["--shared-memory"]),
        (["admin", "scaling-group", "list", "--domain", "d", "--access-key", "AK"], ["at most one"]),
        (["admin", "scaling-group", "add", "sg", "--driver-opts", "{x}"], ["--driver-opts"]),
        (["admin", "agent", "list", "-s", "SLEEPING"], ["'SLEEPING' is not one of"]),
        (["update-password", "old", "new", "other"], ["do not match"]),
        (["update-password", "old", "", ""], ["must not be empty"]),
    ],
)
def test_usage_errors(offline_env: str, args: list[str], needles: list[str]) -> None:
    result = invoke(*args)
    one_line_error(result, 2, *needles)
    assert result.stdout == ""


def test_a_request_would_have_failed_otherwise(offline_env: str) -> None:
    one_line_error(invoke("admin", "domain", "add", "d1"), 1, offline_env.removeprefix("http://"))


# ---- CLI: rendering of given results ----


def _render(output: str, render: Callable[[], None], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run *render* as a command with ``--output`` *output*; returns the exit code, stdout and stderr."""
    code = 0
    with click.Context(click.Command("x"), obj=CLIContext(output=output)):
        try:
            render()
        except SystemExit as e:
            code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_mutation_answered_not_ok(capsys: pytest.CaptureFixture[str]) -> None:
    result = {"ok": False, "msg": "integrity error:\n duplicate domain", "domain": None}

    def show() -> None:
        print_result(result, "Domain d1 is created.", failed="Domain d1 was not created")

    code, out, err = _render("console", show, capsys)
    assert (code, out) == (1, "")
    assert err.strip().splitlines() == ["✘ Domain d1 was not created: integrity error: duplicate domain"]
    code, out, err = _render("json", show, capsys)
    assert code == 1 and json.loads(out) == result and err == ""
    code, out, err = _render("console", lambda: print_result({"ok": False}, "x", failed="Failed"), capsys)
    assert code == 1 and "the server gave no reason" in err


def test_mutation_result_decodes_json_fields(capsys: pytest.CaptureFixture[str]) -> None:
    result = {"ok": True, "msg": "success", "scaling_group": {"name": "sg", "driver_opts": '{"x": 1}'}}

    def show() -> None:
        print_result(result, "Scaling group sg is created.", json_fields=("driver_opts",))

    code, out, err = _render("json", show, capsys)
    assert code == 0 and json.loads(out)["scaling_group"] == {"name": "sg", "driver_opts": {"x": 1}}
    code, out, err = _render("console", show, capsys)
    assert code == 0 and out == "" and err == "✔ Scaling group sg is created.\n"


def test_image_and_agent_tables(capsys: pytest.CaptureFixture[str]) -> None:
    from ai.backend.client.cli.admin.agent import JSON_FIELDS as AGENT_JSON
    from ai.backend.client.cli.admin.agent import LIST_COLUMNS as AGENT_COLUMNS
    from ai.backend.client.cli.admin.image import COLUMNS as IMAGE_COLUMNS

    images = [
        {
            "name": "python",
            "registry": "local",
            "tag": "latest",
            "digest": "sha256:ab",
            "size_bytes": 3 * 2**20,
            "aliases": ["python", "py"],
        }
    ]
    _, out, _ = _render("console", lambda: print_items(images, IMAGE_COLUMNS), capsys)
    assert out.splitlines()[2].split() == ["python", "local", "latest", "sha256:ab", "3m", "python,", "py"]
    agents = [
        {
            "id": "i-1",
            "status": "ALIVE",
            "scaling_group": "default",
            "available_slots": '{"cpu": "4", "mem": "4294967296"}',
            "occupied_slots": "{}",
        }
    ]

    def show() -> None:
        print_items(agents, AGENT_COLUMNS, json_fields=AGENT_JSON, total=30, what="agents")

    _, out, err = _render("console", show, capsys)
    assert out.splitlines()[2].split() == ["i-1", "ALIVE", "default", "cpu=4", "mem=4g", "{}"]
    assert "Showing 1 of 30 agents" in err
    _, out, _ = _render("json", show, capsys)
    data = json.loads(out)
    assert data["count"] == 1 and data["total_count"] == 30
    assert data["items"][0]["available_slots"] == {"cpu": "4", "mem": "4294967296"}


def test_detail_view_of_a_missing_item(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _render(
        "json", lambda: print_item(None, [Column("name", "Name")], not_found="No such x: y"), capsys
    )
    assert (code, out, err) == (1, "", "✘ No such x: y\n")


@pytest.mark.parametrize(
    ("kind", "value", "text"),
    [
        ("text", None, "-"),
        ("bool", True, "yes"),
        ("bool", False, "no"),
        ("slots", '{"cpu": "2", "mem": "1073741824", "cuda.mem": "2147483648"}', "cpu=2 mem=1g cuda.mem=2g"),
        ("slots", {"cpu": "Infinity", "mem": "Infinity"}, "cpu=Infinity mem=Infinity"),
        ("slots", "{}", "{}"),
        ("slots", "not json", "not json"),
        ("bytes", 2**40, "1t"),
        ("bytes", 0, "0"),
        ("bytes", "1.5", "1.5"),
        ("list", [], "-"),
        ("list", ["local", "nfs"], "local, nfs"),
        ("groups", [{"id": GID, "name": "default"}, {"id": "x", "name": "g2"}], "default, g2"),
        ("groups", [], "-"),
        ("json", '{"a": 1}', '{"a": 1}'),
        ("text", {"a": [1]}, '{"a": [1]}'),
    ],
)
def test_format_value(kind: str, value: Any, text: str) -> None:
    assert format_value(kind, value) == text
