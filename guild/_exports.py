"""Where each name of ``guild``'s public API is defined, and its ``__module__``.

``import guild`` imports none of these modules (see :mod:`guild._lazy`): each
name loads on first use. A public class still says ``guild.Job``, not
``guild._job.Job``, in reprs, tracebacks and pickles however its module was
first reached (through ``guild.Job`` or inside the runtime): every module
listed here ends with ``publish(globals())``.
"""

from __future__ import annotations

from typing import Any

PACKAGE = "guild"

EXPORTS = {
    "ACTIVE": "._job",
    "TERMINAL": "._job",
    "DeadLetter": "._job",
    "Delivery": "._job",
    "Job": "._job",
    "JobStatus": "._job",
    "Priority": "._job",
    "QueueStats": "._job",
    "Result": "._job",
    "UndecodablePayload": "._job",
    "Guild": "._app",
    "NotRunning": "._app",
    "Periodic": "._app",
    "SupervisorOptions": "._app",
    "AsyncClient": "._client",
    "Client": "._client",
    "Cron": "._cron",
    "Every": "._cron",
    "ScheduleError": "._cron",
    "BrokerClosed": "._errors",
    "BrokerDataError": "._errors",
    "BrokerError": "._errors",
    "BrokerFileReplaced": "._errors",
    "BrokerUnavailable": "._errors",
    "CommandRefused": "._errors",
    "ConfigError": "._errors",
    "DependencyFailure": "._errors",
    "GaveUp": "._errors",
    "GuildError": "._errors",
    "InvalidField": "._errors",
    "InvalidHandler": "._errors",
    "InvalidQueueName": "._errors",
    "InvalidWorkflow": "._errors",
    "IsolationUnavailable": "._errors",
    "JobError": "._errors",
    "JobTimeout": "._errors",
    "MigrationFailed": "._errors",
    "NotAWorkflowStep": "._errors",
    "PayloadDecodeError": "._errors",
    "PayloadEncodeError": "._errors",
    "RateLimitError": "._errors",
    "Reject": "._errors",
    "ResultEncodeError": "._errors",
    "Retry": "._errors",
    "SandboxError": "._errors",
    "SandboxTimeout": "._errors",
    "SchemaMismatch": "._errors",
    "SupervisorError": "._errors",
    "UnknownBrokerURL": "._errors",
    "UnknownJob": "._errors",
    "UnknownWorkflow": "._errors",
    "WorkerEnded": "._errors",
    "InvalidProgress": "._jobinfo",
    "JobInfo": "._jobinfo",
    "JobProgress": "._jobinfo",
    "Limit": "._limits",
    "OutageBackoff": "._outage",
    "progress": "._progress",
    "Retention": "._retention",
    "Dead": "._retry",
    "RetryAt": "._retry",
    "RetryPolicy": "._retry",
    "WorkerSpec": "._spec",
    "ClaimerStalled": "._worker",
    "Worker": "._worker",
    "WorkerStatistics": "._worker",
    "Broker": ".brokers._protocol",
    "Ledger": ".brokers._ledger",
    "open_broker": ".brokers._url",
    "MemoryBroker": ".brokers.memory",
    "WorkflowRecord": ".brokers._workflow_store",
    "WorkflowStore": ".brokers._workflow_store",
    "GuildConfig": ".config._schema",
    "load_config": ".config._load",
    "Instrument": ".observability._events",
    "canary_lane": ".rollout._lanes:lane_of",
    "CanaryDecision": ".rollout._machine",
    "CanaryFigures": ".rollout._machine",
    "CanaryPhase": ".rollout._machine",
    "CanaryPolicy": ".rollout._machine",
    "CanaryState": ".rollout._machine",
    "CanaryTransitionError": ".rollout._machine",
    "CanaryRecord": ".rollout._store",
    "read_canary": ".rollout._store:load",
    "Sandbox": ".sandbox._process",
    "SandboxResult": ".sandbox._process",
    "SandboxPolicy": ".sandbox._policy",
    "Backoff": ".supervision._policy",
    "Circuit": ".supervision._policy",
    "Restart": ".supervision._policy",
    "Strategy": ".supervision._policy",
    "ChildEvent": ".supervision._supervisor",
    "ChildSpec": ".supervision._supervisor",
    "ChildStatus": ".supervision._supervisor",
    "Supervisor": ".supervision._supervisor",
    "supervise_processes": ".supervision._processes",
    "Compensation": ".workflows._spec",
    "Step": ".workflows._spec",
    "Workflow": ".workflows._spec",
    "chain": ".workflows._spec",
    "chord": ".workflows._spec",
    "group": ".workflows._spec",
    "StepInput": ".workflows._steps",
    "CompensationView": ".workflows._view",
    "StepView": ".workflows._view",
    "WorkflowView": ".workflows._view",
}
"""Each lazily exported name and its defining module, relative to ``guild``
(``"module:attribute"`` when the module calls it something else)."""


def publish(namespace: dict[str, Any]) -> None:
    """Give the classes ``guild`` exports from this module ``__module__ = "guild"``.

    ``namespace`` is the defining module's ``globals()``; call it after the
    module's last class. Pickles stay loadable: ``guild.X`` loads the module
    and is the same class.
    """
    module = namespace["__name__"]
    for name, target in EXPORTS.items():
        target_module, _, attribute = target.partition(":")
        if PACKAGE + target_module != module:
            continue
        value = namespace.get(attribute or name)
        if isinstance(value, type) and value.__module__ == module:
            value.__module__ = PACKAGE
