"""Running untrusted commands: argv only, a policy, limits, isolation, and nothing left behind.

* :class:`SandboxPolicy` — what may run and with what limits (frozen, validated).
* :class:`Sandbox` — ``await sandbox.run(argv, timeout=…, files=…)``.
* :class:`SandboxResult` — exit code, capped output, files created, duration.
* :func:`check` — the pure policy decision, for tests and tooling.
* :func:`host_isolation` — ``"bwrap"``, ``"kernel"`` or ``"none"``: what ``isolate="auto"`` gets here.
* :func:`check_run` — the pure check of a run's timeout and files.

Refusals raise ``guild.CommandRefused`` (naming the rule); timeouts raise
``guild.SandboxTimeout`` (carrying the output so far).
"""

from __future__ import annotations

import typing

from .. import _lazy

if typing.TYPE_CHECKING:
    from ._policy import SHELLS as SHELLS
    from ._policy import WRAPPERS as WRAPPERS
    from ._policy import Resolved as Resolved
    from ._policy import SandboxPolicy as SandboxPolicy
    from ._policy import check as check
    from ._policy import check_run as check_run
    from ._policy import resolve_allowed as resolve_allowed
    from ._process import Sandbox as Sandbox
    from ._process import SandboxResult as SandboxResult
    from ._process import host_isolation as host_isolation

# Loaded on first use: ``guild run`` and the HTTP server import this package to
# ask whether an app holds a sandbox, which most apps never make.
# Hidden from type checkers, which would otherwise accept any name at all.
if not typing.TYPE_CHECKING:
    __getattr__, __dir__ = _lazy.lazy_exports(
        __name__,
        globals(),
        {
            "SHELLS": "._policy",
            "WRAPPERS": "._policy",
            "Resolved": "._policy",
            "SandboxPolicy": "._policy",
            "check": "._policy",
            "check_run": "._policy",
            "resolve_allowed": "._policy",
            "Sandbox": "._process",
            "SandboxResult": "._process",
            "host_isolation": "._process",
        },
    )

__all__ = [
    "SHELLS",
    "WRAPPERS",
    "Resolved",
    "Sandbox",
    "SandboxPolicy",
    "SandboxResult",
    "check",
    "check_run",
    "host_isolation",
    "resolve_allowed",
]
