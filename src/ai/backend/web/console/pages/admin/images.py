"""Admin pages ``/admin/images``: kernel images, their aliases, rescans and forgetting images."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from ...base import Login, page, read_form
from .common import Refusal, gql, mutate, redirect_done, refusal, render_page
from .forms import form_text, form_values


@page(admin=True)
async def images(request: web.Request, login: Login) -> web.StreamResponse:
    """``GET /admin/images``: kernel images with their minimum resources and aliases."""
    return await _images_page(request, login)


async def _images_page(
    request: web.Request, login: Login, form: Mapping[str, str] | None = None, *, refused: Refusal | None = None
) -> web.Response:
    data = await gql(
        request,
        login,
        """query { images {
          name humanized_name tag registry reference architecture aliases installed size_bytes
          supported_accelerators resource_limits { key min max }
        } }""",
    )
    rows = sorted(data["images"], key=lambda i: (i["name"], i["tag"], i["architecture"]))
    return render_page(
        request,
        login,
        "admin/images.html",
        "images",
        refused=refused,
        rows=rows,
        form=form or {},
        references=sorted({i["reference"] for i in rows}),
    )


@page(admin=True)
async def image_alias(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /admin/images/alias``: make an alias point to an image."""
    form = await read_form(request, login)
    values = form_values(form)
    doc = "mutation($alias: String!, $target: String!) { alias_image(alias: $alias, target: $target) { ok msg } }"
    with refusal() as refused:
        alias = form_text(values, "alias", "Alias", required=True, max_len=256)
        target = form_text(values, "target", "Image", required=True, max_len=512)
        await mutate(request, login, doc, {"alias": alias, "target": target}, "alias_image")
    if refused:
        return await _images_page(request, login, values, refused=refused)
    redirect_done("/admin/images", "aliased", f"{alias} → {target}")


@page(admin=True)
async def image_dealias(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /admin/images/dealias``: remove an alias."""
    form = await read_form(request, login)
    doc = "mutation($alias: String!) { dealias_image(alias: $alias) { ok msg } }"
    with refusal() as refused:
        alias = form_text(form, "alias", "Alias", required=True, max_len=256)
        await mutate(request, login, doc, {"alias": alias}, "dealias_image")
    if refused:
        return await _images_page(request, login, refused=refused)
    redirect_done("/admin/images", "dealiased", alias)


@page(admin=True)
async def image_rescan(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /admin/images/rescan``: re-register the images the agents report (a background task)."""
    await read_form(request, login)
    with refusal() as refused:
        payload = await mutate(request, login, "mutation { rescan_images { ok msg task_id } }", {}, "rescan_images")
    if refused:
        return await _images_page(request, login, refused=refused)
    redirect_done("/admin/images", "rescan", f"task {payload.get('task_id') or '?'}")


@page(admin=True)
async def image_forget(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /admin/images/forget``: forget an image no alive agent has any more."""
    form = await read_form(request, login)
    doc = "mutation($ref: String!) { forget_image(reference: $ref) { ok msg } }"
    with refusal() as refused:
        reference = form_text(form, "reference", "Image", required=True, max_len=512)
        await mutate(request, login, doc, {"ref": reference}, "forget_image")
    if refused:
        return await _images_page(request, login, refused=refused)
    redirect_done("/admin/images", "forgotten", reference)
