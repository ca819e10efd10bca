"""``guild migrate``: list (``--dry-run``) or apply the pending schema steps of a
SQLite file, or report the key layout version of a Redis.

SQLite: a backup next to the file first (named in the output), then every step
and the checks in one transaction (see ``guild.brokers._sqlite_migrate``). A
failed check exits 1 with the file as it was; nothing pending takes no backup.
"""

from __future__ import annotations

import argparse
from typing import Any

import attrs

from .._errors import MigrationFailed, UnknownBrokerURL
from ..brokers._redis_layout import LAYOUT_VERSION
from ..brokers._sqlite_migrate import MigrationReport
from ..brokers._sqlite_migrate import migrate as migrate_sqlite
from ..brokers._url import (
    broker_url_from_env,
    check_broker_url,
    display_url,
    redis_client_url,
    sqlite_path,
)
from ._args import CommandFailed, broker_url
from ._output import EXIT_OK, print_json


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "migrate",
        help="bring a broker's stored schema up to date (backup, apply, verify)",
        description="List or apply the pending schema migrations of a SQLite broker"
        " (after a backup next to the file), or report a Redis broker's key layout version.",
    )
    parser.add_argument(
        "--broker",
        type=broker_url,
        help="broker URL (default: $GUILD_BROKER, else sqlite:guild.db)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="list the pending steps; change nothing"
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=migrate)


async def _redis_report(url: str) -> MigrationReport:
    from ..brokers.redis import RedisBroker

    shown = display_url(url)
    broker = await RedisBroker.open(redis_client_url(url))  # as open_broker gives it
    try:
        found = await broker.layout_version(shown)
    finally:
        await broker.aclose()
    return MigrationReport(
        broker=shown, kind="redis key layout", found=found, target=LAYOUT_VERSION, pending=()
    )


def migrate(args: argparse.Namespace) -> int:
    url = broker_url_from_env(args.broker)
    scheme = check_broker_url(url)
    if scheme == "memory":
        raise UnknownBrokerURL(url, "memory:// stores nothing: there is nothing to migrate")
    if scheme == "sqlite":
        try:
            report = migrate_sqlite(sqlite_path(url), dry_run=args.dry_run)
        except MigrationFailed as exc:
            raise CommandFailed(str(exc)) from exc
    else:
        import trio

        report = trio.run(_redis_report, url)
    if args.json:
        print_json({**attrs.asdict(report), "dry_run": args.dry_run})
    else:
        print(render(report, dry_run=args.dry_run))
    return EXIT_OK


def _jobs(report: MigrationReport) -> str:
    by_queue = {k[len("jobs ") :]: v for k, v in report.census.items() if k.startswith("jobs ")}
    total = sum(sum(statuses.values()) for statuses in by_queue.values())
    jobs = f"{total:,} job{'' if total == 1 else 's'}"
    return f"{jobs} in {len(by_queue)} queue{'' if len(by_queue) == 1 else 's'}"


def render(report: MigrationReport, *, dry_run: bool) -> str:
    """The human answer: what was found, what is pending or was done, the backup."""
    head = f"{report.kind} of {report.broker}"
    if not report.pending:
        return (
            f"{head}: version {report.found}, the current one: nothing to migrate (no backup taken)"
        )
    steps = [f"  {step.version}: " + "; ".join(step.does) for step in report.pending]
    if dry_run:
        return "\n".join(
            [
                f"{head}: version {report.found}, this guild needs {report.target}",
                f"pending ({len(steps)} step{'' if len(steps) == 1 else 's'}; dry run,"
                " nothing changed):",
                *steps,
                f"holds {_jobs(report)}",
            ]
        )
    return "\n".join(
        [
            f"{head}: migrated from version {report.found} to {report.target}",
            f"backup: {report.backup}",
            "applied:",
            *steps,
            f"verified: {', '.join(report.checks)} ({_jobs(report)}, before and after)",
        ]
    )
