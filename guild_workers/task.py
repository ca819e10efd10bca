"""TaskWorker: run a sandboxed command, or ask an LLM-style API, and report what happened.

A job's payload is one of:

* a command — ``{"argv": ["python3", "report.py"], "timeout": 30,
  "files": {"report.py": "print('hi')"}}``: the files are written into a fresh
  job directory and the argv runs in the sandbox (:mod:`guild.sandbox`);
* a prompt — ``{"prompt": "Summarise …", "max_tokens": 256, "system": "…"}``:
  one call to a messages API, behind a rate limiter, with identical prompts
  answered from a cache.

The result reports the exit code (or the response text), the files the command
created (at most 1,000 names and 1 Mi characters of JSON; ``files_omitted``
counts the rest), the duration and the tokens used. Input that can never succeed (a
refused command, a malformed payload, a 4xx from the API) is rejected: the job
goes to the dead letters at once with the reason. A 429 or 5xx from the API is
retried after its ``Retry-After``.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypedDict, Unpack

import attrs
import httpx
import structlog
import trio

import guild
from guild.cache import Cache, MemoryCache, cached
from guild.ratelimit import RateLimiter
from guild.sandbox import Sandbox, SandboxPolicy

from ._llm import Completion, LLMSettings, complete

_log = structlog.get_logger("guild_workers.task")


def _reject_unless(condition: bool, reason: str) -> None:
    if not condition:
        raise guild.Reject(reason)


def _command_parts(
    payload: dict[str, Any], max_timeout: float
) -> tuple[list[str], float, dict[str, bytes]]:
    argv = payload.get("argv")
    if not (isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv)):
        raise guild.Reject("argv must be a non-empty list of strings")
    timeout = payload.get("timeout", max_timeout)
    _reject_unless(
        isinstance(timeout, int | float)
        and not isinstance(timeout, bool)
        and 0 < timeout <= max_timeout,
        f"timeout must be a number of seconds in (0, {max_timeout:g}]",
    )
    files = payload.get("files", {})
    _reject_unless(
        isinstance(files, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()),
        "files must map file names to text",
    )
    try:
        contents = {name: text.encode() for name, text in files.items()}
    except UnicodeEncodeError as error:  # a lone surrogate, from a "\udcxx" escape
        raise guild.Reject(f"files must map file names to UTF-8 text: {error.reason}") from None
    return list(argv), float(timeout), contents


@attrs.define
class TaskWorker:
    """The task handler and what it owns.

    Register it with :func:`add_task_worker` (for ``guild run``) or
    :func:`open_task_worker` (in your own Trio program). Its HTTP client is open
    while the app runs (an app lifespan) or inside :meth:`session`.

    Attributes:
        sandbox: where commands run.
        llm: where prompts go (``None``: prompt jobs are rejected).
        limiter: admission in front of the LLM API.
        cache: identical prompts within ``cache_ttl`` are answered from here.
        max_timeout: the longest a command may ask to run.
        name: the worker's name in logs.
    """

    sandbox: Sandbox
    llm: LLMSettings | None
    limiter: RateLimiter
    cache: Cache
    cache_ttl: float = 3600.0
    max_timeout: float = 300.0
    name: str = "tasks"
    _ask: Any = attrs.field(init=False, default=None)
    _client: httpx.AsyncClient | None = attrs.field(init=False, default=None)
    _sessions: int = attrs.field(init=False, default=0)

    def __attrs_post_init__(self) -> None:
        model = self.llm.model if self.llm is not None else ""
        self._ask = cached(
            self.cache,
            ttl=self.cache_ttl,
            key=lambda prompt, max_tokens, system: prompt_key(model, prompt, max_tokens, system),
        )(self._ask_api)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[TaskWorker]:
        """Own the shared HTTP client for the block; nested blocks share one client."""
        if self._sessions == 0:
            self._client = httpx.AsyncClient()
        self._sessions += 1
        try:
            yield self
        finally:
            self._sessions -= 1
            if self._sessions == 0 and self._client is not None:
                client, self._client = self._client, None
                with trio.CancelScope(shield=True):
                    await client.aclose()

    @property
    def client(self) -> httpx.AsyncClient:
        """The shared HTTP client.

        Raises:
            guild.NotRunning: outside a :meth:`session` (the app is not running).
        """
        if self._client is None:
            raise guild.NotRunning(f"task worker {self.name!r} has no open session")
        return self._client

    async def handle(self, job: guild.Job) -> dict[str, Any]:
        """The handler: dispatch on the payload's shape, run, report."""
        payload = job.payload
        _reject_unless(isinstance(payload, dict), "payload must be an object with argv or prompt")
        started = time.perf_counter()
        if "argv" in payload:
            result = await self._run_command(job, payload)
        elif "prompt" in payload:
            result = await self._run_prompt(payload)
        else:
            raise guild.Reject("payload must have argv (a command) or prompt (an LLM request)")
        result["duration"] = round(time.perf_counter() - started, 6)
        _log.info(
            "task_done",
            worker=self.name,
            task_id=job.id,
            duration=result["duration"],
            metadata={k: v for k, v in result.items() if k not in ("stdout", "stderr", "text")},
        )
        return result

    async def _run_command(self, job: guild.Job, payload: dict[str, Any]) -> dict[str, Any]:
        argv, timeout, files = _command_parts(payload, self.max_timeout)
        try:
            ran = await self.sandbox.run(argv, timeout=timeout, files=files, requested_by=job.id)
        except guild.CommandRefused as refused:
            raise guild.Reject(str(refused)) from refused
        except guild.SandboxTimeout as timed_out:
            raise guild.Reject(
                f"{timed_out}; stdout so far: {timed_out.stdout[-200:]!r}"
            ) from timed_out
        return {
            "kind": "command",
            "exit_code": ran.exit_code,
            "stdout": ran.stdout.decode(errors="replace"),
            "stderr": ran.stderr.decode(errors="replace"),
            "truncated": ran.stdout_truncated or ran.stderr_truncated,
            "files_created": list(ran.files_created),
            # The list is capped (1,000 names, 1 Mi characters of JSON): how many
            # more the command created.
            "files_omitted": ran.files_omitted,
            "isolated": ran.isolated,
            "tokens": {"input": 0, "output": 0},
        }

    async def _run_prompt(self, payload: dict[str, Any]) -> dict[str, Any]:
        _reject_unless(self.llm is not None, "no LLM API is configured (GUILD_LLM_BASE_URL)")
        prompt = payload["prompt"]
        max_tokens = payload.get("max_tokens", 256)
        system = payload.get("system")
        _reject_unless(isinstance(prompt, str) and bool(prompt), "prompt must be non-empty text")
        _reject_unless(
            isinstance(max_tokens, int) and not isinstance(max_tokens, bool) and max_tokens > 0,
            "max_tokens must be a positive integer",
        )
        _reject_unless(system is None or isinstance(system, str), "system must be text")
        answer: dict[str, Any] = await self._ask(prompt, max_tokens, system)
        return {
            "kind": "prompt",
            "text": answer["text"],
            "files_created": [],
            "files_omitted": 0,
            "tokens": {"input": answer["input_tokens"], "output": answer["output_tokens"]},
        }

    async def _ask_api(self, prompt: str, max_tokens: int, system: str | None) -> dict[str, Any]:
        assert self.llm is not None  # checked by the caller
        async with self.limiter:
            completion: Completion = await complete(
                self.client, self.llm, prompt, max_tokens=max_tokens, system=system
            )
        return attrs.asdict(completion)


def prompt_key(model: str, prompt: str, max_tokens: int, system: str | None) -> str:
    """A short, stable cache key for one request."""
    digest = hashlib.sha256(json.dumps([model, system, max_tokens, prompt]).encode()).hexdigest()
    return f"llm:{digest}"


def add_task_worker(
    app: guild.Guild,
    *,
    queue: str = "tasks",
    concurrency: int = 16,
    policy: SandboxPolicy | None = None,
    llm: LLMSettings | None = None,
    limiter: RateLimiter | None = None,
    cache: Cache | None = None,
    max_timeout: float = 300.0,
) -> TaskWorker:
    """Register a TaskWorker on ``app``; its HTTP client opens and closes with each run.

    Args:
        queue: the queue it consumes (also the worker's name).
        concurrency: jobs at once.
        policy: the sandbox policy (default: ``SandboxPolicy.default()``).
        llm: the API settings (default: from the environment, if set).
        limiter: admission for API calls (default: 5 per second, 4 at once).
        cache: for identical prompts (default: an in-memory cache).
        max_timeout: the longest a command may ask to run, in seconds.
    """
    worker = TaskWorker(
        sandbox=Sandbox(policy or SandboxPolicy.default()),
        llm=llm if llm is not None else LLMSettings.from_env(),
        limiter=limiter or RateLimiter(5, period=1.0, concurrency=4),
        cache=cache or MemoryCache(),
        max_timeout=max_timeout,
        name=queue,
    )
    app.add_worker(
        guild.WorkerSpec(
            queue=queue,
            handler=worker.handle,
            concurrency=concurrency,
            timeout=max_timeout + 30.0,
        )
    )
    app.lifespan(lambda _app: worker.session())
    return worker


class TaskWorkerOptions(TypedDict, total=False):
    """The keyword arguments of :func:`add_task_worker`."""

    queue: str
    concurrency: int
    policy: SandboxPolicy | None
    llm: LLMSettings | None
    limiter: RateLimiter | None
    cache: Cache | None
    max_timeout: float


@asynccontextmanager
async def open_task_worker(
    app: guild.Guild, **options: Unpack[TaskWorkerOptions]
) -> AsyncIterator[TaskWorker]:
    """:func:`add_task_worker`, with the worker's HTTP client open for the block
    (so ``handle`` can be called directly, as in tests).

    Run the app inside the block::

        async with open_task_worker(app) as tasks, app.open(broker):
            ...
    """
    worker = add_task_worker(app, **options)
    async with worker.session():
        yield worker


app = guild.Guild("tasks")
"""A ready app for ``guild run guild_workers.task:app``: one TaskWorker on ``tasks``,
configured from ``GUILD_LLM_BASE_URL`` / ``GUILD_LLM_MODEL`` / ``GUILD_LLM_API_KEY``."""
add_task_worker(app)
