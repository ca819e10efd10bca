"""Every attack in tests/sandbox/hostile_corpus.json, and more of each kind, is refused or contained.

Refused: a typed CommandRefused naming the rule, before any process starts and
before a job directory is made (both checked on the host). Contained: the
process runs, and the limit, kill, scrub or namespace stops the attack; each
harm is looked for on the host, not assumed away. Each containment test runs
in every isolation mode (none, bwrap, kernel); a mode this host does not offer
is a skip that says why, never a silent drop.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import shlex
import socket
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import trio
from structlog.testing import capture_logs

import guild
from guild._codec import encode_result
from guild.sandbox import Sandbox, SandboxPolicy, SandboxResult, _jobdir
from guild.sandbox._policy import Isolation

CORPUS = Path(__file__).with_name("hostile_corpus.json")
ROOT = os.geteuid() == 0
MODES = ["none", "bwrap", "kernel"]
ISOLATE: dict[str, Isolation] = {"none": "never", "bwrap": "bwrap", "kernel": "kernel"}
# Runs start through the fork server, or (its fallback) a preexec_fn in a fork of
# the worker: both must contain the same attacks.
SPAWNS = ["forkserver", "preexec"]


def _cases() -> list[dict[str, Any]]:
    return list(json.loads(CORPUS.read_text())["cases"])


def _missing(mode: str) -> str | None:
    """Why this host does not offer isolation ``mode``, or None when it does."""
    try:
        Sandbox(SandboxPolicy(isolate=ISOLATE[mode]))
    except guild.IsolationUnavailable as missing:
        return f"isolation mode {mode!r} is not offered by this host: {missing}"
    return None


MISSING = {mode: _missing(mode) for mode in MODES}


def _modes(**not_in: str) -> list[Any]:
    """Every mode as a parameter; one this host lacks, or one named in ``not_in``
    (mode -> why the attack is not contained there), is a skip with its reason."""
    params = []
    for mode in MODES:
        reason = MISSING[mode] or not_in.get(mode)
        marks = [pytest.mark.skip(reason=reason)] if reason else []
        params.append(pytest.param(mode, marks=marks, id=mode))
    return params


def _sandbox(mode: str, **changes: Any) -> Sandbox:
    sandbox = Sandbox(SandboxPolicy(isolate=ISOLATE[mode], **changes))
    assert sandbox.isolation == mode
    return sandbox


# Four processes of a job open up to 250 ptys each (from the path the script's
# head puts in ``ptmx``) and print ``held N``, the total they held at once.
_PTY_HOLDERS = (
    b"r, w = os.pipe()\n"
    b"for _ in range(4):\n"
    b"    if os.fork() == 0:\n"
    b"        held = []\n"
    b"        try:\n"
    b"            while len(held) < 250:\n"
    b"                held.append(os.open(ptmx, os.O_RDWR | os.O_NOCTTY))\n"
    b"        except OSError:\n"
    b"            pass\n"
    b"        os.write(w, len(held).to_bytes(4, 'little'))\n"
    b"        time.sleep(2)\n"
    b"        os._exit(0)\n"
    b"print('held', sum(int.from_bytes(os.read(r, 4), 'little') for _ in range(4)), flush=True)\n"
    b"time.sleep(1)\n"
)


async def _hold_ptys(mode: str, head: bytes) -> tuple[SandboxResult, int]:
    """Run ``head`` then :data:`_PTY_HOLDERS` in ``mode``: its result (exit 0
    checked) and how far the host's count of ptys in use rose meanwhile."""
    in_use = Path("/proc/sys/kernel/pty/nr")
    before = int(in_use.read_text())
    most = before

    async def watch() -> None:
        nonlocal most
        while True:
            most = max(most, int(in_use.read_text()))
            await trio.sleep(0.01)

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            result = await _sandbox(mode).run(
                ["python3", "ptys.py"], timeout=30, files={"ptys.py": head + _PTY_HOLDERS}
            )
            nursery.cancel_scope.cancel(reason="the run is over")
    assert result.exit_code == 0, result.stderr
    return result, most - before


def _spawn_modes(**not_in: str) -> list[Any]:
    """Every (mode, spawn path) as a parameter; skips as :func:`_modes`."""
    params = []
    for param in _modes(**not_in):
        for spawn in SPAWNS:
            marks = list(param.marks)
            if spawn == "preexec" and param.values[0] == "kernel" and not marks:
                marks = [
                    pytest.mark.skip(
                        reason="kernel mode starts every run through its own fork server"
                    )
                ]
            params.append(
                pytest.param((param.values[0], spawn), marks=marks, id=f"{param.values[0]}-{spawn}")
            )
    return params


@pytest.fixture(params=_spawn_modes())
def sandbox(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Sandbox:
    mode, spawn = request.param
    if spawn == "preexec":
        monkeypatch.setenv("GUILD_SANDBOX_SPAWN", "preexec")
    return _sandbox(mode, cpu_seconds=5, processes=32, kill_grace=0.5)


NO_NET = "mode none has no network namespace: a job's listener is reachable"
NO_PROC = "mode none shares the host's /proc: other processes' argv is readable"
NO_SCRATCH = "mode none shares the host's /tmp, /dev/shm and /var/tmp"
NO_FILES = "mode none shows the job the host's whole file system"
NO_PTYS = "mode none shares the host's /dev/pts"
NO_DEVICES = "mode none shares the host's /dev"
NO_KEYS = "mode none shares the kernel keyring of the run's uid with its next run"
NO_USERNS = "mode none filters no system call: a job may make a user namespace"
needs_root = pytest.mark.skipif(not ROOT, reason="the job directory's tmpfs needs a root worker")


def _refused(argv: list[str], rule: str, env: dict[str, str] | None = None) -> None:
    with pytest.raises(guild.CommandRefused) as info:
        Sandbox(SandboxPolicy(isolate="never")).check(argv, env)
    assert info.value.rule == rule, info.value


class TestCorpus:
    """Each corpus case that must be refused is refused by a run, with its rule, and
    nothing starts; each contained case names a test here that runs it."""

    @pytest.mark.parametrize(
        "case", [c for c in _cases() if "refused" in c], ids=lambda c: str(c["id"])
    )
    async def test_refused_before_anything_starts(
        self, case: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        marker = tmp_path / "ran"
        os.chmod(tmp_path, 0o777)
        # Were any process to start, this script would leave the marker on the host.
        files = {"x.py": f"open({str(marker)!r}, 'w').write('ran')".encode()}
        files.update({name: text.encode() for name, text in case.get("files", {}).items()})
        timeout = float(case.get("timeout", "10"))
        sandbox = Sandbox(SandboxPolicy(isolate="never"))
        made: list[object] = []
        monkeypatch.setattr(_jobdir, "make", lambda *args: made.append(args))
        with capture_logs() as logs, pytest.raises(guild.CommandRefused) as info:
            await sandbox.run(case["argv"], timeout=timeout, files=files, env=case.get("job_env"))
        assert info.value.rule == case["refused"], info.value
        assert [e["event"] for e in logs] == ["sandbox_refused"]
        assert logs[0]["rule"] == case["refused"]
        assert made == []  # no job directory was made
        assert not marker.exists()

    def test_sample_file_is_covered(self) -> None:
        cases = _cases()
        assert len(cases) >= 50, "the corpus lost cases"
        ids = [c["id"] for c in cases]
        assert len(set(ids)) == len(ids)
        categories = {str(case["category"]) for case in cases}
        # The shared sample's categories, written out: the corpus must keep every one.
        sample = {
            "shell", "injection", "inline code", "path", "homoglyph", "privilege", "wrapper",
            "bad input", "fork bomb", "output flood", "memory", "cpu", "timeout", "secrets",
            "filesystem", "environment injection",
        }  # fmt: skip
        added = {
            "interpreter arguments", "bad timeout", "bad file name", "job directory",
            "network", "host processes", "host files", "scratch leftovers", "disk",
            "host resources",
        }  # fmt: skip
        assert categories == sample | added
        tests = {
            name
            for cls in (TestContainment, TestHostHarms, TestJobDirectory, TestHostResources)
            for name in vars(cls)
            if name.startswith("test_")
        }
        for case in cases:
            assert ("refused" in case) != ("contained_by" in case), case["id"]
            if "contained_by" in case:
                assert case["contained_by"] in tests, case["id"]


class TestSampleRefusals:
    """Each sample case that must be refused is refused with its rule."""

    @pytest.mark.parametrize(
        ("argv", "rule"),
        [
            (["bash", "-c", "rm -rf /"], "shell"),
            (["sh", "-c", "id"], "shell"),
            (["python3; id"], "not-allowed"),
            (["python3", "-c", "import os; os.system('id')"], "inline-code"),
            (["node", "-e", "require('child_process').execSync('id')"], "inline-code"),
            (["python3", "-m", "http.server"], "inline-code"),
            (["/tmp/python3", "x.py"], "resolved-path"),
            (["./python3", "x.py"], "relative-path"),
            (["pyth\u03bfn3", "x.py"], "not-allowed"),
            (["sudo", "id"], "wrapper"),
            (["env", "python3", "x.py"], "wrapper"),
            (["python3", "x\u0000.py"], "bad-argv"),
            ([], "bad-argv"),
        ],
    )
    def test_refused(self, argv: list[str], rule: str) -> None:
        _refused(argv, rule)

    def test_environment_injection(self) -> None:
        _refused(["python3", "x.py"], "env-injection", {"LD_PRELOAD": "/tmp/evil.so"})
        _refused(["python3", "x.py"], "env-injection", {"PYTHONPATH": "/tmp/evil"})


class TestMoreRefusals:
    """Variants of each category that an attacker would try next."""

    @pytest.mark.parametrize(
        ("argv", "rule"),
        [
            (["python3", "-Sc", "print(1)"], "inline-code"),
            (["python3", "-Ic", "print(1)"], "inline-code"),
            (["python3", "-W", "ignore", "-c", "print(1)"], "inline-code"),
            (["python3", "-Wignore", "-m", "pip"], "inline-code"),
            (["python3", "-u", "-m", "site"], "inline-code"),
            (["node", "--eval=process.exit(1)"], "inline-code"),
            (["node", "--eval", "1"], "inline-code"),
            (["node", "-pe", "1"], "inline-code"),
            (["node", "--require", "/tmp/x.js", "y.js"], "inline-code"),
            (["node", "--import=data:text/javascript,1", "y.js"], "inline-code"),
            (["/bin/sh", "-c", "id"], "resolved-path"),
            (["dash"], "shell"),
            (["busybox", "sh"], "shell"),
            (["timeout", "5", "python3", "x.py"], "wrapper"),
            (["xargs", "python3"], "wrapper"),
            (["../../usr/bin/python3", "x.py"], "relative-path"),
            (["python3 ", "x.py"], "not-allowed"),
            (["Python3", "x.py"], "not-allowed"),
            (["python3\u200b", "x.py"], "not-allowed"),
            (["curl", "http://example.com"], "not-allowed"),
        ],
    )
    def test_refused(self, argv: list[str], rule: str) -> None:
        _refused(argv, rule)

    @pytest.mark.parametrize(
        "name",
        [
            "LD_LIBRARY_PATH",
            "ld_preload",
            "PYTHONSTARTUP",
            "NODE_OPTIONS",
            "PERL5OPT",
            "BASH_ENV",
            "PATH",
            "HOME",
        ],
    )
    def test_loader_and_interpreter_variables(self, name: str) -> None:
        _refused(["python3", "x.py"], "env-injection", {name: "x"})

    def test_arguments_after_the_script_are_data(self) -> None:
        sandbox = Sandbox(SandboxPolicy(isolate="never"))
        assert sandbox.check(["python3", "x.py", "--", "-c", "/dev/stdin"])[1:] == (
            "x.py",
            "--",
            "-c",
            "/dev/stdin",
        )
        _refused(["python3", "--", "-c"], "double-dash")

    def test_allowing_inline_code_is_explicit(self) -> None:
        sandbox = Sandbox(SandboxPolicy(isolate="never", inline_code=frozenset({"python3"})))
        assert sandbox.check(["python3", "-c", "print(1)"])[0].endswith("python3")

    def test_shells_cannot_be_allowed(self) -> None:
        with pytest.raises(ValueError, match="runs arbitrary commands"):
            SandboxPolicy(allow=("python3", "bash"))

    async def test_symlink_planted_in_job_dir_is_refused(self, tmp_path: Path) -> None:
        link = tmp_path / "python3"
        link.symlink_to("/bin/sh")
        _refused([str(link), "-c", "id"], "resolved-path")

    @pytest.mark.parametrize(
        ("argv", "env"),
        [
            (["python3", "x.py", "a" * 131_072], {}),  # one string over exec's 128 KiB
            (["python3", "x.py", *["a" * 100_000] * 11], {}),  # all of them over 1 MiB
            (["python3", "x.py"], {"LANG": "x" * 131_072}),
            (["python3", "x.py", "\ud800"], {}),  # no bytes for exec
        ],
        ids=["long-argument", "long-argv", "long-variable", "lone-surrogate"],
    )
    async def test_what_exec_would_refuse_is_refused_before_anything_starts(
        self, argv: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # Each of these failed inside the spawn (E2BIG, UnicodeEncodeError), after the
        # uid was leased and the job directory made, as an error the TaskWorker retried.
        made: list[object] = []
        monkeypatch.setattr(_jobdir, "make", lambda *args: made.append(args))
        sandbox = Sandbox(SandboxPolicy(isolate="never"))
        with pytest.raises(guild.CommandRefused) as info:
            await sandbox.run(argv, timeout=5, files={"x.py": b""}, env=env)
        assert info.value.rule == "bad-argv"
        assert made == []

    def test_the_longest_argument_exec_takes_is_allowed(self) -> None:
        sandbox = Sandbox(SandboxPolicy(isolate="never"))
        assert len(sandbox.check(["python3", "x.py", "a" * 131_071])[2]) == 131_071

    def test_deep_file_names_cost_memory_in_proportion_to_their_length(self) -> None:
        import tracemalloc

        from guild.sandbox import check_run

        deep = "/".join(["a"] * 2000) + "/f"
        files = {f"d{n}/{deep}": b"" for n in range(20)}  # 80 KB of names
        tracemalloc.start()
        try:
            with pytest.raises(guild.CommandRefused) as info:
                check_run(["python3", "x.py"], 5, files, SandboxPolicy(isolate="never"))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert info.value.rule == "disk-budget"
        # Every prefix of every name as a tuple held 20 x 2000 x 1000 references
        # (over 300 MB here; 400 such names took 6.4 GB and 25 s of the event loop).
        assert peak < 16 << 20

    def test_node_test_words_are_read_once(self) -> None:
        from collections.abc import Sequence

        from guild.sandbox._policy import check_interpreter

        class Counted(Sequence[str]):
            def __init__(self, words: list[str]) -> None:
                self.words, self.reads = words, 0

            def __len__(self) -> int:
                return len(self.words)

            def __getitem__(self, index: Any) -> Any:
                if isinstance(index, slice):
                    return [self[i] for i in range(*index.indices(len(self.words)))]
                self.reads += 1
                return self.words[index]

        argv = Counted(["node", *["--test"] * 2000, "x.js"])
        assert check_interpreter(argv, "node") == ("x.js",)
        # Each --test read every word after it: 2,000,000 reads (20,000 words: 11 s).
        assert argv.reads < 20 * len(argv)

    async def test_file_names_stay_inside(self) -> None:
        sandbox = Sandbox(SandboxPolicy(isolate="never"))
        with pytest.raises(guild.CommandRefused, match="bad-file"):
            await sandbox.run(["python3", "x.py"], timeout=5, files={"../../etc/x": b""})


class TestContainment:
    """Attacks that run are stopped by the limit, the kill or the scrub."""

    async def test_injection_strings_are_plain_arguments(self, sandbox: Sandbox) -> None:
        script = b"import sys; print(sys.argv[1:])"
        with trio.fail_after(20):
            result = await sandbox.run(
                ["python3", "x.py", "&&", "id"], timeout=10, files={"x.py": script}
            )
            split = await sandbox.run(
                shlex.split("python3 x.py ; rm -rf /"), timeout=10, files={"x.py": script}
            )
            dollar = await sandbox.run(
                shlex.split("python3 x.py $(id)"), timeout=10, files={"x.py": script}
            )
        assert result.stdout.strip() == b"['&&', 'id']"
        # shlex, not a shell: ';' is one more plain argument, never a separator.
        assert split.stdout.strip() == b"[';', 'rm', '-rf', '/']"
        assert dollar.stdout.strip() == b"['$(id)']"

    async def test_fork_bomb_is_capped_and_the_worker_survives(self, sandbox: Sandbox) -> None:
        bomb = b"import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
        with trio.fail_after(30):
            try:
                capped = await sandbox.run(
                    ["python3", "bomb.py"], timeout=2, files={"bomb.py": bomb}
                )
            except guild.SandboxTimeout:
                capped = None  # no cgroup here: the rlimit held it until the timeout
        if capped is not None:  # a run's cgroup ends it at its process budget
            assert capped.budget_exceeded == "processes"
        ok = await sandbox.run(["python3", "x.py"], timeout=10, files={"x.py": b"print('alive')"})
        assert ok.stdout == b"alive\n"

    async def test_output_flood_is_truncated_and_memory_bounded(self, sandbox: Sandbox) -> None:
        flood = b"import sys\nchunk = 'x' * 65536\nfor _ in range(16384):\n    sys.stdout.write(chunk)\n"
        before = _rss_kib()
        with trio.fail_after(120):
            result = await sandbox.run(
                ["python3", "flood.py"], timeout=100, files={"flood.py": flood}
            )
        grown = _rss_kib() - before
        assert result.stdout_truncated
        assert result.stdout.endswith(b"[guild: output truncated at 1048576 bytes]\n")
        assert len(result.stdout) < 1_048_576 + 100
        assert grown < 64 * 1024  # a 1 GiB flood, well under 64 MiB of growth

    async def test_memory_hog_hits_the_address_space_limit(self, sandbox: Sandbox) -> None:
        hog = b"b = bytearray(20 * 1024**3)"
        with trio.fail_after(20):
            result = await sandbox.run(["python3", "hog.py"], timeout=10, files={"hog.py": hog})
        assert result.exit_code != 0
        assert b"MemoryError" in result.stderr

    async def test_cpu_spin_is_stopped(self, sandbox: Sandbox) -> None:
        with trio.fail_after(20), pytest.raises(guild.SandboxTimeout):
            await sandbox.run(
                ["python3", "spin.py"], timeout=2, files={"spin.py": b"while True: pass"}
            )

    async def test_stubborn_grandchild_dies_at_the_timeout(self, sandbox: Sandbox) -> None:
        stubborn = (
            b"import signal, subprocess, time\n"
            b"signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            b"subprocess.Popen(['sleep', '1000'])\n"
            b"print('started', flush=True)\n"
            b"time.sleep(1000)\n"
        )
        with trio.fail_after(20), pytest.raises(guild.SandboxTimeout) as info:
            await sandbox.run(
                ["python3", "stubborn.py"], timeout=1.5, files={"stubborn.py": stubborn}
            )
        assert info.value.stdout == b"started\n"  # the partial output comes with the error
        _assert_no_sleepers()

    async def test_escapees_that_leave_the_group_are_killed(self, sandbox: Sandbox) -> None:
        escape = (
            b"import os, time\n"
            b"if os.fork() == 0:\n"
            b"    os.setsid()\n"
            b"    if os.fork() == 0:\n"
            b"        os.execvp('sleep', ['sleep', '1000'])\n"
            b"    os._exit(0)\n"
            b"time.sleep(0.3)\n"
            b"print('parent done')\n"
        )
        with trio.fail_after(20):
            result = await sandbox.run(
                ["python3", "escape.py"], timeout=10, files={"escape.py": escape}
            )
        assert result.stdout == b"parent done\n"
        _assert_no_sleepers()

    async def test_secrets_do_not_leak(
        self, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("GUILD_TEST_SECRET", "hunter2")
        script = b"import os\nprint(dict(os.environ))"
        result = await sandbox.run(["python3", "env.py"], timeout=10, files={"env.py": script})
        assert b"hunter2" not in result.stdout
        assert b"GUILD_TEST_SECRET" not in result.stdout

    @pytest.mark.skipif(
        os.geteuid() != 0, reason="the privilege drop applies when the worker is root"
    )
    async def test_shadow_is_unreadable(self, sandbox: Sandbox) -> None:
        script = b"print(open('/etc/shadow').read())"
        result = await sandbox.run(
            ["python3", "shadow.py"], timeout=10, files={"shadow.py": script}
        )
        assert result.exit_code != 0
        assert b"PermissionError" in result.stderr

    async def test_only_the_job_directory_is_writable(self, sandbox: Sandbox) -> None:
        target = "/root/escaped" if os.geteuid() == 0 else "/usr/escaped"
        script = f"open({target!r}, 'w').write('x')".encode()
        result = await sandbox.run(
            ["python3", "escape.py"], timeout=10, files={"escape.py": script}
        )
        assert result.exit_code != 0
        assert not os.path.exists(target)

    async def test_the_largest_argv_and_environment_the_policy_allows_run(
        self, sandbox: Sandbox
    ) -> None:
        # Under the policy's 1 MiB of argv and job environment, and far over what one
        # message of the fork server's control socket holds (its send buffer, ~208
        # KiB): kernel mode failed such a run with SandboxError.
        arguments = [letter * 120_000 for letter in "abcdefg"]
        env = {"BIG_ONE": "y" * 100_000, "BIG_TWO": "z" * 100_000}
        script = (
            b"import os, sys\n"
            b"print(sum(map(len, sys.argv[1:])),"
            b" len(os.environ['BIG_ONE'] + os.environ['BIG_TWO']))"
        )
        with trio.fail_after(30):
            result = await sandbox.run(
                ["python3", "big.py", *arguments], timeout=20, files={"big.py": script}, env=env
            )
        assert result.exit_code == 0, result.stderr
        assert result.stdout.split() == [b"840000", b"200000"]

    @pytest.mark.parametrize("mode", _modes())
    async def test_more_arguments_than_bwrap_takes_are_refused_there(
        self, mode: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # bwrap refuses a command line of over 9000 arguments, its own included:
        # the run "exited 1" with bwrap's message as the job's stderr. Under
        # bwrap it is a refusal before anything starts; elsewhere the job runs.
        arguments = ["x"] * 9000
        script = b"import sys; print(len(sys.argv))"
        sandbox = _sandbox(mode)
        made: list[object] = []
        make = _jobdir.make

        def counted(*args: Any, **kwargs: Any) -> Any:
            made.append(args)
            return make(*args, **kwargs)

        monkeypatch.setattr(_jobdir, "make", counted)
        with trio.fail_after(30):
            if mode == "bwrap":
                with pytest.raises(guild.CommandRefused) as info:
                    await sandbox.run(
                        ["python3", "many.py", *arguments], timeout=20, files={"many.py": script}
                    )
                assert info.value.rule == "bad-argv", info.value
                assert made == []  # no job directory was made
                # Up to what bwrap takes, the job runs whole.
                arguments = arguments[:8000]
            result = await sandbox.run(
                ["python3", "many.py", *arguments], timeout=20, files={"many.py": script}
            )
        assert result.exit_code == 0, result.stderr
        assert result.stdout == f"{len(arguments) + 1}\n".encode()


class TestStructuredConcurrency:
    """Sandboxes are nursery citizens: cancelling the nursery leaves nothing behind."""

    async def test_cancel_fifty_runs(self, sandbox: Sandbox) -> None:
        started = 0

        async def one() -> None:
            nonlocal started
            started += 1
            await sandbox.run(
                ["python3", "s.py"],
                timeout=60,
                files={
                    "s.py": b"import time, subprocess\nsubprocess.Popen(['sleep', '1000'])\ntime.sleep(1000)"
                },
            )

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for _ in range(50):
                    nursery.start_soon(one)
                await trio.sleep(3)
                nursery.cancel_scope.cancel(reason="test over")
        assert started == 50
        _assert_no_sleepers()
        _assert_no_zombies()


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _processes() -> list[tuple[int, str, str, int]]:
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            data = Path(f"/proc/{name}/stat").read_bytes()
            cmdline = Path(f"/proc/{name}/cmdline").read_bytes()
        except OSError:
            continue
        fields = data[data.rindex(b")") + 2 :].split()
        found.append(
            (int(name), fields[0].decode(), cmdline.decode(errors="replace"), int(fields[1]))
        )
    return found


def _assert_no_sleepers() -> None:
    left = [p for p in _processes() if p[2].startswith("sleep\x001000")]
    assert left == [], left


def _assert_no_zombies() -> None:
    # Sandbox runs live in sessions of their own; zombies in the test's own session
    # belong to other tests' subprocesses, which their owners wait for.
    mine = os.getsid(0)
    zombies = [
        p for p in _processes() if p[1] == "Z" and p[3] == os.getpid() and os.getsid(p[0]) != mine
    ]
    assert zombies == [], zombies


class TestSpawnPaths:
    def test_the_fork_server_is_the_default_and_the_switch_turns_it_off(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from guild.sandbox import _spawn

        assert _spawn.server() is not None
        monkeypatch.setenv("GUILD_SANDBOX_SPAWN", "preexec")
        assert _spawn.server() is None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class TestHostHarms:
    """Attacks on what the host holds, each harm looked for on the host."""

    @pytest.mark.parametrize("mode", _modes(none=NO_NET))
    async def test_a_listener_on_all_interfaces_is_unreachable(self, mode: str) -> None:
        sandbox = _sandbox(mode)
        port = _free_port()
        script = (
            "import socket\n"
            "s = socket.socket()\n"
            "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
            f"s.bind(('0.0.0.0', {port}))\n"
            "s.listen(8)\n"
            "s.settimeout(3.0)\n"
            "print('listening', flush=True)\n"
            "try:\n"
            "    s.accept()\n"
            "    print('reached')\n"
            "except OSError:\n"
            "    print('nobody came')\n"
        )
        reached = 0

        async def knock() -> None:
            nonlocal reached
            while True:
                try:
                    stream = await trio.open_tcp_stream("127.0.0.1", port)
                except OSError:
                    pass
                else:
                    reached += 1
                    await stream.aclose()
                await trio.sleep(0.05)

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(knock)
                result = await sandbox.run(
                    ["python3", "listen.py"], timeout=20, files={"listen.py": script.encode()}
                )
                nursery.cancel_scope.cancel(reason="the run is over")
        assert result.stdout == b"listening\nnobody came\n", result.stderr
        assert reached == 0

    @pytest.mark.parametrize("mode", _modes(none=NO_PROC))
    async def test_host_process_arguments_are_not_visible(self, mode: str) -> None:
        sandbox = _sandbox(mode)
        secret = "guild-secret-" + os.urandom(8).hex()
        planted = await trio.lowlevel.open_process(
            [sys.executable, "-c", "import time; time.sleep(120)", secret]
        )
        try:
            # The harm is real: on the host, the secret is in that process's argv
            # (empty for a moment after exec returns, until the kernel sets it up).
            cmdline = Path(f"/proc/{planted.pid}/cmdline")
            while not cmdline.read_bytes():
                assert planted.poll() is None
            assert secret.encode() in cmdline.read_bytes()
            script = (
                b"import os\n"
                b"seen = []\n"
                b"for name in os.listdir('/proc'):\n"
                b"    if name.isdigit():\n"
                b"        try:\n"
                b"            seen.append(open(f'/proc/{name}/cmdline', 'rb').read())\n"
                b"        except OSError:\n"
                b"            pass\n"
                b"print(repr(seen))\n"
            )
            with trio.fail_after(30):
                result = await sandbox.run(
                    ["python3", "cmdlines.py"], timeout=20, files={"cmdlines.py": script}
                )
        finally:
            planted.kill()
            with trio.CancelScope(shield=True):
                await planted.wait()
        assert b"cmdlines.py" in result.stdout, result.stderr  # it read its own
        assert secret.encode() not in result.stdout

    @pytest.mark.parametrize(
        "mode", _modes(**({} if ROOT else {"none": "without root the job is the worker's user"}))
    )
    async def test_a_private_host_database_is_unreadable(self, mode: str, tmp_path: Path) -> None:
        sandbox = _sandbox(mode)
        secret = "guild-secret-" + os.urandom(8).hex()
        database = tmp_path / "host.db"
        with sqlite3.connect(database) as db:
            db.execute("create table t (v text)")
            db.execute("insert into t values (?)", (secret,))
        db.close()
        os.chmod(database, 0o600)
        for directory in (tmp_path, *tmp_path.parents):
            if directory == Path("/"):
                break
            if directory.stat().st_uid != os.geteuid():
                continue  # not ours (/tmp, to a worker that is not root): already open
            os.chmod(
                directory, os.stat(directory).st_mode | 0o055
            )  # only the file's mode guards it
        script = (
            f"try:\n    print(open({str(database)!r}, 'rb').read())\n"
            "except OSError as exc:\n    print(type(exc).__name__)\n"
        ).encode()
        with trio.fail_after(30):
            result = await sandbox.run(
                ["python3", "steal.py"], timeout=20, files={"steal.py": script}
            )
        assert result.exit_code == 0, result.stderr
        assert secret.encode() not in result.stdout
        assert result.stdout.strip() in (b"PermissionError", b"FileNotFoundError")
        assert stat.S_IMODE(database.stat().st_mode) == 0o600
        with sqlite3.connect(database) as db:
            assert db.execute("select v from t").fetchall() == [(secret,)]
        db.close()

    @pytest.mark.parametrize("mode", _modes(none=NO_SCRATCH))
    async def test_scratch_files_reach_neither_the_host_nor_the_next_job(self, mode: str) -> None:
        sandbox = _sandbox(mode)
        name = "guild-left-" + os.urandom(8).hex()
        places = [f"{d}/{name}" for d in ("/tmp", "/dev/shm", "/var/tmp")]
        leave = "".join(
            f"try:\n    open({p!r}, 'w').write('left')\n    print('left', {p!r})\n"
            f"except OSError as exc:\n    print('refused', {p!r}, exc.errno)\n"
            for p in places
        ).encode()
        look = "".join(
            f"import os\nif os.path.exists({p!r}):\n    print('found', {p!r})\n" for p in places
        ).encode()
        try:
            with trio.fail_after(60):
                first = await sandbox.run(
                    ["python3", "leave.py"], timeout=20, files={"leave.py": leave}
                )
                left_on_host = [p for p in places if os.path.exists(p)]
                second = await sandbox.run(
                    ["python3", "look.py"], timeout=20, files={"look.py": look}
                )
        finally:
            for place in places:
                if os.path.exists(place):
                    os.unlink(place)
        assert first.exit_code == 0, first.stderr
        assert b"left /tmp/" in first.stdout  # the attack ran: its own /tmp took the file
        assert left_on_host == []
        assert second.exit_code == 0 and second.stdout == b"", second.stderr


class TestHostResources:
    """What the kernel keeps per host rather than per namespace."""

    @pytest.mark.parametrize("mode", _modes(none=NO_FILES))
    async def test_host_files_outside_the_system_are_not_visible(self, mode: str) -> None:
        sandbox = _sandbox(mode)
        secret = "guild-secret-" + os.urandom(8).hex()
        # The app's own directory (the test's), world-readable as a umask of 022 leaves it.
        place = Path.cwd() / f".guild-hostile-{os.urandom(6).hex()}"
        try:
            place.mkdir(mode=0o755)
        except OSError as exc:
            pytest.skip(f"the working directory takes no new directory: {exc}")
        try:
            (place / "settings.txt").write_text(secret)
            os.chmod(place / "settings.txt", 0o644)
            script = (
                f"try:\n    print(open({str(place / 'settings.txt')!r}).read())\n"
                "except OSError as exc:\n    print(type(exc).__name__)\n"
            ).encode()
            with trio.fail_after(30):
                result = await sandbox.run(
                    ["python3", "peek.py"], timeout=20, files={"peek.py": script}
                )
        finally:
            (place / "settings.txt").unlink()
            place.rmdir()
        assert result.exit_code == 0, result.stderr
        # Not there at all: a PermissionError would mean only the file's mode guarded it.
        assert result.stdout == b"FileNotFoundError\n"

    @pytest.mark.parametrize("mode", _modes(none=NO_PTYS))
    async def test_pseudo_terminals_do_not_run_out_on_the_host(self, mode: str) -> None:
        sandbox = _sandbox(mode)
        script = (
            b"import os, time\n"
            b"r, w = os.pipe()\n"
            b"for _ in range(24):\n"
            b"    if os.fork() == 0:\n"
            b"        held = []\n"
            b"        try:\n"
            b"            while len(held) < 250:\n"
            b"                held.append(os.open('/dev/ptmx', os.O_RDWR | os.O_NOCTTY))\n"
            b"        except OSError:\n"
            b"            pass\n"
            b"        os.write(w, len(held).to_bytes(4, 'little'))\n"
            b"        time.sleep(3)\n"
            b"        os._exit(0)\n"
            b"print(sum(int.from_bytes(os.read(r, 4), 'little') for _ in range(24)), flush=True)\n"
            b"time.sleep(2)\n"
        )
        failures: list[OSError] = []
        tries = 0

        async def open_one() -> None:
            nonlocal tries
            while True:
                try:
                    primary, secondary = os.openpty()
                except OSError as exc:
                    failures.append(exc)
                else:
                    os.close(primary)
                    os.close(secondary)
                tries += 1
                await trio.sleep(0.02)

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(open_one)
                result = await sandbox.run(
                    ["python3", "ptys.py"], timeout=30, files={"ptys.py": script}
                )
                nursery.cancel_scope.cancel(reason="the run is over")
        assert result.exit_code == 0, result.stderr
        held = int(result.stdout)
        assert held > 0  # the attack ran
        # 24 x 250 is over kernel.pty.max (4096 by default): on the host's own
        # devpts the job took them all and the host's openpty failed (ENOSPC).
        assert failures == [] and tries > 0
        assert held <= 64

    @pytest.mark.parametrize("mode", _modes(none=NO_PTYS))
    async def test_a_user_namespace_of_its_own_does_not_lift_the_pty_cap(self, mode: str) -> None:
        # In a user namespace of its own a job mounted a devpts without the run's
        # max=64 and took ptys from what every other devpts instance draws on.
        script = (
            b"import ctypes, os, time\n"
            b"libc = ctypes.CDLL(None, use_errno=True)\n"
            b"uid, gid = os.getuid(), os.getgid()\n"
            b"ptmx = '/dev/ptmx'\n"
            b"if libc.unshare(0x10000000 | 0x00020000) == 0:\n"  # CLONE_NEWUSER | CLONE_NEWNS
            b"    open('/proc/self/setgroups', 'w').write('deny')\n"
            b"    open('/proc/self/uid_map', 'w').write(f'0 {uid} 1')\n"
            b"    open('/proc/self/gid_map', 'w').write(f'0 {gid} 1')\n"
            b"    os.mkdir('pts')\n"
            b"    if libc.mount(b'devpts', b'pts', b'devpts', 0, b'newinstance,ptmxmode=0666') == 0:\n"
            b"        ptmx = 'pts/ptmx'\n"
            b"else:\n"
            b"    print('unshare', ctypes.get_errno(), flush=True)\n"
        )
        result, rise = await _hold_ptys(mode, script)
        assert f"unshare {errno.EPERM}".encode() in result.stdout
        held = int(result.stdout.split(b"held ")[1])
        assert 0 < held <= 64, result.stdout
        # On the host: the kernel's count of ptys in use rose by the run's 64 at
        # most (1000 with the job's own devpts), give or take other processes'.
        assert rise < 500, rise

    @pytest.mark.parametrize("mode", _spawn_modes(none=NO_USERNS))
    async def test_a_job_makes_no_user_namespace_of_its_own(
        self, mode: tuple[str, str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # Under bwrap a job made user namespaces of its own (and in them mounts:
        # a devpts, tmpfs, ...), which kernel mode's seccomp filter refuses.
        isolation, spawn = mode
        if spawn == "preexec":
            monkeypatch.setenv("GUILD_SANDBOX_SPAWN", "preexec")
        marker = "guild-userns-" + os.urandom(6).hex()
        script = (
            b"import ctypes, os, time\n"
            b"libc = ctypes.CDLL(None, use_errno=True)\n"
            b"libc.syscall.restype = ctypes.c_long\n"
            b"NEWUSER, SIGCHLD = 0x10000000, 17\n"
            b"CLONE, CLONE3 = {'x86_64': (56, 435), 'aarch64': (220, 435)}[os.uname().machine]\n"
            b"child = libc.syscall(CLONE, NEWUSER | SIGCHLD, 0, 0, 0, 0)\n"
            b"if child == 0:\n"
            b"    time.sleep(1.5)\n"  # in a user namespace of its own, for the host to see
            b"    os._exit(0)\n"
            b"print('clone', min(child, 0), ctypes.get_errno())\n"
            b"print('unshare', libc.unshare(NEWUSER), ctypes.get_errno())\n"
            b"args = (ctypes.c_uint64 * 8)(NEWUSER, 0, 0, 0, SIGCHLD, 0, 0, 0)\n"
            b"other = libc.syscall(CLONE3, args, 64)\n"
            b"if other == 0:\n"
            b"    os._exit(0)\n"
            b"print('clone3', min(other, 0), ctypes.get_errno())\n"
            b"print('fds', sorted(int(fd) for fd in os.listdir('/proc/self/fd')))\n"
            b"time.sleep(1.5)\n"
            b"for pid in (child, other):\n"
            b"    if pid > 0:\n"
            b"        os.waitpid(pid, 0)\n"
        )
        # On the host: each of the run's Python processes (the job and what it
        # cloned) and the user namespace it is in, against its parent's.
        seen: dict[int, tuple[str, str]] = {}

        def look() -> None:
            for name in os.listdir("/proc"):
                if not name.isdigit() or int(name) in seen:
                    continue
                try:
                    words = Path(f"/proc/{name}/cmdline").read_bytes().split(b"\0")
                    if words[1:] != [b"ns.py", marker.encode(), b""]:
                        continue
                    stat = Path(f"/proc/{name}/stat").read_bytes()
                    parent = stat[stat.rindex(b")") + 2 :].split()[1].decode()
                    seen[int(name)] = (
                        os.readlink(f"/proc/{name}/ns/user"),
                        os.readlink(f"/proc/{parent}/ns/user"),
                    )
                except (OSError, IndexError):
                    continue

        async def watch() -> None:
            while True:
                await trio.to_thread.run_sync(look)
                await trio.sleep(0.05)

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch)
                result = await _sandbox(isolation).run(
                    ["python3", "ns.py", marker], timeout=30, files={"ns.py": script}
                )
                nursery.cancel_scope.cancel(reason="the run is over")
        assert result.exit_code == 0, result.stderr
        lines = result.stdout.decode().splitlines()
        assert lines[:3] == [
            f"clone -1 {errno.EPERM}",
            f"unshare -1 {errno.EPERM}",
            f"clone3 -1 {errno.ENOSYS}",  # its flags are out of the filter's reach
        ], result.stdout
        # The filter's descriptor (bwrap's --seccomp) does not reach the job.
        assert lines[3] == "fds [0, 1, 2, 3]", result.stdout  # 3: the listing's own
        # The job was seen, and no process of the run was in a user namespace
        # other than its parent's.
        assert seen, "the host never saw the job"
        assert [own for own, parents in seen.values() if own != parents] == [], seen

    @pytest.mark.parametrize("mode", _modes(none=NO_DEVICES))
    async def test_host_devices_open_to_all_are_not_there(self, mode: str) -> None:
        usual = {"null", "zero", "full", "random", "urandom", "tty", "ptmx"}
        open_to_all = sorted(
            str(path)
            for path in Path("/dev").rglob("*")
            if path.name not in usual
            and not path.is_symlink()
            and stat.S_ISCHR(path.lstat().st_mode)
            and path.lstat().st_mode & 0o006 == 0o006
            and "pts" not in path.parts
        )
        if not open_to_all:
            pytest.skip("this host has no device open to all but the usual ones")
        sandbox = _sandbox(mode)
        script = (
            f"import os\nfor path in {open_to_all!r}:\n"
            "    try:\n        os.close(os.open(path, os.O_RDWR))\n        print('opened', path)\n"
            "    except OSError as exc:\n        print(type(exc).__name__)\n"
        ).encode()
        with trio.fail_after(30):
            result = await sandbox.run(["python3", "dev.py"], timeout=20, files={"dev.py": script})
        assert result.exit_code == 0, result.stderr
        # e.g. /dev/fuse and /dev/net/tun (0666): the kernel mode's /dev was the host's.
        assert set(result.stdout.split(b"\n")) == {b"FileNotFoundError", b""}, open_to_all

    @needs_root
    @pytest.mark.parametrize("mode", _modes(none=NO_KEYS))
    async def test_a_kernel_key_is_not_left_for_the_next_run(self, mode: str) -> None:
        uid = 201_000 + int.from_bytes(os.urandom(2), "little") % 900
        sandbox = _sandbox(mode, uid_pool=(uid, uid))
        call = (
            b"import ctypes, os\n"
            b"libc = ctypes.CDLL(None, use_errno=True)\n"
            b"libc.syscall.restype = ctypes.c_long\n"
            b"numbers = {'x86_64': (248, 249, 250), 'aarch64': (217, 218, 219)}\n"
            b"ADD, REQUEST, KEYCTL = numbers[os.uname().machine]\n"
            b"USER_KEYRING = -4\n"
        )
        add = call + (
            b"key = libc.syscall(ADD, b'user', b'guild-left', b'left-behind', 11, USER_KEYRING)\n"
            b"print(os.getuid(), key, ctypes.get_errno(), flush=True)\n"
            b"import time; time.sleep(1)\n"  # the key held while the host looks
        )
        read = call + (
            b"key = libc.syscall(REQUEST, b'user', b'guild-left', None, USER_KEYRING)\n"
            b"buffer = ctypes.create_string_buffer(64)\n"
            b"size = libc.syscall(KEYCTL, 11, key, buffer, 64) if key > 0 else 0\n"
            b"print(os.getuid(), buffer.raw[: max(size, 0)])\n"
        )
        most = 0

        async def watch() -> None:
            nonlocal most
            while True:
                most = max(most, _keys_of(uid))
                await trio.sleep(0.01)

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch)
                first = await sandbox.run(
                    ["python3", "keys.py"], timeout=20, files={"keys.py": add}
                )
                nursery.cancel_scope.cancel(reason="the run is over")
            keys_after_first = _keys_of(uid)
            second = await sandbox.run(["python3", "keys.py"], timeout=20, files={"keys.py": read})
        assert first.exit_code == 0 and second.exit_code == 0, first.stderr + second.stderr
        assert first.stdout.split()[0] == second.stdout.split()[0] == str(uid).encode()
        assert b"left-behind" not in second.stdout
        # Refused (the seccomp filter of both isolating modes), and on the host the
        # uid held no key, neither while the run was on nor after it: under bwrap
        # its user namespace's keyring took keys from the uid's host-wide quota.
        assert first.stdout.split()[1:] == [b"-1", str(errno.EPERM).encode()], first.stdout
        assert most == keys_after_first == 0, (most, keys_after_first)

    @needs_root
    @pytest.mark.parametrize("mode", _spawn_modes())
    def test_the_workers_session_keyring_is_not_the_jobs(self, mode: tuple[str, str]) -> None:
        isolation, spawn = mode
        env = {**os.environ, "PYTHONPATH": str(Path(guild.__file__).resolve().parents[1])}
        if spawn == "preexec":
            env["GUILD_SANDBOX_SPAWN"] = "preexec"
        # A worker whose session keyring holds a secret, as a login's or a
        # service's may: the job must neither read it nor add to it.
        worker = subprocess.run(
            [sys.executable, "-c", _KEYRING_WORKER, ISOLATE[isolation]],
            env=env,
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert worker.returncode == 0, worker.stderr.decode(errors="replace")
        report = json.loads(worker.stdout.splitlines()[-1])
        assert report["exit_code"] == 0, report["stderr"]
        assert report["stdout"].startswith("ran as "), report
        assert "hunter2" not in report["stdout"], report["stdout"]
        # The worker's session keyring, read by the worker itself after the run.
        assert report["worker_keys"] == [report["secret"]], report
        if isolation != "none":
            # Not only a keyring that grants nothing: no keyring call at all (seccomp).
            assert f"planted -1 {errno.EPERM}\n" in report["stdout"], report["stdout"]

    @pytest.mark.parametrize("mode", _spawn_modes())
    def test_the_workers_priority_limits_are_not_the_jobs(self, mode: tuple[str, str]) -> None:
        isolation, spawn = mode
        env = {**os.environ, "PYTHONPATH": str(Path(guild.__file__).resolve().parents[1])}
        if spawn == "preexec":
            env["GUILD_SANDBOX_SPAWN"] = "preexec"
        # A worker allowed real-time priority and a nice value below 0 (RLIMIT_RTPRIO,
        # RLIMIT_NICE): every job inherited both, and took the CPUs from the host.
        worker = subprocess.run(
            [sys.executable, "-c", _PRIORITY_WORKER, ISOLATE[isolation]],
            env=env,
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert worker.returncode == 0, worker.stderr.decode(errors="replace")
        report = json.loads(worker.stdout.splitlines()[-1])
        assert report["exit_code"] == 0, report["stderr"]
        job = json.loads(report["stdout"])
        # Read by the job in /proc/self/limits: soft and hard.
        assert job["limits"] == {"rtprio": ["0", "0"], "nice": ["0", "0"]}, report
        assert job["fifo"] == errno.EPERM and job["nice"] in (errno.EPERM, errno.EACCES), job
        # Seen by the worker from outside while the job ran: the usual policy, and
        # the worker's own nice value.
        assert report["seen"], "the worker never saw the job"
        assert {tuple(x) for x in report["seen"]} == {(os.SCHED_OTHER, report["nice"])}, report

    def test_the_run_limits_allow_no_real_time_priority_and_no_lower_nice(self) -> None:
        # What the run above shows only where the worker may raise its own limits
        # (root with CAP_SYS_RESOURCE; a container's root often may not): the
        # limits every run sets, in every mode, include both at 0.
        limits = Sandbox(SandboxPolicy(isolate="never"))._limits()
        assert (resource.RLIMIT_RTPRIO, 0) in limits
        assert (resource.RLIMIT_NICE, 0) in limits

    @pytest.mark.parametrize("mode", _modes(none=NO_SCRATCH))
    async def test_scratch_fills_end_at_the_tmpfs_budget_on_the_host(self, mode: str) -> None:
        # Under bwrap /tmp and /dev/shm were tmpfs of no size (/dev/shm a plain
        # directory of bwrap's /dev): a job held as much RAM there as the host had.
        script = (
            b"import time\n"
            b"def fill(path):\n"
            b"    n = 0\n"
            b"    try:\n"
            b"        with open(path, 'wb', buffering=0) as f:\n"
            b"            while n < 256 << 20:\n"
            b"                n += f.write(b'x' * (1 << 20))\n"
            b"    except OSError as exc:\n"
            b"        return exc.errno, n\n"
            b"    return 0, n\n"
            b"print(*fill('/tmp/fill'), *fill('/dev/shm/fill'), flush=True)\n"
            b"time.sleep(1.5)\n"
        )
        before = _shmem_kib()
        most = before

        async def watch() -> None:
            nonlocal most
            while True:
                most = max(most, _shmem_kib())
                await trio.sleep(0.01)

        sandbox = _sandbox(mode, tmpfs_size=8 << 20, file_size=1 << 30)
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch)
                result = await sandbox.run(
                    ["python3", "fill.py"], timeout=30, files={"fill.py": script}
                )
                nursery.cancel_scope.cancel(reason="the run is over")
        assert result.exit_code == 0, result.stderr
        tmp_errno, tmp_bytes, shm_errno, shm_bytes = map(int, result.stdout.split())
        assert (tmp_errno, shm_errno) == (errno.ENOSPC, errno.ENOSPC), result.stdout
        assert tmp_bytes <= 8 << 20
        # Kernel mode mounts a tmpfs of tmpfs_size on each; bwrap's share one.
        assert tmp_bytes + shm_bytes <= (16 if mode == "kernel" else 8) << 20, result.stdout
        assert result.budget_exceeded == "tmpfs"
        # On the host: the tmpfs pages the run held (Shmem) rose by its budget, not
        # by the 512 MiB it asked for, give or take other processes'.
        assert (most - before) * 1024 < 128 << 20, (before, most)

    @pytest.mark.parametrize("mode", _modes(none=NO_SCRATCH))
    async def test_a_scratch_inode_fill_ends_at_its_budget(self, mode: str) -> None:
        # bwrap's tmpfs took no inode limit: empty files cost no block, only the
        # kernel's memory for each inode, as many as half the host's RAM in pages.
        script = (
            b"import os\n"
            b"n = 0\n"
            b"try:\n"
            b"    while n < 20000:\n"
            b"        os.close(os.open(f'/dev/shm/{n}', os.O_CREAT | os.O_WRONLY, 0o600))\n"
            b"        n += 1\n"
            b"    print(0, n)\n"
            b"except OSError as exc:\n"
            b"    print(exc.errno, n)\n"
        )
        sandbox = _sandbox(mode, tmpfs_inodes=500)
        with trio.fail_after(60):
            result = await sandbox.run(
                ["python3", "inodes.py"], timeout=30, files={"inodes.py": script}
            )
        assert result.exit_code == 0, result.stderr
        # Kernel mode's /dev/shm is a tmpfs of 500 inodes, its root one of them;
        # bwrap's shares the scratch's 500 with /tmp (its own four are apart).
        made = 499 if mode == "kernel" else 500
        assert result.stdout.split() == [str(errno.ENOSPC).encode(), str(made).encode()]
        assert result.budget_exceeded == "inodes"

    @pytest.mark.parametrize("mode", _modes(none=NO_PTYS))
    async def test_a_run_holds_at_most_64_ptys(self, mode: str) -> None:
        # bwrap mounts its devpts without max=: four processes of a job took 1,000
        # ptys from what every devpts instance but the host's own draws on.
        result, rise = await _hold_ptys(mode, b"import os, time\nptmx = '/dev/ptmx'\n")
        assert result.stdout == b"held 64\n"  # the run's own devpts: max=64
        # On the host: the kernel's count of ptys in use rose by the run's 64 (1,000
        # under bwrap's own devpts), give or take other processes'.
        assert rise < 200, rise

    @pytest.mark.parametrize("mode", _modes(none=NO_FILES))
    async def test_the_root_and_dev_take_no_file(self, mode: str) -> None:
        # bwrap's new root and its /dev are tmpfs of its own, owned by the run's
        # uid and writable: a job wrote there, with no size and no inode limit.
        script = (
            b"import errno, os\n"
            b"for path in ('/guild-fill', '/dev/guild-fill'):\n"
            b"    try:\n"
            b"        with open(path, 'wb') as f:\n"
            b"            f.write(b'x' * (1 << 20))\n"
            b"        print(path, 'wrote')\n"
            b"    except OSError as exc:\n"
            b"        print(path, errno.errorcode[exc.errno])\n"
        )
        with trio.fail_after(30):
            result = await _sandbox(mode).run(
                ["python3", "root.py"], timeout=20, files={"root.py": script}
            )
        assert result.exit_code == 0, result.stderr
        assert result.stdout.decode().splitlines() == [
            "/guild-fill EROFS",
            "/dev/guild-fill EROFS",
        ]


# A worker that raises its RLIMIT_RTPRIO and RLIMIT_NICE where it may (root), then
# one run that reads its own limits and asks for real-time priority and nice -5
# while the worker looks at it from outside. argv[1]: the isolation. One JSON line.
_PRIORITY_WORKER = """
import json, os, resource, sys, trio
from guild.sandbox import Sandbox, SandboxPolicy
for which, value in ((resource.RLIMIT_RTPRIO, 10), (resource.RLIMIT_NICE, 30)):
    try:
        resource.setrlimit(which, (value, value))
    except (OSError, ValueError):
        pass
marker = "guild-priority-" + os.urandom(6).hex()
JOB = '''
import json, os, time
limits = {}
for line in open("/proc/self/limits"):
    for key, name in (("rtprio", "Max realtime priority"), ("nice", "Max nice priority")):
        if line.startswith(name):
            limits[key] = line[len(name):].split()[:2]
done = {"limits": limits}
try:
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    done["fifo"] = 0
except OSError as exc:
    done["fifo"] = exc.errno
try:
    os.setpriority(os.PRIO_PROCESS, 0, os.getpriority(os.PRIO_PROCESS, 0) - 5)
    done["nice"] = 0
except OSError as exc:
    done["nice"] = exc.errno
print(json.dumps(done), flush=True)
time.sleep(1)
'''
seen = set()
def look():
    for name in os.listdir("/proc"):
        try:
            with open(f"/proc/{name}/cmdline", "rb") as handle:
                if handle.read().split(b"\\0")[1:] != [b"prio.py", marker.encode(), b""]:
                    continue
            pid = int(name)
            seen.add((os.sched_getscheduler(pid), os.getpriority(os.PRIO_PROCESS, pid)))
        except (OSError, ValueError):
            continue
async def main():
    sandbox = Sandbox(SandboxPolicy(isolate=sys.argv[1]))
    async def watch():
        while True:
            await trio.to_thread.run_sync(look)
            await trio.sleep(0.05)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        result = await sandbox.run(
            ["python3", "prio.py", marker], timeout=20, files={"prio.py": JOB.encode()}
        )
        nursery.cancel_scope.cancel()
    return result
result = trio.run(main)
print(json.dumps({
    "exit_code": result.exit_code,
    "stdout": result.stdout.decode(errors="replace"),
    "stderr": result.stderr.decode(errors="replace"),
    "seen": sorted(seen),
    "nice": os.getpriority(os.PRIO_PROCESS, 0),
    "worker_limits": [resource.getrlimit(resource.RLIMIT_RTPRIO), resource.getrlimit(resource.RLIMIT_NICE)],
}))
"""


# A worker process with a secret in a session keyring of its own, then one run
# that looks through the session keyring it was given and adds a key to it.
# argv[1]: the isolation. Prints one JSON line.
_KEYRING_WORKER = """
import ctypes, json, os, sys, trio
from guild.sandbox import Sandbox, SandboxPolicy
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
ADD, KEYCTL = {"x86_64": (248, 250), "aarch64": (217, 219)}[os.uname().machine]
SESSION, JOIN, READ = -3, 1, 11
assert libc.syscall(KEYCTL, JOIN, None) > 0, ctypes.get_errno()
secret = libc.syscall(ADD, b"user", b"guild-secret", b"hunter2", 7, SESSION)
assert secret > 0, ctypes.get_errno()
JOB = f'''
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
print("ran as", os.getuid())
ids = ctypes.create_string_buffer(4096)
size = libc.syscall({KEYCTL}, {READ}, {SESSION}, ids, 4096)
for key in memoryview(ids.raw[: max(size, 0)]).cast("i"):
    payload = ctypes.create_string_buffer(256)
    got = libc.syscall({KEYCTL}, {READ}, key, payload, 256)
    print("key", key, payload.raw[: max(got, 0)])
print("planted", libc.syscall({ADD}, b"user", b"planted", b"x", 1, {SESSION}), ctypes.get_errno())
'''
async def main():
    sandbox = Sandbox(SandboxPolicy(isolate=sys.argv[1]))
    return await sandbox.run(["python3", "keys.py"], timeout=20, files={"keys.py": JOB.encode()})
result = trio.run(main)
ids = ctypes.create_string_buffer(4096)
size = libc.syscall(KEYCTL, READ, SESSION, ids, 4096)
print(json.dumps({
    "exit_code": result.exit_code,
    "stdout": result.stdout.decode(errors="replace"),
    "stderr": result.stderr.decode(errors="replace"),
    "secret": secret,
    "worker_keys": list(memoryview(ids.raw[: max(size, 0)]).cast("i")),
}))
"""


def _shmem_kib() -> int:
    """The host's tmpfs and shared memory pages in use (``Shmem`` in /proc/meminfo), KiB."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("Shmem:"):
            return int(line.split()[1])
    raise AssertionError("no Shmem line in /proc/meminfo")


def _keys_of(uid: int) -> int:
    """How many keys the host's kernel holds for ``uid`` (/proc/key-users)."""
    for line in Path("/proc/key-users").read_text().splitlines():
        name, _, fields = line.partition(":")
        if name.strip() == str(uid):
            return int(fields.split()[1].split("/")[0])
    return 0


async def _with_ticker(run: Any) -> tuple[Any, float]:
    """What ``run()`` returns, and the longest the event loop went without running a
    task that asked to wake every millisecond."""
    gaps: list[float] = []

    async def tick() -> None:
        last = time.monotonic()
        while True:
            await trio.sleep(0.001)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    async with trio.open_nursery() as nursery:
        nursery.start_soon(tick)
        value = await run()
        nursery.cancel_scope.cancel(reason="the run is over")
    return value, max(gaps)


MANY = (
    b"import os, sys\n"
    b"n = 0\n"
    b"try:\n"
    b"    while n < int(sys.argv[1]):\n"
    b"        os.close(os.open(f'f{n}', os.O_CREAT | os.O_WRONLY))\n"
    b"        n += 1\n"
    b"    print('made', n)\n"
    b"except OSError as exc:\n"
    b"    print('stopped', exc.errno, n)\n"
    b"print(os.getcwd())\n"
)


class TestJobDirectory:
    """The job directory cannot be turned against the worker, and holds only its budget."""

    @pytest.mark.parametrize(
        "mode", _modes(**({} if ROOT else {"none": "without root the job is the worker's user"}))
    )
    async def test_job_directory_cannot_be_swapped_for_a_symlink(
        self, mode: str, tmp_path: Path
    ) -> None:
        sandbox = _sandbox(mode)
        decoy = tmp_path / "decoy"
        decoy.mkdir()
        for n in range(20):
            (decoy / f"secret-{n}").write_text("root's")
        os.chmod(tmp_path, 0o755)
        os.chmod(decoy, 0o755)
        script = (
            "import os\n"
            "cwd = os.getcwd()\n"
            "print(cwd)\n"
            "open('mine.txt', 'w').write('x')\n"
            f"os.symlink({str(decoy)!r}, 'link-to-dir')\n"
            "os.symlink('/etc/passwd', 'link-to-file')\n"
            "try:\n"
            "    os.rename(cwd, cwd + '-moved')\n"
            "    print('renamed')\n"
            "except OSError as exc:\n"
            "    print('rename refused', exc.errno)\n"
            "try:\n"
            f"    os.symlink({str(decoy)!r}, cwd)\n"
            "    print('linked')\n"
            "except OSError as exc:\n"
            "    print('link refused', exc.errno)\n"
        ).encode()
        with trio.fail_after(30):
            result = await sandbox.run(
                ["python3", "swap.py"], timeout=20, files={"swap.py": script}
            )
        assert result.exit_code == 0, result.stderr
        assert result.files_created == ("mine.txt",)  # neither link, nor what they point at
        assert sorted(p.name for p in decoy.iterdir()) == sorted(f"secret-{n}" for n in range(20))
        assert b"renamed" not in result.stdout
        workdir = result.stdout.splitlines()[0].decode()
        assert os.path.dirname(workdir) == _jobdir.parent(ROOT)
        if ROOT:  # nothing left behind, under either name
            assert not os.path.lexists(workdir)
            assert not os.path.lexists(workdir + "-moved")

    @pytest.mark.parametrize("mode", _modes())
    async def test_file_names_that_are_not_utf8_are_reported_as_text(self, mode: str) -> None:
        script = (
            b"import os\n"
            b"for name in (b'bad\\xff\\xfe.txt', b'new\\nline.txt', 'caf\\u00e9.txt'.encode()):\n"
            b"    os.close(os.open(name, os.O_CREAT | os.O_WRONLY, 0o600))\n"
        )
        with trio.fail_after(30):
            result = await _sandbox(mode).run(
                ["python3", "names.py"], timeout=20, files={"names.py": script}
            )
        assert result.exit_code == 0, result.stderr
        # Each undecodable byte as \\xNN; every name encodes, so a handler may
        # return the list as its result (JSON to the broker).
        assert result.files_created == ("bad\\xff\\xfe.txt", "caf\u00e9.txt", "new\nline.txt")
        for name in result.files_created:
            name.encode("utf-8")
        encode_result(list(result.files_created))

    @pytest.mark.parametrize("mode", _modes())
    async def test_a_long_list_of_created_files_is_cut_to_fit_a_result(self, mode: str) -> None:
        # 1,000 names 40 levels down, each level 250 bytes that are not UTF-8:
        # each byte is reported as \\xNN, which JSON writes \\\\xNN, so the list
        # was 50 million characters of JSON, and a handler returning it (the
        # TaskWorker does) failed to encode its result (over 16 Mi characters).
        script = (
            b"import os\n"
            b"for _ in range(40):\n"
            b"    os.mkdir(b'\\xff' * 250)\n"
            b"    os.chdir(b'\\xff' * 250)\n"
            b"for n in range(1000):\n"
            b"    os.close(os.open(f'f{n:03d}', os.O_CREAT | os.O_WRONLY, 0o600))\n"
        )
        with trio.fail_after(60):
            result = await _sandbox(mode).run(
                ["python3", "deep.py"], timeout=30, files={"deep.py": script}
            )
        assert result.exit_code == 0, result.stderr
        prefix = ("\\xff" * 250 + "/") * 40
        # Each name is 50,046 characters of JSON with its quotes: 20 of them and
        # their commas fit in the list's 1 Mi (1 + 20 x 50,047), 21 do not.
        assert len(result.files_created) == 20
        assert result.files_omitted == 980
        assert result.files_created_truncated
        assert {name[: len(prefix)] for name in result.files_created} == {prefix}
        assert {name[len(prefix) :] for name in result.files_created} <= {
            f"f{n:03d}" for n in range(1000)
        }
        assert len(encode_result(list(result.files_created))) == 1_000_941

        from guild_workers.task import open_task_worker

        app = guild.Guild("t")
        payload = {"argv": ["python3", "deep.py"], "files": {"deep.py": script.decode()}}
        with trio.fail_after(60):
            async with open_task_worker(app, policy=SandboxPolicy(isolate=ISOLATE[mode])) as tasks:
                done = await tasks.handle(guild.Job(queue="tasks", payload=payload))
        assert (len(done["files_created"]), done["files_omitted"]) == (20, 980)
        assert len(encode_result(done)) < 2 << 20  # the handler's result encodes

    @needs_root
    @pytest.mark.parametrize("mode", _modes())
    async def test_a_disk_fill_ends_at_the_budget(self, mode: str) -> None:
        sandbox = _sandbox(mode, disk_bytes=1 << 20, disk_inodes=64)
        fill = (
            b"written = 0\n"
            b"try:\n"
            b"    with open('fill', 'wb', buffering=0) as f:\n"
            b"        while written < 64 << 20:\n"
            b"            written += f.write(b'x' * 65536)\n"
            b"    print('wrote', written)\n"
            b"except OSError as exc:\n"
            b"    print('stopped', exc.errno, written)\n"
        )
        with trio.fail_after(30):
            result = await sandbox.run(["python3", "fill.py"], timeout=20, files={"fill.py": fill})
        words = result.stdout.split()
        assert words[:2] == [b"stopped", b"28"], result.stdout + result.stderr  # ENOSPC
        assert int(words[2]) <= 1 << 20
        assert result.budget_exceeded == "disk"

    @needs_root
    @pytest.mark.parametrize("mode", _modes())
    async def test_a_file_fill_ends_at_the_inode_budget(self, mode: str) -> None:
        sandbox = _sandbox(mode, disk_inodes=100_000)
        with trio.fail_after(120):
            result, gap = await _with_ticker(
                lambda: sandbox.run(
                    ["python3", "many.py", "200000"], timeout=100, files={"many.py": MANY}
                )
            )
        # many.py is one of the 100,000 inodes.
        assert result.stdout.splitlines()[0] == b"stopped 28 99999", result.stderr
        assert result.budget_exceeded == "inodes"
        assert len(result.files_created) == 1000 and result.files_created_truncated
        assert set(result.files_created) <= {f"f{n}" for n in range(99_999)}
        assert gap < 0.5

    @pytest.mark.parametrize("mode", _modes())
    async def test_removing_100000_files_does_not_stall_the_loop(self, mode: str) -> None:
        sandbox = _sandbox(mode, disk_inodes=100_010)
        with trio.fail_after(120):
            result, gap = await _with_ticker(
                lambda: sandbox.run(
                    ["python3", "many.py", "100000"], timeout=100, files={"many.py": MANY}
                )
            )
        made, workdir = result.stdout.decode().splitlines()
        assert made == "made 100000", result.stderr
        assert result.files_created_truncated
        assert os.path.dirname(workdir) == _jobdir.parent(ROOT)
        assert not os.path.lexists(workdir)
        # The walk and the removal ran in a thread: the loop kept its millisecond ticks
        # (a walk or rmtree on the loop would stall it for seconds).
        assert gap < 0.5


class TestTaskWorker:
    """A refused command is a rejection (to the dead letters with the rule), never a retry."""

    @pytest.mark.parametrize(
        ("payload", "rule"),
        [
            ({"argv": ["python3", "x.py"], "files": {".": "x"}}, "bad-file"),
            ({"argv": ["python3", "x.py"], "files": {"a/../../b": "x"}}, "bad-file"),
            ({"argv": ["python3", "-"]}, "script-stdin"),
            ({"argv": ["python3", "/usr/lib/python3.11/http/server.py"]}, "script-outside"),
            ({"argv": ["node", "--inspect", "x.js"]}, "debugger"),
        ],
    )
    async def test_refusals_are_rejections(self, payload: dict[str, Any], rule: str) -> None:
        from guild_workers.task import open_task_worker

        app = guild.Guild("t")
        with trio.fail_after(30):
            async with open_task_worker(app, policy=SandboxPolicy(isolate="never")) as tasks:
                with pytest.raises(guild.Reject, match=f"rule '{rule}'"):
                    await tasks.handle(guild.Job(queue="tasks", payload=payload))

    async def test_a_refused_job_goes_to_the_dead_letters_with_its_rule(self) -> None:
        from guild_workers.task import open_task_worker

        app = guild.Guild("t")
        broker = guild.MemoryBroker()
        payload = {"argv": ["python3", "x.py"], "files": {".": "x"}, "timeout": 5}
        with trio.fail_after(30):
            async with (
                open_task_worker(app, policy=SandboxPolicy(isolate="never")),
                app.open(broker),
            ):
                job = await app.enqueue("tasks", payload)
                result = await app.result(job, wait=20)
                dead = await broker.get_dead(job.id)
        assert result is not None and not result.ok
        assert result.attempts == 1  # rejected, never retried
        assert dead is not None and "rule 'bad-file'" in dead.error


class TestJobDirectoryParent:
    """Where job directories live: a parent no job can write, and no leftovers."""

    def test_the_parent_is_private_to_the_worker(self) -> None:
        info = os.lstat(_jobdir.parent(ROOT))
        assert stat.S_ISDIR(info.st_mode)
        assert info.st_uid == os.geteuid()
        assert stat.S_IMODE(info.st_mode) == (0o711 if ROOT else 0o700)

    def test_a_parent_that_is_a_symlink_or_someone_elses_is_not_used(self, tmp_path: Path) -> None:
        target = tmp_path / "elsewhere"
        target.mkdir(mode=0o711)
        (tmp_path / "link").symlink_to(target)
        assert _jobdir._make_parent(str(tmp_path / "link"), 0o711) is None
        loose = tmp_path / "loose"
        loose.mkdir()
        os.chmod(tmp_path, 0o777)  # anyone may rename what is in here
        assert _jobdir._make_parent(str(loose / "jobs"), 0o711) is None
        os.chmod(tmp_path, 0o755)
        made = _jobdir._make_parent(str(tmp_path / "jobs"), 0o711)
        assert made == str(tmp_path / "jobs")
        assert stat.S_IMODE(os.stat(made).st_mode) == 0o711
        if ROOT:
            os.chown(made, 65534, 65534)
            assert _jobdir._make_parent(made, 0o711) is None

    async def test_a_gone_workers_directories_are_swept(self, tmp_path: Path) -> None:
        gone = await trio.lowlevel.open_process([sys.executable, "-c", ""])
        await gone.wait()
        dead = f"job-{gone.pid}-0123456789abcdef"
        live = f"job-{os.getpid()}-0123456789abcdef"
        for name in (dead, live):
            (tmp_path / name / "sub").mkdir(parents=True)
            (tmp_path / name / "sub" / "f").write_text("x")
        (tmp_path / "unrelated").mkdir()
        if ROOT:  # a killed worker's tmpfs stays mounted until swept
            _jobdir._mount(str(tmp_path / dead), (1 << 20, 16), (0, 0))
            (tmp_path / dead / "on-tmpfs").write_text("x")
        assert _jobdir.sweep(str(tmp_path)) == [dead]
        assert sorted(os.listdir(tmp_path)) == sorted([live, "unrelated"])
        assert not any(
            str(tmp_path) in line for line in Path("/proc/mounts").read_text().splitlines()
        )
