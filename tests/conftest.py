"""Shared fixtures, and the rules that keep this suite deterministic.

* Network: loopback only, port 0 (the OS picks a free port); tests start their own
  redis-server on a free port and never use a shared one.
* Clocks: ``autojump_clock`` (``trio.testing.MockClock(autojump_threshold=0)``) only
  where no real I/O is in flight: the memory broker, policies, the rate limiter.
  Tests with SQLite, Redis, subprocesses or sockets use the real clock, wrapped in
  an absolute ``trio.fail_after`` so a hang fails fast instead of stalling CI.
* Shutdown: one side always starts it (a drain, a cancel, a signal), and the test
  asserts what was left behind, not how long it took. Speed lives in benchmarks/.
* Hypothesis: no per-example deadline. A deadline is a timed assertion, and on a
  loaded 2-core machine it failed examples that were right, only slow.

``autojump_clock`` comes from pytest-trio; ``memory_broker`` and ``run_app`` from
guild's own pytest plugin (``guild.testing._plugin``), the one users get.
"""

from __future__ import annotations

from hypothesis import settings

settings.register_profile("guild", deadline=None)
settings.load_profile("guild")
