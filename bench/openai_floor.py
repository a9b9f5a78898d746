"""The B3 floor: back-to-back calls of the bare langchain-openai client, no queue in between.

Runs in its own process, as a worker would: ``python -m bench.openai_floor BASE_URL TURNS``.
For each line read on stdin it holds one conversation of TURNS calls against the bench's
OpenAI stub, each streaming a reply over the growing conversation as a chat loop does, then
prints ``done``. The stub records when each request arrived and each reply ended. Staying up
between conversations lets the bench interleave them with chatlane's, so both see the same
machine.
"""

from __future__ import annotations

import asyncio
import sys

from langchain.chat_models import init_chat_model
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

MODEL = "openai:gpt-4o-mini"


async def conversation(model: object, turns: int) -> None:
    history: list[BaseMessage] = [SystemMessage("You are a helpful assistant.")]
    for n in range(turns):
        history.append(HumanMessage(f"hello, how are you today? (turn {n})"))
        text = ""
        async for chunk in model.astream(history):  # type: ignore[attr-defined]
            text += chunk.text
        history.append(AIMessage(text))


async def main(base_url: str, turns: int) -> None:
    # The same construction as worker.llm.build_model.
    model = init_chat_model(MODEL, base_url=base_url, api_key="bench", timeout=30, max_retries=0)
    for _ in sys.stdin:
        await conversation(model, turns)
        print("done", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
