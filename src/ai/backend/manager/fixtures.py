"""The documented default fixture: domain/group/scaling group ``default``, a superadmin and a user."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from .models import (
    DomainRow,
    KeyPairResourcePolicyRow,
    KeyPairRow,
    ProjectRow,
    ScalingGroupRow,
    UserRow,
    group_members,
    sgroups_for_domains,
)
from .passwords import hash_password

DEFAULT_GROUP_ID = uuid.UUID("2de2b969-1d04-48a6-af16-0bc8adb3c831")

ADMIN: dict[str, Any] = {
    "email": "admin@lablup.com",
    "username": "admin",
    "password": "wJalrXUt",
    "role": "superadmin",
    "access_key": "AKIAIOSFODNN7EXAMPLE",
    "secret_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "is_admin": True,
}
USER: dict[str, Any] = {
    "email": "user@lablup.com",
    "username": "user",
    "password": "C8qnIo29",
    "role": "user",
    "access_key": "AKIANABBDUSEREXAMPLE",
    "secret_key": "C8qnIo29EZvXkPK_MXcuAakYTy4NYrxwmCEyNPlf",
    "is_admin": False,
}


async def _ensure(db: AsyncSession, model: type[Any], key: Any, **values: Any) -> Any:
    row = await db.get(model, key)
    if row is None:
        row = model(**values)
        db.add(row)
        await db.flush()
    return row


async def populate_defaults(db: AsyncSession) -> None:
    """Insert the default rows that are missing; existing rows are left as they are (idempotent)."""
    await _ensure(db, DomainRow, "default", name="default", description="The default domain")
    await _ensure(
        db, ScalingGroupRow, "default", name="default", description="The default scaling group", scheduler="fifo"
    )
    linked = (
        await db.execute(
            select(sgroups_for_domains).where(
                sgroups_for_domains.c.scaling_group == "default", sgroups_for_domains.c.domain == "default"
            )
        )
    ).first()
    if linked is None:
        await db.execute(sgroups_for_domains.insert().values(scaling_group="default", domain="default"))
    await _ensure(
        db,
        KeyPairResourcePolicyRow,
        "default",
        name="default",
        total_resource_slots={},
        max_concurrent_sessions=30,
        max_containers_per_session=1,
        idle_timeout=1800,
        allowed_vfolder_hosts=["local:volume1"],  # the all-in-one storage proxy "local", volume "volume1"
    )
    await _ensure(
        db,
        ProjectRow,
        DEFAULT_GROUP_ID,
        id=DEFAULT_GROUP_ID,
        name="default",
        domain_name="default",
        description="The default project",
    )
    for spec in (ADMIN, USER):
        user = (await db.execute(select(UserRow).where(UserRow.email == spec["email"]))).scalar_one_or_none()
        if user is None:
            user = UserRow(
                email=spec["email"],
                username=spec["username"],
                password=hash_password(spec["password"]),
                role=spec["role"],
                domain_name="default",
                full_name=spec["username"],
            )
            db.add(user)
            await db.flush()
            await db.execute(group_members.insert().values(group_id=DEFAULT_GROUP_ID, user_id=user.uuid))
        await _ensure(
            db,
            KeyPairRow,
            spec["access_key"],
            access_key=spec["access_key"],
            secret_key=spec["secret_key"],
            user_id=spec["email"],
            user=user.uuid,
            is_admin=spec["is_admin"],
            is_main=True,
            resource_policy="default",
        )
    await db.commit()
