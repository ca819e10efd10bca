"""guild: a Trio-native runtime for background work.

Workers take jobs from a queue, run them as nursery-supervised task trees, and
never lose one. Start at :class:`Guild`.
"""

from __future__ import annotations

import typing

from . import _exports, _lazy
from ._version import __version__ as __version__

if typing.TYPE_CHECKING:
    from . import brokers as brokers
    from . import observability as observability
    from . import rollout as rollout
    from . import supervision as supervision
    from ._app import Guild as Guild
    from ._app import NotRunning as NotRunning
    from ._app import Periodic as Periodic
    from ._app import SupervisorOptions as SupervisorOptions
    from ._client import AsyncClient as AsyncClient
    from ._client import Client as Client
    from ._cron import Cron as Cron
    from ._cron import Every as Every
    from ._cron import ScheduleError as ScheduleError
    from ._errors import BrokerClosed as BrokerClosed
    from ._errors import BrokerDataError as BrokerDataError
    from ._errors import BrokerError as BrokerError
    from ._errors import BrokerFileReplaced as BrokerFileReplaced
    from ._errors import BrokerUnavailable as BrokerUnavailable
    from ._errors import CommandRefused as CommandRefused
    from ._errors import ConfigError as ConfigError
    from ._errors import DependencyFailure as DependencyFailure
    from ._errors import GaveUp as GaveUp
    from ._errors import GuildError as GuildError
    from ._errors import InvalidField as InvalidField
    from ._errors import InvalidHandler as InvalidHandler
    from ._errors import InvalidQueueName as InvalidQueueName
    from ._errors import InvalidWorkflow as InvalidWorkflow
    from ._errors import IsolationUnavailable as IsolationUnavailable
    from ._errors import JobError as JobError
    from ._errors import JobTimeout as JobTimeout
    from ._errors import MigrationFailed as MigrationFailed
    from ._errors import NotAWorkflowStep as NotAWorkflowStep
    from ._errors import PayloadDecodeError as PayloadDecodeError
    from ._errors import PayloadEncodeError as PayloadEncodeError
    from ._errors import RateLimitError as RateLimitError
    from ._errors import Reject as Reject
    from ._errors import ResultEncodeError as ResultEncodeError
    from ._errors import Retry as Retry
    from ._errors import SandboxError as SandboxError
    from ._errors import SandboxTimeout as SandboxTimeout
    from ._errors import SchemaMismatch as SchemaMismatch
    from ._errors import SupervisorError as SupervisorError
    from ._errors import UnknownBrokerURL as UnknownBrokerURL
    from ._errors import UnknownJob as UnknownJob
    from ._errors import UnknownWorkflow as UnknownWorkflow
    from ._errors import WorkerEnded as WorkerEnded
    from ._job import ACTIVE as ACTIVE
    from ._job import TERMINAL as TERMINAL
    from ._job import DeadLetter as DeadLetter
    from ._job import Delivery as Delivery
    from ._job import Job as Job
    from ._job import JobStatus as JobStatus
    from ._job import Priority as Priority
    from ._job import QueueStats as QueueStats
    from ._job import Result as Result
    from ._job import UndecodablePayload as UndecodablePayload
    from ._jobinfo import InvalidProgress as InvalidProgress
    from ._jobinfo import JobInfo as JobInfo
    from ._jobinfo import JobProgress as JobProgress
    from ._limits import Limit as Limit
    from ._outage import OutageBackoff as OutageBackoff
    from ._progress import progress as progress
    from ._retention import Retention as Retention
    from ._retry import Dead as Dead
    from ._retry import RetryAt as RetryAt
    from ._retry import RetryPolicy as RetryPolicy
    from ._spec import WorkerSpec as WorkerSpec
    from ._worker import ClaimerStalled as ClaimerStalled
    from ._worker import Worker as Worker
    from ._worker import WorkerStatistics as WorkerStatistics
    from .brokers import Broker as Broker
    from .brokers import Ledger as Ledger
    from .brokers import open_broker as open_broker
    from .brokers.memory import MemoryBroker as MemoryBroker
    from .config import GuildConfig as GuildConfig
    from .config import load_config as load_config
    from .observability._events import Instrument as Instrument
    from .rollout._lanes import lane_of as canary_lane
    from .rollout._machine import CanaryDecision as CanaryDecision
    from .rollout._machine import CanaryFigures as CanaryFigures
    from .rollout._machine import CanaryPhase as CanaryPhase
    from .rollout._machine import CanaryPolicy as CanaryPolicy
    from .rollout._machine import CanaryState as CanaryState
    from .rollout._machine import CanaryTransitionError as CanaryTransitionError
    from .rollout._store import CanaryRecord as CanaryRecord
    from .rollout._store import load as read_canary
    from .sandbox import Sandbox as Sandbox
    from .sandbox import SandboxPolicy as SandboxPolicy
    from .sandbox import SandboxResult as SandboxResult
    from .supervision import Backoff as Backoff
    from .supervision import ChildEvent as ChildEvent
    from .supervision import ChildSpec as ChildSpec
    from .supervision import ChildStatus as ChildStatus
    from .supervision import Circuit as Circuit
    from .supervision import Restart as Restart
    from .supervision import Strategy as Strategy
    from .supervision import Supervisor as Supervisor
    from .supervision import supervise_processes as supervise_processes
    from .workflows._spec import Compensation as Compensation
    from .workflows._spec import Step as Step
    from .workflows._spec import Workflow as Workflow
    from .workflows._spec import chain as chain
    from .workflows._spec import chord as chord
    from .workflows._spec import group as group
    from .workflows._steps import StepInput as StepInput
    from .workflows._store import WorkflowRecord as WorkflowRecord
    from .workflows._store import WorkflowStore as WorkflowStore
    from .workflows._view import CompensationView as CompensationView
    from .workflows._view import StepView as StepView
    from .workflows._view import WorkflowView as WorkflowView

# Every name loads on first use: ``import guild`` costs next to nothing, so the
# ``guild`` command (whose parent under ``--processes`` never builds an app) and
# a producer that only enqueues pay for just the parts they use (see
# docs/benchmarks.md). guild._exports says where each name is defined, and
# those modules name ``guild`` as their classes' module however they are reached.
# The subpackages an ``import guild`` used to bind stay reachable as attributes.
# Hidden from type checkers, which would otherwise accept any name at all.
if not typing.TYPE_CHECKING:
    __getattr__, __dir__ = _lazy.lazy_exports(
        __name__,
        globals(),
        _exports.EXPORTS,
        public_module=__name__,
        submodules=("brokers", "observability", "rollout", "supervision"),
    )

__all__ = [
    "ACTIVE",
    "TERMINAL",
    "AsyncClient",
    "Backoff",
    "Broker",
    "BrokerClosed",
    "BrokerDataError",
    "BrokerError",
    "BrokerFileReplaced",
    "BrokerUnavailable",
    "CanaryDecision",
    "CanaryFigures",
    "CanaryPhase",
    "CanaryPolicy",
    "CanaryRecord",
    "CanaryState",
    "CanaryTransitionError",
    "ChildEvent",
    "ChildSpec",
    "ChildStatus",
    "Circuit",
    "ClaimerStalled",
    "Client",
    "CommandRefused",
    "Compensation",
    "CompensationView",
    "ConfigError",
    "Cron",
    "Dead",
    "DeadLetter",
    "Delivery",
    "DependencyFailure",
    "Every",
    "GaveUp",
    "Guild",
    "GuildConfig",
    "GuildError",
    "Instrument",
    "InvalidField",
    "InvalidHandler",
    "InvalidProgress",
    "InvalidQueueName",
    "InvalidWorkflow",
    "IsolationUnavailable",
    "Job",
    "JobError",
    "JobInfo",
    "JobProgress",
    "JobStatus",
    "JobTimeout",
    "Ledger",
    "Limit",
    "MemoryBroker",
    "MigrationFailed",
    "NotAWorkflowStep",
    "NotRunning",
    "OutageBackoff",
    "PayloadDecodeError",
    "PayloadEncodeError",
    "Periodic",
    "Priority",
    "QueueStats",
    "RateLimitError",
    "Reject",
    "Restart",
    "Result",
    "ResultEncodeError",
    "Retention",
    "Retry",
    "RetryAt",
    "RetryPolicy",
    "Sandbox",
    "SandboxError",
    "SandboxPolicy",
    "SandboxResult",
    "SandboxTimeout",
    "ScheduleError",
    "SchemaMismatch",
    "Step",
    "StepInput",
    "StepView",
    "Strategy",
    "Supervisor",
    "SupervisorError",
    "SupervisorOptions",
    "UndecodablePayload",
    "UnknownBrokerURL",
    "UnknownJob",
    "UnknownWorkflow",
    "Worker",
    "WorkerEnded",
    "WorkerSpec",
    "WorkerStatistics",
    "Workflow",
    "WorkflowRecord",
    "WorkflowStore",
    "WorkflowView",
    "__version__",
    "canary_lane",
    "chain",
    "chord",
    "group",
    "load_config",
    "open_broker",
    "progress",
    "read_canary",
    "supervise_processes",
]
