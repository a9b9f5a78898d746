"""Faults while turns run: worker SIGKILL / SIGSTOP / SIGTERM, Redis restart and outage, failing
models. Real worker processes, real redis-server; every run ends with the invariant checker.

Recovery bounds come from the settings under test: a session whose holder died resumes within
lease TTL + sweep interval, plus ``MARGIN_S`` for polling and a loaded 2-core machine.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from arq import func
from arq.connections import RedisSettings, create_pool
from redis.asyncio import Redis

from chatlane.connection import REDIS_DOWN
from chatlane.keys import Keys
from chatlane.stream import partial_reply
from devkit import faults
from devkit.check import Report, check
from devkit.processes import WorkerProcess
from devkit.redis_server import Fsync, RedisServer
from producer import ChatProducer, QueueFull, RedisUnavailable, TurnState
from tests.conftest import Fleet, new_prefix, sid
from worker.fake_model import FakeChatModel
from worker.resilient import ChatlaneWorker

MARGIN_S = 2.0


async def wait_all(producer: ChatProducer, sent: dict[str, list[str]], timeout: float) -> None:
    """Until every turn ended (``check`` then reports any that did not)."""
    deadline = time.monotonic() + timeout
    for tids in sent.values():
        for t in tids:
            try:
                await producer.wait(t, max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                return


async def checked(producer: ChatProducer, sent: dict[str, list[str]], timeout: float = 60) -> Report:
    await wait_all(producer, sent, timeout)
    report = await check(producer, {s: t for s, t in sent.items() if t})
    assert report.ok, report.violations[:20]
    return report


async def start_ready(fleet: Fleet, raw: Redis, n: int, **env: object) -> list[WorkerProcess]:
    workers = fleet.start(n, **env)
    await faults.wait_registered(raw, Keys(fleet.prefix), [w.pid for w in workers])
    return workers


async def running_holder(producer: ChatProducer, raw: Redis, session: str, turn_id: str) -> tuple[int, str]:
    """(pid, token) of the worker generating ``turn_id`` once it runs."""
    for _ in range(500):
        if (await producer.status(turn_id)).state is TurnState.running:
            token = await raw.get(producer.keys.session(session).lease)
            if token:
                return faults.worker_pid(token), token
        await asyncio.sleep(0.01)
    raise AssertionError(f"turn {turn_id} never ran")


def alive(fleet: Fleet) -> list[WorkerProcess]:
    return [w for w in fleet.workers if w.alive()]


# -- 1. SIGKILL ------------------------------------------------------------------------------


async def test_sigkill_random_workers_loses_nothing_and_resumes_within_bound(
    fleet: Fleet, producer: ChatProducer, raw_redis: Redis
) -> None:
    ttl_ms, sweep_s = 1500, 1
    env = {"lease_ttl_ms": ttl_ms, "sweep_interval_s": sweep_s, "fake_delay_ms": 120}
    await start_ready(fleet, raw_redis, 3, **env)
    rng = random.Random(1)
    sessions = [sid("kill") for _ in range(10)]
    sent: dict[str, list[str]] = {s: [] for s in sessions}
    producing = True

    async def produce(s: str) -> None:
        i = 0
        while producing:
            sent[s].append((await producer.enqueue(s, f"{s} turn {i}")).turn_id)
            i += 1
            await asyncio.sleep(rng.uniform(0.05, 0.4))

    producers = [asyncio.create_task(produce(s)) for s in sessions]
    recoveries: list[float] = []
    kills = 0
    for _ in range(4):
        await asyncio.sleep(1.5)
        held = await faults.leases(raw_redis, producer.keys, sessions)
        if not held:
            continue
        victim = fleet.by_pid(faults.worker_pid(rng.choice(list(held.values()))))
        of_victim = {s: t for s, t in held.items() if faults.worker_pid(t) == victim.pid}
        victim.signal(signal.SIGKILL)
        killed_at = time.monotonic()
        kills += 1
        fleet.start(1, **env)  # the process manager restarts it
        waited = await faults.wait_resumed(raw_redis, producer.keys, of_victim, killed_at, timeout=15)
        recoveries.extend(waited.values())
    producing = False
    await asyncio.gather(*producers)

    report = await checked(producer, sent)
    assert kills >= 3 and recoveries
    assert report.completed == report.accepted  # no model faults here: every turn completes
    longest = max(recoveries)
    print(f"\n{kills} SIGKILLs, {len(recoveries)} sessions interrupted, longest wait to resume {longest:.2f}s")
    assert longest <= ttl_ms / 1000 + sweep_s + MARGIN_S, recoveries


# -- 2. SIGSTOP past the lease TTL ------------------------------------------------------------


async def test_paused_holder_is_fenced_and_carries_on_after_resume(
    fleet: Fleet, producer: ChatProducer, raw_redis: Redis
) -> None:
    ttl_ms = 1500
    # One chunk per reply: the paused generation is complete the moment the process resumes,
    # which gives its late commit a chance to reach the fence before renewal notices the loss.
    env = {"lease_ttl_ms": ttl_ms, "fake_chunks": 1}
    paused, other = await start_ready(fleet, raw_redis, 2, **env)
    s = sid("pause")
    turns = [await producer.enqueue(s, "first !delay=300")] + [await producer.enqueue(s, f"next {i}") for i in range(3)]
    pid, token = await running_holder(producer, raw_redis, s, turns[0].turn_id)
    victim, survivor = (paused, other) if pid == paused.pid else (other, paused)
    victim.signal(signal.SIGSTOP)
    stopped_at = time.monotonic()
    try:
        waited = await faults.wait_resumed(raw_redis, producer.keys, {s: token}, stopped_at, timeout=20)
        first = await producer.wait(turns[0].turn_id, 20)
        assert first.state is TurnState.completed and first.attempts == 2  # re-run by the new holder
        await asyncio.sleep(0.5)
    finally:
        victim.signal(signal.SIGCONT)
    await asyncio.sleep(1.0)  # the resumed worker finishes its generation and tries to commit

    st = await faults.stats(raw_redis, producer.keys)
    rejected, on_renewal = st.get("stale_commits_rejected", 0), st.get("leases_lost_on_renewal", 0)
    print(
        f"\nstale commits rejected {rejected}, losses noticed on renewal {on_renewal}, resumed after {waited[s]:.2f}s"
    )
    # The paused holder learnt of its loss one way or the other: from Redis (a rejected commit or
    # renewal), or, since its deadline passed while it was stopped, from its own clock.
    assert rejected + on_renewal >= 1 or "no renewal answered in time" in fleet.logs()
    assert waited[s] <= ttl_ms / 1000 + 1 + MARGIN_S
    await wait_all(producer, {s: [t.turn_id for t in turns]}, 20)
    # A stopped process cannot close its model call: to a remote provider its request stays open
    # while the next holder generates. The attempt records show exactly that, and nothing else.
    report = await check(producer, {s: [t.turn_id for t in turns]}, excused={f"{turns[0].turn_id}#1"})
    assert report.ok, report.violations
    assert [m.type for m in await producer.history(s)] == ["human", "ai"] * 4

    # The resumed worker carries on: alone now, it serves new work.
    survivor.signal(signal.SIGTERM)
    assert survivor.wait(15) is not None
    assert victim.alive()
    s2 = sid("after")
    later = [await producer.enqueue(s2, f"after resume {i}") for i in range(3)]
    report = await checked(producer, {s2: [t.turn_id for t in later]}, timeout=20)
    assert report.completed == 3


# -- 3. SIGTERM (deploy) ----------------------------------------------------------------------


async def test_sigterm_finishes_the_turn_then_hands_the_session_back(
    fleet: Fleet, producer: ChatProducer, raw_redis: Redis
) -> None:
    # A long lease TTL: if the session were not handed back, the others would wait it out.
    ttl_ms, grace_s = 10_000, 5
    a, b = await start_ready(fleet, raw_redis, 2, lease_ttl_ms=ttl_ms, shutdown_grace_s=grace_s)
    s = sid("deploy")
    turns = [await producer.enqueue(s, "in flight !delay=1500")] + [
        await producer.enqueue(s, f"queued {i}") for i in range(3)
    ]
    pid, _ = await running_holder(producer, raw_redis, s, turns[0].turn_id)
    victim = a if pid == a.pid else b
    victim.signal(signal.SIGTERM)
    t0 = time.monotonic()
    assert victim.wait(grace_s + MARGIN_S) is not None, "worker did not stop within its grace"
    await checked(producer, {s: [t.turn_id for t in turns]}, timeout=20)
    statuses = [await producer.status(t.turn_id) for t in turns]
    assert statuses[0].attempts == 1  # finished by the stopping worker, not re-run
    assert all(st.attempts == 1 for st in statuses)
    assert time.monotonic() - t0 < ttl_ms / 1000  # handed back, not recovered by lease expiry
    assert "handed back after 1 turn(s)" in victim.log()


async def test_sigterm_past_grace_cancels_and_hands_the_turn_back(
    fleet: Fleet, producer: ChatProducer, raw_redis: Redis
) -> None:
    ttl_ms, grace_s = 10_000, 1
    a, b = await start_ready(fleet, raw_redis, 2, lease_ttl_ms=ttl_ms, shutdown_grace_s=grace_s)
    s = sid("deploy")
    turns = [await producer.enqueue(s, "longer than the grace !delay=3000"), await producer.enqueue(s, "queued")]
    pid, _ = await running_holder(producer, raw_redis, s, turns[0].turn_id)
    victim = a if pid == a.pid else b
    victim.signal(signal.SIGTERM)
    t0 = time.time()
    # Grace, then up to 2 s for the hand-back, then arq's own shutdown.
    assert victim.wait(grace_s + 2 + MARGIN_S) is not None, "worker did not stop after its grace"
    await checked(producer, {s: [t.turn_id for t in turns]}, timeout=20)
    first = await producer.status(turns[0].turn_id)
    assert first.attempts == 2 and first.started_at is not None
    # The other worker restarted it as soon as it was handed back, long before the lease TTL.
    assert first.started_at.timestamp() - t0 < ttl_ms / 1000
    assert [m.type for m in await producer.history(s)] == ["human", "ai"] * 2


# -- 4. and 5. Redis restart and outage -----------------------------------------------------


@dataclass
class Private:
    server: RedisServer
    fleet: Fleet
    producer: ChatProducer
    raw: Redis


@pytest.fixture
async def private_redis(tmp_path: Path) -> AsyncIterator[Callable[[Fsync], Private]]:
    """A redis-server of the test's own, so it can be killed and restarted."""
    made: list[Private] = []

    def make(appendfsync: Fsync) -> Private:
        server = RedisServer(appendfsync=appendfsync).start()
        fleet = Fleet(server.url, new_prefix(), tmp_path / f"private{len(made)}")
        p = Private(
            server, fleet, ChatProducer(settings=fleet.settings), Redis.from_url(server.url, decode_responses=True)
        )
        made.append(p)
        return p

    yield make
    for p in made:
        p.fleet.stop()
        await p.producer.close()
        await p.raw.aclose()
        p.server.close()


async def produce_through_outage(
    producer: ChatProducer, sessions: list[str], sent: dict[str, list[str]], stop: asyncio.Event, gap_s: float = 0.1
) -> int:
    """Each session's client enqueues turns one after another, retrying through outages with
    the same idempotency key; only acknowledged turns are recorded. Returns failed attempts."""
    failures = 0

    async def one(s: str) -> None:
        nonlocal failures
        i = 0
        while not stop.is_set():
            try:
                st, failed = await faults.enqueue_until_acked(producer, s, f"{s} turn {i}", f"{s}-{i}", timeout=30)
            except QueueFull:  # the workers are behind: back off, as a client should
                await asyncio.sleep(0.05)
                continue
            sent[s].append(st.turn_id)
            failures += failed
            i += 1
            await asyncio.sleep(gap_s)

    await asyncio.gather(*(one(s) for s in sessions))
    return failures


async def test_redis_restart_with_aof_always_loses_no_acknowledged_turn(
    private_redis: Callable[[Fsync], Private],
) -> None:
    p = private_redis("always")
    workers = await start_ready(p.fleet, p.raw, 2, fake_delay_ms=100)
    sessions = [sid("restart") for _ in range(6)]
    sent: dict[str, list[str]] = {s: [] for s in sessions}
    stop = asyncio.Event()
    producing = asyncio.create_task(produce_through_outage(p.producer, sessions, sent, stop))
    await asyncio.sleep(1.5)
    before = sum(len(v) for v in sent.values())
    p.server.kill()
    # Long enough that every worker's poll loop meets the outage even on a loaded machine.
    await asyncio.sleep(1.5)
    p.server.start()
    await asyncio.sleep(3.0)
    stop.set()
    failures = await producing
    after = sum(len(v) for v in sent.values())

    report = await checked(p.producer, sent, timeout=30)
    print(f"\n{before} turns acknowledged before the restart, {after} in all, {failures} enqueue attempts failed")
    assert failures > 0  # the producers did see the outage
    assert after > before  # and went on after it
    assert report.completed == report.accepted == after
    # The workers reconnected by themselves: the same processes, none exited.
    assert all(w.alive() for w in workers) and len(p.fleet.workers) == 2
    assert any("Redis is back" in w.log() for w in workers)  # their poll loops did meet the outage


async def test_redis_crash_with_aof_everysec_keeps_a_consistent_prefix(
    private_redis: Callable[[Fsync], Private],
) -> None:
    """everysec promises less: a crash may lose the last second of acknowledged writes (only an
    OS crash or power loss, or a stalled fsync, in practice: a killed process has already
    written them to the page cache). Whatever is lost must be the newest turns of each session,
    whole, and what survives must still satisfy every guarantee."""
    p = private_redis("everysec")
    await start_ready(p.fleet, p.raw, 2, fake_delay_ms=0)
    sessions = [sid("fsync") for _ in range(8)]
    sent: dict[str, list[str]] = {s: [] for s in sessions}
    stop = asyncio.Event()
    producing = asyncio.create_task(produce_through_outage(p.producer, sessions, sent, stop, gap_s=0.01))
    await asyncio.sleep(1.0)
    acked = {s: list(t) for s, t in sent.items()}
    p.server.kill()
    p.server.start()
    await asyncio.sleep(1.0)
    stop.set()
    await producing

    lost: dict[str, list[str]] = {}
    for s, tids in acked.items():
        lost[s] = [t for t in tids if not await p.raw.exists(p.producer.keys.turn(t))]
        assert lost[s] == tids[len(tids) - len(lost[s]) :], f"{s}: lost turns are not the newest ones"
    n_lost, n_acked = sum(map(len, lost.values())), sum(map(len, acked.values()))
    print(f"\neverysec, redis-server SIGKILLed: {n_lost} of {n_acked} acknowledged enqueues lost")
    survivors = {s: [t for t in tids if t not in lost[s]] for s, tids in sent.items()}
    await checked(p.producer, survivors, timeout=60)


async def test_redis_unreachable_enqueue_fails_fast_and_workers_resume(
    private_redis: Callable[[Fsync], Private],
) -> None:
    p = private_redis("always")
    workers = await start_ready(p.fleet, p.raw, 2)
    s = sid("outage")
    before = [await p.producer.enqueue(s, f"before {i} !delay=200") for i in range(4)]
    await asyncio.sleep(0.3)

    timeout_s = p.producer.settings.redis_timeout_s
    # Down (connection refused): a clear error at once, well inside the connect timeout.
    p.server.kill()
    t0 = time.monotonic()
    with pytest.raises(RedisUnavailable, match="unavailable"):
        await p.producer.enqueue(s, "while down")
    assert time.monotonic() - t0 < timeout_s
    await asyncio.sleep(2.0)
    p.server.start()

    # Hung (process stopped, so connections open but nothing answers): an error after the
    # client's socket timeout, not a hang.
    assert p.server.proc is not None
    os.kill(p.server.proc.pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        with pytest.raises(RedisUnavailable):
            await p.producer.enqueue(s, "while hung")
        hung_for = time.monotonic() - t0
    finally:
        os.kill(p.server.proc.pid, signal.SIGCONT)
    print(f"\nenqueue against a hung Redis failed after {hung_for:.1f}s")
    assert hung_for < timeout_s + 1 + MARGIN_S  # one command timeout (+1 s block allowance), no retry

    after = [await p.producer.enqueue(s, f"after {i}") for i in range(3)]
    report = await checked(p.producer, {s: [t.turn_id for t in [*before, *after]]}, timeout=30)
    assert report.completed == 7
    assert all(w.alive() for w in workers) and len(p.fleet.workers) == 2


async def test_worker_started_while_redis_is_down_waits_for_it(private_redis: Callable[[Fsync], Private]) -> None:
    p = private_redis("always")
    p.server.kill()
    (w,) = p.fleet.start(1)
    await asyncio.sleep(6.5)  # longer than arq's own start-up retries (5 x 1 s)
    assert w.alive()
    p.server.start()
    s = sid("late")
    t = await p.producer.enqueue(s, "hello")
    report = await checked(p.producer, {s: [t.turn_id]}, timeout=20)
    assert report.completed == 1 and w.alive()


async def _noop(ctx: dict[str, object]) -> None:
    return None


async def test_poll_that_fails_mid_start_gives_its_job_slot_back() -> None:
    """A Redis error while arq checks a job it is about to start must not leak the job slot,
    or a worker that lived through a few outages would have no slot left to run drains on."""
    with RedisServer() as server:
        pool = await create_pool(RedisSettings(port=server.port))
        w = ChatlaneWorker(functions=[func(_noop, name="noop")], redis_pool=pool, handle_signals=False, max_jobs=1)
        server.kill()
        for _ in range(3):  # with a leaked slot, the second call would wait forever for it
            with pytest.raises(REDIS_DOWN):
                await asyncio.wait_for(w.start_jobs([b"some-job"]), 5)
        assert w.job_counter == 0 and not w.sem.locked()
        await pool.aclose()


class CuttingProxy:
    """A TCP proxy to Redis that cuts the connection when the client sends a given command: a
    real connection loss at an exact point of a conversation."""

    def __init__(self, redis_port: int, cut_on: bytes) -> None:
        self.redis_port = redis_port
        self.marker = b"\r\n" + cut_on + b"\r\n"
        self.cuts = 0

    async def __aenter__(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        redis_r, redis_w = await asyncio.open_connection("127.0.0.1", self.redis_port)

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter, inspect: bool) -> None:
            while data := await r.read(65536):
                if inspect and self.marker in data.upper():
                    self.cuts += 1
                    break
                w.write(data)
                await w.drain()
            for writer in (client_w, redis_w):
                writer.transport.abort()  # a reset, as when the network or the server goes away

        await asyncio.gather(pipe(client_r, redis_w, True), pipe(redis_r, client_w, False), return_exceptions=True)


async def test_connection_lost_between_watch_and_exec_neither_ends_the_worker_nor_leaks_a_slot() -> None:
    """redis-py reports a connection lost after WATCH as WatchError, not ConnectionError: found by
    the soak, where it ended workers through arq's poll loop."""
    with RedisServer() as server:
        async with CuttingProxy(server.port, b"EXISTS") as port:
            pool = await create_pool(RedisSettings(port=port))
            w = ChatlaneWorker(functions=[func(_noop, name="noop")], redis_pool=pool, handle_signals=False, max_jobs=1)
            for _ in range(3):
                with pytest.raises(REDIS_DOWN):
                    await asyncio.wait_for(w.start_jobs([b"some-job"]), 5)
            assert w.job_counter == 0 and not w.sem.locked()
            await pool.aclose()


# -- 6. Model faults --------------------------------------------------------------------------


async def test_failing_model_retries_commits_whole_replies_and_fails_poison_turns(
    fleet: Fleet, producer: ChatProducer, raw_redis: Redis
) -> None:
    await start_ready(
        fleet, raw_redis, 2,
        fake_fail_rate=0.2, fake_midstream_fail_rate=0.1, fake_hang_rate=0.05,
        model_timeout_s=0.5, max_attempts=3, retry_backoff_s=0.05, fake_delay_ms=40,
    )  # fmt: skip
    rng = random.Random(6)
    sessions = [sid("model") for _ in range(6)]
    sent: dict[str, list[str]] = {s: [] for s in sessions}
    texts: dict[str, str] = {}
    poison: set[str] = set()
    for i in range(10):
        for s in sessions:
            directive = rng.choice(["", "", "", "", " !hang=1", " !failmid=1", " !fail=2", " !fail"])
            st = await producer.enqueue(s, f"{s} turn {i}{directive}")
            sent[s].append(st.turn_id)
            texts[st.turn_id] = st.text
            if directive == " !fail":
                poison.add(st.turn_id)
    report = await checked(producer, sent, timeout=90)

    assert poison and report.failed >= len(poison)
    model = FakeChatModel()
    for s, tids in sent.items():
        history = await producer.history(s)
        for t in tids:
            st = report.statuses[t]
            if t in poison:
                assert st.state is TurnState.failed and st.attempts == 3, st
                assert st.error and "after 3 attempt(s)" in st.error
                continue
            if st.state is TurnState.failed:  # unlucky: random faults on every attempt
                assert st.error and st.attempts == 3
                continue
            assert st.state is TurnState.completed
            # Whole, never partial: the committed reply is exactly what the model says for the
            # history before it, and a reader replaying the token stream gets the same text.
            at = next(i for i, m in enumerate(history) if m.id == f"{t}:user")
            assert history[at + 1].text == st.reply == model.reply_for(history[: at + 1])
            assert partial_reply([ev async for ev in producer.events(t)]) == st.reply
        # Failed turns did not stop their session: its last turn still ran if it could.
        assert any(report.statuses[t].state is TurnState.completed for t in tids[-3:])
    retried = sum(1 for st in report.statuses.values() if st.state is TurnState.completed and st.attempts > 1)
    print(f"\n{report.completed} completed ({retried} after retries), {report.failed} failed ({len(poison)} poison)")
    assert retried > 0
