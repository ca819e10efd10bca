"""A cgroup per run: budgets counted over all of a run's processes, and a kill list.

Where the worker may make cgroups (root, or a delegated subtree), each run gets
one under the worker's own cgroup: in the v1 ``memory``, ``pids`` and
``cpuacct`` hierarchies where those are mounted (a hybrid host), else in the v2
unified hierarchy when its ``memory`` and ``pids`` controllers are enabled for
the worker's children. The run's first process joins it before ``exec`` (the
spawn paths write to the descriptors opened here: :meth:`RunCgroup.open_procs`), so every
process it ever forks is inside and counted:

* memory — ``memory.limit_in_bytes`` / ``memory.max``, which also counts the
  tmpfs pages the run writes (they are charged to the cgroup that wrote them);
* processes — ``pids.max``;
* CPU time — read from ``cpuacct.usage`` / ``cpu.stat`` and compared here.

:meth:`RunCgroup.exceeded` names the budget a run went over; :meth:`RunCgroup.pids`
lists every process still inside, however it detached itself.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading

import attrs

_V1 = ("memory", "pids", "cpuacct")


@attrs.frozen
class Layout:
    """Where this process may make run cgroups: controller -> its own cgroup directory."""

    version: int
    bases: dict[str, str]


def _own_paths() -> dict[str, str]:
    paths: dict[str, str] = {}
    with open("/proc/self/cgroup") as handle:
        for line in handle:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for controller in controllers.split(",") if controllers else [""]:
                paths[controller] = path
    return paths


def _mounts() -> tuple[dict[str, str], str | None]:
    v1: dict[str, str] = {}
    v2: str | None = None
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            fields = line.split()
            dash = fields.index("-")
            kind, options = fields[dash + 1], fields[dash + 3].split(",")
            if kind == "cgroup":
                for option in options:
                    if option in _V1:
                        v1.setdefault(option, fields[4])
            elif kind == "cgroup2" and v2 is None:
                v2 = fields[4]
    return v1, v2


def _writable(directory: str) -> bool:
    return os.path.isdir(directory) and os.access(directory, os.W_OK)


def discover() -> Layout | None:
    """Where run cgroups can be made here, or None (no budgets beyond rlimits)."""
    try:
        own = _own_paths()
        v1, v2 = _mounts()
    except (OSError, ValueError):
        return None
    if "memory" in v1 and "pids" in v1:
        bases = {c: v1[c] + own.get(c, "/").rstrip("/") for c in _V1 if c in v1 and c in own}
        if all(_writable(b) for b in bases.values()) and {"memory", "pids"} <= set(bases):
            return Layout(version=1, bases=bases)
    if v2 is not None and "" in own:
        base = v2 + own[""].rstrip("/")
        try:
            with open(os.path.join(base, "cgroup.subtree_control")) as handle:
                enabled = set(handle.read().split())
        except OSError:
            return None
        if {"memory", "pids"} <= enabled and _writable(base):
            return Layout(version=2, bases={"": base})
    return None


_layout: Layout | None = None
_discovered = False


def layout() -> Layout | None:
    """:func:`discover`, once per process."""
    global _layout, _discovered
    if not _discovered:
        _layout = discover()
        _discovered = True
        if _layout is not None:
            _remove_stale(_layout)
    return _layout


def _remove_stale(found: Layout) -> None:
    """Pooled cgroups of worker processes that died without removing them."""
    for base in found.bases.values():
        with contextlib.suppress(OSError), os.scandir(base) as entries:
            for entry in entries:
                parts = entry.name.split("-")
                ours = len(parts) == 3 and parts[0] == "guild" and parts[1].isdigit()
                if ours and not os.path.exists(f"/proc/{parts[1]}"):
                    with contextlib.suppress(OSError):
                        os.rmdir(entry.path)


def _write(path: str, value: str) -> None:
    with open(path, "w") as handle:
        handle.write(value)


def _read(path: str) -> str:
    # Plain descriptor reads: a run's end reads six of these files, and a text
    # file object costs twice the system calls' time (~17 µs more per file).
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return ""
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    except OSError:
        return ""
    finally:
        os.close(fd)
    return b"".join(chunks).decode()


def _field(text: str, name: str) -> int:
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == name:
            return int(value)
    return 0


@attrs.frozen
class Counters:
    """The event counters a budget verdict compares (they only grow, and cannot be reset)."""

    oom: int
    pids_max: int
    cpu_ns: int


@attrs.define
class RunCgroup:
    """One run's cgroup (one directory per v1 controller, or one v2 directory).

    Cgroups are pooled per worker process (removing a memory cgroup costs
    milliseconds): an empty one is reused with the next run's budgets, and its
    event counters are compared to what they were when the run began. One whose
    memory is still charged when it would be handed out is removed instead
    (:meth:`uncharged`).

    ``limits``: the (memory, processes) last written to its files, which a reuse
    with the same budgets does not write again; ``settled``: the counters read
    by :meth:`final` after a run, which stay as they are while the cgroup is
    empty, so they are the next run's baseline without reading them again.
    """

    layout: Layout
    dirs: dict[str, str]
    cpu_budget_ns: int = 0
    baseline: Counters = Counters(0, 0, 0)
    limits: tuple[int, int] | None = None
    settled: Counters | None = None

    def _limit(self, memory: int, processes: int) -> None:
        if self.layout.version == 1:
            memory_dir = self.dirs["memory"]
            limit = os.path.join(memory_dir, "memory.limit_in_bytes")
            swap = os.path.join(memory_dir, "memory.memsw.limit_in_bytes")
            # memsw (memory + swap) may never be below the memory limit: raise
            # it first when growing, lower it last when shrinking.
            try:
                _write(swap, str(memory))
                _write(limit, str(memory))
            except OSError:
                _write(limit, str(memory))
                with contextlib.suppress(OSError):  # no swap accounting: nothing to bound
                    _write(swap, str(memory))
            _write(os.path.join(self.dirs["pids"], "pids.max"), str(processes))
        else:
            directory = self.dirs[""]
            _write(os.path.join(directory, "memory.max"), str(memory))
            with contextlib.suppress(OSError):
                _write(os.path.join(directory, "memory.swap.max"), "0")
            _write(os.path.join(directory, "pids.max"), str(processes))

    def counters(self) -> Counters:
        if self.layout.version == 1:
            memory = _read(os.path.join(self.dirs["memory"], "memory.oom_control"))
            pids = _read(os.path.join(self.dirs["pids"], "pids.events"))
            oom = _field(memory, "oom_kill") + _field(memory, "under_oom")
        else:
            memory = _read(os.path.join(self.dirs[""], "memory.events"))
            pids = _read(os.path.join(self.dirs[""], "pids.events"))
            oom = _field(memory, "oom_kill") + _field(memory, "oom")
        return Counters(oom, _field(pids, "max"), self.cpu_ns())

    def open_procs(self) -> list[int]:
        """Write descriptors, for the child to join before exec by writing ``0`` (itself).

        v1: each hierarchy's ``tasks``, which moves the writing thread only: the
        child is single-threaded (a fork-server spare, or a fork in ``preexec_fn``),
        so that is the whole process, and the kernel then skips the global
        write lock (``cgroup_threadgroup_rwsem``) that a write to ``cgroup.procs``
        takes, which waits for an RCU grace period: 7-18 ms on this 2-core VM
        under load, against 0.03 ms. v2: ``cgroup.procs`` (``cgroup.threads``
        moves a thread only within a threaded subtree).
        """
        name = "tasks" if self.layout.version == 1 else "cgroup.procs"
        return [
            os.open(os.path.join(d, name), os.O_WRONLY | os.O_CLOEXEC) for d in self.dirs.values()
        ]

    def pids(self) -> set[int]:
        """Every process still in the run's cgroup."""
        found: set[int] = set()
        for directory in self.dirs.values():
            found.update(int(p) for p in _read(os.path.join(directory, "cgroup.procs")).split())
        return found

    def cpu_ns(self) -> int:
        if self.layout.version == 1:
            if "cpuacct" not in self.dirs:
                return 0
            text = _read(os.path.join(self.dirs["cpuacct"], "cpuacct.usage")).strip()
            return int(text) if text else 0
        return _field(_read(os.path.join(self.dirs[""], "cpu.stat")), "usage_usec") * 1000

    def exceeded(self) -> str | None:
        """The budget the run went over: ``"memory"``, ``"processes"``, ``"cpu"``, or None."""
        return verdict(self.baseline, self.counters(), self.cpu_budget_ns)

    def final(self) -> str | None:
        """:meth:`exceeded`, once every process of the run is gone: the reading is
        kept as the next run's baseline (see ``settled``)."""
        now = self.counters()
        self.settled = now
        return verdict(self.baseline, now, self.cpu_budget_ns)

    def uncharged(self) -> bool:
        """Whether the memory charged to the (empty) cgroup is within ``_CHARGE_SLACK``,
        after reclaiming what can be: charges left by a run would count against
        the next one's memory budget.

        A run may leave files in a tmpfs that outlives it (``/dev/shm``, a mount
        namespace not yet dropped), whose pages stay charged here and cannot be
        reclaimed without swap; its page cache stays too, until reclaimed. What
        an ordinary run leaves (the per-CPU charge stock, kernel objects freed
        late) is a few hundred KiB, within the slack, and costs no reclaim.
        """
        v1 = self.layout.version == 1
        directory = self.dirs["memory" if v1 else ""]
        usage = os.path.join(directory, "memory.usage_in_bytes" if v1 else "memory.current")
        charged = _charged(usage)
        if charged is None or charged <= _CHARGE_SLACK:
            return charged is not None
        # v1's force_empty reclaims all it can (the cgroup must be empty, as a
        # pooled one is); v2's reclaim takes a byte count, and fails when it
        # cannot reclaim that much, which the reading after it tells.
        with contextlib.suppress(OSError):
            if v1:
                _write(os.path.join(directory, "memory.force_empty"), "0")
            else:
                _write(os.path.join(directory, "memory.reclaim"), str(charged))
        charged = _charged(usage)
        return charged is not None and charged <= _CHARGE_SLACK

    def kill(self) -> bool:
        """SIGKILL every process inside; whether any was found."""
        pids = self.pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, 9)
        return bool(pids)

    def remove(self) -> None:
        for directory in self.dirs.values():
            with contextlib.suppress(OSError):
                os.rmdir(directory)


def _charged(path: str) -> int | None:
    """Bytes a memory usage file reads, or None when it cannot be read."""
    text = _read(path).strip()
    return int(text) if text.isdigit() else None


# What a pooled cgroup may still have charged and be handed out again: a run's
# leftovers up to this are noise against any memory budget, and dropping a
# group for them would cost its removal and a new one for nearly every run.
_CHARGE_SLACK = 1 << 20


def verdict(before: Counters, now: Counters, cpu_budget_ns: int) -> str | None:
    """Pure: the budget a run went over between two readings of its counters."""
    if now.oom > before.oom:
        return "memory"
    if now.pids_max > before.pids_max:
        return "processes"
    if cpu_budget_ns and now.cpu_ns - before.cpu_ns >= cpu_budget_ns:
        return "cpu"
    return None


_POOL_SIZE = 32
_pool: list[RunCgroup] = []
_made = 0
_pool_lock = threading.Lock()


def acquire(memory: int, processes: int, cpu_seconds: float) -> RunCgroup | None:
    """A cgroup with these budgets for one run, or None when none can be made here."""
    group = blank()
    if group is None or not configure(group, memory, processes, cpu_seconds):
        return None
    return group


def blank() -> RunCgroup | None:
    """A cgroup from the pool (or a new one) whose budgets :func:`configure` sets later:
    a fork-server spare joins it before the run is asked for (``_spawn``)."""
    global _made
    found = layout()
    if found is None:
        return None
    group = _pooled()
    if group is not None:
        return group
    with _pool_lock:
        _made += 1
        name = f"guild-{os.getpid()}-{_made}"
    group = RunCgroup(found, {c: os.path.join(b, name) for c, b in found.bases.items()})
    try:
        for directory in group.dirs.values():
            os.mkdir(directory, 0o755)
    except OSError:
        group.remove()
        return None
    return group


def _pooled() -> RunCgroup | None:
    """The latest pooled cgroup whose memory is uncharged; those still charged are
    removed on the way (their charges would count against the next run)."""
    while True:
        with _pool_lock:
            if not _pool:
                return None
            group = _pool.pop()
        if group.uncharged():
            return group
        group.remove()


def configure(group: RunCgroup, memory: int, processes: int, cpu_seconds: float) -> bool:
    """Set a run's budgets on ``group`` and take the counters' baseline; False (and the
    group removed) if the cgroup files refuse them. A pooled group that already has
    these limits, and the counters its last run ended with, needs no file at all."""
    if group.limits != (memory, processes):
        group.limits = None
        try:
            group._limit(memory, processes)
        except OSError:
            group.remove()
            return False
        group.limits = (memory, processes)
    group.cpu_budget_ns = int(cpu_seconds * 1e9)
    group.baseline = group.settled if group.settled is not None else group.counters()
    group.settled = None
    return True


def release(group: RunCgroup, empty: bool = False) -> None:
    """Back to the pool when empty (the run's processes are all gone), else removed.

    ``empty``: the caller knows no process is left (the run's PID namespace is
    gone), so the cgroup's process lists are not read. Otherwise a process may
    have run after :meth:`RunCgroup.final` read the counters, so the next run
    reads its own baseline."""
    if not empty:
        group.settled = None
    with _pool_lock:
        if (empty or not group.pids()) and len(_pool) < _POOL_SIZE:
            _pool.append(group)
            return
    group.remove()


def _remove_pool() -> None:
    with _pool_lock:
        while _pool:
            _pool.pop().remove()


atexit.register(_remove_pool)
