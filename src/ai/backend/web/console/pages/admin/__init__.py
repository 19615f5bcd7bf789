"""Console pages: administration under ``/admin`` (users, keypairs, projects, domains, resource policies,
resource presets, agents, images and scaling groups), for domain admins and superadmins only.

Every route is ``@page(admin=True)``: anyone else gets the 403 page, forms included. Beyond that the
manager decides: its GraphQL API (``/admin/gql``, called as the logged-in admin) lets superadmins change
everything and domain admins read their domain's users and keypairs and manage its projects; what it
refuses is shown with its message and 4xx status.

Forms are plain HTML forms posted to the console (``read_form`` checks the CSRF token). A change that
works redirects (303) to a page that names it; bad input renders the form again, filled in, with the
reason and a 4xx status, and changes nothing (the console checks what it can before calling the
manager, and each manager mutation is one transaction). Destructive buttons ask for confirmation
(``data-confirm``, handled by ``static/js/admin.js``). A new keypair's secret key is shown once, on the
answer to the form that created it, and never listed.

One module per section (``users``, ``keypairs``, ...); ``common`` has the shared page plumbing and ``forms``
the form-field parsers.
"""

from __future__ import annotations

from aiohttp import web

from . import agents, domains, images, keypairs, overview, policies, presets, projects, scaling_groups, users
from .common import SECTIONS

__all__ = ["SECTIONS", "register"]

#: A user's and a project's page (their ids are UUIDs).
_USER = "/admin/users/{uid:[0-9a-fA-F-]{36}}"
_PROJECT = "/admin/projects/{gid:[0-9a-fA-F-]{36}}"

#: The routes, in registration order (``web.get`` also answers HEAD, as ``add_get`` does).
ROUTES = [
    web.get("/admin", overview.overview),
    web.get("/admin/users", users.users),
    web.post("/admin/users", users.user_create),
    web.get("/admin/users/new", users.user_new),
    web.get(_USER, users.user_detail),
    web.post(_USER, users.user_update),
    web.post(_USER + "/status", users.user_set_status),
    web.post(_USER + "/delete", users.user_delete),
    web.get("/admin/keypairs", keypairs.keypairs),
    web.post("/admin/keypairs", keypairs.keypair_create),
    web.post("/admin/keypairs/{ak}", keypairs.keypair_update),
    web.post("/admin/keypairs/{ak}/delete", keypairs.keypair_delete),
    web.get("/admin/projects", projects.projects),
    web.post("/admin/projects", projects.project_create),
    web.get(_PROJECT, projects.project_detail),
    web.post(_PROJECT, projects.project_update),
    web.post(_PROJECT + "/members", projects.project_members),
    web.post(_PROJECT + "/delete", projects.project_delete),
    web.get("/admin/domains", domains.domains),
    web.post("/admin/domains", domains.domain_create),
    web.get("/admin/domains/{name}", domains.domain_detail),
    web.post("/admin/domains/{name}", domains.domain_update),
    web.post("/admin/domains/{name}/delete", domains.domain_delete),
    web.get("/admin/policies", policies.policies),
    web.post("/admin/policies", policies.policy_create),
    web.get("/admin/policies/{name}", policies.policy_detail),
    web.post("/admin/policies/{name}", policies.policy_update),
    web.post("/admin/policies/{name}/delete", policies.policy_delete),
    web.get("/admin/presets", presets.presets),
    web.post("/admin/presets", presets.preset_create),
    web.get("/admin/presets/{name}", presets.preset_detail),
    web.post("/admin/presets/{name}", presets.preset_update),
    web.post("/admin/presets/{name}/delete", presets.preset_delete),
    web.get("/admin/agents", agents.agents),
    web.get("/admin/images", images.images),
    web.post("/admin/images/alias", images.image_alias),
    web.post("/admin/images/dealias", images.image_dealias),
    web.post("/admin/images/rescan", images.image_rescan),
    web.post("/admin/images/forget", images.image_forget),
    web.get("/admin/scaling-groups", scaling_groups.sgroups),
    web.post("/admin/scaling-groups", scaling_groups.sgroup_create),
    web.get("/admin/scaling-groups/{name}", scaling_groups.sgroup_detail),
    web.post("/admin/scaling-groups/{name}", scaling_groups.sgroup_update),
    web.post("/admin/scaling-groups/{name}/associations", scaling_groups.sgroup_associate),
    web.post("/admin/scaling-groups/{name}/delete", scaling_groups.sgroup_delete),
]


def register(app: web.Application) -> None:
    """Add this area's routes to ``app``."""
    app.router.add_routes(ROUTES)
