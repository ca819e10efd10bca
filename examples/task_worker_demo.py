"""The TaskWorker: sandboxed commands as jobs, with results and dead letters.

Two jobs through a real app on the SQLite broker: a Python script that writes a
file (done), and a shell command (refused by the sandbox: dead-lettered at once).

    python examples/task_worker_demo.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import trio

import guild
from guild_workers.task import open_task_worker

app = guild.Guild("tasks-demo")


async def main() -> None:
    path = Path(tempfile.mkdtemp(prefix="guild-tasks-")) / "tasks.db"
    async with guild.open_broker(f"sqlite:///{path}") as broker:
        async with open_task_worker(app, concurrency=2), app.open(broker):
            report = await app.enqueue(
                "tasks",
                {
                    "argv": ["python3", "report.py"],
                    "timeout": 20,
                    "files": {
                        "report.py": "open('report.txt', 'w').write('42')\nprint('report written')"
                    },
                },
            )
            shell = await app.enqueue("tasks", {"argv": ["bash", "-c", "rm -rf /"]})
            done = await app.result(report, wait=30)
            refused = await app.result(shell, wait=30)
        assert done is not None and refused is not None
        value = done.value
        print(
            f"command job: exit {value['exit_code']}, stdout {value['stdout'].strip()!r}, "
            f"created {value['files_created']}"
        )
        print(
            f"shell job: {refused.status.value} after {refused.attempts} attempt: {refused.error}"
        )


if __name__ == "__main__":
    trio.run(main)
