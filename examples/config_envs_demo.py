"""One guild.toml, two environments: what each runs with, and where each value came from.

Runs ``guild config show`` on ``examples/guild.toml`` (next to this file) as a real
``guild`` process: staging as the human table, production as JSON, and an
environment the file does not define. The app the file names is this module's
``app`` (``guild run guild.toml`` would import it from the working directory).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import guild
from guild.sandbox import Sandbox, SandboxPolicy

app = guild.Guild("envs")
sandbox = Sandbox(SandboxPolicy.default())


@app.worker("emails", concurrency=2)
async def send(job: guild.Job) -> None:
    pass


@app.worker("reports")
async def report(job: guild.Job) -> str:
    # Closes over the sandbox: guild.toml's [sandbox] applies to it.
    ran = await sandbox.run(["python3", "-c", "print('report')"], timeout=10)
    return ran.stdout.decode()


CONFIG = Path(__file__).resolve().with_name("guild.toml")


def guild_command(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("GUILD_ENV", "GUILD_BROKER")}
    return subprocess.run(
        [sys.executable, "-m", "guild", *args],
        capture_output=True,
        text=True,
        env={**environ, **(env or {})},
        check=False,
    )


def main() -> None:
    staging = guild_command("config", "show", str(CONFIG), "--env", "staging")
    print(staging.stdout)

    done = guild_command("config", "show", str(CONFIG), "--json", env={"GUILD_ENV": "production"})
    shown = json.loads(done.stdout)
    print(f"production chosen by {shown['env_from']['from']}")
    for key in (
        "guild.broker",
        "workers.emails.concurrency",
        "workers.emails.timeout",
        "health.error_rate",
        "health.p95_latency",
    ):
        setting = shown["settings"][key]
        where = f" ({setting['from']})" if setting["from"] else ""
        print(f"  {key} = {setting['value']!r} from {setting['source']}{where}")

    flagged = guild_command(
        "config", "show", str(CONFIG), "--env", "production", "--processes", "2", "--json"
    )
    processes = json.loads(flagged.stdout)["settings"]["guild.processes"]
    print(
        f"  guild.processes = {processes['value']} from {processes['source']} {processes['from']}"
    )

    wrong = guild_command("config", "show", str(CONFIG), "--env", "prod")
    print(f"unknown environment -> exit {wrong.returncode}: {wrong.stderr.strip()}")


if __name__ == "__main__":
    main()
