"""The Trio shell around the policy: one sandboxed run, start to cleanup.

Per run: a fresh job directory (the command's files written into it, owned by
the unprivileged user when the worker is root), a scrubbed environment, stdin
closed, rlimits and the privilege drop applied in the child before exec (by a
pre-forked child of the fork server, or a ``preexec_fn``: see ``_spawn``), a new
session, and namespaces (bubblewrap's, or the kernel's made by the fork
server: see ``_namespaces``) unless the policy says ``isolate="never"``. A uid
leased host-wide (``_uids``) and a cgroup per run (``_cgroup``) where the host
allows one carry the run's budgets. Output is read in chunks and kept up to the
cap; the rest is read and thrown away, so a flood cannot grow memory or block
the child. However the run ends (exit, timeout, budget, cancellation),
``_terminate`` kills the group, then everything left in the run's cgroup (or
running as its uid), every process marked with the run's token or seen
descending from it, until nothing is left, and reaps what it killed.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import grp
import math
import os
import pwd
import resource
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import attrs
import structlog
import trio

from .._errors import CommandRefused, IsolationUnavailable, SandboxError, SandboxTimeout
from .._exports import publish
from ..observability._current import emit_here
from ..observability._feature_events import SandboxRan
from . import _cgroup, _jobdir, _reaper, _scratch, _spawn, _uids
from ._bwrap import FILTER_ARG, READ_ONLY, SIZE_OPTION, bwrap_argv, room
from ._namespaces import FILTER_PROGRAM
from ._policy import SandboxPolicy, check, check_run, resolve_allowed

_log = structlog.get_logger("guild.sandbox")
# Sandbox children Trio itself waits for: never reaped by the orphan sweep.
_DIRECT: set[int] = set()
_CHUNK = 65536
_MARKER = b"\n[guild: output truncated at %d bytes]\n"
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
# The most file names a result lists (files_omitted says how many more there were;
# the list also takes at most _jobdir.LISTED_CHARS characters as JSON).
FILES_REPORTED = 1000
# How often a running run's cgroup is read for a budget it went over.
_WATCH_INTERVAL = 0.025
# Once every process of a run is dead, its pipes are at end of file; this bounds
# the read of what is left in them in case something still holds them open.
_DRAIN_GRACE = 0.05
_NAMESPACE_SCRIPT = str(Path(__file__).with_name("_namespaces.py"))
# Leases tried in a row when each uid turns out to have a process running as it.
_UID_ATTEMPTS = 8


class _UidInUse(SandboxError):
    """A spawn found a process running as the run's leased uid (nothing ran)."""

    def __init__(self, uid: int) -> None:
        super().__init__(f"uid {uid} has a process running as it")
        self.uid = uid


@attrs.frozen(kw_only=True)
class SandboxResult:
    """What one run did."""

    argv: tuple[str, ...]
    exit_code: int
    stdout: bytes
    stderr: bytes
    stdout_truncated: bool
    stderr_truncated: bool
    duration: float
    files_created: tuple[str, ...]
    workdir: str | None
    isolated: bool
    isolation: str = "none"
    budget_exceeded: str | None = None
    files_created_truncated: bool = False
    files_omitted: int = 0


@attrs.define
class _Capture:
    cap: int
    data: bytearray = attrs.Factory(bytearray)
    total: int = 0

    def feed(self, chunk: bytes | bytearray) -> None:
        self.total += len(chunk)
        room = self.cap - len(self.data)
        if room > 0:
            self.data += chunk[:room]

    @property
    def truncated(self) -> bool:
        return self.total > self.cap

    def value(self) -> bytes:
        return bytes(self.data) + (_MARKER % self.cap if self.truncated else b"")


@functools.cache
def _filter_source() -> _spawn.Sealed | None:
    """Kernel mode's system-call filter for bwrap's ``--seccomp``, in a memfd made
    once per process; None on a machine the filter does not know."""
    return _spawn.Sealed(FILTER_PROGRAM) if FILTER_PROGRAM else None


def _bwrap_works(bwrap: str, root: bool) -> str | None:
    """None when ``bwrap`` makes the namespaces here, installs the runs' filter and
    mounts their scratch as runs do (``root``: bound from a directory, else a
    sized tmpfs of its own); else what it said."""
    present = [p for p in READ_ONLY if os.path.exists(p)]
    try:
        source = _filter_source()
        fds = (source.open(),) if source is not None else ()
    except OSError as exc:
        return f"the system-call filter could not be made ({exc})"
    try:
        with contextlib.ExitStack() as stack:
            scratch = ""
            if root:
                # Plain directories of the shape _scratch makes: the probe
                # checks the options, not the budgets.
                scratch = stack.enter_context(tempfile.TemporaryDirectory(prefix="guild-probe-"))
                for place in ("tmp", "shm", "pts"):
                    os.mkdir(os.path.join(scratch, place))
            probe = bwrap_argv(
                bwrap, "/", present, bool(FILTER_PROGRAM), scratch=scratch, size=1 << 20
            )
            if fds:
                probe[FILTER_ARG] = str(fds[0])
            run = subprocess.run(
                [*probe, "/bin/true"], capture_output=True, timeout=10, check=False, pass_fds=fds
            )
        if run.returncode == 0:
            return None
        return run.stderr.decode(errors="replace").strip() or f"exit status {run.returncode}"
    except (OSError, subprocess.SubprocessError) as exc:
        return str(exc)
    finally:
        for fd in fds:
            os.close(fd)


@functools.cache
def _bwrap_problem() -> tuple[str | None, str | None]:
    """(the usable bwrap, None) or (None, why bubblewrap cannot isolate here); once per process.

    Without root a run's /tmp and /dev/shm are bwrap's own tmpfs of
    ``tmpfs_size`` (``--size``): a bwrap too old for it is refused, naming it,
    rather than run with a scratch no budget bounds (``isolate="auto"`` then
    gets kernel mode, which holds it)."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return None, "bwrap: not installed (not on PATH)"
    said = _bwrap_works(bwrap, os.geteuid() == 0)
    if said is None:
        return bwrap, None
    if f"Unknown option {SIZE_OPTION}" in said:
        return None, (
            f"bwrap: {bwrap} has no {SIZE_OPTION} option (bubblewrap 0.7.0 or later is needed"
            " to hold a run's /tmp and /dev/shm to tmpfs_size)"
        )
    return None, f"bwrap: {bwrap} cannot create namespaces (or filter system calls) here ({said})"


@functools.cache
def _kernel_problem() -> str | None:
    """None when the fork server can make namespaces itself, else what is missing; once
    per process (a helper interpreter tries every step, so the worker never forks)."""
    if not (hasattr(os, "pidfd_open") and _reaper.become_subreaper()):
        return "kernel: needs Linux 5.3+ (pidfd_open) and a child subreaper"
    try:
        probe = subprocess.run(
            [sys.executable, "-I", "-S", "-B", _NAMESPACE_SCRIPT],
            capture_output=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"kernel: the namespace probe did not run ({exc})"
    if probe.returncode == 0:
        return None
    why = probe.stdout.decode(errors="replace").strip() or f"exit status {probe.returncode}"
    return f"kernel: {why} (root, or unprivileged user namespaces, are needed)"


def host_isolation() -> str:
    """The isolation ``isolate="auto"`` gets on this host: ``"bwrap"``, ``"kernel"`` or
    ``"none"`` (then an auto sandbox refuses to build). For banners and health checks."""
    if _bwrap_problem()[0] is not None:
        return "bwrap"
    return "kernel" if _kernel_problem() is None else "none"


# The per-run budgets a policy sets, by field name (SandboxPolicy).
BUDGETS = (
    "memory",
    "processes",
    "run_cpu_seconds",
    "tmpfs_size",
    "tmpfs_inodes",
    "disk_bytes",
    "disk_inodes",
)


def unenforced_budgets(
    isolation: str, root: bool, cgroups: bool, uid_leases: bool
) -> dict[str, str]:
    """Pure: which of :data:`BUDGETS` a run here is *not* held to over all its
    processes, each with the reason (empty when every one holds).

    ``cgroups``: a cgroup per run can be made; ``uid_leases``: each run has a uid
    of its own (a root worker with a ``uid_pool``). The scratch tmpfs budgets
    apply to the isolating modes (``"none"`` shares the host's /tmp: an
    explicit choice).

    * memory and CPU time over all processes need a cgroup;
    * the process count needs a cgroup, or an ``RLIMIT_NPROC`` that counts the
      run's processes only: those of a uid of its own, or of the worker's uid in
      the run's own user namespace (kernel mode without root, where the kernel
      counts the processes of a uid per user namespace);
    * the job directory's bytes and inodes need the tmpfs a root worker mounts;
    * under bwrap without root, the scratch is bwrap's own tmpfs, which takes a
      size but no inode limit.
    """
    missing: dict[str, str] = {}
    if not cgroups:
        why = "no cgroup can be made here (root, or a delegated cgroup, is needed)"
        missing["memory"] = why
        missing["run_cpu_seconds"] = why
        own_count = uid_leases or (isolation == "kernel" and not root)
        if not own_count:
            missing["processes"] = why + " and the runs share one uid's process count"
    if not root:
        why = "the job directory's tmpfs needs a root worker"
        missing["disk_bytes"] = why
        missing["disk_inodes"] = why
        if isolation == "bwrap":
            missing["tmpfs_inodes"] = (
                "bwrap's own tmpfs takes no inode limit; the scratch a root worker"
                " makes for it does"
            )
    return missing


def _resolve_isolation(isolate: str) -> tuple[str, str | None]:
    """The mode a policy's ``isolate`` gets here, and the bwrap to use.

    Raises:
        IsolationUnavailable: isolation was asked for and the mode(s) it allows lack
            what they need (named).
    """
    if isolate == "never":
        return "none", None
    missing: list[str] = []
    if isolate in ("auto", "always", "bwrap"):
        bwrap, problem = _bwrap_problem()
        if bwrap is not None:
            return "bwrap", bwrap
        missing.append(problem or "bwrap: unusable")
    if isolate in ("auto", "always", "kernel"):
        problem = _kernel_problem()
        if problem is None:
            return "kernel", None
        missing.append(problem)
    raise IsolationUnavailable(tuple(missing))


class Sandbox:
    """Runs argvs under a :class:`SandboxPolicy`.

    Resolves the allowed executables and chooses the isolation mode once, at
    construction (the host's probes run once per process).

    Raises:
        IsolationUnavailable: the policy asks for isolation and this host offers
            none of the modes it allows (the message names what each lacks).
        SandboxError: the worker is root and the policy's user or group does not exist.
    """

    def __init__(self, policy: SandboxPolicy | None = None) -> None:
        self.policy = policy or SandboxPolicy.default()
        self._table = resolve_allowed(self.policy)
        self._isolation, self._bwrap = _resolve_isolation(self.policy.isolate)
        self._present = [p for p in READ_ONLY if os.path.exists(p)]
        # Kernel mode's system-call filter, which bwrap installs for each run
        # (``--seccomp``; None on a machine the filter does not know). Made by
        # the probe that chose bwrap, which could open it.
        self._filter = _filter_source() if self._bwrap else None
        self._root = os.geteuid() == 0
        # As root a bwrap run's scratch is made on the host (_scratch); else it
        # is bwrap's own tmpfs of tmpfs_size.
        self._bwrap_room = room(self._present, self._filter is not None, scratch=self._root)
        self._jobs = _jobdir.parent(self._root)
        self._user = (0, 0)
        if self._root:
            try:
                self._user = (
                    pwd.getpwnam(self.policy.user).pw_uid,
                    grp.getgrnam(self.policy.group).gr_gid,
                )
            except KeyError as exc:
                raise SandboxError(f"sandbox user/group not found: {exc}") from exc
        self._unenforced = unenforced_budgets(
            self._isolation,
            self._root,
            _cgroup.layout() is not None,
            self._root and self.policy.uid_pool is not None,
        )
        if self._unenforced:
            _log.warning(
                "sandbox_budgets_unenforced",
                isolation=self._isolation,
                unenforced=self._unenforced,
            )

    @property
    def isolated(self) -> bool:
        """Whether runs get namespaces (bubblewrap's or the kernel's)."""
        return self._isolation != "none"

    @property
    def isolation(self) -> str:
        """The isolation in force: ``"bwrap"``, ``"kernel"`` or ``"none"``."""
        return self._isolation

    @property
    def unenforced(self) -> dict[str, str]:
        """The policy's per-run budgets (field names) this host cannot hold a run to,
        each with the reason; empty when all hold (see :func:`unenforced_budgets`)."""
        return dict(self._unenforced)

    def check(self, argv: Sequence[str], env: Mapping[str, str] | None = None) -> tuple[str, ...]:
        """The argv that would run, or :class:`CommandRefused` naming the rule (no process)."""
        resolved = check(argv, self._table, self.policy, env)
        if self._bwrap and len(resolved) > self._bwrap_room:
            # Else bwrap itself refuses it, and the run "exits 1" with its message.
            raise CommandRefused(
                "bad-argv",
                tuple(argv),
                f"{len(resolved)} arguments; bwrap runs a command of {self._bwrap_room} at most",
            )
        return resolved

    async def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        files: Mapping[str, bytes] | None = None,
        env: Mapping[str, str] | None = None,
        requested_by: str | None = None,
    ) -> SandboxResult:
        """Run ``argv`` in a fresh job directory; kill everything it started when done.

        Raises:
            CommandRefused: the policy refused it (no process was started).
            SandboxTimeout: it ran past ``timeout``; carries the output so far.
        """
        try:
            resolved = self.check(argv, env)
            seconds = check_run(argv, timeout, files or {}, self.policy, self._table)
        except CommandRefused as refused:
            _log.warning(
                "sandbox_refused",
                argv=list(refused.argv),
                rule=refused.rule,
                detail=refused.detail,
                requested_by=requested_by,
            )
            emit_here(
                "sandbox_ran",
                SandboxRan(
                    argv=tuple(refused.argv),
                    exit_code=None,
                    duration=0.0,
                    refused_rule=refused.rule,
                ),
            )
            raise
        prove = self._spare_proves_uid()
        for attempt in range(_UID_ATTEMPTS):
            try:
                return await self._run_once(
                    resolved, seconds, files or {}, env or {}, requested_by, prove
                )
            except _UidInUse as busy:
                _log.warning("sandbox_uid_in_use", uid=busy.uid, attempt=attempt + 1)
        raise SandboxError(f"{_UID_ATTEMPTS} leased uids in a row had processes running as them")

    def _spare_proves_uid(self) -> bool:
        """Whether the spawn shows that no process runs as the run's uid (a fork-server
        spare does: ``_forkserver.apply_in_child``); else the lease scans the host's
        /proc for it."""
        if not (self._root and self.policy.uid_pool):
            return False
        return self._isolation == "kernel" or _spawn.server() is not None

    async def _run_once(
        self,
        resolved: tuple[str, ...],
        seconds: float,
        files: Mapping[str, bytes],
        env: Mapping[str, str],
        requested_by: str | None,
        prove: bool,
    ) -> SandboxResult:
        """One attempt of :meth:`run`: lease a uid, make the directory, run, clean up.

        Raises:
            _UidInUse: the spawn found a process running as the leased uid; nothing ran.
        """
        pool = self.policy.uid_pool
        lease = _uids.acquire(pool, scan=not prove) if self._root and pool else None
        identity = (lease.uid, self._user[1]) if lease else self._user if self._root else None
        job: _jobdir.JobDir | None = None
        # A bwrap run's scratch on the host (root only: _scratch), or "".
        scratch = ""
        # What _run leaves for after the result: the fork server's child, whose
        # mount namespace is dropped and, in kernel mode, whose PID 1 is reaped then.
        deferred: list[_spawn.Child] = []
        try:
            budget = self._disk_budget()
            # A kernel-isolated run gets its tmpfs detached from the host's tree
            # (no host mount, unmount or rmdir: see _jobdir); keep_dir needs one
            # on the host, to be found after the run.
            detached = (
                self._isolation == "kernel" and not self.policy.keep_dir and _jobdir.can_detach()
            )
            # Positional: the 200-run test records make()'s arguments as given.
            make = functools.partial(_jobdir.make, self._jobs, identity, budget, files, detached)
            # A thread keeps big writes, walks and removals off the event loop, and
            # mounts and unmounts too: they wait for the host's mount lock, which
            # other processes' mounts and namespaces hold for tens of milliseconds
            # under load (an rmdir of an unmounted job directory stalled the loop
            # for 60 ms in the 200-run test). Only a small directory without a
            # host mount, and in memory (detached, or a parent on a tmpfs: on a
            # disk a mkdir waits for the journal, 95 ms under load), is made
            # here, cheaper than the trip to a thread (~40 µs, and milliseconds
            # when the host is loaded).
            in_memory = detached if budget is not None else _jobdir.in_memory(self._jobs)
            made: _jobdir.JobDir
            if self._bwrap and identity is not None:
                # As root a bwrap run's /tmp, /dev/shm and ptys are made here,
                # with the job directory, in the same thread (mounts).
                made, scratch = await trio.to_thread.run_sync(
                    self._make_with_scratch, make, identity
                )
            else:
                made = (
                    make()
                    if in_memory and _jobdir.small_input(files)
                    else await trio.to_thread.run_sync(make)
                )
            job = made
            result = await self._run(
                resolved,
                made,
                seconds,
                env,
                requested_by,
                identity,
                lease,
                prove,
                deferred,
                scratch,
            )
            job = None
            finish = (made, FILES_REPORTED, not self.policy.keep_dir)
            # The run has attached a detached directory in its own namespace, so
            # closing it is not an unmount; when it holds little, the walk and
            # the close are quicker here than the trip to a thread.
            done = _jobdir.finish_small(*finish) if not scratch else None
            if done is None:
                # _finish removes the scratch, whatever happens to the walk.
                pending, scratch = scratch, ""
                done = await trio.to_thread.run_sync(_finish, finish, pending)
            created, omitted, more = done
            return attrs.evolve(
                result, files_created=created, files_created_truncated=more, files_omitted=omitted
            )
        finally:
            try:
                # _run returns only once no process of the run is left: the uid is free.
                if lease is not None:
                    lease.release()
                if (job is not None and not self.policy.keep_dir) or scratch:
                    with trio.CancelScope(shield=True):
                        await trio.to_thread.run_sync(
                            _remove, job if not self.policy.keep_dir else None, scratch
                        )
            finally:
                for child in deferred:
                    child.drop_namespace()
                with trio.CancelScope(shield=True):
                    for child in deferred:
                        # Its report said the run was over; PID 1 itself is
                        # gone too before run() returns (mostly by now).
                        await child.reaped()
                        _DIRECT.discard(child.pid)

    def _make_with_scratch(
        self, make: Callable[[], _jobdir.JobDir], identity: tuple[int, int]
    ) -> tuple[_jobdir.JobDir, str]:
        """In a thread: the job directory, then the bwrap run's scratch beside it
        (``_scratch``); the directory is removed if the scratch cannot be made."""
        job = make()
        try:
            scratch = _scratch.make(job, self.policy.tmpfs_size, self.policy.tmpfs_inodes, identity)
        except BaseException:
            _jobdir.remove(job)
            raise
        return job, scratch

    def _disk_budget(self) -> tuple[int, int] | None:
        """The job directory's tmpfs (bytes, inodes), when one can be mounted for it.

        In kernel mode the run's mount namespace is made before the directory
        exists: the job process attaches the detached tmpfs (``_jobdir.make``
        with ``detached``), or else a clone of the directory's mounts
        (``_namespaces.open_tree``), its tmpfs included."""
        if not self._root:
            return None
        return (self.policy.disk_bytes, self.policy.disk_inodes)

    def _environment(self, workdir: str, env: Mapping[str, str], token: str) -> dict[str, str]:
        passed = {k: os.environ[k] for k in self.policy.pass_env if k in os.environ}
        return {
            **passed,
            **env,
            "PATH": SAFE_PATH,
            "HOME": workdir,
            "TMPDIR": workdir,
            _reaper.TOKEN_VARIABLE: token,
        }

    def _limits(self) -> list[tuple[int, int]]:
        policy = self.policy
        return [
            (resource.RLIMIT_CPU, policy.cpu_seconds),
            (resource.RLIMIT_AS, policy.address_space),
            (resource.RLIMIT_FSIZE, policy.file_size),
            (resource.RLIMIT_NOFILE, policy.open_files),
            # With a cgroup, its pids.max is the budget (and names it when hit);
            # the rlimit, checked first by the kernel, stays out of its way.
            (resource.RLIMIT_NPROC, policy.processes + (16 if _cgroup.layout() else 0)),
            (resource.RLIMIT_CORE, 0),
            # No real-time priority and no lowering of the nice value it started
            # with, whatever the worker was allowed (both were inherited).
            (resource.RLIMIT_RTPRIO, 0),
            (resource.RLIMIT_NICE, 0),
        ]

    async def _start(
        self,
        full: list[str],
        workdir: str,
        env: dict[str, str],
        identity: tuple[int, int] | None,
        prove: bool,
        tree: int = -1,
    ) -> tuple[_spawn.Child | trio.Process, _cgroup.RunCgroup | None]:
        """The started process and the cgroup it runs in (None where none can be made).

        ``prove``: the lease did not scan /proc for the uid; the spawn shows it unused.
        ``tree``: the detached job directory (kernel mode), or -1.
        """
        # At the first run, not when the Sandbox is built: a process that only
        # builds one (the parent of `guild run --processes`, importing the app)
        # must not collect its children's orphans, nor start a fork server.
        _reaper.become_subreaper()
        limits = self._limits()
        policy = self.policy
        budget = (policy.memory, policy.processes, float(policy.run_cpu_seconds))
        if self._isolation == "kernel":
            child = await self._start_kernel(
                full, workdir, env, limits, identity, budget, prove, tree
            )
            return child, child.cgroup
        # bwrap's filter, read by bwrap through this descriptor (see _bwrap).
        seccomp = self._filter.open() if self._filter is not None else -1
        try:
            return await self._start_plain(
                full, workdir, env, limits, identity, budget, prove, seccomp
            )
        finally:
            if seccomp >= 0:
                os.close(seccomp)

    async def _start_plain(
        self,
        full: list[str],
        workdir: str,
        env: dict[str, str],
        limits: list[tuple[int, int]],
        identity: tuple[int, int] | None,
        budget: tuple[int, int, float],
        prove: bool,
        seccomp: int,
    ) -> tuple[_spawn.Child | trio.Process, _cgroup.RunCgroup | None]:
        """:meth:`_start` without kernel namespaces: through the plain fork server,
        else with a ``preexec_fn``. ``seccomp``: the descriptor of bwrap's filter
        (its number goes to ``full[FILTER_ARG]``), or -1."""
        server = _spawn.server()
        if server is not None:
            inherit = (seccomp, FILTER_ARG) if seccomp >= 0 else None
            try:
                child = await server.spawn(
                    full, env, workdir, limits, identity, _DIRECT, budget, prove, inherit=inherit
                )
                return child, child.cgroup
            except _spawn.ServerUnavailable:
                pass
        if prove and identity is not None and identity[0] in _uids.running_uids():
            # The server went away after the lease skipped its scan: scan here.
            raise OSError(errno.EUSERS, "another process runs as the run's uid")
        if seccomp >= 0:
            # The child keeps the descriptor's number (pass_fds).
            full = [*full[:FILTER_ARG], str(seccomp), *full[FILTER_ARG + 1 :]]
        group = _cgroup.acquire(*budget)
        procs = group.open_procs() if group is not None else []
        try:
            process = await trio.lowlevel.open_process(
                full,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=workdir,
                env=env,
                start_new_session=True,
                pass_fds=(seccomp,) if seccomp >= 0 else (),
                preexec_fn=functools.partial(_spawn.preexec, limits, identity, procs),
            )
        except BaseException:
            if group is not None:
                _cgroup.release(group)
            raise
        finally:
            for fd in procs:
                os.close(fd)
        _DIRECT.add(process.pid)
        return process, group

    async def _start_kernel(
        self,
        full: list[str],
        workdir: str,
        env: dict[str, str],
        limits: list[tuple[int, int]],
        identity: tuple[int, int] | None,
        budget: tuple[int, int, float],
        prove: bool,
        tree: int,
    ) -> _spawn.Child:
        scratch = (self.policy.tmpfs_size, self.policy.tmpfs_inodes)
        # As root, the spares prepare the job directories' parent in their
        # namespaces (_namespaces.mount_jobs); without root the run's directory
        # is the worker user's own, made where it lies.
        jobs = self._jobs if self._root else ""
        # A server that died since the last run is restarted once; a second
        # failure means namespaces no longer work here.
        for _attempt in range(2):
            server = _spawn.server("kernel", scratch, jobs)
            if server is None:
                break
            try:
                return await server.spawn(
                    full, env, workdir, limits, identity, _DIRECT, budget, prove, tree
                )
            except _spawn.ServerUnavailable:
                continue
        raise SandboxError("the kernel-namespace fork server stopped working on this host")

    async def _run(
        self,
        resolved: tuple[str, ...],
        job: _jobdir.JobDir,
        timeout: float,
        env: Mapping[str, str],
        requested_by: str | None,
        identity: tuple[int, int] | None,
        lease: _uids.Lease | None,
        prove: bool,
        deferred: list[_spawn.Child],
        scratch: str,
    ) -> SandboxResult:
        """The run itself; ``deferred`` gets the fork server's child, which the caller
        finishes once the result is complete (the run's mount namespace dropped,
        a kernel run's PID 1 reaped). ``scratch``: a bwrap run's scratch on the
        host (``_scratch``), or "" (without root: bwrap's own of ``tmpfs_size``)."""
        workdir = job.path
        token = secrets.token_hex(12)
        if self._bwrap:
            prefix = bwrap_argv(
                self._bwrap,
                workdir,
                self._present,
                self._filter is not None,
                scratch=scratch,
                size=self.policy.tmpfs_size,
            )
            full = [*prefix, *resolved]
        else:
            full = list(resolved)
        out, err = _Capture(self.policy.output_cap), _Capture(self.policy.output_cap)
        started = time.monotonic()
        try:
            process, cgroup = await self._start(
                full, workdir, self._environment(workdir, env, token), identity, prove, job.tree
            )
        except OSError as exc:
            if exc.errno == errno.EUSERS and lease is not None:
                raise _UidInUse(lease.uid) from exc
            raise SandboxError(f"could not start {resolved[0]!r}: {exc}") from exc
        if isinstance(process, _spawn.Child):
            deferred.append(process)
        timed_out = False
        verdict: list[str] = []
        uid = lease.uid if lease is not None else None
        try:
            if isinstance(process, _spawn.Child):
                timed_out = await self._follow(
                    process, timeout, cgroup, out, err, verdict, token, uid
                )
            else:
                timed_out = await self._follow_process(
                    process, timeout, cgroup, out, err, verdict, token, uid
                )
        finally:
            duration = time.monotonic() - started
            if cgroup is not None:
                # Every process of the run is gone (_terminate): the reading is final.
                verdict.append(cgroup.final() or "")
                # In kernel mode the run's PID namespace is empty once the job's
                # status is known (_terminate): the cgroup is empty without
                # reading its process lists.
                gone = self._isolation == "kernel" and process.returncode is not None
                _cgroup.release(cgroup, empty=gone)
            self._audit(resolved, process.returncode, duration, out, err, requested_by, timed_out)
            emit_here("sandbox_ran", _ran(resolved, process.returncode, duration, timed_out))
        if timed_out:
            raise SandboxTimeout(resolved, timeout, out.value(), err.value())
        code = process.returncode if process.returncode is not None else -9
        # Kernel mode's PID 1 reports its scratch; a bwrap run's is on the host.
        filled = process.scratch_full if isinstance(process, _spawn.Child) else ""
        if scratch:
            filled = _scratch.full(scratch)
        return SandboxResult(
            argv=resolved,
            exit_code=code,
            stdout=out.value(),
            stderr=err.value(),
            stdout_truncated=out.truncated,
            stderr_truncated=err.truncated,
            duration=duration,
            files_created=(),  # filled in by run(), which walks the directory
            workdir=workdir if self.policy.keep_dir else None,
            isolated=self.isolated,
            isolation=self._isolation,
            budget_exceeded=budget_verdict(verdict, code, filled, _jobdir.full(job)),
        )

    async def _follow(
        self,
        child: _spawn.Child,
        timeout: float,
        cgroup: _cgroup.RunCgroup | None,
        out: _Capture,
        err: _Capture,
        verdict: list[str],
        token: str,
        uid: int | None,
    ) -> bool:
        """Capture the run's output and wait for its end, its timeout or a budget it
        went over, then kill what is left (:meth:`_terminate`) and read the output
        that is left; whether it timed out.

        One task does it all, on an epoll set of its own (the output pipes and the
        descriptor that tells the end: PID 1's report socket, or the pidfd),
        woken by whichever is ready, by the timeout, or every
        :data:`_WATCH_INTERVAL` to read the cgroup's counters: a task per pipe,
        one for the watch and their nurseries cost the worker ~0.2 ms of CPU per
        run and two passes through the scheduler after the job's end.
        """
        pipes = {child.stdout_fd: out, child.stderr_fd: err}
        poller = select.epoll(3)
        try:
            for fd in pipes:
                poller.register(fd, select.EPOLLIN)
            timed_out = False
            try:
                timed_out = await _until_end(child, poller, pipes, timeout, cgroup, verdict)
            finally:
                if not (self._isolation == "kernel" and child.returncode is not None):
                    with trio.CancelScope(shield=True):
                        await self._terminate(child, token, uid, cgroup)
                # else the run's PID namespace is gone with its status (_terminate)
            if pipes:
                # Every process of the run is dead: the pipes are at end of file
                # unless something outside it holds them (bounded by the grace).
                with trio.move_on_after(_DRAIN_GRACE):
                    _read_ready(poller, pipes, -1)
                    while pipes:
                        await trio.lowlevel.wait_readable(poller)
                        _read_ready(poller, pipes, -1)
            return timed_out
        finally:
            poller.close()
            child.close_pipes()

    async def _follow_process(
        self,
        process: trio.Process,
        timeout: float,
        cgroup: _cgroup.RunCgroup | None,
        out: _Capture,
        err: _Capture,
        verdict: list[str],
        token: str,
        uid: int | None,
    ) -> bool:
        """:meth:`_follow` for a child of the ``preexec_fn`` fallback (a
        ``trio.Process``): a task per pipe and one for the cgroup watch."""
        timed_out = False
        try:
            async with trio.open_nursery() as nursery:
                assert process.stdout is not None and process.stderr is not None
                drains = trio.CancelScope()
                nursery.start_soon(_drain_both, drains, process.stdout, process.stderr, out, err)
                watch = trio.CancelScope()
                if cgroup is not None:
                    nursery.start_soon(_watch, watch, cgroup, process.pid, verdict)
                try:
                    with trio.move_on_after(timeout) as deadline:
                        await process.wait()
                    timed_out = deadline.cancelled_caught and not verdict
                finally:
                    watch.cancel()
                    with trio.CancelScope(shield=True):
                        await self._terminate(process, token, uid, cgroup)
                    drains.deadline = trio.current_time() + _DRAIN_GRACE
        finally:
            assert process.stdout is not None and process.stderr is not None
            for stream in (process.stdout, process.stderr):
                if isinstance(stream, trio.lowlevel.FdStream):
                    stream.close()  # aclose() would add a pass through the scheduler
                else:
                    with trio.CancelScope(shield=True):
                        await stream.aclose()
        return timed_out

    async def _terminate(
        self,
        process: _spawn.Child | trio.Process,
        token: str,
        uid: int | None,
        cgroup: _cgroup.RunCgroup | None,
    ) -> None:
        """SIGTERM the group, SIGKILL after the grace; then kill until nothing of the
        run is left (its cgroup empty, no process of its uid, no marked orphan) and
        reap. In a PID namespace the exit of its PID 1 has already killed the rest."""
        pgid = process.pid
        exited = process.returncode is not None
        if not exited:
            _signal_group(pgid, 15)
            with trio.move_on_after(self.policy.kill_grace):
                await process.wait()
        if not (exited and self._isolation == "kernel"):  # else its PID namespace is gone
            _signal_group(pgid, 9)
        if cgroup is not None and not exited:
            # When the run's process has been waited for already, the first sweep
            # below is this kill (one read of the cgroup fewer per run).
            cgroup.kill()
        await process.wait()
        if self._isolation == "kernel":
            # The run's PID namespace is empty: PID 1 reports only once every
            # other process in it is killed and reaped, and when PID 1 dies
            # without a report the kernel kills the rest before PID 1 can be
            # reaped (wait() then reaps it). No process can leave the namespace,
            # so there is nothing to sweep (0.2 ms per run of /proc reads). PID 1
            # itself is reaped once the result is complete (run()).
            return
        _DIRECT.discard(process.pid)
        # Without a cgroup, a uid leased to this run alone finds what left the group.
        by_uid = uid if cgroup is None and self._isolation != "kernel" else None
        for _ in range(2500):
            left = cgroup.kill() if cgroup is not None else False
            if by_uid is not None:
                left = _kill_uid(by_uid) or left
            orphans = _reaper.children(_DIRECT)
            zombies = [c.pid for c in orphans if c.zombie]
            if not _spawn.handshakes:
                _reaper.reap(zombies)
                zombies = []
            ours = [c.pid for c in orphans if not c.zombie and _reaper.belongs(c, token, uid)]
            _reaper.kill_all(ours)
            if not (ours or left or zombies or _reaper.group_alive(pgid)):
                return
            # Killed parents re-parent their children to us a moment later.
            await trio.sleep(0.002)
        _log.error("sandbox_survivors", pgid=pgid, uid=uid)

    def _audit(
        self,
        argv: tuple[str, ...],
        code: int | None,
        duration: float,
        out: _Capture,
        err: _Capture,
        requested_by: str | None,
        timed_out: bool,
    ) -> None:
        _log.info(
            "sandbox_run",
            argv=list(argv),
            exit_code=code,
            duration=round(duration, 6),
            bytes_out=out.total,
            bytes_err=err.total,
            timed_out=timed_out,
            isolated=self.isolated,
            isolation=self._isolation,
            requested_by=requested_by,
            policy={"allow": list(self.policy.allow), "cpu_seconds": self.policy.cpu_seconds},
        )


def _finish(
    finish: tuple[_jobdir.JobDir, int, bool], scratch: str
) -> tuple[tuple[str, ...], int, bool]:
    """In a thread: :func:`_jobdir.finish`, then the removal of a bwrap run's scratch."""
    try:
        return _jobdir.finish(*finish)
    finally:
        if scratch:
            _scratch.remove(scratch)


def _remove(job: _jobdir.JobDir | None, scratch: str) -> None:
    """In a thread: remove what a run that did not finish left (either may be absent)."""
    try:
        if job is not None:
            _jobdir.remove(job)
    finally:
        if scratch:
            _scratch.remove(scratch)


def _ran(argv: tuple[str, ...], code: int | None, duration: float, timed_out: bool) -> SandboxRan:
    """The ``sandbox_ran`` event of a run that started: a run stopped by its
    timeout or ended by a signal (a budget's kill, an OOM) has no exit code."""
    killed = timed_out or code is None or code < 0
    return SandboxRan(argv=argv, exit_code=None if killed else code, duration=duration)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def budget_verdict(
    cgroup: Sequence[str], exit_code: int, scratch: str, directory: str
) -> str | None:
    """Which budget a run went over, first the cgroup's (memory, processes, cpu, as the
    watch or the final read saw it), then a CPU rlimit's signal, then a full scratch
    tmpfs (``tmpfs`` or ``inodes``), then a full job directory (``disk`` or ``inodes``)."""
    for name in cgroup:
        if name:
            return name
    if exit_code == -signal.SIGXCPU:
        return "cpu"
    return scratch or directory or None


def _kill_uid(uid: int) -> bool:
    """SIGKILL every live process running as ``uid``; whether any was found."""
    found = False
    with os.scandir("/proc") as entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            try:
                if entry.stat(follow_symlinks=False).st_uid != uid:
                    continue
                with open(f"/proc/{entry.name}/stat", "rb") as handle:
                    data = handle.read()
            except OSError:
                continue
            if data[data.rindex(b")") + 2 : data.rindex(b")") + 3] != b"Z":
                found = True
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(int(entry.name), 9)
    return found


async def _until_end(
    child: _spawn.Child,
    poller: select.epoll,
    pipes: dict[int, _Capture],
    timeout: float,
    cgroup: _cgroup.RunCgroup | None,
    verdict: list[str],
) -> bool:
    """Read the run's output until its status is known (:meth:`_spawn.Child.settle`);
    whether the timeout came first. Every :data:`_WATCH_INTERVAL` the cgroup's
    counters are read, and a budget over ends the run at once (SIGKILL to all of
    it), named in ``verdict``."""
    now = trio.current_time()
    deadline = now + timeout
    watch_at = now + _WATCH_INTERVAL if cgroup is not None else math.inf
    while True:
        end = child.end_fd()
        poller.register(end, select.EPOLLIN)
        try:
            # One cancel scope per watch interval, not per wake-up.
            with trio.CancelScope(deadline=min(deadline, watch_at)):
                while not _read_ready(poller, pipes, end):
                    await trio.lowlevel.wait_readable(poller)
        finally:
            poller.unregister(end)
        if child.settle():
            await child.wait()  # known: no pass through the scheduler
            return False
        now = trio.current_time()
        if now >= deadline:
            return not verdict
        if cgroup is not None and now >= watch_at and not verdict:
            exceeded = cgroup.exceeded()
            if exceeded is None:
                watch_at = now + _WATCH_INTERVAL
            else:
                verdict.append(exceeded)
                _signal_group(child.pid, 9)
                cgroup.kill()
                watch_at = math.inf


def _read_ready(poller: select.epoll, pipes: dict[int, _Capture], end: int) -> bool:
    """One chunk from each ready pipe (a pipe at end of file leaves ``pipes`` and the
    set); whether ``end`` is ready."""
    ended = False
    for fd, _events in poller.poll(0):
        if fd == end:
            ended = True
            continue
        capture = pipes.get(fd)
        if capture is None:
            continue
        try:
            chunk = os.read(fd, _CHUNK)
        except BlockingIOError:
            continue
        if chunk:
            capture.feed(chunk)
        else:
            poller.unregister(fd)
            del pipes[fd]
    return ended


async def _watch(
    scope: trio.CancelScope, cgroup: _cgroup.RunCgroup, pgid: int, verdict: list[str]
) -> None:
    """End the run as soon as its cgroup shows a budget exceeded, naming it."""
    with scope:
        while True:
            await trio.sleep(_WATCH_INTERVAL)
            exceeded = cgroup.exceeded()
            if exceeded is not None:
                verdict.append(exceeded)
                _signal_group(pgid, 9)
                cgroup.kill()
                return


async def _drain_both(
    scope: trio.CancelScope,
    stdout: trio.abc.ReceiveStream,
    stderr: trio.abc.ReceiveStream,
    out: _Capture,
    err: _Capture,
) -> None:
    with scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_drain, stdout, out)
            nursery.start_soon(_drain, stderr, err)


async def _drain(stream: trio.abc.ReceiveStream, capture: _Capture) -> None:
    while True:
        chunk = await stream.receive_some(_CHUNK)
        if not chunk:
            return
        capture.feed(chunk)


# Reprs, tracebacks and pickles name guild.X (see guild._exports).
publish(globals())
