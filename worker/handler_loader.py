"""Finds what runs a worker's turns: ``CHATLANE_HANDLER="package.module:attr"`` (or an object given
in code), else the chat model ``CHATLANE_MODEL`` names. Done once, at start-up: a handler that
cannot be imported or has the wrong type stops the worker with one line saying why.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import sys
from typing import TYPE_CHECKING, Any, TypeGuard

from langchain_core.language_models import BaseChatModel

from chatlane.settings import Settings
from chatlane.startup import StartupError
from worker.handlers import ChatModelHandler, GeneratorHandler, GraphHandler, TurnHandler
from worker.llm import build_model
from worker.openai_fast import preserialize

if TYPE_CHECKING:
    from langgraph.pregel import Pregel

log = logging.getLogger("chatlane.worker")

EXPECTED = (
    "a chat model (BaseChatModel), a compiled LangGraph graph whose state has `messages` (e.g. "
    "create_agent(...)), an async generator function handle(turn), or a zero-argument factory of one"
)


class HandlerError(StartupError):
    """The handler cannot be used; the message is one line for the operator."""


def load_handler(settings: Settings, given: object | None = None) -> TurnHandler:
    """``given`` (an object) wins over ``settings.handler`` (a "module:attr" name)."""
    if given is not None:
        return adapt(given, f"handler {type(given).__name__}", settings)
    if settings.handler is None:
        return ChatModelHandler(model_of(settings), settings.system_prompt)
    where = f"CHATLANE_HANDLER={settings.handler}"
    return adapt(_import(settings.handler, where), where, settings)


def model_of(settings: Settings) -> BaseChatModel:
    """The chat model CHATLANE_MODEL names, or HandlerError: a provider whose package is missing,
    a name no provider claims, or a client that wants credentials the environment lacks (the
    OpenAI client checks for its key when it is built)."""
    try:
        return build_model(settings)
    except Exception as e:
        raise HandlerError(f"CHATLANE_MODEL={settings.model}: {_one_line(e)}") from None


def _import(spec: str, where: str) -> Any:
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise HandlerError(f"{where}: expected the form package.module:attr")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # ImportError, SyntaxError, or whatever the module raises on import
        raise HandlerError(f"{where}: cannot import {module_name} ({type(e).__name__}: {_one_line(e)})") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise HandlerError(f"{where}: {module_name} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def adapt(obj: object, where: str, settings: Settings, *, factory_ok: bool = True) -> TurnHandler:
    if isinstance(obj, BaseChatModel):
        model = preserialize(obj) if settings.openai_preserialize else obj
        return ChatModelHandler(model, settings.system_prompt)
    if _is_graph(obj):
        if "messages" not in obj.channels:
            state = sorted(c for c in obj.channels if not c.startswith(("__", "branch:")))
            raise HandlerError(f"{where}: the graph's state has no `messages` key (it has {state})")
        if obj.checkpointer:
            log.warning(
                "%s: the graph has a checkpointer; chatlane keeps the history itself, so it is not needed", where
            )
        return GraphHandler(obj)
    if inspect.isasyncgenfunction(obj) or inspect.isasyncgenfunction(getattr(obj, "__call__", None)):  # noqa: B004
        return GeneratorHandler(obj)  # type: ignore[arg-type]
    if factory_ok and callable(obj) and _takes_no_arguments(obj):
        try:
            made = obj()
        except Exception as e:
            raise HandlerError(f"{where}: the factory raised {type(e).__name__}: {_one_line(e)}") from None
        return adapt(made, f"{where} (the factory's result)", settings, factory_ok=False)
    raise HandlerError(f"{where}: expected {EXPECTED}; got {_describe(obj)}")


def _is_graph(obj: object) -> TypeGuard[Pregel[Any, Any, Any, Any]]:
    """A compiled LangGraph graph. langgraph is loaded only if one was built: a worker without one
    does not pay for importing it (~0.2 s of start-up)."""
    if "langgraph.pregel" not in sys.modules:
        return False
    from langgraph.pregel import Pregel

    return isinstance(obj, Pregel)


def _takes_no_arguments(fn: Any) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return all(p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params)


def _describe(obj: object) -> str:
    if inspect.iscoroutinefunction(obj):
        return "an async function that returns (it must yield: async def handle(turn): ... yield ...)"
    if callable(obj):
        return f"a callable that takes arguments ({type(obj).__name__})"
    return f"{type(obj).__name__} {_one_line(repr(obj))[:60]}"


def _one_line(e: object) -> str:
    return " ".join(str(e).split())[:300]
