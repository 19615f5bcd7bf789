"""Config loading for every component: TOML search paths, environment overrides, pydantic checks.

A component ``NAME`` reads the first file that exists of: the explicit ``-f`` path, ``./NAME.toml``,
``~/.config/backend.ai/NAME.toml``, ``/etc/backend.ai/NAME.toml``. Then any environment variable
``BACKENDAI_<NAME>__<SECTION>__<KEY>`` overrides ``[section].key`` (dashes in keys are written as
underscores; values are parsed as TOML scalars when they can be, else kept as strings).
"""

from __future__ import annotations

import argparse
import os
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from .logs import LoggingSection, setup_logging

__all__ = ["ConfigError", "check_tls_files", "config_search_paths", "load_config", "read_config_dict", "server_setup"]

M = TypeVar("M", bound=BaseModel)


class ConfigError(Exception):
    """A config file is missing, unparsable or invalid; the message is one line for the operator."""


def check_tls_files(cert: str, key: str) -> None:
    """A server's ``ssl-cert``/``ssl-key`` pair: both or neither, and existing files (ValueError otherwise)."""
    if bool(cert) != bool(key):
        raise ValueError("ssl-cert and ssl-key go together: give both or neither")
    for name, path in (("ssl-cert", cert), ("ssl-key", key)):
        if path and not os.path.isfile(path):
            raise ValueError(f"{name}: no such file: {path}")


def config_search_paths(name: str) -> list[Path]:
    """The default places a component's TOML file is looked for, in order."""
    return [
        Path.cwd() / f"{name}.toml",
        Path.home() / ".config" / "backend.ai" / f"{name}.toml",
        Path("/etc/backend.ai") / f"{name}.toml",
    ]


def _parse_env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _apply_env(data: dict[str, Any], name: str, environ: Mapping[str, str]) -> None:
    prefix = f"BACKENDAI_{name.upper().replace('-', '_')}__"
    for key, raw in environ.items():
        if not key.startswith(prefix):
            continue
        parts = [p.lower() for p in key[len(prefix) :].split("__") if p]
        if not parts:
            continue
        node = data
        for part in parts[:-1]:
            node = node.setdefault(part.replace("_", "-"), {})
            if not isinstance(node, dict):
                raise ConfigError(f"{key}: [{part}] is not a table in the config")
        node[parts[-1].replace("_", "-")] = _parse_env_value(raw)


def read_config_dict(
    name: str, path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> tuple[dict[str, Any], Path | None]:
    """Read the raw config mapping of component ``name`` and the file it came from (None: defaults)."""
    environ = os.environ if environ is None else environ
    found: Path | None = None
    if path is not None:
        found = Path(path)
        if not found.is_file():
            raise ConfigError(f"config file not found: {found}")
    else:
        found = next((p for p in config_search_paths(name) if p.is_file()), None)
    data: dict[str, Any] = {}
    if found is not None:
        try:
            data = tomllib.loads(found.read_text())
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{found}: invalid TOML: {e}") from None
        except OSError as e:
            raise ConfigError(f"{found}: cannot read: {e.strerror}") from None
    _apply_env(data, name, environ)
    return data, found


def load_config(
    model: type[M],
    name: str,
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> M:
    """Load and validate component ``name``'s config into ``model``, raising :class:`ConfigError`."""
    data, found = read_config_dict(name, path, environ)
    try:
        return model.model_validate(data)
    except ValidationError as e:
        where = str(found) if found else f"{name} config"
        first = e.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{where}: {loc}: {first['msg']}") from None


def server_setup(model: type[M], name: str, prog: str, argv: list[str] | None) -> tuple[M, bool]:
    """The start of a server's ``main``: ``-f NAME.toml`` and ``--debug`` parsed, the config loaded (a bad one
    is one line and exit 2, see :func:`load_config_or_exit`) and logging set up. Returns the config and
    whether ``--debug`` was given. Logging follows the config's ``[logging]`` section (a ``logging`` field of
    type :class:`~ai.backend.common.logs.LoggingSection`) when it has one."""
    parser = argparse.ArgumentParser(prog=f"backend.ai-{prog}")
    parser.add_argument("-f", "--config", help=f"path to {name}.toml")
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    config = load_config_or_exit(model, name, args.config, prog)
    section = getattr(config, "logging", None)
    setup_logging(section if isinstance(section, LoggingSection) else None, debug=args.debug)
    return config, bool(args.debug)


def load_config_or_exit(model: type[M], name: str, path: str | os.PathLike[str] | None, prog: str) -> M:
    """:func:`load_config` for a server's ``main``: a bad config is one line on stderr and exit status 2."""
    try:
        return load_config(model, name, path)
    except ConfigError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        sys.exit(2)
