"""The ``ai.backend.service-ports`` label parser, the intrinsic and preopen apps, the stored records, and the
agent's host port pool (ADR 0012)."""

from __future__ import annotations

import socket

import pytest

from ai.backend.agent.apps import AppNotFound, AppStartFailed, check_options, find_app, publish, service_answer
from ai.backend.agent.config import AgentConfig
from ai.backend.agent.port_pool import PortPool, PortPoolExhausted, port_is_free
from ai.backend.common.contracts import parse_wire
from ai.backend.common.contracts.agent import KernelCreated, ServiceOptions, ServiceStart
from ai.backend.common.problems import InvalidAPIParameters
from ai.backend.common.service_ports import (
    INTRINSIC_APPS,
    ServicePort,
    kernel_service_ports,
    merge_app_info,
    parse_service_ports,
    preopen_service_ports,
)

UPSTREAM_LABEL = (
    "ipython:pty:3000,jupyter:http:8091,jupyterlab:http:8090,vscode:http:8180,tensorboard:http:6006,"
    "mlflow-ui:preopen:5000,nniboard:preopen:8080"
)


def test_upstream_label_parses_and_skips_pty() -> None:
    apps = parse_service_ports(UPSTREAM_LABEL)
    assert [(a.name, a.protocol, a.container_ports) for a in apps] == [
        ("jupyter", "http", (8091,)),
        ("jupyterlab", "http", (8090,)),
        ("vscode", "http", (8180,)),
        ("tensorboard", "http", (6006,)),
        ("mlflow-ui", "preopen", (5000,)),
        ("nniboard", "preopen", (8080,)),
    ]
    assert all(a.host_ports == () for a in apps)


@pytest.mark.parametrize("label", ["", None, "   "])
def test_empty_label_declares_nothing(label: str | None) -> None:
    assert parse_service_ports(label) == []


def test_several_ports_spaces_and_a_trailing_comma() -> None:
    apps = parse_service_ports("web:http:[8080,8081], db:tcp:15432,")
    assert [(a.name, a.container_ports) for a in apps] == [("web", (8080, 8081)), ("db", (15432,))]


@pytest.mark.parametrize(
    ("label", "message"),
    [
        ("jupyter", "malformed entry 'jupyter'"),
        ("a:http:8080x", "malformed entry 'a:http:8080x'"),
        ("a:http:[]", "malformed entry"),
        ("a:http:8080;b:http:8081", "malformed entry"),
        ("é:http:8080", "malformed entry"),
        ("a:udp:8080", "unknown protocol 'udp'"),
        ("a:http:1024", "port 1024 of 'a:http:1024' is out of range"),
        ("a:http:65535", "out of range"),
        ("a:http:80", "out of range"),
        ("a:tcp:2200", "port 2200 of 'a:tcp:2200' is reserved"),
        ("a:http:7681", "reserved"),
        ("a:tcp:[2000,9000]", "reserved"),
        ("a:http:8080,b:http:[9000,8080]", "port 8080 of 'b:http:[9000,8080]' is already taken by the app 'a'"),
        ("a:http:[8080,8080]", "already taken"),
        ("a:http:8080,a:tcp:9000", "the app name 'a' appears twice"),
    ],
)
def test_bad_labels_say_what_is_wrong(label: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_service_ports(label)


def test_main_kernels_add_the_intrinsic_apps_and_preopen_ports() -> None:
    apps = kernel_service_ports("jupyter:http:8091", main=True, preopen=[5000, 9999])
    assert [(a.name, a.protocol, a.container_ports) for a in apps] == [
        ("jupyter", "http", (8091,)),
        ("sshd", "tcp", (2200,)),
        ("ttyd", "http", (7681,)),
        ("5000", "preopen", (5000,)),
        ("9999", "preopen", (9999,)),
    ]
    assert kernel_service_ports("jupyter:http:8091", main=False, preopen=[5000]) == []
    assert kernel_service_ports("", main=True) == list(INTRINSIC_APPS)
    with pytest.raises(ValueError, match="reserved for an intrinsic app"):
        kernel_service_ports("sshd:tcp:2222", main=True)


@pytest.mark.parametrize(
    ("ports", "message"),
    [
        ([8091], "already taken by the app 'jupyter'"),
        ([5000, 5000], "already taken by the app '5000'"),
        ([22], "out of range"),
        ([7681], "reserved"),
    ],
)
def test_bad_preopen_ports(ports: list[int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        preopen_service_ports(ports, parse_service_ports("jupyter:http:8091"))


def test_records_round_trip_and_merge_the_runner_info() -> None:
    app = ServicePort("vscode", "http", (8180,), (30001,))
    assert app.to_record() == {"name": "vscode", "protocol": "http", "container_ports": [8180], "host_ports": [30001]}
    merged = merge_app_info(
        [app, ServicePort("sshd", "tcp", (2200,), (30002,))],
        [
            {
                "name": "vscode",
                "url_template": "{protocol}://{host}:{port}/",
                "allowed_arguments": ["--auth"],
                "allowed_envs": ["PASSWORD"],
            },
            {"name": "sshd", "url_template": 5, "allowed_arguments": "no", "allowed_envs": [1]},  # ignored
            "garbage",
            {"name": "unknown-app", "url_template": "x"},
        ],
    )
    record = merged[0].to_record()
    assert record == {
        "name": "vscode",
        "protocol": "http",
        "container_ports": [8180],
        "host_ports": [30001],
        "url_template": "{protocol}://{host}:{port}/",
        "allowed_arguments": ["--auth"],
        "allowed_envs": ["PASSWORD"],
    }
    assert merged[1] == ServicePort("sshd", "tcp", (2200,), (30002,))
    assert ServicePort.from_record(record) == merged[0]
    with pytest.raises(ValueError):
        ServicePort.from_record({"name": "x", "protocol": "udp", "container_ports": [1]})
    # The answer of an agent carries the records and the kernel host; an old agent's answer still validates.
    created = KernelCreated(container_id="c", service_ports=[record], kernel_host="127.0.0.1")
    assert created.to_wire()["service_ports"] == [record]
    assert KernelCreated.model_validate({"container_id": "c"}).kernel_host == ""


def test_pool_is_fifo_and_released_ports_go_to_the_back() -> None:
    pool = PortPool(30000, 30004)
    assert len(pool) == 5
    a = pool.take(2)
    assert a == [30000, 30001] and 30000 not in pool
    pool.release([30001])
    assert pool.take(3) == [30002, 30003, 30004]
    assert pool.take(1) == [30001]  # released last, handed out last
    pool.release([30000, 30000, 40000])  # twice, and outside the range: ignored
    assert len(pool) == 1
    with pytest.raises(PortPoolExhausted, match="only 1 of the 2 host ports"):
        pool.take(2)
    assert len(pool) == 1 and pool.take(1) == [30000]  # nothing was taken by the failed call
    assert pool.take(0) == []


def test_pool_claims_the_ports_of_kernels_taken_back() -> None:
    pool = PortPool(30000, 30003)
    pool.claim([30001, 30003, 50000])
    assert pool.take(2) == [30000, 30002]
    with pytest.raises(PortPoolExhausted):
        pool.take(1)


def test_pool_passes_over_ports_held_by_other_processes() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        busy = held.getsockname()[1]
        pool = PortPool(busy, busy + 2, usable=port_is_free("127.0.0.1"))
        taken = pool.take(2)
        assert busy not in taken and busy in pool  # still in the pool, at the back
        pool.release(taken)
        with pytest.raises(PortPoolExhausted, match="1 more are held by other processes"):
            pool.take(3)
    assert port_is_free("127.0.0.1")(busy)


def test_publish_gives_each_container_port_a_host_port() -> None:
    pool = PortPool(31000, 31010)
    apps = publish(kernel_service_ports("web:http:[8080,8081]", main=True), pool)
    assert [(a.name, a.host_ports) for a in apps] == [
        ("web", (31000, 31001)),
        ("sshd", (31002,)),
        ("ttyd", (31003,)),
    ]
    with pytest.raises(PortPoolExhausted):
        publish(kernel_service_ports("a:http:[8080,8081,8082,8083,8084,8085,8086,8087]", main=True), pool)
    assert len(pool) == 7


def test_container_config_defaults_and_checks() -> None:
    cc = AgentConfig().container
    assert cc.port_range == (30000, 31000) and cc.bind_host == "127.0.0.1" and cc.kernel_host == "127.0.0.1"
    cc = AgentConfig.model_validate(
        {"container": {"port-range": [40000, 40100], "bind-host": "10.0.0.5", "advertised-host": "node1.lan"}}
    ).container
    assert cc.port_range == (40000, 40100) and cc.kernel_host == "node1.lan"
    for bad in ({"port-range": [1000, 2000]}, {"port-range": [5000, 4000]}, {"bind-host": "localhost"}):
        with pytest.raises(ValueError):
            AgentConfig.model_validate({"container": bad})


def test_start_requests_and_runner_answers() -> None:
    with pytest.raises(InvalidAPIParameters, match="options.envs.X"):
        parse_wire(ServiceStart, {"name": "vscode", "options": {"envs": {"X": 1}}})
    with pytest.raises(InvalidAPIParameters, match="options.arguments"):
        parse_wire(ServiceStart, {"name": "vscode", "options": {"arguments": {"--x": [1]}}})
    with pytest.raises(InvalidAPIParameters, match="name"):
        parse_wire(ServiceStart, {"name": ""})
    req = parse_wire(ServiceStart, {"name": "vscode", "options": None})
    assert req.options == ServiceOptions()
    vscode = ServicePort("vscode", "http", (8180,), (30001,), allowed_arguments=("--auth",), allowed_envs=())
    apps = [vscode, ServicePort("sshd", "tcp", (2200,), (30002,))]
    assert find_app(apps, "k", "sshd").host_ports == (30002,)
    with pytest.raises(AppNotFound, match="its apps: vscode, sshd"):
        find_app(apps, "k", "jupyter")
    check_options(vscode, ServiceOptions(arguments={"--auth": "none"}))
    with pytest.raises(InvalidAPIParameters, match="--bind"):
        check_options(vscode, ServiceOptions(arguments={"--bind": None}))
    with pytest.raises(InvalidAPIParameters, match="PASSWORD.*allowed: none"):
        check_options(vscode, ServiceOptions(envs={"PASSWORD": "x"}))
    check_options(apps[1], ServiceOptions(envs={"ANY": "x"}))  # not said: the runner decides
    assert service_answer(vscode, {"status": "running"}, "h") == {"status": "running", "host": "h", "ports": [30001]}
    with pytest.raises(AppStartFailed) as failed:
        service_answer(vscode, {"status": "failed", "error": "opening the service port timed out"}, "h")
    assert failed.value.status == 502 and failed.value.body()["detail"] == "opening the service port timed out"
    with pytest.raises(InvalidAPIParameters):
        service_answer(vscode, {"status": "failed", "error": "argument --x is not allowed"}, "h")
    with pytest.raises(AppStartFailed, match="cannot start apps"):
        service_answer(vscode, {"error": "unknown op: 'start_service'"}, "h")
    with pytest.raises(AppStartFailed):
        service_answer(vscode, {"status": "weird"}, "h")
