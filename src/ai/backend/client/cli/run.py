"""``backend.ai run``: run a code snippet (query mode) or uploaded files (batch mode).

Program output goes to stdout/stderr as it arrives; status lines go to stderr.  Range
options (``--env-range``, ``--build-range``, ``--exec-range``) run one session per
combination, at most ``--max-parallel`` at a time, with each case's output written to
``~/.cache/backend.ai/client-logs/<name>.{stdout,stderr}.log``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any, TextIO

import click

from .hints import no_project_hint
from .params import (
    ENV_TYPE,
    RESOURCE_OPT_TYPE,
    RESOURCE_TYPE,
    Case,
    MountType,
    PortList,
    RangeExprType,
    SessionNameType,
    build_cases,
    pairs_to_dict,
    prepare_mount_arg,
)
from .pretty import Printer, with_request_id
from .waiting import WaitProgress, create_with_progress, format_max_wait_message, state_after_timeout

if TYPE_CHECKING:
    from pathlib import Path

    from ..func.session import ComputeSession
    from ..session import AsyncSession

__all__ = ("exec_loop", "format_stats", "normalize_exit_code", "run", "run_limited")

InputReader = Callable[[bool], str]


def _read_user_input(is_password: bool) -> str:
    """Read one line of user input (without echo for passwords); EOF gives ``""``."""
    try:
        if is_password:
            import getpass

            return getpass.getpass("")
        return input()
    except EOFError:
        return ""


def _format_record_data(data: Any) -> str:
    if isinstance(data, str):
        return data
    return json.dumps(data, ensure_ascii=False)


def print_result_output(result: Mapping[str, Any], stdout: TextIO, stderr: TextIO) -> None:
    """Write the console records (and generated files) of an execution result."""
    for rec in result.get("console") or []:
        if not isinstance(rec, (list, tuple)) or not rec:
            continue
        kind = str(rec[0])
        data = rec[1] if len(rec) > 1 else ""
        if kind == "stdout":
            stdout.write(_format_record_data(data))
            stdout.flush()
        elif kind == "stderr":
            stderr.write(_format_record_data(data))
            stderr.flush()
        else:
            stdout.write(f"----- output record (type: {kind}) -----\n")
            stdout.write(_format_record_data(data) + "\n")
            stdout.write("----- end of record -----\n")
            stdout.flush()
    files = result.get("files") or []
    if files:
        stdout.write("--- generated files ---\n")
        for item in files:
            if isinstance(item, Mapping):
                url, size = item.get("url"), item.get("size")
                if url and not str(url).startswith("data:"):
                    line = f"{item.get('name')}: {url}"
                else:  # a data URI (the content itself) is too long for a terminal
                    line = f"{item.get('name')}" + (f" ({size} bytes)" if size is not None else "")
                    line += "" if url else ", too large to return"
                stdout.write(line + "\n")
        stdout.write("--- end of generated files ---\n")
        stdout.flush()


async def exec_loop(
    compute_session: Any,
    mode: str,
    code: str,
    *,
    opts: Mapping[str, Any] | None = None,
    stdout: TextIO,
    stderr: TextIO,
    printer: Printer,
    idx: int = 0,
    read_input: InputReader = _read_user_input,
) -> int | None:
    """Drive one run through the execution state machine and return its exit code.

    ``continued``/``clean-finished``/``build-finished`` continue the run, ``waiting-input``
    sends a line read from the user, ``finished`` ends it.
    """
    run_id: str | None = None
    next_opts: Mapping[str, Any] | None = opts
    while True:
        result = await compute_session.execute(run_id, code, mode=mode, opts=next_opts)
        run_id = result.get("runId") or run_id
        next_opts = None
        print_result_output(result, stdout, stderr)
        status = result.get("status")
        exit_code = result.get("exitCode")
        if status == "clean-finished":
            printer.done(f"[{idx}] Clean finished. (exit code = {exit_code})")
            mode, code = "continue", ""
        elif status == "build-finished":
            printer.done(f"[{idx}] Build finished. (exit code = {exit_code})")
            mode, code = "continue", ""
        elif status == "finished":
            printer.done(f"[{idx}] Execution finished. (exit code = {exit_code})")
            return int(exit_code) if isinstance(exit_code, (int, float)) else None
        elif status == "continued":
            mode, code = "continue", ""
        elif status == "waiting-input":
            options = result.get("options") or {}
            mode, code = "input", read_input(bool(options.get("is_password", False)))
        elif status == "exec-timeout":
            printer.fail(f"[{idx}] Execution timed out.")
            return int(exit_code) if isinstance(exit_code, int) and exit_code > 0 else 1
        else:
            printer.fail(f"[{idx}] Unexpected execution status: {status!r}")
            return 1


def normalize_exit_code(code: int | None) -> int:
    """Map a kernel exit code to a process exit code (unknown → 0, out of range → 1)."""
    if code is None:
        return 0
    return code if 0 <= code <= 255 else 1


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def format_stats(stats: Mapping[str, Any]) -> str:
    """Render a container stats object as aligned ``key  value`` lines."""
    rows: list[tuple[str, str]] = []
    for key, val in stats.items():
        if key in ("version", "status"):
            continue
        if isinstance(val, Mapping):  # v2 metric objects
            unit = str(val.get("unit_hint", ""))
            current = val.get("stats.max", val.get("current")) if unit == "bytes" else val.get("current")
            if unit == "bytes" and current is not None:
                rows.append((key, _human_bytes(float(current))))
            elif unit == "percent":
                rows.append((key, f"{val.get('pct', current)} %"))
            else:
                rows.append((key, f"{current} {unit}".strip()))
        elif isinstance(val, (int, float)) and (key.endswith("_bytes") or key.endswith("_size")):
            rows.append((key, _human_bytes(float(val))))
        elif isinstance(val, (int, float)):
            rows.append((f"{key}_msec" if key == "cpu_used" else key, f"{val:,}"))
        else:
            rows.append((key, str(val)))
    width = max((len(k) for k, _ in rows), default=0)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


async def run_limited(jobs: Sequence[Callable[[], Awaitable[int]]], max_parallel: int) -> list[int]:
    """Run the job factories with at most *max_parallel* of them in flight; return their results."""
    import asyncio

    if max_parallel < 1:
        raise ValueError("max_parallel must be at least 1")
    sem = asyncio.Semaphore(max_parallel)

    async def _guarded(job: Callable[[], Awaitable[int]]) -> int:
        async with sem:
            return await job()

    return list(await asyncio.gather(*(_guarded(job) for job in jobs)))


class RunOptions:
    """The options of one ``run`` invocation that every case shares."""

    def __init__(self, **kwargs: Any) -> None:
        self.image: str = kwargs["image"]
        self.files: tuple[str, ...] = kwargs["files"]
        self.code: str | None = kwargs["code"]
        self.type_: str = kwargs["type_"]
        self.starts_at: str | None = kwargs["starts_at"]
        self.enqueue_only: bool = kwargs["enqueue_only"]
        self.max_wait: int = kwargs["max_wait"]
        self.no_reuse: bool = kwargs["no_reuse"]
        self.callback_url: str | None = kwargs["callback_url"]
        self.clean: str | None = kwargs["clean"]
        self.basedir: str | None = kwargs["basedir"]
        self.bootstrap_script: str | None = kwargs["bootstrap_script"]
        self.rm: bool = kwargs["rm"]
        self.stats: bool = kwargs["stats"]
        self.tag: str | None = kwargs["tag"]
        self.mounts: list[str] = kwargs["mounts"]
        self.mount_map: dict[str, str] = kwargs["mount_map"]
        self.scaling_group: str | None = kwargs["scaling_group"]
        self.resources: dict[str, str] = kwargs["resources"]
        self.resource_opts: dict[str, str] = kwargs["resource_opts"]
        self.cluster_size: int = kwargs["cluster_size"]
        self.cluster_mode: str = kwargs["cluster_mode"]
        self.domain: str | None = kwargs["domain"]
        self.group: str | None = kwargs["group"]
        self.preopen: list[int] | None = kwargs["preopen"]
        self.assign_agent: list[str] | None = kwargs["assign_agent"]


def _log_dir() -> Path:
    from pathlib import Path

    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "backend.ai" / "client-logs"


async def _run_case(
    session: AsyncSession,
    idx: int,
    name: str,
    case: Case,
    opts: RunOptions,
    printer: Printer,
    *,
    is_multi: bool,
) -> int:
    """Create the session of one case, run its code or files, and clean up; return the exit code."""
    from ..exceptions import BackendError

    progress = WaitProgress(name, prefix=f"[{idx}] ", enabled=not printer.quiet, live=False if is_multi else None)

    async def _create() -> ComputeSession:
        return await session.ComputeSession.get_or_create(
            opts.image,
            name=name,
            type_=opts.type_,
            starts_at=opts.starts_at,
            enqueue_only=opts.enqueue_only,
            max_wait=opts.max_wait,
            no_reuse=opts.no_reuse,
            callback_url=opts.callback_url,
            mounts=opts.mounts,
            mount_map=opts.mount_map,
            envs=dict(case.envs),
            resources=opts.resources,
            resource_opts=opts.resource_opts,
            cluster_size=opts.cluster_size,
            cluster_mode="multi-node" if opts.cluster_mode == "multi-node" else "single-node",
            domain_name=opts.domain,
            group_name=opts.group,
            scaling_group=opts.scaling_group,
            bootstrap_script=opts.bootstrap_script,
            tag=opts.tag,
            preopen_ports=opts.preopen,
            assign_agent=opts.assign_agent,
        )

    try:
        if opts.enqueue_only:
            compute_session = await _create()
        else:
            compute_session = await create_with_progress(_create, session.ComputeSession(name).get_info, progress)
    except BackendError as e:
        printer.fail(with_request_id(f"[{idx}] {e}", e))
        hint = await no_project_hint(session, e)
        if hint:
            printer.hint(hint)
        return 1
    status = compute_session.status
    if status == "PENDING":
        printer.info(f"Session ID {name} is enqueued for scheduling.")
        return 0
    if status == "SCHEDULED":
        printer.info(f"Session ID {name} is scheduled and about to be started.")
        return 0
    if status == "TIMEOUT":
        last = await state_after_timeout(compute_session, progress)
        destroyed = False
        if opts.rm:
            try:
                await compute_session.destroy()
                destroyed = True
            except BackendError as e:
                printer.fail(f"[{idx}] Failed to clean up the session: {e}")
        printer.fail(f"[{idx}] " + format_max_wait_message(name, opts.max_wait, *last, destroyed=destroyed))
        return 1
    if status == "TERMINATED":
        printer.warn(f"Session ID {name} is already terminated.\nThis may be an error in the kernel image.")
        return 1
    if status in ("ERROR", "CANCELLED"):
        printer.fail(
            f"Session ID {name} has an error during scheduling/startup or cancelled."
            + (f" ({compute_session.status_info})" if compute_session.status_info else "")
        )
        return 1
    if status != "RUNNING":
        printer.info(f"Session ID {name} is not running yet (status: {status}).")
        return 0
    if compute_session.created:
        printer.done(f"[{idx}] Session {compute_session.name} is ready.")
    else:
        printer.done(f"[{idx}] Reusing session {compute_session.name}...")

    stdout: TextIO = sys.stdout
    stderr: TextIO = sys.stderr
    log_files: list[IO[str]] = []
    if is_multi:
        log_dir = _log_dir()
        log_dir.mkdir(parents=True, exist_ok=True)
        stdout = open(log_dir / f"{name}.stdout.log", "w", encoding="utf-8")  # noqa: SIM115
        stderr = open(log_dir / f"{name}.stderr.log", "w", encoding="utf-8")  # noqa: SIM115
        log_files = [stdout, stderr]
    exit_code = 1
    try:
        if opts.files:
            printer.wait(f"[{idx}] Uploading source files...")
            await compute_session.upload(
                list(opts.files), basedir=opts.basedir, show_progress=not is_multi and not printer.quiet
            )
            printer.done(f"[{idx}] Uploading done.")
            batch_opts = {"clean": opts.clean or "*", "build": case.build, "exec": case.exec}
            code = await exec_loop(
                compute_session,
                "batch",
                "",
                opts=batch_opts,
                stdout=stdout,
                stderr=stderr,
                printer=printer,
                idx=idx,
            )
        else:
            code = await exec_loop(
                compute_session,
                "query",
                opts.code or "",
                stdout=stdout,
                stderr=stderr,
                printer=printer,
                idx=idx,
            )
        exit_code = normalize_exit_code(code)
    except BackendError as e:
        printer.fail(with_request_id(f"[{idx}] {e}", e))
        exit_code = 1
    finally:
        for f in log_files:
            f.close()
        if opts.rm:
            printer.wait(f"[{idx}] Cleaning up the session...")
            try:
                ret = await compute_session.destroy()
            except BackendError as e:
                printer.fail(f"[{idx}] Failed to clean up the session: {e}")
                exit_code = exit_code or 1
            else:
                printer.done(f"[{idx}] Cleaned up the session.")
                if opts.stats:
                    stats = ret.get("stats") if ret else None
                    if stats:
                        printer.info(f"[{idx}] Statistics:\n{format_stats(stats)}")
                    else:
                        printer.warn(f"[{idx}] Statistics: unavailable.")
    return exit_code


async def _run_cases(cases: list[Case], name_prefix: str, opts: RunOptions, printer: Printer, max_parallel: int) -> int:
    from ..session import AsyncSession

    is_multi = len(cases) > 1
    async with AsyncSession() as session:
        jobs = [
            (
                lambda idx=idx, case=case: _run_case(
                    session,
                    idx,
                    f"{name_prefix}-{idx}" if is_multi else name_prefix,
                    case,
                    opts,
                    printer,
                    is_multi=is_multi,
                )
            )
            for idx, case in enumerate(cases)
        ]
        results = await run_limited(jobs, max_parallel)
    if is_multi:
        if any(results):
            printer.fail("There were failed cases!")
            return 1
        return 0
    return results[0]


@click.command()
@click.argument("image", type=str)
@click.argument("files", nargs=-1, type=click.Path())
@click.option(
    "-t",
    "--name",
    "--client-token",
    "name",
    metavar="NAME",
    type=SessionNameType(),
    help="Session name (or name prefix with range options); random if not set.",
)
@click.option("--type", "type_", type=click.Choice(["batch", "interactive"]), default="interactive")
@click.option("--starts-at", metavar="STARTS_AT", help="Start the session at this (or a relative) time.")
@click.option("--enqueue-only", is_flag=True, help="Only enqueue the session; do not wait or run code.")
@click.option(
    "--max-wait",
    metavar="SECONDS",
    type=click.IntRange(min=0),
    default=0,
    help="Give up waiting for the session to start after this long (exit 1; kept, destroyed with --rm; 0: no limit).",
)
@click.option("--no-reuse", is_flag=True, help="Fail instead of reusing a session with the same name.")
@click.option("--callback-url", metavar="URL", help="URL called on session lifecycle events.")
@click.option("-c", "--code", metavar="CODE", help="The code snippet to run (query mode).")
@click.option("--clean", metavar="CMD", help="Shell command to clean up before building (batch mode).")
@click.option("--build", metavar="CMD", help="Shell command to build the files (default: '*').")
@click.option("--exec", "exec_", metavar="CMD", help="Shell command to run the files (default: '*').")
@click.option(
    "--basedir",
    metavar="PATH",
    type=click.Path(file_okay=False),
    default=None,
    help="Base directory of the uploaded files (default: the current directory).",
)
@click.option("-e", "--env", metavar="KEY=VAL", type=ENV_TYPE, multiple=True, help="Environment variable.")
@click.option("--bootstrap-script", metavar="PATH", type=click.File("r"), help="A script to run on startup.")
@click.option("--rm", is_flag=True, help="Terminate the session after running the code or files.")
@click.option("-s", "--stats", is_flag=True, help='Show resource usage statistics (with "--rm").')
@click.option("--tag", type=str, default=None, help="A user-defined tag of the session.")
@click.option("-q", "--quiet", is_flag=True, help="Show only the program output, no status messages.")
@click.option(
    "--env-range", metavar="RANGE_EXPR", multiple=True, type=RangeExprType(), help="Range of an env variable."
)
@click.option(
    "--build-range",
    metavar="RANGE_EXPR",
    multiple=True,
    type=RangeExprType(),
    help="Range in the build command.",
)
@click.option(
    "--exec-range",
    metavar="RANGE_EXPR",
    multiple=True,
    type=RangeExprType(),
    help="Range in the exec command.",
)
@click.option(
    "--max-parallel",
    metavar="NUM",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="The maximum number of sessions running at once.",
)
@click.option(
    "-v",
    "--volume",
    "-m",
    "--mount",
    "mount",
    metavar="NAME[=PATH]",
    type=MountType(),
    multiple=True,
    help="Virtual folder to mount (at /home/work/NAME unless PATH is given).",
)
@click.option("--scaling-group", "--sgroup", type=str, default=None, help="The scaling group to use.")
@click.option(
    "-r",
    "--resources",
    "--resource",
    "resources",
    metavar="KEY=VAL",
    type=RESOURCE_TYPE,
    multiple=True,
    help="Resource slot, e.g. -r cpu=2 -r mem=4g -r cuda.shares=0.5.",
)
@click.option("--cluster-size", metavar="NUMBER", type=click.IntRange(min=1), default=1)
@click.option("--cluster-mode", type=click.Choice(["single-node", "multi-node"]), default="single-node")
@click.option("--resource-opts", metavar="KEY=VAL", type=RESOURCE_OPT_TYPE, multiple=True, help="e.g. shmem=64m.")
@click.option("-d", "--domain", metavar="DOMAIN_NAME", default=None, help="Domain of the session.")
@click.option("-g", "--group", metavar="GROUP_NAME", default=None, help="Group (project) of the session.")
@click.option("--preopen", type=PortList(), default=None, help="Ports to pre-open, e.g. 8000,8001.")
@click.option("--assign-agent", type=click.STRING, default=None, help="Agents to use (comma-separated; admins).")
def run(
    image: str,
    files: tuple[str, ...],
    name: str | None,
    type_: str,
    starts_at: str | None,
    enqueue_only: bool,
    max_wait: int,
    no_reuse: bool,
    callback_url: str | None,
    code: str | None,
    clean: str | None,
    build: str | None,
    exec_: str | None,
    basedir: str | None,
    env: tuple[tuple[str, str], ...],
    bootstrap_script: IO[str] | None,
    rm: bool,
    stats: bool,
    tag: str | None,
    quiet: bool,
    env_range: tuple[tuple[str, tuple[str, ...]], ...],
    build_range: tuple[tuple[str, tuple[str, ...]], ...],
    exec_range: tuple[tuple[str, tuple[str, ...]], ...],
    max_parallel: int,
    mount: tuple[str, ...],
    scaling_group: str | None,
    resources: tuple[tuple[str, str], ...],
    cluster_size: int,
    cluster_mode: str,
    resource_opts: tuple[tuple[str, str], ...],
    domain: str | None,
    group: str | None,
    preopen: list[int] | None,
    assign_agent: str | None,
) -> None:
    """Run a code snippet (-c) or files in a compute session.

    \b
    IMAGE: the kernel image (name[:tag]) or its alias, e.g. python.
    FILES: files to upload and run in batch mode (--build/--exec).

    The exit code is the program's exit code.  The session stays alive unless --rm is given.
    """
    if files and code is not None:
        raise click.UsageError("You can run only either source files or a command-line code snippet.")
    if not files and code is None:
        raise click.UsageError('Give the code snippet with the "-c" option if you run without files.')
    mounts, mount_map = prepare_mount_arg(mount)
    cases = build_cases(
        pairs_to_dict(env),
        build,
        exec_,
        env_ranges=env_range,
        build_ranges=build_range,
        exec_ranges=exec_range,
    )
    opts = RunOptions(
        image=image,
        files=files,
        code=code,
        type_=type_,
        starts_at=starts_at,
        enqueue_only=enqueue_only,
        max_wait=max_wait,
        no_reuse=no_reuse,
        callback_url=callback_url,
        clean=clean,
        basedir=basedir,
        bootstrap_script=bootstrap_script.read() if bootstrap_script is not None else None,
        rm=rm,
        stats=stats,
        tag=tag,
        mounts=mounts,
        mount_map=mount_map,
        scaling_group=scaling_group,
        resources=pairs_to_dict(resources),
        resource_opts=pairs_to_dict(resource_opts),
        cluster_size=cluster_size,
        cluster_mode=cluster_mode,
        domain=domain,
        group=group,
        preopen=preopen,
        assign_agent=[a.strip() for a in assign_agent.split(",") if a.strip()] if assign_agent else None,
    )
    from .core import get_cli_context

    get_cli_context().get_config()
    printer = Printer(quiet=quiet)
    if name is None:
        import secrets

        name = secrets.token_hex(5)
    printer.info(f"Session name prefix: {name}")
    if len(cases) > 1:
        printer.info("Running multiple sessions for the following combinations:")
        for case in cases:
            pretty_env = " ".join(f"{k}={v}" for k, v in case.envs)
            printer.info(f"env = {pretty_env!r}, build = {case.build!r}, exec = {case.exec!r}")
        printer.info(f"Check out the stdout/stderr logs stored in the {_log_dir()} directory.")
    import asyncio

    exit_code = asyncio.run(_run_cases(cases, name, opts, printer, max_parallel))
    sys.stdout.flush()
    sys.exit(exit_code)
