"""Workflows: DAGs of jobs with sagas (see docs/workflows.md).

The public names are re-exported from :mod:`guild`; this package holds the
implementation.
"""

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
