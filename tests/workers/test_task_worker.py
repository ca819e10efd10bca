"""TaskWorker against a real local messages API (hypercorn) and the real sandbox."""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from hypercorn.config import Config
from hypercorn.trio import serve

import guild
from guild.cache import MemoryCache
from guild.ratelimit import RateLimiter
from guild_workers._llm import LLMSettings
from guild_workers.task import open_task_worker

Scope = dict[str, Any]


class FakeMessagesAPI:
    """A minimal Anthropic-style messages API; ``script`` holds canned statuses."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.script: list[tuple[int, dict[str, str]]] = []

    async def __call__(
        self,
        scope: Scope,
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
    ) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        request = json.loads(body)
        request["api_key"] = dict(scope["headers"]).get(b"x-api-key", b"").decode()
        self.requests.append(request)
        status, headers = self.script.pop(0) if self.script else (200, {})
        if status == 200:
            prompt = request["messages"][0]["content"]
            payload = {
                "content": [{"type": "text", "text": f"echo: {prompt}"}],
                "usage": {"input_tokens": len(prompt.split()), "output_tokens": 3},
            }
        else:
            payload = {"error": "nope"}
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")]
                + [(k.encode(), v.encode()) for k, v in headers.items()],
            }
        )
        await send({"type": "http.response.body", "body": json.dumps(payload).encode()})


@pytest.fixture
async def api(nursery: trio.Nursery) -> AsyncIterator[tuple[FakeMessagesAPI, str]]:
    app = FakeMessagesAPI()
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = None
    bound: list[str] = await nursery.start(functools.partial(serve, app, config))  # type: ignore[arg-type]
    return app, bound[0]


def _settings(base: str) -> LLMSettings:
    return LLMSettings(base_url=base, model="test-model", api_key="secret")


class TestPrompts:
    """Prompts go through the limiter and the cache to a real HTTP server."""

    async def test_prompt_answer_tokens_and_cache(self, api: tuple[FakeMessagesAPI, str]) -> None:
        fake, base = api
        app = guild.Guild("t")
        with trio.fail_after(20):
            async with open_task_worker(app, llm=_settings(base), cache=MemoryCache()) as tasks:
                job = guild.Job(
                    queue="tasks", payload={"prompt": "hello there world", "max_tokens": 10}
                )
                first = await tasks.handle(job)
                second = await tasks.handle(job)
        assert first["text"] == "echo: hello there world"
        assert first["tokens"] == {"input": 3, "output": 3}
        assert second["text"] == first["text"]
        assert len(fake.requests) == 1  # the second came from the cache
        assert fake.requests[0]["model"] == "test-model"
        assert fake.requests[0]["api_key"] == "secret"

    async def test_429_retries_after_the_header(self, api: tuple[FakeMessagesAPI, str]) -> None:
        fake, base = api
        fake.script = [(429, {"retry-after": "7"})]
        app = guild.Guild("t")
        with trio.fail_after(20):
            async with open_task_worker(app, llm=_settings(base)) as tasks:
                with pytest.raises(guild.Retry) as info:
                    await tasks.handle(guild.Job(queue="tasks", payload={"prompt": "x"}))
        assert info.value.after == 7.0

    async def test_4xx_and_bad_payloads_are_rejected(
        self, api: tuple[FakeMessagesAPI, str]
    ) -> None:
        fake, base = api
        fake.script = [(400, {})]
        app = guild.Guild("t")
        with trio.fail_after(20):
            async with open_task_worker(app, llm=_settings(base)) as tasks:
                with pytest.raises(guild.Reject, match="answered 400"):
                    await tasks.handle(guild.Job(queue="tasks", payload={"prompt": "x"}))
                for payload, reason in [
                    ({"prompt": ""}, "prompt must be non-empty"),
                    ({"prompt": "x", "max_tokens": 0}, "max_tokens"),
                    ({"nothing": 1}, "argv (a command) or prompt"),
                    ([1, 2], "payload must be an object"),
                    ({"argv": "ls"}, "argv must be a non-empty list"),
                    # A "\udcff" escape in stored JSON decodes to a lone surrogate:
                    # no file can hold it, so the job is refused, not retried.
                    ({"argv": ["ls"], "files": {"f": "\udcff"}}, "UTF-8 text"),
                ]:
                    with pytest.raises(guild.Reject, match=re.escape(reason)):
                        await tasks.handle(guild.Job(queue="tasks", payload=payload))

    async def test_end_to_end_through_an_app(self, api: tuple[FakeMessagesAPI, str]) -> None:
        fake, base = api
        fake.script = [(503, {"retry-after": "0"})]
        app = guild.Guild("t")
        broker = guild.MemoryBroker()
        with trio.fail_after(30):
            async with (
                open_task_worker(app, llm=_settings(base), limiter=RateLimiter(100, burst=10)),
                app.open(broker),
            ):
                job = await app.enqueue("tasks", {"prompt": "via the queue"})
                result = await app.result(job, wait=20)
        assert result is not None and result.ok
        assert result.value["text"] == "echo: via the queue"
        assert result.attempts == 2  # the 503 was retried


class TestCommands:
    """Commands run in the sandbox; refusals are dead-lettered with the rule."""

    async def test_command_reports_exit_code_and_files(self) -> None:
        app = guild.Guild("t")
        script = "open('out.txt', 'w').write('done')\nprint('hello')\n"
        with trio.fail_after(30):
            async with open_task_worker(app) as tasks:
                result = await tasks.handle(
                    guild.Job(
                        queue="tasks",
                        payload={
                            "argv": ["python3", "job.py"],
                            "timeout": 20,
                            "files": {"job.py": script},
                        },
                    )
                )
        assert result["exit_code"] == 0
        assert result["stdout"].strip() == "hello"
        assert "out.txt" in result["files_created"]
        assert result["duration"] > 0

    async def test_refused_command_is_rejected_with_the_rule(self) -> None:
        app = guild.Guild("t")
        with trio.fail_after(30):
            async with open_task_worker(app) as tasks:
                with pytest.raises(guild.Reject, match="inline"):
                    await tasks.handle(
                        guild.Job(queue="tasks", payload={"argv": ["python3", "-c", "print(1)"]})
                    )


class TestGuildRun:
    """`guild run guild_workers.task:app` is a working deployment of the TaskWorker."""

    async def test_command_job_through_a_real_guild_run(self, tmp_path: Path) -> None:
        url = f"sqlite:///{tmp_path}/tasks.db"
        log = tmp_path / "run.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("GUILD_")}
        args = ["--broker", url, "--concurrency", "2"]
        with trio.fail_after(60):
            async with guild.open_broker(url) as broker:
                (job,) = await broker.enqueue(
                    [guild.Job(queue="tasks", payload={"argv": ["python3", "--version"]})]
                )
                with log.open("ab") as sink:
                    process = await trio.lowlevel.open_process(
                        [sys.executable, "-m", "guild", "run", "guild_workers.task:app", *args],
                        env=env,
                        stdout=sink,
                        stderr=sink,
                    )
                try:
                    result = await broker.get_result(job.id, wait=50)
                finally:
                    process.send_signal(signal.SIGTERM)
                    code = await process.wait()
        assert code == 0, log.read_text()
        assert result is not None and result.ok, log.read_text()
        assert result.value["exit_code"] == 0
        assert result.value["stdout"].startswith("Python 3")
