"""Supervising your own tasks the OTP way: children started at init, a refused
duplicate, a child whose first start fails, and a supervisor that gives up.

Run: python examples/supervisor_otp_demo.py
"""

from __future__ import annotations

import trio

import guild

polls = 0


async def database(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    task_status.started()
    await trio.sleep_forever()


async def poller(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    global polls
    polls += 1
    task_status.started()
    await trio.sleep(0.2)
    raise ConnectionError(f"poll {polls} failed")


async def mailer(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    raise ConnectionRefusedError("smtp.example.com refused the connection")


async def main() -> None:
    supervisor = guild.Supervisor(
        "mine",
        max_restarts=2,
        period=10.0,
        backoff=guild.Backoff(initial=0.05, jitter=0.0),
        children=[
            guild.ChildSpec(name="database", start=database),
            guild.ChildSpec(name="poller", start=poller),
        ],
        on_event=lambda event: print(f"  {event.child}: {event.state}"),
    )

    async def supervise(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await supervisor.run(task_status=task_status)
        except guild.GaveUp as error:  # GaveUp itself, not a group around it
            print(f"gave up: {error}")

    async with trio.open_nursery() as nursery:
        await nursery.start(supervise)
        print("children started:", sorted(supervisor.snapshot()))
        try:
            await supervisor.start_child(guild.ChildSpec(name="database", start=mailer))
        except ValueError as error:
            print(f"refused: {error}")
        try:
            await supervisor.start_child(guild.ChildSpec(name="mailer", start=mailer))
        except ConnectionRefusedError as error:
            print(f"mailer failed its first start: {error}; not restarted")
    print(f"poller started {polls} times")


if __name__ == "__main__":
    trio.run(main)
