"""PMWorker: run a project's phases as a workflow, in parallel, with rollbacks.

A ``pm`` job's payload is a project (see :mod:`guild_workers._project` for its
shape), inline or as a file::

    {"project": {"name": "release", "phases": {...}, "rollbacks": {...}}}
    {"file": "release.toml"}          # under the worker's project_dir

The job submits the project as a :class:`guild.Workflow` whose steps are its
phases, all on the phase queue (``pm.phases``), and waits for it: the job is
done with the project's results when every phase is done, and dead-lettered
(``guild.Reject``) with the failed phase, its error and the rollbacks that ran
when it failed. So ``app.result(job)`` is the project's outcome, as a user who
enqueued a project expects, and the workflow itself stays visible in ``guild
workflow show pm-<job id>`` while it runs.

The workflow's id is derived from the job's (:func:`project_workflow_id`): a
``pm`` job run again after a crash submits the same workflow, which is a no-op,
and waits for it again, so a project never runs twice for one job.

A phase's job dispatches on its kind:

* ``command`` and ``prompt``: a job on the TaskWorker's queue (``tasks``) with
  the TaskWorker's payload; the phase waits for it and fails when it is dead
  or cancelled, or when the command exits non-zero. The results of the phases
  it runs after are given to a command as the file ``pm_results.json``.
* ``action``: a coroutine function registered on the worker by name
  (:meth:`PMWorker.action`), called with a :class:`PhaseContext`.
* ``post``: one job per phase it runs after on the ResultWorker's queue
  (``results``), which posts that phase's result (for a task, its job's stored
  result) to the channel or webhook named.

A phase's run that is cancelled (a sibling failed, its timeout passed, the app
stopped) cancels the task or result job it was waiting for, so a sandboxed
command dies with it. When a phase fails, the workflow cancels the running
phases and then runs the rollbacks of the completed ones, last completed
first, each once: a rollback's job gets the phase's result.

Memory: the worker keeps nothing per project; a project's state lives in the
broker (its workflow record and its jobs' results), so a process's RSS stays
flat however many projects it runs (docs/workers.md has the measurement).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import attrs
import structlog
import trio

import guild

from ._project import KINDS, Body, InvalidProject, Phase, Project

__all__ = [
    "KINDS",
    "Action",
    "Body",
    "InvalidProject",
    "PMWorker",
    "Phase",
    "PhaseContext",
    "PhaseFailed",
    "Project",
    "add_pm_worker",
    "describe_failure",
    "project_workflow_id",
]

_log = structlog.get_logger("guild_workers.pm")

_WORKFLOW_ID = re.compile(r"[A-Za-z0-9_-]{1,125}")
RESULTS_FILE = "pm_results.json"
"""The file a command phase finds the results of the phases it runs after in."""


class PhaseFailed(Exception):
    """A phase's work failed: its command exited non-zero, or its task or post
    job ended dead or cancelled. Raised in the phase's job, so the phase's
    ``attempts`` apply before the project fails."""


@attrs.frozen(kw_only=True)
class PhaseContext:
    """What an inline action gets.

    Attributes:
        project: the project's name.
        phase: the phase's name (for a rollback: the phase it undoes).
        kind: ``"phase"``, or ``"rollback"``.
        args: the ``args`` written in the project.
        results: for a phase, the result of each phase it runs after; for a
            rollback, the undone phase's result under its name.
        workflow_id: the project's workflow.
        job: the phase's job.
    """

    project: str
    phase: str
    kind: Literal["phase", "rollback"]
    args: Any
    results: dict[str, Any]
    workflow_id: str
    job: guild.Job


Action = Callable[[PhaseContext], Awaitable[Any]]
"""An inline action: ``async def action(ctx: PhaseContext) -> JSON value``."""

A = TypeVar("A", bound=Action)


def project_workflow_id(job_id: str) -> str:
    """The id of the workflow a ``pm`` job submits: ``pm-<job id>`` (a digest of
    the id when the id holds characters a workflow id may not)."""
    if _WORKFLOW_ID.fullmatch(job_id):
        return f"pm-{job_id}"
    return "pm-" + hashlib.sha256(job_id.encode()).hexdigest()[:40]


def _reject_unless(condition: bool, reason: str) -> None:
    if not condition:
        raise guild.Reject(reason)


@attrs.define
class PMWorker:
    """The project and phase handlers, and the registered actions.

    Register it with :func:`add_pm_worker`.

    Attributes:
        app: the app whose broker keeps the projects' workflows.
        queue: where ``pm`` jobs (projects) are taken from.
        phase_queue: where phase and rollback jobs run.
        task_queue: the TaskWorker's queue (command and prompt phases).
        results_queue: the ResultWorker's queue (post phases).
        project_dir: where ``{"file": ...}`` payloads are read from
            (``None``: file payloads are refused).
        wait: seconds one wait for a task or result job lasts before it asks again.
    """

    app: guild.Guild
    queue: str = "pm"
    phase_queue: str = "pm.phases"
    task_queue: str = "tasks"
    results_queue: str = "results"
    project_dir: Path | None = None
    wait: float = 60.0
    _actions: dict[str, Action] = attrs.field(init=False, factory=dict)

    # --- actions -------------------------------------------------------------------

    def action(self, name: str) -> Callable[[A], A]:
        """Register an inline action under ``name`` (a decorator)::

            @pm.action("tag_release")
            async def tag(ctx: PhaseContext) -> dict:
                return {"tag": ctx.args["version"]}

        Raises:
            TypeError: the function is not a coroutine function.
            ValueError: an action of that name is registered already.
        """

        def register(function: A) -> A:
            self.add_action(name, function)
            return function

        return register

    def add_action(self, name: str, function: Action) -> None:
        """Register an inline action (what :meth:`action` does)."""
        if not inspect.iscoroutinefunction(function):
            raise TypeError(f"action {name!r} must be an async def function, got {function!r}")
        if name in self._actions:
            raise ValueError(f"an action named {name!r} is registered already")
        self._actions[name] = function

    @property
    def actions(self) -> Mapping[str, Action]:
        """The registered actions, by name."""
        return dict(self._actions)

    # --- projects --------------------------------------------------------------------

    def load(self, payload: object) -> Project:
        """The project a ``pm`` job's payload names, checked (actions included).

        Raises:
            InvalidProject: the payload is neither ``{"project": {...}}`` nor
                ``{"file": "name.toml"}`` (rule ``field``), the file is outside
                ``project_dir`` (rule ``file``), or the project breaks a rule.
        """
        if isinstance(payload, Mapping) and set(payload) == {"file"}:
            project = Project.from_toml(self._project_file(payload["file"]))
        elif isinstance(payload, Mapping) and set(payload) == {"project"}:
            project = Project.from_mapping(payload["project"])
        else:
            raise InvalidProject(
                "payload",
                "field",
                None,
                'a pm job\'s payload is {"project": {...}} or {"file": "name.toml"}',
            )
        project.check_actions(self._actions)
        return project

    def _project_file(self, name: object) -> Path:
        if not isinstance(name, str) or not name:
            raise InvalidProject("payload", "file", None, f"file must be a path, got {name!r}")
        if self.project_dir is None:
            raise InvalidProject(name, "file", None, "this PM worker has no project_dir")
        root = self.project_dir.resolve()
        try:
            path = (root / name).resolve()
        except (OSError, ValueError) as error:  # a NUL byte, a symlink loop
            reason = f"file {name!r} is no usable path: {error}"
            raise InvalidProject("payload", "file", None, reason) from None
        if not path.is_relative_to(root):
            raise InvalidProject(name, "file", None, f"is outside the project directory {root}")
        return path

    async def handle_project(self, job: guild.Job) -> dict[str, Any]:
        """The ``pm`` handler: submit the project's workflow, wait, report."""
        try:
            project = self.load(job.payload)
        except InvalidProject as error:
            raise guild.Reject(str(error)) from error
        workflow = project.workflow(queue=self.phase_queue, id=project_workflow_id(job.id))
        try:
            await self.app.submit(workflow)
        except guild.InvalidWorkflow as error:
            # A run of this job before a crash stored it (from a project file
            # changed since): that workflow is this job's project.
            if error.rule != "duplicate-id":
                raise guild.Reject(str(error)) from error
        _log.info("project_submitted", project=project.name, workflow_id=workflow.id, job_id=job.id)
        while not (view := await self.app.workflow(workflow.id, wait=3600.0)).finished:
            pass
        _log.info("project_finished", project=project.name, workflow_id=view.id, status=view.status)
        if view.status != "done":
            raise guild.Reject(describe_failure(project.name, view))
        return {
            "project": project.name,
            "workflow_id": view.id,
            "status": view.status,
            "completed": list(view.completed),
            "phases": {step.name: step.result for step in view.steps},
        }

    # --- phases ----------------------------------------------------------------------

    async def handle_phase(self, job: guild.Job) -> Any:
        """The phase handler: run one phase (or rollback) of a project's workflow."""
        step = guild.StepInput.of(job)
        spec = step.input
        _reject_unless(
            isinstance(spec, dict) and spec.get("kind") in KINDS,
            f"job {job.id} is no PM phase (its input has no kind)",
        )
        kind = spec["kind"]
        if kind == "action":
            return await self._run_action(job, step, spec)
        if kind == "post":
            return await self._post(job, step, spec)
        if kind == "command":
            files = dict(spec.get("files", {}))
            if step.results and RESULTS_FILE not in files:
                files[RESULTS_FILE] = json.dumps(step.results, indent=2)
            payload: dict[str, Any] = {"argv": spec["argv"], "files": files}
            if "timeout" in spec:
                payload["timeout"] = spec["timeout"]
        else:
            payload = {k: spec[k] for k in ("prompt", "max_tokens", "system") if k in spec}
        result = await self._through(job, self.task_queue, payload, f"pm:{job.id}")
        value = result.value
        if kind == "command" and isinstance(value, dict) and value.get("exit_code") != 0:
            stderr = str(value.get("stderr", ""))[-500:]
            raise PhaseFailed(
                f"{spec['argv'][0]} exited {value.get('exit_code')} (task job {result.job_id})"
                + (f": {stderr.strip()}" if stderr.strip() else "")
            )
        if isinstance(value, dict):
            return {**value, "task_job": result.job_id}
        return {"value": value, "task_job": result.job_id}

    async def _run_action(self, job: guild.Job, step: guild.StepInput, spec: dict[str, Any]) -> Any:
        function = self._actions.get(spec["action"])
        # Checked when the project was submitted; a worker restarted without it lands here.
        _reject_unless(function is not None, f"action {spec['action']!r} is not registered")
        assert function is not None
        context = PhaseContext(
            project=str(spec.get("project", "")),
            phase=step.step,
            kind="phase" if step.kind == "step" else "rollback",
            args=spec.get("args"),
            results=dict(step.results),
            workflow_id=step.workflow_id,
            job=job,
        )
        return await function(context)

    async def _post(self, job: guild.Job, step: guild.StepInput, spec: dict[str, Any]) -> Any:
        target = spec["post"]
        project = spec.get("project", "")
        posted: dict[str, Any] = {}
        for phase, value in step.results.items():
            task_job = value.get("task_job") if isinstance(value, dict) else None
            if isinstance(task_job, str):
                payload = {**target, "job": task_job}
            else:
                text = json.dumps(value, indent=2, default=str)
                payload = {**target, "text": f"{project} / {phase}:\n```{text}```"}
            result = await self._through(job, self.results_queue, payload, f"pm:{job.id}:{phase}")
            posted[phase] = result.value
        return {"posted": posted}

    async def _through(
        self, job: guild.Job, queue: str, payload: dict[str, Any], key: str
    ) -> guild.Result:
        """Run ``payload`` as a job on ``queue`` and wait for it; cancelled with us.

        The key is the phase job's, so a run of the phase after its process
        died finds the job the dead run started and waits for it instead of
        running the command again. A job an earlier run left failed (or
        cancelled, on its way out) is not adopted: this run starts a fresh one.
        """
        child = await self.app.enqueue(queue, payload, key=key, trace_id=job.trace_id)
        earlier = await self.app.result(child)
        if earlier is not None and not _succeeded(earlier):
            fresh = f"{key}:{job.attempt}:{secrets.token_hex(6)}"
            child = await self.app.enqueue(queue, payload, key=fresh, trace_id=job.trace_id)
        finished = False
        try:
            while (result := await self.app.result(child, wait=self.wait)) is None:
                pass
            finished = True
        finally:
            if not finished:
                with trio.CancelScope(shield=True), trio.move_on_after(10):
                    await self.app.cancel(child)
        if not result.ok:
            raise PhaseFailed(
                f"{queue} job {child.id} ended {result.status.value}: {result.error or ''}".rstrip(
                    ": "
                )
            )
        return result


def _succeeded(result: guild.Result) -> bool:
    value = result.value
    exit_code = value.get("exit_code", 0) if isinstance(value, dict) else 0
    return result.ok and exit_code == 0


def describe_failure(project: str, view: guild.WorkflowView) -> str:
    """One line for a project that did not finish done: where it stopped, why,
    and what its rollbacks did (in the order they ran)."""
    where = f" at phase {view.failed_step!r}" if view.failed_step else ""
    text = f"project {project!r} {view.status}{where}: {view.error}"
    undone: list[str] = []
    for name in reversed(view.completed):
        undo = view.step(name).compensation
        if undo is None or undo.state == "none":
            continue
        if undo.state == "done":
            undone.append(name)
        else:
            undone.append(f"{name} (rollback {undo.state}: {undo.error})")
    return text + (f"; rolled back: {', '.join(undone)}" if undone else "; nothing to roll back")


def add_pm_worker(
    app: guild.Guild,
    *,
    queue: str = "pm",
    phase_queue: str | None = None,
    task_queue: str = "tasks",
    results_queue: str = "results",
    concurrency: int = 16,
    phase_concurrency: int = 64,
    project_dir: str | Path | None = None,
    max_attempts: int = 3,
) -> PMWorker:
    """Register a PMWorker on ``app``: a worker on ``queue`` (projects) and one on
    ``phase_queue`` (phases and rollbacks).

    The TaskWorker (``task_queue``) and the ResultWorker (``results_queue``) may
    run in this app or in other processes on the same broker.

    Args:
        queue: the projects' queue.
        phase_queue: the phases' queue (default: ``<queue>.phases``).
        task_queue: the TaskWorker's queue.
        results_queue: the ResultWorker's queue.
        concurrency: projects at once (each waits for its workflow).
        phase_concurrency: phases at once, across projects (each mostly waits
            for its task: size it for the widest fan-out you run).
        project_dir: where ``{"file": ...}`` payloads are read from.
        max_attempts: runs of a ``pm`` job (a run that crashed waits for the
            same workflow again; a failed project is not retried).
    """
    worker = PMWorker(
        app=app,
        queue=queue,
        phase_queue=phase_queue or f"{queue}.phases",
        task_queue=task_queue,
        results_queue=results_queue,
        project_dir=Path(project_dir) if project_dir is not None else None,
    )
    # No timeouts of their own: a project lasts as long as its phases, and a
    # phase as long as its own timeout (from the project) or its task's.
    app.add_worker(
        guild.WorkerSpec(
            queue=queue,
            handler=worker.handle_project,
            concurrency=concurrency,
            timeout=None,
            max_attempts=max_attempts,
        )
    )
    app.add_worker(
        guild.WorkerSpec(
            queue=worker.phase_queue,
            handler=worker.handle_phase,
            concurrency=phase_concurrency,
            timeout=None,
            max_attempts=1,
        )
    )
    return worker


app = guild.Guild("pm")
"""A ready app for ``guild run guild_workers.pm:app``: a PMWorker on ``pm`` (phases
on ``pm.phases``), reading project files from ``$GUILD_PM_PROJECT_DIR`` if set.
Run a TaskWorker (``guild run guild_workers.task:app``) and, for post phases, a
ResultWorker on the same broker."""
add_pm_worker(app, project_dir=os.environ.get("GUILD_PM_PROJECT_DIR") or None)
