"""The job directory: a run's files, the one place of the host it may write, and its disk budget.

Where it lives. Each run gets a fresh directory (0700, owned by the run's uid)
inside a parent the job cannot write: when the worker is root,
``/run/guild/jobs`` (or ``/var/lib/guild/jobs``), root's and 0711, so a job can
reach its own directory by name but can neither list the others nor rename or
replace its own (that needs write access to the parent). A job that could swap
its directory for a symlink would have the root worker walk and delete
whatever the link points at. When the worker is not root, the parent is a
directory private to the worker's user (0700); the job runs as that same user
there, so only a namespace keeps it from renaming its directory, and nothing
here trusts the name: every step below opens it without following symlinks.

The disk budget. When the worker is root, a tmpfs of ``disk_bytes`` and
``disk_inodes`` is mounted on the directory before the files are written, so a
disk fill or a million tiny files end with ENOSPC at the budget, and removing
the directory is one lazy unmount (``MNT_DETACH``) and an ``rmdir``, however
many files it held.

Detached (kernel-namespace runs). A run in namespaces of its own needs no
directory on the host: :func:`make` with ``detached`` builds the tmpfs with the
new mount API (``fsopen``/``fsconfig``/``fsmount``, Linux 5.2+) as a mount
attached nowhere, writes the files through its descriptor, and the run's job
process moves it onto the directory's path inside its own mount namespace.
Nothing is made, mounted, unmounted or removed on the host, so none of it waits
for the host's mount lock; the walk reads the mount through the same
descriptor, and closing it is the removal (the run's namespace, dropped off the
run's path, holds the last reference, or the close frees a small tmpfs).

What the run created. :func:`walk` goes through directory descriptors opened
with ``O_NOFOLLOW`` and reads each entry's type relative to its directory's
descriptor: only regular files are reported (never a symlink, nor what one
points at), at most ``cap`` names taking at most :data:`LISTED_CHARS`
characters as a JSON list, at most :data:`MAX_DEPTH` levels down and
:data:`MAX_VISITS` entries in all; the files left out are counted (up to those
limits), so a result says how many its list omits. A name that is not UTF-8 is
reported with ``\\xNN`` for each byte that is not, so every name encodes (JSON,
a broker).
The caller runs :func:`make`, :func:`walk` and :func:`remove` (:func:`finish`
is the last two) in a worker thread, off the event loop: a tmpfs mount and
unmount wait for the host's mount lock. Only
:func:`make` of a directory without a tmpfs, when :func:`small_input` says it
is small, is cheaper than the trip to a thread; so is all of it for a detached
directory whose file system shows few inodes and bytes used (:func:`finish_small`).

What a killed worker left. A directory is named ``job-<worker pid>-<random>``;
the first sandbox of a process removes those of workers that are gone
(:func:`sweep`), unmounting their tmpfs.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import json.encoder
import os
import shutil
import stat
import tempfile
from collections.abc import Mapping

import attrs
import structlog

from .._errors import SandboxError

_log = structlog.get_logger("guild.sandbox")
ROOT_PARENTS = ("/run/guild/jobs", "/var/lib/guild/jobs")
MAX_DEPTH = 64
MAX_VISITS = 200_000
# The most characters the list of created files takes as JSON text (what a
# handler's result holds): 1,000 names 40 levels of 250 bytes that are not
# UTF-8 deep (each byte ``\\xNN``, whose backslash JSON escapes) made 50
# million, over a result's limit (``guild._codec.MAX_VALUE_CHARS``), and the
# result of a run that any job can make failed to encode.
LISTED_CHARS = 1 << 20
# JSON's text of a string, as the result encoder writes it (ensure_ascii=False).
_json_string = json.encoder.encode_basestring
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_MS_NOSUID = 2
_MS_NODEV = 4
_MNT_DETACH = 2
# The new mount API: the same numbers on every architecture (added in 5.2).
_SYS_FSOPEN = 430
_SYS_FSCONFIG = 431
_SYS_FSMOUNT = 432
_FSOPEN_CLOEXEC = 1
_FSCONFIG_SET_STRING = 1
_FSCONFIG_CMD_CREATE = 6
_FSMOUNT_CLOEXEC = 1
_MOUNT_ATTR_NOSUID = 0x2
_MOUNT_ATTR_NODEV = 0x4


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


@attrs.frozen
class JobDir:
    """One run's directory: ``parent``/``name``, whether a tmpfs is mounted on it,
    and the files written into it before the run (relative names).

    ``tree``: the descriptor of a detached tmpfs that *is* the directory (see the
    module doc; the run attaches it at ``path`` in its own mount namespace, and
    nothing exists at ``path`` on the host), or -1."""

    parent: str
    name: str
    mounted: bool
    written: frozenset[str]
    tree: int = -1

    @property
    def path(self) -> str:
        return os.path.join(self.parent, self.name)


def _ours(path: str, owner: int, mode: int) -> bool:
    """Whether ``path`` is a real directory (no symlink) of ``owner`` with ``mode``."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return (
        stat.S_ISDIR(info.st_mode) and info.st_uid == owner and stat.S_IMODE(info.st_mode) == mode
    )


def _trusted(path: str, owner: int) -> bool:
    """Whether nobody but root and ``owner`` can rename what is in ``path`` (a
    world-writable directory counts when it is sticky, as /tmp is)."""
    try:
        info = os.stat(path)
    except OSError:
        return False
    mode = stat.S_IMODE(info.st_mode)
    return info.st_uid in (0, owner) and (mode & 0o022 == 0 or bool(mode & stat.S_ISVTX))


def _make_parent(path: str, mode: int) -> str | None:
    owner = os.geteuid()
    with contextlib.suppress(OSError):
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, mode)
        info = os.lstat(path)
        if stat.S_ISDIR(info.st_mode) and info.st_uid == owner:
            os.chmod(path, mode)  # the umask may have taken bits off
    ancestors = []
    head = os.path.dirname(path)
    while head not in ("", "/"):
        ancestors.append(head)
        head = os.path.dirname(head)
    if all(_trusted(a, owner) for a in ancestors) and _ours(path, owner, mode):
        return path
    return None


@functools.cache
def parent(root: bool) -> str:
    """The directory job directories are made in (created once per process).

    Root: the first of :data:`ROOT_PARENTS` that can be made root's and 0711 with
    no writable ancestor. Otherwise ``$XDG_RUNTIME_DIR/guild-jobs`` or
    ``<tmp>/guild-jobs-<uid>``, 0700 and the user's, or else a fresh private one.

    Raises:
        SandboxError: the worker is root and no safe parent can be made.
    """
    if root:
        for candidate in ROOT_PARENTS:
            made = _make_parent(candidate, 0o711)
            if made is not None:
                sweep(made)
                return made
        raise SandboxError(
            f"no root-owned 0711 job directory parent could be made at {ROOT_PARENTS}"
        )
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    candidates = [os.path.join(runtime, "guild-jobs")] if runtime else []
    candidates.append(os.path.join(tempfile.gettempdir(), f"guild-jobs-{os.geteuid()}"))
    for candidate in candidates:
        made = _make_parent(candidate, 0o700)
        if made is not None:
            sweep(made)
            return made
    # Someone else holds the usual name: a fresh one only this process knows.
    return tempfile.mkdtemp(prefix=f"guild-jobs-{os.geteuid()}-")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep(parent_dir: str) -> list[str]:
    """Remove the job directories of workers that are gone (a worker killed before
    its cleanup leaves its runs' directories, mounted tmpfs and all); which.

    A directory is ``job-<pid>-<random>``; one whose pid is alive is left alone,
    even if the pid was reused, rather than risk a live run's directory."""
    removed = []
    for name in os.listdir(parent_dir):
        pid = name.split("-")[1] if name.count("-") == 2 and name.startswith("job-") else ""
        if pid.isdigit() and not _alive(int(pid)):
            path = os.path.join(parent_dir, name)
            remove(JobDir(parent_dir, name, os.path.ismount(path), frozenset()))
            removed.append(name)
    if removed:
        _log.warning("sandbox_stale_job_directories_removed", parent=parent_dir, count=len(removed))
    return removed


def make(
    parent_dir: str,
    identity: tuple[int, int] | None,
    budget: tuple[int, int] | None,
    files: Mapping[str, bytes],
    detached: bool = False,
) -> JobDir:
    """A fresh job directory in ``parent_dir`` holding ``files`` (names already
    checked by the policy), owned by ``identity``; a tmpfs of ``budget``
    (bytes, inodes) on it when given. Nothing is left behind if a step fails.

    ``detached`` (a run in its own mount namespace, with a budget and an
    identity): the directory is a tmpfs attached nowhere on the host (see the
    module doc), or, where the kernel cannot make one, a host directory as above.

    Raises:
        SandboxError: the directory or a file could not be made (the cause attached).
    """
    if detached and budget is not None and identity is not None:
        tree = _fsmount(budget, identity)
        if tree >= 0:
            return _fill_detached(parent_dir, tree, identity, files)
        _unable.append(ctypes.get_errno())
    parent_fd = os.open(parent_dir, _DIR_FLAGS)
    try:
        name = _fresh(parent_fd)
        job = JobDir(parent=parent_dir, name=name, mounted=False, written=frozenset(files))
        try:
            if budget is not None and identity is not None:
                job = attrs.evolve(job, mounted=_mount(job.path, budget, identity))
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
            try:
                if identity is not None:
                    os.fchown(fd, *identity)
                for relative, content in files.items():
                    _write(fd, relative.split("/"), content, identity)
            finally:
                os.close(fd)
        except OSError as exc:
            remove(job)
            raise SandboxError(f"could not prepare the job directory {job.path}: {exc}") from exc
        return job
    finally:
        os.close(parent_fd)


def _fill_detached(
    parent_dir: str, tree: int, identity: tuple[int, int], files: Mapping[str, bytes]
) -> JobDir:
    # The name only has to be unique within the run's own namespace; the random
    # part keeps it unguessable, as on the host.
    name = f"job-{os.getpid()}-{os.urandom(8).hex()}"
    job = JobDir(parent=parent_dir, name=name, mounted=False, written=frozenset(files), tree=tree)
    if not files:
        return job
    try:
        top = os.open(".", _DIR_FLAGS, dir_fd=tree)
        try:
            for relative, content in files.items():
                _write(top, relative.split("/"), content, identity)
        finally:
            os.close(top)
    except OSError as exc:
        remove(job)
        raise SandboxError(f"could not prepare the job directory {job.path}: {exc}") from exc
    return job


# Why the kernel refused a detached tmpfs (errno), once it has: then every run
# gets its directory on the host.
_unable: list[int] = []


_MEMORY_FILE_SYSTEMS = frozenset({"tmpfs", "ramfs"})


@functools.cache
def in_memory(path: str) -> bool:
    """Whether ``path`` lies on a tmpfs or ramfs (by the host's mount table, once per
    process), where making a small directory never waits for a disk."""
    try:
        with open("/proc/self/mountinfo") as handle:
            mounts = [line.split() for line in handle]
    except OSError:
        return False
    best, kind = "", ""
    for fields in mounts:
        point = fields[4]
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fields[fields.index("-") + 1]
    return kind in _MEMORY_FILE_SYSTEMS


def can_detach() -> bool:
    """Whether :func:`make` may still be asked for a detached directory (no refusal yet)."""
    return not _unable


def _fsmount(budget: tuple[int, int], identity: tuple[int, int]) -> int:
    """A detached tmpfs of ``budget`` (bytes, inodes) owned by ``identity`` (its
    descriptor), or -1 where the kernel has no new mount API or refuses it."""
    libc = _libc()
    libc.syscall.restype = ctypes.c_long
    context = int(libc.syscall(_SYS_FSOPEN, b"tmpfs", _FSOPEN_CLOEXEC))
    if context < 0:
        return -1
    size, inodes = budget
    try:
        # The root directory of a tmpfs takes one of its inodes.
        options = {
            "source": "tmpfs",
            "size": str(size),
            "nr_inodes": str(inodes + 1),
            "mode": "0700",
            "uid": str(identity[0]),
            "gid": str(identity[1]),
        }
        for key, value in options.items():
            if (
                libc.syscall(
                    _SYS_FSCONFIG, context, _FSCONFIG_SET_STRING, key.encode(), value.encode(), 0
                )
                < 0
            ):
                return -1
        if libc.syscall(_SYS_FSCONFIG, context, _FSCONFIG_CMD_CREATE, None, None, 0) < 0:
            return -1
        attributes = _MOUNT_ATTR_NOSUID | _MOUNT_ATTR_NODEV
        tree = int(libc.syscall(_SYS_FSMOUNT, context, _FSMOUNT_CLOEXEC, attributes))
        return tree if tree >= 0 else -1
    finally:
        os.close(context)


def _fresh(parent_fd: int) -> str:
    for _ in range(100):
        name = f"job-{os.getpid()}-{os.urandom(8).hex()}"
        try:
            os.mkdir(name, 0o700, dir_fd=parent_fd)
        except FileExistsError:
            continue
        return name
    raise SandboxError("could not make a fresh job directory name")


def _mount(path: str, budget: tuple[int, int], identity: tuple[int, int]) -> bool:
    size, inodes = budget
    # The root directory of a tmpfs takes one of its inodes.
    options = f"size={size},nr_inodes={inodes + 1},mode=0700,uid={identity[0]},gid={identity[1]}"
    result = _libc().mount(
        b"tmpfs", os.fsencode(path), b"tmpfs", _MS_NOSUID | _MS_NODEV, options.encode()
    )
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EPERM, errno.ENODEV, errno.ENOSYS):
        _log.warning("sandbox_disk_budget_unavailable", reason=os.strerror(code))
        return False
    raise OSError(code, f"mount tmpfs on {path}: {os.strerror(code)}")


def _write(
    directory: int, parts: list[str], content: bytes, identity: tuple[int, int] | None
) -> None:
    """Write one file below ``directory``, making its directories; no symlink followed."""
    fds: list[int] = []
    try:
        here = directory
        for part in parts[:-1]:
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o700, dir_fd=here)
                if identity is not None:
                    os.chown(part, *identity, dir_fd=here, follow_symlinks=False)
            here = os.open(part, _DIR_FLAGS, dir_fd=here)
            fds.append(here)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(parts[-1], flags, 0o600, dir_fd=here)
        try:
            if identity is not None:
                os.fchown(fd, *identity)
            view = memoryview(content)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
    finally:
        for fd in fds:
            os.close(fd)


@attrs.define
class _Found:
    written: frozenset[str]
    cap: int
    names: list[str] = attrs.Factory(list)
    # Characters of the names as a JSON list: "[]", each name's text, the commas.
    chars: int = 1
    omitted: int = 0
    visits: int = 0
    truncated: bool = False


def walk(job: JobDir, cap: int) -> tuple[tuple[str, ...], int, bool]:
    """The regular files the run created (sorted; at most ``cap`` names and
    :data:`LISTED_CHARS` characters of JSON), how many more it created (counted
    up to :data:`MAX_VISITS` entries and :data:`MAX_DEPTH` levels), and whether
    the list is incomplete (some omitted, or more than the walk looks at)."""
    found = _Found(written=job.written, cap=cap)
    if job.tree >= 0:
        try:
            top = os.open(".", _DIR_FLAGS, dir_fd=job.tree)
        except OSError:
            return (), 0, False
        try:
            _walk(top, "", 0, found)
        finally:
            os.close(top)
        return tuple(sorted(found.names)), found.omitted, found.truncated
    try:
        parent_fd = os.open(job.parent, _DIR_FLAGS)
    except OSError:
        return (), 0, False
    try:
        top = os.open(job.name, _DIR_FLAGS, dir_fd=parent_fd)
    except OSError:
        return (), 0, False  # gone, or replaced by something that is not a directory
    finally:
        os.close(parent_fd)
    try:
        _walk(top, "", 0, found)
    finally:
        os.close(top)
    return tuple(sorted(found.names)), found.omitted, found.truncated


def _walk(directory: int, prefix: str, depth: int, found: _Found) -> None:
    with os.scandir(directory) as entries:
        for entry in entries:
            found.visits += 1
            if found.visits > MAX_VISITS:
                found.truncated = True
                return
            try:
                # The directory entry's type (an lstat only where the file
                # system gives none): the files left out are counted too.
                regular = entry.is_file(follow_symlinks=False)
                directory_entry = not regular and entry.is_dir(follow_symlinks=False)
            except OSError:
                continue
            relative = prefix + entry.name
            if regular:
                if relative in found.written:
                    continue
                if len(found.names) >= found.cap:
                    found.omitted += 1
                    found.truncated = True
                    continue
                name = relative if relative.isascii() else _text(relative)
                chars = len(_json_string(name)) + 1  # and a comma, or the "]"
                if found.chars + chars > LISTED_CHARS:
                    found.omitted += 1
                    found.truncated = True
                    continue
                found.chars += chars
                found.names.append(name)
            elif directory_entry:
                if depth + 1 >= MAX_DEPTH:
                    found.truncated = True
                    continue
                try:
                    child = os.open(entry.name, _DIR_FLAGS, dir_fd=directory)
                except OSError:
                    continue
                try:
                    _walk(child, relative + "/", depth + 1, found)
                finally:
                    os.close(child)
                if found.visits > MAX_VISITS:
                    return


def _text(name: str) -> str:
    """``name`` (as ``os.scandir`` decodes it) as text that encodes to UTF-8: a name
    that is not UTF-8 has each byte that is not as ``\\xNN``. The file system's
    surrogate escapes would fail every encoder a result meets (JSON for a
    broker, a database's text), so a job could break its own handler's result."""
    try:
        name.encode()
    except UnicodeEncodeError:
        return os.fsencode(name).decode("utf-8", "backslashreplace")
    return name


# What :func:`make`, :func:`walk` and :func:`remove` may do on the event loop
# rather than in a thread: each takes well under a millisecond at these sizes.
SMALL_FILES = 16
SMALL_BYTES = 256 << 10


def is_small(files: int, size: int, limit_files: int) -> bool:
    """Pure: whether ``files`` entries of ``size`` bytes in all are little enough to
    write or walk and remove without a thread (``limit_files`` entries at most)."""
    return files <= limit_files and size <= SMALL_BYTES


def small_input(files: Mapping[str, bytes]) -> bool:
    """Whether :func:`make` of these files is quick enough for the event loop."""
    return is_small(len(files), sum(len(content) for content in files.values()), SMALL_FILES)


def _usage(job: JobDir) -> tuple[int, int] | None:
    """The inodes (besides its root) and bytes a detached directory's tmpfs holds, by
    its counters; None for a host directory, or when they cannot be read."""
    if job.tree < 0:
        return None
    try:
        info = os.fstatvfs(job.tree)
    except OSError:
        return None
    if not info.f_files:
        return None  # no inode limit, so no count either
    return info.f_files - info.f_ffree - 1, (info.f_blocks - info.f_bfree) * info.f_frsize


def small_after(job: JobDir) -> bool:
    """Whether a detached directory holds few enough inodes and bytes now, by its
    file system's counters, for :func:`finish` to be quicker than the trip to a
    thread (walking it, and freeing the tmpfs if the close is the last reference).
    A host directory: False (its unmount waits for the host's mount lock)."""
    usage = _usage(job)
    return usage is not None and is_small(*usage, SMALL_FILES + len(job.written))


def finish_small(
    job: JobDir, cap: int, remove_after: bool
) -> tuple[tuple[str, ...], int, bool] | None:
    """:func:`finish`, when :func:`small_after` says it is quick enough for the event
    loop; else None (the caller runs it in a thread). A tmpfs that holds no inode
    but its root has nothing to walk: the run wrote no file and was given none."""
    usage = _usage(job)
    if usage is None or not is_small(*usage, SMALL_FILES + len(job.written)):
        return None
    if usage[0] == 0:
        if remove_after:
            remove(job)
        return (), 0, False
    return finish(job, cap, remove_after)


def full(job: JobDir) -> str:
    """``disk`` or ``inodes`` when the job directory is a file system of its own and full."""
    try:
        if job.tree >= 0:
            info = os.fstatvfs(job.tree)
        elif os.path.ismount(job.path):
            info = os.statvfs(job.path)
        else:
            return ""
    except OSError:
        return ""
    if info.f_blocks and info.f_bfree == 0:
        return "disk"
    if info.f_files and info.f_ffree == 0:
        return "inodes"
    return ""


def finish(job: JobDir, cap: int, remove_after: bool) -> tuple[tuple[str, ...], int, bool]:
    """:func:`walk`, then :func:`remove` when ``remove_after`` (even if the walk
    failed): the end of a run that returned, in one call."""
    try:
        return walk(job, cap)
    finally:
        if remove_after:
            remove(job)


def remove(job: JobDir) -> None:
    """Remove the job directory: unmount its tmpfs (lazily) and ``rmdir``, or, with
    no tmpfs, delete it through descriptors (``shutil.rmtree`` with ``dir_fd``);
    a detached one by closing its descriptor."""
    if job.tree >= 0:
        os.close(job.tree)
        return
    if job.mounted and _libc().umount2(os.fsencode(job.path), _MNT_DETACH) != 0:
        _log.error("sandbox_umount_failed", path=job.path, reason=os.strerror(ctypes.get_errno()))
    try:
        parent_fd = os.open(job.parent, _DIR_FLAGS)
    except OSError:
        return
    try:
        try:
            os.rmdir(job.name, dir_fd=parent_fd)
            return
        except FileNotFoundError:
            return
        except OSError:
            pass  # not empty, or not a directory
        try:
            shutil.rmtree(job.name, dir_fd=parent_fd)
        except NotADirectoryError:
            os.unlink(job.name, dir_fd=parent_fd)
        except OSError as exc:
            if os.path.islink(job.path):
                # The job swapped its directory for a symlink: remove the link only.
                os.unlink(job.name, dir_fd=parent_fd)
            else:
                _log.warning("sandbox_cleanup_incomplete", path=job.path, reason=str(exc))
    finally:
        os.close(parent_fd)
