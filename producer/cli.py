"""``chatlane``: the operator's command line (README "Operating chatlane").

Configured like every chatlane process, by the CHATLANE_* environment (CHATLANE_REDIS_URL,
CHATLANE_KEY_PREFIX, ...). Every command takes ``--json`` for machine-readable output. Exit
status: 0 done, 1 a chatlane error (not found, not retryable, Redis unavailable), 2 bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel, ValidationError

from chatlane.errors import ChatlaneError, InvalidInput
from chatlane.export import SessionExport
from chatlane.settings import Settings
from chatlane.startup import StartupError, check_redis_url, fail, load_settings
from chatlane.tenants import DEFAULT_TENANT
from chatlane.turns import TurnStatus
from producer import admin
from producer.client import ChatProducer

Command = Callable[[ChatProducer, argparse.Namespace], Awaitable[Any]]


def plain(value: Any) -> Any:
    """``value`` as JSON-ready data (dataclasses and pydantic models included)."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def duration_s(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``2h`` or ``1d`` as seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    num, unit = (text[:-1], text[-1]) if text and text[-1] in units else (text, "s")
    try:
        value = float(num) * units[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a duration like 90s, 15m, 2h or 1d (got {text!r})") from None
    if value < 0:
        raise argparse.ArgumentTypeError("a duration cannot be negative")
    return value


async def _status(p: ChatProducer, a: argparse.Namespace) -> Any:
    return await p.fleet_status()


async def _session(p: ChatProducer, a: argparse.Namespace) -> Any:
    return await admin.session_view(p, a.session_id, a.recent)


async def _failed(p: ChatProducer, a: argparse.Namespace) -> Any:
    since = admin.since_ms(a.since)
    if a.all_tenants:
        return [{"tenant": t, **plain(st)} for t, st in await admin.failed_turns_of_every_tenant(p, since)]
    return await admin.failed_turns(p, since)


async def _retry(p: ChatProducer, a: argparse.Namespace) -> Any:
    enq = await admin.retry(p, a.turn_id)
    return {"retry_of": a.turn_id, "created": enq.created, "turn": enq.status}


async def _delete(p: ChatProducer, a: argparse.Namespace) -> Any:
    return {"session_id": a.session_id, **dataclasses.asdict(await p.delete_session(a.session_id))}


async def _export(p: ChatProducer, a: argparse.Namespace) -> Any:
    return await p.export_session(a.session_id)


def read_export(text: str) -> SessionExport:
    """An export as ``export-session`` prints it; InvalidInput, naming the first problem, if not."""
    try:
        return SessionExport.model_validate_json(text)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the document"
        raise InvalidInput(f"not a chatlane session export: {where}: {first['msg']}") from None


async def _import(p: ChatProducer, a: argparse.Namespace) -> Any:
    with a.file:
        export = read_export(a.file.read())
    target = a.session_id or export.session_id
    return {"session_id": target, **dataclasses.asdict(await p.import_session(export, session_id=target))}


def _turn_line(t: TurnStatus) -> str:
    when = t.finished_at or t.started_at or t.created_at
    detail = t.error or t.reply or ""
    return f"  {t.turn_id}  {t.state:<9} {when:%Y-%m-%d %H:%M:%S}  {t.text[:40]!r}  {detail[:60]}"


def render_text(command: str, result: Any) -> str:
    data = plain(result)
    if command == "failed" and result and isinstance(result[0], dict):  # --all-tenants
        lines = [f"  {r['tenant']:<16} {_turn_line(TurnStatus.model_validate(r)).strip()}" for r in result]
        return "\n".join([f"{len(result)} failed turn(s), every tenant", *lines])
    if command == "failed":
        return "\n".join([f"{len(result)} failed turn(s)", *map(_turn_line, result)])
    if command == "session":
        head = {k: v for k, v in data.items() if k not in ("inbox", "recent")}
        lines = [f"{k}: {v}" for k, v in head.items()]
        for name in ("inbox", "recent"):
            turns: list[TurnStatus] = getattr(result, name)
            lines += [f"{name}: {len(turns)} turn(s)", *map(_turn_line, turns)]
        return "\n".join(lines)
    if command == "export-session":
        # An export is data, not a report: always JSON.
        return json.dumps(data, indent=2)
    if command == "delete-session":
        active = f"{data['cancelled']} queued or running"
        return f"deleted session {data['session_id']}: {data['turns']} turn(s) ({active}), {data['messages']} messages"
    if command == "import-session":
        return f"imported {data['messages']} message(s) into session {data['session_id']} ({data['trimmed']} trimmed)"
    if command == "retry":
        st: TurnStatus = result["turn"]
        verb = "enqueued" if result["created"] else "already retried as"
        return f"{result['retry_of']} {verb} {st.turn_id} (session {st.session_id}, {st.state})"
    lines = [f"{k}: {v}" for k, v in data.items() if not isinstance(v, dict)]
    for k, v in data.items():
        if isinstance(v, dict):
            lines += [f"{k}:", *(f"  {name}: {n}" for name, n in v.items())]
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="chatlane", description="Operate a chatlane fleet (CHATLANE_* environment).")
    sub = top.add_subparsers(dest="command", required=True)
    commands: dict[str, Command] = {}

    def add(name: str, fn: Command, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("--json", action="store_true", help="print JSON")
        if name != "status":
            # Sessions and turns are each tenant's own (README "Tenants and quotas").
            p.add_argument("--tenant", help=f"whose sessions and turns (default {DEFAULT_TENANT})")
        p.set_defaults(run=fn)
        commands[name] = fn
        return p

    add("status", _status, "workers alive, queue depth, pending sessions, fleet counters")
    s = add("session", _session, "a session's lease holder, inbox and recent turns")
    s.add_argument("session_id")
    s.add_argument("--recent", type=int, default=10, help="how many committed turns to show (default 10)")
    f = add("failed", _failed, "failed turns whose records are still kept, oldest first")
    f.add_argument("--since", type=duration_s, help="only those that ended this long ago or later (90s, 15m, 2h, 1d)")
    f.add_argument("--all-tenants", action="store_true", help="every tenant's, each named (not with --tenant)")
    r = add("retry", _retry, "enqueue a failed turn's text again at the end of its session")
    r.add_argument("turn_id")
    d = add("delete-session", _delete, "erase a session: history, turns (queued and running ones too), streams, keys")
    d.add_argument("session_id")
    e = add("export-session", _export, "print a session's history and turns as JSON")
    e.add_argument("session_id")
    i = add("import-session", _import, "write an export's history into an empty session (nothing, if not empty)")
    i.add_argument("file", type=argparse.FileType("r", encoding="utf-8"), help="an export-session output; - for stdin")
    i.add_argument("--session-id", help="the session to write (default: the exported one)")
    return top


async def run(args: argparse.Namespace, settings: Settings) -> Any:
    named = getattr(args, "tenant", None)
    tenant = DEFAULT_TENANT if named is None else named
    async with ChatProducer(settings=settings, tenant=tenant) as p:
        return await args.run(p, args)


def main(argv: list[str] | None = None) -> int:
    cli = parser()
    args = cli.parse_args(argv)
    if getattr(args, "all_tenants", False) and args.tenant is not None:
        cli.error("--all-tenants and --tenant exclude each other")  # exit 2, bad usage
    try:
        settings = load_settings()
        check_redis_url(settings)
    except StartupError as e:
        fail(f"chatlane {args.command}", e)  # one line, no traceback (chatlane/startup.py)
    try:
        result = asyncio.run(run(args, settings))
    except ChatlaneError as e:
        if args.json:
            print(json.dumps({"error": e.code, "message": str(e)}))
        else:
            print(f"chatlane {args.command}: {e}", file=sys.stderr)
        return 1
    print(json.dumps(plain(result), indent=2, default=str) if args.json else render_text(args.command, result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
