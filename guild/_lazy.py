"""Names a package exports but imports only when first looked up (PEP 562).

Start-up time is paid by every worker process and every ``guild`` command: a
package whose rarely used names pull in coredis, prometheus_client or hypercorn
lists them here instead of importing them, and its module ``__getattr__`` loads
each on first use. Type checkers still see the names through ``if
TYPE_CHECKING:`` imports, so the public API reads exactly as before.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Collection, Mapping
from typing import Any


def lazy_exports(
    package: str,
    namespace: dict[str, Any],
    exports: Mapping[str, str],
    *,
    public_module: str | None = None,
    submodules: Collection[str] = (),
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` for ``package``.

    ``exports`` maps each lazy name to ``"module"`` (same attribute name) or
    ``"module:attribute"``, the module relative to ``package``. A class found
    in one of ``package``'s own modules is given ``public_module`` as its
    ``__module__`` (as the eager packages do for their classes), so reprs and
    tracebacks name the public path whichever way it was reached first.
    ``submodules`` are subpackages reachable as attributes (``guild.brokers``
    after ``import guild``), imported on first use too.
    """
    prefix = package + "."

    def __getattr__(name: str) -> Any:
        if name in submodules:
            return importlib.import_module(prefix + name)  # the import binds it here
        try:
            target = exports[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        module_name, _, attribute = target.partition(":")
        module = importlib.import_module(module_name, package)
        value = getattr(module, attribute or name)
        if (
            public_module is not None
            and isinstance(value, type)
            and value.__module__.startswith(prefix)
        ):
            value.__module__ = public_module
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports) | set(submodules))

    return __getattr__, __dir__
