"""Refuse, at registration, a handler that could never run a job.

A plain ``def`` or a handler that cannot take the job would otherwise be
accepted and then fail every attempt of every job, each one ending in the dead
letters for a mistake in the code, not in the job.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

from ._errors import InvalidHandler


def _name(handler: Any) -> str:
    target = handler
    while isinstance(target, functools.partial):
        target = target.func
    name = getattr(target, "__name__", None)
    return name if isinstance(name, str) else type(target).__name__


def _is_async(handler: Any) -> bool:
    target = handler
    while True:
        if isinstance(target, functools.partial):
            target = target.func
        elif inspect.iscoroutinefunction(target):
            return True
        elif hasattr(target, "__wrapped__"):
            # A decorator that returns the wrapped function's coroutine
            # (``functools.wraps`` over ``return fn(job)``) runs as that function.
            target = target.__wrapped__
        elif not inspect.isroutine(target) and not isinstance(target, type):
            return callable(target) and _is_async_call(type(target).__call__)
        else:
            return False


def _is_async_call(call: Any) -> bool:
    return inspect.iscoroutinefunction(inspect.unwrap(call))


def check_handler(handler: object) -> None:
    """Raise :class:`InvalidHandler` unless ``await handler(job)`` can run.

    Accepts ``async def`` functions, ``functools.partial`` of them, bound async
    methods, objects whose ``__call__`` is ``async def``, and functions decorated
    with ``functools.wraps`` around an ``async def``.
    """
    name = _name(handler)
    wanted = f"`async def {name}(job): ...`"
    if not callable(handler):
        raise InvalidHandler(
            name, f"handler {name} is a {type(handler).__name__}, not a function: write {wanted}"
        )
    if not _is_async(handler):
        raise InvalidHandler(name, f"handler {name} must be {wanted}")
    try:
        signature = inspect.signature(handler)
    except (TypeError, ValueError):
        return  # no signature to read (a C callable): the first job will tell
    try:
        signature.bind(object())
    except TypeError:
        raise InvalidHandler(
            name,
            f"handler {name} must take one argument, the job: {wanted}"
            f" (its signature is {signature})",
        ) from None
