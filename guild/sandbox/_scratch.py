"""A bwrap run's scratch, made by a root worker: its /tmp, /dev/shm and ptys, with budgets.

bwrap's ``--tmpfs`` takes a size (``--size``, bubblewrap 0.7+) and nothing else,
and its ``--dev`` mounts a devpts without ``max=``: a job under bwrap filled
/tmp and /dev/shm with as much RAM as the host had (no inode limit either), and
opened pseudo-terminals from what every devpts instance on the host but the
host's own draws on (``kernel.pty.max`` less ``kernel.pty.reserve``). As kernel
mode does in the run's own namespace, a root worker makes them on the host,
beside the job directory, as ``<job directory>.scratch``:

* a tmpfs of ``tmpfs_size`` bytes and ``tmpfs_inodes`` inodes (0700, the run's
  uid's, so bwrap, which runs as that uid, can bind from it, and nobody else on
  the host can reach into it), holding ``tmp`` and ``shm`` (1777): bound on
  ``/tmp`` and ``/dev/shm``, which share its budget;
* in it, ``pts``: a devpts instance of at most :data:`_namespaces.PTYS`
  pseudo-terminals, bound over bwrap's own ``/dev/pts`` (``/dev/ptmx`` is its
  ``pts/ptmx``).

After the run :func:`full` reads the tmpfs's counters (``tmpfs`` or
``inodes``, the names kernel mode reports), and :func:`remove` detaches it,
devpts and all, with one lazy unmount. The name is the job directory's with a
suffix, so the sweep of a killed worker's directories (``_jobdir.sweep``)
unmounts and removes it too. Made and removed in the thread that makes and
removes the job directory: a mount waits for the host's mount lock.
"""

from __future__ import annotations

import os

from .._errors import SandboxError
from . import _jobdir, _namespaces

SUFFIX = ".scratch"
# The scratch tmpfs's own inodes: its root, tmp, shm and pts.
_OWN_INODES = 4
_MS_NOSUID = 2
_MS_NODEV = 4
_MS_NOEXEC = 8


def make(job: _jobdir.JobDir, size: int, inodes: int, identity: tuple[int, int]) -> str:
    """The scratch of the run in ``job`` (see the module doc): its path.

    Raises:
        SandboxError: it could not be made (nothing is left behind; the cause attached).
    """
    name = job.name + SUFFIX
    path = os.path.join(job.parent, name)
    os.mkdir(path, 0o700)
    mounted = False
    try:
        options = (
            f"size={size},nr_inodes={inodes + _OWN_INODES},mode=0700,"
            f"uid={identity[0]},gid={identity[1]}"
        )
        _namespaces._mount("tmpfs", path, "tmpfs", _MS_NOSUID | _MS_NODEV, options)
        mounted = True
        for place in ("tmp", "shm"):
            os.mkdir(os.path.join(path, place))
            os.chmod(os.path.join(path, place), 0o1777)  # not the umask's
        pts = os.path.join(path, "pts")
        os.mkdir(pts, 0o755)
        # No MS_NODEV: bwrap's --dev-bind keeps devices, and cannot clear a flag
        # of a mount it did not make.
        devpts = f"newinstance,ptmxmode=0666,mode=0620,max={_namespaces.PTYS}"
        _namespaces._mount("devpts", pts, "devpts", _MS_NOSUID | _MS_NOEXEC, devpts)
    except OSError as exc:
        _jobdir.remove(_jobdir.JobDir(job.parent, name, mounted, frozenset()))
        raise SandboxError(f"could not prepare the run's scratch {path}: {exc}") from exc
    return path


def full(path: str) -> str:
    """``tmpfs`` or ``inodes`` when the scratch at ``path`` has no free block or no
    free inode; else empty."""
    return _namespaces.full((path,))


def remove(path: str) -> None:
    """Unmount the scratch at ``path`` (lazily, its devpts with it) and remove it."""
    parent, name = os.path.split(path)
    _jobdir.remove(_jobdir.JobDir(parent, name, True, frozenset()))
