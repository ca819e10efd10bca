"""The ``guild`` command's start-up builds what lives as long as its process.

Modules, classes and functions (trio's, structlog's, guild's, the app's) are
made by the tens of thousands while the command starts, and the cyclic garbage
collector, run every few hundred new objects, walks them again and again as
they are made: 3 % of the instructions from spawn to a first job. Each part of
the start-up runs inside :func:`collector_held` instead.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def collector_held() -> Iterator[None]:
    """Hold the cyclic garbage collector off; then freeze what was built meanwhile.

    Frozen objects (``gc.freeze``) are never walked again: they are the modules
    and classes just loaded, which no collection would free. The cycles the
    imports leave behind as garbage (the classes attrs rebuilds with slots, the
    namespaces of the code it generates) are kept with them: some 0.8 MB a
    process, once, where collecting them first (``gc.collect(0)``) would cost
    2 % of a start-up, most of what holding the collector saves. A collector
    the host process has turned off stays off, and nothing is frozen then.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()
