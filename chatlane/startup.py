"""Start-up checks shared by the worker and the HTTP API.

A configuration mistake stops the process before it serves anything, with one line on stderr
that says what is wrong and a non-zero exit, not a traceback at first use: settings that do not
validate, a Redis URL that is not one, a database index the server does not have, credentials
Redis refuses. A Redis that is merely not up yet is not a mistake: the worker waits for it
(one line when it starts waiting, one when Redis answers), the API starts and ``/readyz`` says 503.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import NoReturn
from urllib.parse import urlsplit

from pydantic import ValidationError
from pydantic_settings import SettingsError
from redis import exceptions as redis_errors
from redis.asyncio.connection import parse_url

from chatlane.connection import REDIS_DOWN, connect, redacted, where
from chatlane.settings import Settings, get_settings

# While Redis is away at start-up, a worker tries again this often, for as long as it takes:
# exiting would hand recovery to a process manager's restart backoff, often minutes.
STARTUP_RETRY_S = 1.0

EXIT_CODE = 2

_URL_FORMS = "redis://[[user]:password@]host[:port][/db], rediss://... or unix:///path[?db=n]"


class StartupError(Exception):
    """The process cannot start; the message is one line for the operator, free of secrets."""


def fail(program: str, error: Exception) -> NoReturn:
    """End the process with ``error`` as its one line on stderr."""
    line = " ".join(str(error).split())
    print(f"{program}: {line}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_CODE)


def load_settings() -> Settings:
    """The settings from the environment, or StartupError naming every setting that is wrong."""
    try:
        return get_settings()
    except ValidationError as e:
        # Never the rejected values (Settings hides them): one may be a password.
        problems = "; ".join(_problem(err["loc"], err["msg"]) for err in e.errors())
        raise StartupError(f"invalid settings: {problems}") from None
    except SettingsError as e:  # a value that should be JSON and is not
        raise StartupError(f"invalid settings: {e}") from None


def _problem(loc: tuple[int | str, ...], msg: str) -> str:
    msg = msg.removeprefix("Value error, ")
    if not loc:  # a check across several settings
        return msg
    return f"CHATLANE_{'_'.join(str(p) for p in loc).upper()}: {msg}"


def check_redis_url(settings: Settings) -> None:
    """The URL parses as redis-py will parse it (with sentinels it is not used), and names its
    database plainly: redis-py reads ``redis://host/zero`` as database 0 without a word."""
    if settings.redis_sentinels:
        return
    url = settings.redis_url
    try:
        kwargs = parse_url(url)
    except (ValueError, TypeError) as e:
        raise StartupError(
            f"CHATLANE_REDIS_URL={redacted(url)!r} is not a Redis URL ({e}); expected {_URL_FORMS}"
        ) from None
    split = urlsplit(url)
    if split.scheme in ("redis", "rediss") and not re.fullmatch(r"/?([0-9]+)?", split.path):
        raise StartupError(
            f"CHATLANE_REDIS_URL={redacted(url)!r} is not a Redis URL (the path must be a database number, "
            f"got {split.path!r}); expected {_URL_FORMS}"
        )
    if split.scheme == "unix" and not kwargs.get("path"):
        raise StartupError(f"CHATLANE_REDIS_URL={redacted(url)!r} names no socket path; expected {_URL_FORMS}")


async def check_redis(settings: Settings, log: logging.Logger, *, wait: bool) -> None:
    """Connects once: StartupError if Redis refuses the connection's set-up (a database it does
    not have, credentials it rejects). Redis not answering: ``wait`` for it, or log it and return."""
    client = connect(settings)
    failures = 0
    try:
        while True:
            try:
                await client.ping()
            except redis_errors.AuthenticationError as e:  # a ConnectionError, so before REDIS_DOWN
                raise StartupError(f"Redis at {where(settings)} refused the credentials: {e}") from None
            except redis_errors.ResponseError as e:
                raise StartupError(_refused(settings, e)) from None
            except REDIS_DOWN as e:
                failures += 1
                if not wait:
                    log.warning("Redis at %s is not answering (%s); starting anyway", where(settings), e)
                    return
                if failures == 1:
                    log.warning("Redis at %s is not answering (%s); waiting for it", where(settings), e)
                await asyncio.sleep(STARTUP_RETRY_S)
                continue
            if failures:
                log.warning("Redis at %s answers after %d failed attempt(s); starting", where(settings), failures)
            return
    finally:
        await client.aclose()


def _refused(settings: Settings, e: redis_errors.ResponseError) -> str:
    if "DB index is out of range" in str(e):
        db = parse_url(settings.redis_url).get("db", 0)
        return (
            f"Redis at {where(settings)}: database {db} (CHATLANE_REDIS_URL) is out of range; the server has "
            "`databases` of them, numbered from 0 (16 by default)"
        )
    if settings.redis_client_name and ("CLIENT" in str(e).upper() or "NOPERM" in str(e).upper()):
        return (
            f"Redis at {where(settings)} refused CLIENT SETNAME ({e}); allow it to chatlane's user, or set "
            "CHATLANE_REDIS_CLIENT_NAME= (empty) to leave connections unnamed"
        )
    return f"Redis at {where(settings)} refused the connection's set-up: {e}"


def check_redis_blocking(settings: Settings, log: logging.Logger) -> None:
    """``check_redis`` without waiting, from synchronous code (even inside a running event loop:
    uvicorn builds the app on its own loop)."""
    with ThreadPoolExecutor(1, thread_name_prefix="chatlane-startup") as pool:
        pool.submit(asyncio.run, check_redis(settings, log, wait=False)).result()
