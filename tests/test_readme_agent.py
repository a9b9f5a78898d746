"""The README's "Bring your own agent" example works as written: saved as my_agent.py, it runs
a worker's turns, with its tools and the turn's metadata."""

from __future__ import annotations

import re
from pathlib import Path

from langchain_core.messages import ToolMessage

from devkit.check import check
from producer import ChatProducer, TurnState
from tests.conftest import Fleet, sid

README = Path(__file__).resolve().parent.parent / "README.md"


def example() -> str:
    section = re.search(
        r"<!-- byo-agent:begin -->\n```python\n(.*?)```\n<!-- byo-agent:end -->", README.read_text(), re.S
    )
    assert section, "README.md lacks the byo-agent example"
    return section.group(1)


async def test_the_readme_agent_runs_as_written(fleet: Fleet, producer: ChatProducer, tmp_path: Path) -> None:
    (tmp_path / "my_agent.py").write_text(example())
    fleet.start(1, handler="my_agent:make_agent", raw_env={"PYTHONPATH": str(tmp_path)})
    s = sid("readme")
    who = await producer.enqueue(s, "Who am I? !tool=whoami:{}", metadata={"user": "ann"})
    total = await producer.enqueue(s, 'What is 2 + 3? !tool=add:{"a": 2, "b": 3}')
    for t in (who, total):
        assert (await producer.wait(t.turn_id, 30)).state is TurnState.completed
    history = await producer.history(s)
    assert [m.type for m in history] == ["human", "ai", "tool", "ai"] * 2
    results = [m for m in history if isinstance(m, ToolMessage)]
    assert [(r.name, r.text) for r in results] == [("whoami", "ann"), ("add", "5.0")]
    assert (await check(producer, {s: [who.turn_id, total.turn_id]})).ok
