"""A RateLimiter in front of a pretend API: 10 calls at 5 per second, bursts of 2.

python examples/ratelimit_demo.py
"""

from __future__ import annotations

import trio

from guild.ratelimit import RateLimiter


async def main() -> None:
    limiter = RateLimiter(5, period=1.0, burst=2, concurrency=3)
    start = trio.current_time()
    times: list[float] = []

    async def call(i: int) -> None:
        async with limiter:
            times.append(trio.current_time() - start)
            await trio.sleep(0.01)  # the pretend API call

    async with trio.open_nursery() as nursery:
        for i in range(10):
            nursery.start_soon(call, i)
    stats = limiter.statistics()
    print("admitted at:", ", ".join(f"{t:.1f}s" for t in times))
    print(
        f"{stats.admitted} calls admitted, {stats.waits} waited {stats.waited_seconds:.1f}s in all"
    )


if __name__ == "__main__":
    trio.run(main)
