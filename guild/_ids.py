"""Job ids: unique and sortable by creation time (ULID layout, Crockford base32).

48 bits of milliseconds since the epoch, then 80 bits that are random for the
first id of a millisecond and incremented for the next ones, so ids made by one
process are strictly increasing and ids made by different processes are ordered
to the millisecond. 26 characters, safe in URLs, file names and Redis keys.
"""

from __future__ import annotations

import base64
import os
import threading
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# base64's base32 (RFC 4648) walks the bits from the most significant end, like
# ULID, so translating its alphabet to Crockford's keeps the sort order; it runs
# in C, which matters at tens of thousands of ids a second.
_TO_CROCKFORD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", _ALPHABET.encode())
_RANDOM_BITS = 80
_RANDOM_MAX = (1 << _RANDOM_BITS) - 1

_lock = threading.Lock()
_last_ms = -1
_last_random = 0


def new_id(now: float | None = None) -> str:
    """Return a new job id.

    Args:
        now: the wall-clock time in seconds to stamp (default: ``time.time()``).
    """
    return _encode(_next_values(1, now)[0])


def new_ids(count: int, now: float | None = None) -> list[str]:
    """Return ``count`` new job ids, in order: the ids ``count`` calls of
    :func:`new_id` in one millisecond would give, for one clock read and one lock."""
    return [_encode(value) for value in _next_values(count, now)]


def _next_values(count: int, now: float | None) -> range:
    """The next ``count`` 128-bit id values (as a range: consecutive integers)."""
    global _last_ms, _last_random
    ms = int((time.time() if now is None else now) * 1000)
    with _lock:
        if ms <= _last_ms:
            # Same (or an earlier, if the clock stepped back) millisecond: keep
            # the order by counting up from the last id rather than trusting time.
            ms = _last_ms
            first = _last_random + 1
        else:
            first = int.from_bytes(os.urandom(10), "big") >> 1
        if first + count - 1 > _RANDOM_MAX:
            # The random part would overflow: move on to the next millisecond.
            # (A fresh random start has its top bit clear, so a batch of up to
            # 2**79 ids always fits after it.)
            ms += 1
            first = int.from_bytes(os.urandom(10), "big") >> 1
        _last_ms = ms
        _last_random = first + count - 1
        base = ms << _RANDOM_BITS
    return range(base | first, (base | first) + count)


def _encode(value: int) -> str:
    # 26 characters carry 130 bits: 2 zero bits on top of the 128-bit value. In
    # 17 bytes (136 bits) shifted left by 6, the first 26 characters are exactly those.
    encoded = base64.b32encode((value << 6).to_bytes(17, "big"))
    return encoded[:26].translate(_TO_CROCKFORD).decode()


def id_time(job_id: str) -> float:
    """Return the creation time (seconds since the epoch) encoded in ``job_id``."""
    value = 0
    for char in job_id[:10]:
        value = value * 32 + _ALPHABET.index(char)
    return value / 1000


_CHARACTERS = frozenset(_ALPHABET)


def made_at(job_id: str) -> float | None:
    """The creation time encoded in ``job_id`` if it has the shape of the ids
    :func:`new_id` makes (26 characters of Crockford's base32, the first at most
    ``7``: 128 bits); ``None`` for any other id (one given to a ``Job`` by hand,
    a workflow step's)."""
    if len(job_id) != 26 or job_id[0] > "7" or not _CHARACTERS.issuperset(job_id):
        return None
    return id_time(job_id)
