"""Session templates: ``/template/session`` CRUD and ``POST /session/_/create-from-template``.

Who sees a template: its owner; a superadmin sees every template and a domain admin those of the
domain (``all=true`` lists them; ``owner_access_key`` acts for another user). Everybody else gets a 404,
as if it did not exist. Deleting is soft (``is_active`` false): the row stays for the record, but the
template can no longer be read, updated, listed or used.
"""

from __future__ import annotations

import uuid
from typing import Any

import yaml
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ai.backend.common.problems import Forbidden, ImageNotFound, InvalidAPIParameters, NotFound

from ..auth import AuthContext
from ..images import resolve_image
from ..models import KeyPairRow, ProjectRow, SessionTemplateRow, UserRow, group_members
from ..models.base import utcnow
from ..registry import SessionRegistry
from ..sessions.params import parse_bool_value, parse_create_params
from ..sessions.templates import (
    TaskTemplate,
    add_git_clone,
    check_template,
    creation_body,
    load_payload,
    merge_overrides,
)
from .bodies import AliasChoices, DocumentedRoute, Field, LaterBool, LaterStr, RequestModel, body_of
from .deps import auth_required, json_body, registry
from .session import create_and_respond

router = APIRouter(route_class=DocumentedRoute)

_OWNER = AliasChoices("owner_access_key", "ownerAccessKey")


class TemplateOwnerParams(RequestModel):
    """Admins may act for another user's keypair."""

    null_is_absent = False  # the handlers check each value themselves, as they always did
    owner_access_key: LaterStr = Field(None, validation_alias=_OWNER)


class TemplateBody(TemplateOwnerParams):
    """A template document (``kind: taskTemplate``, or the ``session_templates`` wrapper of several)."""

    payload: LaterStr = Field(None, description="The template as a YAML or JSON string.")
    domain: LaterStr = Field(None, validation_alias=AliasChoices("domain", "domainName", "domain_name"))
    group: LaterStr = Field(None, validation_alias=AliasChoices("group", "groupName", "group_name"))


class TemplateListParams(RequestModel):
    """``all=true``: every template in an admin's reach; ``group_id``: one project's."""

    null_is_absent = False

    all: LaterBool = None
    group_id: LaterStr = Field(None, validation_alias=AliasChoices("group_id", "groupId"))


class TemplateGetParams(TemplateOwnerParams):
    format: LaterStr = Field(None, json_schema_extra={"enum": ["json", "yaml"]})


class FromTemplateBody(TemplateOwnerParams):
    """The template to use; any field of a ``POST /session`` body given here replaces the template's value."""

    model_config = {"extra": "allow", "populate_by_name": True}
    template_id: LaterStr = Field(None, validation_alias=AliasChoices("template_id", "templateId"))


def _given(model: RequestModel) -> dict[str, Any]:
    """The fields the client gave, under their canonical names (what the helpers below read)."""
    return model.model_dump(exclude_unset=True)


class TemplateNotFound(NotFound):
    slug, title = "task-template-not-found", "No such session template"


def _pick(body: dict[str, Any], *names: str) -> Any:
    for n in names:
        if body.get(n) is not None:
            return body[n]
    return None


def _flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if value == "":  # a bare `?all=` in a query string
        return False
    if isinstance(value, int) and not isinstance(value, bool):  # numbers were never accepted here
        raise InvalidAPIParameters(f"'{name}' must be a boolean, got {value!r}.")
    return parse_bool_value(name, value)


def _text(body: dict[str, Any], name: str, *aliases: str) -> str | None:
    value = _pick(body, name, *aliases)
    if value is not None and not isinstance(value, str):
        raise InvalidAPIParameters(f"'{name}' must be a string.")
    return value


async def _acting_user(reg: SessionRegistry, ctx: AuthContext, body: dict[str, Any]) -> UserRow:
    """The user the request acts for: the caller, or (admins) the owner of ``owner_access_key``."""
    owner_ak = await reg.resolve_owner(ctx, _text(body, "owner_access_key", "ownerAccessKey"))
    async with reg.db() as db:
        q = select(UserRow).join(KeyPairRow, KeyPairRow.user == UserRow.uuid).where(KeyPairRow.access_key == owner_ak)
        user: UserRow = (await db.execute(q)).scalar_one()
    return user


async def _check_images(db: AsyncSession, templates: list[TaskTemplate]) -> None:
    for tpl in templates:
        try:
            await resolve_image(db, tpl.image)
        except ImageNotFound as e:
            raise InvalidAPIParameters(f"Invalid session template: spec.kernel.image: {e.detail}") from None


def _validated(payload: Any) -> tuple[list[tuple[TaskTemplate, dict[str, Any]]], bool]:
    """Pairs of (validated template, stored document) for every template in ``payload``, and whether the
    payload was the ``session_templates`` wrapper."""
    docs, wrapped = load_payload(payload)
    return [(check_template(doc, name), doc) for doc, name in docs], wrapped


def _visible(ctx: AuthContext, acting: UserRow, row: SessionTemplateRow, *, acting_given: bool) -> bool:
    if not row.is_active or row.type != "task":
        return False
    if row.user_uuid == acting.uuid:
        return True
    if acting_given:
        return False  # acting for a user: only that user's templates
    return ctx.is_superadmin or (ctx.is_admin and row.domain_name == ctx.domain_name)


async def _find(reg: SessionRegistry, ctx: AuthContext, ref: str, body: dict[str, Any]) -> SessionTemplateRow:
    acting = await _acting_user(reg, ctx, body)
    acting_given = _pick(body, "owner_access_key", "ownerAccessKey") not in (None, ctx.access_key)
    try:
        tid = uuid.UUID(ref)
    except ValueError:
        raise TemplateNotFound(f"Session template {ref!r} does not exist or is not yours.") from None
    async with reg.db() as db:
        row = await db.get(SessionTemplateRow, tid)
    if row is None or not _visible(ctx, acting, row, acting_given=acting_given):
        raise TemplateNotFound(f"Session template {ref!r} does not exist or is not yours.")
    return row


@router.post("/template/session")
async def create(
    request: Request,
    ctx: AuthContext = Depends(auth_required),
    reg: SessionRegistry = Depends(registry),
    params: TemplateBody = Depends(body_of(TemplateBody)),
) -> list[dict[str, str]] | dict[str, str]:
    """Store one or more task templates; answers ``{"id", "user"}`` for one template document (what the
    22.03 SDK reads) and ``[{"id", "user"}, ...]`` for the ``session_templates`` wrapper."""
    body = _given(params)
    if "payload" not in body:
        raise InvalidAPIParameters("'payload' (the template as a YAML or JSON string) is required.")
    checked, wrapped = _validated(body["payload"])
    owner = await _acting_user(reg, ctx, body)
    domain = _text(body, "domain", "domainName", "domain_name") or owner.domain_name
    group_name = _text(body, "group", "groupName", "group_name") or "default"
    if domain != owner.domain_name:
        raise InvalidAPIParameters(f"The template owner does not belong to domain {domain!r}.")
    async with reg.db() as db:
        q = select(ProjectRow).where(ProjectRow.name == group_name, ProjectRow.domain_name == domain)
        if owner.role not in ("superadmin", "admin"):  # admins may file templates under any project
            q = q.join(group_members, group_members.c.group_id == ProjectRow.id).where(
                group_members.c.user_id == owner.uuid
            )
        group = (await db.execute(q)).scalar_one_or_none()
        if group is None:
            raise InvalidAPIParameters(f"No project (group) {group_name!r} in domain {domain!r} for the owner.")
        if not group.is_active:
            raise Forbidden(f"The project {group_name!r} is inactive.")
        await _check_images(db, [tpl for tpl, _ in checked])
        now = utcnow()
        out = []
        for tpl, doc in checked:
            row = SessionTemplateRow(
                id=uuid.uuid4(),
                name=tpl.name,
                type="task",
                template=doc,
                is_active=True,
                domain_name=domain,
                group_id=group.id,
                user_uuid=owner.uuid,
                created_at=now,
                modified_at=now,
            )
            db.add(row)
            out.append({"id": str(row.id), "user": str(owner.uuid)})
        await db.commit()
    return out if wrapped else out[0]


@router.get("/template/session")
async def list_templates(
    request: Request,
    ctx: AuthContext = Depends(auth_required),
    reg: SessionRegistry = Depends(registry),
    params: TemplateListParams = Depends(body_of(TemplateListParams)),
) -> list[dict[str, Any]]:
    """The caller's templates; with ``all=true`` an admin gets every template in reach."""
    body = _given(params)
    list_all = _flag(body, "all")
    group_id = _text(body, "group_id", "groupId")
    q = (
        select(SessionTemplateRow, UserRow.email, ProjectRow.name)
        .join(UserRow, UserRow.uuid == SessionTemplateRow.user_uuid)
        .join(ProjectRow, ProjectRow.id == SessionTemplateRow.group_id, isouter=True)
        .where(SessionTemplateRow.is_active.is_(True), SessionTemplateRow.type == "task")
        .order_by(SessionTemplateRow.created_at)
    )
    if list_all and ctx.is_admin:
        if not ctx.is_superadmin:
            q = q.where(SessionTemplateRow.domain_name == ctx.domain_name)
    else:
        q = q.where(SessionTemplateRow.user_uuid == ctx.user_uuid)
    if group_id:
        try:
            q = q.where(SessionTemplateRow.group_id == uuid.UUID(group_id))
        except ValueError:
            raise InvalidAPIParameters(f"'group_id' must be a UUID, got {group_id!r}.") from None
    async with reg.db() as db:
        rows = (await db.execute(q)).all()
    return [
        {
            "name": row.name,
            "id": str(row.id),
            "created_at": row.created_at.isoformat(),
            "modified_at": row.modified_at.isoformat(),
            "is_owner": row.user_uuid == ctx.user_uuid,
            "user": str(row.user_uuid),
            "group": str(row.group_id) if row.group_id else None,
            "user_email": email,
            "group_name": gname,
            "domain_name": row.domain_name,
            "type": row.type,
            "template": row.template,
        }
        for row, email, gname in rows
    ]


@router.get("/template/session/{template_id}", response_model=None)
async def get(
    template_id: str,
    request: Request,
    ctx: AuthContext = Depends(auth_required),
    reg: SessionRegistry = Depends(registry),
    params: TemplateGetParams = Depends(body_of(TemplateGetParams)),
) -> Response | dict[str, Any]:
    """The template: ``format=yaml`` answers the document as YAML text; ``format=json`` (the default)
    answers ``{"template", "name", "user_uuid", "group_id", "domain_name"}`` as upstream does."""
    body = _given(params)
    fmt = body.get("format") or "json"
    if fmt not in ("yaml", "json"):
        raise InvalidAPIParameters(f"'format' must be yaml or json, got {fmt!r}.")
    row = await _find(reg, ctx, template_id, body)
    if fmt == "yaml":
        text = yaml.safe_dump(row.template, sort_keys=False, allow_unicode=True)
        return Response(text, media_type="text/yaml; charset=utf-8")
    return {
        "template": row.template,
        "name": row.name,
        "user_uuid": str(row.user_uuid),
        "group_id": str(row.group_id) if row.group_id else None,
        "domain_name": row.domain_name,
    }


@router.put("/template/session/{template_id}")
async def put(
    template_id: str,
    request: Request,
    ctx: AuthContext = Depends(auth_required),
    reg: SessionRegistry = Depends(registry),
    params: TemplateBody = Depends(body_of(TemplateBody)),
) -> dict[str, Any]:
    """Replace the template document (validated like a new one)."""
    body = _given(params)
    if "payload" not in body:
        raise InvalidAPIParameters("'payload' (the template as a YAML or JSON string) is required.")
    checked, _ = _validated(body["payload"])
    if len(checked) != 1:
        raise InvalidAPIParameters("An update takes exactly one template.")
    row = await _find(reg, ctx, template_id, body)
    tpl, doc = checked[0]
    async with reg.db() as db:
        await _check_images(db, [tpl])
        fresh = await db.get(SessionTemplateRow, row.id)
        assert fresh is not None
        fresh.name = tpl.name
        fresh.template = doc
        fresh.modified_at = utcnow()
        await db.commit()
    return {"success": True}


@router.delete("/template/session/{template_id}")
async def delete(
    template_id: str,
    request: Request,
    ctx: AuthContext = Depends(auth_required),
    reg: SessionRegistry = Depends(registry),
    params: TemplateOwnerParams = Depends(body_of(TemplateOwnerParams)),
) -> dict[str, Any]:
    """Soft-delete the template (it disappears from every read and cannot be used any more)."""
    body = _given(params)
    row = await _find(reg, ctx, template_id, body)
    async with reg.db() as db:
        fresh = await db.get(SessionTemplateRow, row.id)
        assert fresh is not None
        fresh.is_active = False
        fresh.modified_at = utcnow()
        await db.commit()
    return {"success": True}


@router.post("/session/_/create-from-template")
async def create_from_template(
    request: Request,
    ctx: AuthContext = Depends(auth_required),
    reg: SessionRegistry = Depends(registry),
    params: FromTemplateBody = Depends(body_of(FromTemplateBody)),
) -> JSONResponse:
    """Create a session from a template; every parameter given in the body replaces the template's value
    (``config.environ``, ``config.mounts`` and ``config.resources`` whole, not merged). Always 201."""
    body = await json_body(request)  # every key of it overrides the template (merge_overrides)
    ref = _pick(body, "template_id", "templateId")
    if ref is None:
        raise InvalidAPIParameters("'template_id' is required.")
    row = await _find(reg, ctx, str(ref), body)
    tpl = check_template(row.template, row.name)
    async with reg.db() as db:
        group = await db.get(ProjectRow, row.group_id) if row.group_id is not None else None
    base = creation_body(tpl, domain=row.domain_name, group=group.name if group is not None else None)
    merged = merge_overrides(base, body)
    add_git_clone(merged, tpl.git)
    return await create_and_respond(reg, ctx, parse_create_params(merged), always_201=True)
