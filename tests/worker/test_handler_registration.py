"""A handler that could never run a job is refused when it is registered, not per job."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing

import guild
from guild import InvalidHandler, Job, MemoryBroker, WorkerSpec

from .._poll import until


class TestRefused:
    """Each form that could not run a job, with the message that says what to write."""

    def test_plain_def_says_what_to_write(self) -> None:
        app = guild.Guild()
        with pytest.raises(InvalidHandler) as caught:

            @app.worker("emails", name="send")
            def send(job: Job) -> None: ...

        assert str(caught.value) == "handler send must be `async def send(job): ...`"
        assert caught.value.handler == "send"
        assert isinstance(caught.value, TypeError)
        assert app.specs == {}

    def test_too_many_parameters(self) -> None:
        app = guild.Guild()
        with pytest.raises(InvalidHandler, match=r"handler send must take one argument, the job"):

            @app.worker("emails")
            async def send(job: Job, retries: int) -> None: ...

        assert app.specs == {}

    def test_no_parameter(self) -> None:
        app = guild.Guild()
        with pytest.raises(InvalidHandler, match=r"its signature is \(\)"):

            @app.worker("emails")
            async def send() -> None: ...

    def test_keyword_only_job(self) -> None:
        app = guild.Guild()
        with pytest.raises(InvalidHandler, match="must take one argument"):

            @app.worker("emails")
            async def send(*, job: Job) -> None: ...

    def test_sync_callable_object(self) -> None:
        class Sender:
            def __call__(self, job: Job) -> None: ...

        with pytest.raises(InvalidHandler, match=r"handler Sender must be `async def Sender"):
            guild.Guild().worker("emails")(Sender())

    def test_partial_of_a_plain_def(self) -> None:
        def send(prefix: str, job: Job) -> None: ...

        with pytest.raises(InvalidHandler, match="handler send must be `async def send"):
            guild.Guild().worker("emails")(functools.partial(send, "x"))

    def test_partial_that_leaves_two_arguments(self) -> None:
        async def send(prefix: str, job: Job, extra: int) -> None: ...

        with pytest.raises(InvalidHandler, match="must take one argument"):
            guild.Guild().worker("emails")(functools.partial(send, "x"))

    def test_not_callable(self) -> None:
        with pytest.raises(InvalidHandler, match="is a str, not a function"):
            guild.Guild().add_worker(WorkerSpec(queue="q", handler="send"))  # type: ignore[arg-type]

    def test_add_worker_checks_too(self) -> None:
        def send(job: Job) -> None: ...

        app = guild.Guild()
        with pytest.raises(InvalidHandler, match="must be `async def send"):
            app.add_worker(WorkerSpec(queue="q", handler=send))  # type: ignore[arg-type]
        assert app.specs == {}


def _passthrough(fn: Callable[[Job], Awaitable[Any]]) -> Callable[[Job], Awaitable[Any]]:
    """A plain decorator over an async handler: it returns the coroutine."""

    @functools.wraps(fn)
    def wrapper(job: Job) -> Awaitable[Any]:
        return fn(job)

    return wrapper


def _logged(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        return await fn(*args, **kwargs)

    return wrapper


class TestAcceptedAndRun:
    """Every accepted form really runs jobs (registration let through what works)."""

    async def test_each_form_runs_its_job(self, autojump_clock: trio.testing.MockClock) -> None:
        done: list[str] = []
        app = guild.Guild()

        async def tagged(tag: str, job: Job) -> str:
            done.append(tag)
            return tag

        class Handler:
            async def __call__(self, job: Job) -> str:
                done.append("object")
                return "object"

        class Service:
            async def handle(self, job: Job) -> str:
                done.append("method")
                return "method"

        @_passthrough
        async def plain_decorated(job: Job) -> str:
            done.append("decorated")
            return "decorated"

        @_logged
        async def async_decorated(job: Job) -> str:
            done.append("async decorated")
            return "async decorated"

        app.worker("a")(functools.partial(tagged, "partial"))
        app.worker("b")(Handler())
        app.worker("c")(Service().handle)
        app.worker("d")(plain_decorated)
        app.worker("e")(async_decorated)
        app.worker("f")(functools.partial(Handler()))

        broker = MemoryBroker()
        for queue in "abcdef":
            await broker.enqueue([Job(queue=queue)])
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            await nursery.start(functools.partial(app.run, broker, shutdown_trigger=stop.wait))
            await until(lambda: len(done) == 6)
            stop.set()
        assert sorted(done) == sorted(
            ["partial", "object", "method", "decorated", "async decorated", "object"]
        )
        stats = await broker.stats(list("abcdef"))
        assert [stats[q].done for q in "abcdef"] == [1] * 6


def test_configure_checks_a_new_handler() -> None:
    app = guild.Guild()

    @app.worker("q")
    async def good(job: Job) -> None: ...

    def bad(job: Job) -> None: ...

    with pytest.raises(InvalidHandler, match="handler bad must be `async def bad"):
        app.configure("q", handler=bad)
    assert app.specs["q"].handler is good
