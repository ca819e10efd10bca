"""Linux namespaces without bubblewrap: the kernel calls the fork server's spares make.

Imported both by the package and by the fork server (which runs as a plain
script), so it uses the standard library only and no package-relative imports.

A kernel-isolated run is built in three steps, two of them before any request:

1. :func:`enter` (in the fork server's intermediate child, before the spare
   exists): new network, PID, mount, IPC and UTS namespaces (plus a user
   namespace mapping only the worker's own uid and gid when it is not root);
   the loopback interface up and nothing else, so no route leaves the host
   namespace; every mount private and read-only; :data:`HIDDEN` directories
   (everything at the top but the system: ``/run`` with its sockets, ``/var``
   with broker files, homes, an app's own directory) covered by empty
   read-only tmpfs; a ``/dev`` of the run's own (:func:`_own_dev`).
2. :func:`enter_pid` (in the spare, which is PID 1 of the new namespace): a
   fresh ``/proc`` that shows only the run's processes.
   It also mounts fresh tmpfs on :data:`SCRATCH`, limited in bytes and inodes.
3. :func:`harden` (in the job process, before the request): ``no_new_privs``,
   no kernel keyring calls and no user namespace (:func:`deny_keyrings`);
   :func:`prepare_run` (after the request): the job directory attached as the
   only writable place of the host's file system.
"""

from __future__ import annotations

import _socket  # not `socket`, which imports enum and selectors into every fork
import ctypes
import errno
import fcntl  # imported here, in the fork server: not again in each child that calls it
import os
import struct
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
FLAGS = CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWPID | CLONE_NEWNET

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
# The same numbers on every architecture (syscalls added since 5.1 are unified).
_SYS_OPEN_TREE = 428
_SYS_MOVE_MOUNT = 429
_SYS_MOUNT_SETATTR = 442
_OPEN_TREE_FLAGS = 1 | 0o2000000 | 0x8000  # OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE
_MOVE_MOUNT_F_EMPTY_PATH = 4
_AT_FDCWD = -100
_AT_RECURSIVE = 0x8000
_MOUNT_ATTR_RDONLY = 0x1
_MOUNT_ATTR_NOSUID = 0x2
_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_PDEATHSIG = 1
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1
_MNT_DETACH = 2
_HIDING = "size=16k,nr_inodes=64,mode=755"
_JOBS = "size=16k,nr_inodes=16,mode=711"

# Scratch directories a job may write: each a fresh tmpfs of the run's size.
SCRATCH = ("/tmp", "/dev/shm", "/var/tmp")
# What a job sees at the top of the host's tree: the system (read-only, as under
# bwrap: _bwrap.READ_ONLY), /proc and /dev of its own, and scratch /tmp. Not
# /sys, which bwrap does not mount either (the host's cgroups, their pids).
SYSTEM = frozenset(
    {"usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc", "dev", "proc", "tmp"}
)


def _hidden() -> tuple[str, ...]:
    """Host paths a job must not see: sockets and pid files under /run, broker and
    database files under /var, homes, and every other entry at the top (an app's
    own directory, /opt, /work: a world-readable file there was readable by a
    job, which bwrap never binds)."""
    try:
        names = os.listdir("/")
    except OSError:
        names = []
    tops = {f"/{name}" for name in names if name not in SYSTEM}
    return tuple(sorted(tops | {"/run", "/var", "/home", "/root", "/srv", "/mnt", "/media"}))


HIDDEN = _hidden()
# Pseudo-terminals a run may hold, in a devpts instance of its own. The host's
# instance has no per-run limit: a job opening /dev/ptmx in 30 processes took
# all of kernel.pty.max (4096), and the host could open no terminal until the
# run ended. Instances other than the host's share pty.max less pty.reserve.
PTYS = 64
_MS_NOEXEC = 8
# The devices of a run's /dev (bwrap's --dev has the same), and its links.
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
_DEV_LINKS = (
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
)
_DEV = "size=64k,nr_inodes=64,mode=755"

# Kernel keyrings are not namespaced: a key a job adds to its uid's keyring
# outlives the run and is there for the next run leased that uid (seen: one
# run's add_key read back by the next). A seccomp filter answers EPERM to the
# three keyring calls. Per architecture: its AUDIT_ARCH and the calls' numbers.
_KEYRING_CALLS = {
    "x86_64": (0xC000003E, (248, 249, 250)),  # add_key, request_key, keyctl
    "aarch64": (0xC00000B7, (217, 218, 219)),
}
# A user namespace of its own gave a job the mounts this module's limits are
# made of: a devpts without the run's max (seen: 250 ptys by one process where
# the run's own devpts allows 64, taken from what every other devpts instance
# on the host draws on), fresh tmpfs, a cgroup2 view. The same filter answers
# EPERM to unshare and clone asking for CLONE_NEWUSER (as a kernel without user
# namespaces does), and ENOSYS to clone3, whose flags it cannot read (the C
# library then falls back to clone). Per architecture: unshare, clone, clone3.
_USERNS_CALLS = {
    "x86_64": (272, 56, 435),
    "aarch64": (97, 220, 435),
}
_CLONE_NEWUSER = 0x10000000
_X32_BIT = 0x40000000
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_SECCOMP_RET_ALLOW = 0x7FFF0000
_SECCOMP_RET_ERRNO = 0x00050000
_BPF_LOAD = 0x20  # BPF_LD | BPF_W | BPF_ABS
_BPF_JEQ = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_BPF_JGE = 0x35  # BPF_JMP | BPF_JGE | BPF_K
_BPF_JSET = 0x45  # BPF_JMP | BPF_JSET | BPF_K
_BPF_RET = 0x06  # BPF_RET | BPF_K

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = (
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_char_p,
)
_libc.unshare.argtypes = (ctypes.c_int,)
_libc.syscall.restype = ctypes.c_long


class _MountAttr(ctypes.Structure):
    _fields_ = (
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    )


def _check(result: int, what: str) -> None:
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


def _mount(source: str | None, target: str, kind: str | None, flags: int, data: str = "") -> None:
    _check(
        _libc.mount(
            source.encode() if source else None,
            target.encode(),
            kind.encode() if kind else None,
            flags,
            data.encode() if data else None,
        ),
        f"mount {target}",
    )


def _set_readonly(target: str, recursive: bool, readonly: bool = True) -> None:
    attr = _MountAttr()
    if readonly:
        attr.attr_set = _MOUNT_ATTR_RDONLY | _MOUNT_ATTR_NOSUID
    else:
        attr.attr_clr = _MOUNT_ATTR_RDONLY
    flags = _AT_RECURSIVE if recursive else 0
    result = _libc.syscall(
        _SYS_MOUNT_SETATTR,
        _AT_FDCWD,
        target.encode(),
        flags,
        ctypes.byref(attr),
        ctypes.sizeof(attr),
    )
    if result < 0 and ctypes.get_errno() == errno.ENOSYS:
        _remount_each(target, recursive, readonly)
        return
    _check(result, f"mount_setattr {target}")


def _remount_each(target: str, recursive: bool, readonly: bool) -> None:
    """Kernels before 5.12 (no ``mount_setattr``): remount every mount under ``target``."""
    with open("/proc/self/mountinfo") as handle:
        points = [line.split()[4] for line in handle]
    prefix = target.rstrip("/") + "/"
    for point in points:
        if point == target or (recursive and point.startswith(prefix)):
            flags = MS_REMOUNT | MS_BIND | (MS_RDONLY | MS_NOSUID if readonly else 0)
            try:
                _mount(None, point, None, flags)
            except OSError as exc:
                if exc.errno not in (errno.EACCES, errno.EPERM, errno.EINVAL, errno.ENOENT):
                    raise


def _loopback_up() -> None:
    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    try:
        request = struct.pack("16sh22x", b"lo", 0)
        flags = struct.unpack("16sh22x", fcntl.ioctl(sock.fileno(), _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock.fileno(), _SIOCSIFFLAGS, struct.pack("16sh22x", b"lo", flags | _IFF_UP))
    finally:
        sock.close()


def _cover(path: str, flags: int, options: str) -> dict[str, int]:
    """Mount a fresh tmpfs on ``path``; what was under it stays reachable through the
    returned descriptor (for a job directory that lies below it, see prepare_run)."""
    if not os.path.isdir(path) or os.path.islink(path):
        return {}
    under = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    _mount("tmpfs", path, "tmpfs", flags, options)
    return {path: under}


def enter(root: bool) -> dict[str, int]:
    """New namespaces for this process and the children it forks next (see module
    doc); returns a descriptor of what each hidden directory covers."""
    uid, gid = os.getuid(), os.getgid()
    _check(_libc.unshare(FLAGS | (0 if root else CLONE_NEWUSER)), "unshare")
    if not root:
        # Only the worker's own ids exist inside: a job's exec drops every
        # capability (its uid is not 0 there), and it owns nothing it did not.
        with open("/proc/self/setgroups", "w") as handle:
            handle.write("deny")
        with open("/proc/self/uid_map", "w") as handle:
            handle.write(f"{uid} {uid} 1")
        with open("/proc/self/gid_map", "w") as handle:
            handle.write(f"{gid} {gid} 1")
    _loopback_up()
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _set_readonly("/", recursive=True)
    covered: dict[str, int] = {}
    for path in HIDDEN:
        # Read-only as a mount, not as a file system: a job directory below it
        # can still be made (see prepare_run).
        hidden = _cover(path, MS_NOSUID | MS_NODEV, _HIDING)
        if hidden:
            _set_readonly(path, recursive=False)
        elif os.path.isfile(path) and not os.path.islink(path):
            _mount("/dev/null", path, None, MS_BIND)  # a file at the top reads empty
            _set_readonly(path, recursive=False)
        covered.update(hidden)
    _own_dev()
    return covered


def _own_dev() -> None:
    """A ``/dev`` of the run's own, as bwrap's ``--dev``: :data:`DEVICES` bound from
    the host's, a devpts instance with ``ptmx``, an empty ``shm`` for the scratch
    tmpfs, and the ``fd`` links; read-only. The host's ``/dev`` held every device
    node of the host, any of them open to a job whose mode let it (its
    ``/dev/pts`` is how a job took all of the host's pseudo-terminals)."""
    host = os.open("/dev", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _mount("tmpfs", "/dev", "tmpfs", MS_NOSUID | _MS_NOEXEC, _DEV)
        for name in DEVICES:
            source = f"/proc/self/fd/{host}/{name}"
            if os.path.exists(source):
                target = f"/dev/{name}"
                os.close(os.open(target, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o666))
                _mount(source, target, None, MS_BIND)
    finally:
        os.close(host)
    os.mkdir("/dev/pts", 0o755)
    options = f"newinstance,ptmxmode=0666,mode=0620,max={PTYS}"
    _mount("devpts", "/dev/pts", "devpts", MS_NOSUID | _MS_NOEXEC, options)
    os.symlink("pts/ptmx", "/dev/ptmx")
    os.mkdir("/dev/shm", 0o1777)  # PID 1 mounts the scratch tmpfs on it
    for name, target in _DEV_LINKS:
        os.symlink(target, f"/dev/{name}")
    _set_readonly("/dev", recursive=False)


def die_with_parent() -> None:
    """SIGKILL this process when its parent (the worker, once re-parented) dies: the
    namespace's PID 1 takes every process of the run with it."""
    _check(_libc.prctl(_PR_SET_PDEATHSIG, 9, 0, 0, 0), "prctl(PDEATHSIG)")


def enter_pid() -> None:
    """In PID 1 of the new namespace: a ``/proc`` of this namespace only."""
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | 8)  # 8: MS_NOEXEC


def open_tree(path: str) -> int:
    """In the worker: a detached clone of the mount tree at ``path`` (a descriptor the
    job process attaches in its own namespace), or -1 before Linux 5.2."""
    fd = int(_libc.syscall(_SYS_OPEN_TREE, _AT_FDCWD, path.encode(), _OPEN_TREE_FLAGS))
    return fd if fd >= 0 else -1


def mount_scratch(size: int, inodes: int) -> dict[str, int]:
    """In PID 1, before any request: a fresh tmpfs of ``size`` bytes and ``inodes``
    inodes on each of :data:`SCRATCH` (the fork server is started per size);
    returns a descriptor of what each covers."""
    options = f"size={size},nr_inodes={inodes},mode=1777"
    covered: dict[str, int] = {}
    for path in SCRATCH:
        covered.update(_cover(path, MS_NOSUID | MS_NODEV, options))
    return covered


def mount_jobs(parent: str) -> str:
    """In PID 1, before any request: a small tmpfs of its own on ``parent`` (the
    worker's job directory parent), root's and 0711 like the host's, where
    :func:`prepare_run` makes the run's directory with one ``mkdir``: no hidden
    directory above it is made writable and read-only again on the run's path.
    Returns ``parent``, or "" if it could not be made (the run then makes its
    directory the longer way)."""
    hiding = [p for p in HIDDEN if parent.startswith(p.rstrip("/") + "/")]
    try:
        for path in hiding:
            _set_readonly(path, recursive=False, readonly=False)
        try:
            os.makedirs(parent, exist_ok=True)
        finally:
            for path in hiding:
                _set_readonly(path, recursive=False)
        _mount("tmpfs", parent, "tmpfs", MS_NOSUID | MS_NODEV, _JOBS)
    except OSError:
        return ""
    return parent


def prepare_run(workdir: str, tree: int, covered: dict[str, int], jobs: str = "") -> None:
    """In the job process, before exec: the job directory (see module doc).

    ``jobs``: the parent :func:`mount_jobs` prepared in this namespace, or "".

    ``tree`` is :func:`open_tree` of the job directory, made in the worker's
    namespace (so it carries the directory's own tmpfs, mounted after this
    namespace was made), or -1 (no ``open_tree``, or not allowed to clone the
    worker's mounts): then the directory is bound from this namespace's copy of
    the host's tree, reached below a tmpfs through ``covered`` (see :func:`_cover`).
    """
    ready = bool(jobs) and os.path.dirname(workdir) == jobs
    hiding = [] if ready else [p for p in HIDDEN if workdir.startswith(p.rstrip("/") + "/")]
    workdir_fd = -1
    if tree < 0:
        below = [p for p in covered if workdir.startswith(p.rstrip("/") + "/")]
        if below:
            relative = os.path.relpath(workdir, below[0])
            flags = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
            workdir_fd = os.open(relative, flags, dir_fd=covered[below[0]])
        else:
            workdir_fd = os.open(workdir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    for path in hiding:
        _set_readonly(path, recursive=False, readonly=False)
    if ready:
        os.mkdir(workdir, 0o700)  # the namespace is the run's own: never there yet
    else:
        os.makedirs(workdir, exist_ok=True)
    if tree >= 0:
        flags = _MOVE_MOUNT_F_EMPTY_PATH
        moved = _libc.syscall(_SYS_MOVE_MOUNT, tree, b"", _AT_FDCWD, workdir.encode(), flags)
        _check(moved, f"move_mount {workdir}")
        os.close(tree)
    else:
        _mount(f"/proc/self/fd/{workdir_fd}", workdir, None, MS_BIND)
        os.close(workdir_fd)
        _set_readonly(workdir, recursive=False, readonly=False)
    for path in hiding:
        _set_readonly(path, recursive=False)


def rehearse_attach(jobs: str) -> None:
    """In the job process, before the request: the calls :func:`prepare_run` makes
    to attach a detached job directory in ``jobs``, to no effect (the ``mkdir``
    of what exists, the ``move_mount`` of no descriptor), so that the memory
    they write (ctypes' argument conversion, the frames, the C stack) is the job
    process's own before the request rather than copied from PID 1's at a fault
    each on the run's path (``_forkserver._rehearse``)."""
    parent = jobs or "/"
    if os.path.dirname(os.path.join(parent, "job")) == parent:
        try:  # noqa: SIM105 - contextlib would grow the fork server for one call
            os.mkdir(parent, 0o700)  # it exists: EEXIST
        except OSError:
            pass
    _libc.syscall(_SYS_MOVE_MOUNT, -1, b"", _AT_FDCWD, b"/", _MOVE_MOUNT_F_EMPTY_PATH)


def harden() -> None:
    """In the job process, before the request (off the run's path): ``no_new_privs``
    and the keyring filter, which no call the job process makes before ``exec``
    is refused by."""
    _check(_libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(NO_NEW_PRIVS)")
    deny_keyrings()


class _Filter(ctypes.Structure):
    _fields_ = (
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    )


class _Program(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_Filter)))


def keyring_filter(machine: str) -> list[tuple[int, int, int, int]]:
    """The seccomp program (code, jt, jf, k) that refuses the keyring calls with
    EPERM on ``machine``, and a new user namespace (``unshare`` or ``clone`` with
    ``CLONE_NEWUSER``: EPERM; ``clone3``: ENOSYS, see :data:`_USERNS_CALLS`), and
    every call of another ABI (i386's ``int 0x80``, x32) with ENOSYS, whose
    numbers differ; empty for an unknown machine."""
    known = _KEYRING_CALLS.get(machine)
    if known is None:
        return []
    arch, (add_key, request_key, keyctl) = known
    unshare, clone, clone3 = _USERNS_CALLS[machine]
    deny_abi = _SECCOMP_RET_ERRNO | errno.ENOSYS
    return [
        (_BPF_LOAD, 0, 0, 4),  # seccomp_data.arch
        (_BPF_JEQ, 1, 0, arch),
        (_BPF_RET, 0, 0, deny_abi),
        (_BPF_LOAD, 0, 0, 0),  # seccomp_data.nr
        (_BPF_JGE, 0, 1, _X32_BIT),
        (_BPF_RET, 0, 0, deny_abi),
        (_BPF_JEQ, 8, 0, add_key),  # to the EPERM
        (_BPF_JEQ, 7, 0, request_key),
        (_BPF_JEQ, 6, 0, keyctl),
        (_BPF_JEQ, 6, 0, clone3),  # to the last ENOSYS
        (_BPF_JEQ, 1, 0, unshare),
        (_BPF_JEQ, 0, 2, clone),
        (_BPF_LOAD, 0, 0, 16),  # the low half of seccomp_data.args[0]: the flags
        (_BPF_JSET, 1, 0, _CLONE_NEWUSER),
        (_BPF_RET, 0, 0, _SECCOMP_RET_ALLOW),
        (_BPF_RET, 0, 0, _SECCOMP_RET_ERRNO | errno.EPERM),
        (_BPF_RET, 0, 0, deny_abi),
    ]


def _built(
    program: list[tuple[int, int, int, int]],
) -> tuple[_Program, ctypes.Array[_Filter]] | None:
    if not program:
        return None
    filters = (_Filter * len(program))(*(_Filter(*line) for line in program))
    return _Program(len(program), filters), filters


# Built once, in the fork server, so that a job process (a fork of it) only
# installs it: building it there is on every run's critical path.
_KEYRING_PROGRAM = _built(keyring_filter(os.uname().machine))
# The same program as bwrap's ``--seccomp FD`` reads it: the ``struct
# sock_filter`` array (8 bytes an instruction, this machine's byte order), empty
# on a machine :func:`keyring_filter` does not know. Built once per process; the
# worker hands it to every bwrap run (``_process``), so that both isolating
# modes refuse the same calls.
FILTER_PROGRAM = bytes(_KEYRING_PROGRAM[1]) if _KEYRING_PROGRAM is not None else b""


def deny_keyrings() -> None:
    """In the job process, after ``no_new_privs``: no keyring calls (see
    :data:`_KEYRING_CALLS`) and no new user namespace (:data:`_USERNS_CALLS`); on
    a machine without their numbers here, both stay reachable."""
    if _KEYRING_PROGRAM is None:
        return
    prog, _ = _KEYRING_PROGRAM
    _check(
        _libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0),
        "prctl(PR_SET_SECCOMP)",
    )


def full(paths: tuple[str, ...]) -> str:
    """``"tmpfs"`` or ``"inodes"`` when one of ``paths`` (statvfs'd from inside the
    namespace) has no free block or no free inode; else empty."""
    for path in paths:
        try:
            stat = os.statvfs(path)
        except OSError:
            continue
        if stat.f_bfree == 0:
            return "tmpfs"
        if stat.f_files and stat.f_ffree == 0:
            return "inodes"
    return ""


def probe() -> str | None:
    """Whether this process may make the namespaces: None, or what is missing.

    Forks a child that makes them all (and mounts a ``/proc`` and a scratch tmpfs
    in them) and exits; run in a small helper process, not in the worker.
    """
    root = os.geteuid() == 0
    workdir = f"/tmp/guild-probe-{os.getpid()}"
    os.mkdir(workdir, 0o700)
    try:
        return _probe_in(root, workdir)
    finally:
        os.rmdir(workdir)


def _probe_in(root: bool, workdir: str) -> str | None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            covered = enter(root)
            inner = os.fork()
            if inner == 0:
                try:
                    enter_pid()
                    harden()
                    prepare_run(workdir, -1, {**covered, **mount_scratch(1 << 20, 64)})
                    os._exit(0)
                except OSError as exc:
                    os.write(write, str(exc).encode())
                    os._exit(1)
            _, status = os.waitpid(inner, 0)
            os._exit(0 if status == 0 else 1)
        except OSError as exc:
            os.write(write, str(exc).encode())
            os._exit(1)
    os.close(write)
    with os.fdopen(read, "rb") as handle:
        message = handle.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    if status == 0:
        return None
    return message or f"namespace probe exited with status {status}"


if __name__ == "__main__":
    failure = probe()
    sys.stdout.write(failure or "")
    sys.exit(1 if failure else 0)
