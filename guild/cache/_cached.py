"""``@cached(cache, ttl)``: memoise an async function, one call per key at a time."""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

import attrs
import trio

from ._protocol import Cache

P = ParamSpec("P")
R = TypeVar("R")


def default_key(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """``name`` plus the JSON of the arguments (sorted keyword arguments)."""
    return name + ":" + json.dumps([args, sorted(kwargs.items())], default=repr, sort_keys=True)


@attrs.define
class _Flight:
    """One call in progress; waiters keep a reference, so the outcome needs no cleanup."""

    done: trio.Event = attrs.Factory(trio.Event)
    value: Any = None
    error: Exception | None = None
    # The leader was cancelled (its own timeout, its worker stopping) or
    # interrupted: that ended its call, not the followers', who run again.
    abandoned: bool = False


def cached(
    cache: Cache, *, ttl: float, key: Callable[..., str] | None = None
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Memoise an async function in ``cache`` for ``ttl`` seconds.

    Concurrent calls with the same key share one call (single flight): the
    first runs the function, the others wait for its result. An exception is not
    cached, and every waiter of that flight gets it too. A cancellation is not
    shared: when the caller running the function is cancelled (its own timeout,
    its worker stopping), the waiters are not; one of them runs it again.

    Args:
        cache: where results go (values must be JSON-serialisable for Redis).
        ttl: seconds a result is kept.
        key: ``key(*args, **kwargs) -> str``; default: the function's qualified
            name and the JSON of its arguments.
    """

    def decorate(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        flights: dict[str, _Flight] = {}
        # A callable object has no name of its own: its class names it.
        named = fn if hasattr(fn, "__qualname__") else type(fn)
        name = f"{named.__module__}.{named.__qualname__}"

        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            cache_key = key(*args, **kwargs) if key else default_key(name, args, kwargs)
            while True:
                found = await cache.get(cache_key)
                if found is not None:
                    return found  # type: ignore[no-any-return]
                flight = flights.get(cache_key)
                if flight is None:
                    break
                await flight.done.wait()
                if flight.abandoned:
                    continue  # the leader's cancellation was its own: lead, or follow anew
                if flight.error is not None:
                    raise flight.error
                return flight.value  # type: ignore[no-any-return]
            flights[cache_key] = flight = _Flight()
            try:
                flight.value = await fn(*args, **kwargs)
                await cache.set(cache_key, flight.value, ttl=ttl)
            except Exception as error:
                flight.error = error
                raise
            except BaseException:
                # trio.Cancelled (or a group of them), KeyboardInterrupt: handing
                # these to followers would cancel tasks nobody cancelled.
                flight.abandoned = True
                raise
            finally:
                del flights[cache_key]
                flight.done.set()
            return flight.value  # type: ignore[no-any-return]

        return wrapper

    return decorate
