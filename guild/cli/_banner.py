"""What ``guild run`` says when it starts: where it is, and what looks wrong.

Pure: :func:`banner` gathers the facts into a dict, :func:`render` makes the
human text, :func:`unserved_schedules` finds periodic jobs no worker will take.
The command prints them; the tests check them without running anything.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from .._version import __version__
from ..sandbox._held import held_isolation, held_unenforced

if TYPE_CHECKING:
    # Types only: ``guild status`` and ``guild --help`` load this module without the app.
    from .._app import Guild, Periodic


def banner(
    app: Guild,
    *,
    broker: str,
    http: tuple[str, int] | None,
    processes: int,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """The start-up facts, JSON-ready.

    Args:
        broker: the broker URL as it may be shown (see ``display_url``).
        http: the address the HTTP endpoints listen on, or ``None``.
        processes: worker processes (each runs every worker below).
        now: the current time (aware); given, the facts list each periodic
            job with its next fire, in the cron's own time zone.
    """
    facts: dict[str, Any] = {
        "event": "guild_started",
        "version": __version__,
        "app": app.name,
        "broker": broker,
        "processes": processes,
        "queues": [
            {"queue": spec.queue, "worker": name, "concurrency": spec.concurrency}
            for name, spec in sorted(app.specs.items())
        ],
        "http": None if http is None else _address(*http),
    }
    isolation = held_isolation(app)
    if isolation is not None:
        facts["sandbox"] = isolation
        unenforced = held_unenforced(app)
        if unenforced:
            facts["sandbox_unenforced"] = unenforced
    if now is not None and app.schedules:
        facts["periodic"] = [entry.to_json(now) for _, entry in sorted(app.schedules.items())]
    return facts


def in_fleet(
    facts: dict[str, Any], *, processes: int, http: tuple[str, int] | None
) -> dict[str, Any]:
    """One child's facts (it runs as one process) as the parent of ``processes``
    children announces them, with the address the parent serves."""
    return {**facts, "processes": processes, "http": None if http is None else _address(*http)}


def _address(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def render(facts: dict[str, Any]) -> str:
    """The banner as a few aligned lines for a person."""
    queues = ", ".join(
        f"{q['queue']} (concurrency {q['concurrency']}"
        + (f", worker {q['worker']})" if q["worker"] != q["queue"] else ")")
        for q in facts["queues"]
    )
    processes = facts["processes"]
    lines = [
        f"guild {facts['version']} running app {facts['app']!r}"
        + (f" in {processes} processes" if processes != 1 else ""),
        f"  broker:  {facts['broker']}",
        f"  queues:  {queues or 'none (the app has no workers)'}",
        f"  http:    {facts['http'] or 'off (--http HOST:PORT to serve /health, /metrics)'}",
    ]
    if "sandbox" in facts:
        lines.append(f"  sandbox: {facts['sandbox']} isolation")
        if facts.get("sandbox_unenforced"):
            missing = ", ".join(facts["sandbox_unenforced"])
            lines.append(f"  sandbox: budgets not enforced on this host: {missing}")
    for number, entry in enumerate(facts.get("periodic", [])):
        when, fire, zone = schedule_words(entry)
        lines.append(
            ("  periodic: " if number == 0 else " " * 12)
            + f"{entry['name']} ({when}) to {entry['queue']}, next {fire:%Y-%m-%d %H:%M} {zone}"
        )
    return "\n".join(lines)


def schedule_words(entry: dict[str, Any]) -> tuple[str, dt.datetime, str]:
    """A :meth:`~guild.Periodic.to_json` entry's schedule in words (``every 60 s``,
    ``cron '0 9 * * *' Europe/Paris``), its next fire, and that fire's zone label."""
    when = (
        f"cron {entry['cron']!r} {entry['tz']}"
        if "cron" in entry
        else f"every {entry['seconds']:g} s"
    )
    fire = dt.datetime.fromisoformat(entry["next"])
    return when, fire, _zone_label(fire, entry.get("tz", "UTC"))


def _zone_label(fire: dt.datetime, tz: str) -> str:
    # The offset, not a zone abbreviation: "CET" and "IST" each name several zones.
    if tz == "UTC":
        return "UTC"
    offset = fire.utcoffset() or dt.timedelta(0)
    hours, minutes = divmod(abs(int(offset.total_seconds())) // 60, 60)
    return f"{'-' if offset < dt.timedelta(0) else '+'}{hours:02}:{minutes:02}"


def unserved_schedules(app: Guild) -> list[Periodic]:
    """Periodic jobs whose queue no worker of ``app`` takes from: they would pile up."""
    served = {spec.queue for spec in app.specs.values()}
    return [entry for _, entry in sorted(app.schedules.items()) if entry.queue not in served]


def unserved_warning(entry: Periodic) -> str:
    return (
        f"periodic job {entry.name!r} goes to queue {entry.queue!r},"
        " which no worker of this app serves: its jobs will wait for another app"
    )
