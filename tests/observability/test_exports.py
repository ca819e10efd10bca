"""guild.observability's public names are exactly its __all__."""

from __future__ import annotations

import types

import guild.observability as observability


class TestExports:
    """The namespace re-exports its public names and nothing private leaks."""

    def test_all_matches_public_names(self) -> None:
        public = {
            name
            # dir(), not vars(): the HTTP and Prometheus names load on first use.
            for name in dir(observability)
            if not name.startswith("_")
            and name != "annotations"
            and not isinstance(getattr(observability, name), types.ModuleType)
        }
        assert set(observability.__all__) == public
        assert len(observability.__all__) == len(public)

    def test_classes_report_a_public_module(self) -> None:
        assert observability.PrometheusInstrument.__module__ == "guild.observability"
        assert observability.Thresholds.__module__ == "guild.observability"
