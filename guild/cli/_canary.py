"""``guild canary status|start|promote|pause|rollback``: canary rollouts, by hand.

Each action is one event through the rollout state machine, written with a
compare and set (see :mod:`guild.rollout._controller`), so an operator and the
canary's controller never undo each other. ``rollback`` also hands the lane's
waiting jobs back to the stable version at once, whether or not a canary runs.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from typing import Any

import trio

from ..brokers._url import open_broker
from ..config._layers import choose_env
from ..config._schema import GuildConfig
from ..rollout._controller import apply, observation
from ..rollout._lanes import base_of, lane_of
from ..rollout._machine import (
    CanaryTransitionError,
    Event,
    Pause,
    Promote,
    Rollback,
    Start,
)
from ..rollout._recorder import namespace_of
from ..rollout._store import CanaryRecord, hand_back_dead, lane_held, load, load_all, move_lane
from ._args import (
    CommandFailed,
    UsageError,
    add_broker_flags,
    queue_name,
    refuse_memory,
    repeat_broker_flags,
    stored_queue_name,
)
from ._config import add_env_flag
from ._output import EXIT_OK, print_json, table
from ._policy import add_policy_flags, policy_from


class CanaryRefused(CommandFailed):
    """The rollout's phase does not allow the action (``CanaryTransitionError``)."""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("canary", help="canary rollouts: status, start, promote, ...")
    add_broker_flags(parser)
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    status = actions.add_parser("status", help="each rollout's phase, share, figures, decisions")
    status.add_argument("queue", nargs="?", type=_rollout_queue, help="only this queue")
    start = actions.add_parser("start", help="start at the first stage (or resume a paused one)")
    start.add_argument("queue", type=_new_rollout_queue)
    add_policy_flags(start)
    start.add_argument(
        "--config",
        metavar="FILE",
        help="a guild.toml whose [canary] (and broker) apply; the flags win over it",
    )
    add_env_flag(start)
    subs = [status, start]
    for name, text in (
        ("promote", "move one stage on now"),
        ("pause", "hold the current share"),
        ("rollback", "share 0 now; the lane's jobs go back to the stable version"),
    ):
        sub = actions.add_parser(name, help=text)
        sub.add_argument("queue", type=_rollout_queue)
        subs.append(sub)
    repeat_broker_flags(*subs)
    parser.set_defaults(func=canary)


def _new_rollout_queue(text: str) -> str:
    """The queue of ``canary start``: by the rule of a new queue (:func:`queue_name`),
    since the rollout makes one, the queue's canary lane."""
    return _not_a_lane(queue_name(text))


def _rollout_queue(text: str) -> str:
    """The queue of a rollout that exists (status, promote, pause, rollback): by the
    rule of a stored queue (:func:`stored_queue_name`), so that one started before
    the length limit stays in reach."""
    return _not_a_lane(stored_queue_name(text))


def _not_a_lane(name: str) -> str:
    """``name``, if it is not itself a canary lane: a rollout of ``q@canary`` would
    route to ``q@canary@canary``, which no worker takes."""
    base = base_of(name)
    if base is not None:
        raise argparse.ArgumentTypeError(
            f"{name!r} is the canary lane of {base!r}: name the queue, {base!r}"
        )
    return name


def _event(action: str, at: float) -> Event:
    if action == "start":
        return Start(at)
    if action == "promote":
        return Promote(at)
    if action == "pause":
        return Pause(at)
    return Rollback(at, "by an operator")


def _start_config(args: argparse.Namespace) -> GuildConfig | None:
    """The ``--config`` file of ``canary start``, under ``--env`` (else ``$GUILD_ENV``)."""
    if getattr(args, "config", None) is None:
        if getattr(args, "env", None) is not None:
            raise UsageError("--env: give the guild.toml with --config")
        return None
    from ..config._load import load_config  # here: `guild run` shares this module

    env, _ = choose_env(args.env, os.environ)
    return load_config(args.config, env)


async def _act(args: argparse.Namespace) -> dict[str, Any]:
    config = _start_config(args) if args.action == "start" else None
    policy = policy_from(args, config=config) if args.action == "start" else None
    # As guild run FILE: --broker, else the file's, else $GUILD_BROKER.
    url = args.broker or (config.broker if config is not None else None)
    refuse_memory(url, f"a canary {args.action} made from the command line")

    def event(at: float, record: CanaryRecord, counts: Mapping[str, Any]) -> Event:
        return _event(args.action, at)

    # Only start makes a rollout: the other actions act on one, which a database
    # that does not exist yet cannot hold (so none is made for them).
    async with open_broker(url, create=args.action == "start") as broker:
        try:
            record, decision = await apply(
                broker, args.queue, event, policy=policy, hand_back=False
            )
        except CanaryTransitionError as exc:
            if args.action != "rollback":
                raise CanaryRefused(str(exc)) from None
            record, decision = await load(broker, args.queue), None
        moved = revived = 0
        if args.action == "rollback":
            moved = await move_lane(broker, args.queue)
            revived = await hand_back_dead(broker, args.queue)
        return {
            "queue": args.queue,
            "phase": None if record.state is None else record.state.phase.value,
            "share": record.share,
            "decision": None if decision is None else decision.to_json(),
            "moved": moved,
            "dead_requeued": revived,
        }


async def _status(args: argparse.Namespace) -> list[dict[str, Any]]:
    async with open_broker(args.broker, create=False) as opened:
        broker: Any = opened  # the Ledger and rollouts are checked by load_all
        records = await load_all(broker, None if args.queue is None else [args.queue])
        out = []
        for queue, record in sorted(records.items()):
            counts = await broker.get_counts(namespace_of(queue))
            seen = observation(broker.now(), record, counts)
            state = record.state
            out.append(
                {
                    "queue": queue,
                    "lane": lane_of(queue),
                    "phase": None if state is None else state.phase.value,
                    "stage": None if state is None else state.stage,
                    "share": record.share,
                    "since": None if state is None else state.since,
                    "policy": {
                        "stages": list(record.policy.stages),
                        "soak": record.policy.soak,
                        "error_rate": record.policy.error_rate,
                        "p95": record.policy.p95,
                        "min_jobs": record.policy.min_jobs,
                    },
                    "canary": seen.canary.to_json(),
                    "stable": seen.stable.to_json(),
                    "lane_jobs": await lane_held(broker, queue),
                    "decisions": [d.to_json() for d in record.decisions],
                }
            )
        return out


def canary(args: argparse.Namespace) -> int:
    if args.action == "status":
        found = trio.run(_status, args)
        if args.json:
            print_json(found)
            return EXIT_OK
        if not found:
            print("no canary rollouts")
            return EXIT_OK
        rows = [
            (
                r["queue"],
                r["phase"],
                f"{r['share']:.0%}",
                _figures(r["canary"]),
                _figures(r["stable"]),
                r["lane_jobs"],
            )
            for r in found
        ]
        print(table(("queue", "phase", "share", "canary", "stable", "in lane"), rows))
        for r in found:
            for d in r["decisions"][-5:]:
                print(
                    f"{r['queue']}: {d['event']} {d['from_phase']} {d['from_share']:.0%}"
                    f" -> {d['to_phase']} {d['to_share']:.0%}: {d['reason']}"
                )
        return EXIT_OK
    done = trio.run(_act, args)
    if args.json:
        print_json(done)
    else:
        line = f"{done['queue']}: {done['phase']} at {done['share']:.0%}"
        if args.action == "rollback":
            line += (
                f"; {done['moved']} waiting jobs handed back to {done['queue']},"
                f" {done['dead_requeued']} dead ones requeued there"
            )
        print(line)
    return EXIT_OK


def _figures(figures: Mapping[str, Any]) -> str:
    jobs, errors, p95 = figures["jobs"], figures["errors"], figures["p95"]
    rate = errors / jobs if jobs else 0.0
    return f"{jobs} jobs, {rate:.1%} errors, p95 {'n/a' if p95 is None else f'{p95} s'}"
