"""The ``guild`` command's contract, shown through real ``guild`` processes.

Careless input is one ``guild: error:`` line and exit code 2, with nothing
created; ``guild run`` prints where it is at start (here as a JSON line), warns
of a periodic job no worker takes, and drains to exit 0 on SIGINT.

    python examples/cli_contract_demo.py      # in an empty directory: it writes shop.py
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

APP = """
import guild

app = guild.Guild("shop")


@app.worker("emails", concurrency=4)
async def send(job: guild.Job) -> None:
    return None


app.periodic("0 3 * * *", "reports", name="nightly-report")  # no worker takes "reports"
"""


def guild(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "guild", *args], capture_output=True, text=True, check=False
    )


def main() -> None:
    Path("shop.py").write_text(APP)
    for args in (
        ["enqueue", "emails", '{"n": NaN}'],
        ["enqueue", " ", "1"],
        ["enqueue", "emails", "1", "--delay", "inf"],
        ["stats"],
        ["run", "shop:app", "--processes", "0"],
    ):
        done = guild(*args)
        print(f"guild {' '.join(args):42} -> exit {done.returncode}: {done.stderr.strip()}")
    print("database created by the errors:", Path("guild.db").exists())

    print(guild("enqueue", "emails", '{"to": "ada@example.com"}').stdout.strip())
    run = subprocess.Popen(
        [sys.executable, "-m", "guild", "run", "shop:app", "--json", "--log-level", "warning"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert run.stderr is not None
    facts = json.loads(run.stderr.readline())
    queues = ", ".join(f"{q['queue']} x{q['concurrency']}" for q in facts["queues"])
    print(f"banner: app {facts['app']} on {facts['broker']}, queues {queues}")
    print("warning:", json.loads(run.stderr.readline())["warning"])
    run.send_signal(signal.SIGINT)
    _, rest = run.communicate(timeout=60)
    print(f"drained: exit {run.returncode}")
    if run.returncode != 0:
        print(rest)


if __name__ == "__main__":
    main()
