"""Which isolation the sandboxes an app's workers hold are in: for the start-up
banner and ``/health``, so an operator sees what a job's commands run under."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .._app import Guild
    from ._policy import SandboxPolicy
    from ._process import Sandbox


def _sandbox_class() -> type[Sandbox] | None:
    # Every Sandbox is made by guild.sandbox._process: while that is not loaded,
    # no app holds one, and asking must not load it (with the fork server's
    # machinery) into every worker just to answer no.
    module = sys.modules.get("guild.sandbox._process")
    return None if module is None else module.Sandbox


def held_isolation(app: Guild) -> str | None:
    """The isolation of the sandboxes the app's workers hold (``"bwrap"``,
    ``"kernel"``, ``"none"``; several joined by ``", "``), or ``None`` if none holds one.

    A worker holds a sandbox when its handler is a method of an object with a
    :class:`guild.Sandbox` attribute (``guild_workers``' task worker), a function
    that closes over one, or a function whose code names a module-level one.
    """
    found = {sandbox.isolation for sandbox in _held(app)}
    return ", ".join(sorted(found)) if found else None


def held_unenforced(app: Guild) -> list[str]:
    """The per-run budgets (policy field names) that some sandbox the app's
    workers hold cannot enforce on this host (``Sandbox.unenforced``), sorted."""
    return sorted({name for sandbox in _held(app) for name in sandbox.unenforced})


def _held(app: Guild) -> list[Sandbox]:
    sandbox_type = _sandbox_class()
    if sandbox_type is None:
        return []
    found: list[Sandbox] = []
    for spec in app.specs.values():
        handler: Any = spec.handler
        owner = getattr(handler, "__self__", None)
        held = list(vars(owner).values()) if hasattr(owner, "__dict__") else []
        for cell in getattr(handler, "__closure__", None) or ():
            with contextlib.suppress(ValueError):  # a cell not yet filled
                held.append(cell.cell_contents)
        found_globals = getattr(handler, "__globals__", {})
        code = getattr(handler, "__code__", None)
        held += [found_globals.get(name) for name in getattr(code, "co_names", ())]
        found += [value for value in held if isinstance(value, sandbox_type)]
    return found


def replace_held_policies(app: Guild, change: Callable[[SandboxPolicy], SandboxPolicy]) -> int:
    """Give every sandbox the app's workers hold (as :func:`held_isolation` finds
    them) a new :class:`Sandbox` built from ``change(its policy)``; return how many.

    For ``guild.toml``'s ``[sandbox]``: a new Sandbox, not a changed policy, since
    a Sandbox resolves its programs and isolation when it is built.

    Raises:
        IsolationUnavailable: the changed policy asks for isolation this host lacks.
    """
    sandbox_type = _sandbox_class()
    if sandbox_type is None:
        return 0
    replaced: dict[int, Sandbox] = {}

    def renewed(old: Sandbox) -> Sandbox:
        if id(old) not in replaced:
            replaced[id(old)] = sandbox_type(change(old.policy))
        return replaced[id(old)]

    for spec in app.specs.values():
        handler: Any = spec.handler
        owner = getattr(handler, "__self__", None)
        if hasattr(owner, "__dict__"):
            for name, value in list(vars(owner).items()):
                if isinstance(value, sandbox_type):
                    setattr(owner, name, renewed(value))
        for cell in getattr(handler, "__closure__", None) or ():
            contents: object = None
            with contextlib.suppress(ValueError):  # a cell not yet filled
                contents = cell.cell_contents
            if isinstance(contents, sandbox_type):
                cell.cell_contents = renewed(contents)
        # A module-level sandbox the handler's code names (a script's global).
        found = getattr(handler, "__globals__", {})
        for name in getattr(getattr(handler, "__code__", None), "co_names", ()):
            if isinstance(found.get(name), sandbox_type):
                found[name] = renewed(found[name])
    return len(replaced)
