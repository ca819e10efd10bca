"""The flags of a canary policy, shared by ``guild canary start`` and ``guild run --canary``.

Apart from :mod:`guild.cli._canary`: ``guild run`` takes these flags on every
start, and the rollout machine (the policy's class) loads only when one is given.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..config._values import CANARY_MAX_MIN_JOBS, CANARY_MAX_P95, CANARY_MAX_SOAK, CANARY_OPTIONS
from ._args import UsageError, integer, number

if TYPE_CHECKING:
    from ..config._schema import GuildConfig
    from ..rollout._machine import CanaryPolicy


def add_policy_flags(parser: Any, prefix: str = "") -> None:
    """The flags of a :class:`~guild.CanaryPolicy` (``--soak`` …, or ``--canary-soak`` …)."""
    parser.add_argument(
        f"--{prefix}stages", type=_stages, help="shares, rising, ending at 1 (0.1,0.5,1)"
    )
    parser.add_argument(
        f"--{prefix}soak",
        type=_seconds(CANARY_MAX_SOAK),
        help=f"seconds per stage (60; at most {CANARY_MAX_SOAK:,})",
    )
    parser.add_argument(
        f"--{prefix}error-rate",
        type=_fraction,
        help="how far the canary's error rate may exceed the stable's (0.01)",
    )
    parser.add_argument(
        f"--{prefix}p95",
        type=_seconds(CANARY_MAX_P95),
        help=f"p95 seconds the canary may reach (5; at most {CANARY_MAX_P95:,})",
    )
    parser.add_argument(
        f"--{prefix}min-jobs",
        type=integer(1, CANARY_MAX_MIN_JOBS),
        help=f"canary outcomes a stage needs to be judged (20; at most {CANARY_MAX_MIN_JOBS:,})",
    )


def policy_from(
    args: argparse.Namespace, prefix: str = "", config: GuildConfig | None = None
) -> CanaryPolicy | None:
    """The policy the flags and the file's ``[canary]`` give (a flag wins over
    the file, the file over the default), or ``None`` when neither sets a field."""
    flags = {
        name: getattr(args, prefix + name)
        for name in CANARY_OPTIONS
        if getattr(args, prefix + name, None) is not None
    }
    given = {**(config.canary if config is not None else {}), **flags}
    if not given:
        return None
    # Here, not at the top: the rollout machine loads only when a policy is given.
    from ..rollout._machine import CanaryPolicy

    try:
        return CanaryPolicy(**given)
    except ValueError as exc:
        raise UsageError(f"canary policy: {exc}") from None


def _worded(check: Callable[[str], float], expected: str) -> Callable[[str], float]:
    """The shared number ``check`` (ASCII, finite, in range), its error worded as
    ``expected`` for the whole value: a policy flag says what it takes."""

    def parse(text: str) -> float:
        try:
            return check(text)
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(f"{expected}, got {text!r}") from None

    return parse


_share = _worded(number(above=0, high=1), "expected shares like 0.1,0.5,1, each in (0, 1]")


def _stages(text: str) -> tuple[float, ...]:
    try:
        return tuple(_share(part) for part in text.split(","))
    except argparse.ArgumentTypeError:
        expected = "expected shares like 0.1,0.5,1, each in (0, 1]"
        raise argparse.ArgumentTypeError(f"{expected}, got {text!r}") from None


_fraction = _worded(number(0, 1), "expected a share from 0 to 1")


def _seconds(most: int) -> Callable[[str], float]:
    """Seconds above 0 and at most ``most``: finite, so never a stage held for ever."""
    return _worded(number(above=0, high=most), f"expected seconds above 0 and at most {most:,}")
