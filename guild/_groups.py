"""Exception groups that hold one real error become that error again.

Trio nurseries wrap whatever leaves them in an exception group. Where guild's own
API promises a specific error (``GaveUp`` from a supervisor, ``BrokerUnavailable``
from a worker), the group of one is unwrapped at the API boundary so callers can
``except guild.GaveUp`` as documented.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


def leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in group.exceptions:
        found += leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc]
    return found


@contextmanager
def unwrap(*types: type[BaseException]) -> Iterator[None]:
    """Re-raise a group whose only leaf is one of ``types`` as that leaf."""
    try:
        yield
    except BaseExceptionGroup as group:
        found = leaves(group)
        if len(found) == 1 and isinstance(found[0], types):
            raise found[0] from None
        raise


def describe(error: BaseException) -> str:
    """``Type: message`` of the error, or of each leaf of a group ("; "-joined), for
    logs and status: a group's own message says nothing about what failed."""
    found = leaves(error) if isinstance(error, BaseExceptionGroup) else [error]
    return "; ".join(f"{type(leaf).__name__}: {_text(leaf)}" for leaf in found)


def _text(error: BaseException) -> str:
    try:
        return str(error)
    except Exception as failure:  # an exception class of the app's, its __str__ broken
        return f"<str() raised {type(failure).__name__}>"
