"""Admin pages ``/admin/presets``: resource presets (list, create, edit, delete)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from ai.backend.common.types import BinarySize, SlotTypeError

from ...base import ConsoleError, Login, page, read_form
from .common import Refusal, gql, load_one, mutate, redirect_done, refusal, render_page
from .forms import form_slots, form_slug, form_text, form_values, json_field, slot_fields, slot_types


def _preset_row(p: dict[str, Any]) -> dict[str, Any]:
    return {**p, "resource_slots": json_field(p.get("resource_slots"))}


@page(admin=True)
async def presets(request: web.Request, login: Login) -> web.StreamResponse:
    """``GET /admin/presets``: resource presets, and the create form."""
    return await _presets_page(request, login)


async def _presets_page(
    request: web.Request, login: Login, form: Mapping[str, str] | None = None, *, refused: Refusal | None = None
) -> web.Response:
    data = await gql(request, login, "query { resource_presets { name resource_slots shared_memory } }")
    types = await slot_types(request, login)
    return render_page(
        request,
        login,
        "admin/presets.html",
        "presets",
        refused=refused,
        rows=[_preset_row(p) for p in data["resource_presets"]],
        form=form or {},
        slot_fields=slot_fields(types, {}, form),
    )


def _shared_memory(values: Mapping[str, str]) -> str:
    raw = form_text(values, "shared_memory", "Shared memory", max_len=32)
    if raw:
        try:
            BinarySize.parse(raw)
        except SlotTypeError:
            raise ConsoleError(400, "Invalid form", f"Shared memory: {raw!r} is not a size (e.g. 64m, 1g).") from None
    return raw


def _preset_slots(values: Mapping[str, str], types: Mapping[str, str]) -> dict[str, str]:
    slots = form_slots(values, types, allow_infinite=False)
    if not slots:
        raise ConsoleError(400, "Invalid form", "A preset needs at least one resource amount (e.g. cpu 1, mem 1g).")
    return slots


@page(admin=True)
async def preset_create(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /admin/presets``: a new resource preset."""
    form = await read_form(request, login)
    values = form_values(form)
    doc = (
        "mutation($name: String!, $props: CreateResourcePresetInput!) "
        "{ create_resource_preset(name: $name, props: $props) { ok msg } }"
    )
    with refusal() as refused:
        name = form_slug(values, "name", "Preset name", 256)
        props = {
            "resource_slots": _preset_slots(values, await slot_types(request, login)),
            "shared_memory": _shared_memory(values) or None,
        }
        await mutate(request, login, doc, {"name": name, "props": props}, "create_resource_preset")
    if refused:
        return await _presets_page(request, login, values, refused=refused)
    redirect_done("/admin/presets", "created", f"Preset {name}")


async def _load_preset(request: web.Request, login: Login) -> dict[str, Any]:
    name = request.match_info["name"]
    doc = "query($name: String!) { resource_preset(name: $name) { name resource_slots shared_memory } }"
    missing = ("No such preset", f"There is no resource preset named {name!r}.")
    return _preset_row(await load_one(request, login, doc, {"name": name}, "resource_preset", missing))


@page(admin=True)
async def preset_detail(request: web.Request, login: Login) -> web.StreamResponse:
    """``GET /admin/presets/{name}``: a preset's edit form."""
    return await _preset_page(request, login, await _load_preset(request, login))


async def _preset_page(
    request: web.Request,
    login: Login,
    preset: dict[str, Any],
    form: Mapping[str, str] | None = None,
    *,
    refused: Refusal | None = None,
) -> web.Response:
    slots = slot_fields(await slot_types(request, login), preset["resource_slots"], form)
    if form is None:
        shm = preset["shared_memory"]
        form = {"shared_memory": "" if shm is None else str(BinarySize(int(shm)))}
    return render_page(
        request,
        login,
        "admin/preset_detail.html",
        "presets",
        refused=refused,
        preset=preset,
        form=form,
        slot_fields=slots,
    )


@page(admin=True)
async def preset_update(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /admin/presets/{name}``: change a preset's amounts or shared memory."""
    form = await read_form(request, login)
    preset = await _load_preset(request, login)
    values = form_values(form)
    doc = (
        "mutation($name: String!, $props: ModifyResourcePresetInput!) "
        "{ modify_resource_preset(name: $name, props: $props) { ok msg } }"
    )
    with refusal() as refused:
        props = {
            "resource_slots": _preset_slots(values, await slot_types(request, login)),
            "shared_memory": _shared_memory(values),  # "" clears it
        }
        await mutate(request, login, doc, {"name": preset["name"], "props": props}, "modify_resource_preset")
    if refused:
        return await _preset_page(request, login, preset, values, refused=refused)
    redirect_done("/admin/presets", "updated", f"Preset {preset['name']}")


@page(admin=True)
async def preset_delete(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /admin/presets/{name}/delete``: delete a preset."""
    await read_form(request, login)
    preset = await _load_preset(request, login)
    doc = "mutation($name: String!) { delete_resource_preset(name: $name) { ok msg } }"
    with refusal() as refused:
        await mutate(request, login, doc, {"name": preset["name"]}, "delete_resource_preset")
    if refused:
        return await _presets_page(request, login, refused=refused)
    redirect_done("/admin/presets", "deleted", f"Preset {preset['name']}")
