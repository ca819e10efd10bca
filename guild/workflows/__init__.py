"""Workflows: DAGs of jobs with sagas (see docs/workflows.md).

The public names are re-exported from :mod:`guild`; this package holds the
implementation. Each loads on first use (PEP 562, see guild._lazy): importing
one module of the package, as the brokers and the app do for the store's
protocol, does not build the specs, views and machine.
"""

from __future__ import annotations

import typing

from .. import _lazy

if typing.TYPE_CHECKING:
    from ._spec import Compensation as Compensation
    from ._spec import Step as Step
    from ._spec import Workflow as Workflow
    from ._spec import chain as chain
    from ._spec import chord as chord
    from ._spec import group as group
    from ._steps import StepInput as StepInput
    from ._store import WorkflowRecord as WorkflowRecord
    from ._store import WorkflowStore as WorkflowStore
    from ._view import CompensationView as CompensationView
    from ._view import StepView as StepView
    from ._view import WorkflowView as WorkflowView

# Hidden from type checkers, which would otherwise accept any name at all.
if not typing.TYPE_CHECKING:
    __getattr__, __dir__ = _lazy.lazy_exports(
        __name__,
        globals(),
        {
            "Compensation": "._spec",
            "Step": "._spec",
            "Workflow": "._spec",
            "chain": "._spec",
            "chord": "._spec",
            "group": "._spec",
            "StepInput": "._steps",
            "WorkflowRecord": "._store",
            "WorkflowStore": "._store",
            "CompensationView": "._view",
            "StepView": "._view",
            "WorkflowView": "._view",
        },
        # The public path: guild re-exports each of them (guild.Workflow).
        public_module="guild",
    )
