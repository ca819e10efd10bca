"""How long finished jobs are kept: :class:`Retention`, and the pure rules brokers share.

A finished job leaves three things behind: its result (what ``get_result``
answers), its record (what ``job_info`` answers, and the row or hash holding
it), and, for a dead job, its dead letter. ``Retention`` says how long each is
kept. It is set in ``Guild(retention=...)``, in ``guild.toml``'s
``[retention]`` table and in the broker URL (``?result_ttl=3600&dead_ttl=604800``);
the URL, the most specific place, wins over the others field by field.

Rules (every broker keeps them; the functions below are the policy, with time
passed in):

* A result can be read until ``finished_at + results``.
* A done or cancelled job's record goes at ``finished_at + max(done, results)``:
  a readable result always has its record.
* A dead job's record and letter go at ``died_at + dead``; ``dead=None`` keeps
  them until they are requeued or purged.
* A done job's payload is dropped when it finishes, unless ``keep_payload``:
  at 1,000 jobs a second a day of payloads is most of what a broker holds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import attrs

from ._codec import is_positive_seconds
from ._errors import UnknownBrokerURL
from ._exports import publish

DAY = 86_400.0

URL_OPTIONS = ("result_ttl", "done_ttl", "dead_ttl", "keep_payload")
"""Query parameters of a broker URL that set a :class:`Retention` field."""

_FIELD_OF_OPTION = {
    "result_ttl": "results",
    "done_ttl": "done",
    "dead_ttl": "dead",
    "keep_payload": "keep_payload",
}


def _seconds(name: str, value: float | None, *, none_ok: bool) -> None:
    if value is None and none_ok:
        return
    if not is_positive_seconds(value):
        allowed = "a positive number of seconds" + (" or None" if none_ok else "")
        raise ValueError(f"Retention.{name} must be {allowed}, got {value!r}")


@attrs.frozen(kw_only=True)
class Retention:
    """How long a broker keeps what finished jobs leave behind.

    Attributes:
        results: seconds a finished job's result can be read (``get_result``).
        done: seconds a done or cancelled job's record is kept (``job_info``);
            never less than ``results``.
        dead: seconds a dead letter is kept; ``None`` (the default) keeps it until
            it is requeued or purged.
        keep_payload: keep a done job's payload with its record (by default it is
            dropped when the job finishes).

    Raises:
        ValueError: a duration that is not a positive, finite number of seconds.
    """

    results: float = DAY
    done: float = DAY
    dead: float | None = None
    keep_payload: bool = False

    def __attrs_post_init__(self) -> None:
        _seconds("results", self.results, none_ok=False)
        _seconds("done", self.done, none_ok=False)
        _seconds("dead", self.dead, none_ok=True)
        if not isinstance(self.keep_payload, bool):
            raise ValueError(f"Retention.keep_payload must be a bool, got {self.keep_payload!r}")

    @property
    def record(self) -> float:
        """Seconds a done or cancelled job's record is kept: a readable result has one."""
        return max(self.done, self.results)

    @property
    def sweep_every(self) -> float:
        """Seconds between a broker's sweeps for what expired: a minute, or a
        quarter of the shortest retention when that is shorter, so nothing
        outlives its retention by more than a quarter of it."""
        shortest = min(self.record, math.inf if self.dead is None else self.dead)
        return min(60.0, shortest / 4)

    def result_expires(self, finished_at: float) -> float:
        return finished_at + self.results

    def record_expires(self, finished_at: float) -> float:
        return finished_at + self.record

    def dead_expires(self, died_at: float) -> float:
        return math.inf if self.dead is None else died_at + self.dead


def retention_from_query(
    url: str, query: Mapping[str, list[str]], base: Retention | None = None
) -> Retention:
    """``base`` (default: the defaults) with the fields a URL's query sets.

    ``dead_ttl=0`` or ``dead_ttl=none`` keeps dead letters until purged;
    ``keep_payload`` takes ``1``/``true``/``yes`` or ``0``/``false``/``no``.

    Raises:
        UnknownBrokerURL: a value that is no positive number of seconds (or no flag).
    """
    changes: dict[str, object] = {}
    for option, field in _FIELD_OF_OPTION.items():
        values = query.get(option)
        if not values:
            continue
        text = values[-1].strip().lower()
        if option == "keep_payload":
            if text not in ("1", "true", "yes", "0", "false", "no"):
                raise UnknownBrokerURL(url, f"keep_payload={values[-1]} (expected true or false)")
            changes[field] = text in ("1", "true", "yes")
            continue
        if option == "dead_ttl" and text in ("0", "none"):
            changes[field] = None
            continue
        try:
            seconds = float(text)
        except ValueError:
            seconds = math.nan
        if not (math.isfinite(seconds) and seconds > 0):
            raise UnknownBrokerURL(
                url, f"{option}={values[-1]} (expected a positive number of seconds)"
            )
        changes[field] = seconds
    return attrs.evolve(base or Retention(), **changes)  # type: ignore[arg-type]


# Reprs, tracebacks and pickles name guild.X (see guild._exports).
publish(globals())
