"""Canary rollouts with real processes: ``guild run app_v1:app`` serving, a producer
in its own process, ``guild run app_v2:app --canary`` joining; on SQLite and Redis.

The oracle is the jobs themselves: the producer writes down every job it enqueued,
with the share the broker held just before, and each job's result says which
version ran it.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

from tests._redis_server import RedisServer

ROOT = Path(__file__).resolve().parent.parent.parent


def _load_demo() -> Any:
    """The example's orchestration, loaded from its file, run as a library."""
    path = ROOT / "examples" / "canary" / "main.py"
    spec = importlib.util.spec_from_file_location("canary_demo", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["canary_demo"] = module  # attrs classes look their module up
    spec.loader.exec_module(module)
    return module


demo = _load_demo()
_databases = iter(range(1, 16))


def _url(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path}/canary.db"
    server: RedisServer = request.getfixturevalue("redis_server")
    return f"redis://127.0.0.1:{server.port}/{next(_databases)}"


def _check_common(report: Any, kind: str) -> None:
    assert report.enqueued > 100
    assert report.lost == 0, report
    for stage in report.stages:
        # v2 runs only what the broker sent to its lane.
        assert stage.ran_v2 <= stage.routed
        # Exact where the share held still around an enqueue (no rollout write
        # between the producer's reads before and after it).
        if stage.phase == "none":
            assert stage.settled_routed == 0  # no share stored yet: nothing routed
        if stage.phase == "promoted":
            assert stage.settled_routed == stage.settled
        if stage.phase == "rolled_back" and kind == "sqlite":
            # SQLite reads the share in the enqueue's transaction: none after it is 0.
            assert stage.settled_routed == 0


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_a_healthy_canary_is_promoted_stage_by_stage(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    report = demo.scenario(_url(kind, tmp_path, request), "healthy", tmp_path, soak=2.0)
    demo.show(report)
    assert report.outcome == "promoted"
    assert [d.split(" (")[0] for d in report.decisions] == [
        "start: none 0% -> soaking 10%",
        "observe: soaking 10% -> soaking 50%",
        "observe: soaking 50% -> soaking 100%",
        "observe: soaking 100% -> promoted 100%",
    ]
    _check_common(report, kind)
    by_target = {(s.phase, s.target): s for s in report.stages}
    for target in (0.1, 0.5):
        stage = by_target[("soaking", target)]
        # Loose bounds: the producer's reading of the share and its enqueue are
        # two steps, and a Redis producer's view may lag by a second.
        assert 0.0 < stage.routed / stage.enqueued < min(1.0, 2.5 * target)


@pytest.mark.parametrize(
    ("kind", "mode"),
    [("sqlite", "errors"), ("redis", "errors"), ("sqlite", "slow"), ("redis", "slow")],
)
def test_a_bad_canary_is_rolled_back_within_ten_seconds(
    kind: str, mode: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    report = demo.scenario(_url(kind, tmp_path, request), mode, tmp_path, soak=2.0)
    demo.show(report)
    assert report.outcome == "rolled_back"
    assert report.decided_after < 10.0
    assert [d.split(" (")[0] for d in report.decisions] == [
        "start: none 0% -> soaking 10%",
        "observe: soaking 10% -> rolled_back 0%",
    ]
    why = report.decisions[-1]
    assert ("error rate" in why) if mode == "errors" else ("p95" in why)
    _check_common(report, kind)
