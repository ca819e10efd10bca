"""The sandbox: one run that works, one refused, one that times out.

python examples/sandbox_demo.py
"""

from __future__ import annotations

import trio

import guild
from guild.sandbox import Sandbox, SandboxPolicy


async def main() -> None:
    sandbox = Sandbox(SandboxPolicy.default())
    print(f"isolation: {sandbox.isolation}")  # "bwrap" or "kernel"; "none" only if asked
    result = await sandbox.run(
        ["python3", "hello.py"],
        timeout=10,
        files={
            "hello.py": b"open('greeting.txt', 'w').write('hi')\nprint('hello from the sandbox')\n"
        },
    )
    print(
        f"exit {result.exit_code}: {result.stdout.decode().strip()}; created {list(result.files_created)}"
    )
    try:
        await sandbox.run(["bash", "-c", "rm -rf /"], timeout=10)
    except guild.CommandRefused as refused:
        print(f"refused by rule {refused.rule!r}: {refused.detail}")
    try:
        await sandbox.run(
            ["python3", "slow.py"],
            timeout=0.5,
            files={"slow.py": b"import time\nprint('working', flush=True)\ntime.sleep(60)\n"},
        )
    except guild.SandboxTimeout as timeout:
        print(f"timed out after {timeout.timeout}s with output so far: {timeout.stdout!r}")


if __name__ == "__main__":
    trio.run(main)
