"""The session's SSH private key as a download: fetched raw from the manager's file download (a tar archive,
or a multipart answer of them) and the one file taken out of it."""

from __future__ import annotations

import email.parser
import email.policy
import io
import json
import tarfile

from aiohttp import web

from ...base import ConsoleError, Login, api, page
from .common import load_session, owner_params

#: The session's private SSH key, relative to /home/work (ADR 0012).
SSH_KEY_FILE = "id_container"
SSH_KEY_MAX = 64 * 1024


def _file_from_download(content_type: str, body: bytes, name: str) -> bytes | None:
    """The file ``name`` out of the manager's download answer (multipart of tar archives, or one tar)."""
    archives: list[bytes] = []
    if content_type.startswith("multipart/"):
        msg = email.parser.BytesParser(policy=email.policy.default).parsebytes(
            b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
        )
        for part in msg.iter_parts():
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                archives.append(payload)
    else:
        archives.append(body)
    for archive in archives:
        try:
            with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
                for member in tar.getmembers():
                    if member.isfile() and member.name.rsplit("/", 1)[-1] == name and member.size <= SSH_KEY_MAX:
                        extracted = tar.extractfile(member)
                        if extracted is not None:
                            return extracted.read()
        except tarfile.TarError:
            continue
    return None


@page()
async def ssh_key(request: web.Request, login: Login) -> web.StreamResponse:
    """``GET /sessions/{id}/ssh-key``: the session's SSH private key as a download (its owner's key)."""
    s = await load_session(request, login, request.match_info["id"])
    if s.get("status") != "RUNNING":
        raise ConsoleError(409, "Session not running", "The SSH key can be downloaded while the session runs.")
    # Kept as bytes: the answer is a tar archive (or a multipart answer of them), not JSON.
    status, content_type, body = await api(request, login).call_raw(
        "GET", f"/session/{s['id']}/download", params={"files": SSH_KEY_FILE, **owner_params(login, s)}
    )
    if status >= 400:
        try:
            doc = json.loads(body)
        except ValueError:
            doc = {}
        doc = doc if isinstance(doc, dict) else {}
        code = status if status < 500 else 502
        raise ConsoleError(code, str(doc.get("title") or "Download refused"), str(doc.get("detail") or ""))
    key = _file_from_download(content_type, body, SSH_KEY_FILE)
    if key is None:
        raise ConsoleError(404, "No SSH key", "The session has no SSH key (its image may not offer sshd).")
    return web.Response(
        body=key,
        content_type="application/octet-stream",
        headers={
            "Content-Disposition": f'attachment; filename="{SSH_KEY_FILE}"',
            "Cache-Control": "no-store",
        },
    )
