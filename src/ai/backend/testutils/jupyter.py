"""A minimal Jupyter Server client for tests and benchmarks: start a kernel and run one cell.

It speaks the documented REST API (``/api``, ``/api/kernels``) and the kernel's ``channels``
WebSocket (Jupyter messaging protocol 5.x, JSON frames), so it works the same directly against the
app's port, through ``backend.ai app`` or through the browser-facing app proxy (``cookies`` then
carry the permit).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx
from websockets.sync.client import connect as ws_connect


class JupyterError(RuntimeError):
    """The server or the kernel did not answer as expected."""


def _headers(client: httpx.Client) -> dict[str, str]:
    xsrf = client.cookies.get("_xsrf")
    return {"X-XSRFToken": xsrf} if xsrf else {}


def wait_api(client: httpx.Client, base: str, timeout: float = 120.0) -> dict[str, Any]:
    """``GET {base}/api`` until it answers 200 (the server's version document)."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            r = client.get(f"{base}/api", timeout=10)
            if r.status_code == 200:
                doc: dict[str, Any] = r.json()
                return doc
            last = f"{r.status_code} {r.text[:200]}"
        except httpx.HTTPError as e:
            last = repr(e)
        time.sleep(0.3)
    raise JupyterError(f"Jupyter did not answer /api: {last}")


def run_cell(client: httpx.Client, base: str, code: str, timeout: float = 60.0) -> str:
    """Start a kernel, execute ``code`` and return the ``text/plain`` of its result (or its stdout)."""
    client.get(f"{base}/tree", timeout=30)  # sets the _xsrf cookie that POSTs need
    r = client.post(f"{base}/api/kernels", json={"name": "python3"}, headers=_headers(client), timeout=60)
    if r.status_code not in (200, 201):
        raise JupyterError(f"POST /api/kernels: {r.status_code} {r.text[:300]}")
    kernel_id = r.json()["id"]
    try:
        return _execute(client, base, kernel_id, code, timeout)
    finally:
        client.delete(f"{base}/api/kernels/{kernel_id}", headers=_headers(client), timeout=30)


def _execute(client: httpx.Client, base: str, kernel_id: str, code: str, timeout: float) -> str:
    ws_base = "ws" + base[len("http") :]
    cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
    headers = {"Cookie": cookie} if cookie else {}
    msg_id = uuid.uuid4().hex
    request = {
        "header": {
            "msg_id": msg_id,
            "username": "test",
            "session": uuid.uuid4().hex,
            "msg_type": "execute_request",
            "version": "5.3",
            "date": "",
        },
        "parent_header": {},
        "metadata": {},
        "content": {"code": code, "silent": False, "store_history": False, "allow_stdin": False},
        "buffers": [],
        "channel": "shell",
    }
    out: list[str] = []
    deadline = time.monotonic() + timeout
    with ws_connect(f"{ws_base}/api/kernels/{kernel_id}/channels", additional_headers=headers, open_timeout=30) as ws:
        ws.send(json.dumps(request))
        while time.monotonic() < deadline:
            raw = ws.recv(timeout=max(deadline - time.monotonic(), 0.1))
            if isinstance(raw, bytes):
                continue
            msg = json.loads(raw)
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = msg.get("msg_type") or msg.get("header", {}).get("msg_type")
            content = msg.get("content", {})
            if kind == "execute_result":
                return str(content["data"]["text/plain"])
            if kind == "stream":
                out.append(content.get("text", ""))
            if kind == "error":
                raise JupyterError(f"the cell failed: {content.get('ename')}: {content.get('evalue')}")
            if kind == "status" and content.get("execution_state") == "idle" and out:
                return "".join(out)
    raise JupyterError("no result from the kernel in time")
