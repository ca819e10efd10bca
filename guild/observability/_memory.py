"""How full memory is, as a fraction of the limit that applies to this process.

The limit is the container's when there is one (cgroup v2 ``memory.max``, or
v1 ``memory.limit_in_bytes``) and smaller than the machine's RAM, else the
machine's (``/proc/meminfo``: 1 - MemAvailable / MemTotal). The parsers are
pure; :func:`memory_fraction` reads the files and returns None where they do
not exist (not Linux), so the memory check is skipped rather than guessed.
"""

from __future__ import annotations

from pathlib import Path

_CGROUP_V2 = (Path("/sys/fs/cgroup/memory.current"), Path("/sys/fs/cgroup/memory.max"))
_CGROUP_V1 = (
    Path("/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
)
_MEMINFO = Path("/proc/meminfo")


def parse_meminfo(text: str) -> tuple[int, int] | None:
    """``(total, available)`` bytes from ``/proc/meminfo`` text, or None if absent."""
    fields: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            fields[key.strip()] = int(parts[0]) * 1024
    if "MemTotal" not in fields or "MemAvailable" not in fields:
        return None
    return fields["MemTotal"], fields["MemAvailable"]


def fraction_used(
    meminfo: tuple[int, int] | None, cgroup: tuple[int, int | None] | None
) -> float | None:
    """The fraction in use, from meminfo ``(total, available)`` and cgroup ``(used, limit)``.

    A cgroup limit counts only when it is set and below the machine's total.
    """
    total = meminfo[0] if meminfo else None
    if cgroup is not None:
        used, limit = cgroup
        if limit is not None and limit > 0 and (total is None or limit < total):
            return min(1.0, used / limit)
    if meminfo is None or meminfo[0] <= 0:
        return None
    total, available = meminfo
    return min(1.0, max(0.0, 1 - available / total))


def parse_cgroup(current: str, limit: str) -> tuple[int, int | None] | None:
    """``(used, limit)`` from cgroup files; ``limit`` None when unlimited."""
    current, limit = current.strip(), limit.strip()
    if not current.isdigit():
        return None
    if limit == "max" or not limit.isdigit():
        return int(current), None
    return int(current), int(limit)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def memory_fraction() -> float | None:
    """The fraction of this process's memory limit in use now (None: unknown)."""
    meminfo_text = _read(_MEMINFO)
    meminfo = parse_meminfo(meminfo_text) if meminfo_text else None
    cgroup = None
    for current_path, limit_path in (_CGROUP_V2, _CGROUP_V1):
        current, limit = _read(current_path), _read(limit_path)
        if current is not None and limit is not None:
            cgroup = parse_cgroup(current, limit)
            break
    return fraction_used(meminfo, cgroup)
