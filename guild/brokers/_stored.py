"""Reading back what a broker stored, when what is stored is not what guild wrote.

A row edited by hand, half-written by another program or damaged on disk must not
surface as a bare ``ValueError`` from deep inside a read (``'bogus' is not a valid
JobStatus``): the reader gets a :class:`~guild.BrokerDataError` naming the job and the
part of its record that could not be read, and every other job reads as before.
Claims do not come here: a bad row met by ``claim`` is dead-lettered with its reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from .._errors import BrokerDataError


@contextmanager
def reading_record(job_id: str, what: str) -> Iterator[None]:
    """Turn a failure to decode job ``job_id``'s stored ``what`` into a BrokerDataError."""
    try:
        yield
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        # JSONDecodeError and UnicodeDecodeError are ValueErrors; a missing field is
        # a KeyError; a field of the wrong type is a TypeError or AttributeError.
        reason = f"{type(exc).__name__}: {exc}"
        raise BrokerDataError(f"job {job_id}: its stored {what} cannot be read ({reason})") from exc
