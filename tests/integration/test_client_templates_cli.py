"""``backend.ai sesstpl ...`` / ``start-template`` as subprocesses, and the ``SessionTemplate`` SDK, against a real
cluster (manager + Docker agent): templates go round trip and sessions started from them get the template's
environment, with command-line options overriding it.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ai.backend.client.config import APIConfig
from ai.backend.client.exceptions import BackendAPIError
from ai.backend.client.session import Session

from .conftest import USER, Cluster

pytestmark = pytest.mark.docker

CLI = [sys.executable, "-m", "ai.backend.client.cli"]
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

TEMPLATE = """---
api_version: v1
kind: taskTemplate
metadata:
  name: cli-template
  tag: cli-tag
spec:
  kernel:
    environ:
      MYCONFIG: XXX
      SECOND: two
    image: python:3.11-debian12
  resources:
    cpu: '1'
    mem: 256m
  sessionType: interactive
"""
ENV_CODE = "import os\nprint(os.environ.get('MYCONFIG'), os.environ.get('SECOND'))"


def cli(c: Cluster, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=c.env(USER), capture_output=True, text=True, input=input, timeout=180)


def ok(c: Cluster, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    p = cli(c, *args, input=input)
    assert p.returncode == 0, f"{args}: {p.stdout}\n{p.stderr}"
    assert "Traceback" not in p.stderr
    return p


def fails(c: Cluster, *args: str, needles: tuple[str, ...] = ()) -> None:
    p = cli(c, *args)
    assert p.returncode == 1, f"{args}: rc={p.returncode}\n{p.stdout}\n{p.stderr}"
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("✘") and "Traceback" not in p.stderr, p.stderr
    for n in needles:
        assert n.lower() in lines[0].lower(), (n, lines[0])


def run_code(c: Cluster, name: str, code: str) -> str:
    r = c.request("POST", f"/session/{name}", {"mode": "query", "code": code})
    assert r.status_code == 200, r.text
    return "".join(str(x[1]) for x in r.json()["result"]["console"])


def test_session_template_cli_round_trip(cluster: Cluster, tmp_path: Path) -> None:
    src = tmp_path / "session-template.yaml"
    src.write_text(TEMPLATE)
    tid = ok(cluster, "sesstpl", "create", "-f", str(src)).stdout.strip()
    assert UUID_RE.match(tid), tid
    listing = ok(cluster, "sesstpl", "list").stdout
    row = next(line for line in listing.splitlines() if tid in line)
    assert row.split()[0] == "cli-template" and "user@lablup.com" in row, listing
    items = json.loads(ok(cluster, "--output", "json", "session-template", "list").stdout)["items"]
    assert {i["id"]: i["name"] for i in items}[tid] == "cli-template"
    assert yaml.safe_load(ok(cluster, "sesstpl", "get", tid).stdout) == yaml.safe_load(TEMPLATE)
    as_json = json.loads(ok(cluster, "sesstpl", "get", tid, "-f", "json").stdout)
    assert as_json["template"] == yaml.safe_load(TEMPLATE) and as_json["name"] == "cli-template"

    # start-template: the template's environment, tag and resources.
    name = f"tplcli-{secrets.token_hex(3)}"
    p = ok(cluster, "start-template", tid, "-t", name)
    assert f"Session ID {name} is created and ready" in p.stderr, p.stderr
    try:
        assert run_code(cluster, name, ENV_CODE) == "XXX two\n"
        info = cluster.request("GET", f"/session/{name}").json()
        assert info["tag"] == "cli-tag" and info["requestedSlots"]["cpu"] == "1"
    finally:
        cluster.request("DELETE", f"/session/{name}")
    # session create-from-template with -e replaces the whole environment; --tag overrides the tag.
    name2 = f"tplcli-{secrets.token_hex(3)}"
    out = json.loads(
        ok(
            cluster,
            "--output",
            "json",
            "session",
            "create-from-template",
            tid,
            "-t",
            name2,
            "-e",
            "MYCONFIG=ZZZ",
            "--tag",
            "override",
        ).stdout
    )
    assert out["name"] == name2 and out["status"] == "RUNNING" and out["created"] is True
    try:
        assert run_code(cluster, name2, ENV_CODE) == "ZZZ None\n"
        assert cluster.request("GET", f"/session/{name2}").json()["tag"] == "override"
    finally:
        cluster.request("DELETE", f"/session/{name2}")

    # update from stdin, then delete.
    ok(cluster, "sesstpl", "update", tid, input=TEMPLATE.replace("MYCONFIG: XXX", "MYCONFIG: NEW"))
    assert yaml.safe_load(ok(cluster, "sesstpl", "get", tid).stdout)["spec"]["kernel"]["environ"]["MYCONFIG"] == "NEW"
    fails(cluster, "sesstpl", "delete", tid, needles=("--force",))
    assert tid in ok(cluster, "sesstpl", "list").stdout
    ok(cluster, "sesstpl", "delete", "-f", tid)
    assert tid not in ok(cluster, "sesstpl", "list").stdout
    fails(cluster, "sesstpl", "get", tid, needles=(tid,))
    fails(cluster, "start-template", tid, "-t", f"tplcli-{secrets.token_hex(3)}")


def test_session_template_cli_errors(cluster: Cluster, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("api_version: v1\nkind: taskTemplate\nmetadata:\n  name: [oops\n")
    before = ok(cluster, "sesstpl", "list").stdout
    fails(cluster, "sesstpl", "create", "-f", str(bad), needles=("line",))
    missing = cli(cluster, "sesstpl", "create", "-f", str(tmp_path / "missing.yaml"))
    assert missing.returncode == 2 and "No such file" in missing.stderr, missing.stderr
    unknown = TEMPLATE.replace("python:3.11-debian12", "no-such-image:9")
    p = cli(cluster, "sesstpl", "create", input=unknown)
    assert p.returncode == 1 and "no-such-image:9" in p.stderr and "spec.kernel.image" in p.stderr, p.stderr
    assert ok(cluster, "sesstpl", "list").stdout == before
    empty = cli(cluster, "sesstpl", "create", input="")
    assert empty.returncode == 2 and "empty" in empty.stderr


def test_session_template_sdk(cluster: Cluster) -> None:
    config = APIConfig(endpoint=cluster.endpoint, access_key=USER["access_key"], secret_key=USER["secret_key"])
    with Session(config=config) as api:
        tpl = api.SessionTemplate.create(TEMPLATE)
        assert UUID_RE.match(tpl.template_id)
        assert tpl.template_id in {t["id"] for t in api.SessionTemplate.list_templates()}
        assert yaml.safe_load(tpl.get()) == yaml.safe_load(TEMPLATE)
        assert json.loads(tpl.get("json"))["name"] == "cli-template"
        assert tpl.put(TEMPLATE.replace("cli-template", "sdk-renamed")) == {"success": True}
        names = {t["id"]: t["name"] for t in api.SessionTemplate.list_templates()}
        assert names[tpl.template_id] == "sdk-renamed"
        name = f"tplsdk-{secrets.token_hex(3)}"
        cs = api.ComputeSession.create_from_template(tpl.template_id, name=name, envs={"SECOND": "sdk"})
        try:
            assert cs.name == name and cs.status == "RUNNING" and cs.created and cs.id is not None
            assert run_code(cluster, name, ENV_CODE) == "None sdk\n"
        finally:
            cs.destroy()
        assert tpl.delete() == {"success": True}
        with pytest.raises(BackendAPIError) as e:
            tpl.get()
        assert e.value.status == 404
        with pytest.raises(BackendAPIError) as e:
            api.SessionTemplate.create("kind: nope")
        assert e.value.status == 400
