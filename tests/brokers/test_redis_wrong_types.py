"""A key under guild's prefix that another program wrote with another type (a
string where a queue's stream is) stays one queue's problem: ``stats`` counts the
other queues and says which key of which queue it could not read; an enqueue, a
claim, a worker's start on that queue fail naming the key and what it holds.

The keys are overwritten with raw Redis commands over a socket, as another
program would; the expected texts and counts are written out here.
"""

from __future__ import annotations

import argparse
import functools
import json
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
import trio
import trio_websocket

import guild
from guild import Job, QueueStats
from guild.brokers._redis_errors import WrongTypeError
from guild.cli import _status, _top
from guild.observability import Health, ObservabilityApp, Status, observe, serve_http
from guild.observability._dashboard import state as dashboard_state
from guild.rollout._machine import CanaryPhase, CanaryState
from guild.rollout._store import CanaryRecord, hand_back_dead, move_lane, save
from tests._poll import until
from tests._redis_server import RedisServer, redis_command, running_redis_server
from tests.cli.conftest import run_guild

HINT = "(another program's key under guild's prefix?)"
READY_IS_A_STRING = f"the key guild:q:bad:ready holds a string, not a stream {HINT}"


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    # One server a test: each overwrites keys under the default prefix.
    with running_redis_server() as server:
        yield server


async def _two_queues(broker: guild.Broker, server: RedisServer) -> None:
    """``good``: 3 ready, 1 delayed, 1 done; ``bad``: 2 jobs, then its stream
    replaced by a string."""
    await broker.enqueue([Job(queue="good", payload=n) for n in range(4)])
    await broker.enqueue([Job(queue="good", payload=9, not_before=broker.now() + 3600)])
    (taken,) = await broker.claim("good", consumer="c", limit=1, lease=30)
    await broker.ack([(taken, b"1")])
    await broker.enqueue([Job(queue="bad", payload=n) for n in range(2)])
    assert redis_command(server, "DEL", "guild:q:bad:ready") == b":1\r\n"
    assert redis_command(server, "SET", "guild:q:bad:ready", "junk") == b"+OK\r\n"


GOOD = QueueStats(queue="good", ready=3, delayed=1, in_flight=0, done=1, dead=0, cancelled=0)
BAD = QueueStats(queue="bad", broken=READY_IS_A_STRING)


async def test_stats_counts_the_other_queues_and_names_the_broken_one(
    redis_server: RedisServer,
) -> None:
    with trio.fail_after(20):
        async with guild.open_broker(redis_server.url) as broker:
            await _two_queues(broker, redis_server)
            assert await broker.stats() == {"good": GOOD, "bad": BAD}
            assert await broker.stats(["bad", "good"]) == {"bad": BAD, "good": GOOD}
            # A zset of the queue's, made a hash: named with its own type.
            assert redis_command(redis_server, "HSET", "guild:q:good:dead", "f", "v") == b":1\r\n"
            assert await broker.stats(["good"]) == {
                "good": QueueStats(
                    queue="good",
                    broken=f"the key guild:q:good:dead holds a hash, not a zset {HINT}",
                )
            }


@pytest.mark.parametrize(
    ("key", "says"),
    [
        ("guild:queues", f"the key guild:queues holds a string, not a set {HINT}"),
        ("guild:done", f"the key guild:done holds a string, not a hash {HINT}"),
    ],
)
async def test_stats_fails_naming_a_shared_key_of_another_type(
    redis_server: RedisServer, key: str, says: str
) -> None:
    with trio.fail_after(20):
        async with guild.open_broker(redis_server.url) as broker:
            await broker.enqueue([Job(queue="good", payload=1)])
            # guild:done exists once a job is done; guild:queues is written over.
            assert redis_command(redis_server, "SET", key, "banana") == b"+OK\r\n"
            with pytest.raises(WrongTypeError) as refused:
                await broker.stats()
            assert str(refused.value) == f"redis: stats: {says}"


async def test_enqueue_and_claim_on_the_broken_queue_name_the_key(
    redis_server: RedisServer,
) -> None:
    with trio.fail_after(20):
        async with guild.open_broker(redis_server.url) as broker:
            # This broker makes the group of 'bad' before its key is written over.
            assert await broker.claim("bad", consumer="c", limit=0, lease=30) == []
            await _two_queues(broker, redis_server)
            with pytest.raises(WrongTypeError) as refused:
                await broker.enqueue([Job(queue="good", payload=5), Job(queue="bad", payload=1)])
            assert str(refused.value) == f"redis: enqueue to 'bad': {READY_IS_A_STRING}"
            # The group is made: the claim script meets the key.
            with pytest.raises(WrongTypeError) as refused:
                await broker.claim("bad", consumer="c", limit=1, lease=30)
            assert str(refused.value) == f"redis: claim from 'bad': {READY_IS_A_STRING}"
            (other,) = await broker.enqueue([Job(queue="good", payload=6)])
            assert other.queue == "good"
        # A new process's broker makes the group first.
        async with guild.open_broker(redis_server.url) as fresh:
            with pytest.raises(WrongTypeError) as refused:
                await fresh.claim("bad", consumer="c", limit=1, lease=30)
            assert str(refused.value) == f"redis: create the group of 'bad': {READY_IS_A_STRING}"


def _checks(health: Health) -> dict[str, tuple[Status, str]]:
    return {c.name: (c.status, c.detail) for c in health.checks}


def _strict_app(name: str, **options: Any) -> guild.Guild:
    """An app whose supervisor gives up at its second crash within a minute: a
    worker restarted for the broken queue would take it down at once."""
    return guild.Guild(
        name,
        **options,
        supervision=guild.SupervisorOptions(
            max_restarts=1, period=60.0, backoff=guild.Backoff(initial=0.01, maximum=0.01)
        ),
    )


async def test_a_worker_on_the_broken_queue_waits_naming_the_key_and_resumes_once_repaired(
    redis_server: RedisServer,
) -> None:
    app = _strict_app("wrong-type")
    ran: dict[str, list[object]] = {"good": [], "bad": []}

    @app.worker("good", concurrency=2)
    async def good(job: Job) -> object:
        ran["good"].append(job.payload)
        return job.payload

    @app.worker("bad")
    async def bad(job: Job) -> object:
        ran["bad"].append(job.payload)
        return job.payload

    site = ObservabilityApp(app, observe(app, logs=False))
    with trio.fail_after(60), structlog.testing.capture_logs() as logs:
        async with guild.open_broker(redis_server.url) as direct:
            await _two_queues(direct, redis_server)
            async with app.open(redis_server.url):
                # The good queue's 3 ready jobs, and 5 more while the app runs.
                more = await direct.enqueue([Job(queue="good", payload=10 + n) for n in range(5)])
                for job in more:
                    result = await direct.get_result(job.id, wait=30)
                    assert result is not None and result.value == job.payload
                await until(lambda: len(ran["good"]) == 8)
                await until(lambda: app.workers()["bad"].broker_error is not None)
                said = app.workers()["bad"].broker_error
                assert said is not None and READY_IS_A_STRING in said
                # Claims keep failing for longer than the restart budget would
                # allow: the app runs on, no worker restarted.
                await trio.sleep(1.5)
                health, _ = await site.health()
                checks = _checks(health)
                status, detail = checks["worker:bad:broker"]
                assert status is Status.UNHEALTHY and READY_IS_A_STRING in detail
                assert checks["worker:bad:state"][0] is Status.HEALTHY
                assert checks["worker:good:broker"] == (Status.HEALTHY, "")
                assert checks["queue:bad:length"] == (Status.DEGRADED, READY_IS_A_STRING)
                assert {n: w.restarts for n, w in health.workers.items()} == {"good": 0, "bad": 0}
                assert app.workers()["good"].broker_error is None
                # Repaired: the string goes, the group is made again, new jobs run.
                assert redis_command(redis_server, "DEL", "guild:q:bad:ready") == b":1\r\n"
                (late,) = await direct.enqueue([Job(queue="bad", payload="after")])
                result = await direct.get_result(late.id, wait=30)
                assert result is not None and result.value == "after"
                assert ran["bad"] == ["after"]  # the two overwritten with the stream are gone
                await until(lambda: app.workers()["bad"].broker_error is None)
                health, _ = await site.health()
                assert _checks(health)["worker:bad:broker"] == (Status.HEALTHY, "")
    damaged = [e for e in logs if e["event"] == "broker_data_damaged"]
    assert [(e["worker"], e["during"]) for e in damaged] == [("bad", "claim")]
    assert READY_IS_A_STRING in damaged[0]["error"]


async def test_an_ack_on_a_damaged_shared_key_keeps_the_job_held_until_repaired(
    redis_server: RedisServer,
) -> None:
    app = _strict_app("wrong-type-ack")
    release = trio.Event()
    ran: list[object] = []

    @app.worker("good", concurrency=1)
    async def good(job: Job) -> object:
        ran.append(job.payload)
        await release.wait()
        return job.payload

    done_is_a_string = f"the key guild:done holds a string, not a hash {HINT}"
    with trio.fail_after(60):
        async with guild.open_broker(redis_server.url) as direct, app.open(redis_server.url):
            (job,) = await direct.enqueue([Job(queue="good", payload="held")])
            await until(lambda: ran == ["held"])
            # Where every ack counts its queue's done jobs: no job is done yet.
            assert redis_command(redis_server, "SET", "guild:done", "junk") == b"+OK\r\n"
            release.set()
            await until(lambda: app.workers()["good"].broker_error is not None)
            assert app.workers()["good"].broker_error == (
                f"WrongTypeError: redis: ack: {done_is_a_string}"
            )
            await trio.sleep(1.5)  # acks tried again and again, the job still held
            stats = app.workers()["good"]
            assert (stats.held, stats.done, stats.broker_error is not None) == (1, 1, True)
            assert await direct.get_result(job.id) is None
            assert redis_command(redis_server, "DEL", "guild:done") == b":1\r\n"
            result = await direct.get_result(job.id, wait=30)
            assert result is not None and result.value == "held"
            await until(lambda: app.workers()["good"].broker_error is None)
            assert app.workers()["good"].held == 0
    assert ran == ["held"]  # ran once: its ack was kept, not dropped nor the job rerun


async def test_a_queue_damaged_under_a_running_worker_runs_again_once_repaired(
    redis_server: RedisServer,
) -> None:
    app = _strict_app("wrong-type-later")
    ran: list[object] = []

    @app.worker("bad", concurrency=1, claim_wait=0.2)
    async def bad(job: Job) -> object:
        ran.append(job.payload)
        return job.payload

    with trio.fail_after(60):
        async with guild.open_broker(redis_server.url) as direct, app.open(redis_server.url):
            (first,) = await direct.enqueue([Job(queue="bad", payload="first")])
            assert await direct.get_result(first.id, wait=30) is not None
            # The app's broker made the group; its stream is now written over.
            assert redis_command(redis_server, "DEL", "guild:q:bad:ready") == b":1\r\n"
            assert redis_command(redis_server, "SET", "guild:q:bad:ready", "junk") == b"+OK\r\n"
            await until(lambda: app.workers()["bad"].broker_error is not None)
            assert app.workers()["bad"].broker_error == (
                f"WrongTypeError: redis: claim from 'bad': {READY_IS_A_STRING}"
            )
            with pytest.raises(WrongTypeError):
                await direct.enqueue([Job(queue="bad", payload="refused")])
            await trio.sleep(1.5)
            assert redis_command(redis_server, "DEL", "guild:q:bad:ready") == b":1\r\n"
            (late,) = await direct.enqueue([Job(queue="bad", payload="after")])
            result = await direct.get_result(late.id, wait=30)
            assert result is not None and result.value == "after"
            await until(lambda: app.workers()["bad"].broker_error is None)
    assert ran == ["first", "after"]


async def test_a_schedule_and_a_workflow_step_on_the_broken_queue_leave_the_app_running(
    redis_server: RedisServer,
) -> None:
    app = _strict_app("wrong-type-services", workflow_poll=0.2)
    app.periodic(0.2, "good", "tick", name="good-ticks")
    app.periodic(0.2, "bad", "tick", name="bad-ticks")
    ran: dict[str, list[str]] = {"good": [], "bad": []}

    @app.worker("good", concurrency=4)
    async def good(job: Job) -> object:
        ran["good"].append("step" if job.payload != "tick" else "tick")
        return 1

    @app.worker("bad", concurrency=4)
    async def bad(job: Job) -> object:
        ran["bad"].append("step" if job.payload != "tick" else "tick")
        return 2

    # Step a runs on 'good'; b, after it, is enqueued on 'bad' by the coordinator.
    workflow = guild.Workflow([guild.Step("a", "good"), guild.Step("b", "bad", after="a")])
    with trio.fail_after(60), structlog.testing.capture_logs() as logs:
        async with guild.open_broker(redis_server.url) as direct:
            await _two_queues(direct, redis_server)
            async with app.open(redis_server.url):
                workflow_id = await app.submit(workflow)
                await until(lambda: "step" in ran["good"] and ran["good"].count("tick") >= 6)
                await until(lambda: any(e["event"] == "workflow_broker_data_damaged" for e in logs))
                (shown,) = (p for p in app.upcoming() if p["name"] == "bad-ticks")
                assert shown["error"] == (
                    f"WrongTypeError: redis: enqueue to 'bad': {READY_IS_A_STRING}"
                )
                (fine,) = (p for p in app.upcoming() if p["name"] == "good-ticks")
                assert "error" not in fine
                assert (await app.workflow(workflow_id)).step("b").state != "done"
                assert ran["bad"] == []
                # Repaired: b is enqueued by the next sweep, and the ticks go through.
                assert redis_command(redis_server, "DEL", "guild:q:bad:ready") == b":1\r\n"
                view = await app.workflow(workflow_id, wait=30)
                assert view.status == "done", view
                await until(lambda: "tick" in ran["bad"])
                await until(lambda: all("error" not in p for p in app.upcoming()))
    events = [e["event"] for e in logs]
    assert events.count("periodic_enqueue_failed") == 1
    assert events.count("workflow_broker_data_damaged") == 1
    assert "workflow_drive_failed" not in events
    (failed,) = (e for e in logs if e["event"] == "periodic_enqueue_failed")
    assert (failed["schedule"], failed["queue"]) == ("bad-ticks", "bad")
    (damaged,) = (e for e in logs if e["event"] == "workflow_broker_data_damaged")
    assert damaged["error"] == f"redis: enqueue to 'bad': {READY_IS_A_STRING}"


async def test_guild_status_and_the_dashboard_show_the_broken_queue_not_zeros(
    redis_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    app = _strict_app("wrong-type-status")
    app.periodic(0.2, "bad", "tick", name="bad-ticks")

    @app.worker("bad")
    async def bad(job: Job) -> None:
        return None

    @app.worker("good")
    async def good(job: Job) -> None:
        return None

    site = ObservabilityApp(app, observe(app, logs=False))
    with trio.fail_after(60), structlog.testing.capture_logs():  # stdout is the CLI's
        async with guild.open_broker(redis_server.url) as direct:
            await _two_queues(direct, redis_server)
        async with trio.open_nursery() as nursery, app.open(redis_server.url):
            port = await nursery.start(functools.partial(serve_http, app, port=0))
            await until(lambda: app.workers()["bad"].broker_error is not None)
            await until(lambda: any("error" in p for p in app.upcoming()))
            await until(lambda: (app.workers()["good"].done, app.workers()["good"].held) == (3, 0))
            url = f"http://127.0.0.1:{port}"
            assert await _status.status(_status_args(url)) == 2  # unhealthy
            lines = capsys.readouterr().out.splitlines()
            at = lines.index("queue  ready  delayed  in_flight  dead")
            assert lines[at + 1 : at + 3] == [
                f"bad        -        -          -     -  broken: {READY_IS_A_STRING}",
                "good       0        1          0     0",
            ]
            (ticks,) = (line for line in lines if line.startswith("bad-ticks"))
            assert ticks.endswith(
                f"  failing: WrongTypeError: redis: enqueue to 'bad': {READY_IS_A_STRING}"
            )
            (check,) = (line for line in lines if "worker:bad:broker" in line)
            assert READY_IS_A_STRING in check
            # The scheduler is a service: no worker row, no "not running" check.
            workers = lines[lines.index("") + 2 : at - 1]
            assert [row.split()[0] for row in workers] == ["bad", "good"]
            assert not [line for line in lines if "worker:periodic" in line]
            shown = await dashboard_state(site)
            assert shown["queues"]["bad"]["broken"] == READY_IS_A_STRING
            assert READY_IS_A_STRING in shown["workers"]["bad"]["broker_error"]
            # guild top: the reason after the worker's row, from the hello, gone
            # with the worker_broker event of the repair.
            view = _top.TopView()
            events = url.replace("http", "ws") + "/events"
            async with trio_websocket.open_websocket_url(events) as ws:
                for event in json.loads(await ws.get_message()):
                    view.apply(event)
                (row,) = (line for line in view.frame(1.0).splitlines() if line.startswith("bad"))
                assert row.endswith(
                    f"  broker: WrongTypeError: redis: create the group of 'bad': {READY_IS_A_STRING}"
                )
                assert redis_command(redis_server, "DEL", "guild:q:bad:ready") == b":1\r\n"
                repaired = False
                while not repaired:
                    for event in json.loads(await ws.get_message()):
                        view.apply(event)
                        repaired = repaired or (
                            event["type"] == "worker_broker"
                            and (event["worker"], event["error"]) == ("bad", None)
                        )
            (row,) = (line for line in view.frame(1.0).splitlines() if line.startswith("bad"))
            assert "broker:" not in row
            nursery.cancel_scope.cancel()


def _status_args(url: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="guild")
    _status.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["status", "--url", url])


async def test_the_cli_prints_the_broken_queue_in_one_line_and_exits_1(
    redis_server: RedisServer,
) -> None:
    async with guild.open_broker(redis_server.url) as broker:
        await _two_queues(broker, redis_server)
    shown = await trio.to_thread.run_sync(lambda: run_guild("stats", "--broker", redis_server.url))
    assert shown.returncode == 1, shown.stderr
    assert shown.stdout.splitlines() == [
        "queue  ready  delayed  in_flight  done  dead  cancelled",
        f"bad        -        -          -     -     -          -  broken: {READY_IS_A_STRING}",
        "good       3        1          0     1     0          0",
    ]
    as_json = await trio.to_thread.run_sync(
        lambda: run_guild("stats", "--json", "--broker", redis_server.url)
    )
    assert as_json.returncode == 1, as_json.stderr
    assert as_json.stdout == (
        '{"bad": {"broken": "' + READY_IS_A_STRING + '", "cancelled": 0, "dead": 0,'
        ' "delayed": 0, "done": 0, "in_flight": 0, "queue": "bad", "ready": 0},'
        ' "good": {"broken": null, "cancelled": 0, "dead": 0, "delayed": 1, "done": 1,'
        ' "in_flight": 0, "queue": "good", "ready": 3}}\n'
    )


async def test_an_ack_that_meets_a_damaged_queue_key_changes_nothing_and_counts_once(
    redis_server: RedisServer,
) -> None:
    # A job is done whoever finishes it: an ack of jobs made ready again (here
    # released; a lease that ran out does the same) drops their new stream
    # entries. The ack script counted done jobs before that write, so a stream
    # of another type left the count raised by each try: 2 jobs counted 6 times.
    stream_is_a_string = f"the key guild:q:good:ready holds a string, not a stream {HINT}"
    with trio.fail_after(20):
        async with guild.open_broker(redis_server.url) as broker:
            await broker.enqueue([Job(queue="good", payload=n) for n in range(2)])
            taken = await broker.claim("good", consumer="c", limit=2, lease=30)
            assert len(taken) == 2
            await broker.release(taken)
            assert redis_command(redis_server, "DEL", "guild:q:good:ready") == b":1\r\n"
            assert redis_command(redis_server, "SET", "guild:q:good:ready", "junk") == b"+OK\r\n"
            for _ in range(3):
                with pytest.raises(WrongTypeError) as refused:
                    await broker.ack([(d, b"1") for d in taken])
                assert str(refused.value) == f"redis: ack jobs of 'good': {stream_is_a_string}"
            # Nothing was written: no count, no result, both jobs still ready.
            assert redis_command(redis_server, "HGET", "guild:done", "good") == b"$-1\r\n"
            for delivery in taken:
                assert await broker.get_result(delivery.job.id) is None
                key = f"guild:job:{delivery.job.id}"
                assert redis_command(redis_server, "HGET", key, "status") == b"$5\r\nready\r\n"
            assert redis_command(redis_server, "DEL", "guild:q:good:ready") == b":1\r\n"
            await broker.ack([(d, b"1") for d in taken])
            assert redis_command(redis_server, "HGET", "guild:done", "good") == b"$1\r\n2\r\n"
            for delivery in taken:
                result = await broker.get_result(delivery.job.id)
                assert result is not None and result.value == 1


async def _retry_now(broker: guild.Broker, delivery: guild.Delivery) -> None:
    await broker.retry(delivery, at=broker.now(), error="boom")


async def _dead_letter(broker: guild.Broker, delivery: guild.Delivery) -> None:
    await broker.dead(delivery, error="boom")


async def _hand_back(broker: guild.Broker, delivery: guild.Delivery) -> None:
    await broker.release([delivery])


@pytest.mark.parametrize(
    ("end", "verb", "status_after"),
    [
        (_retry_now, "retry a job of", b"ready"),
        (_dead_letter, "dead-letter a job of", b"dead"),
        (_hand_back, "hand back jobs of", b"ready"),
    ],
)
async def test_a_run_ended_on_a_damaged_queue_stays_held_until_repaired(
    redis_server: RedisServer, end: Any, verb: str, status_after: bytes
) -> None:
    # A retry took the job out of its leases, then failed to add it to the
    # stream, a string now: in flight, held by nobody, in no set a sweep reads.
    stream_is_a_string = f"the key guild:q:good:ready holds a string, not a stream {HINT}"
    with trio.fail_after(20):
        async with guild.open_broker(redis_server.url) as broker:
            await broker.enqueue([Job(queue="good", payload="x")])
            (held,) = await broker.claim("good", consumer="c", limit=1, lease=30)
            key = f"guild:job:{held.job.id}"
            assert redis_command(redis_server, "SET", "guild:q:good:ready", "junk") == b"+OK\r\n"
            with pytest.raises(WrongTypeError) as refused:
                await end(broker, held)
            assert str(refused.value) == f"redis: {verb} 'good': {stream_is_a_string}"
            assert redis_command(redis_server, "HGET", key, "status") == b"$9\r\nin_flight\r\n"
            assert redis_command(redis_server, "HGET", key, "error") in (b"$-1\r\n", b"$0\r\n\r\n")
            assert redis_command(redis_server, "ZCARD", "guild:q:good:leases") == b":1\r\n"
            assert redis_command(redis_server, "DEL", "guild:q:good:ready") == b":1\r\n"
            await end(broker, held)
            status = redis_command(redis_server, "HGET", key, "status")
            assert status == b"$%d\r\n%s\r\n" % (len(status_after), status_after)
            assert redis_command(redis_server, "ZCARD", "guild:q:good:leases") == b":0\r\n"


def _bulk(value: str) -> bytes:
    """A bulk string reply as Redis sends it."""
    return b"$%d\r\n%s\r\n" % (len(value.encode()), value.encode())


def _status_of(server: RedisServer, job_id: str) -> bytes:
    return redis_command(server, "HGET", f"guild:job:{job_id}", "status")


def _expire_lease(server: RedisServer, job_id: str) -> None:
    """The job's lease ended long ago, as the claim sweep reads leases."""
    assert redis_command(server, "HSET", f"guild:job:{job_id}", "lease_expires", "1") == b":0\r\n"
    assert redis_command(server, "ZADD", "guild:q:good:leases", "1", job_id) == b":0\r\n"


@pytest.mark.parametrize(
    ("damaged", "max_attempts", "cancel", "says", "after"),
    [
        # Back to ready: out of its lease, then the XADD failed.
        (
            "guild:q:good:ready",
            3,
            False,
            f"redis: claim from 'good': the key guild:q:good:ready holds a string, not a stream {HINT}",
            "in_flight",
        ),
        # Its last attempt: marked dead and out of its lease, then the ZADD failed.
        (
            "guild:q:good:dead",
            1,
            False,
            f"redis: claim from 'good': the key guild:q:good:dead holds a string, not a zset {HINT}",
            "dead",
        ),
        # A cancel request: marked cancelled, then the count failed (no result).
        (
            "guild:cancelled",
            3,
            True,
            f"redis: claim from: the key guild:cancelled holds a string, not a hash {HINT}",
            "cancelled",
        ),
    ],
)
async def test_a_claim_whose_lease_sweep_meets_a_damaged_key_leaves_the_job_under_its_lease(
    redis_server: RedisServer,
    damaged: str,
    max_attempts: int,
    cancel: bool,
    says: str,
    after: str,
) -> None:
    # The sweep took an expired job out of the leases first: on a damaged key the
    # claim failed with the job in flight under no lease, found by no later sweep.
    with trio.fail_after(20):
        async with guild.open_broker(redis_server.url) as broker:
            await broker.enqueue([Job(queue="good", payload="x", max_attempts=max_attempts)])
            (held,) = await broker.claim("good", consumer="c", limit=1, lease=30)
            job_id = held.job.id
            if cancel:
                assert await broker.cancel([job_id]) == [job_id]  # running: a request
            _expire_lease(redis_server, job_id)
            assert redis_command(redis_server, "SET", damaged, "junk") == b"+OK\r\n"
            for _ in range(2):
                with pytest.raises(WrongTypeError) as refused:
                    await broker.claim("good", consumer="c", limit=1, lease=30)
                assert str(refused.value) == says
            assert _status_of(redis_server, job_id) == b"$9\r\nin_flight\r\n"
            assert redis_command(redis_server, "ZSCORE", "guild:q:good:leases", job_id) == (
                b"$1\r\n1\r\n"
            )
            assert await broker.get_result(job_id) is None
            assert redis_command(redis_server, "DEL", damaged) == b":1\r\n"
            got = await broker.claim("good", consumer="c", limit=1, lease=30)
            assert [d.job.id for d in got] == ([job_id] if after == "in_flight" else [])
            assert _status_of(redis_server, job_id) == _bulk(after)
            if after == "cancelled":
                assert redis_command(redis_server, "HGET", "guild:cancelled", "good") == (
                    b"$1\r\n1\r\n"
                )
            if after == "dead":
                assert redis_command(redis_server, "ZCARD", "guild:q:good:dead") == b":1\r\n"


async def test_an_enqueue_that_meets_a_damaged_stream_leaves_the_due_delayed_jobs_delayed(
    redis_server: RedisServer,
) -> None:
    # A normal job goes in after the delayed jobs that came due: each was taken out
    # of the delayed set before its XADD, so a damaged stream lost the first one.
    stream_is_a_string = f"the key guild:q:good:ready holds a string, not a stream {HINT}"
    with trio.fail_after(20):
        async with guild.open_broker(redis_server.url) as broker:
            (later,) = await broker.enqueue(
                [Job(queue="good", payload="later", not_before=broker.now() + 3600)]
            )
            # Due now.
            assert redis_command(redis_server, "ZADD", "guild:q:good:delayed", "1", later.id) == (
                b":0\r\n"
            )
            assert redis_command(redis_server, "SET", "guild:q:good:ready", "junk") == b"+OK\r\n"
            with pytest.raises(WrongTypeError) as refused:
                await broker.enqueue([Job(queue="good", payload="now")])
            assert str(refused.value) == f"redis: enqueue to 'good': {stream_is_a_string}"
            assert redis_command(redis_server, "ZCARD", "guild:q:good:delayed") == b":1\r\n"
            assert _status_of(redis_server, later.id) == b"$7\r\ndelayed\r\n"
            assert redis_command(redis_server, "DEL", "guild:q:good:ready") == b":1\r\n"
            (now,) = await broker.enqueue([Job(queue="good", payload="now")])
            got = await broker.claim("good", consumer="c", limit=5, lease=30)
            assert [d.job.id for d in got] == [later.id, now.id]


async def test_a_refused_enqueue_takes_back_the_jobs_it_stored_on_other_queues(
    redis_server: RedisServer,
) -> None:
    # The caller is told the enqueue failed: the good queue's job, stored first,
    # stayed, and the same call sent again stored it twice.
    with trio.fail_after(20):
        async with guild.open_broker(redis_server.url) as broker:
            await broker.enqueue([Job(queue="bad", payload=0)])
            assert redis_command(redis_server, "SET", "guild:q:bad:ready", "junk") == b"+OK\r\n"
            first = Job(queue="good", payload=1, key="once")
            batch = [first, Job(queue="good", payload=2, priority=guild.Priority.HIGH)]
            batch.append(Job(queue="bad", payload=3))
            for _ in range(2):
                with pytest.raises(WrongTypeError) as refused:
                    await broker.enqueue(batch)
                assert str(refused.value) == f"redis: enqueue to 'bad': {READY_IS_A_STRING}"
            for job in batch:
                assert redis_command(redis_server, "EXISTS", f"guild:job:{job.id}") == b":0\r\n"
            assert redis_command(redis_server, "XLEN", "guild:q:good:ready") == b":0\r\n"
            assert redis_command(redis_server, "ZCARD", "guild:q:good:ready:1") == b":0\r\n"
            assert redis_command(redis_server, "EXISTS", "guild:key:good:once") == b":0\r\n"
            assert redis_command(redis_server, "DEL", "guild:q:bad:ready") == b":1\r\n"
            stored = await broker.enqueue(batch)
            assert [j.id for j in stored] == [j.id for j in batch]
            assert (await broker.stats(["good"]))["good"].ready == 2


CANCELLED_IS_A_STRING = f"the key guild:cancelled holds a string, not a hash {HINT}"


@pytest.mark.parametrize("running", [False, True])
async def test_a_cancel_that_meets_a_damaged_count_leaves_the_job_where_it_was(
    redis_server: RedisServer, running: bool
) -> None:
    # The job was marked cancelled (a waiting one taken out of its stream) before
    # the count failed: terminal, uncounted, with no result for its waiters.
    with trio.fail_after(20):
        async with guild.open_broker(redis_server.url) as broker:
            (job,) = await broker.enqueue([Job(queue="good", payload="x")])
            held: list[guild.Delivery] = []
            if running:
                held = await broker.claim("good", consumer="c", limit=1, lease=30)
                assert await broker.cancel([job.id]) == [job.id]  # a request
            assert redis_command(redis_server, "SET", "guild:cancelled", "junk") == b"+OK\r\n"
            if running:
                with pytest.raises(WrongTypeError) as refused:
                    await broker.finish_cancelled(held)
                assert str(refused.value) == f"redis: end cancelled: {CANCELLED_IS_A_STRING}"
                assert _status_of(redis_server, job.id) == b"$9\r\nin_flight\r\n"
                assert redis_command(redis_server, "ZCARD", "guild:q:good:leases") == b":1\r\n"
            else:
                # By id alone: Redis' own words, the key unnamed.
                with pytest.raises(WrongTypeError) as refused:
                    await broker.cancel([job.id])
                assert str(refused.value).startswith(
                    "redis: cancel: Operation against a key holding the wrong kind of value"
                )
                assert _status_of(redis_server, job.id) == b"$5\r\nready\r\n"
                assert redis_command(redis_server, "XLEN", "guild:q:good:ready") == b":1\r\n"
            assert await broker.get_result(job.id) is None
            assert redis_command(redis_server, "DEL", "guild:cancelled") == b":1\r\n"
            if running:
                await broker.finish_cancelled(held)
            else:
                assert await broker.cancel([job.id]) == [job.id]
            assert _status_of(redis_server, job.id) == b"$9\r\ncancelled\r\n"
            assert redis_command(redis_server, "HGET", "guild:cancelled", "good") == b"$1\r\n1\r\n"
            result = await broker.get_result(job.id)
            assert result is not None and result.error == "cancelled"
            assert redis_command(redis_server, "ZCARD", "guild:q:good:leases") == b":0\r\n"
            assert redis_command(redis_server, "XLEN", "guild:q:good:ready") == b":0\r\n"


async def test_a_hand_back_of_a_killed_process_on_a_damaged_stream_leaves_the_job_held(
    redis_server: RedisServer,
) -> None:
    # release_consumers took the job out of its lease, then failed to make it ready.
    with trio.fail_after(20):
        async with guild.open_broker(redis_server.url) as broker:
            (job,) = await broker.enqueue([Job(queue="good", payload="x")])
            await broker.claim("good", consumer="h:1:w", limit=1, lease=30)
            assert redis_command(redis_server, "SET", "guild:q:good:ready", "junk") == b"+OK\r\n"
            with pytest.raises(WrongTypeError):
                await broker.release_consumers("h:1:")
            assert _status_of(redis_server, job.id) == b"$9\r\nin_flight\r\n"
            assert redis_command(redis_server, "ZCARD", "guild:q:good:leases") == b":1\r\n"
            assert redis_command(redis_server, "DEL", "guild:q:good:ready") == b":1\r\n"
            assert await broker.release_consumers("h:1:") == 1
            assert _status_of(redis_server, job.id) == b"$5\r\nready\r\n"
            assert redis_command(redis_server, "ZCARD", "guild:q:good:leases") == b":0\r\n"


async def _dead_job(broker: guild.Broker, queue: str) -> str:
    (job,) = await broker.enqueue([Job(queue=queue, payload="x")])
    (held,) = await broker.claim(queue, consumer="c", limit=1, lease=30)
    await broker.dead(held, error="boom")
    return job.id


async def test_a_requeue_that_meets_a_damaged_stream_keeps_the_dead_letter(
    redis_server: RedisServer,
) -> None:
    # The job left the dead letters (and lost its result) before the XADD failed:
    # dead by its hash, in no set, found by no requeue nor list of dead letters.
    stream_is_a_string = f"the key guild:q:good:ready holds a string, not a stream {HINT}"
    with trio.fail_after(20):
        async with guild.open_broker(redis_server.url) as broker:
            job_id = await _dead_job(broker, "good")
            assert redis_command(redis_server, "SET", "guild:q:good:ready", "junk") == b"+OK\r\n"
            with pytest.raises(WrongTypeError) as refused:
                await broker.requeue_dead(queue="good")
            assert str(refused.value) == f"redis: requeue dead jobs of 'good': {stream_is_a_string}"
            assert [d.job.id for d in await broker.list_dead("good")] == [job_id]
            result = await broker.get_result(job_id)
            assert result is not None and result.error == "boom"
            assert redis_command(redis_server, "DEL", "guild:q:good:ready") == b":1\r\n"
            assert await broker.requeue_dead(queue="good") == 1
            assert await broker.list_dead("good") == []
            assert _status_of(redis_server, job_id) == b"$5\r\nready\r\n"


async def test_a_purge_deletes_the_jobs_of_a_queue_whatever_its_other_keys_hold(
    redis_server: RedisServer,
) -> None:
    # The purge took a job out of its stream or dead letters, then failed on
    # another key: a hash left behind that no later purge finds.
    with trio.fail_after(20):
        async with guild.open_broker(redis_server.url) as broker:
            dead_id = await _dead_job(broker, "good")
            (waiting,) = await broker.enqueue([Job(queue="good", payload="w")])
            assert redis_command(redis_server, "SET", "guild:cancels", "junk") == b"+OK\r\n"
            assert await broker.purge("good", [guild.JobStatus.DEAD]) == 1
            assert redis_command(redis_server, "ZCARD", "guild:q:good:dead") == b":0\r\n"
            assert redis_command(redis_server, "SET", "guild:q:good:dead", "junk") == b"+OK\r\n"
            assert await broker.purge("good", [guild.JobStatus.READY]) == 1
            for gone in (dead_id, waiting.id):
                assert redis_command(redis_server, "EXISTS", f"guild:job:{gone}") == b":0\r\n"
            assert redis_command(redis_server, "XLEN", "guild:q:good:ready") == b":0\r\n"


async def test_a_canary_lane_moved_back_onto_a_damaged_queue_keeps_its_jobs(
    redis_server: RedisServer,
) -> None:
    # Each job left the lane's set before the ZADD to the queue's failed: lost.
    with trio.fail_after(20):
        async with guild.open_broker(redis_server.url) as broker:
            (later,) = await broker.enqueue(
                [Job(queue="good@canary", payload="d", not_before=broker.now() + 3600)]
            )
            dead_id = await _dead_job(broker, "good@canary")
            assert redis_command(redis_server, "SET", "guild:q:good:delayed", "junk") == b"+OK\r\n"
            assert redis_command(redis_server, "SET", "guild:q:good:dead", "junk") == b"+OK\r\n"
            with pytest.raises(WrongTypeError):
                await move_lane(broker, "good")
            with pytest.raises(WrongTypeError):
                await hand_back_dead(broker, "good")
            assert redis_command(redis_server, "ZCARD", "guild:q:good@canary:delayed") == b":1\r\n"
            assert redis_command(redis_server, "ZCARD", "guild:q:good@canary:dead") == b":1\r\n"
            assert redis_command(redis_server, "HGET", f"guild:job:{later.id}", "queue") == (
                b"$11\r\ngood@canary\r\n"
            )
            assert redis_command(redis_server, "DEL", "guild:q:good:delayed") == b":1\r\n"
            assert redis_command(redis_server, "DEL", "guild:q:good:dead") == b":1\r\n"
            assert await move_lane(broker, "good") == 1
            assert await hand_back_dead(broker, "good") == 1
            assert redis_command(redis_server, "ZCARD", "guild:q:good:delayed") == b":1\r\n"
            assert _status_of(redis_server, dead_id) == b"$5\r\nready\r\n"
            assert redis_command(redis_server, "HGET", f"guild:job:{dead_id}", "queue") == (
                b"$4\r\ngood\r\n"
            )


async def test_a_canary_record_written_over_a_damaged_key_keeps_its_version(
    redis_server: RedisServer,
) -> None:
    # The version moved on before the record's HSET failed: every later write
    # of the record, made from version 0, was refused as another writer's.
    with trio.fail_after(20):
        async with guild.open_broker(redis_server.url) as broker:
            record = CanaryRecord(
                queue="good",
                state=CanaryState(phase=CanaryPhase.SOAKING, stage=1, since=broker.now()),
            )
            assert redis_command(redis_server, "SET", "guild:canary", "junk") == b"+OK\r\n"
            with pytest.raises(WrongTypeError):
                await save(broker, record)
            assert redis_command(redis_server, "HGET", "guild:canary:versions", "good") == (
                b"$-1\r\n"
            )
            assert redis_command(redis_server, "DEL", "guild:canary") == b":1\r\n"
            saved = await save(broker, record)
            assert saved is not None and saved.version == 1
