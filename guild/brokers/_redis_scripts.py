"""The Lua scripts the Redis broker registers, read from the package's ``.lua`` files.

A file is split at lines ``-- @name``: each section is one script, and the
section ``common`` (the helpers every script uses) is put before each of the
others, since a Redis script cannot call another.
"""

from __future__ import annotations

from importlib import resources


def load_scripts(filename: str) -> dict[str, str]:
    """Each script in ``guild/brokers/<filename>`` by name, with ``common`` before it."""
    text = resources.files("guild.brokers").joinpath(filename).read_text()
    sections: dict[str, list[str]] = {}
    name = ""
    for line in text.splitlines():
        if line.startswith("-- @"):
            name = line[4:].strip()
            sections[name] = []
        elif name:
            sections[name].append(line)
    common = "\n".join(sections.pop("common"))
    return {name: common + "\n" + "\n".join(body) for name, body in sections.items()}
