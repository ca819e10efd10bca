"""guild's pytest plugin (entry point ``pytest11``): fixtures for testing workers.

Everyone who installs guild gets this plugin loaded into every pytest run, so
loading it imports nothing beyond guild's own runtime dependencies and pytest:
the fixtures run on pytest-trio, an extra (``pip install 'guild[testing]'``).
Without it the fixtures still exist, and a test that asks for one fails saying
which extra to install; every other test runs as if the plugin were not there.

(``autojump_clock`` comes from pytest-trio itself: ask for it and virtual time
jumps whenever every task is blocked, so retries, backoff and leases that take
minutes run in milliseconds; the memory broker follows it.)

* ``memory_broker`` — a fresh :class:`guild.MemoryBroker`, closed afterwards.
* ``run_app`` — ``await run_app(app, broker)`` starts an app in the test's
  nursery and returns once every worker is claiming; it is drained when the
  test ends.
"""

from __future__ import annotations

import pytest

EXTRA = "pip install 'guild[testing]'"

# pytest-trio's own entry-point name: present when installed and not disabled (-p no:trio).
_PYTEST_TRIO = "trio"


def _missing(fixture: str) -> None:
    pytest.fail(
        f"guild's {fixture} fixture runs on pytest-trio, which is not installed"
        f" (or disabled with -p no:trio): {EXTRA}",
        pytrace=False,
    )


class _WithoutTrio:
    """Stand-ins with the fixtures' names that say which extra they need."""

    @pytest.fixture
    def memory_broker(self) -> None:
        _missing("memory_broker")

    @pytest.fixture
    def run_app(self) -> None:
        _missing("run_app")


def pytest_configure(config: pytest.Config) -> None:
    # Every pytest11 plugin is loaded before pytest_configure, so pytest-trio's
    # presence is known here whatever order the entry points came in.
    if config.pluginmanager.hasplugin(_PYTEST_TRIO):
        from . import _trio_fixtures

        config.pluginmanager.register(_trio_fixtures, "guild-fixtures")
    else:
        config.pluginmanager.register(_WithoutTrio(), "guild-fixtures")
