"""What the sessions pages share: the session queries, a session as the templates show it, why it is where it
is, the owner parameter of an admin's REST calls, finding the session of an address, and query parameters."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from ...base import ConsoleError, Login, api

RUNNING = "PENDING,SCHEDULED,PREPARING,PULLING,RUNNING,RESTARTING,RUNNING_DEGRADED,TERMINATING"
FINISHED = "TERMINATED,CANCELLED,ERROR"
TABS = {"running": (RUNNING, FINISHED), "finished": (FINISHED, RUNNING)}
ENDED = frozenset(FINISHED.split(","))
#: What the session name may be (the manager's rule, checked here too so the form can say so at once).
NAME_RE = re.compile(r"^[A-Za-z0-9](?:[\w.-]{2,62})[A-Za-z0-9]$")


SESSION_FIELDS = """
  id name type image status status_info status_data status_changed created_at terminated_at starts_at
  occupied_slots requested_slots access_key user_email group_name scaling_group
"""
#: What a row of the list shows (fewer fields: the page of 50 is resolved field by field).
ROW_FIELDS = """
  id name image status status_info status_data created_at occupied_slots requested_slots access_key user_email
"""
LIST_QUERY = f"""
query($limit: Int!, $offset: Int!, $status: String!, $other: String!, $ak: String) {{
  page: compute_session_list(limit: $limit, offset: $offset, status: $status, access_key: $ak) {{
    total_count items {{ {ROW_FIELDS} }}
  }}
  other: compute_session_list(limit: 1, offset: 0, status: $other, access_key: $ak) {{ total_count }}
}}
"""
ROW_QUERY = f"query($id: UUID!) {{ compute_session(id: $id) {{ {ROW_FIELDS} }} }}"
DETAIL_QUERY = f"""
query($id: UUID!) {{
  compute_session(id: $id) {{
    {SESSION_FIELDS} startup_command result cluster_mode cluster_size service_ports num_queries
    cpu_used cpu_using mem_cur_bytes mem_max_bytes net_rx_bytes net_tx_bytes io_read_bytes io_write_bytes
    io_cur_scratch_size io_max_scratch_size
    containers {{
      id role idx hostname status status_info created_at terminated_at occupied_slots agent container_id
      exit_code
    }}
  }}
}}
"""


def gql_json(value: Any) -> Any:
    """A GraphQL ``JSONString`` field decoded (None or an empty string: None)."""
    if isinstance(value, str):
        if not value:
            return None
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value


def session_uuid(ref: str) -> str:
    """``ref`` as a session id; anything else is the 404 page (the console links sessions by id)."""
    try:
        return str(uuid.UUID(ref))
    except ValueError:
        raise ConsoleError(404, "Session not found", f"There is no session {ref!r}.") from None


def status_reason(status: str, info: str | None, data: Any) -> str:
    """Why the session is where it is, in words (empty when nothing needs saying)."""
    info = (info or "").strip()
    data = data if isinstance(data, dict) else {}
    if status == "PENDING":
        sched = data.get("scheduler") if isinstance(data.get("scheduler"), dict) else {}
        why = info or "Waiting for the scheduler to place it."
        retries = sched.get("retries") if sched else None
        if retries:
            why += f" (tried {retries} time{'s' if retries != 1 else ''})"
        return why
    if status == "ERROR":
        error = data.get("error")
        detail = error.get("message") or error.get("detail") if isinstance(error, dict) else error
        if detail and info:
            return f"{info}: {detail}"
        return str(detail or info or "The session failed to start.")
    return info


def session_view(item: dict[str, Any]) -> dict[str, Any]:
    """A GraphQL session as the templates show it."""
    occupied = gql_json(item.get("occupied_slots")) or {}
    requested = gql_json(item.get("requested_slots")) or {}
    status = str(item.get("status") or "")
    return {
        **item,
        "status": status,
        "reason": status_reason(status, item.get("status_info"), gql_json(item.get("status_data"))),
        "slots": occupied or requested,
        "slots_requested": not occupied and bool(requested),
        "ended": status in ENDED,
    }


def owner_params(login: Login, session: dict[str, Any]) -> dict[str, str]:
    """``owner_access_key`` for an admin acting on another user's session (REST calls find sessions per owner)."""
    ak = session.get("access_key")
    return {"owner_access_key": str(ak)} if ak and ak != login.access_key else {}


def int_param(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    """The whole-number query parameter ``name`` within ``lo``..``hi`` (``default`` when absent); else a 400."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConsoleError(400, "Invalid address", f"'{name}' must be a whole number, got {raw!r}.") from None
    if not lo <= value <= hi:
        raise ConsoleError(400, "Invalid address", f"'{name}' must be between {lo} and {hi}, got {value}.")
    return value


def safe_back(value: str, default: str) -> str:
    """A local path to go back to after a form (never another site)."""
    if not value.startswith("/") or value.startswith("//") or "\\" in value:
        return default
    parts = urlsplit(value)
    return default if parts.scheme or parts.netloc else value


async def load_session(request: web.Request, login: Login, ref: str, query: str = ROW_QUERY) -> dict[str, Any]:
    """The session ``ref`` as the caller may see it; the 404 page when it is not there or not theirs."""
    sid = session_uuid(ref)
    data = await api(request, login).graphql(query, {"id": sid})
    found = data.get("compute_session")
    if not isinstance(found, dict):
        raise ConsoleError(404, "Session not found", f"Session {sid} does not exist or is not yours.")
    return found
