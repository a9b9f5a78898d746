"""Metrics move as a workload runs: read from the API's /metrics and a worker's metrics port."""

from __future__ import annotations

import asyncio

import httpx
from prometheus_client.parser import text_string_to_metric_families

from devkit.api_server import ServedApp, free_port
from producer import ChatProducer, TurnState
from producer.api import create_app
from tests.conftest import Fleet, sid, wait_async


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(m: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return m.get((name, tuple(sorted(labels.items()))), 0.0)


async def scrape(client: httpx.AsyncClient, url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = await client.get(url)
    r.raise_for_status()
    assert r.headers["content-type"].startswith("text/plain")
    return samples(r.text)


async def test_metrics_move_with_a_workload(fleet: Fleet, producer: ChatProducer) -> None:
    port = free_port()
    # One job slot: sessions wait in arq's queue, so queue depth and pending sessions show.
    fleet.start(1, metrics_port=port, max_jobs=1, fake_delay_ms=40, fake_fail_rate=0.2, max_attempts=5)
    worker_url = f"http://127.0.0.1:{port}/metrics"
    with ServedApp(create_app(fleet.settings.model_copy(update={"auth": "none"}))) as api:
        async with httpx.AsyncClient(timeout=5) as http:
            assert await wait_async(lambda: value_of_alive(http, api.base_url), 15)
            sessions = [sid("m") for _ in range(6)]
            turns = [(await producer.enqueue(s, f"q{i}")) for i in range(4) for s in sessions]
            seen_depth = seen_pending = 0.0
            while True:
                fleet_m = await scrape(http, f"{api.base_url}/metrics")
                seen_depth = max(seen_depth, value(fleet_m, "chatlane_queue_depth"))
                seen_pending = max(seen_pending, value(fleet_m, "chatlane_sessions_pending"))
                worker_m = await scrape(http, worker_url)
                if value(worker_m, "chatlane_turns_ended_total", state="completed", reason="reply") + value(
                    worker_m, "chatlane_turns_ended_total", state="failed", reason="attempts_exhausted"
                ) >= len(turns):
                    break
                await asyncio.sleep(0.05)
            ends = [await producer.wait(t.turn_id, 30) for t in turns]
            fleet_m = await scrape(http, f"{api.base_url}/metrics")
    completed = sum(st.state is TurnState.completed for st in ends)
    failed = sum(st.state is TurnState.failed for st in ends)
    assert completed + failed == len(turns) and completed > 0
    assert seen_depth >= 1 and seen_pending >= 2, (seen_depth, seen_pending)
    assert value(fleet_m, "chatlane_workers_alive") == 1
    assert value(fleet_m, "chatlane_sessions_pending") == 0
    assert value(worker_m, "chatlane_turns_ended_total", state="completed", reason="reply") == completed
    assert value(worker_m, "chatlane_turns_ended_total", state="failed", reason="attempts_exhausted") == failed
    errors = sum(v for (name, _), v in worker_m.items() if name == "chatlane_model_errors_total")
    attempts = value(worker_m, "chatlane_attempts_total")
    assert errors > 0 and attempts == len(turns) + errors, (attempts, errors)
    assert value(worker_m, "chatlane_queue_wait_seconds_count") == len(turns), worker_m
    assert value(worker_m, "chatlane_generation_seconds_count") == completed
    assert value(worker_m, "chatlane_time_to_first_token_seconds_count") >= completed
    # A drain that finds the session's next turn already waiting hands off inside the drain (a turn
    # that arrives after the drain released starts a new one: no handoff observed).
    assert value(worker_m, "chatlane_handoff_seconds_count") >= 1
    assert value(worker_m, "chatlane_turns_running") == 0


async def value_of_alive(http: httpx.AsyncClient, base_url: str) -> bool:
    return value(await scrape(http, f"{base_url}/metrics"), "chatlane_workers_alive") >= 1
