"""Pure helpers for the apps of compute sessions: start options, bind addresses and the URLs shown.

Nothing here does I/O; bad input raises :class:`ValueError` with a message fit for one CLI line.

- :func:`parse_app_argument` reads one ``--arg "--opt val"`` of ``backend.ai app`` (shell quoting;
  one token means a bare flag, two a flag with a value, more a flag with a list of values;
  ``--opt=val`` is the same as ``--opt val``).
- :func:`parse_app_env` reads one ``-e NAME=VAL``.
- :func:`app_option_params` checks the options an SDK caller gives and turns them into the
  ``port``/``envs``/``arguments`` fields of the API (the last two as JSON text, as the 22.03 wire has it).
- :func:`parse_bind` reads ``-b [HOST:]PORT`` and :func:`format_app_url` the address to print.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

__all__ = (
    "DEFAULT_BIND_HOST",
    "DEFAULT_URL_TEMPLATE",
    "AppArgumentValue",
    "AppArguments",
    "app_option_params",
    "format_app_url",
    "parse_app_argument",
    "parse_app_arguments",
    "parse_app_env",
    "parse_app_envs",
    "parse_bind",
    "url_host",
    "url_scheme",
)

AppArgumentValue: TypeAlias = None | str | list[str]
AppArguments: TypeAlias = dict[str, AppArgumentValue]

#: Where ``-b PORT`` (no host) and ``-b :PORT`` listen: loopback, so nobody else reaches the app.
DEFAULT_BIND_HOST = "127.0.0.1"
#: The address printed for an app whose definition has no ``url_template``.
DEFAULT_URL_TEMPLATE = "{protocol}://{host}:{port}"

_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Protocols whose traffic is HTTP, so that a browser (and the printed URL) should say http://.
_HTTP_PROTOCOLS = frozenset({"http", "preopen"})


def parse_app_argument(line: str) -> tuple[str, AppArgumentValue]:
    """``"--opt val"`` → ``("--opt", "val")``; ``"--flag"`` → ``("--flag", None)``;
    ``"--opt a b"`` → ``("--opt", ["a", "b"])``; ``"--opt=val"`` → ``("--opt", "val")``.

    Quoting follows the shell (``--arg "--title 'a b'"`` gives the value ``a b``). Only the first
    token (the flag) is split at ``=``, so values may contain ``=``.
    """
    try:
        tokens = shlex.split(line)
    except ValueError as e:
        raise ValueError(f"cannot parse the app argument {line!r}: {e}") from None
    if not tokens:
        raise ValueError("an app argument must not be empty")
    flag, sep, inline = tokens[0].partition("=")
    if not flag:
        raise ValueError(f"the app argument {line!r} has no option name")
    values = ([inline] if sep else []) + tokens[1:]
    if not values:
        return flag, None
    if len(values) == 1:
        return flag, values[0]
    return flag, values


def parse_app_arguments(lines: Sequence[str]) -> AppArguments:
    """Collect several ``--arg`` values; a repeated option keeps its last value."""
    result: AppArguments = {}
    for line in lines:
        flag, value = parse_app_argument(line)
        result[flag] = value
    return result


def parse_app_env(text: str) -> tuple[str, str]:
    """``NAME=VAL`` → ``(NAME, VAL)``; a bare ``NAME`` gives an empty value (as the 22.03 CLI does)."""
    name, _sep, value = text.partition("=")
    name = name.strip()
    if not name:
        raise ValueError(f"{text!r} has no variable name (write NAME=VALUE)")
    if not _ENV_NAME_RE.match(name):
        raise ValueError(f"{name!r} is not a valid environment variable name")
    return name, value


def parse_app_envs(texts: Sequence[str]) -> dict[str, str]:
    """Collect several ``-e`` values; a repeated name keeps its last value."""
    return dict(parse_app_env(t) for t in texts)


def _check_port(port: Any, what: str) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"{what} must be an integer between 1 and 65535, not {port!r}")
    return port


def app_option_params(
    *,
    port: int | None = None,
    envs: Mapping[str, str] | None = None,
    arguments: Mapping[str, AppArgumentValue | Sequence[str]] | None = None,
) -> dict[str, str]:
    """The ``port``, ``envs`` and ``arguments`` fields of an app request (empty ones left out)."""
    params: dict[str, str] = {}
    if port is not None:
        params["port"] = str(_check_port(port, "The container port"))
    if envs:
        checked_envs: dict[str, str] = {}
        for name, value in envs.items():
            if not isinstance(name, str) or not _ENV_NAME_RE.match(name):
                raise ValueError(f"{name!r} is not a valid environment variable name")
            if not isinstance(value, str):
                raise ValueError(f"The value of the environment variable {name} must be a string")
            checked_envs[name] = value
        params["envs"] = json.dumps(checked_envs)
    if arguments:
        checked_args: AppArguments = {}
        for flag, arg in arguments.items():
            if not isinstance(flag, str) or not flag:
                raise ValueError(f"{flag!r} is not an option name")
            if arg is None or isinstance(arg, str):
                checked_args[flag] = arg
            elif isinstance(arg, Sequence) and all(isinstance(v, str) for v in arg):
                checked_args[flag] = list(arg)
            else:
                raise ValueError(f"The value of the app argument {flag} must be None, a string or a list of strings")
        params["arguments"] = json.dumps(checked_args)
    return params


def parse_bind(text: str) -> tuple[str, int]:
    """``-b [HOST:]PORT`` → ``(host, port)``. A bare port (or ``:PORT``) listens on 127.0.0.1;
    IPv6 addresses are written in brackets (``[::1]:8080``); port 0 picks a free port."""
    text = text.strip()
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]")
        if not sep or not port_text.startswith(":") or not host:
            raise ValueError(f"{text!r} is not [IPv6-ADDRESS]:PORT")
        port_text = port_text[1:]
    elif text.count(":") > 1:
        raise ValueError(f"{text!r}: write an IPv6 address in brackets, as [ADDRESS]:PORT")
    else:
        host, _sep, port_text = text.rpartition(":")
    host = host or DEFAULT_BIND_HOST
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"{port_text!r} is not a port number (0-65535)")
    return host, int(port_text)


def url_scheme(protocol: str) -> str:
    """The scheme to print for an app's protocol: ``http`` for web apps, else the protocol (``tcp``)."""
    return "http" if protocol in _HTTP_PROTOCOLS else (protocol or "tcp")


def url_host(host: str) -> str:
    """``host`` as it goes in a URL (IPv6 addresses in brackets)."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def format_app_url(template: str | None, protocol: str, host: str, port: int) -> str:
    """Fill an app's ``url_template`` (``{protocol}``, ``{host}``, ``{port}``); a template that asks for
    anything else (or none at all) gives ``{protocol}://{host}:{port}``."""
    values = {"protocol": url_scheme(protocol), "host": url_host(host), "port": port}
    if template:
        try:
            return template.format(**values)
        except (KeyError, IndexError, ValueError):
            pass  # a placeholder we cannot fill: the plain address is still right
    return DEFAULT_URL_TEMPLATE.format(**values)
