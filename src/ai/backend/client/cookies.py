"""The login cookies of session mode (``BACKEND_ENDPOINT_TYPE=session``), kept between commands.

``backend.ai login`` stores the webserver's cookies in ``$XDG_CONFIG_HOME/backend.ai/session-cookies.json``
(``~/.config/backend.ai/...`` by default; readable by the owner only), one entry per endpoint so that a
cookie is never sent to another server; every session-mode request loads them, ``logout`` removes them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["clear_cookies", "cookie_file", "load_cookies", "save_cookies"]


def cookie_file() -> Path:
    """Where the login cookies are kept."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "backend.ai" / "session-cookies.json"


def _key(endpoint: str) -> str:
    return endpoint.rstrip("/")


def _read() -> dict[str, dict[str, str]]:
    try:
        data = json.loads(cookie_file().read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): {str(n): str(v) for n, v in c.items()} for k, c in data.items() if isinstance(c, dict)}


def _write(data: dict[str, dict[str, str]]) -> None:
    path = cookie_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    # Created owner-only before anything is written: the cookie is as good as the password while it lasts.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def load_cookies(endpoint: str) -> dict[str, str]:
    """The cookies saved for ``endpoint`` (empty if none)."""
    return _read().get(_key(endpoint), {})


def save_cookies(endpoint: str, cookies: dict[str, str]) -> None:
    """Replace the cookies saved for ``endpoint``."""
    data = _read()
    data[_key(endpoint)] = dict(cookies)
    _write(data)


def clear_cookies(endpoint: str) -> None:
    """Forget the cookies of ``endpoint`` (the file goes when no endpoint is left)."""
    data = _read()
    if data.pop(_key(endpoint), None) is None:
        return
    if data:
        _write(data)
    else:
        cookie_file().unlink(missing_ok=True)
