"""The manager's checks of app requests (``manager.apps``): stored service ports and their public shape, the
app and port a request names, its ``envs``/``arguments``, the proxy redirect, the circuit registry, the
``[appproxy]`` configuration and the owner's SSH keypair in the main kernel's spec."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from pydantic import ValidationError

from ai.backend.common.contracts.agent import SSHKeypair
from ai.backend.common.problems import InvalidAPIParameters, ProblemError
from ai.backend.manager.apps.appproxy import check_redirect
from ai.backend.manager.apps.circuits import CircuitRegistry
from ai.backend.manager.apps.options import parse_options
from ai.backend.manager.apps.ports import (
    AppNotFound,
    ServicePort,
    choose_container_port,
    find_app,
    host_port,
    parse_port,
    public_ports,
    service_ports,
)
from ai.backend.manager.config import ManagerConfig
from ai.backend.manager.models import KernelRow, SessionRow
from ai.backend.manager.sessions.launcher import Launcher, advertised_host

STORED: list[Any] = [
    {
        "name": "vscode",
        "protocol": "http",
        "container_ports": [8180, 8181],
        "host_ports": [30001, 30002],
        "url_template": "{protocol}://{host}:{port}/",
        "allowed_arguments": ["--auth"],
        "allowed_envs": ["PASSWORD"],
    },
    {"name": "sshd", "protocol": "tcp", "container_ports": [2200], "host_ports": [30003]},
    {"name": "broken", "protocol": "tcp"},  # no ports: left out, not an error
    {"name": "empty", "protocol": "tcp", "container_ports": []},
    {"name": "odd", "protocol": "gopher", "container_ports": [7000]},
    "junk",
]


def app(name: str = "vscode") -> ServicePort:
    return find_app(STORED, name, "sess")


def test_public_shape_hides_host_ports_and_skips_malformed_entries() -> None:
    assert public_ports(STORED) == [
        {
            "name": "vscode",
            "protocol": "http",
            "ports": [8180, 8181],
            "url_template": "{protocol}://{host}:{port}/",
            "allowed_arguments": ["--auth"],
            "allowed_envs": ["PASSWORD"],
        },
        {"name": "sshd", "protocol": "tcp", "ports": [2200]},
    ]
    assert public_ports(None) == [] and public_ports([]) == []
    # Host ports missing or short: 0 (none recorded), aligned with the container ports.
    (sp,) = service_ports([{"name": "x", "protocol": "tcp", "container_ports": [5000, 5001], "host_ports": [1]}])
    assert host_port(sp, 5000) == 1 and host_port(sp, 5001) == 0


def test_app_lookup_and_ports() -> None:
    assert host_port(app(), 8181) == 30002
    with pytest.raises(AppNotFound) as e:
        find_app(STORED, "jupyter", "sess")
    assert e.value.status == 404 and e.value.slug == "app-not-found" and "sess:jupyter" in str(e.value.detail)
    with pytest.raises(AppNotFound):
        find_app(STORED, "broken", "sess")
    assert choose_container_port(app(), None) == 8180
    assert choose_container_port(app(), 8181) == 8181
    with pytest.raises(InvalidAPIParameters) as bad:
        choose_container_port(app(), 9999)
    assert bad.value.detail == "Service vscode does not open the port number 9999."
    assert parse_port(None) is None and parse_port("") is None and parse_port("8181") == 8181
    assert parse_port(8181) == 8181
    for raw in ("abc", "80", "70000", True, "1.5", 8080.5, "-8080", " 8080", "٨٠٨٠", [8080]):
        with pytest.raises(InvalidAPIParameters):
            parse_port(raw)


def test_options_as_text_or_objects() -> None:
    opts = parse_options(app(), '{"PASSWORD": "s3cret"}', {"--auth": "none"})
    assert opts.model_dump() == {"envs": {"PASSWORD": "s3cret"}, "arguments": {"--auth": "none"}}
    assert parse_options(app(), None, "").model_dump() == {"envs": {}, "arguments": {}}
    for value in (None, "x", ["a", "b"]):
        assert parse_options(app(), None, json.dumps({"--auth": value})).arguments == {"--auth": value}


@pytest.mark.parametrize(
    ("envs", "arguments", "needle"),
    [
        ("{not json", None, "not valid JSON"),
        ("[1, 2]", None, "must be a JSON object"),
        ('{"PATH": "/tmp"}', None, "does not accept the environment variable 'PATH'"),
        ('{"PASSWORD": 1}', None, "must be a string"),
        ('{"PASSWORD": "a\\u0000b"}', None, "NUL"),
        (None, '{"--evil": null}', "does not accept the argument '--evil'"),
        (None, '{"--auth": 5}', "null, a string or a list of strings"),
        (None, '{"--auth": ["a", 5]}', "must be a string"),
        (None, "[" * 100_000, "longer than"),
        (None, "[" * 5000 + "]" * 5000, "nested too deeply"),
    ],
)
def test_bad_options_are_400(envs: Any, arguments: Any, needle: str) -> None:
    with pytest.raises(InvalidAPIParameters) as e:
        parse_options(app(), envs, arguments)
    assert needle in str(e.value.detail)


def test_an_app_without_allowed_lists_takes_no_options() -> None:
    with pytest.raises(InvalidAPIParameters) as e:
        parse_options(app("sshd"), '{"X": "1"}', None)
    assert "(it accepts: none)" in str(e.value.detail)


def test_redirect_stays_inside_the_app() -> None:
    assert check_redirect(None) == "/" and check_redirect("/lab?x=1") == "/lab?x=1"
    for bad in ("//evil.example", "http://evil.example/", "lab", "/a\\b", "/a\nb", 5):
        with pytest.raises(ProblemError):
            check_redirect(bad)


def test_circuits_close_per_session_and_after_the_end() -> None:
    async def run() -> None:
        reg = CircuitRegistry()
        a, b = uuid.uuid4(), uuid.uuid4()
        tasks = [asyncio.ensure_future(asyncio.sleep(60)) for _ in range(3)]
        with reg.track(a, "x", tasks[0]), reg.track(a, "y", tasks[1]), reg.track(b, "x", tasks[2]) as other:
            assert reg.count(a) == 2 and reg.count() == 3
            assert reg.close_session(a) == 2
            await asyncio.sleep(0)
            assert tasks[0].cancelled() and tasks[1].cancelled() and not tasks[2].done()
            assert other.closed_by is None
        assert reg.count() == 0
        # A stream set up after its session ended is closed at once.
        late = asyncio.ensure_future(asyncio.sleep(60))
        with reg.track(a, "x", late) as circuit:
            assert circuit.closed_by == "session-ended"
        await asyncio.sleep(0)
        assert late.cancelled()
        tasks[2].cancel()

    asyncio.run(run())


def test_appproxy_config() -> None:
    assert ManagerConfig.model_validate({}).appproxy is None
    cfg = ManagerConfig.model_validate({"appproxy": {"url": "http://127.0.0.1:10200/", "secret": "x" * 16}}).appproxy
    assert cfg is not None and cfg.url == "http://127.0.0.1:10200" and cfg.manager_url == cfg.url
    cfg = ManagerConfig.model_validate(
        {"appproxy": {"url": "https://apps.example", "api-url": "http://10.0.0.2:10200", "secret": "y" * 20}}
    ).appproxy
    assert cfg is not None and cfg.manager_url == "http://10.0.0.2:10200"
    for bad in ({"url": "http://x", "secret": "short"}, {"url": "ftp://x", "secret": "z" * 16}, {"secret": "z" * 16}):
        with pytest.raises(ValidationError):
            ManagerConfig.model_validate({"appproxy": bad})


def test_kernel_host_and_ssh_keypair_in_the_spec() -> None:
    assert advertised_host({"kernel_host": "10.1.2.3"}, "http://127.0.0.1:6001") == "10.1.2.3"
    assert advertised_host({"kernel_host": ""}, "http://agent-7.internal:6001") == "agent-7.internal"
    assert advertised_host({}, None) is None
    launcher = Launcher(None, None, None, asyncio.Event(), lambda c: None)  # type: ignore[arg-type]
    session = SessionRow(
        id=uuid.uuid4(),
        name="s",
        image="python",
        environ={},
        session_type="interactive",
        access_key="AK",
        cluster_size=2,
    )
    pair = SSHKeypair(
        public_key="ssh-ed25519 AAAA work@backend.ai\n", private_key="-----BEGIN OPENSSH PRIVATE KEY-----"
    )
    specs = [
        launcher.kernel_spec(
            session,
            KernelRow(id=uuid.uuid4(), image="python", cluster_role=role, cluster_idx=1, cluster_hostname=f"{role}1"),
            None,
            mounts=[],
            user_config={"ssh_keypair": pair},
        )
        for role in ("main", "sub")
    ]
    assert specs[0].ssh_keypair == pair and specs[1].ssh_keypair is None
    assert specs[0].to_wire()["ssh_keypair"] == {"public_key": pair.public_key, "private_key": pair.private_key}
