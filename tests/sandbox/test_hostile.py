"""Every attack in shared/sandbox/hostile-sample.json, and more of each kind, is refused or contained.

Refused: a typed CommandRefused naming the rule, before any process starts.
Contained: the process runs, and the limit, kill or scrub stops the attack.
Each containment test runs in both modes: bubblewrap namespaces and plain.
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import pytest
import trio

import guild
from guild.sandbox import Sandbox, SandboxPolicy

SAMPLE = Path(__file__).resolve().parents[2].parent / "shared" / "sandbox" / "hostile-sample.json"
BWRAP_WORKS = Sandbox(SandboxPolicy(isolate="auto")).isolated
MODES = ["never", "always"] if BWRAP_WORKS else ["never"]


def _cases() -> list[dict[str, object]]:
    if SAMPLE.exists():
        return list(json.loads(SAMPLE.read_text())["cases"])
    return []


# Runs start through the fork server, or (its fallback) a preexec_fn in a fork of
# the worker: both must contain the same attacks.
SPAWNS = ["forkserver", "preexec"]


@pytest.fixture(params=[(mode, spawn) for mode in MODES for spawn in SPAWNS], ids=str)
def sandbox(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Sandbox:
    mode, spawn = request.param
    if spawn == "preexec":
        monkeypatch.setenv("GUILD_SANDBOX_SPAWN", "preexec")
    return Sandbox(SandboxPolicy(isolate=mode, cpu_seconds=5, processes=32, kill_grace=0.5))


def _refused(argv: list[str], rule: str, env: dict[str, str] | None = None) -> None:
    with pytest.raises(guild.CommandRefused) as info:
        Sandbox(SandboxPolicy(isolate="never")).check(argv, env)
    assert info.value.rule == rule, info.value


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

    def test_sample_file_is_covered(self) -> None:
        categories = {str(case["category"]) for case in _cases()}
        covered = {
            "shell",
            "injection",
            "inline code",
            "path",
            "homoglyph",
            "privilege",
            "wrapper",
            "bad input",
            "fork bomb",
            "output flood",
            "memory",
            "cpu",
            "timeout",
            "secrets",
            "filesystem",
            "environment injection",
        }
        assert categories <= covered


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

    def test_script_after_double_dash_is_data(self) -> None:
        sandbox = Sandbox(SandboxPolicy(isolate="never"))
        assert sandbox.check(["python3", "--", "-c"])[1:] == ("--", "-c")
        assert sandbox.check(["python3", "x.py", "-c", "anything"])[1:] == (
            "x.py",
            "-c",
            "anything",
        )

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
        with trio.fail_after(30), pytest.raises(guild.SandboxTimeout):
            await sandbox.run(["python3", "bomb.py"], timeout=2, files={"bomb.py": bomb})
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
