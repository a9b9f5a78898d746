"""Loads the Lua scripts in ``chatlane/lua``.

A script may start with ``--! use: lib1 lib2`` to have those library files (in the same folder)
prepended, each once, libraries' own ``use`` lines first: Lua has no include, and this keeps each
shared snippet in one file. Every script declares every library it calls.
"""

from __future__ import annotations

from importlib.resources import files

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

_USE = "--! use:"


def _text(name: str) -> str:
    return (files("chatlane") / "lua" / f"{name}.lua").read_text(encoding="utf-8")


def _uses(text: str) -> list[str]:
    first = text.split("\n", 1)[0]
    return first[len(_USE) :].split() if first.startswith(_USE) else []


def lua_source(name: str) -> str:
    """The script ``name`` with its libraries (transitively, each once) prepended."""
    order: list[str] = []

    def visit(lib: str) -> None:
        if lib in order:
            return
        for dep in _uses(_text(lib)):
            visit(dep)
        order.append(lib)

    for lib in _uses(_text(name)):
        visit(lib)
    return "\n".join([*(_text(lib) for lib in order), _text(name)])


def register(redis: Redis, name: str) -> AsyncScript:
    """EVALSHA with a transparent reload after SCRIPT FLUSH or a Redis restart."""
    return redis.register_script(lua_source(name))
