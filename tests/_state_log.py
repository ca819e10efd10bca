"""An instrument that records supervision transitions, for tests to assert on."""

from __future__ import annotations

import attrs

import guild
from guild.observability import WorkerStateChanged


@attrs.define
class StateLog(guild.Instrument):
    """Every worker state change the app reported, in order."""

    events: list[WorkerStateChanged] = attrs.Factory(list)

    def worker_state_changed(self, event: WorkerStateChanged) -> None:
        self.events.append(event)

    def states(self) -> list[str]:
        return [event.state for event in self.events]

    def count(self, state: str) -> int:
        return self.states().count(state)

    def errors(self) -> list[str]:
        """The last error of each crash."""
        return [event.last_error or "" for event in self.events if event.state == "crashed"]
