"""Failover under load: what a Sentinel failover costs chatlane, with and without WAIT.

``python -m devkit.failover`` (``make failover``) starts a Sentinel group of real processes on
loopback (a primary, one replica, three sentinels), worker processes and ~20 session clients,
fails the primary over a few times while the load runs, and prints a table: one row per kind of
failover and CHATLANE_REDIS_MIN_REPLICAS_ACK value (0 and 1 by default). Kinds:

- ``kill``: SIGKILL of the primary. On loopback a gentle death: the kernel still sends the
  replica what the process had written, so the replica is rarely behind.
- ``partition``: the replica's link to the primary is cut (``devkit.link``: nothing passes,
  nothing closes) ``--partition-ms`` before the SIGKILL, while clients still reach the primary:
  a primary whose host loses its network, or a replica that lags that much when its primary's
  host dies.
- ``switch``: ``SENTINEL FAILOVER``, a planned switch. The old primary lives on and Sentinel
  turns it into a replica about 10 s later.

After a kill the dead node is started again as a replica of the new primary (what a process
manager with a Sentinel-aware start-up script does).

The clients behave as careful clients do: each enqueues one to three turns with idempotency keys,
retrying a refused enqueue (Redis unavailable, or not yet replicated) with the same key until it
is acknowledged, then waits for its last turn to end. Measured:

- acknowledged enqueues lost: acknowledged to a client, but no record of the turn at the end;
- duplicated: a turn twice in its session's history (devkit.check);
- commits lost: a turn a client saw end (completed or failed) whose end was taken back: at the
  end it is not in that state, or ended at another time (it was run again);
- time from the fault to the promotion, to the new primary having a replica in sync, and from
  the promotion until each session's client sees one of its turns end again;
- and devkit.check's every other invariant (order, nothing stuck, history whole).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from devkit import faults
from devkit.check import Report, check
from devkit.processes import WorkerProcess, worker_env
from devkit.redis_server import Fsync
from devkit.sentinel_group import MASTER_NAME, SentinelGroup
from producer import (
    ChatProducer,
    RedisUnavailable,
    ReplicationTimeout,
    Settings,
    TurnNotFound,
    TurnState,
    TurnStatus,
)

REFUSED = (RedisUnavailable, ReplicationTimeout)


FAULTS = ("kill", "partition", "switch")


@dataclass
class Options:
    min_replicas_ack: int = 1
    fault: str = "kill"
    replicas: int = 1
    failovers: int = 3
    sessions: int = 20
    workers: int = 2
    load_s: float = 3.0  # load before each kill
    partition_ms: int = 300
    appendfsync: Fsync = "always"
    down_after_ms: int = 1000
    lease_ttl_ms: int = 1500
    wait_timeout_ms: int = 1000
    fake_delay_ms: int = 60
    seed: int = 1

    def worker_env(self) -> dict[str, str]:
        settings = {
            "LEASE_TTL_MS": self.lease_ttl_ms,
            "SWEEP_INTERVAL_S": 1,
            "POLL_DELAY_S": 0.01,
            "FAKE_DELAY_MS": self.fake_delay_ms,
            "MODEL_TIMEOUT_S": 10,
            "SHUTDOWN_GRACE_S": 3,
            "REDIS_MIN_REPLICAS_ACK": self.min_replicas_ack,
            "REDIS_WAIT_TIMEOUT_MS": self.wait_timeout_ms,
        }
        return {f"CHATLANE_{k}": str(v) for k, v in settings.items()}


@dataclass
class Outcome:
    opts: Options
    report: Report
    acked: int = 0
    lost_enqueues: int = 0
    commits_lost: int = 0
    seen_ended: int = 0
    refused: int = 0  # enqueue attempts refused (and retried)
    promotion_s: list[float] = field(default_factory=list)
    resume_s: list[float] = field(default_factory=list)  # per session and failover
    replica_back_s: list[float] = field(default_factory=list)  # kill -> the new primary has a replica
    workers_died: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """The goal for N >= 1: nothing acknowledged lost or taken back, nothing duplicated, all ended."""
        return (
            not self.lost_enqueues
            and not self.commits_lost
            and not self.report.duplicated
            and not self.report.out_of_order
            and not self.report.unfinished
            and not self.workers_died
            and len(self.resume_s) == self.opts.failovers * self.opts.sessions
        )


class Run:
    def __init__(self, opts: Options, group: SentinelGroup, log_dir: Path) -> None:
        self.opts = opts
        self.group = group
        self.rng = random.Random(opts.seed)
        self.prefix = f"fo{uuid.uuid4().hex[:8]}"
        self.settings = Settings(
            key_prefix=self.prefix,
            redis_min_replicas_ack=opts.min_replicas_ack,
            redis_wait_timeout_ms=opts.wait_timeout_ms,
            redis_sentinels=group.sentinel_list,
            redis_sentinel_master=MASTER_NAME,
        )
        env = worker_env(group.nodes[0].url, self.prefix, {**opts.worker_env(), **group.env()})
        self.workers = [WorkerProcess(env, log_dir / f"worker{i}.log") for i in range(opts.workers)]
        self.sessions = [f"fo-{i:03d}" for i in range(opts.sessions)]
        self.sent: dict[str, list[str]] = {s: [] for s in self.sessions}
        # turn id -> (finished_at, state) as a client saw it end; session -> times it saw an end
        self.seen: dict[str, tuple[object, TurnState]] = {}
        self.seen_at: dict[str, list[float]] = {s: [] for s in self.sessions}
        self.refused = 0
        self.ended = asyncio.Event()

    async def client(self, producer: ChatProducer, session: str, stop: asyncio.Event) -> None:
        i = 0
        while not stop.is_set():
            last = ""
            for _ in range(self.rng.choice([1, 1, 2, 3])):
                text, key = f"{session} turn {i}", f"{session}-{i}"
                st, failed = await faults.enqueue_until_acked(producer, session, text, key, timeout=120)
                self.refused += failed
                self.sent[session].append(st.turn_id)
                last = st.turn_id
                i += 1
            ended = await self.follow(producer, last)
            if ended is not None:
                self.saw(session, ended)

    async def follow(self, producer: ChatProducer, turn_id: str) -> TurnStatus | None:
        """Wait for the turn to end, through outages (as a polling client would); None if a
        failover lost it (the client carries on; the tally counts it)."""
        while True:
            try:
                return await producer.wait(turn_id, 5)
            except TurnNotFound:
                return None
            except (*REFUSED, TimeoutError):
                await asyncio.sleep(0.1)

    def saw(self, session: str, st: TurnStatus) -> None:
        self.seen[st.turn_id] = (st.finished_at, st.state)
        self.seen_at[session].append(time.monotonic())
        self.ended.set()

    async def run(self) -> Outcome:
        for w in self.workers:
            w.start()
        producer = ChatProducer(settings=self.settings)
        out = Outcome(self.opts, Report())
        stop = asyncio.Event()
        clients: list[asyncio.Task[None]] = []
        try:
            await faults.wait_registered(producer.redis, producer.keys, [w.pid for w in self.workers], timeout=60)
            clients = [asyncio.create_task(self.client(producer, s, stop)) for s in self.sessions]
            for _ in range(self.opts.failovers):
                await asyncio.sleep(self.opts.load_s)
                await self.failover(out)
            await asyncio.sleep(self.opts.load_s)
            stop.set()
            await asyncio.gather(*clients)
            await self.settle(producer)
            out.report = await check(producer, self.sent)
            await self.tally(producer, out)
        finally:
            for c in clients:
                c.cancel()
            await asyncio.gather(*clients, return_exceptions=True)
            out.workers_died = sum(not w.alive() for w in self.workers)
            for w in self.workers:
                w.stop()
            await producer.close()
        return out

    async def failover(self, out: Outcome) -> None:
        old = self.group.primary()
        if self.opts.fault == "partition":
            self.group.cut_primary_links()
            await asyncio.sleep(self.opts.partition_ms / 1000)
        t_fault = time.monotonic()
        if self.opts.fault == "switch":
            await self.group.switch()
        else:
            old.kill()
        await self.group.wait_promoted(old.port, timeout=60)
        t_promoted = time.monotonic()
        out.promotion_s.append(t_promoted - t_fault)
        if self.opts.fault != "switch":
            self.group.restart_as_replica(old)
        await self.group.wait_replicas_in_sync(1, timeout=60)
        out.replica_back_s.append(time.monotonic() - t_fault)
        # Each session resumes when its client next sees a turn end.
        deadline = time.monotonic() + 60
        for s in self.sessions:
            while not any(t > t_promoted for t in self.seen_at[s]) and time.monotonic() < deadline:
                self.ended.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.ended.wait(), 0.05)
            after = [t for t in self.seen_at[s] if t > t_promoted]
            if after:
                out.resume_s.append(min(after) - t_promoted)
            else:
                out.problems.append(f"session {s} did not resume within 60 s of the promotion")

    async def settle(self, producer: ChatProducer) -> None:
        deadline = time.monotonic() + 120
        for tids in self.sent.values():
            for t in tids:
                with contextlib.suppress(*REFUSED, TimeoutError, LookupError):
                    await producer.wait(t, max(0.1, deadline - time.monotonic()))

    async def tally(self, producer: ChatProducer, out: Outcome) -> None:
        r = out.report
        out.acked = r.accepted
        out.lost_enqueues = sum(1 for tids in self.sent.values() for t in tids if t not in r.statuses)
        out.seen_ended = len(self.seen)
        for tid, (finished_at, state) in self.seen.items():
            final = r.statuses.get(tid)
            if final is None or final.state is not state or final.finished_at != finished_at:
                out.commits_lost += 1
                now = f"{final.state.value} at {final.finished_at}" if final else "gone"
                out.problems.append(f"turn {tid} was seen {state.value} at {finished_at}; now {now}")
        out.refused = self.refused
        out.problems += r.violations


async def measure(opts: Options, log_dir: Path) -> Outcome:
    group = SentinelGroup(
        replicas=opts.replicas,
        appendfsync=opts.appendfsync,
        down_after_ms=opts.down_after_ms,
        links=opts.fault == "partition",
    ).start()
    try:
        return await Run(opts, group, log_dir).run()
    finally:
        group.close()


def _spread(values: list[float]) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    return f"{ordered[len(ordered) // 2]:.2f} / {ordered[-1]:.2f}"


def table(outcomes: list[Outcome]) -> str:
    """A Markdown table, one row per run."""
    head = ["failover", "MIN_REPLICAS_ACK", "enqueues acked", "acked enqueues lost", "duplicated",
            "ends seen", "commits lost", "enqueues refused (retried)", "fault → promotion s",
            "fault → replica in sync s", "promotion → session served s (median / max)"]  # fmt: skip
    rows = [head]
    for o in outcomes:
        name = f"{o.opts.fault} (link cut {o.opts.partition_ms} ms)" if o.opts.fault == "partition" else o.opts.fault
        if o.opts.replicas != 1:
            name += f", {o.opts.replicas} replicas"
        rows.append([
            f"{name} ×{len(o.promotion_s)}", str(o.opts.min_replicas_ack), str(o.acked), str(o.lost_enqueues),
            str(o.report.duplicated), str(o.seen_ended), str(o.commits_lost), str(o.refused),
            _spread(o.promotion_s), _spread(o.replica_back_s), _spread(o.resume_s),
        ])  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def parse(argv: list[str] | None) -> tuple[list[str], list[int], Options]:
    p = argparse.ArgumentParser(prog="python -m devkit.failover", description=__doc__.split("\n\n")[0])
    p.add_argument("--faults", default=",".join(FAULTS), help=f"kinds of failover, from {','.join(FAULTS)}")
    p.add_argument("--acks", default="0,1", help="CHATLANE_REDIS_MIN_REPLICAS_ACK values (default 0,1)")
    p.add_argument("--failovers", type=int, default=3, help="failovers per run (default 3)")
    p.add_argument("--sessions", type=int, default=20)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--replicas", type=int, default=1, help="replicas of the primary (default 1)")
    p.add_argument("--load-s", type=float, default=3.0, help="seconds of load before each failover")
    p.add_argument("--partition-ms", type=int, default=300, help="partition: link cut this long before the kill")
    p.add_argument("--appendfsync", choices=["always", "everysec"], default="always")
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args(argv)
    opts = Options(
        failovers=a.failovers, sessions=a.sessions, workers=a.workers, replicas=a.replicas, load_s=a.load_s,
        partition_ms=a.partition_ms, appendfsync=a.appendfsync, seed=a.seed,
    )  # fmt: skip
    kinds = a.faults.split(",")
    if not set(kinds) <= set(FAULTS):
        p.error(f"--faults: choose from {','.join(FAULTS)}")
    return kinds, [int(x) for x in a.acks.split(",")], opts


async def amain(kinds: list[str], acks: list[int], opts: Options, log_dir: Path) -> list[Outcome]:
    outcomes = []
    for kind in kinds:
        for n in acks:
            o = Options(**{**vars(opts), "fault": kind, "min_replicas_ack": n})
            what = f"{o.failovers}× {kind}, {o.sessions} sessions, {o.workers} workers"
            print(f"failover: MIN_REPLICAS_ACK={n}, {what}", flush=True)
            outcomes.append(await measure(o, log_dir / f"{kind}-ack{n}"))
    return outcomes


def main(argv: list[str] | None = None) -> None:
    kinds, acks, opts = parse(argv)
    log_dir = Path(tempfile.mkdtemp(prefix="chatlane-failover-"))
    t0 = time.monotonic()
    outcomes = asyncio.run(amain(kinds, acks, opts, log_dir))
    print(
        f"\n{time.monotonic() - t0:.0f}s; {opts.sessions} sessions, {opts.workers} workers, fake model "
        f"{opts.fake_delay_ms} ms; AOF {opts.appendfsync}; lease TTL {opts.lease_ttl_ms} ms; sentinel down-after "
        f"{opts.down_after_ms} ms; WAIT timeout {opts.wait_timeout_ms} ms\n"
    )
    print(table(outcomes))
    for o in outcomes:
        for problem in o.problems[:5]:
            print(f"  ! {o.opts.fault} N={o.opts.min_replicas_ack}: {problem}")
    # An acknowledged write survives a failover when the promoted replica is one that confirmed it:
    # certain only when every replica must confirm. With more replicas than that, the old primary
    # can keep one that still confirms after another was promoted (measured: 2 replicas, N=1,
    # SENTINEL FAILOVER lost acknowledged enqueues), so those rows are reported, not judged.
    goal = all(o.ok for o in outcomes if o.opts.min_replicas_ack >= o.opts.replicas)
    print(f"\ngoal (MIN_REPLICAS_ACK = replicas: nothing acknowledged lost or taken back, nothing duplicated): "
          f"{'met' if goal else 'MISSED'}")  # fmt: skip
    if goal:
        shutil.rmtree(log_dir, ignore_errors=True)
    else:
        print(f"worker logs: {log_dir}")
    sys.exit(0 if goal else 1)


if __name__ == "__main__":
    main()
