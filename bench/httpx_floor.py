"""The B9 floor: the CPU one process spends sending a chat-completions request body with plain
httpx and reading its streamed reply, as any client must: the body encoded as JSON, then the SSE
lines read, one JSON decode per chunk, the text put together.

``python -m bench.httpx_floor BASE_URL BODY_FILE N`` sends the request in BODY_FILE (one a
chatlane worker sent) N times, one after the other, and prints ``cpu_ms <per request>`` (process
CPU, after a few warm-up requests, so imports and connection set-up do not count).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx

WARM_UP = 5


async def one(client: httpx.AsyncClient, body: dict[str, Any]) -> str:
    parts: list[str] = []
    content = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    async with client.stream("POST", "/chat/completions", content=content) as resp:
        resp.raise_for_status()
        async for line in resp.aiter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunk = json.loads(line[6:])
                for choice in chunk["choices"]:
                    parts.append(choice["delta"].get("content") or "")
    return "".join(parts)


async def main(base_url: str, body: dict[str, Any], n: int) -> float:
    headers = {"Authorization": "Bearer bench", "Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30) as client:
        for _ in range(WARM_UP):
            await one(client, body)
        cpu = time.process_time()
        for _ in range(n):
            await one(client, body)
        return (time.process_time() - cpu) / n * 1000


if __name__ == "__main__":
    ms = asyncio.run(main(sys.argv[1], json.loads(Path(sys.argv[2]).read_bytes()), int(sys.argv[3])))
    print(f"cpu_ms {ms:.4f}", flush=True)
