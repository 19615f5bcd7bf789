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

_UUID = "{%s:[0-9a-fA-F-]{36}}"


def register(app: web.Application) -> None:
    """Add this area's routes to ``app``."""
    r = app.router
    r.add_get("/admin", overview.overview)
    r.add_get("/admin/users", users.users)
    r.add_post("/admin/users", users.user_create)
    r.add_get("/admin/users/new", users.user_new)
    r.add_get("/admin/users/" + _UUID % "uid", users.user_detail)
    r.add_post("/admin/users/" + _UUID % "uid", users.user_update)
    r.add_post("/admin/users/" + _UUID % "uid" + "/status", users.user_set_status)
    r.add_post("/admin/users/" + _UUID % "uid" + "/delete", users.user_delete)
    r.add_get("/admin/keypairs", keypairs.keypairs)
    r.add_post("/admin/keypairs", keypairs.keypair_create)
    r.add_post("/admin/keypairs/{ak}", keypairs.keypair_update)
    r.add_post("/admin/keypairs/{ak}/delete", keypairs.keypair_delete)
    r.add_get("/admin/projects", projects.projects)
    r.add_post("/admin/projects", projects.project_create)
    r.add_get("/admin/projects/" + _UUID % "gid", projects.project_detail)
    r.add_post("/admin/projects/" + _UUID % "gid", projects.project_update)
    r.add_post("/admin/projects/" + _UUID % "gid" + "/members", projects.project_members)
    r.add_post("/admin/projects/" + _UUID % "gid" + "/delete", projects.project_delete)
    r.add_get("/admin/domains", domains.domains)
    r.add_post("/admin/domains", domains.domain_create)
    r.add_get("/admin/domains/{name}", domains.domain_detail)
    r.add_post("/admin/domains/{name}", domains.domain_update)
    r.add_post("/admin/domains/{name}/delete", domains.domain_delete)
    r.add_get("/admin/policies", policies.policies)
    r.add_post("/admin/policies", policies.policy_create)
    r.add_get("/admin/policies/{name}", policies.policy_detail)
    r.add_post("/admin/policies/{name}", policies.policy_update)
    r.add_post("/admin/policies/{name}/delete", policies.policy_delete)
    r.add_get("/admin/presets", presets.presets)
    r.add_post("/admin/presets", presets.preset_create)
    r.add_get("/admin/presets/{name}", presets.preset_detail)
    r.add_post("/admin/presets/{name}", presets.preset_update)
    r.add_post("/admin/presets/{name}/delete", presets.preset_delete)
    r.add_get("/admin/agents", agents.agents)
    r.add_get("/admin/images", images.images)
    r.add_post("/admin/images/alias", images.image_alias)
    r.add_post("/admin/images/dealias", images.image_dealias)
    r.add_post("/admin/images/rescan", images.image_rescan)
    r.add_post("/admin/images/forget", images.image_forget)
    r.add_get("/admin/scaling-groups", scaling_groups.sgroups)
    r.add_post("/admin/scaling-groups", scaling_groups.sgroup_create)
    r.add_get("/admin/scaling-groups/{name}", scaling_groups.sgroup_detail)
    r.add_post("/admin/scaling-groups/{name}", scaling_groups.sgroup_update)
    r.add_post("/admin/scaling-groups/{name}/associations", scaling_groups.sgroup_associate)
    r.add_post("/admin/scaling-groups/{name}/delete", scaling_groups.sgroup_delete)
