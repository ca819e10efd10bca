"""The sandbox argv policy as a pure function, over argvs hypothesis makes up."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

import guild
from guild.sandbox import SHELLS, WRAPPERS, Resolved, SandboxPolicy, check

POLICY = SandboxPolicy(isolate="never")
TABLE = {
    "python3": Resolved(name="python3", path="/usr/bin/python3", real="/usr/bin/python3.11"),
    "node": Resolved(name="node", path="/usr/bin/node", real="/usr/bin/node"),
}
args = st.text(alphabet=st.characters(blacklist_characters="\0"), max_size=12)
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

    @given(st.sampled_from(sorted(SHELLS | WRAPPERS)), st.lists(args, max_size=4))
    def test_shells_and_wrappers_never_run(self, name: str, rest: list[str]) -> None:
        assert _rule([name, *rest]) in {"shell", "wrapper"}

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
