"""The one list of what the official clients can ask for and this server does not offer (yet).

Every N/A row of the four tables of the compatibility matrix (``../shared/compat/official-client-matrix.md``
from the project root: 22.03 CLI, 22.03 SDK, 19.09 CLI, 19.09 SDK) is one or more :class:`NotOffered`
records below, one per invocation. ``test_not_offered.py`` runs each and asserts that the server still
refuses it; when a feature lands, its test says "this command works now" and the record moves into the
checked set of the compatibility suite.

Placeholders in ``call`` (and ``stdin``) are filled in by the test:

* ``{session}``: the name of a running ``python`` session of the runner (``who``);
* ``{agent}``: the test cluster's agent id;
* ``{gid}``, ``{domain}``, ``{email}``: a throw-away group (of the default domain), domain and user that
  the purge commands may remove;
* ``{name}``: a fresh unique name;
* ``{admin_email}``, ``{admin_password}``, ``{user_password}``: the fixture accounts' credentials.

``CLIENT_BUGS`` documents the matrix's CLIENT rows: failures inside the official packages themselves
(22.3.2 / 19.9.10 on Python 3.11 and click 8.5), not server defects. They are not run; they are listed
so that nobody chases them on the server:

* 22.03 CLI: ``run --terminal`` (``exec_terminal`` raises ``NotImplementedError``), ``ps -f resoucre_opts``
  (typo), ``ps -f service_ports`` (formats a list as a mapping), ``info <name>`` (UUID required),
  ``create-from-template`` (click 8.5 ``undefined`` defaults, ``callback_url``), ``vfolder upload`` of
  several files / a directory / a relative base dir,
  ``vfolder download`` of a directory, ``vfolder request-download``, ``vfolder cp``, ``dotfile list -o``
  (``onwer_access_key``), ``admin agent|user|keypair list --limit`` (no ``type=int``),
  ``admin group info <name>``, ``admin scaling dissociate-scaling`` (prints a missing key);
* 22.03 SDK: ``ComputeSession.from_session_id(id).get_info()``, ``VFolder.download`` into a
  subdirectory, ``Group.from_name``;
* 19.09 CLI: ``info NAME`` (``owner_access_key`` forwarded), ``app`` (``asyncio.start_server(loop=…)``
  dies before any request), ``vfolder cp``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Version = Literal["22.03", "19.09"]
Kind = Literal["cli", "sdk"]
Runner = Literal["user", "admin"]

NOT_FOUND = r"BackendAPIError.{0,3}404|404 Not Found|404, 'Not Found'"  # how both clients show a 404


@dataclass(frozen=True)
class NotOffered:
    """One invocation of an official client that the server does not serve."""

    version: Version
    kind: Kind
    call: tuple[str, ...] | str  # CLI argv, or the SDK expression evaluated inside ``with Session() as session:``
    who: Runner
    reason: str  # the missing route / feature (as in the matrix)
    refusal: str  # a regex that recognises the refusal in the client's output
    stdin: str | None = None
    env: tuple[tuple[str, str], ...] = ()  # extra environment (e.g. the webserver endpoint type)
    skip: str = ""  # why it is not run (e.g. it would hang); empty: run it
    tags: tuple[str, ...] = field(default=())  # what the call needs: "session"

    @property
    def id(self) -> str:
        text = " ".join(self.call) if isinstance(self.call, tuple) else self.call
        for ch in "()'\",:/{}[]":
            text = text.replace(ch, " ")
        return f"{self.version}-{self.kind}-{'-'.join(text.split())}"[:90]


def _cli(
    version: Version,
    who: Runner,
    reason: str,
    *args: str,
    refusal: str = NOT_FOUND,
    stdin: str | None = None,
    env: tuple[tuple[str, str], ...] = (),
    tags: tuple[str, ...] = (),
    skip: str = "",
) -> NotOffered:
    return NotOffered(version, "cli", args, who, reason, refusal, stdin, env, skip, tags)


def _sdk(
    version: Version, who: Runner, reason: str, expr: str, refusal: str = NOT_FOUND, tags: tuple[str, ...] = ()
) -> NotOffered:
    return NotOffered(version, "sdk", expr, who, reason, refusal, tags=tags)


SESSION_MODE = (("BACKEND_ENDPOINT_TYPE", "session"),)
WEB_LOGIN = (
    "19.09 session mode is not checked against the webserver (22.03's is: test_session_mode22.py); "
    "these runs point it at the manager, which has no /server/login (404)"
)
UPDATE_PASSWORD = (
    "the 19.09 CLI insists on endpoint type `session`, not checked against the webserver; the API call "
    "works (SDK Auth.update_password)"
)
SERVER_LOGS = "GET /logs/error not implemented"
ANNOUNCEMENT = "/manager/announcement not implemented"
DISMISS = "/manager/announcement not implemented (dismiss is client-local: nothing was ever seen)"
ETCD = "/config/get, /config/set, /config/delete not implemented (no etcd)"
LICENSE = "/license not implemented (enterprise feature)"
MANAGER = "/manager/status not implemented"
SCHEDULER_OP = "/manager/scheduler/operation not implemented"
WATCHER = "/resource/watcher/* not implemented (no agent watcher)"
STORAGE = "GraphQL storage_volume_list / storage_volume not implemented"
FSTAB = "/folders/_/fstab not implemented"
MOUNTS = "/folders/_/mounts not implemented"
PERF = "/folders/_/perf-metric not implemented"
VFOLDER_TYPES = "/config/vfolder-types not implemented"
RECALC = "/resource/recalculate-usage not implemented"
USAGE_MONTH = "/resource/usage/month not implemented"
USAGE_PERIOD = "/resource/usage/period not implemented"
USER_STATS = "/resource/stats/user/month not implemented"
ADMIN_STATS = "/resource/stats/admin/month not implemented"
PURGE_USER = "purge_user mutation / PurgeUserInput not implemented"
PURGE_GROUP = "purge_group mutation not implemented"
PURGE_DOMAIN = "purge_domain mutation not implemented"
DOTFILES_DOMAIN = "/domain-config/dotfiles not implemented"
DOTFILES_GROUP = "/group-config/dotfiles not implemented"
UNMANAGED = "unmanaged virtual folders (`unmanaged_path`) not implemented"
IMAGE_IMPORT = "/image/import not implemented"

YES = "y\n"
LOGIN_INPUT = "{admin_email}\n{admin_password}\n"
GID = "{gid}"

NOT_OFFERED: list[NotOffered] = [
    # ---- 1. 22.03 CLI ------------------------------------------------------------------------------
    _cli("22.03", "admin", SERVER_LOGS, "server-logs", "list"),
    _cli("22.03", "admin", SERVER_LOGS, "server-logs", "list", "--mark-read", "-l", "5", "-n", "1"),
    _cli(
        "22.03",
        "user",
        UNMANAGED,
        "vfolder",
        "create",
        "{name}",
        "local:volume1",
        "--unmanaged",
        refusal=r"400 Bad Request|[Uu]nmanaged",
    ),
    _cli("22.03", "user", DOTFILES_DOMAIN, "dotfile", "create", ".cs-domrc", "-d", "default", "-f", "vimrc"),
    _cli("22.03", "user", DOTFILES_GROUP, "dotfile", "create", ".cs-grprc", "-g", "default", "-f", "vimrc"),
    _cli("22.03", "admin", ANNOUNCEMENT, "admin", "announcement", "get"),
    _cli("22.03", "admin", ANNOUNCEMENT, "admin", "announcement", "update", "-m", "compat announcement"),
    _cli("22.03", "admin", ANNOUNCEMENT, "admin", "announcement", "delete", stdin=YES),
    _cli(
        "22.03", "admin", DISMISS, "admin", "announcement", "dismiss", stdin=YES, refusal=r"No announcements seen yet"
    ),
    _cli(
        "22.03",
        "admin",
        PURGE_DOMAIN,
        "admin",
        "domain",
        "purge",
        "{domain}",
        stdin=YES,
        refusal=r"Cannot query field 'purge_domain'",
    ),
    _cli("22.03", "admin", ETCD, "admin", "etcd", "get", "config/redis"),
    _cli("22.03", "admin", ETCD, "admin", "etcd", "get", "-p", "config"),
    _cli("22.03", "admin", ETCD, "admin", "etcd", "set", "cs-test/key", "value1"),
    _cli("22.03", "admin", ETCD, "admin", "etcd", "delete", "cs-test/key"),
    _cli(
        "22.03",
        "admin",
        PURGE_GROUP,
        "admin",
        "group",
        "purge",
        GID,
        stdin=YES,
        refusal=r"Cannot query field 'purge_group'",
    ),
    _cli("22.03", "admin", LICENSE, "admin", "license", "show"),
    _cli("22.03", "admin", MANAGER, "admin", "manager", "status"),
    _cli("22.03", "admin", MANAGER, "admin", "manager", "freeze"),
    _cli("22.03", "admin", MANAGER, "admin", "manager", "unfreeze"),
    _cli("22.03", "admin", SCHEDULER_OP, "admin", "manager", "scheduler", "exclude-agents", "{agent}"),
    _cli("22.03", "admin", SCHEDULER_OP, "admin", "manager", "scheduler", "include-agents", "{agent}"),
    _cli("22.03", "admin", VFOLDER_TYPES, "admin", "resource", "vfolder-types"),
    _cli("22.03", "admin", RECALC, "admin", "resource", "recalculate-usage"),
    _cli("22.03", "admin", USAGE_MONTH, "admin", "resource", "usage-per-month", "202612", GID),
    _cli("22.03", "admin", USAGE_PERIOD, "admin", "resource", "usage-per-period", GID, "20261201", "20261207"),
    _cli("22.03", "admin", STORAGE, "admin", "storage", "list", refusal=r"Cannot query field 'storage_volume_list'"),
    _cli(
        "22.03",
        "admin",
        STORAGE,
        "admin",
        "storage",
        "info",
        "local:volume1",
        refusal=r"Cannot query field 'storage_volume'",
    ),
    _cli(
        "22.03",
        "admin",
        PURGE_USER,
        "admin",
        "user",
        "purge",
        "{email}",
        stdin=YES,
        refusal=r"Cannot query field 'purge_user'|Unknown type 'PurgeUserInput'",
    ),
    _cli("22.03", "admin", PERF, "admin", "vfolder", "perf-metric", "local:volume1"),
    _cli("22.03", "admin", FSTAB, "admin", "vfolder", "get-fstab-contents"),
    _cli("22.03", "admin", FSTAB, "admin", "vfolder", "get-fstab-contents", "-a", "{agent}"),
    _cli("22.03", "admin", MOUNTS, "admin", "vfolder", "list-mounts"),
    _cli("22.03", "admin", MOUNTS, "admin", "vfolder", "mount-host", "/some/host/path", "cs-mnt", "-o", "ro"),
    _cli("22.03", "admin", MOUNTS, "admin", "vfolder", "umount-host", "cs-mnt"),
    _cli("22.03", "admin", WATCHER, "admin", "watcher", "status", "{agent}"),
    _cli("22.03", "admin", WATCHER, "admin", "watcher", "agent-start", "{agent}"),
    _cli("22.03", "admin", WATCHER, "admin", "watcher", "agent-stop", "{agent}"),
    _cli("22.03", "admin", WATCHER, "admin", "watcher", "agent-restart", "{agent}"),
    # ---- 2. 22.03 SDK ------------------------------------------------------------------------------
    _sdk("22.03", "admin", VFOLDER_TYPES, "session.Resource.get_vfolder_types()"),
    _sdk("22.03", "user", USER_STATS, "session.Resource.user_monthly_stats()"),
    _sdk("22.03", "admin", ADMIN_STATS, "session.Resource.admin_monthly_stats()"),
    _sdk("22.03", "admin", USAGE_MONTH, "session.Resource.usage_per_month('202612', ['{gid}'])"),
    _sdk("22.03", "admin", USAGE_PERIOD, "session.Resource.usage_per_period('{gid}', '20261201', '20261207')"),
    _sdk("22.03", "admin", RECALC, "session.Resource.recalculate_usage()"),
    _sdk("22.03", "admin", FSTAB, "session.VFolder.get_fstab_contents()"),
    _sdk("22.03", "admin", MOUNTS, "session.VFolder.list_mounts()"),
    _sdk("22.03", "admin", PERF, "session.VFolder.get_performance_metric('local:volume1')"),
    _sdk(
        "22.03",
        "admin",
        PURGE_USER,
        "session.User.purge('{email}')",
        refusal=r"Cannot query field 'purge_user'|Unknown type 'PurgeUserInput'",
    ),
    _sdk("22.03", "admin", PURGE_GROUP, "session.Group.purge('{gid}')", refusal=r"Cannot query field 'purge_group'"),
    _sdk(
        "22.03", "admin", PURGE_DOMAIN, "session.Domain.purge('{domain}')", refusal=r"Cannot query field 'purge_domain'"
    ),
    _sdk("22.03", "admin", IMAGE_IMPORT, "session.Image.get_image_import_form()"),
    _sdk("22.03", "admin", MANAGER, "session.Manager.status()"),
    _sdk("22.03", "admin", ANNOUNCEMENT, "session.Manager.get_announcement()"),
    _sdk(
        "22.03",
        "admin",
        STORAGE,
        "list(session.Storage.paginated_list().items)",
        refusal=r"Cannot query field 'storage_volume_list'",
    ),
    _sdk(
        "22.03",
        "admin",
        STORAGE,
        "session.Storage.detail('local:volume1')",
        refusal=r"Cannot query field 'storage_volume'",
    ),
    _sdk("22.03", "admin", SERVER_LOGS, "session.ServerLog.list()"),
    _sdk("22.03", "admin", ETCD, "session.EtcdConfig.get('config')"),
    # ---- 3. 19.09 CLI ------------------------------------------------------------------------------
    _cli("19.09", "admin", WEB_LOGIN, "login", stdin=LOGIN_INPUT, env=SESSION_MODE),
    _cli("19.09", "admin", WEB_LOGIN, "logout", env=SESSION_MODE),
    _cli(
        "19.09",
        "user",
        UPDATE_PASSWORD,
        "update-password",
        "{user_password}",
        "compat-New-1",
        "compat-New-1",
        env=SESSION_MODE,
    ),
    _cli("19.09", "admin", MANAGER, "manager", "status"),
    _cli("19.09", "admin", MANAGER, "manager", "freeze"),
    _cli("19.09", "admin", MANAGER, "manager", "unfreeze"),
    _cli("19.09", "admin", ANNOUNCEMENT, "announcement", "get"),
    _cli("19.09", "admin", ANNOUNCEMENT, "announcement", "update", "-m", "compat announcement"),
    _cli("19.09", "admin", ANNOUNCEMENT, "announcement", "delete", stdin=YES),
    _cli("19.09", "admin", DISMISS, "announcement", "dismiss", stdin=YES, refusal=r"No announcements seen yet"),
    _cli("19.09", "admin", VFOLDER_TYPES, "admin", "resources", "vfolder-types"),
    _cli("19.09", "admin", RECALC, "admin", "resources", "recalculate-usage"),
    _cli("19.09", "admin", USAGE_MONTH, "admin", "resources", "usage-per-month", "202612", GID),
    _cli("19.09", "admin", USAGE_PERIOD, "admin", "resources", "usage-per-period", GID, "20261201", "20261207"),
    _cli("19.09", "admin", FSTAB, "admin", "vfolders", "get-fstab-contents"),
    _cli("19.09", "admin", MOUNTS, "admin", "vfolders", "list-mounts"),
    _cli("19.09", "admin", MOUNTS, "admin", "vfolders", "mount-host", "/some/host/path", "cs-mnt19"),
    _cli("19.09", "admin", MOUNTS, "admin", "vfolders", "umount-host", "cs-mnt19"),
    _cli("19.09", "admin", ETCD, "admin", "etcd", "get", "config"),
    _cli("19.09", "admin", ETCD, "admin", "etcd", "set", "cs-19/key", "v"),
    _cli("19.09", "admin", ETCD, "admin", "etcd", "delete", "cs-19/key"),
    _cli("19.09", "admin", WATCHER, "admin", "watcher", "status", "{agent}"),
    _cli("19.09", "admin", WATCHER, "admin", "watcher", "agent-start", "{agent}"),
    _cli("19.09", "admin", WATCHER, "admin", "watcher", "agent-stop", "{agent}"),
    _cli("19.09", "admin", WATCHER, "admin", "watcher", "agent-restart", "{agent}"),
    # ---- 4. 19.09 SDK ------------------------------------------------------------------------------
    _sdk("19.09", "admin", FSTAB, "session.VFolder.get_fstab_contents()"),
    _sdk("19.09", "admin", MOUNTS, "session.VFolder.list_mounts()"),
]


@dataclass(frozen=True)
class ClientBug:
    """A CLIENT row of the matrix: it breaks inside the official package, the server is not at fault."""

    version: Version
    kind: Kind
    call: str
    reason: str


CLIENT_BUGS: list[ClientBug] = [
    # 1. 22.03 CLI
    ClientBug(
        "22.03",
        "cli",
        "run -t NAME --terminal python",
        "22.03 `exec_terminal` is `raise NotImplementedError`; the CLI demands `-c` first",
    ),
    ClientBug("22.03", "cli", "ps -f resoucre_opts", "typo in the client's field list (`resoucre_opts`)"),
    ClientBug(
        "22.03",
        "cli",
        "ssh NAME / scp NAME ... (under load, now and then)",
        "`backend.ai app` has no signal handler, and a Ctrl-C that lands while aiohttp receives data is swallowed "
        "(`ResponseHandler.data_received` catches BaseException): the app proxy runs on and `ssh`/`scp`, which "
        "stop it with SIGINT when they finish, wait for it forever; a second Ctrl-C ends it "
        "(`test_cli22_apps.run_official_ssh` sends it)",
    ),
    ClientBug(
        "22.03",
        "cli",
        "ps -f service_ports",
        "the client formats GraphQL `service_ports` as a mapping (`nested_dict_formatter`), but the 22.03 server "
        "answers the stored list of apps, as this one does: `'list' object has no attribute 'items'` once a "
        "session has apps (`--output json` and `session info`/`apps` show them)",
    ),
    ClientBug("22.03", "cli", "info NAME", 'client refuses non-UUIDs in API v5+ ("must be given in the UUID format")'),
    ClientBug(
        "22.03",
        "cli",
        "create-from-template / start-from-template / session create-from-template TID",
        "click 8.5 converts the `undefined` default of `--max-wait`/`--cluster-size` (TypeError); with both "
        "given the CLI passes `callback_url=`, which `ComputeSession.create_from_template()` does not accept",
    ),
    ClientBug(
        "22.03",
        "cli",
        "vfolder upload NAME a b",
        '`VFolder.upload` returns inside its loop: only the first file is sent, "Done" printed',
    ),
    ClientBug(
        "22.03",
        "cli",
        "vfolder upload NAME DIR / vfolder upload NAME f -b RELDIR",
        "IsADirectoryError / `relative_to` ValueError in the client",
    ),
    ClientBug(
        "22.03",
        "cli",
        "vfolder download NAME DIR",
        'client never sends `archive: true`; 400 "directory" is the documented (and upstream) answer',
    ),
    ClientBug(
        "22.03",
        "cli",
        "vfolder request-download NAME FILE",
        "CLI calls `VFolder.request_download`, which 22.3.2 does not have",
    ),
    ClientBug("22.03", "cli", "vfolder cp SRC DST", "`raise NotImplementedError` in 22.3.2"),
    ClientBug(
        "22.03",
        "cli",
        "dotfile list -o AK",
        "client sends the parameter as `onwer_access_key` (typo), so the admin's own list comes back",
    ),
    ClientBug(
        "22.03",
        "cli",
        "admin agent list --limit N (and admin keypair list --limit N)",
        "`--limit` has no `type=int` (`'>' not supported between str and int`)",
    ),
    ClientBug("22.03", "cli", "admin user list --limit N", "`--limit` has no `type=int` (see agent list)"),
    ClientBug(
        "22.03", "cli", "admin group info NAME", "`Group.from_name` joins FieldSpec objects as strings (TypeError)"
    ),
    ClientBug(
        "22.03",
        "cli",
        "admin scaling dissociate-scaling SG DOMAIN",
        "mutation succeeds; the CLI then prints `data['scaling_group']`, which the mutation never returns",
    ),
    # 2. 22.03 SDK
    ClientBug(
        "22.03",
        "sdk",
        "ComputeSession.from_session_id(id).get_info()",
        "`get_info` builds the path from `self.name` (None)",
    ),
    ClientBug(
        "22.03",
        "sdk",
        "VFolder(name).download(['d1/f'], basedir=tmp)",
        "client does not create `d1/` locally (FileNotFoundError); top-level files download fine",
    ),
    ClientBug("22.03", "sdk", "Group.from_name(name)", "joins FieldSpec objects as strings (TypeError)"),
    # 3. 19.09 CLI
    ClientBug(
        "19.09",
        "cli",
        "info NAME",
        "`ctx.forward` passes `owner_access_key` to `admin session`, which does not take it (TypeError)",
    ),
    ClientBug(
        "19.09",
        "cli",
        "app NAME jupyter -b ADDR",
        "`asyncio.start_server(loop=…)` fails on Python 3.11 before any request",
    ),
    ClientBug("19.09", "cli", "vfolder cp SRC DST", "`NotImplementedError`"),
]
