"""The user's options for starting an app: ``envs`` (``{NAME: value}``) and ``arguments``
(``{flag: null | value | [values]}``), given as JSON object strings (the 22.03 query strings) or as JSON
objects (request bodies), and checked against what the app allows (its service definition's
``allowed_envs`` / ``allowed_arguments``) before anything is started.

The runner checks them again (ADR 0012); checking here too answers a 400 before the agent is called.
"""

from __future__ import annotations

import json
from typing import Any

from ai.backend.common.contracts.agent import ArgumentValue, ServiceOptions
from ai.backend.common.problems import InvalidAPIParameters

from .ports import ServicePort

__all__ = ["parse_options"]

#: Bounds on what one request may carry (each option is one command-line word or one variable).
MAX_OPTIONS_TEXT = 64 * 1024
MAX_ITEMS = 64
MAX_VALUE_LEN = 8192


def _object(raw: Any, what: str) -> dict[str, Any]:
    """``raw`` (absent, a JSON object string or an object) as a dict; a 400 naming ``what`` otherwise."""
    if raw is None or raw == "":
        return {}
    if isinstance(raw, str):
        if len(raw) > MAX_OPTIONS_TEXT:
            raise InvalidAPIParameters(f"'{what}' is longer than {MAX_OPTIONS_TEXT} characters.")
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as e:
            raise InvalidAPIParameters(f"'{what}' is not valid JSON ({e.msg}); give a JSON object.") from None
        except RecursionError:
            raise InvalidAPIParameters(f"'{what}' is nested too deeply.") from None
    if not isinstance(raw, dict):
        raise InvalidAPIParameters(f"'{what}' must be a JSON object, got {type(raw).__name__}.")
    if len(raw) > MAX_ITEMS:
        raise InvalidAPIParameters(f"'{what}' has more than {MAX_ITEMS} entries.")
    return raw


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise InvalidAPIParameters(f"{where} must be a string, got {type(value).__name__}.")
    if len(value) > MAX_VALUE_LEN or "\x00" in value:
        raise InvalidAPIParameters(f"{where} is longer than {MAX_VALUE_LEN} characters or contains a NUL.")
    return value


def _allowed(app: ServicePort, key: str, allowed: tuple[str, ...] | None, kind: str) -> None:
    if allowed is None or key not in allowed:
        offer = ", ".join(allowed) if allowed else "none"
        raise InvalidAPIParameters(f"The app {app.name!r} does not accept the {kind} {key!r} (it accepts: {offer}).")


def parse_options(app: ServicePort, envs: Any, arguments: Any) -> ServiceOptions:
    """The ``envs`` and ``arguments`` of a request for ``app``, checked, as the agent takes them; a 400 problem
    saying what is wrong. An app whose service definition lists no allowed variables or arguments takes none
    (as the runner would refuse them)."""
    env_doc = _object(envs, "envs")
    arg_doc = _object(arguments, "arguments")
    out_envs: dict[str, str] = {}
    for name, value in env_doc.items():
        _allowed(app, name, app.allowed_envs, "environment variable")
        out_envs[name] = _text(value, f"The value of the environment variable {name!r}")
    out_args: dict[str, ArgumentValue] = {}
    for flag, value in arg_doc.items():
        _allowed(app, flag, app.allowed_arguments, "argument")
        where = f"The value of the argument {flag!r}"
        if value is None:
            out_args[flag] = None
        elif isinstance(value, list):
            if len(value) > MAX_ITEMS:
                raise InvalidAPIParameters(f"{where} has more than {MAX_ITEMS} items.")
            out_args[flag] = [_text(v, f"{where} (each item)") for v in value]
        elif isinstance(value, str):
            out_args[flag] = _text(value, where)
        else:
            raise InvalidAPIParameters(f"{where} must be null, a string or a list of strings.")
    return ServiceOptions(envs=out_envs, arguments=out_args)
