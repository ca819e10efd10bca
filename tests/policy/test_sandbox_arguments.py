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
