"""Which isolation the sandboxes an app's workers hold are in: for the start-up
banner and ``/health``, so an operator sees what a job's commands run under."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from ._process import Sandbox

if TYPE_CHECKING:
    from .._app import Guild


def held_isolation(app: Guild) -> str | None:
    """The isolation of the sandboxes the app's workers hold (``"bwrap"``,
    ``"kernel"``, ``"none"``; several joined by ``", "``), or ``None`` if none holds one.

    A worker holds a sandbox when its handler is a method of an object with a
    :class:`guild.Sandbox` attribute (``guild_workers``' task worker) or a function
    that closes over one.
    """
    found: set[str] = set()
    for spec in app.specs.values():
        handler: Any = spec.handler
        owner = getattr(handler, "__self__", None)
        held = list(vars(owner).values()) if hasattr(owner, "__dict__") else []
        for cell in getattr(handler, "__closure__", None) or ():
            with contextlib.suppress(ValueError):  # a cell not yet filled
                held.append(cell.cell_contents)
        found |= {value.isolation for value in held if isinstance(value, Sandbox)}
    return ", ".join(sorted(found)) if found else None
