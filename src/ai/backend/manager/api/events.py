"""SSE event streams: /events/session and /events/background-task."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
