"""The real langchain-openai client path, over HTTP, against a local stub server."""

from __future__ import annotations

from devkit.openai_stub import OpenAIStub
from producer import ChatProducer, TurnState
from tests.conftest import Fleet, sid


async def test_requests_carry_system_prompt_and_history_in_order(fleet: Fleet, producer: ChatProducer) -> None:
    with OpenAIStub() as stub:
        fleet.start(
            1,
            raw_env={"OPENAI_BASE_URL": stub.base_url, "OPENAI_API_KEY": "test-key"},
            model="openai:gpt-4o-mini",
            system_prompt="You are terse.",
        )
        s = sid()
        texts = ["first question", "second question", "third question"]
        turns = [await producer.enqueue(s, t) for t in texts]
        statuses = [await producer.wait(t.turn_id, 30) for t in turns]
        assert all(st.state is TurnState.completed for st in statuses), statuses
        assert len(stub.requests) == 3
        for n, body in enumerate(stub.requests):
            assert body["stream"] is True
            expected = [{"role": "system", "content": "You are terse."}]
            for i in range(n):
                expected.append({"role": "user", "content": texts[i]})
                expected.append({"role": "assistant", "content": statuses[i].reply})
            expected.append({"role": "user", "content": texts[n]})
            assert [{"role": m["role"], "content": m["content"]} for m in body["messages"]] == expected
        assert statuses[2].reply == "stub reply 3 to: third question"
