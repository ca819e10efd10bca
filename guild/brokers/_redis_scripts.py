"""The Lua scripts the Redis broker registers, read from the package's ``.lua`` files.

A file is split at lines ``-- @name``: each section is one script, and the
section ``common`` (the helpers every script uses) is put before each of the
others, since a Redis script cannot call another. An optional section ``after``
runs at the end of each script, after its body (a function then, so that its
``return`` statements come back to it) and before its reply.
"""

from __future__ import annotations

import pkgutil


def load_scripts(filename: str) -> dict[str, str]:
    """Each script in ``guild/brokers/<filename>`` by name, with ``common`` before it."""
    # pkgutil, not importlib.resources: both read through the package's loader
    # (a zipped install too), but importlib.resources and the zipfile module it
    # brings are about 1 % of a `guild run`'s start-up on Redis, for one read.
    data = pkgutil.get_data("guild.brokers", filename)
    if data is None:  # a loader that cannot read files, which guild's own never is
        raise FileNotFoundError(f"guild.brokers/{filename}: the package's loader cannot read it")
    text = data.decode("utf-8")
    sections: dict[str, list[str]] = {}
    name = ""
    for line in text.splitlines():
        if line.startswith("-- @"):
            name = line[4:].strip()
            sections[name] = []
        elif name:
            sections[name].append(line)
    common = "\n".join(sections.pop("common"))
    after = sections.pop("after", None)
    if after is None:
        return {name: common + "\n" + "\n".join(body) for name, body in sections.items()}
    tail = "\n".join(["end", "local reply = body()", *after, "return reply"])
    return {
        name: "\n".join([common, "local function body()", *lines, tail])
        for name, lines in sections.items()
    }
