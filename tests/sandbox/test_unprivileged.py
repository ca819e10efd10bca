"""A worker that is not root: ``isolate="auto"`` still isolates, and hostile jobs are contained.

Run for real: the test (root) copies the ``guild`` package where uid 65534 can
read it, starts a worker as that uid (``setpriv``) and has it run a few hostile
jobs; each harm is then looked for from the host. Skipped, with the reason, when
the test is not root, no interpreter with guild's dependencies is readable by
that uid, or the host allows no unprivileged user namespaces.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

import guild

from ._unprivileged import NOBODY, SETPRIV, unprivileged_python

pytestmark = pytest.mark.slow


# The worker, as uid 65534: one run per attack, then what it saw, as JSON.
WORKER = r"""
import json, os, sys, trio, guild
from guild.sandbox import Sandbox, SandboxPolicy

port, marker, secret_file = int(sys.argv[1]), sys.argv[2], sys.argv[3]

def host_cmdlines():
    found = []
    for name in os.listdir('/proc'):
        try:
            with open(f'/proc/{name}/cmdline', 'rb') as handle:
                found.append(handle.read())
        except OSError:
            pass
    return found

JOBS = {
    'net': (
        "import socket, sys\n"
        "s = socket.socket()\n"
        "try:\n    s.connect(('127.0.0.1', int(sys.argv[1])))\n    print('connected')\n"
        "except OSError as exc:\n    print(type(exc).__name__)\n"
    ),
    'proc': (
        "import os, sys\n"
        "pids = [p for p in os.listdir('/proc') if p.isdigit()]\n"
        "seen = b''\n"
        # Its argv holds the marker reversed, and so does bwrap's (pid 1 of
        # the run's namespace): only a host process holds it the right way round.
        "for p in pids:\n"
        "    try:\n        seen += open(f'/proc/{p}/cmdline', 'rb').read()\n"
        "    except OSError:\n        pass\n"
        "print(len(pids), sys.argv[1][::-1].encode() in seen, os.getuid())\n"
    ),
    'kill': (
        "import os, time\n"
        "if os.fork() == 0:\n    time.sleep(30)\n"  # one process of its own for kill(-1)
        "os.kill(-1, 9)\nprint('after')\n"
    ),
    'daemon': (
        "import os, sys, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(60)',"
        " sys.argv[1]])\n"
        "    os._exit(0)\n"
        "time.sleep(0.2)\nprint('forked')\n"
    ),
    'secret': (
        "import sys\n"
        "try:\n    print(open(sys.argv[1]).read())\n"
        "except OSError as exc:\n    print(type(exc).__name__)\n"
    ),
    'bomb': (
        "import os, time\nn = 0\n"
        "for _ in range(200):\n"
        "    try:\n"
        "        if os.fork() == 0:\n            time.sleep(2)\n            os._exit(0)\n"
        "        n += 1\n"
        "    except OSError:\n        break\n"
        "print(n)\n"
    ),
    'memory': (
        "import os, time\n"
        "for _ in range(3):\n    if os.fork() == 0:\n        break\n"
        "block = bytearray(48 << 20)\n"
        "for i in range(0, len(block), 4096):\n    block[i] = 1\n"
        "time.sleep(1)\nprint('held')\n"
    ),
    'tmpfs': (
        "with open('/tmp/fill', 'wb') as f:\n"
        "    while True:\n        f.write(b'x' * 65536)\n"
    ),
    'scratch': (
        "import sys\n"
        "for d in ('/tmp', '/dev/shm', '/var/tmp'):\n"
        "    try:\n        open(f'{d}/{sys.argv[1]}', 'w').write('left')\n"
        "    except OSError:\n        pass\n"
    ),
    'normal': "print(6 * 7)\n",
}
# The daemon's own mark: the worker's argv and the planted process hold the marker.
daemon = marker[::-1]
ARGS = {'net': [str(port)], 'proc': [daemon], 'daemon': [daemon], 'secret': [secret_file],
        'scratch': [marker]}

async def main():
    box = Sandbox(SandboxPolicy(
        isolate='auto', kill_grace=0.2, processes=16, memory=96 << 20,
        address_space=1 << 30, tmpfs_size=1 << 20, file_size=1 << 30,
    ))
    seen = {'isolation': box.isolation, 'unenforced': sorted(box.unenforced)}
    try:
        box.check(['bash', '-c', 'id'])
    except guild.CommandRefused as refused:
        seen['refused'] = refused.rule
    for name, script in JOBS.items():
        argv = ['python3', 'j.py', *ARGS.get(name, [])]
        try:
            result = await box.run(argv, timeout=10, files={'j.py': script.encode()})
            seen[name] = [result.exit_code, result.stdout.decode(), result.budget_exceeded]
        except guild.SandboxTimeout as timeout:
            seen[name] = ['timeout', timeout.stdout.decode(), None]
        if name == 'daemon':
            seen['survivors'] = sum(daemon.encode() in c for c in host_cmdlines())
    print(json.dumps(seen))

trio.run(main)
"""


@pytest.fixture
def readable() -> Iterator[Path]:
    """A directory uid 65534 can read, holding a copy of the package under test."""
    directory = Path(tempfile.mkdtemp(prefix="guild-unprivileged-"))
    try:
        source = Path(guild.__file__).resolve().parent
        shutil.copytree(source, directory / "guild", ignore=shutil.ignore_patterns("__pycache__"))
        for path in (directory, *directory.rglob("*")):
            path.chmod(0o755 if path.is_dir() else 0o644)
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="starts a worker as uid 65534: needs root")
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
async def test_hostile_jobs_of_an_unprivileged_worker_are_contained(readable: Path) -> None:
    site = [p for p in sys.path if p.endswith("site-packages")]
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(readable),
        "PYTHONPATH": ":".join([str(readable), *site]),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    python = unprivileged_python(env)
    if python is None:
        pytest.skip(f"no interpreter with guild's dependencies ({site}) that uid 65534 may run")
    marker = "guild-unprivileged-" + os.urandom(6).hex()
    # A secret of the worker's own user, in a directory private to it: the job runs
    # as that same uid, so only the namespace keeps it out.
    private = readable / "private"
    private.mkdir(mode=0o700)
    secret = private / "secret"
    secret.write_text("the worker's secret")
    for path in (private, secret):
        os.chown(path, NOBODY, NOBODY)
    # A host process whose argv a job must not read.
    planted = await trio.lowlevel.open_process(
        [sys.executable, "-c", "import time; time.sleep(120)", marker]
    )
    try:
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(8)
            listener.setblocking(False)
            argv = [*SETPRIV, python, "-c", WORKER, str(listener.getsockname()[1])]
            argv += [marker, str(secret)]
            with trio.fail_after(120):
                worker = await trio.run_process(
                    argv, env=env, capture_stdout=True, capture_stderr=True, check=False, cwd="/"
                )
            with pytest.raises(BlockingIOError):
                listener.accept()
    finally:
        planted.kill()
        with trio.CancelScope(shield=True):
            await planted.wait()
    if worker.returncode != 0 and b"IsolationUnavailable" in worker.stderr:
        pytest.skip(f"no isolation for uid 65534 here: {worker.stderr.decode()[-300:]}")
    assert worker.returncode == 0, worker.stderr  # kill(-1) in a job did not reach it
    seen: dict[str, Any] = json.loads(worker.stdout.splitlines()[-1])

    assert seen["isolation"] == ("kernel" if shutil.which("bwrap") is None else "bwrap")
    assert seen["refused"] == "shell"
    assert seen["net"] == [0, "ConnectionRefusedError\n", None]
    count, found, uid = seen["proc"][1].split()
    assert int(count) <= 3 and found == "False" and int(uid) == NOBODY
    assert seen["kill"][:2] == [0, "after\n"]  # kill(-1) reached only its own run
    assert seen["daemon"][:2] == [0, "forked\n"] and seen["survivors"] == 0
    assert seen["secret"][1].strip() in ("FileNotFoundError", "PermissionError")
    for directory in ("/tmp", "/dev/shm", "/var/tmp"):
        assert not os.path.exists(f"{directory}/{marker}")
    assert seen["normal"] == [0, "42\n", None]

    # Each budget either ends the run naming it, or is reported as not enforced.
    unenforced = set(seen["unenforced"])
    assert {"disk_bytes", "disk_inodes"} <= unenforced  # no tmpfs without root
    forked = int(seen["bomb"][1] or "0") if seen["bomb"][0] != "timeout" else 0
    if "processes" not in unenforced:
        assert forked < 16 or seen["bomb"][2] == "processes"
    memory_named = seen["memory"][2] == "memory"
    assert memory_named == ("memory" not in unenforced), seen["memory"]
    if seen["isolation"] == "kernel":
        assert seen["tmpfs"][2] == "tmpfs" and "tmpfs_size" not in unenforced


ALL = {"memory", "processes", "run_cpu_seconds", "disk_bytes", "disk_inodes"}

# bubblewrap before 0.7.0, which has no --size: what it says, and the real one else.
OLD_BWRAP = """#!/bin/sh
for arg in "$@"; do
    if [ "$arg" = --size ]; then
        echo "bwrap: Unknown option --size" >&2
        exit 1
    fi
done
exec /usr/bin/bwrap "$@"
"""
REFUSE = """
import json, guild
from guild.sandbox import Sandbox, SandboxPolicy
try:
    sandbox = Sandbox(SandboxPolicy(isolate="bwrap"))
    print(json.dumps([sandbox.isolation, sorted(sandbox.unenforced)]))
except guild.IsolationUnavailable as exc:
    print(json.dumps(list(exc.missing)))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="starts a worker as uid 65534: needs root")
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
@pytest.mark.skipif(not os.path.exists("/usr/bin/bwrap"), reason="needs /usr/bin/bwrap")
def test_an_unprivileged_worker_refuses_a_bwrap_without_size(readable: Path) -> None:
    """Without root a bwrap run's /tmp and /dev/shm are bwrap's own tmpfs of
    tmpfs_size (--size, bubblewrap 0.7.0+): an older bwrap is refused, naming what
    it lacks, not run with a scratch no budget bounds."""
    site = [p for p in sys.path if p.endswith("site-packages")]
    fake = readable / "bin"
    fake.mkdir(mode=0o755)
    (fake / "bwrap").write_text(OLD_BWRAP)
    (fake / "bwrap").chmod(0o755)
    env = {
        "HOME": str(readable),
        "PYTHONPATH": ":".join([str(readable), *site]),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    python = unprivileged_python({**env, "PATH": "/usr/bin:/bin"})
    if python is None:
        pytest.skip(f"no interpreter with guild's dependencies ({site}) that uid 65534 may run")
    seen: dict[str, Any] = {}
    for path in (f"{fake}:/usr/bin:/bin", "/usr/bin:/bin"):
        run = subprocess.run(
            [*SETPRIV, python, "-c", REFUSE],
            env={**env, "PATH": path},
            capture_output=True,
            timeout=60,
            check=False,
            cwd="/",
        )
        assert run.returncode == 0, run.stderr
        seen[path] = json.loads(run.stdout.splitlines()[-1])
    real = seen["/usr/bin:/bin"]
    if len(real) == 1:
        pytest.skip(f"bwrap does not work for uid 65534 here: {real[0]}")
    assert seen[f"{fake}:/usr/bin:/bin"] == [
        f"bwrap: {fake}/bwrap has no --size option (bubblewrap 0.7.0 or later is needed"
        " to hold a run's /tmp and /dev/shm to tmpfs_size)"
    ]
    assert real[0] == "bwrap" and "tmpfs_inodes" in real[1]


class TestUnenforcedBudgets:
    """Which budgets a host cannot hold a run to, written out per case."""

    @pytest.mark.parametrize(
        ("isolation", "root", "cgroups", "leases", "expected"),
        [
            ("kernel", True, True, True, set()),
            ("bwrap", True, True, True, set()),
            ("none", True, True, False, set()),
            # Root without cgroups: the leased uid's RLIMIT_NPROC is the run's own.
            ("kernel", True, False, True, {"memory", "run_cpu_seconds"}),
            ("none", True, False, False, {"memory", "run_cpu_seconds", "processes"}),
            # Not root: the run's own user namespace counts its processes.
            (
                "kernel",
                False,
                False,
                False,
                {"memory", "run_cpu_seconds", "disk_bytes", "disk_inodes"},
            ),
            ("kernel", False, True, False, {"disk_bytes", "disk_inodes"}),
            ("none", False, False, False, ALL),
            # bwrap's own tmpfs takes a size, no inode limit.
            ("bwrap", False, False, False, ALL | {"tmpfs_inodes"}),
            ("bwrap", False, True, False, {"disk_bytes", "disk_inodes", "tmpfs_inodes"}),
        ],
    )
    def test_what_is_not_enforced(
        self, isolation: str, root: bool, cgroups: bool, leases: bool, expected: set[str]
    ) -> None:
        from guild.sandbox._process import BUDGETS, unenforced_budgets

        missing = unenforced_budgets(isolation, root, cgroups, leases)
        assert set(missing) == expected
        assert set(missing) <= set(BUDGETS)
        assert all(missing.values())  # each with its reason

    def test_a_sandbox_reports_its_own(self) -> None:
        from guild.sandbox import Sandbox, SandboxPolicy

        sandbox = Sandbox(SandboxPolicy(isolate="never"))
        if os.geteuid() != 0:
            assert {"disk_bytes", "disk_inodes"} <= set(sandbox.unenforced)
        assert sandbox.unenforced is not sandbox.unenforced  # a copy each time


def test_the_banner_names_the_budgets_not_enforced() -> None:
    from guild.cli._banner import render

    facts: dict[str, Any] = {
        "version": "0",
        "app": "a",
        "processes": 1,
        "broker": "memory://",
        "queues": [],
        "http": None,
        "sandbox": "kernel",
    }
    assert render(facts).splitlines()[-1] == "  sandbox: kernel isolation"
    facts["sandbox_unenforced"] = ["disk_bytes", "memory"]
    assert render(facts).splitlines()[-2:] == [
        "  sandbox: kernel isolation",
        "  sandbox: budgets not enforced on this host: disk_bytes, memory",
    ]
