"""Sans-IO sandbox policy: is this argv allowed, and as what absolute command?

Rules, checked in this order (the first that fails names the refusal):

``bad-argv``       empty argv, a non-string, or a NUL byte anywhere; or what execve
                   would refuse (checked last): a string it cannot encode, one over
                   128 KiB, argv and job environment over 1 MiB together.
``relative-path``  the executable is given as a relative path (``./python3``).
``resolved-path``  an absolute path that is not an allowed executable's own path
                   (``/tmp/python3``, a symlink planted in the job directory).
``not-allowed``    a bare name that is not on the allow-list — including names
                   that only look like one (non-ASCII homoglyphs, ``"python3; id"``).
``shell``          a shell (sh, bash, …): never allowed, a shell runs any string.
``wrapper``        a program whose job is to run another one (env, sudo, timeout, …).
``inline-code``    an interpreter flag that runs code given on the command line or a
                   module chosen by the caller (``python3 -c``, ``-Sc``, ``-m``,
                   ``node -e``, ``--eval=…``, ``perl -e``, a ``python -W`` filter
                   whose category ``module.Class`` python imports, …), unless the
                   policy allows inline code for that interpreter.
``debugger``       ``--inspect*`` or ``--debug*`` (``_`` spelled ``-`` too), or
                   ``node inspect``: a debugger port runs whatever code its client sends.
``double-dash``    ``--`` before the script: it turns the next argument into a
                   script name however it is spelled (``python3 -- -c …``).
``script-stdin``   the script is stdin: ``-``, ``/dev/stdin``, ``/dev/fd/N``,
                   ``/proc/self/fd/N`` (the job does not choose what stdin holds).
``script-outside`` the script does not resolve inside the job directory: an
                   absolute path (a stdlib module's, ``/tmp/x.py``), a ``..``
                   component, a URL (``https://…``), an empty name; or it is
                   looked up on PATH (``perl -S``, ``ruby -S``), or opened after a
                   change of directory out of it (``ruby -C /usr/lib``). The same for an
                   option's file that runs as code (``node --test-reporter``), and
                   for every word after ``node --test`` (each is a test file).
                   node runs a directory (``node .``, ``node lib/``) as the
                   ``"main"`` of its ``package.json``: among the run's files, that
                   must resolve inside too (checked by :func:`check_run`, which
                   sees the files; a ``package.json`` that is not JSON is refused).
``env-injection``  a job variable that steers the loader or an interpreter
                   (``LD_PRELOAD``, ``PYTHONPATH``, ``NODE_OPTIONS``, …), or an
                   option that loads variables from a file (``node --env-file``).

The interpreter's arguments are read as the interpreter reads them, up to its
script: a flag's value is skipped, never taken for the script. An option this
module does not know, written without ``=``, may take the next argument as its
value or not: both readings are checked, so a script hidden behind one is found.
A refused argument never starts a process; neither does a bad run
(:func:`check_run`, before the job directory is made):

``bad-timeout``    not a number, NaN or infinite, not above 0, or above the
                   policy's ``max_timeout``.
``bad-file``       a file name that is not relative text, is empty, has an empty,
                   ``.`` or ``..`` component or a NUL, has a component over 255
                   bytes or is over 4096 bytes (UTF-8), or names a file that
                   another name needs as a directory; content that is not bytes.
``disk-budget``    the files do not fit the job directory's budget
                   (``disk_bytes`` counted in 4 KiB pages, ``disk_inodes``).

Executables are resolved to absolute paths once, when the sandbox is built
(``resolve_allowed``); checking an argv afterwards is a pure function of the
argv, the job's environment and that table.
"""

from __future__ import annotations

import json
import math
import os
import posixpath
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

import attrs

from .._errors import CommandRefused
from .._exports import publish

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


@attrs.frozen
class _Syntax:
    """How one interpreter family reads its options, up to the script."""

    inline: frozenset[str]  # short flags that run inline code or a caller-chosen module
    takes_value: frozenset[str]  # short flags whose value follows (in the cluster or next)
    # Short flags whose optional value can only be the rest of their cluster, up
    # to a space (perl -i.bak, -F:): the next argument is never theirs, and perl
    # reads switches again after the space (`perl "-i -e" CODE` runs CODE).
    attached_value: frozenset[str] = frozenset()
    # Short flags followed by optional digits, after which the cluster goes on
    # as flags (perl -l015, -0777, -0x1F): `perl -lane CODE` runs CODE.
    number_value: frozenset[str] = frozenset()
    # Short flags that look the script up on PATH (perl -S, ruby -S): whatever
    # the name, the file run is not the job's.
    path_search: frozenset[str] = frozenset()
    # Short flags that change directory before the script is opened (ruby -C DIR,
    # -xDIR): the script's name then resolves there, not in the job directory.
    chdir: frozenset[str] = frozenset()
    # Short flags whose value may name a module the interpreter imports before the
    # script (python -W action::module.Category): a caller-chosen module, as -m.
    warning_filter: frozenset[str] = frozenset()
    inline_long: frozenset[str] = frozenset()  # long options (or words) that run inline code
    value_long: frozenset[str] = frozenset()  # long options whose value may be the next arg
    flag_long: frozenset[str] = frozenset()  # long options known to take no value
    env_long: frozenset[str] = frozenset()  # long options that load variables from a file
    # Long options whose value is a file the interpreter runs as code: it must
    # be in the job directory, as the script must (node --test-reporter=./r.mjs).
    code_long: frozenset[str] = frozenset()
    # Long options after which every word is a script (node --test a.js b.js
    # runs each): all of them must be in the job directory.
    scripts_long: frozenset[str] = frozenset()
    subcommands: frozenset[str] = frozenset()  # a word before the script (deno run x.ts)
    # Words read in the script's place as a debugger (node inspect x.js listens
    # on 127.0.0.1:9229, seen with node 20).
    debugger_words: frozenset[str] = frozenset()


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_SYNTAX: dict[str, _Syntax] = {
    "python": _Syntax(
        inline=frozenset("cm"),
        takes_value=frozenset("WXQ"),
        warning_filter=frozenset("W"),
        value_long=frozenset({"--check-hash-based-pycs"}),
        flag_long=frozenset({"--help", "--help-env", "--help-xoptions", "--help-all", "--version"}),
    ),
    "node": _Syntax(
        inline=frozenset("epr"),
        takes_value=frozenset("C"),
        inline_long=frozenset(
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
        # node 20's `--help`, the options shown with a value, each seen to take
        # the next argument as its value (V8's own options do not).
        value_long=_words(
            """--allow-fs-read --allow-fs-write --build-snapshot-config --conditions
            --cpu-prof-dir --cpu-prof-interval --cpu-prof-name --diagnostic-dir
            --disable-proto --disable-warning --dns-result-order
            --experimental-policy --experimental-sea-config --heap-prof-dir
            --heap-prof-interval --heap-prof-name --heapsnapshot-near-heap-limit
            --heapsnapshot-signal --icu-data-dir --input-type --max-http-header-size
            --network-family-autoselection-attempt-timeout --openssl-config
            --policy-integrity --redirect-warnings --report-filename --report-signal
            --secure-heap --secure-heap-min
            --test-concurrency --test-name-pattern
            --test-reporter-destination --test-shard --test-timeout --title
            --tls-cipher-list --tls-keylog --trace-event-categories
            --trace-event-file-pattern --unhandled-rejections --use-largepages
            --v8-pool-size --watch-path"""
        ),
        flag_long=_words(
            """--help --version --check --interactive --test --watch --expose-gc
            --enable-source-maps --trace-warnings --trace-uncaught --trace-exit
            --trace-sigint --preserve-symlinks --preserve-symlinks-main
            --abort-on-uncaught-exception --throw-deprecation --trace-deprecation
            --pending-deprecation --experimental-vm-modules --frozen-intrinsics
            --zero-fill-buffers --jitless --experimental-permission
            --experimental-wasm-modules --experimental-detect-module
            --force-fips --enable-fips --experimental-global-webcrypto
            --report-on-fatalerror --report-uncaught-exception --report-compact
            --build-snapshot --test-only --prof --cpu-prof --heap-prof"""
        ),
        env_long=frozenset({"--env-file", "--env-file-if-exists"}),
        # A reporter is a module node imports; a snapshot blob's main function
        # runs instead of the script (both seen with node 20).
        code_long=frozenset({"--test-reporter", "--snapshot-blob"}),
        scripts_long=frozenset({"--test"}),
        debugger_words=frozenset({"inspect"}),
    ),
    # perl -d[:Module] runs a debugger or a module the caller names: inline code.
    # -C takes the rest of its cluster (unicode letters or digits; perl exits on
    # anything else) and -D all word characters after it: `perl -CI /tmp/x.pl`
    # runs /tmp/x.pl, the I is not -I (checked with perl 5.36).
    "perl": _Syntax(
        inline=frozenset("eEMmxd"),
        takes_value=frozenset("I"),
        attached_value=frozenset("iFCD"),
        number_value=frozenset("l0"),
        path_search=frozenset("S"),
    ),
    "ruby": _Syntax(
        inline=frozenset("er"),
        takes_value=frozenset("IC"),
        inline_long=frozenset({"--require"}),
        path_search=frozenset("S"),
        chdir=frozenset("Cx"),
    ),
    "php": _Syntax(
        inline=frozenset("rRBEF"), takes_value=frozenset("dc"), inline_long=frozenset({"--run"})
    ),
    "deno": _Syntax(
        inline=frozenset(),
        takes_value=frozenset(),
        inline_long=frozenset({"eval", "repl"}),
        subcommands=frozenset({"run", "test", "bench", "check", "compile", "serve", "lint"}),
    ),
}
_DEBUGGER = ("--inspect", "--debug")
_STDIN = re.compile(r"^/(dev/(stdin|fd/.*)|proc/[^/]+/fd/.*)$")
# Limits of Linux file names (NAME_MAX, PATH_MAX), in bytes of UTF-8.
MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 4096
# What execve takes: one string of at most 32 pages with its NUL (MAX_ARG_STRLEN),
# and all of them with their pointers within a quarter of the stack limit (2 MiB
# for the usual 8 MiB). A longer argv failed with E2BIG after the run had begun;
# half of that is left for the job, the rest for the worker's own variables.
MAX_ARG_BYTES = 32 * 4096 - 1
MAX_ARGV_BYTES = 1 << 20
# tmpfs gives every non-empty file whole pages.
_PAGE = 4096
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
        # glibc's loader parses these tunables before main (CVE-2023-4911).
        "GLIBC_TUNABLES",
        # OpenSSL (python's ssl and hashlib, node's crypto) reads this
        # configuration at start-up, and it may load an engine or provider library.
        "OPENSSL_CONF",
        "OPENSSL_ENGINES",
        "OPENSSL_MODULES",
    }
)

DEFAULT_SEARCH_PATH = ("/usr/local/bin", "/usr/bin", "/bin")
Isolation = Literal["auto", "always", "never", "bwrap", "kernel"]


def _positive(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be positive, got {value!r}")


# Typed converters: attrs' mypy plugin cannot infer one from ``frozenset`` or ``tuple``.
def _frozen(names: Iterable[str]) -> frozenset[str]:
    return frozenset(names)


def _strings(names: Iterable[str]) -> tuple[str, ...]:
    return tuple(names)


def _finite_positive(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ValueError(f"{attribute.name} must be a finite number above 0, got {value!r}")


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
        cpu_seconds, address_space, file_size, open_files, processes: rlimits
            (per process; ``processes`` is also the run's process budget).
        output_cap: bytes kept of stdout and of stderr each.
        isolate: namespaces for each run. ``"auto"`` (and its old name ``"always"``):
            bubblewrap when it works, else the kernel's namespaces directly, else
            refuse to build (``IsolationUnavailable``); ``"bwrap"`` or ``"kernel"``:
            that mode or refuse; ``"never"``: no isolation (an explicit choice).
        memory: bytes all of a run's processes may hold together, tmpfs pages
            they write included (a cgroup, where one can be made).
        run_cpu_seconds: CPU seconds all of a run's processes may use together.
        tmpfs_size, tmpfs_inodes: each scratch tmpfs (``/tmp``, ``/dev/shm``,
            ``/var/tmp``) of a kernel-isolated run holds at most this much.
        disk_bytes, disk_inodes: the job directory's budget. When the worker is
            root it is a tmpfs of this size and inode count; a run that fills it
            gets ENOSPC and its result says ``budget_exceeded="disk"`` or
            ``"inodes"``. The files a run is given must fit (``disk-budget``).
        max_timeout: the longest timeout a run may ask for, in seconds.
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
        default=("python3", "node"), converter=_strings, validator=_names
    )
    inline_code: frozenset[str] = attrs.field(default=frozenset(), converter=_frozen)
    pass_env: tuple[str, ...] = attrs.field(default=("LANG", "LC_ALL", "TZ"), converter=_strings)
    cpu_seconds: int = attrs.field(default=60, validator=_positive)
    address_space: int = attrs.field(default=4 << 30, validator=_positive)
    file_size: int = attrs.field(default=64 << 20, validator=_positive)
    open_files: int = attrs.field(default=256, validator=_positive)
    processes: int = attrs.field(default=64, validator=_positive)
    output_cap: int = attrs.field(default=1 << 20, validator=_positive)
    isolate: Isolation = attrs.field(
        default="auto",
        validator=attrs.validators.in_(("auto", "always", "never", "bwrap", "kernel")),
    )
    memory: int = attrs.field(default=1 << 30, validator=_positive)
    run_cpu_seconds: int = attrs.field(default=120, validator=_positive)
    tmpfs_size: int = attrs.field(default=64 << 20, validator=_positive)
    tmpfs_inodes: int = attrs.field(default=4096, validator=_positive)
    disk_bytes: int = attrs.field(default=128 << 20, validator=_positive)
    disk_inodes: int = attrs.field(default=16384, validator=_positive)
    max_timeout: float = attrs.field(default=3600.0, validator=_finite_positive)
    user: str = "nobody"
    group: str = "nogroup"
    uid_pool: tuple[int, int] | None = (200_000, 200_999)
    kill_grace: float = attrs.field(default=1.0, validator=attrs.validators.ge(0))
    keep_dir: bool = False
    search_path: tuple[str, ...] = attrs.field(default=DEFAULT_SEARCH_PATH, converter=_strings)

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


def check_script(argv: Sequence[str], script: str) -> None:
    """Refuse a script that does not resolve inside the job directory (the working
    directory): stdin, an absolute path, a ``..`` component, a URL, an empty name."""
    if script == "-" or _STDIN.match(script):
        raise _refuse("script-stdin", argv, f"the script {script!r} is stdin")
    if not script:
        raise _refuse("script-outside", argv, "an empty script name")
    if script.startswith("/"):
        raise _refuse(
            "script-outside", argv, f"the script {script!r} is not inside the job directory"
        )
    parts = script.split("/")
    if ".." in parts:
        raise _refuse("script-outside", argv, f"the script {script!r} leaves the job directory")
    if ":" in parts[0]:
        raise _refuse("script-outside", argv, f"the script {script!r} is a URL, not a file")


# A place in the argv, and whether deno's subcommand has been read.
_Place = tuple[int, bool]


def _step(
    argv: Sequence[str],
    place: _Place,
    syntax: _Syntax,
    inline_ok: bool,
    found: list[str],
    moved: list[str] | None = None,
    scanned: list[int] | None = None,
) -> list[_Place]:
    """Read the argument at ``place``; where reading may go on (none: the script
    was found and is confined, or the rest is inline code the policy allows).
    Each word taken for a script (or an option's code file) is added to ``found``."""
    index, past_subcommand = place
    if index >= len(argv):
        return []  # no script: the interpreter reads stdin, which is /dev/null
    arg = argv[index]
    if arg == "--":
        raise _refuse("double-dash", argv, "'--' before the script makes any word a script name")
    if arg == "-" or not arg.startswith("-"):
        if syntax.subcommands and not past_subcommand:
            if arg in syntax.inline_long:
                if inline_ok:
                    return []
                raise _refuse("inline-code", argv, f"{arg} runs code given on the command line")
            if arg in syntax.subcommands:
                return [(index + 1, True)]
        if arg in syntax.debugger_words:
            raise _refuse("debugger", argv, f"{arg!r} in the script's place runs a debugger")
        check_script(argv, arg)
        found.append(arg)
        return []
    if arg.startswith("--"):
        name, has_value, value = arg.partition("=")
        name = name.replace("_", "-")  # node reads --inspect_brk as --inspect-brk
        if name in syntax.inline_long and not inline_ok:
            raise _refuse("inline-code", argv, f"{name} runs code given on the command line")
        if name.startswith(_DEBUGGER):
            raise _refuse("debugger", argv, f"{name} opens a debugger that runs any code")
        if name in syntax.inline_long:
            return []
        if name in syntax.env_long:
            raise _refuse("env-injection", argv, f"{name} loads variables from a file")
        if name in syntax.code_long:
            value_index = index if has_value else index + 1
            if value_index < len(argv):
                check_script(argv, value if has_value else argv[value_index])
                found.append(value if has_value else argv[value_index])
            return [(value_index + 1, past_subcommand)]
        if name in syntax.scripts_long:
            # Every word after it, but each once: ``scanned`` holds where the
            # words up to the end were read already (20,000 `--test` words, each
            # reading all the rest, took 11 s on the event loop).
            stop = scanned[0] if scanned else len(argv)
            for later in range(index + 1, stop):
                word = argv[later]
                if word == "-" or not word.startswith("-"):
                    check_script(argv, word)
                    found.append(word)
            if scanned:
                scanned[0] = min(stop, index + 1)
        if has_value or name in syntax.flag_long or name.startswith("--no-"):
            return [(index + 1, past_subcommand)]
        if name in syntax.value_long:
            return [(index + 2, past_subcommand)]
        # Unknown: a flag, or an option that takes the next argument. Read both ways.
        return [(index + 1, past_subcommand), (index + 2, past_subcommand)]
    cluster = arg[1:]
    position = 0
    while position < len(cluster):
        flag = cluster[position]
        position += 1
        if flag in syntax.number_value:
            position = _number_end(cluster, position, hexadecimal=flag == "0")
            continue
        if flag in syntax.inline:
            if inline_ok:
                return []
            raise _refuse("inline-code", argv, f"inline code flag -{flag} (in {arg!r})")
        if flag in syntax.path_search:
            raise _refuse(
                "script-outside", argv, f"-{flag} (in {arg!r}) looks the script up on PATH"
            )
        if flag in syntax.chdir and moved is not None:
            # -x alone only skips text before the #! line; with a directory it
            # changes to it. Refused once the script is known (a later -e is inline code).
            if position < len(cluster):
                moved.append(cluster[position:])
                if flag not in syntax.takes_value:
                    return [(index + 1, past_subcommand)]  # -xDIR: the rest is DIR
            elif flag in syntax.takes_value and index + 1 < len(argv):
                moved.append(argv[index + 1])
        if flag in syntax.attached_value:
            space = cluster.find(" ", position)
            if space < 0:
                return [(index + 1, past_subcommand)]
            position = space
            continue
        if flag in syntax.warning_filter:
            given = cluster[position:] if position < len(cluster) else None
            if given is None and index + 1 < len(argv):
                given = argv[index + 1]
            if given is not None and _imports_category(given) and not inline_ok:
                raise _refuse(
                    "inline-code",
                    argv,
                    f"-{flag} {given!r} imports a module chosen by the caller (its category)",
                )
        if flag in syntax.takes_value:
            # The rest of the cluster is the value, or else the next argument is.
            skip = 2 if position == len(cluster) else 1
            return [(index + skip, past_subcommand)]
    return [(index + 1, past_subcommand)]


def _imports_category(value: str) -> bool:
    """Whether python imports a module to read this ``-W`` filter: its third field,
    the category, names ``module.Class`` (CPython 3.11 ``warnings._getcategory``
    imports ``module``; a bare name is looked up in builtins). ``-W
    ignore::venv.__main__.X x.py`` runs ``python -m venv``'s code before x.py."""
    fields = value.split(":")
    return len(fields) >= 3 and "." in fields[2].strip()


def _number_end(cluster: str, start: int, hexadecimal: bool) -> int:
    """Where the digits of perl's -l/-0 value end: octal digits; for -0 only, x
    and hex digits up to the end of the cluster (`perl -lx f` is -l then -x)."""
    if hexadecimal and cluster[start : start + 1] == "x" and start + 1 < len(cluster):
        # perl takes -0xHEX only when the rest of the cluster is all hex digits;
        # else it reads -0 then -x with the rest as -x's directory.
        if all(char in "0123456789abcdefABCDEF" for char in cluster[start + 1 :]):
            return len(cluster)
        return start
    while start < len(cluster) and cluster[start] in "01234567":
        start += 1
    return start


def check_interpreter(argv: Sequence[str], kind: str, inline_ok: bool = False) -> tuple[str, ...]:
    """Refuse an interpreter argv whose options run code that is not the job's
    script in the job directory (see the module's rules); the words it took for
    scripts, under every reading of the options."""
    syntax = _SYNTAX[kind]
    pending: list[_Place] = [(1, False)]
    seen: set[_Place] = set()
    found: list[str] = []
    moved: list[str] = []
    scanned = [len(argv)]
    while pending:
        place = pending.pop()
        if place not in seen:
            seen.add(place)
            pending += _step(argv, place, syntax, inline_ok, found, moved, scanned)
    for directory in moved:
        if found and (directory.startswith("/") or ".." in directory.split("/")):
            raise _refuse(
                "script-outside",
                argv,
                f"the script is opened in {directory!r}, outside the job directory",
            )
    return tuple(dict.fromkeys(found))


def check_package_main(argv: Sequence[str], script: str, files: Mapping[str, bytes]) -> None:
    """Refuse ``node DIR`` when the run's files give ``DIR/package.json`` a ``"main"``
    that leaves the job directory (absolute, or ``..`` past it): node runs that file.

    ``script`` is already confined (:func:`check_script`). node 20 reads only
    ``"main"`` for a directory run as the script (not ``"exports"``), strips a
    UTF-8 byte order mark, and joins ``"main"`` to the directory as a path.
    """
    directory = posixpath.normpath(script)
    manifest = "package.json" if directory == "." else f"{directory}/package.json"
    content = files.get(manifest)
    if content is None:
        return
    try:
        data = json.loads(content.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _refuse(
            "script-outside", argv, f"{manifest} is not JSON, so where its main points is unknown"
        ) from None
    main = data.get("main") if isinstance(data, dict) else None
    if not isinstance(main, str) or not main:
        return  # node runs the directory's index.js
    target = posixpath.normpath(posixpath.join(directory, main))
    if main.startswith("/") or "\0" in main or target == ".." or target.startswith("../"):
        raise _refuse(
            "script-outside",
            argv,
            f"{manifest} has main {main!r}, which is not inside the job directory",
        )


def check_timeout(argv: Sequence[str], timeout: object, max_timeout: float) -> float:
    """The timeout as a float, or ``bad-timeout``: finite, above 0, at most ``max_timeout``."""
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise _refuse("bad-timeout", argv, f"timeout {timeout!r} is not a number of seconds")
    # An int is finite however large (and too large for math.isfinite to take).
    if (isinstance(timeout, float) and not math.isfinite(timeout)) or timeout <= 0:
        raise _refuse("bad-timeout", argv, f"timeout {timeout!r} must be finite and above 0")
    if timeout > max_timeout:
        raise _refuse(
            "bad-timeout",
            argv,
            f"timeout {timeout!r} is over the policy's max_timeout {max_timeout:g}",
        )
    return float(timeout)


def check_file_name(argv: Sequence[str], name: object) -> tuple[str, ...]:
    """The components of a job file's name, or ``bad-file`` naming what is wrong."""
    if not isinstance(name, str):
        raise _refuse("bad-file", argv, f"file name {name!r} is not text")
    try:
        encoded = name.encode()
    except UnicodeEncodeError:
        raise _refuse("bad-file", argv, f"file name {name!r} is not valid UTF-8") from None
    if not name or "\0" in name:
        raise _refuse("bad-file", argv, f"file name {name!r} is empty or has a NUL")
    if name.startswith("/"):
        raise _refuse("bad-file", argv, f"file name {name!r} is absolute")
    parts = tuple(name.split("/"))
    if any(part in ("", ".", "..") for part in parts):
        raise _refuse("bad-file", argv, f"file name {name!r} has an empty, '.' or '..' component")
    if len(encoded) > MAX_PATH_BYTES:
        raise _refuse("bad-file", argv, f"file name {name[:40]!r}… is over {MAX_PATH_BYTES} bytes")
    if any(len(part.encode()) > MAX_NAME_BYTES for part in parts):
        raise _refuse(
            "bad-file",
            argv,
            f"file name {name[:40]!r}… has a component over {MAX_NAME_BYTES} bytes",
        )
    return parts


def check_run(
    argv: Sequence[str],
    timeout: object,
    files: Mapping[str, bytes],
    policy: SandboxPolicy,
    table: Mapping[str, Resolved] | None = None,
) -> float:
    """The run's timeout as a float, or :class:`CommandRefused` (``bad-timeout``,
    ``bad-file``, ``disk-budget``, ``script-outside``) for a run that must not start.

    ``table`` (:func:`resolve_allowed`) tells which interpreter ``argv[0]`` is;
    without it, the name alone does. A node script that is a directory of the
    files is checked with :func:`check_package_main`.
    """
    seconds = check_timeout(argv, timeout, policy.max_timeout)
    if not isinstance(files, Mapping):
        raise _refuse(
            "bad-file", argv, f"files must map names to bytes, not {type(files).__name__}"
        )
    # The tree the names make, one node per inode: (parent node, component) -> node
    # (the root is 0). Linear in the names' bytes: a set of each name's prefixes
    # took 25 s and 6.4 GB on the event loop for 400 names of 2,000 components.
    nodes: dict[tuple[int, str], int] = {}
    directories: set[int] = set()
    leaves: set[int] = set()
    pages = 0
    for name, content in files.items():
        parts = check_file_name(argv, name)
        if not isinstance(content, bytes):
            raise _refuse("bad-file", argv, f"the content of {name!r} is not bytes")
        node = 0
        for depth, part in enumerate(parts):
            node = nodes.setdefault((node, part), len(nodes) + 1)
            last = depth == len(parts) - 1
            if node in (directories if last else leaves):
                shown = "/".join(parts[: depth + 1])
                raise _refuse("bad-file", argv, f"{shown!r} is both a file and a directory")
            (leaves if last else directories).add(node)
        if len(nodes) > policy.disk_inodes:
            raise _refuse(
                "disk-budget",
                argv,
                f"the files need over {policy.disk_inodes} inodes (disk_inodes)",
            )
        pages += -(-len(content) // _PAGE)
    if pages * _PAGE > policy.disk_bytes:
        raise _refuse(
            "disk-budget",
            argv,
            f"the files take {pages * _PAGE} bytes; disk_bytes is {policy.disk_bytes}",
        )
    if _kind(argv, table) == "node":
        name = argv[0] if table is None else _check_executable(argv, table).name
        for script in check_interpreter(argv, "node", name in policy.inline_code):
            check_package_main(argv, script, files)
    return seconds


def _kind(argv: Sequence[str], table: Mapping[str, Resolved] | None) -> str | None:
    """The interpreter family of ``argv[0]``: from its resolved entry, else its name."""
    if isinstance(argv, str) or not argv or not all(isinstance(a, str) for a in argv):
        return None
    if table is not None:
        try:
            return family(_check_executable(argv, table))
        except CommandRefused:
            return None
    name = os.path.basename(argv[0])
    return family(Resolved(name=name, path=argv[0], real=argv[0]))


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


def _exec_bytes(argv: Sequence[str], text: str) -> int:
    """What one string costs ``execve``: its bytes as the OS sees them, the NUL and
    a pointer; ``bad-argv`` when it cannot be passed at all."""
    try:
        size = len(os.fsencode(text)) + 1
    except UnicodeEncodeError:
        raise _refuse("bad-argv", argv, f"{text[:40]!r} cannot be encoded for exec") from None
    if size > MAX_ARG_BYTES + 1:
        raise _refuse(
            "bad-argv", argv, f"{text[:40]!r}… is over {MAX_ARG_BYTES} bytes, exec's limit"
        )
    return size + 8


def _check_exec_size(argv: Sequence[str], env: Mapping[str, str]) -> None:
    """``bad-argv`` for an argv and environment ``execve`` would refuse (E2BIG)."""
    total = 0
    for text in (*argv, *(f"{k}={v}" for k, v in env.items() if isinstance(k, str))):
        if isinstance(text, str):
            total += _exec_bytes(argv, text)
        if total > MAX_ARGV_BYTES:
            raise _refuse("bad-argv", argv, f"argv and environment are over {MAX_ARGV_BYTES} bytes")


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
    if kind is not None:
        check_interpreter(argv, kind, entry.name in policy.inline_code)
    check_env(argv, env or {})
    _check_exec_size(argv, env or {})
    return (entry.path, *argv[1:])


# Reprs, tracebacks and pickles name guild.X (see guild._exports).
publish(globals())
