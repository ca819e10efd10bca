"""The PM worker's resident memory over many projects: flat, or growing?

    python benchmarks/bench_pm_memory.py                       # 10,000 projects on SQLite
    python benchmarks/bench_pm_memory.py --broker memory -n 10000
    python benchmarks/bench_pm_memory.py --json

One process runs a PMWorker (projects and phases) on a fresh broker (a SQLite
file in a temporary directory, or the memory broker). It runs ``n`` small
projects, ``batch`` at a time: each has three inline-action phases, two side
by side and a third after both (``a``, ``b`` -> ``c``), every tenth project
failing in ``c`` so that the rollbacks of ``a`` and ``b`` run too. After every
``every`` projects it prints the process's resident set size, read from
``/proc/self/statm`` (Linux); the figures to compare are the RSS after the
first thousand projects and after the last, once the caches and SQLite's page
cache have filled. Each project's outcome is checked (done, or failed with its
two rollbacks), so a fast run that lost projects cannot pass.

The memory broker keeps every job, result and workflow record it was given,
by design (it is a process's whole store): its RSS grows with the data, and
this benchmark shows by how much per project.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import structlog
import trio

import guild
from guild_workers.pm import PhaseContext, add_pm_worker, project_workflow_id


def rss_mb() -> float:
    """This process's resident set size, in MiB."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / (1 << 20)


def project(n: int) -> dict[str, Any]:
    return {
        "project": {
            "name": f"p{n}",
            "phases": {
                "a": {"action": "work", "rollback": "undo"},
                "b": {"action": "work", "rollback": "undo"},
                "c": {"action": "work", "after": ["a", "b"], "args": {"fail": n % 10 == 9}},
            },
            "rollbacks": {"undo": {"action": "undo"}},
        }
    }


async def run(
    broker_url: str, n: int, batch: int, every: int, delete_workflows: bool = False
) -> list[dict[str, float]]:
    app = guild.Guild("pm-memory", workflow_poll=1.0)
    pm = add_pm_worker(app, concurrency=batch, phase_concurrency=4 * batch)

    @pm.action("work")
    async def work(ctx: PhaseContext) -> dict[str, Any]:
        if ctx.args and ctx.args.get("fail"):
            raise guild.Reject("planned failure")
        return {"phase": ctx.phase, "x": "y" * 200}

    @pm.action("undo")
    async def undo(ctx: PhaseContext) -> str:
        return f"undid {ctx.phase}"

    rows: list[dict[str, float]] = []
    started = time.perf_counter()
    async with guild.open_broker(broker_url) as broker, app.open(broker):
        for first in range(0, n, batch):
            jobs = await app.enqueue_many("pm", [project(i) for i in range(first, first + batch)])
            for i, job in enumerate(jobs, start=first):
                result = await app.result(job, wait=120)
                assert result is not None, f"project {i} did not finish"
                if i % 10 == 9:
                    assert result.status is guild.JobStatus.DEAD, result
                    assert result.error is not None and "rolled back: " in result.error, result
                else:
                    assert result.ok, result
            if delete_workflows:
                assert isinstance(broker, guild.WorkflowStore)
                await broker.delete_workflows([project_workflow_id(job.id) for job in jobs])
            done = first + batch
            if done % every == 0:
                row = {"projects": done, "rss_mib": round(rss_mb(), 1)}
                row["seconds"] = round(time.perf_counter() - started, 1)
                rows.append(row)
                print(
                    f"{done:>6} projects  rss {row['rss_mib']:7.1f} MiB  {row['seconds']:7.1f} s",
                    flush=True,
                )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=10_000, help="projects (default 10,000)")
    parser.add_argument("--batch", type=int, default=100, help="projects in flight")
    parser.add_argument("--every", type=int, default=1_000, help="print RSS every N projects")
    parser.add_argument("--broker", choices=["sqlite", "memory"], default="sqlite")
    parser.add_argument(
        "--url", help="a broker URL instead (e.g. memory://?result_ttl=5&done_ttl=5&dead_ttl=5)"
    )
    parser.add_argument(
        "--delete-workflows",
        action="store_true",
        help="delete each batch's workflow records once read (guild keeps them until deleted)",
    )
    parser.add_argument("--json", action="store_true", help="print the rows as JSON at the end")
    args = parser.parse_args()
    # A log line per job would be most of the work measured.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    with tempfile.TemporaryDirectory(prefix="guild-pm-memory-") as tmp:
        url = f"sqlite:///{tmp}/pm.db" if args.broker == "sqlite" else "memory://"
        url = args.url or url
        rows = trio.run(run, url, args.n, args.batch, args.every, args.delete_workflows)
    first, last = rows[0], rows[-1]
    print(
        f"rss after {first['projects']:.0f}: {first['rss_mib']} MiB; after {last['projects']:.0f}:"
        f" {last['rss_mib']} MiB; growth {last['rss_mib'] - first['rss_mib']:+.1f} MiB"
    )
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
