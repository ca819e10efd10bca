"""kill -9 of the process coordinating 20-step workflows: how many steps ran twice, and why.

    python benchmarks/bench_workflow_kill9.py [--kills 20] [--seed N] [--rounds R]
                                              [--broker sqlite|redis ...] [--json]

Per broker (a SQLite file, and a private redis-server when one can be started):
four 20-step workflows, two of which fail midway and are compensated, while
``guild run`` processes coordinating and working them are SIGKILLed ``--kills``
times at random points and restarted, then one runs until every workflow has
finished. The harness and its oracle are tests/workflows/kill9.py (the same as
tests/workflows/test_kill9.py asserts on); every handler run is counted from a
log the handlers append to, not from guild's records. ``--rounds`` repeats the
whole run with seeds ``seed``, ``seed + 1``, ... Exit 1 if any run broke a rule;
the files of such a run (the handlers' log, each process's stderr) are kept,
and so are those of a run where a process made no progress for 30 s.

Columns: *kills* by where they landed (s: at a random time after the spawn, m: a
while after a handler started, a: right after a handler ended, n: every
submitted workflow had finished, i: workflows were active but no handler
started or ended for 30 s);
*cut*: kills that cut at least one running handler; *step runs* and
*undo runs*: handler runs of steps and of compensations; *rerun (cut)*: runs
again after a kill mid-handler; *rerun (ended)*: runs again of a handler that
had ended but whose process was killed before its outcome was stored (the
at-least-once window: a completed step that ran twice); *violations*: anything
else (must be 0).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests._redis_server import running_redis_server  # noqa: E402
from tests.workflows.kill9 import check, stress  # noqa: E402


def one_run(kind: str, seed: int, kills: int) -> dict[str, Any]:
    directory = Path(tempfile.mkdtemp(prefix=f"guild-kill9-{kind}-"))
    started = time.monotonic()
    if kind == "sqlite":
        url = f"sqlite:///{directory}/kill9.db"
        outcome = trio.run(lambda: stress(url, directory, seed=seed, kills=kills))
    else:
        with running_redis_server(appendonly=True) as server:
            outcome = trio.run(lambda: stress(server.url, directory, seed=seed, kills=kills))
    report = check(outcome.plans, outcome.views, outcome.lines)
    # Kept for a look when something went wrong (the handlers' log, each process's stderr).
    odd = report.violations or set(report.kills) - {"startup", "mid-step", "after-end", "no work"}
    if not odd:
        shutil.rmtree(directory)
    return {
        "broker": kind,
        "seed": seed,
        "seconds": round(time.monotonic() - started, 1),
        "kept": str(directory) if odd else None,
        **report.as_dict(),
    }


def row(found: dict[str, Any]) -> list[str]:
    kills = found["kills"]
    where = "/".join(
        str(kills.get(mode, 0)) for mode in ("startup", "mid-step", "after-end", "no work", "idle")
    )
    workflows = ", ".join(f"{n} {status}" for status, n in sorted(found["workflows"].items()))
    return [
        found["broker"],
        str(found["seed"]),
        f"{sum(kills.values())} ({where})",
        str(found["kills_cutting_a_handler"]),
        str(found["step_runs"]),
        str(found["reruns_cut_mid_run"]),
        str(found["reruns_after_end"]),
        str(found["compensation_runs"]),
        str(found["compensation_reruns_cut_mid_run"] + found["compensation_reruns_after_end"]),
        str(len(found["violations"])),
        workflows,
        f"{found['seconds']:.0f}",
    ]


HEADERS = [
    "broker",
    "seed",
    "kills (s/m/a/n/i)",
    "cut",
    "step runs",
    "rerun (cut)",
    "rerun (ended)",
    "undo runs",
    "undo reruns",
    "violations",
    "workflows",
    "s",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=20261201)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--broker", action="append", choices=("sqlite", "redis"))
    parser.add_argument("--json", action="store_true", help="one JSON object a run")
    args = parser.parse_args()
    found = [
        one_run(kind, args.seed + n, args.kills)
        for n in range(args.rounds)
        for kind in args.broker or ["sqlite", "redis"]
    ]
    if args.json:
        for one in found:
            print(json.dumps(one))
    else:
        cells = [HEADERS, *(row(one) for one in found)]
        widths = [max(len(r[i]) for r in cells) for i in range(len(HEADERS))]
        for r in cells:
            print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        for one in found:
            for violation in one["violations"]:
                print(f"{one['broker']} seed {one['seed']}: {violation}")
            if one["kept"]:
                print(f"{one['broker']} seed {one['seed']}: its files are in {one['kept']}")
    return 1 if any(one["violations"] for one in found) else 0


if __name__ == "__main__":
    sys.exit(main())
