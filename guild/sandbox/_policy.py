"""Sans-IO sandbox policy: is this argv allowed, and as what absolute command?

Rules, checked in this order (the first that fails names the refusal):

``bad-argv``       empty argv, a non-string, or a NUL byte anywhere.
``relative-path``  the executable is given as a relative path (``./python3``).
``resolved-path``  an absolute path that is not an allowed executable's own path
                   (``/tmp/python3``, a symlink planted in the job directory).
``not-allowed``    a bare name that is not on the allow-list — including names
                   that only look like one (non-ASCII homoglyphs, ``"python3; id"``).
``shell``          a shell (sh, bash, …): never allowed, a shell runs any string.
``wrapper``        a program whose job is to run another one (env, sudo, timeout, …).
``inline-code``    an interpreter flag that runs code given on the command line or a
                   module chosen by the caller (``python3 -c``, ``-Sc``, ``-m``,
                   ``node -e``, ``--eval=…``, ``perl -e``, …), unless the policy
                   allows inline code for that interpreter.
``env-injection``  a job variable that steers the loader or an interpreter
                   (``LD_PRELOAD``, ``PYTHONPATH``, ``NODE_OPTIONS``, …).

Executables are resolved to absolute paths once, when the sandbox is built
(``resolve_allowed``); checking an argv afterwards is a pure function of the
argv, the job's environment and that table.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import Literal

import attrs

from .._errors import CommandRefused

SHELLS = frozenset(
    {"sh", "bash", "dash", "zsh", "fish", "ksh", "mksh", "csh", "tcsh", "ash", "busybox", "rbash"}
)
WRAPPERS = frozenset(
    {
        "env",
        "sudo",
        "su",
        "doas",
        "pkexec",
        "nohup",
        "timeout",
        "xargs",
        "nice",
        "ionice",
        "setsid",
        "chroot",
        "strace",
        "ltrace",
        "gdb",
        "time",
        "stdbuf",
        "unshare",
        "nsenter",
        "runuser",
        "setpriv",
        "flock",
        "watch",
        "script",
        "expect",
        "find",
        "awk",
        "sed",
    }
)

# Per interpreter family: short flags that run inline code or a caller-chosen
# module, short flags that take a value (so the value is skipped, not parsed as
# flags), and long options that do the same.
_INLINE: dict[str, tuple[frozenset[str], frozenset[str], frozenset[str]]] = {
    "python": (frozenset("cm"), frozenset("WXQ"), frozenset()),
    "node": (
        frozenset("epr"),
        frozenset(),
        frozenset(
            {
                "--eval",
                "--print",
                "--require",
                "--import",
                "--loader",
                "--experimental-loader",
                "--experimental-default-type",
                "--inspect-brk",
            }
        ),
    ),
    "perl": (frozenset("eEMmx"), frozenset("IidlF0"), frozenset()),
    "ruby": (frozenset("er"), frozenset("IC"), frozenset({"--require"})),
    "php": (frozenset("rRBEF"), frozenset("dc"), frozenset({"--run"})),
    "deno": (frozenset(), frozenset(), frozenset({"eval", "repl"})),
}
_FAMILY = re.compile(r"^(python|node|nodejs|perl|ruby|php|deno)(\d+(\.\d+)*)?$")

_ENV_PREFIXES = ("LD_", "DYLD_", "PYTHON", "NODE_", "NPM_", "PERL", "RUBY", "GEM_", "MALLOC_")
_ENV_NAMES = frozenset(
    {
        "BASH_ENV",
        "ENV",
        "SHELLOPTS",
        "IFS",
        "PATH",
        "HOME",
        "GCONV_PATH",
        "LOCPATH",
        "TMPDIR",
        "NLSPATH",
        "RESOLV_HOST_CONF",
        "HOSTALIASES",
        "LOCALDOMAIN",
        "JAVA_TOOL_OPTIONS",
    }
)

DEFAULT_SEARCH_PATH = ("/usr/local/bin", "/usr/bin", "/bin")
Isolation = Literal["auto", "always", "never"]


def _positive(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be positive, got {value!r}")


def _names(_: object, attribute: attrs.Attribute[tuple[str, ...]], value: tuple[str, ...]) -> None:
    for name in value:
        if not name or "/" in name or not name.isascii():
            raise ValueError(f"{attribute.name}: {name!r} must be a bare ASCII program name")
        if name in SHELLS or name in WRAPPERS:
            raise ValueError(
                f"{attribute.name}: {name!r} runs arbitrary commands and cannot be allowed"
            )


@attrs.frozen(kw_only=True)
class SandboxPolicy:
    """What a sandboxed command may be and may use.

    Attributes:
        allow: program names that may run (bare names, resolved on ``search_path``).
        inline_code: interpreter names (from ``allow``) that may take inline-code flags.
        pass_env: variables of the worker's environment passed to the command.
        cpu_seconds, address_space, file_size, open_files, processes: rlimits.
        output_cap: bytes kept of stdout and of stderr each.
        isolate: bubblewrap namespaces: ``"auto"`` (when it works), ``"always"``, ``"never"``.
        user, group: who the command runs as when the worker is root.
        uid_pool: when the worker is root, each concurrent run gets its own uid
            from this inclusive range (with ``group``), so runs cannot signal or
            trace each other and ``processes`` caps each run, not all of them
            together (RLIMIT_NPROC counts per uid). ``None``: every run is ``user``.
        kill_grace: seconds between SIGTERM and SIGKILL.
        keep_dir: keep the job directory after the run (for inspection).
        search_path: where allowed names are looked up.
    """

    allow: tuple[str, ...] = attrs.field(
        default=("python3", "node"), converter=tuple, validator=_names
    )
    inline_code: frozenset[str] = attrs.field(default=frozenset(), converter=frozenset)
    pass_env: tuple[str, ...] = attrs.field(default=("LANG", "LC_ALL", "TZ"), converter=tuple)
    cpu_seconds: int = attrs.field(default=60, validator=_positive)
    address_space: int = attrs.field(default=4 << 30, validator=_positive)
    file_size: int = attrs.field(default=64 << 20, validator=_positive)
    open_files: int = attrs.field(default=256, validator=_positive)
    processes: int = attrs.field(default=64, validator=_positive)
    output_cap: int = attrs.field(default=1 << 20, validator=_positive)
    isolate: Isolation = attrs.field(
        default="auto", validator=attrs.validators.in_(("auto", "always", "never"))
    )
    user: str = "nobody"
    group: str = "nogroup"
    uid_pool: tuple[int, int] | None = (200_000, 200_999)
    kill_grace: float = attrs.field(default=1.0, validator=attrs.validators.ge(0))
    keep_dir: bool = False
    search_path: tuple[str, ...] = attrs.field(default=DEFAULT_SEARCH_PATH, converter=tuple)

    @inline_code.validator
    def _inline_subset(self, _: object, value: frozenset[str]) -> None:
        stray = value - set(self.allow)
        if stray:
            raise ValueError(f"inline_code names programs that are not allowed: {sorted(stray)}")

    @classmethod
    def default(cls) -> SandboxPolicy:
        """python3 and node, no inline code, no shells, conservative limits."""
        return cls()


@attrs.frozen
class Resolved:
    """An allowed program: its name, the path found on the search path, the real file."""

    name: str
    path: str
    real: str


def resolve_allowed(policy: SandboxPolicy) -> dict[str, Resolved]:
    """Find each allowed name on the search path (I/O: the one impure step, done once)."""
    found: dict[str, Resolved] = {}
    for name in policy.allow:
        for directory in policy.search_path:
            candidate = os.path.join(directory, name)
            if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                found[name] = Resolved(name=name, path=candidate, real=os.path.realpath(candidate))
                break
    return found


def _refuse(rule: str, argv: Sequence[object], detail: str) -> CommandRefused:
    shown = tuple(a if isinstance(a, str) else repr(a) for a in argv)
    return CommandRefused(rule, shown, detail)


def family(resolved: Resolved) -> str | None:
    """The interpreter family of a program (python3.11 -> python), or None."""
    for candidate in (resolved.name, os.path.basename(resolved.real)):
        match = _FAMILY.match(candidate)
        if match:
            return "node" if match.group(1) == "nodejs" else match.group(1)
    return None


def _check_executable(argv: Sequence[str], table: Mapping[str, Resolved]) -> Resolved:
    exe = argv[0]
    if "/" in exe:
        if not exe.startswith("/"):
            raise _refuse(
                "relative-path", argv, f"{exe!r}: relative paths are not allowed executables"
            )
        for entry in table.values():
            if exe in (entry.path, entry.real):
                return entry
        raise _refuse("resolved-path", argv, f"{exe!r} is not the path of an allowed executable")
    if not exe.isascii() or not exe.isprintable():
        raise _refuse("not-allowed", argv, f"no allowed executable has the name {exe!r}")
    if exe in SHELLS:
        raise _refuse("shell", argv, f"{exe!r}: shells are not allowed")
    if exe in WRAPPERS:
        raise _refuse("wrapper", argv, f"{exe!r} runs other programs and is not allowed")
    found = table.get(exe)
    if found is None:
        raise _refuse("not-allowed", argv, f"no allowed executable has the name {exe!r}")
    return found


def _check_inline(argv: Sequence[str], kind: str) -> None:
    inline, takes_value, long_options = _INLINE[kind]
    args = iter(argv[1:])
    for arg in args:
        if arg == "--" or not arg.startswith("-") or arg == "-":
            if kind == "deno" and arg in long_options:
                raise _refuse("inline-code", argv, f"deno {arg} runs inline code")
            return  # the script (or its arguments) from here on
        if arg.startswith("--"):
            name = arg.split("=", 1)[0]
            if name in long_options:
                raise _refuse("inline-code", argv, f"{name} runs code given on the command line")
            continue
        cluster = arg[1:]
        for index, flag in enumerate(cluster):
            if flag in inline:
                raise _refuse("inline-code", argv, f"inline code flag -{flag} (in {arg!r})")
            if flag in takes_value:
                if index == len(cluster) - 1:
                    next(args, None)  # the value is the next argument
                break  # the rest of the cluster is the value


def check_env(argv: Sequence[str], env: Mapping[str, str]) -> None:
    """Refuse job variables that steer a loader or an interpreter."""
    for name, value in env.items():
        if not isinstance(name, str) or not isinstance(value, str) or not name:
            raise _refuse("bad-argv", argv, f"environment entries must be strings: {name!r}")
        if "\0" in name or "\0" in value or "=" in name:
            raise _refuse("bad-argv", argv, f"malformed environment variable {name!r}")
        upper = name.upper()
        if upper in _ENV_NAMES or upper.startswith(_ENV_PREFIXES):
            raise _refuse("env-injection", argv, f"the job may not set {name}")


def check(
    argv: Sequence[str],
    table: Mapping[str, Resolved],
    policy: SandboxPolicy,
    env: Mapping[str, str] | None = None,
) -> tuple[str, ...]:
    """The argv to execute (absolute executable), or :class:`CommandRefused` naming the rule."""
    if isinstance(argv, str) or not argv:
        raise _refuse(
            "bad-argv", [argv] if isinstance(argv, str) else [], "argv must be a non-empty list"
        )
    for arg in argv:
        if not isinstance(arg, str):
            raise _refuse("bad-argv", argv, f"argument {arg!r} is not a string")
        if "\0" in arg:
            raise _refuse("bad-argv", argv, "NUL byte in an argument")
    entry = _check_executable(argv, table)
    kind = family(entry)
    if kind is not None and entry.name not in policy.inline_code:
        _check_inline(argv, kind)
    check_env(argv, env or {})
    return (entry.path, *argv[1:])
