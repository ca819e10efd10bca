"""The sandbox argv policy as a pure function, over argvs hypothesis makes up."""

from __future__ import annotations

import pathlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

import guild
from guild.sandbox import Resolved, SandboxPolicy, check, resolve_allowed
from guild.sandbox._policy import family

POLICY = SandboxPolicy(isolate="never")
TABLE = {
    "python3": Resolved(name="python3", path="/usr/bin/python3", real="/usr/bin/python3.11"),
    "node": Resolved(name="node", path="/usr/bin/node", real="/usr/bin/node"),
}
# Written out from the documented rules, not read from the module: deleting a name
# from the module's lists must fail a test.
SHELL_NAMES = [
    "sh", "bash", "dash", "zsh", "fish", "ksh", "mksh", "csh", "tcsh", "ash", "busybox", "rbash"
]  # fmt: skip
WRAPPER_NAMES = [
    "env", "sudo", "su", "doas", "pkexec", "nohup", "timeout", "xargs", "nice", "ionice",
    "setsid", "chroot", "strace", "ltrace", "gdb", "time", "stdbuf", "unshare", "nsenter",
    "runuser", "setpriv", "flock", "watch", "script", "expect", "find", "awk", "sed",
]  # fmt: skip
# What exec can take: no NUL, and no lone surrogate (no UTF-8 for it); either is
# refused as bad-argv, tested on its own.
args = st.text(
    alphabet=st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)),
    max_size=12,
)
plain = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._", min_size=1, max_size=10)


def _rule(argv: list[str], env: dict[str, str] | None = None) -> str | None:
    try:
        check(argv, TABLE, POLICY, env)
    except guild.CommandRefused as refused:
        return refused.rule
    return None


class TestSandboxPolicy:
    """No argv outside the policy is ever allowed, and allowed ones run the resolved path."""

    @given(st.text(min_size=1, max_size=15), st.lists(args, max_size=4))
    def test_unknown_programs_are_refused(self, name: str, rest: list[str]) -> None:
        if (
            name in TABLE
            or name in {e.path for e in TABLE.values()}
            or name in {e.real for e in TABLE.values()}
        ):
            return
        assert _rule([name, *rest]) is not None

    @given(st.sampled_from(SHELL_NAMES), st.lists(args, max_size=4))
    def test_shells_never_run(self, name: str, rest: list[str]) -> None:
        assert _rule([name, *rest]) == "shell"

    @given(st.sampled_from(WRAPPER_NAMES), st.lists(args, max_size=4))
    def test_wrappers_never_run(self, name: str, rest: list[str]) -> None:
        assert _rule([name, *rest]) == "wrapper"

    @given(
        st.lists(
            st.sampled_from(["-S", "-u", "-B", "-E", "-I", "-O", "-q", "-s", "-W", "ignore"]),
            max_size=4,
        ),
        st.sampled_from(["c", "m"]),
        st.text(alphabet="SuBEIOqs", max_size=3),
        st.lists(args, max_size=3),
    )
    def test_python_inline_flags_are_refused_anywhere_in_the_options(
        self, before: list[str], flag: str, cluster: str, rest: list[str]
    ) -> None:
        # -W takes a value: keep the generated options well formed.
        options = [o for o in before if o != "ignore"]
        options = [x for o in options for x in ([o, "ignore"] if o == "-W" else [o])]
        argv = ["python3", *options, f"-{cluster}{flag}", *rest]
        assert _rule(argv) == "inline-code"

    @given(plain, st.lists(args, max_size=4))
    def test_a_script_with_any_arguments_is_allowed(self, script: str, rest: list[str]) -> None:
        argv = ["python3", f"{script}.py", *rest]
        assert check(argv, TABLE, POLICY) == ("/usr/bin/python3", *argv[1:])

    @given(st.lists(args, max_size=4), st.integers(0, 3), args)
    def test_a_nul_byte_anywhere_is_refused(self, rest: list[str], where: int, text: str) -> None:
        argv = ["python3", "x.py", *rest]
        index = min(where, len(argv) - 1)
        argv[index] = argv[index] + "\0" + text
        assert _rule(argv) == "bad-argv"

    @given(st.sampled_from(["LD_", "PYTHON", "NODE_", "DYLD_", "PERL5"]), plain)
    def test_steering_variables_are_refused(self, prefix: str, suffix: str) -> None:
        assert _rule(["python3", "x.py"], {prefix + suffix.upper(): "x"}) == "env-injection"


def _entry(name: str, real: str | None = None) -> Resolved:
    return Resolved(name=name, path=f"/usr/bin/{name}", real=real or f"/usr/bin/{name}")


# Every interpreter family, one program each; "py" is python only by its real file.
FAMILIES = {
    name: _entry(name, real)
    for name, real in [
        ("python3", "/usr/bin/python3.11"),
        ("py", "/opt/python/bin/python3.12"),
        ("node", None),
        ("nodejs", None),
        ("perl", "/usr/bin/perl5.36.0"),
        ("ruby", None),
        ("php", "/usr/bin/php8.2"),
        ("deno", None),
        ("python3x", None),
        ("jq", None),
    ]
}


def _family_rule(argv: list[str], inline_code: frozenset[str] = frozenset()) -> str | None:
    policy = SandboxPolicy(allow=tuple(FAMILIES), inline_code=inline_code, isolate="never")
    try:
        check(argv, FAMILIES, policy)
    except guild.CommandRefused as refused:
        return refused.rule
    return None


class TestRulesWrittenOut:
    """Each rule, and the order they are checked in, over argvs written out."""

    @pytest.mark.parametrize("name", SHELL_NAMES)
    def test_a_shell_is_refused_even_when_the_table_has_it(self, name: str) -> None:
        table = {name: _entry(name)}
        with pytest.raises(guild.CommandRefused) as refused:
            check([name, "-c", "id"], table, POLICY)
        assert refused.value.rule == "shell"
        assert refused.value.detail == f"{name!r}: shells are not allowed"

    @pytest.mark.parametrize("name", WRAPPER_NAMES)
    def test_a_wrapper_is_refused_even_when_the_table_has_it(self, name: str) -> None:
        table = {name: _entry(name)}
        with pytest.raises(guild.CommandRefused) as refused:
            check([name, "python3", "x.py"], table, POLICY)
        assert refused.value.rule == "wrapper"
        assert refused.value.detail == f"{name!r} runs other programs and is not allowed"

    @pytest.mark.parametrize("name", SHELL_NAMES + WRAPPER_NAMES)
    def test_a_policy_cannot_allow_a_shell_or_a_wrapper(self, name: str) -> None:
        with pytest.raises(ValueError, match=f"allow: '{name}' runs arbitrary commands"):
            SandboxPolicy(allow=("python3", name))

    @pytest.mark.parametrize(
        ("argv", "rule"),
        [
            ([], "bad-argv"),
            ("python3 x.py", "bad-argv"),
            (["python3", 3], "bad-argv"),
            ([None], "bad-argv"),
            (["python3", "x.py", "a\0b"], "bad-argv"),
            (["python3\0", "x.py"], "bad-argv"),
            (["./python3", "x.py"], "relative-path"),
            (["bin/python3", "x.py"], "relative-path"),
            (["/tmp/python3", "x.py"], "resolved-path"),
            (["/usr/bin/node/", "x.js"], "resolved-path"),
            (["pyth\u03bfn3", "x.py"], "not-allowed"),  # a Greek omicron
            (["python3; id"], "not-allowed"),
            (["python3\n", "x.py"], "not-allowed"),
            (["ruby", "x.rb"], "not-allowed"),
            (["Python3", "x.py"], "not-allowed"),
            (["python3", "-c", "print(1)"], "inline-code"),
            (["node", "-e", "1"], "inline-code"),
        ],
    )
    def test_the_rule_that_refuses(self, argv: list[object], rule: str) -> None:
        with pytest.raises(guild.CommandRefused) as refused:
            check(argv, TABLE, POLICY)  # type: ignore[arg-type]
        assert refused.value.rule == rule

    def test_a_refusal_shows_the_argv_as_given(self) -> None:
        with pytest.raises(guild.CommandRefused) as refused:
            check(["python3", 3], TABLE, POLICY)  # type: ignore[list-item]
        assert refused.value.argv == ("python3", "3")
        assert refused.value.detail == "argument 3 is not a string"
        with pytest.raises(guild.CommandRefused) as empty:
            check("python3 x.py", TABLE, POLICY)
        assert empty.value.argv == ("python3 x.py",)
        assert empty.value.detail == "argv must be a non-empty list"

    @pytest.mark.parametrize(
        ("argv", "expected"),
        [
            (["python3", "x.py"], ("/usr/bin/python3", "x.py")),
            (["python3", "x.py", "-c", "-m"], ("/usr/bin/python3", "x.py", "-c", "-m")),
            (["/usr/bin/python3", "x.py"], ("/usr/bin/python3", "x.py")),
            # The real file of an allowed program is that program: run by its path.
            (["/usr/bin/python3.11", "x.py"], ("/usr/bin/python3", "x.py")),
            (["/usr/bin/node", "x.js"], ("/usr/bin/node", "x.js")),
            (["node", "--no-warnings", "x.js", "-e"], ("/usr/bin/node", "--no-warnings", "x.js", "-e")),
        ],
    )  # fmt: skip
    def test_allowed_argvs_run_the_resolved_path(
        self, argv: list[str], expected: tuple[str, ...]
    ) -> None:
        assert check(argv, TABLE, POLICY) == expected


class TestInlineCodeWrittenOut:
    """Inline-code flags per interpreter family, and flags that are not."""

    @pytest.mark.parametrize(
        "argv",
        [
            ["python3", "-c", "1"],
            ["python3", "-m", "http.server"],
            ["python3", "-Sc", "1"],
            ["python3", "-Im", "pip"],
            ["python3", "-W", "ignore", "-c", "1"],
            ["python3", "-X", "dev", "-c", "1"],
            ["python3", "-Q", "new", "-c", "1"],
            ["python3", "-Wignore", "-m", "pip"],
            ["py", "-c", "1"],  # python by its real file
            ["node", "-e", "1"],
            ["node", "-p", "1"],
            ["node", "-r", "./hook.js", "x.js"],
            ["nodejs", "-e", "1"],
            ["node", "--eval=1"],
            ["node", "--eval", "1"],
            ["node", "--print", "1"],
            ["node", "--require", "./hook.js", "x.js"],
            ["node", "--import=./hook.mjs", "x.js"],
            ["node", "--loader", "./l.mjs", "x.js"],
            ["node", "--experimental-loader=./l.mjs", "x.js"],
            ["node", "--experimental-default-type=module", "x.js"],
            ["perl", "-e", "1"],
            ["perl", "-E", "say 1"],
            ["perl", "-MPOSIX", "x.pl"],
            ["perl", "-mPOSIX", "x.pl"],
            ["perl", "-x", "x.txt"],
            ["perl", "-I", "lib", "-e", "1"],
            # -l and -0 take only digits, then the cluster goes on; -i and -F take
            # the rest of their cluster, never the next argument (checked with perl 5.36).
            ["perl", "-l", "-e", "1"],
            ["perl", "-lane", "print"],
            ["perl", "-l015e", "1"],
            ["perl", "-0", "-e", "1"],
            ["perl", "-0777e", "1"],
            ["perl", "-i", "-e", "1"],
            ["perl", "-F", "-e", "1"],
            ["perl", "-d", "x.pl"],  # the debugger
            ["perl", "-d:Trace", "x.pl"],  # a module the caller names
            ["ruby", "-e", "1"],
            ["ruby", "-r", "socket", "x.rb"],
            ["ruby", "--require=socket", "x.rb"],
            ["ruby", "-C", "/tmp", "-e", "1"],
            ["php", "-r", "echo 1;"],
            ["php", "-R", "echo 1;"],
            ["php", "-B", "echo 1;"],
            ["php", "-E", "echo 1;"],
            ["php", "-F", "f.php"],
            ["php", "--run", "echo 1;"],
            ["php", "-d", "x=1", "-r", "echo 1;"],
            ["deno", "eval", "1"],
            ["deno", "repl"],
        ],
    )
    def test_refused(self, argv: list[str]) -> None:
        assert _family_rule(argv) == "inline-code"

    @pytest.mark.parametrize(
        "argv",
        [
            ["python3", "x.py"],
            ["python3", "-u", "-B", "x.py"],
            ["python3", "-W", "-c", "x.py"],  # -c is the value of -W
            ["python3", "-Wc", "x.py"],  # the rest of the cluster is -W's value
            ["python3", "-X", "-m", "x.py"],
            ["python3", "-Q", "-c", "x.py"],
            ["python3", "--verbose", "x.py"],
            ["python3x", "-c", "1"],  # not an interpreter family name
            ["jq", "-c", "."],
            ["node", "x.js", "--eval=1"],
            ["node", "--no-warnings", "x.js"],
            ["perl", "-I", "-e", "x.pl"],
            ["perl", "-Ie", "x.pl"],
            ["perl", "-l", "x.pl"],
            ["perl", "-0777", "x.pl"],
            ["perl", "-0x1Fe", "x.pl"],  # hex digits: the e is part of the number
            ["perl", "-i.bak", "x.pl"],
            ["perl", "-ie", "x.pl"],  # the e is -i's backup suffix
            ["perl", "-F:", "x.pl"],
            ["ruby", "-I", "-e", "x.rb"],
            ["ruby", "-C", "-e", "x.rb"],
            ["php", "-d", "-r", "s.php"],
            ["php", "-c", "-r", "s.php"],
            ["deno", "run", "x.ts"],
            ["deno", "run", "x.ts", "eval"],
        ],
    )
    def test_allowed(self, argv: list[str]) -> None:
        assert _family_rule(argv) is None

    def test_a_policy_may_allow_inline_code_for_one_interpreter(self) -> None:
        assert _family_rule(["python3", "-c", "1"], frozenset({"python3"})) is None
        assert _family_rule(["node", "-e", "1"], frozenset({"python3"})) == "inline-code"

    @pytest.mark.parametrize(
        ("name", "real", "expected"),
        [
            ("python3", "/usr/bin/python3.11", "python"),
            ("python", "/usr/bin/python", "python"),
            ("python3.12.1", "/x/python3.12.1", "python"),
            ("py", "/usr/bin/python3", "python"),
            ("nodejs", "/usr/bin/nodejs", "node"),
            ("node20", "/usr/bin/node20", "node"),
            ("mynode", "/usr/lib/nodejs", "node"),
            ("perl", "/usr/bin/perl5.36.0", "perl"),
            ("ruby3.2", "/usr/bin/ruby3.2", "ruby"),
            ("php", "/usr/bin/php8.2", "php"),
            ("deno", "/usr/bin/deno", "deno"),
            ("python3x", "/usr/bin/python3x", None),
            ("jq", "/usr/bin/jq", None),
            ("xpython3", "/usr/bin/xpython3", None),
        ],
    )
    def test_family(self, name: str, real: str, expected: str | None) -> None:
        assert family(Resolved(name=name, path=f"/usr/bin/{name}", real=real)) == expected


class TestEnvironmentWrittenOut:
    """Variables that steer a loader or an interpreter are refused, others pass."""

    @pytest.mark.parametrize(
        "name",
        [
            "LD_PRELOAD", "LD_LIBRARY_PATH", "ld_preload", "DYLD_INSERT_LIBRARIES",
            "PYTHONPATH", "PYTHONSTARTUP", "NODE_OPTIONS", "NODE_PATH", "NPM_CONFIG_PREFIX",
            "PERL5OPT", "PERLLIB", "RUBYOPT", "RUBYLIB", "GEM_HOME", "MALLOC_CHECK_",
            "BASH_ENV", "ENV", "SHELLOPTS", "IFS", "PATH", "path", "HOME", "GCONV_PATH",
            "LOCPATH", "TMPDIR", "NLSPATH", "RESOLV_HOST_CONF", "HOSTALIASES", "LOCALDOMAIN",
            "JAVA_TOOL_OPTIONS",
        ],
    )  # fmt: skip
    def test_refused(self, name: str) -> None:
        assert _rule(["python3", "x.py"], {"LANG": "C", name: "x"}) == "env-injection"

    @pytest.mark.parametrize(
        "name", ["LANG", "MY_PATH", "PATHS", "XPYTHONPATH", "HOMEPAGE", "NODE", "LD", "TZ"]
    )
    def test_allowed(self, name: str) -> None:
        assert _rule(["python3", "x.py"], {name: "x"}) is None

    @pytest.mark.parametrize(
        "env", [{"": "x"}, {"A=B": "x"}, {"A\0": "x"}, {"A": "x\0y"}, {"A": 1}, {2: "x"}]
    )
    def test_malformed_entries_are_bad_argv(self, env: dict[object, object]) -> None:
        assert _rule(["python3", "x.py"], env) == "bad-argv"  # type: ignore[arg-type]


class TestPolicyWrittenOut:
    """The documented defaults and validators of SandboxPolicy."""

    def test_defaults(self) -> None:
        policy = SandboxPolicy()
        assert policy.allow == ("python3", "node")
        assert policy.inline_code == frozenset()
        assert policy.pass_env == ("LANG", "LC_ALL", "TZ")
        assert (
            policy.cpu_seconds,
            policy.address_space,
            policy.file_size,
            policy.open_files,
            policy.processes,
            policy.output_cap,
        ) == (60, 4 * 1024**3, 64 * 1024**2, 256, 64, 1024**2)
        assert (policy.isolate, policy.user, policy.group) == ("auto", "nobody", "nogroup")
        assert policy.uid_pool == (200_000, 200_999)
        assert (policy.kill_grace, policy.keep_dir) == (1.0, False)
        assert policy.search_path == ("/usr/local/bin", "/usr/bin", "/bin")
        assert SandboxPolicy.default() == policy

    @pytest.mark.parametrize(
        "field",
        ["cpu_seconds", "address_space", "file_size", "open_files", "processes", "output_cap"],
    )
    @pytest.mark.parametrize("value", [0, -1])
    def test_limits_must_be_positive(self, field: str, value: int) -> None:
        with pytest.raises(ValueError, match=f"{field} must be positive, got {value}"):
            SandboxPolicy(**{field: value})  # type: ignore[arg-type]
        assert getattr(SandboxPolicy(**{field: 1}), field) == 1  # type: ignore[arg-type]

    def test_other_validators(self) -> None:
        with pytest.raises(ValueError, match="isolate"):
            SandboxPolicy(isolate="sometimes")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="kill_grace"):
            SandboxPolicy(kill_grace=-0.1)
        assert SandboxPolicy(kill_grace=0).kill_grace == 0
        for isolate in ("auto", "always", "never", "bwrap", "kernel"):
            assert SandboxPolicy(isolate=isolate).isolate == isolate

    @pytest.mark.parametrize("name", ["", "/usr/bin/python3", "bin/node", "pyth\u03bfn3"])
    def test_allowed_names_are_bare_ascii(self, name: str) -> None:
        with pytest.raises(ValueError, match="must be a bare ASCII program name"):
            SandboxPolicy(allow=("python3", name))

    def test_inline_code_names_allowed_programs_only(self) -> None:
        with pytest.raises(ValueError, match=r"not allowed: \['perl', 'ruby'\]"):
            SandboxPolicy(inline_code={"python3", "ruby", "perl"})
        assert SandboxPolicy(inline_code=["node"]).inline_code == frozenset({"node"})


class TestResolveAllowed:
    """Allowed names are found once, on the search path in order, as executable files."""

    def test_search_path_order_and_executables_only(self, tmp_path: pathlib.Path) -> None:
        first, second = tmp_path / "first", tmp_path / "second"
        first.mkdir()
        second.mkdir()

        def program(path: pathlib.Path, mode: int = 0o755) -> None:
            path.write_text("#!/bin/true\n")
            path.chmod(mode)

        program(first / "a")
        program(second / "a")  # shadowed by first/a
        program(first / "b", 0o644)  # not executable: skipped
        program(second / "b")
        (first / "c").mkdir()  # a directory: skipped
        program(second / "c")
        program(second / "real-d")
        (first / "d").symlink_to(second / "real-d")
        policy = SandboxPolicy(
            allow=("a", "b", "c", "d", "e"), search_path=(str(first), str(second))
        )
        assert resolve_allowed(policy) == {
            "a": Resolved(name="a", path=f"{first}/a", real=f"{first}/a"),
            "b": Resolved(name="b", path=f"{second}/b", real=f"{second}/b"),
            "c": Resolved(name="c", path=f"{second}/c", real=f"{second}/c"),
            "d": Resolved(name="d", path=f"{first}/d", real=f"{second}/real-d"),
        }
