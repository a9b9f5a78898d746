"""Loads the Lua scripts shipped beside the code (``<package>/lua/<name>.lua``).

A script may start with ``--! use: lib1 lib2`` to have library files prepended (Lua has no
include); that keeps each shared snippet in one file. A library is looked up beside the script
first, then in ``producer/lua`` (the worker may use the producer's snippets, never the reverse).
"""

from __future__ import annotations

from importlib.resources import files

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

_USE = "--! use:"


def lua_source(package: str, name: str) -> str:
    text = (files(package) / "lua" / f"{name}.lua").read_text(encoding="utf-8")
    first = text.split("\n", 1)[0]
    if not first.startswith(_USE):
        return text
    libs = [_library(package, lib) for lib in first[len(_USE) :].split()]
    return "\n".join([*libs, text])


def _library(package: str, name: str) -> str:
    own = files(package) / "lua" / f"{name}.lua"
    return lua_source(package if own.is_file() else "producer", name)


def register(redis: Redis, package: str, name: str) -> AsyncScript:
    """EVALSHA with a transparent reload after SCRIPT FLUSH or a Redis restart."""
    return redis.register_script(lua_source(package, name))
