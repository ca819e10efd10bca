"""What :class:`~guild.supervision.SupervisorPolicy` decides when a child exits,
crashes or its circuit's time comes, for the shell to carry out.

Apart from the policy because a supervisor whose children never end makes no
decision: a ``guild run`` builds these classes when it first has to.
"""

from __future__ import annotations

import attrs


@attrs.frozen
class RestartChildren:
    """Stop ``stop`` (in this order) and, after ``delay``, start ``start`` (in this order)."""

    stop: tuple[str, ...]
    start: tuple[str, ...]
    delay: float
    cause: str


@attrs.frozen
class Remove:
    """The child is done for good (exited and not to be restarted)."""

    child: str


@attrs.frozen
class OpenCircuit:
    child: str
    until: float


@attrs.frozen
class CloseCircuit:
    child: str


@attrs.frozen
class GiveUp:
    """Stop everything (reverse start order) and fail into the parent."""

    restarts: int
    period: float
    cause: str


Decision = RestartChildren | Remove | OpenCircuit | CloseCircuit | GiveUp
