"""A pooled cgroup is handed to the next run only once its memory is uncharged:
pages its last run left charged (files in a tmpfs, page cache) would count
against the next run's memory budget. Real cgroups and real processes."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from guild.sandbox import _cgroup

pytestmark = pytest.mark.skipif(
    _cgroup.layout() is None,
    reason="no writable cgroup (v1 memory+pids, or delegated v2) on this host",
)

_WRITTEN = 4 << 20  # what each run below leaves behind: four times the slack


def _fstype(path: Path) -> str:
    """The type of the file system ``path`` is on (the longest mount point above it)."""
    found, best = "", ""
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            fields = line.split()
            point = fields[4]
            inside = str(path) == point or str(path).startswith(point.rstrip("/") + "/")
            if inside and len(point) >= len(best):
                found, best = fields[fields.index("-") + 1], point
    return found


def _run_in(group: _cgroup.RunCgroup, script: str) -> None:
    """Run ``sh -c script`` as the sandbox does: its process joins ``group`` before exec."""
    procs = group.open_procs()

    def join() -> None:
        for fd in procs:
            os.write(fd, b"0")

    try:
        subprocess.run(["/bin/sh", "-c", script], check=True, preexec_fn=join, pass_fds=procs)
    finally:
        for fd in procs:
            os.close(fd)


def _charged(group: _cgroup.RunCgroup) -> int:
    if group.layout.version == 1:
        return int(Path(group.dirs["memory"], "memory.usage_in_bytes").read_text())
    return int(Path(group.dirs[""], "memory.current").read_text())


@pytest.fixture
def group() -> Iterator[_cgroup.RunCgroup]:
    made = _cgroup.acquire(64 << 20, 10, 5.0)
    assert made is not None
    yield made
    made.remove()


def _pool_it(group: _cgroup.RunCgroup) -> None:
    """End the run as the sandbox does: final counters, then back to the pool."""
    assert group.pids() == set()
    group.final()
    _cgroup.release(group)


def test_a_group_after_an_ordinary_run_is_handed_out_again(group: _cgroup.RunCgroup) -> None:
    _run_in(group, "true")
    _pool_it(group)
    again = _cgroup.blank()
    assert again is group


def test_a_group_whose_run_left_tmpfs_pages_charged_is_removed_not_handed_out(
    group: _cgroup.RunCgroup,
) -> None:
    shm = Path("/dev/shm")
    if _fstype(shm) != "tmpfs":
        pytest.skip("no tmpfs at /dev/shm")
    leftover = shm / f"guild-test-{uuid.uuid4().hex}"
    try:
        # A file in a tmpfs that outlives the run: its pages stay charged, and no
        # reclaim frees them (no swap for the cgroup).
        _run_in(group, f"head -c {_WRITTEN} /dev/zero > {leftover}")
        assert _charged(group) >= _WRITTEN
        _pool_it(group)
        handed = _cgroup.blank()
        assert handed is not group
        assert handed is None or _charged(handed) < 1 << 20
        assert [d for d in group.dirs.values() if os.path.exists(d)] == []
        if handed is not None:
            _cgroup.release(handed)
    finally:
        leftover.unlink(missing_ok=True)


def test_a_group_whose_run_left_page_cache_is_reclaimed_and_handed_out(
    group: _cgroup.RunCgroup, tmp_path: Path
) -> None:
    if _fstype(tmp_path) in ("tmpfs", "ramfs", ""):
        pytest.skip(f"{tmp_path} is not on a disk: its pages cannot be reclaimed")
    written = tmp_path / "cache"
    _run_in(group, f"head -c {_WRITTEN} /dev/zero > {written}")
    # Written back, so that reclaim may drop the pages (dirty ones it may not).
    fd = os.open(written, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    assert _charged(group) >= _WRITTEN
    _pool_it(group)
    again = _cgroup.blank()
    assert again is group
    assert _charged(group) < 1 << 20
