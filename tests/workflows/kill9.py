"""kill -9 of the process coordinating workflows: the app, the driver and the oracle.

Used by tests/workflows/test_kill9.py (which asserts) and by
benchmarks/bench_workflow_kill9.py (which prints the counts).

The driver submits 20-step workflows (seeded random DAGs; half of them have a
step that fails, and every step declares a compensation), then starts
``guild run tests.workflows.kill9:app`` (one process: its workers and its
workflow coordinator) and SIGKILLs it at a random point, again and again, each
time starting a new one; after the last kill a final process runs until every
workflow has finished. Kill points (seeded): at a random time after the spawn
(during start-up and the coordinator's resume), a random while (up to 0.2 s)
after the process's k-th handler started (k from 1 to 8: mid-handler), or as
soon as its k-th handler ended (k from 1 to 6: the window between a handler's
return and its result being stored).

Every handler appends a line to a log file opened with ``O_APPEND`` when it
starts, when it ends (``ok``, ``reject``) and when it is cancelled; the driver
appends a ``kill`` line once a killed process is reaped. So the log is one total
order of what ran, written outside guild, and the oracle (:func:`check`) judges
guild's final state against it:

* every workflow ended as planned: ``done`` with every step done, or ``failed``
  at its failing step with the rest skipped or cancelled;
* a step (or compensation) runs once, except when the process running it was
  killed before the next run started. Such reruns are counted, split in two:
  the run was cut mid-handler, or it had ended but its process died before the
  result was stored (the at-least-once window). A rerun after a step that
  depends on it had started (or, for a compensation, after the next
  compensation had started) is a violation whatever the kills: the result had
  been stored and used;
* a step starts only after each of its dependencies ended ``ok``;
* compensations: exactly the done steps of a failed workflow are compensated,
  one at a time, after every step run has ended, a step that depends on
  another undone before it.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import trio

import guild
from guild import Compensation, Step, StepInput, Workflow

ROOT = Path(__file__).resolve().parents[2]
LOG_ENV = "GUILD_KILL9_LOG"
STEPS = 20
LEASE = 2.0

app = guild.Guild("kill9", workflow_poll=0.2)


def _write(record: dict[str, Any]) -> None:
    # One write of one line to an O_APPEND file: lines from every process
    # interleave whole, in the order they happened.
    line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
    fd = os.open(os.environ[LOG_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


async def _run(job: guild.Job) -> object:
    step = StepInput.of(job)
    assert isinstance(step.input, dict)
    mark = {
        "wf": step.workflow_id,
        "kind": step.kind,
        "step": step.step,
        "pid": os.getpid(),
        "attempt": job.attempt,
    }
    _write({"e": "start", **mark})
    try:
        await trio.sleep(float(step.input["sleep"]))
    except trio.Cancelled:
        _write({"e": "end", "outcome": "cancelled", **mark})
        raise
    if step.input.get("fail"):
        _write({"e": "end", "outcome": "reject", **mark})
        raise guild.Reject(f"{step.step} fails as planned")
    _write({"e": "end", "outcome": "ok", **mark})
    return {"step": step.step, "pid": os.getpid()}


# A short lease: a killed process's jobs come back within two seconds. Attempts
# are plenty: a step may be cut by several kills, and that is no failure.
app.worker("steps", concurrency=4, lease=LEASE, max_attempts=100, timeout=60)(_run)
app.worker("undo", concurrency=2, lease=LEASE, max_attempts=100, timeout=60)(_run)


# --- the workflows ------------------------------------------------------------------------


@attrs.frozen
class Plan:
    """One submitted workflow and what should become of it."""

    workflow: Workflow
    fail_step: str | None

    @property
    def id(self) -> str:
        return self.workflow.id

    def deps(self) -> dict[str, tuple[str, ...]]:
        return {step.name: step.after for step in self.workflow.steps}

    def ancestors(self, name: str) -> set[str]:
        deps, seen, todo = self.deps(), set[str](), list(self.deps()[name])
        while todo:
            one = todo.pop()
            if one not in seen:
                seen.add(one)
                todo.extend(deps[one])
        return seen


def make_plan(rng: random.Random, index: int, *, fail: bool) -> Plan:
    """A 20-step DAG: each step after one or two of the four before it (some roots)."""
    names = [f"s{i:02d}" for i in range(STEPS)]
    fail_step = names[rng.randint(5, 10)] if fail else None
    steps, compensations = [], {}
    for i, name in enumerate(names):
        window = names[max(0, i - 4) : i]
        after: list[str] = []
        if window and (rng.random() > 0.15 or name == fail_step):
            after = rng.sample(window, k=min(len(window), rng.choice((1, 1, 2))))
        payload = {"sleep": round(rng.uniform(0.05, 0.3), 3), "fail": name == fail_step}
        steps.append(Step(name, "steps", payload, after=sorted(after), compensate=f"undo-{name}"))
        compensations[f"undo-{name}"] = Compensation(
            "undo", {"sleep": round(rng.uniform(0.05, 0.2), 3)}
        )
    workflow = Workflow(steps, compensations, name=f"kill9-{index}", id=f"kill9-{index}")
    return Plan(workflow, fail_step)


# --- the driver ---------------------------------------------------------------------------


@attrs.frozen
class Kill:
    pid: int
    # "startup", "mid-step", "after-end", "no work" (every submitted workflow
    # had finished), "idle" (workflows were active, yet no progress came for 30 s),
    # or "exited CODE: ..." (it ended by itself: a violation).
    mode: str


@attrs.frozen
class Outcome:
    plans: tuple[Plan, ...]
    views: tuple[guild.WorkflowView, ...]
    kills: tuple[Kill, ...]
    lines: tuple[dict[str, Any], ...]


def _spawn(url: str, log: Path, errors: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, LOG_ENV: str(log)}
    env.pop("GUILD_BROKER", None)
    with errors.open("ab") as stderr:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "guild",
                "run",
                "tests.workflows.kill9:app",
                "--broker",
                url,
                "--log-level",
                os.environ.get("GUILD_KILL9_LOG_LEVEL", "warning"),
                "--log-format",
                "json",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


class _Tail:
    """The log's lines as they are written (the driver reads, never writes, but the kill)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.pending = b""

    def new(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with self.path.open("rb") as file:
            file.seek(self.offset)
            data = file.read()
        self.offset += len(data)
        self.pending += data
        *whole, self.pending = self.pending.split(b"\n")
        return [json.loads(line) for line in whole]


async def _wait_then_kill(
    process: subprocess.Popen[bytes],
    rng: random.Random,
    tail: _Tail,
    log: Path,
    errors: Path,
    busy: Callable[[], Awaitable[bool]],
) -> Kill:
    roll = rng.random()
    mode = "startup" if roll < 0.2 else "mid-step" if roll < 0.7 else "after-end"
    # Kills spread over the whole run, compensations included: a process gets
    # to start a few steps, or end a few, before it is killed.
    wanted = rng.randint(1, 8) if mode == "mid-step" else rng.randint(1, 6)
    delay = rng.uniform(0.0, 2.0) if mode == "startup" else rng.uniform(0.0, 0.2)
    tail.new()
    if mode != "startup":
        seen, counted = 0, "start" if mode == "mid-step" else "end"
        next_look = trio.current_time() + 0.5
        with trio.move_on_after(float(os.environ.get("GUILD_KILL9_IDLE", "30"))) as waited:
            while True:
                for line in tail.new():
                    if line.get("pid") != process.pid:
                        continue
                    if line["e"] == counted:
                        seen += 1
                if seen >= wanted or process.poll() is not None:
                    break
                if trio.current_time() >= next_look:
                    # Every submitted workflow finished: no progress can come.
                    if not await busy():
                        mode = "no work"
                        break
                    next_look = trio.current_time() + 0.5
                await trio.sleep(0.005)
        if waited.cancelled_caught:
            # Workflows were active, yet the process started or ended nothing.
            mode = "idle"
        if mode == "after-end":
            delay = 0.0
    await trio.sleep(delay)
    code = process.poll()
    if code is None:
        process.send_signal(signal.SIGKILL)
        await trio.to_thread.run_sync(process.wait)
    else:
        # It died of something else: the oracle counts that as a violation.
        mode = f"exited {code}: {_last_line(errors)}"
    # Written once the process is reaped: every line it wrote comes before.
    _append(log, {"e": "kill", "pid": process.pid, "mode": mode})
    return Kill(process.pid, mode)


def _last_line(path: Path) -> str:
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1][:300] if lines else "(nothing on stderr)"


def _append(log: Path, record: dict[str, Any]) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(record, separators=(",", ":")) + "\n").encode())
    finally:
        os.close(fd)


async def stress(
    url: str,
    directory: Path,
    *,
    seed: int,
    kills: int = 20,
    workflows: int = 4,
    finish_within: float = 180.0,
) -> Outcome:
    """Submit ``workflows`` workflows, kill ``kills`` coordinating processes, finish, read.

    The workflows are submitted one every ``kills / workflows`` kills (or
    sooner, when every one submitted has finished), so that kills land in every
    phase of each: its first steps, its middle, and (for a failing one) its
    compensations. So a kill that waited in vain for progress ("idle") means
    processes made none for ``GUILD_KILL9_IDLE`` seconds (30) while a workflow
    was active.
    """
    rng = random.Random(seed)
    log = directory / "runs.log"
    plans = tuple(make_plan(rng, i, fail=i % 2 == 0) for i in range(workflows))
    waiting = list(plans)
    tail = _Tail(log)
    done: list[Kill] = []
    async with guild.open_broker(url) as broker:

        async def busy() -> bool:
            submitted = plans[: len(plans) - len(waiting)]
            for plan in submitted:
                if not (await app.workflow(plan.id, broker=broker)).finished:
                    return True
            return False

        for round_ in range(kills):
            while waiting and (
                not await busy() or (len(plans) - len(waiting)) * kills <= round_ * workflows
            ):
                await app.submit(waiting.pop(0).workflow, broker=broker)
            errors = directory / f"child{round_:02d}.err"
            process = _spawn(url, log, errors)
            try:
                done.append(await _wait_then_kill(process, rng, tail, log, errors, busy))
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()
    final_errors = directory / "final.err"
    final = _spawn(url, log, final_errors)
    views: list[guild.WorkflowView] = []
    try:
        async with guild.open_broker(url) as broker:
            for plan in waiting:
                await app.submit(plan.workflow, broker=broker)
            with trio.move_on_after(finish_within):
                while True:
                    views = [await app.workflow(p.id, broker=broker) for p in plans]
                    if all(view.finished for view in views):
                        break
                    code = final.poll()
                    if code is not None:
                        mode = f"exited {code}: {_last_line(final_errors)}"
                        _append(log, {"e": "kill", "pid": final.pid, "mode": mode})
                        break
                    await trio.sleep(0.2)
    finally:
        final.send_signal(signal.SIGTERM)
        try:
            await trio.to_thread.run_sync(lambda: final.wait(30))
        except subprocess.TimeoutExpired:
            final.kill()
            final.wait()
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    return Outcome(plans, tuple(views), tuple(done), tuple(lines))


# --- the oracle ---------------------------------------------------------------------------


@attrs.define
class Run:
    wf: str
    kind: str
    step: str
    pid: int
    attempt: int
    start: int
    end: int | None = None
    outcome: str | None = None


@attrs.define
class Report:
    """What the log says happened, and every way it broke the rules."""

    workflows: Counter[str] = attrs.field(factory=Counter)
    kills: Counter[str] = attrs.field(factory=Counter)
    kills_cutting_a_handler: int = 0
    step_runs: int = 0
    compensation_runs: int = 0
    reruns_cut_mid_run: int = 0
    reruns_after_end: int = 0
    compensation_reruns_cut_mid_run: int = 0
    compensation_reruns_after_end: int = 0
    violations: list[str] = attrs.field(factory=list)

    def as_dict(self) -> dict[str, Any]:
        data = attrs.asdict(self)
        data["workflows"] = dict(self.workflows)
        data["kills"] = dict(self.kills)
        return data


Key = tuple[str, str, str]


def _runs(
    lines: Sequence[dict[str, Any]], report: Report
) -> tuple[dict[Key, list[Run]], dict[int, int]]:
    runs: dict[Key, list[Run]] = {}
    open_runs: dict[tuple[str, str, str, int, int], Run] = {}
    killed: dict[int, int] = {}
    for index, line in enumerate(lines):
        if line["e"] == "kill":
            killed[line["pid"]] = index
            report.kills[line["mode"]] += 1
            if line["mode"].startswith("exited"):
                report.violations.append(f"pid {line['pid']} {line['mode']} before its kill")
            cut = [key for key in open_runs if key[3] == line["pid"]]
            report.kills_cutting_a_handler += bool(cut)
            for key in cut:
                del open_runs[key]
            continue
        key = (line["wf"], line["kind"], line["step"], line["pid"], line["attempt"])
        if line["e"] == "start":
            if key in open_runs:
                report.violations.append(f"{key}: the same attempt started twice")
            run = Run(*key, start=index)
            open_runs[key] = run
            runs.setdefault(key[:3], []).append(run)
        else:
            found = open_runs.pop(key, None)
            if found is None:
                report.violations.append(f"{key}: ended without a start")
                continue
            found.end, found.outcome = index, line["outcome"]
    for key in open_runs:
        report.violations.append(f"{key}: neither ended nor killed")
    return runs, killed


def check(
    plans: Sequence[Plan], views: Sequence[guild.WorkflowView], lines: Sequence[dict[str, Any]]
) -> Report:
    report = Report()
    runs, killed = _runs(lines, report)
    by_id = {plan.id: plan for plan in plans}
    for plan, view in zip(plans, views, strict=True):
        report.workflows[view.status] += 1
        _check_workflow(plan, view, runs, killed, report)
    for (wf, kind, step), found in runs.items():
        if wf not in by_id:
            report.violations.append(f"{wf}: a run of a workflow never submitted")
            continue
        if kind == "step":
            report.step_runs += len(found)
        else:
            report.compensation_runs += len(found)
        _check_reruns(by_id[wf], kind, step, found, runs, killed, report)
    return report


def _check_reruns(
    plan: Plan,
    kind: str,
    step: str,
    found: list[Run],
    runs: Mapping[Key, list[Run]],
    killed: Mapping[int, int],
    report: Report,
) -> None:
    where = f"{plan.id} {kind} {step}"
    for run, again in itertools.pairwise(found):
        died = killed.get(run.pid)
        if died is None or died > again.start:
            report.violations.append(
                f"{where}: ran again (pid {again.pid}) with no kill of pid {run.pid} before"
            )
            continue
        # Cut mid-handler, or ended (ok, reject, cancelled) with its process
        # killed before the outcome was stored: both the at-least-once window.
        in_window = run.outcome is not None
        if kind == "step":
            if in_window:
                report.reruns_after_end += 1
            else:
                report.reruns_cut_mid_run += 1
            users = [s for s, after in plan.deps().items() if step in after]
            used = [
                s
                for s in users
                if any(r.start < again.start for r in runs.get((plan.id, "step", s), []))
            ]
            if used:
                report.violations.append(
                    f"{where}: ran again after {used} had started on its result"
                )
        else:
            if in_window:
                report.compensation_reruns_after_end += 1
            else:
                report.compensation_reruns_cut_mid_run += 1
            later = [
                s
                for (wf, k, s), others in runs.items()
                if wf == plan.id and k == "compensation" and s != step
                for r in others
                if run.start < r.start < again.start
            ]
            if later:
                report.violations.append(
                    f"{where}: ran again after the compensation of {later} had started"
                )


def _last_end(run: Run, killed: Mapping[int, int]) -> int:
    if run.end is not None:
        return run.end
    return killed.get(run.pid, 10**12)


def _check_workflow(
    plan: Plan,
    view: guild.WorkflowView,
    runs: Mapping[Key, list[Run]],
    killed: Mapping[int, int],
    report: Report,
) -> None:
    wid = plan.id
    if not view.finished:
        report.violations.append(f"{wid}: not finished ({view.status})")
        return
    expected = "done" if plan.fail_step is None else "failed"
    if view.status != expected or view.failed_step != plan.fail_step:
        report.violations.append(
            f"{wid}: ended {view.status} at {view.failed_step}, not {expected} at {plan.fail_step}"
        )
    deps = plan.deps()
    states = {step.name: step.state for step in view.steps}
    for name, state in states.items():
        found = runs.get((wid, "step", name), [])
        last = found[-1] if found else None
        if state == "done" and (last is None or last.outcome != "ok"):
            report.violations.append(f"{wid} {name}: done, but its last run did not end ok")
        elif state == "failed" and (
            name != plan.fail_step or last is None or last.outcome != "reject"
        ):
            report.violations.append(f"{wid} {name}: failed, but it was not the failing step")
        elif state == "skipped" and found:
            report.violations.append(f"{wid} {name}: skipped, but it ran {len(found)} times")
        elif state in ("pending", "running"):
            report.violations.append(f"{wid} {name}: {state} in a finished workflow")
        if plan.fail_step is None and state != "done":
            report.violations.append(f"{wid} {name}: {state} in a workflow that cannot fail")
        for run in found:
            for dep in deps[name]:
                if not any(
                    r.outcome == "ok" and r.end is not None and r.end < run.start
                    for r in runs.get((wid, "step", dep), [])
                ):
                    report.violations.append(
                        f"{wid} {name}: started before its dependency {dep} had ended ok"
                    )
    undone = {
        name: found
        for (wf, kind, name), found in runs.items()
        if wf == wid and kind == "compensation"
    }
    should = {name for name, state in states.items() if state == "done"}
    if plan.fail_step is None:
        should = set()
    if set(undone) != should:
        report.violations.append(
            f"{wid}: compensated {sorted(undone)}, but its done steps are {sorted(should)}"
        )
    for name, found in undone.items():
        if found[-1].outcome != "ok":
            report.violations.append(f"{wid} undo {name}: its last run did not end ok")
    steps_over = max(
        (
            _last_end(r, killed)
            for (wf, kind, _), rs in runs.items()
            if wf == wid and kind == "step"
            for r in rs
        ),
        default=-1,
    )
    ordered = sorted(undone.items(), key=lambda item: item[1][0].start)
    for name, found in ordered:
        if found[0].start < steps_over:
            report.violations.append(f"{wid} undo {name}: started while a step still ran")
    for (first, before), (second, after) in itertools.pairwise(ordered):
        if _last_end(before[-1], killed) > after[0].start:
            report.violations.append(f"{wid}: undo {second} started before undo {first} ended")
    position = {name: i for i, (name, _) in enumerate(ordered)}
    for name in position:
        for ancestor in plan.ancestors(name) & set(position):
            if position[ancestor] < position[name]:
                report.violations.append(
                    f"{wid}: undo {ancestor} ran before undo {name}, which runs after it"
                )
