"""Per-user configuration: /user-config/dotfiles and /user-config/bootstrap-script."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
