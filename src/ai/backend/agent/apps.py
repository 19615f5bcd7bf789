"""The agent's side of a kernel's apps (ADR 0012), whatever the backend: giving each app port a host port,
asking the runner what it knows of the apps (``get_apps``), checking a start request against them, and
turning the runner's ``start_service`` answer into the agent's.

The runner ops (docs/runner-protocol.md):

* ``get_apps`` → ``{"apps": [{"name", "url_template"?, "allowed_arguments"?, "allowed_envs"?}]}``;
* ``start_service`` ``name``, ``ports``, ``protocol``, ``options`` → ``{"status": "started" | "running" |
  "failed", "error"?}``;
* ``shutdown_service`` ``name`` → ``{"status": "stopped" | "not-running"}``.

A runner older than apps answers ``{"error": "unknown op: ..."}``: its kernel keeps the apps its image
declares, without their service-definition details, and cannot start them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any

from ai.backend.common.contracts.agent import ServiceOptions
from ai.backend.common.problems import BadGateway, InvalidAPIParameters, NotFound, ProblemError
from ai.backend.common.service_ports import ServicePort, merge_app_info

from .port_pool import PortPool

__all__ = [
    "AppNotFound",
    "AppStartFailed",
    "check_options",
    "fetch_app_info",
    "find_app",
    "publish",
    "service_answer",
    "shutdown_answer",
]

log = logging.getLogger(__name__)

#: How long the creation of a kernel waits for the runner's ``get_apps`` before going on without it.
GET_APPS_TIMEOUT = 5.0

# Words of a runner's refusal of the arguments or variables it was given: the caller's fault (400), not the
# app's (502).
_REFUSALS = ("not allowed", "disallowed")

RunnerCall = Callable[..., Awaitable[dict[str, Any]]]


class AppNotFound(NotFound):
    slug, title = "app-not-found", "The session has no such app"


class AppStartFailed(ProblemError):
    status, slug, title = 502, "app-start-failed", "The app could not be started"


def publish(apps: Sequence[ServicePort], pool: PortPool) -> list[ServicePort]:
    """``apps`` with a host port from ``pool`` for each container port (``PortPoolExhausted`` when the pool
    has too few; nothing is taken then)."""
    count = sum(len(a.container_ports) for a in apps)
    ports = iter(pool.take(count))
    return [replace(a, host_ports=tuple(next(ports) for _ in a.container_ports)) for a in apps]


def host_ports(apps: Sequence[ServicePort]) -> list[int]:
    """Every host port of ``apps``."""
    return [p for a in apps for p in a.host_ports]


async def fetch_app_info(call: RunnerCall, apps: Sequence[ServicePort]) -> list[ServicePort]:
    """``apps`` merged with the runner's ``get_apps`` answer; unchanged when the runner has no answer (an old
    runner, an error, or none within :data:`GET_APPS_TIMEOUT`)."""
    if not apps:
        return list(apps)
    try:
        answer = await asyncio.wait_for(call("get_apps"), GET_APPS_TIMEOUT)
    except (TimeoutError, ProblemError, ConnectionError) as e:
        log.warning("the runner did not list its apps: %s", e)
        return list(apps)
    listed = answer.get("apps") if isinstance(answer, dict) else None
    if not isinstance(listed, list):
        if isinstance(answer, dict) and "error" in answer:
            log.info("the runner does not list its apps: %s", answer["error"])
        return list(apps)
    return merge_app_info(apps, listed)


def find_app(apps: Sequence[ServicePort], kid: str, name: str) -> ServicePort:
    """The app ``name`` of kernel ``kid`` (404 when it has none of that name)."""
    for app in apps:
        if app.name == name:
            return app
    offered = ", ".join(a.name for a in apps) or "none"
    raise AppNotFound(f"Kernel {kid} has no app {name!r} (its apps: {offered}).")


def check_options(app: ServicePort, options: ServiceOptions) -> None:
    """Refuse (400) the arguments and variables that the app's service definition does not allow, when the
    runner said which it allows; otherwise the runner checks them."""
    if app.allowed_arguments is not None:
        refused = sorted(set(options.arguments) - set(app.allowed_arguments))
        if refused:
            allowed = ", ".join(app.allowed_arguments) or "none"
            raise InvalidAPIParameters(
                f"The app {app.name!r} does not accept the argument(s) {', '.join(refused)} (allowed: {allowed})."
            )
    if app.allowed_envs is not None:
        refused = sorted(set(options.envs) - set(app.allowed_envs))
        if refused:
            allowed = ", ".join(app.allowed_envs) or "none"
            raise InvalidAPIParameters(
                f"The app {app.name!r} does not accept the variable(s) {', '.join(refused)} (allowed: {allowed})."
            )


def _refusal(error: str) -> bool:
    return any(word in error.lower() for word in _REFUSALS)


def service_answer(app: ServicePort, answer: dict[str, Any], host: str) -> dict[str, Any]:
    """The agent's answer to a start request from the runner's ``start_service`` answer: ``{"status": "started" |
    "running", "host", "ports"}``; a refusal of the options is a 400, any other failure a 502."""
    status = answer.get("status")
    if status in ("started", "running"):
        return {"status": status, "host": host, "ports": list(app.host_ports)}
    if "error" in answer and status is None:
        error = str(answer["error"])
        if error.startswith("unknown op"):
            raise AppStartFailed(f"The kernel's runner cannot start apps ({error}).")
        raise InvalidAPIParameters(f"The kernel refused to start {app.name!r}: {error}")
    if status == "failed":
        error = str(answer.get("error") or "no reason given")
        if _refusal(error):
            raise InvalidAPIParameters(f"The kernel refused to start {app.name!r}: {error}")
        raise AppStartFailed(error, app=app.name)
    raise AppStartFailed(f"The kernel's runner answered the start of {app.name!r} with {str(answer)[:200]}.")


def shutdown_answer(app: ServicePort, answer: dict[str, Any]) -> dict[str, Any]:
    """The agent's answer to a shutdown request: ``{"status": "stopped" | "not-running"}``."""
    status = answer.get("status")
    if status in ("stopped", "not-running"):
        return {"status": status}
    if "error" in answer:
        raise InvalidAPIParameters(f"The kernel refused to stop {app.name!r}: {answer['error']}")
    raise BadGateway(f"The kernel's runner answered the shutdown of {app.name!r} with {str(answer)[:200]}.")
