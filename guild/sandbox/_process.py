"""The Trio shell around the policy: one sandboxed run, start to cleanup.

Per run: a fresh job directory (the command's files written into it, owned by
the unprivileged user when the worker is root), a scrubbed environment, stdin
closed, rlimits and the privilege drop applied in the child before exec (by a
pre-forked child of the fork server, or a ``preexec_fn``: see ``_spawn``), a new
session, and bubblewrap namespaces when isolation is on. Output is read in
chunks and kept up to the cap; the rest is read and thrown away, so a flood
cannot grow memory or block the child. However the run ends (exit, timeout,
cancellation), ``_terminate`` kills the group, then every process marked with
the run's token or seen descending from it, and reaps what it killed.
"""

from __future__ import annotations

import contextlib
import functools
import grp
import os
import pwd
import resource
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import attrs
import structlog
import trio

from .._errors import CommandRefused, SandboxError, SandboxTimeout
from . import _reaper, _spawn
from ._bwrap import READ_ONLY, bwrap_argv
from ._policy import SandboxPolicy, check, resolve_allowed

_log = structlog.get_logger("guild.sandbox")
# Sandbox children Trio itself waits for: never reaped by the orphan sweep.
_DIRECT: set[int] = set()
_CHUNK = 65536
_MARKER = b"\n[guild: output truncated at %d bytes]\n"
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"


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


def _bwrap_works(bwrap: str) -> bool:
    probe = [*bwrap_argv(bwrap, "/", [p for p in READ_ONLY if os.path.exists(p)]), "/bin/true"]
    try:
        return subprocess.run(probe, capture_output=True, timeout=10, check=False).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


class Sandbox:
    """Runs argvs under a :class:`SandboxPolicy`.

    Resolves the allowed executables and probes bubblewrap once, at construction.

    Raises:
        SandboxError: ``isolate="always"`` and bubblewrap does not work here, or
            the worker is root and the policy's user or group does not exist.
    """

    def __init__(self, policy: SandboxPolicy | None = None) -> None:
        self.policy = policy or SandboxPolicy.default()
        self._table = resolve_allowed(self.policy)
        bwrap = shutil.which("bwrap") if self.policy.isolate != "never" else None
        self._bwrap = bwrap if bwrap and _bwrap_works(bwrap) else None
        if self.policy.isolate == "always" and self._bwrap is None:
            raise SandboxError(
                "isolate='always' but bubblewrap (bwrap) is not installed or not usable"
            )
        self._present = [p for p in READ_ONLY if os.path.exists(p)]
        self._root = os.geteuid() == 0
        self._user = (0, 0)
        self._uids_in_use: set[int] = set()
        if self._root:
            try:
                self._user = (
                    pwd.getpwnam(self.policy.user).pw_uid,
                    grp.getgrnam(self.policy.group).gr_gid,
                )
            except KeyError as exc:
                raise SandboxError(f"sandbox user/group not found: {exc}") from exc

    @property
    def isolated(self) -> bool:
        """Whether runs get bubblewrap namespaces."""
        return self._bwrap is not None

    def check(self, argv: Sequence[str], env: Mapping[str, str] | None = None) -> tuple[str, ...]:
        """The argv that would run, or :class:`CommandRefused` naming the rule (no process)."""
        return check(argv, self._table, self.policy, env)

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
        except CommandRefused as refused:
            _log.warning(
                "sandbox_refused",
                argv=list(refused.argv),
                rule=refused.rule,
                detail=refused.detail,
                requested_by=requested_by,
            )
            raise
        workdir = tempfile.mkdtemp(prefix="guild-job-")
        identity = self._take_identity()
        try:
            written = self._prepare(workdir, files or {}, argv, identity)
            return await self._run(
                resolved, workdir, written, timeout, env or {}, requested_by, identity
            )
        finally:
            if identity is not None:
                self._uids_in_use.discard(identity[0])
            if not self.policy.keep_dir:
                shutil.rmtree(workdir, ignore_errors=True)

    def _take_identity(self) -> tuple[int, int] | None:
        """The (uid, gid) a run drops to, or None when the worker is not root."""
        if not self._root:
            return None
        pool = self.policy.uid_pool
        if pool is None:
            return self._user
        for uid in range(pool[0], pool[1] + 1):
            if uid not in self._uids_in_use:
                self._uids_in_use.add(uid)
                return (uid, self._user[1])
        raise SandboxError(f"all {pool[1] - pool[0] + 1} sandbox uids of the pool are in use")

    def _prepare(
        self,
        workdir: str,
        files: Mapping[str, bytes],
        argv: Sequence[str],
        identity: tuple[int, int] | None,
    ) -> set[str]:
        root = Path(workdir)
        written: set[str] = set()
        for name, content in files.items():
            relative = Path(name)
            if relative.is_absolute() or ".." in relative.parts or "\0" in name or not name:
                raise CommandRefused(
                    "bad-file",
                    tuple(argv),
                    f"file name {name!r} must stay inside the job directory",
                )
            target = root / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
            written.add(str(target.relative_to(root)))
        if identity is not None:
            os.chown(root, *identity)
            if files:
                for path in root.rglob("*"):
                    os.chown(path, *identity)
        return written

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
            (resource.RLIMIT_NPROC, policy.processes),
            (resource.RLIMIT_CORE, 0),
        ]

    async def _start(
        self, full: list[str], workdir: str, env: dict[str, str], identity: tuple[int, int] | None
    ) -> _spawn.Child | trio.Process:
        # At the first run, not when the Sandbox is built: a process that only
        # builds one (the parent of `guild run --processes`, importing the app)
        # must not collect its children's orphans, nor start a fork server.
        _reaper.become_subreaper()
        limits = self._limits()
        server = _spawn.server()
        if server is not None:
            try:
                return await server.spawn(full, env, workdir, limits, identity, _DIRECT)
            except _spawn.ServerUnavailable:
                pass
        process = await trio.lowlevel.open_process(
            full,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=workdir,
            env=env,
            start_new_session=True,
            preexec_fn=functools.partial(_spawn.apply_in_child, limits, identity),
        )
        _DIRECT.add(process.pid)
        return process

    async def _run(
        self,
        resolved: tuple[str, ...],
        workdir: str,
        written: set[str],
        timeout: float,
        env: Mapping[str, str],
        requested_by: str | None,
        identity: tuple[int, int] | None,
    ) -> SandboxResult:
        token = secrets.token_hex(12)
        full = (
            [*bwrap_argv(self._bwrap, workdir, self._present), *resolved]
            if self._bwrap
            else list(resolved)
        )
        out, err = _Capture(self.policy.output_cap), _Capture(self.policy.output_cap)
        started = time.monotonic()
        try:
            process = await self._start(
                full, workdir, self._environment(workdir, env, token), identity
            )
        except OSError as exc:
            raise SandboxError(f"could not start {resolved[0]!r}: {exc}") from exc
        timed_out = False
        try:
            async with trio.open_nursery() as nursery:
                assert process.stdout is not None and process.stderr is not None
                nursery.start_soon(_drain, process.stdout, out)
                nursery.start_soon(_drain, process.stderr, err)
                try:
                    with trio.move_on_after(timeout) as deadline:
                        await process.wait()
                    timed_out = deadline.cancelled_caught
                finally:
                    with trio.CancelScope(shield=True):
                        await self._terminate(process, token, identity)
        finally:
            assert process.stdout is not None and process.stderr is not None
            with trio.CancelScope(shield=True):
                await process.stdout.aclose()
                await process.stderr.aclose()
            duration = time.monotonic() - started
            self._audit(resolved, process.returncode, duration, out, err, requested_by, timed_out)
        if timed_out:
            raise SandboxTimeout(resolved, timeout, out.value(), err.value())
        created = sorted(_files(workdir) - written)
        return SandboxResult(
            argv=resolved,
            exit_code=process.returncode if process.returncode is not None else -9,
            stdout=out.value(),
            stderr=err.value(),
            stdout_truncated=out.truncated,
            stderr_truncated=err.truncated,
            duration=duration,
            files_created=tuple(created),
            workdir=workdir if self.policy.keep_dir else None,
            isolated=self.isolated,
        )

    async def _terminate(
        self, process: _spawn.Child | trio.Process, token: str, identity: tuple[int, int] | None
    ) -> None:
        """SIGTERM the group, SIGKILL after the grace, then every straggler; reap."""
        pgid = process.pid
        if process.returncode is None:
            _signal_group(pgid, 15)
            with trio.move_on_after(self.policy.kill_grace):
                await process.wait()
        _signal_group(pgid, 9)
        await process.wait()
        _DIRECT.discard(process.pid)
        uid = identity[0] if identity is not None and self.policy.uid_pool is not None else None
        for _ in range(500):
            orphans = _reaper.children(_DIRECT)
            if not _spawn.handshakes:
                _reaper.reap(c.pid for c in orphans if c.zombie)
            ours = [c.pid for c in orphans if not c.zombie and _reaper.belongs(c, token, uid)]
            _reaper.kill_all(ours)
            if not ours and not _reaper.group_alive(pgid):
                return
            # Killed parents re-parent their children to us a moment later.
            await trio.sleep(0.002)

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
            requested_by=requested_by,
            policy={"allow": list(self.policy.allow), "cpu_seconds": self.policy.cpu_seconds},
        )


def _files(workdir: str) -> set[str]:
    """The files under ``workdir``, relative to it, as ``Path.rglob`` + ``is_file`` saw them."""
    found = set()
    for top, _dirs, names in os.walk(workdir):
        for name in names:
            path = os.path.join(top, name)
            if os.path.isfile(path):
                found.add(os.path.relpath(path, workdir))
    return found


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def _drain(stream: trio.abc.ReceiveStream, capture: _Capture) -> None:
    while True:
        chunk = await stream.receive_some(_CHUNK)
        if not chunk:
            return
        capture.feed(chunk)
