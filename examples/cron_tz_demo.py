"""Periodic jobs on a zone's wall clock, across both daylight-saving changes.

``guild.Cron("30 2 * * *", tz="Europe/Paris")`` fires at 02:30 Paris time. On
the last Sunday of March the clock jumps from 02:00 to 03:00, so 02:30 never
shows: it fires once, at 03:00. On the last Sunday of October 02:30 shows twice:
it fires once, the first time. Then an app runs a Paris schedule through the
night of the March change on a mock clock (no waiting), and its worker prints
the wall time of each job the scheduler enqueued: ``*/30 1-3 * * *`` runs at
01:00 and 01:30, then 02:00, 02:30 and 03:00 are one job at 03:00, then 03:30.

    python examples/cron_tz_demo.py
"""

from __future__ import annotations

import datetime as dt
import zoneinfo

import trio
import trio.testing

import guild

PARIS = zoneinfo.ZoneInfo("Europe/Paris")


def show(instant: dt.datetime) -> str:
    local = instant.astimezone(PARIS)
    return f"{local:%Y-%m-%d %H:%M} {local.tzname()} ({instant:%H:%M} UTC)"


def next_fires(cron: guild.Cron, after: dt.datetime, count: int) -> list[dt.datetime]:
    fires = []
    for _ in range(count):
        after = cron.next_fire(after)
        fires.append(after)
    return fires


nightly = guild.Cron("30 2 * * *", tz="Europe/Paris")
print("30 2 * * * in Europe/Paris, around the spring change:")
for fire in next_fires(nightly, dt.datetime(2026, 3, 27, 12, tzinfo=dt.UTC), 3):
    print(f"  {show(fire)}")
print("... and around the autumn change:")
for fire in next_fires(nightly, dt.datetime(2026, 10, 24, 12, tzinfo=dt.UTC), 3):
    print(f"  {show(fire)}")

# The night of 2026-03-29, from 00:50 Paris time (23:50 UTC the day before).
START = dt.datetime(2026, 3, 28, 23, 50, tzinfo=dt.UTC).timestamp()
app = guild.Guild("night", wall_clock=lambda: START + trio.current_time())
app.periodic(guild.Cron("*/30 1-3 * * *", tz="Europe/Paris"), "rounds", name="rounds")
seen: list[str] = []
done = trio.Event()


@app.worker("rounds")
async def rounds(job: guild.Job) -> None:
    now = dt.datetime.fromtimestamp(START + trio.current_time(), dt.UTC)
    seen.append(show(now))
    if len(seen) == 4:
        done.set()


async def main() -> None:
    async with app.open(guild.MemoryBroker()):
        await done.wait()
    print("*/30 1-3 * * * in Europe/Paris, run through the night of 2026-03-29:")
    for line in seen:
        print(f"  job ran at {line}")


trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
