"""Running untrusted commands: argv only, a policy, limits, isolation, and nothing left behind.

* :class:`SandboxPolicy` — what may run and with what limits (frozen, validated).
* :class:`Sandbox` — ``await sandbox.run(argv, timeout=…, files=…)``.
* :class:`SandboxResult` — exit code, capped output, files created, duration.
* :func:`check` — the pure policy decision, for tests and tooling.

Refusals raise ``guild.CommandRefused`` (naming the rule); timeouts raise
``guild.SandboxTimeout`` (carrying the output so far).
"""

from __future__ import annotations

from ._policy import SHELLS as SHELLS
from ._policy import WRAPPERS as WRAPPERS
from ._policy import Resolved as Resolved
from ._policy import SandboxPolicy as SandboxPolicy
from ._policy import check as check
from ._policy import resolve_allowed as resolve_allowed
from ._process import Sandbox as Sandbox
from ._process import SandboxResult as SandboxResult

__all__ = [
    "SHELLS",
    "WRAPPERS",
    "Resolved",
    "Sandbox",
    "SandboxPolicy",
    "SandboxResult",
    "check",
    "resolve_allowed",
]
