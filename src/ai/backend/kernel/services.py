"""Service ports inside the kernel: the apps the runner starts on demand (ADR 0012).

An app is either *intrinsic* (``sshd``: Debian's dropbear; ``ttyd``: our web terminal, ``webterm.py``) or
described by the image in ``/etc/backend.ai/service-defs/<name>.json`` in the seed's DSL: ``prestart``
actions (``write_file``, ``write_tempfile``, ``mkdir``, ``run_command``, ``log``, each with ``args`` and an
optional ``ref`` naming its result), a ``command`` of template strings, and the optional ``url_template``,
``env``, ``noop``, ``allowed_envs``, ``allowed_arguments`` and ``default_arguments``.  Templates use
``str.format`` braces with ``{ports[0]}``, ``{runtime_path}`` and the refs.

Nothing starts at boot: :meth:`ServiceManager.start` starts an app on first use, in its own process group,
and answers once ``127.0.0.1:<port>`` accepts connections (``started``), at once if it already runs
(``running``), or with the reason it could not (``failed``).  Every app is killed when the runner exits.

Only the standard library is used: this runs inside arbitrary kernel images, as the unprivileged user,
with a read-only root file system (writable: ``/home/work``, ``/tmp``, ``/var/tmp``, ``/home/config``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import pwd
import re
import shutil
import signal
import stat
import string
import sys
import tempfile
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_START_TIMEOUT",
    "INTRINSIC_PORTS",
    "SERVICE_DEFS_DIR",
    "START_TIMEOUTS",
    "PrestartAction",
    "ServiceDefinition",
    "ServiceError",
    "ServiceManager",
    "build_arguments",
    "check_envs",
    "load_definition",
    "parse_definition",
    "render",
]

log = logging.getLogger("ai.backend.kernel.services")

SERVICE_DEFS_DIR = "/etc/backend.ai/service-defs"
#: The intrinsic apps of every kernel and their default container ports (ADR 0012, decision 2).
INTRINSIC_PORTS: dict[str, int] = {"sshd": 2200, "ttyd": 7681}
#: Seconds an app gets to open its port; Jupyter imports a lot on its first start.
DEFAULT_START_TIMEOUT = 30.0
START_TIMEOUTS: dict[str, float] = {"jupyter": 120.0, "jupyterlab": 120.0}
#: A ``run_command`` prestart action "must return quickly" (seed DSL); past this it is killed.
RUN_COMMAND_TIMEOUT = 30.0
#: Seconds between SIGTERM and SIGKILL when an app is stopped.
STOP_GRACE = 3.0
#: Bytes of an app's output kept for error reports, and the lines of it that a report quotes.
OUTPUT_KEEP = 16 * 1024
ERROR_LINES = 12
MAX_DEF_SIZE = 1 << 20
NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
ACTIONS = frozenset({"write_file", "write_tempfile", "mkdir", "run_command", "log"})
WEBTERM_PATH = Path(__file__).absolute().with_name("webterm.py")
#: Where the sshd's host key and generated user key live (``/tmp`` is writable in every kernel).
DROPBEAR_DIR = "/tmp/dropbear"

ArgValue = str | list[str] | None


class ServiceError(Exception):
    """An app that cannot be started; the message is the ``error`` of a ``failed`` answer."""


# --------------------------------------------------------------------------------------
# Service definitions
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PrestartAction:
    action: str
    args: dict[str, Any]
    ref: str | None = None


@dataclass(frozen=True)
class ServiceDefinition:
    name: str
    command: list[str] = field(default_factory=list)
    prestart: list[PrestartAction] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    url_template: str | None = None
    noop: bool = False
    allowed_envs: list[str] = field(default_factory=list)
    allowed_arguments: list[str] = field(default_factory=list)
    default_arguments: dict[str, ArgValue] = field(default_factory=dict)

    def app_info(self) -> dict[str, Any]:
        """This app's entry of a ``get_apps`` answer."""
        info: dict[str, Any] = {"name": self.name}
        if self.url_template:
            info["url_template"] = self.url_template
        if self.allowed_arguments:
            info["allowed_arguments"] = list(self.allowed_arguments)
        if self.allowed_envs:
            info["allowed_envs"] = list(self.allowed_envs)
        return info


def _str_list(value: Any, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ServiceError(f"{what} must be a list of strings")
    return list(value)


def _arg_value(value: Any, what: str) -> ArgValue:
    if value is None or isinstance(value, str):
        return value
    return _str_list(value, what)


def parse_definition(name: str, data: Any) -> ServiceDefinition:
    """Validate a service definition (the parsed JSON of ``<name>.json``)."""
    if not isinstance(data, dict):
        raise ServiceError(f"the service definition of {name} is not a JSON object")
    prestart: list[PrestartAction] = []
    raw_prestart = data.get("prestart", [])
    if not isinstance(raw_prestart, list):
        raise ServiceError(f"{name}: prestart must be a list")
    for i, item in enumerate(raw_prestart):
        if not isinstance(item, dict) or item.get("action") not in ACTIONS:
            raise ServiceError(f"{name}: prestart[{i}] needs an action among {', '.join(sorted(ACTIONS))}")
        args = item.get("args", {})
        ref = item.get("ref")
        if not isinstance(args, dict):
            raise ServiceError(f"{name}: prestart[{i}].args must be an object")
        if ref is not None and not (isinstance(ref, str) and ref.isidentifier()):
            raise ServiceError(f"{name}: prestart[{i}].ref must be an identifier")
        prestart.append(PrestartAction(item["action"], args, ref))
    noop = data.get("noop", False)
    if not isinstance(noop, bool):
        raise ServiceError(f"{name}: noop must be a boolean")
    command = _str_list(data.get("command", []), f"{name}: command")
    if not command and not noop:
        raise ServiceError(f"{name}: the definition has no command")
    env = data.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        raise ServiceError(f"{name}: env must map names to strings")
    url_template = data.get("url_template")
    if url_template is not None and not isinstance(url_template, str):
        raise ServiceError(f"{name}: url_template must be a string")
    defaults = data.get("default_arguments", {})
    if not isinstance(defaults, dict):
        raise ServiceError(f"{name}: default_arguments must be an object")
    return ServiceDefinition(
        name=name,
        command=command,
        prestart=prestart,
        env=dict(env),
        url_template=url_template,
        noop=noop,
        allowed_envs=_str_list(data.get("allowed_envs", []), f"{name}: allowed_envs"),
        allowed_arguments=_str_list(data.get("allowed_arguments", []), f"{name}: allowed_arguments"),
        default_arguments={str(k): _arg_value(v, f"{name}: default_arguments[{k!r}]") for k, v in defaults.items()},
    )


def load_definition(path: Path) -> ServiceDefinition:
    """Read and validate ``<defs dir>/<name>.json``."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_DEF_SIZE + 1)
    except OSError as e:
        raise ServiceError(f"cannot read {path}: {e.strerror}") from None
    if len(raw) > MAX_DEF_SIZE:
        raise ServiceError(f"{path} is larger than {MAX_DEF_SIZE} bytes")
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ServiceError(f"{path} is not valid JSON: {e}") from None
    return parse_definition(path.stem, data)


class _Formatter(string.Formatter):
    """``str.format`` without attribute access to private names (``{ports.__class__}``)."""

    def get_field(self, field_name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        if "._" in field_name or field_name.startswith("_"):
            raise ValueError(f"private attribute in {{{field_name}}}")
        return super().get_field(field_name, args, kwargs)


_FORMATTER = _Formatter()


def render(template: str, variables: Mapping[str, Any]) -> str:
    """Fill a template string of a service definition."""
    try:
        return _FORMATTER.vformat(template, (), variables)
    except KeyError as e:
        raise ServiceError(f"unknown variable {e} in the template {template!r}") from None
    except (IndexError, ValueError, AttributeError, TypeError) as e:
        raise ServiceError(f"bad template {template!r}: {e}") from None


def build_arguments(defn: ServiceDefinition, requested: Any) -> list[str]:
    """The command-line arguments after ``command``: the defaults, overridden by the user's allowed ones."""
    if requested is None:
        requested = {}
    if not isinstance(requested, dict):
        raise ServiceError("options.arguments must be an object of flag: null | string | [string]")
    merged: dict[str, ArgValue] = dict(defn.default_arguments)
    for flag, value in requested.items():
        if flag not in defn.allowed_arguments:
            raise ServiceError(f"argument {flag} is not allowed for {defn.name}")
        merged[flag] = _arg_value(value, f"the value of argument {flag}")
    argv: list[str] = []
    for flag, value in merged.items():
        argv.append(flag)
        if isinstance(value, str):
            argv.append(value)
        elif isinstance(value, list):
            argv.extend(value)
    return argv


def check_envs(defn: ServiceDefinition, requested: Any, container_env: Mapping[str, str]) -> dict[str, str]:
    """The user's environment variables for the app: allowed by the definition, never one the kernel has."""
    if requested is None:
        return {}
    if not isinstance(requested, dict):
        raise ServiceError("options.envs must be an object of name: string")
    envs: dict[str, str] = {}
    for name, value in requested.items():
        if name not in defn.allowed_envs:
            raise ServiceError(f"environment variable {name} is not allowed for {defn.name}")
        if name in container_env:
            # Worded as a refusal ("not allowed"): the agent answers those with a 400, not a 502.
            raise ServiceError(f"environment variable {name} is not allowed for {defn.name}: the kernel sets it")
        if not isinstance(value, str):
            raise ServiceError(f"environment variable {name} must be a string")
        envs[name] = value
    return envs


# --------------------------------------------------------------------------------------
# Prestart actions
# --------------------------------------------------------------------------------------


def _mode(args: Mapping[str, Any], default: str = "755") -> int:
    raw = args.get("mode", default)
    try:
        mode = int(str(raw), 8)
    except ValueError:
        raise ServiceError(f"mode {raw!r} is not an octal number") from None
    if not 0 <= mode <= 0o7777:
        raise ServiceError(f"mode {raw!r} is out of range")
    return mode


def _body(args: Mapping[str, Any], variables: Mapping[str, Any]) -> str:
    body = args.get("body", [])
    lines = [body] if isinstance(body, str) else _str_list(body, "body")
    # A list of lines: the seed's samples end theirs with "\n", other definitions leave it out.
    return "".join(line if line.endswith("\n") else line + "\n" for line in (render(ln, variables) for ln in lines))


async def run_prestart(
    defn: ServiceDefinition, variables: dict[str, Any], env: Mapping[str, str], cwd: str
) -> dict[str, Any]:
    """Run the definition's prestart actions; ``variables`` plus the refs they set."""
    variables = dict(variables)
    for action in defn.prestart:
        args = action.args
        result: Any = None
        try:
            if action.action == "write_file":
                filename = render(str(args.get("filename", "")), variables)
                if not filename:
                    raise ServiceError("write_file needs a filename")
                data = _body(args, variables)
                with open(filename, "a" if args.get("append") else "w", encoding="utf-8") as f:
                    f.write(data)
                os.chmod(filename, _mode(args))
            elif action.action == "write_tempfile":
                data = _body(args, variables)
                # ".py" unless told otherwise: the seed's Jupyter sample passes it as `--config`, which
                # Jupyter loads by its extension.
                suffix = str(args.get("suffix", ".py"))
                if os.sep in suffix:
                    raise ServiceError(f"suffix {suffix!r} contains {os.sep}")
                fd, result = tempfile.mkstemp(prefix=f"bai-{defn.name}-", suffix=suffix)
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(data)
                os.chmod(result, _mode(args))
            elif action.action == "mkdir":
                path = render(str(args.get("path", "")), variables)
                if not path:
                    raise ServiceError("mkdir needs a path")
                os.makedirs(path, exist_ok=True)
            elif action.action == "run_command":
                argv = [render(a, variables) for a in _str_list(args.get("command"), "run_command's command")]
                if not argv:
                    raise ServiceError("run_command needs a command")
                out, err = await _run_quick(argv, env, cwd)
                result = {"out": out, "err": err}
            elif action.action == "log":
                text = render(str(args.get("body", "")), variables)
                log.log(logging.DEBUG if args.get("debug") else logging.INFO, "%s: %s", defn.name, text)
        except OSError as e:
            raise ServiceError(f"prestart action {action.action} failed: {e}") from None
        except ServiceError as e:
            raise ServiceError(f"prestart action {action.action} failed: {e}") from None
        if action.ref:
            variables[action.ref] = result
    return variables


async def _run_quick(argv: list[str], env: Mapping[str, str], cwd: str) -> tuple[str, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(env),
        cwd=cwd,
        start_new_session=True,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), RUN_COMMAND_TIMEOUT)
    except BaseException:
        _killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        raise
    if proc.returncode:
        raise ServiceError(f"{argv[0]} exited with code {proc.returncode}: {_last_lines(err)}")
    return out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


# --------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _last_lines(data: bytes | bytearray, count: int = ERROR_LINES) -> str:
    text = bytes(data).decode("utf-8", "replace")
    lines = [line[:300] for line in text.splitlines() if line.strip()]
    return " | ".join(lines[-count:]) if lines else "(no output)"


def find_executable(name: str, env: Mapping[str, str], extra_dirs: Sequence[str] = ()) -> str | None:
    """``name`` when it is an executable path, else its location on ``PATH`` (plus ``extra_dirs``)."""
    if os.sep in name:
        return name if os.path.isfile(name) and os.access(name, os.X_OK) else None
    path = os.pathsep.join([env.get("PATH", os.defpath), *extra_dirs])
    return shutil.which(name, path=path)


async def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether ``host:port`` accepts a TCP connection now."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 1.0)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


class ServiceProcess:
    """One started app: its process (leader of its own process group) and the tail of its output."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process) -> None:
        self.name = name
        self.proc = proc
        self.output: deque[bytes] = deque()
        self._kept = 0
        self._reader = asyncio.ensure_future(self._drain())

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    async def _drain(self) -> None:
        # Reading all the output keeps the app from blocking on a full pipe; only the tail is kept.
        stream = self.proc.stdout
        assert stream is not None
        with contextlib.suppress(OSError, ValueError):
            while chunk := await stream.read(65536):
                self.output.append(chunk)
                self._kept += len(chunk)
                while self._kept > OUTPUT_KEEP and len(self.output) > 1:
                    self._kept -= len(self.output.popleft())

    def tail(self) -> str:
        return _last_lines(b"".join(self.output))

    async def wait_output(self) -> None:
        """Wait (briefly) until the output pipe reached its end, so that :meth:`tail` is complete."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._reader), 1.0)

    async def stop(self, grace: float = STOP_GRACE) -> None:
        """SIGTERM the app's process group, SIGKILL it after ``grace`` seconds."""
        pgid = self.proc.pid
        _killpg(pgid, signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), grace)
        except TimeoutError:
            pass
        # What the app started in its group goes too, even if the leader is gone already.
        _killpg(pgid, signal.SIGKILL)
        if self.proc.returncode is None:
            await self.proc.wait()
        self._reader.cancel()


# --------------------------------------------------------------------------------------
# Intrinsic apps
# --------------------------------------------------------------------------------------


def _check_key_path(path: Path) -> None:
    """Dropbear ignores keys when ``path`` is not its owner's or root's, or is writable by group or others."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return
    uid = os.getuid()
    if st.st_uid not in (uid, 0):
        raise ServiceError(f"{path} belongs to uid {st.st_uid}: dropbear would refuse the keys under it")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        if st.st_uid != uid:
            raise ServiceError(f"{path} is writable by group or others: dropbear would refuse the keys")
        os.chmod(path, stat.S_IMODE(st.st_mode) & ~(stat.S_IWGRP | stat.S_IWOTH))


async def _run_tool(argv: list[str], env: Mapping[str, str], cwd: str) -> str:
    try:
        out, _ = await _run_quick(argv, env, cwd)
    except OSError as e:
        raise ServiceError(f"cannot run {argv[0]}: {e.strerror}") from None
    return out


async def prepare_sshd(port: int, env: Mapping[str, str], workdir: str, key_dir: str = DROPBEAR_DIR) -> list[str]:
    """Set up the host key and the user's authorized key; the dropbear command line."""
    tools = {n: find_executable(n, env, ("/usr/sbin", "/sbin")) for n in ("dropbear", "dropbearkey", "dropbearconvert")}
    missing = [n for n, p in tools.items() if p is None]
    if missing:
        raise ServiceError(f"the executable file is not found: {', '.join(missing)} (dropbear is not installed)")
    dropbear, dropbearkey, dropbearconvert = (str(tools[n]) for n in ("dropbear", "dropbearkey", "dropbearconvert"))
    os.makedirs(key_dir, mode=0o700, exist_ok=True)
    host_key = os.path.join(key_dir, "dropbear_ed25519_host_key")
    if not os.path.exists(host_key):
        await _run_tool([dropbearkey, "-t", "ed25519", "-f", host_key], env, workdir)
    # Dropbear looks keys up in the passwd entry's home, whatever HOME says, and logs in only that user.
    try:
        home = Path(pwd.getpwuid(os.getuid()).pw_dir)
    except KeyError:
        raise ServiceError(f"uid {os.getuid()} has no entry in /etc/passwd: dropbear cannot log it in") from None
    ssh_dir = home / ".ssh"
    authorized = ssh_dir / "authorized_keys"
    if not authorized.exists():
        # No key from the agent (the user's keypair): make one and leave its private half, in OpenSSH
        # format, where the user can download it (``backend.ai ssh`` does).
        private = os.path.join(key_dir, "id_container")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(private)
        await _run_tool([dropbearkey, "-t", "ed25519", "-f", private], env, workdir)
        pub = await _run_tool([dropbearkey, "-y", "-f", private], env, workdir)
        line = next((ln for ln in pub.splitlines() if ln.startswith("ssh-")), None)
        if line is None:
            raise ServiceError("dropbearkey printed no public key")
        exported = home / "id_container"
        with contextlib.suppress(FileNotFoundError):
            exported.unlink()
        await _run_tool([dropbearconvert, "dropbear", "openssh", private, str(exported)], env, workdir)
        os.chmod(exported, 0o600)
        os.unlink(private)
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(authorized, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(line.strip() + "\n")
    for path in (home, ssh_dir, authorized):
        _check_key_path(path)
    return [
        dropbear,
        "-F",  # foreground: the runner supervises it
        "-E",  # log to stderr (kept for error reports)
        "-s",  # keys only: no password logins
        "-r",
        host_key,
        "-P",
        os.path.join(key_dir, "dropbear.pid"),  # the default, /var/run, is read-only
        "-p",
        f"0.0.0.0:{port}",
        "-K",
        "15",  # keepalive
        "-I",
        "0",  # no idle timeout
    ]


def ttyd_command(port: int, python: str = sys.executable) -> list[str]:
    """The web terminal (``webterm.py``) on ``port``."""
    return [python, "-I", str(WEBTERM_PATH), "--host", "0.0.0.0", "--port", str(port)]


# --------------------------------------------------------------------------------------
# The manager
# --------------------------------------------------------------------------------------


def _ports(raw: Any) -> list[int]:
    if raw is None:
        return []
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = [raw]
    if not isinstance(raw, list) or not all(
        isinstance(p, int) and not isinstance(p, bool) and 1 <= p <= 65535 for p in raw
    ):
        raise ServiceError("ports must be a list of TCP port numbers")
    return list(raw)


class ServiceManager:
    """The apps of one kernel: definitions, starts, stops."""

    def __init__(
        self,
        workdir: str,
        env: Mapping[str, str],
        runtime_path: str = sys.executable,
        defs_dir: str | os.PathLike[str] = SERVICE_DEFS_DIR,
        python: str = sys.executable,
        key_dir: str = DROPBEAR_DIR,
        start_timeouts: Mapping[str, float] | None = None,
    ) -> None:
        self.workdir = workdir
        #: The kernel's environment, read at each start (the runner's ``restart`` may update it).
        self.env = env
        self.runtime_path = runtime_path
        self.defs_dir = Path(defs_dir)
        self.python = python
        self.key_dir = key_dir
        self.start_timeouts = dict(START_TIMEOUTS if start_timeouts is None else start_timeouts)
        self.procs: dict[str, ServiceProcess] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._closing = False

    # -- definitions -------------------------------------------------------------------------

    def definition(self, name: str) -> ServiceDefinition | None:
        """The image's definition of ``name`` (``None`` when it has none); errors in it raise."""
        path = self.defs_dir / f"{name}.json"
        if not path.is_file():
            return None
        return load_definition(path)

    def list_apps(self) -> list[dict[str, Any]]:
        """The ``get_apps`` answer: the intrinsic apps, then every valid definition of the image."""
        apps: list[dict[str, Any]] = [{"name": name} for name in INTRINSIC_PORTS]
        try:
            paths = sorted(self.defs_dir.glob("*.json"))
        except OSError:
            paths = []
        for path in paths:
            name = path.stem
            if name in INTRINSIC_PORTS or not NAME_RE.match(name):
                continue
            try:
                apps.append(load_definition(path).app_info())
            except ServiceError as e:
                log.warning("ignoring the service definition %s: %s", path, e)
        return apps

    # -- start and stop ------------------------------------------------------------------------

    async def start(self, name: Any, ports: Any = None, protocol: Any = None, options: Any = None) -> dict[str, Any]:
        """Start app ``name``: ``{"status": "started" | "running" | "failed", "error"?}``."""
        if not isinstance(name, str) or not NAME_RE.match(name):
            return {"status": "failed", "error": f"invalid service name: {name!r}"}
        if protocol == "preopen":
            return {"status": "started"}  # the user's own process listens there; nothing to start
        if protocol == "pty":
            return {"status": "failed", "error": "pty services are not supported"}
        if self._closing:
            return {"status": "failed", "error": "the kernel is shutting down"}
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            current = self.procs.get(name)
            if current is not None and current.alive:
                return {"status": "running"}
            try:
                return await self._start(name, ports, options)
            except ServiceError as e:
                return {"status": "failed", "error": str(e)}

    async def _start(self, name: str, raw_ports: Any, raw_options: Any) -> dict[str, Any]:
        options = {} if raw_options is None else raw_options
        if not isinstance(options, dict):
            raise ServiceError("options must be an object")
        ports = _ports(raw_ports)
        env = dict(self.env)
        if name in INTRINSIC_PORTS:
            if options.get("arguments"):
                raise ServiceError(f"argument {next(iter(options['arguments']))} is not allowed for {name}")
            if options.get("envs"):
                raise ServiceError(f"environment variable {next(iter(options['envs']))} is not allowed for {name}")
            port = ports[0] if ports else INTRINSIC_PORTS[name]
            ports = [port]
            if await port_open(port):
                return {"status": "running"}  # someone (a user's own server) listens there already
            if name == "sshd":
                argv = await prepare_sshd(port, env, self.workdir, self.key_dir)
            else:
                argv = ttyd_command(port, self.python)
        else:
            defn = self.definition(name)
            if defn is None:
                raise ServiceError(f"unknown service: {name} (the image has no {self.defs_dir / name}.json)")
            user_envs = check_envs(defn, options.get("envs"), self.env)
            extra_args = build_arguments(defn, options.get("arguments"))
            if defn.noop:
                return {"status": "started"}
            if not ports:
                raise ServiceError(f"no container port given for {name}")
            if await port_open(ports[0]):
                return {"status": "running"}
            variables = await run_prestart(defn, {"ports": ports, "runtime_path": self.runtime_path}, env, self.workdir)
            env.update({k: render(v, variables) for k, v in defn.env.items()})
            env.update(user_envs)
            argv = [render(part, variables) for part in defn.command] + extra_args
        exe = find_executable(argv[0], env)
        if exe is None:
            raise ServiceError(f"the executable file is not found: {argv[0]}")
        timeout = self.start_timeouts.get(name, DEFAULT_START_TIMEOUT)
        return await self._spawn(name, [exe, *argv[1:]], env, ports[0], timeout)

    async def _spawn(
        self, name: str, argv: list[str], env: dict[str, str], port: int, timeout: float
    ) -> dict[str, Any]:
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                cwd=self.workdir,
                env=env,
                start_new_session=True,  # its own process group: a stop takes what it started too
            )
        except OSError as e:
            raise ServiceError(f"cannot start {argv[0]}: {e.strerror}") from None
        service = ServiceProcess(name, proc)
        self.procs[name] = service
        log.info("started %s (pid %d): %s", name, proc.pid, argv)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        exited = asyncio.ensure_future(proc.wait())
        try:
            while True:
                if exited.done():
                    await service.wait_output()
                    raise ServiceError(
                        f"{name} exited with code {proc.returncode} before opening port {port}: {service.tail()}"
                    )
                if await port_open(port):
                    return {"status": "started"}
                if loop.time() >= deadline:
                    await service.stop(grace=1.0)
                    raise ServiceError(
                        f"{name} did not open port {port} within {timeout:g} s (stopped it): {service.tail()}"
                    )
                await asyncio.wait({exited}, timeout=0.2)
        except BaseException:
            # Failed, timed out or cancelled (the agent went away): nothing half-started stays behind.
            if service.alive:
                await service.stop(grace=1.0)
            if self.procs.get(name) is service:
                del self.procs[name]
            raise
        finally:
            exited.cancel()

    async def shutdown(self, name: Any) -> dict[str, Any]:
        """Stop app ``name``: ``{"status": "stopped" | "not-running"}``."""
        if not isinstance(name, str):
            return {"status": "not-running"}
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            service = self.procs.pop(name, None)
            if service is None or not service.alive:
                return {"status": "not-running"}
            await service.stop()
            return {"status": "stopped"}

    async def close(self) -> None:
        """Stop every app (the runner is exiting)."""
        self._closing = True
        services = list(self.procs.values())
        self.procs.clear()
        if services:
            await asyncio.gather(*(s.stop(grace=1.0) for s in services), return_exceptions=True)
