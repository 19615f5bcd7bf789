"""Session templates: parsing and validating template documents, and turning one into creation parameters.

A template document (YAML or JSON, see docs/client.md) looks like::

    api_version: v1
    kind: taskTemplate
    metadata: {name: my-template, tag: example}
    spec:
      sessionType: interactive
      kernel:
        image: python:3.11-debian12
        environ: {MYCONFIG: XXX}
        run: {bootstrap: "pip install ...", startup_command: "python main.py"}
        git: {repository: https://host/repo.git, branch: main, commit: abc123, destinationDir: /home/work/repo}
      mounts: {data: /home/work/data, scratch: null}
      resources: {cpu: "2", mem: 4g}

Keys accept the documented snake_case and camelCase spellings. Errors are 400 problems naming the field
(``spec.kernel.image``) or, for YAML syntax errors, the line and column.
"""

from __future__ import annotations

import json
import posixpath
import re
import shlex
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import yaml

from ai.backend.common.problems import InvalidAPIParameters
from ai.backend.common.types import ResourceSlot, SlotTypeError

from .params import SESSION_TYPES

__all__ = (
    "MAX_PAYLOAD",
    "GitSpec",
    "TaskTemplate",
    "add_git_clone",
    "check_template",
    "creation_body",
    "git_clone_script",
    "load_payload",
    "merge_overrides",
)

MAX_PAYLOAD = 256 * 1024
WORKDIR = "/home/work"
TEMPLATE_KINDS = ("taskTemplate", "task_template")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass
class GitSpec:
    """A repository to clone into the session's working directory at startup."""

    repository: str
    dest_dir: str
    commit: str | None = None
    branch: str | None = None
    username: str | None = None
    password: str | None = None


@dataclass
class TaskTemplate:
    """A validated task template (the stored document stays as the owner wrote it)."""

    name: str
    image: str
    tag: str | None = None
    session_type: str = "interactive"
    architecture: str | None = None
    environ: dict[str, str] = field(default_factory=dict)
    bootstrap: str | None = None
    startup_command: str | None = None
    git: GitSpec | None = None
    scaling_group: str | None = None
    mounts: dict[str, str | None] = field(default_factory=dict)
    resources: dict[str, Any] = field(default_factory=dict)


def _bad(where: str, problem: str) -> InvalidAPIParameters:
    return InvalidAPIParameters(f"Invalid session template: {where}: {problem}")


# ---- payload ----


def _yaml_error(e: yaml.YAMLError) -> InvalidAPIParameters:
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    problem = getattr(e, "problem", None) or str(e)
    if mark is not None:
        return InvalidAPIParameters(
            f"The template is not valid YAML: line {mark.line + 1}, column {mark.column + 1}: {problem}."
        )
    return InvalidAPIParameters(f"The template is not valid YAML: {problem}.")


def parse_document(text: str) -> Any:
    """Parse a JSON or YAML text (JSON first: it is also YAML, but its errors read better as JSON)."""
    if len(text.encode()) > MAX_PAYLOAD:
        raise InvalidAPIParameters(f"The template is larger than {MAX_PAYLOAD // 1024} KiB.")
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            pass  # flow-style YAML also starts with a brace
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise _yaml_error(e) from None


def load_payload(payload: Any) -> tuple[list[tuple[dict[str, Any], str | None]], bool]:
    """The template documents in a ``payload`` with their optional name overrides, and whether the payload
    was the wrapper (a list of templates) rather than one template document.

    Accepts one template document, or the upstream wrapper
    ``{"session_templates": [{"template": <document>, "name": <optional>}, ...]}``.
    """
    if not isinstance(payload, str):
        raise InvalidAPIParameters("'payload' must be a string holding a YAML or JSON template.")
    doc = parse_document(payload)
    if isinstance(doc, dict) and "session_templates" in doc:
        items = doc["session_templates"]
        if not isinstance(items, list) or not items:
            raise _bad("session_templates", "must be a non-empty list")
        out: list[tuple[dict[str, Any], str | None]] = []
        for i, item in enumerate(items):
            if not isinstance(item, dict) or not isinstance(item.get("template"), dict):
                raise _bad(f"session_templates[{i}].template", "must be a template document (a mapping)")
            name = item.get("name")
            if name is not None and (not isinstance(name, str) or not name.strip()):
                raise _bad(f"session_templates[{i}].name", "must be a non-empty string")
            out.append((item["template"], name))
        return out, True
    if not isinstance(doc, dict):
        raise InvalidAPIParameters("The template must be a mapping (api_version, kind, metadata, spec).")
    return [(doc, None)], False


# ---- validation ----


def _get(node: dict[str, Any], where: str, *names: str, required: bool = False) -> Any:
    present = [n for n in names if n in node]
    if len(present) > 1:
        raise _bad(where, f"give only one of {', '.join(present)}")
    if not present or node[present[0]] is None:
        if required:
            raise _bad(f"{where}.{names[0]}" if where else names[0], "is required")
        return None
    return node[present[0]]


def _string(value: Any, where: str, *, max_len: int = 1024) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _bad(where, f"must be a string, got {type(value).__name__}")
    text = str(value)
    if len(text) > max_len:
        raise _bad(where, f"is longer than {max_len} characters")
    return text


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad(where, f"must be a mapping, got {type(value).__name__}")
    return value


def _work_path(path: str, where: str) -> str:
    """An absolute path inside /home/work for ``path`` (relative paths are taken from /home/work)."""
    if "\x00" in path or not path.strip():
        raise _bad(where, "must be a non-empty path")
    if ".." in path.split("/"):
        raise _bad(where, "must not contain '..'")
    full = posixpath.normpath(path if path.startswith("/") else posixpath.join(WORKDIR, path))
    if not full.startswith(WORKDIR + "/"):
        raise _bad(where, f"must be a directory inside {WORKDIR}, got {path!r}")
    return full


def _check_git(node: Any) -> GitSpec:
    where = "spec.kernel.git"
    git = _mapping(node, where)
    repo = _string(_get(git, where, "repository", required=True), f"{where}.repository", max_len=2048)
    parts = urlsplit(repo)
    if (
        not repo.strip()
        or repo.startswith("-")
        or (parts.scheme and parts.scheme not in ("http", "https", "ssh", "git", "file"))
    ):
        raise _bad(f"{where}.repository", f"is not a repository URL: {repo!r}")
    spec = GitSpec(repository=repo, dest_dir="")
    commit = _get(git, where, "commit")
    if commit is not None:
        spec.commit = _string(commit, f"{where}.commit", max_len=256)
        if spec.commit.startswith("-"):
            raise _bad(f"{where}.commit", f"is not a commit: {spec.commit!r}")
    branch = _get(git, where, "branch")
    if branch is not None:
        spec.branch = _string(branch, f"{where}.branch", max_len=256)
        if spec.branch.startswith("-"):
            raise _bad(f"{where}.branch", f"is not a branch name: {spec.branch!r}")
    cred = _get(git, where, "credential")
    if cred is not None:
        cred = _mapping(cred, f"{where}.credential")
        spec.username = _string(
            _get(cred, f"{where}.credential", "username", required=True), f"{where}.credential.username", max_len=256
        )
        spec.password = _string(
            _get(cred, f"{where}.credential", "password", required=True), f"{where}.credential.password", max_len=1024
        )
        if parts.scheme not in ("http", "https"):
            raise _bad(f"{where}.credential", "is only supported for http(s) repository URLs")
    dest = _get(git, where, "destination_dir", "destinationDir", "dest_dir")
    if dest is None:
        base = repo.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
        dest = base[:-4] if base.endswith(".git") else base
        if not dest or dest in (".", ".."):
            raise _bad(f"{where}.destination_dir", "cannot be derived from the repository URL; give it")
    spec.dest_dir = _work_path(_string(dest, f"{where}.destination_dir"), f"{where}.destination_dir")
    return spec


def check_template(doc: Any, name_override: str | None = None) -> TaskTemplate:
    """Validate a template document; raises a 400 problem naming the first offending field."""
    if not isinstance(doc, dict):
        raise InvalidAPIParameters("The template must be a mapping (api_version, kind, metadata, spec).")
    version = _string(_get(doc, "", "api_version", "apiVersion", required=True), "api_version")
    if version != "v1":
        raise _bad("api_version", f"only 'v1' is supported, got {version!r}")
    kind = _get(doc, "", "kind", required=True)
    if kind not in TEMPLATE_KINDS:
        raise _bad("kind", f"must be one of {', '.join(TEMPLATE_KINDS)}, got {kind!r}")
    meta = _mapping(_get(doc, "", "metadata", required=True), "metadata")
    name = _string(_get(meta, "metadata", "name", required=True), "metadata.name", max_len=128).strip()
    if name_override is not None:
        name = name_override.strip()[:128]
    if not name:
        raise _bad("metadata.name", "must not be empty")
    spec = _mapping(_get(doc, "", "spec", required=True), "spec")
    kernel = _mapping(_get(spec, "spec", "kernel", required=True), "spec.kernel")
    image = _string(_get(kernel, "spec.kernel", "image", required=True), "spec.kernel.image", max_len=256).strip()
    if not image:
        raise _bad("spec.kernel.image", "must not be empty")
    tpl = TaskTemplate(name=name, image=image)
    tag = _get(meta, "metadata", "tag")
    tpl.tag = None if tag is None else _string(tag, "metadata.tag", max_len=64)
    stype = _get(spec, "spec", "type", "sessionType", "session_type")
    if stype is not None:
        if not isinstance(stype, str) or stype.lower() not in SESSION_TYPES:
            raise _bad("spec.session_type", f"must be one of {', '.join(SESSION_TYPES)}, got {stype!r}")
        tpl.session_type = stype.lower()
    arch = _get(kernel, "spec.kernel", "architecture")
    tpl.architecture = None if arch is None else _string(arch, "spec.kernel.architecture", max_len=32)
    environ = _get(kernel, "spec.kernel", "environ")
    if environ is not None:
        for k, v in _mapping(environ, "spec.kernel.environ").items():
            if not isinstance(k, str) or not _ENV_NAME.match(k):
                raise _bad("spec.kernel.environ", f"{k!r} is not a valid environment variable name")
            tpl.environ[k] = _string("" if v is None else v, f"spec.kernel.environ.{k}", max_len=65536)
    run = _get(kernel, "spec.kernel", "run")
    if run is not None:
        run = _mapping(run, "spec.kernel.run")
        bootstrap = _get(run, "spec.kernel.run", "bootstrap")
        if bootstrap is not None:
            tpl.bootstrap = _string(bootstrap, "spec.kernel.run.bootstrap", max_len=65536)
        startup = _get(run, "spec.kernel.run", "startup_command", "startupCommand", "startup", "stratup")
        if startup is not None:
            tpl.startup_command = _string(startup, "spec.kernel.run.startup_command", max_len=65536)
    git = _get(kernel, "spec.kernel", "git")
    if git is not None:
        tpl.git = _check_git(git)
    sgroup = _get(spec, "spec", "scaling_group", "scalingGroup")
    tpl.scaling_group = None if sgroup is None else _string(sgroup, "spec.scaling_group", max_len=64)
    mounts = _get(spec, "spec", "mounts")
    if mounts is not None:
        for k, v in _mapping(mounts, "spec.mounts").items():
            if not isinstance(k, str) or not k.strip():
                raise _bad("spec.mounts", f"{k!r} is not a folder name")
            tpl.mounts[k] = None if v in (None, "") else _string(v, f"spec.mounts.{k}", max_len=1024)
    resources = _get(spec, "spec", "resources")
    if resources is not None:
        resources = _mapping(resources, "spec.resources")
        try:
            ResourceSlot.from_user_input(resources)
        except SlotTypeError as e:
            raise _bad("spec.resources", str(e)) from None
        tpl.resources = {str(k): v if isinstance(v, str) else str(v) for k, v in resources.items()}
    return tpl


# ---- from template to creation parameters ----


def git_clone_script(git: GitSpec) -> str:
    """Shell lines that clone ``git`` into its destination (every value shell-quoted)."""
    url = git.repository
    if git.username is not None and git.password is not None:
        parts = urlsplit(url)
        netloc = f"{quote(git.username, safe='')}:{quote(git.password, safe='')}@{parts.hostname or ''}"
        if parts.port:
            netloc += f":{parts.port}"
        url = urlunsplit(parts._replace(netloc=netloc))
    dest = shlex.quote(git.dest_dir)
    lines = [f"# Clone {shlex.quote(git.repository)} (from the session template)"]
    clone = "git clone"
    if git.branch:
        clone += f" --branch {shlex.quote(git.branch)}"
    lines.append(f"{clone} -- {shlex.quote(url)} {dest}")
    if url != git.repository:
        # Do not leave the credential in .git/config.
        lines.append(f"git -C {dest} remote set-url origin {shlex.quote(git.repository)}")
    if git.commit:
        lines.append(f"git -C {dest} checkout --quiet {shlex.quote(git.commit)}")
    return "\n".join(lines) + "\n"


def creation_body(tpl: TaskTemplate, *, domain: str | None, group: str | None) -> dict[str, Any]:
    """A ``POST /session`` body holding what the template defines (before the caller's overrides)."""
    body: dict[str, Any] = {"image": tpl.image, "type": tpl.session_type}
    if domain is not None:
        body["domain"] = domain
    if group is not None:
        body["group"] = group
    if tpl.tag is not None:
        body["tag"] = tpl.tag
    if tpl.bootstrap is not None:
        body["bootstrap_script"] = tpl.bootstrap
    if tpl.startup_command is not None:
        body["startupCommand"] = tpl.startup_command
    config: dict[str, Any] = {}
    if tpl.scaling_group is not None:
        config["scalingGroup"] = tpl.scaling_group
    if tpl.mounts:
        config["mounts"] = list(tpl.mounts)
        config["mount_map"] = {k: v for k, v in tpl.mounts.items() if v}
    if tpl.environ:
        config["environ"] = dict(tpl.environ)
    if tpl.resources:
        config["resources"] = dict(tpl.resources)
    body["config"] = config
    return body


# Spellings of one parameter in a creation body (see session_params): an override in any spelling
# replaces the template's value in every spelling.
_ALIASES: tuple[tuple[str, ...], ...] = (
    ("image", "lang"),
    ("name", "session_name", "clientSessionToken", "sessId"),
    ("type", "sessionType", "session_type"),
    ("group", "groupName", "group_name"),
    ("domain", "domainName", "domain_name"),
    ("enqueueOnly", "enqueue_only"),
    ("reuseIfExists", "reuse_if_exists"),
    ("maxWaitSeconds", "max_wait_seconds"),
    ("starts_at", "startsAt"),
    ("startupCommand", "startup_command"),
    ("bootstrap_script", "bootstrapScript"),
    ("owner_access_key", "ownerAccessKey"),
    ("cluster_size", "clusterSize"),
    ("cluster_mode", "clusterMode"),
)
_CONFIG_ALIASES: tuple[tuple[str, ...], ...] = (
    ("scalingGroup", "scaling_group"),
    ("resource_opts", "resourceOpts"),
    ("mount_map", "mountMap"),
    ("mount_options", "mountOptions"),
    ("preopen_ports", "preopenPorts"),
    ("agentList", "agent_list"),
)


def _overlay(base: dict[str, Any], overrides: dict[str, Any], aliases: tuple[tuple[str, ...], ...]) -> None:
    for key, value in overrides.items():
        if value is None:
            continue  # None means "not given", as in session_params
        for group in aliases:
            if key in group:
                for other in group:
                    base.pop(other, None)
        base[key] = value


def merge_overrides(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """The template's creation body with the caller's parameters on top.

    Every given parameter replaces the template's whole value: ``config.environ``, ``config.mounts`` and
    ``config.resources`` are replaced, not merged or appended. ``null`` values count as not given.
    """
    merged = {k: v for k, v in base.items() if k != "config"}
    config = dict(base.get("config") or {})
    extra = {k: v for k, v in overrides.items() if k not in ("config", "template_id", "templateId")}
    _overlay(merged, extra, _ALIASES)
    over_config = overrides.get("config")
    if over_config is not None:
        if not isinstance(over_config, dict):
            raise InvalidAPIParameters("'config' must be an object.")
        if any(over_config.get(k) is not None for k in ("mounts", "mount_map", "mountMap")):
            # A new set of mounts replaces the template's folders together with their paths.
            for k in ("mounts", "mount_map", "mountMap"):
                config.pop(k, None)
        _overlay(config, over_config, _CONFIG_ALIASES)
    merged["config"] = config
    return merged


def add_git_clone(body: dict[str, Any], git: GitSpec | None) -> None:
    """Append the template's git clone to the (merged) bootstrap script, like upstream does."""
    if git is None:
        return
    current = None
    for key in ("bootstrap_script", "bootstrapScript"):
        if body.get(key) is not None:
            current = body.pop(key)
    if current is not None and not isinstance(current, str):
        raise InvalidAPIParameters("'bootstrap_script' must be a string.")
    script = (current.rstrip("\n") + "\n" if current else "") + git_clone_script(git)
    body["bootstrap_script"] = script
