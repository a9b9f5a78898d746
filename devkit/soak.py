"""The soak: real workers, a real redis-server of its own, every fault mixed in, then every turn
checked against the guarantees. ``make soak`` (5 minutes), ``SOAK_ARGS="--minutes 1"`` to shorten.

While ~50 session clients enqueue turns (retrying through outages with their idempotency keys,
as a careful client does), a fault is injected every few seconds, at random from: SIGKILL of a
worker (restarted at once, as a process manager would), SIGSTOP of a lease holder past the lease
TTL, SIGTERM (a deploy: a replacement starts at once), Redis killed and restarted, Redis down for
a few seconds, Redis hung (SIGSTOP) for a few seconds, and a queued drain job deleted by hand.
The fake model fails, fails mid-stream and hangs past its timeout at random rates, and some turns
carry fault directives (always fail, fail once mid-stream, hang once, run longer than the
shutdown grace). After the run, producers stop, faults stop, every accepted turn must end, and
``devkit.check`` checks them all. Exit status 1 if any invariant broke, a session waited longer
than its recovery bound, a worker outlived its shutdown grace, or a worker died unasked.

``--redis sentinel`` runs it against a Sentinel group instead of one redis-server, with
CHATLANE_REDIS_MIN_REPLICAS_ACK=1 (``--min-replicas-ack``): the Redis faults then hit the
current primary and make the sentinels fail over, and two more join the deck, a primary that
dies with its last writes unsent (``failover``) and a planned switch (``switch``); see
``devkit.soak_redis``. ``make soak`` runs both, one after the other.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from redis import exceptions as redis_errors

from chatlane.keys import Keys
from devkit import faults
from devkit.blackhole import BlackholeProxy
from devkit.check import Report, check
from devkit.processes import WorkerProcess, worker_env
from devkit.redis_server import Fsync
from devkit.soak_redis import Sentinel, Single, down_time
from producer import ChatProducer, RedisUnavailable, ReplicationTimeout, Settings, TurnState

MARGIN_S = 1.5  # polling, process start-up and a busy 2-core machine, on top of derived bounds


@dataclass
class Options:
    minutes: float
    workers: int
    sessions: int
    rate: float
    fault_every_s: float
    seed: int
    appendfsync: str
    lease_ttl_ms: int
    sweep_interval_s: int
    shutdown_grace_s: int
    model_timeout_s: float
    keep_logs: bool
    faults: str
    redis: str
    min_replicas_ack: int

    def worker_env(self) -> dict[str, str]:
        settings = {
            "LEASE_TTL_MS": self.lease_ttl_ms,
            "SWEEP_INTERVAL_S": self.sweep_interval_s,
            "SHUTDOWN_GRACE_S": self.shutdown_grace_s,
            "MODEL_TIMEOUT_S": self.model_timeout_s,
            "MAX_ATTEMPTS": 3,
            "RETRY_BACKOFF_S": 0.2,
            "RETRY_BACKOFF_MAX_S": 1.0,
            "FAKE_DELAY_MS": 150,
            "FAKE_FAIL_RATE": 0.2,
            "FAKE_MIDSTREAM_FAIL_RATE": 0.05,
            "FAKE_HANG_RATE": 0.02,
        }
        return {f"CHATLANE_{k}": str(v) for k, v in settings.items()}

    @property
    def recovery_bound_s(self) -> float:
        """G6: a session whose holder died is served again within lease TTL + sweep interval."""
        return self.lease_ttl_ms / 1000 + self.sweep_interval_s + MARGIN_S


@dataclass
class Tally:
    faults: Counter[str] = field(default_factory=Counter)
    recoveries: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    directives: Counter[str] = field(default_factory=Counter)
    enqueue_failures: int = 0
    unexpected_exits: int = 0
    slow_shutdowns: int = 0
    problems: list[str] = field(default_factory=list)


class Soak:
    def __init__(self, opts: Options, redis: Single | Sentinel, log_dir: Path) -> None:
        self.opts = opts
        self.redis = redis
        self.log_dir = log_dir
        self.rng = random.Random(opts.seed)
        self.prefix = f"soak{opts.seed}"
        self.keys = Keys(self.prefix)
        self.settings = Settings.model_validate({**redis.settings(), "key_prefix": self.prefix})
        self.env = worker_env(self.settings.redis_url, self.prefix, {**opts.worker_env(), **redis.env()})
        self.workers: list[WorkerProcess] = []
        self.retired: set[int] = set()  # pids we stopped on purpose
        self.proxies: dict[int, BlackholeProxy] = {}  # pid -> the proxy between it and Redis
        self.excused: set[str] = set()  # attempts of paused processes ("<turn>#<attempt>")
        self.sessions = [f"soak-{i:03d}" for i in range(opts.sessions)]
        self.sent: dict[str, list[str]] = {s: [] for s in self.sessions}
        self.tally = Tally()
        # The soak's own reads ride out the outages it causes.
        self.raw = redis.raw_client()

    # -- processes ---------------------------------------------------------------------------

    async def start_worker(self) -> WorkerProcess:
        """A worker; with one redis-server it reaches it through a proxy of its own, so it can be
        partitioned (a Sentinel group's workers follow the primary themselves)."""
        if not isinstance(self.redis, Single):
            w = WorkerProcess(self.env, self.log_dir / f"worker{len(self.workers):03d}.log").start()
            self.workers.append(w)
            return w
        proxy = await BlackholeProxy(self.redis.server.port).__aenter__()
        env = {**self.env, "CHATLANE_REDIS_URL": proxy.url}
        w = WorkerProcess(env, self.log_dir / f"worker{len(self.workers):03d}.log").start()
        self.workers.append(w)
        self.proxies[w.pid] = proxy
        return w

    def live(self) -> list[WorkerProcess]:
        return [w for w in self.workers if w.alive() and w.pid not in self.retired]

    async def supervise(self) -> None:
        """Restart any worker that died without being asked to (and count it: it is a bug)."""
        while True:
            await asyncio.sleep(0.5)
            for w in self.workers:
                if not w.alive() and w.pid not in self.retired:
                    self.retired.add(w.pid)
                    self.tally.unexpected_exits += 1
                    self.tally.problems.append(f"worker {w.pid} exited unasked ({w.log_path})")
                    await self.start_worker()

    # -- load --------------------------------------------------------------------------------

    def text(self, session: str, i: int) -> str:
        r = self.rng.random()
        for directive, p in ((" !fail", 0.01), (" !failmid=1", 0.02), (" !hang=1", 0.01), (" !delay=4000", 0.02)):
            if r < p:
                self.tally.directives[directive.strip()] += 1
                return f"{session} turn {i}{directive}"
            r -= p
        return f"{session} turn {i}"

    async def client(self, session: str, stop: asyncio.Event, producer: ChatProducer) -> None:
        """One session's client: turns one after another, now and then a burst."""
        mean_gap = self.opts.sessions / self.opts.rate
        i = 0
        while not stop.is_set():
            for _ in range(self.rng.choice([1, 1, 1, 1, 2, 3])):
                st, failed = await faults.enqueue_until_acked(
                    producer, session, self.text(session, i), f"{session}-{i}", timeout=120
                )
                self.sent[session].append(st.turn_id)
                self.tally.enqueue_failures += failed
                i += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.rng.expovariate(1 / mean_gap))

    # -- faults ------------------------------------------------------------------------------

    async def measure(self, kind: str, held: dict[str, str], since: float, *, renewal_counts: bool = False) -> None:
        waited = await faults.wait_resumed(self.raw, self.keys, held, since, 60, renewal_counts=renewal_counts)
        self.tally.recoveries[kind].extend(waited.values())

    async def holder(self) -> tuple[WorkerProcess, dict[str, str]] | None:
        """A live worker holding at least one lease, with the leases it holds."""
        held = await faults.leases(self.raw, self.keys, self.sessions)
        by_pid: dict[int, dict[str, str]] = defaultdict(dict)
        for s, token in held.items():
            by_pid[faults.worker_pid(token)][s] = token
        candidates = [w for w in self.live() if by_pid.get(w.pid)]
        if not candidates:
            return None
        w = self.rng.choice(candidates)
        return w, by_pid[w.pid]

    async def sigkill(self) -> bool:
        found = await self.holder()
        if found is None:
            return False
        victim, held = found
        self.retired.add(victim.pid)
        victim.signal(signal.SIGKILL)
        t0 = time.monotonic()
        await self.start_worker()
        await self.measure("sigkill", held, t0)
        return True

    async def sigstop(self) -> bool:
        found = await self.holder()
        if found is None:
            return False
        victim, held = found
        victim.signal(signal.SIGSTOP)
        t0 = time.monotonic()
        # A stopped process cannot close its model call: its running attempts may overlap the
        # next holder's (see devkit.check). Excuse exactly those.
        self.excused |= await self.running_attempts(held)
        try:
            await self.measure("sigstop", held, t0)
            # Keep it stopped past its lease TTL whatever happened, then let it carry on.
            await asyncio.sleep(max(0.0, t0 + self.opts.lease_ttl_ms / 1000 + 1.0 - time.monotonic()))
        finally:
            victim.signal(signal.SIGCONT)
        return True

    async def running_attempts(self, held: dict[str, str]) -> set[str]:
        out: set[str] = set()
        for s in held:
            head = await self.raw.lindex(self.keys.session(s).inbox, 0)  # type: ignore[misc]
            if head:
                attempts = await self.raw.hget(self.keys.turn(head), "attempts")  # type: ignore[misc]
                out.add(f"{head}#{attempts}")
        return out

    async def partition(self) -> bool:
        """Cut a holder off from Redis (packets blackholed, nothing closed) for longer than its
        lease; it must stop generating before its lease could expire (checked by the attempt
        records: no excuse here), and its sessions resume elsewhere within TTL + sweep."""
        found = await self.holder()
        if found is None:
            return False
        victim, held = found
        proxy = self.proxies[victim.pid]
        proxy.cut()
        t0 = time.monotonic()
        try:
            await self.measure("partition", held, t0)
            await asyncio.sleep(max(0.0, t0 + self.opts.lease_ttl_ms / 1000 + 1.0 - time.monotonic()))
        finally:
            proxy.heal()
        return True

    async def sigterm(self) -> bool:
        found = await self.holder()
        victim, held = found if found else (self.rng.choice(self.live()), {})
        self.retired.add(victim.pid)
        victim.signal(signal.SIGTERM)
        t0 = time.monotonic()
        await self.start_worker()  # the deploy's new process
        asyncio.get_running_loop().create_task(self.reap(victim))
        await self.measure("sigterm", held, t0)
        return True

    async def reap(self, w: WorkerProcess) -> None:
        """A worker asked to stop must be gone within its grace, plus hand-back and exit."""
        limit = self.opts.shutdown_grace_s + 2 + MARGIN_S
        if await asyncio.to_thread(w.wait, limit) is None:
            self.tally.slow_shutdowns += 1
            self.tally.problems.append(f"worker {w.pid} still running {limit:.1f}s after SIGTERM")
            w.signal(signal.SIGKILL)

    async def redis_fault(self, kind: str, action: Callable[[], Awaitable[None]]) -> bool:
        held = await faults.leases(self.raw, self.keys, self.sessions)
        await action()
        # From Redis being back: a holder that survived the fault resumes by renewing its lease.
        await self.measure(kind, held, time.monotonic(), renewal_counts=True)
        return True

    async def redis_restart(self) -> bool:
        return await self.redis_fault("redis_restart", self.redis.restart)

    async def redis_outage(self) -> bool:
        return await self.redis_fault("redis_outage", lambda: self.redis.outage(down_time(self.rng)))

    async def redis_hang(self) -> bool:
        return await self.redis_fault("redis_hang", lambda: self.redis.hang(down_time(self.rng)))

    async def failover(self) -> bool:
        assert isinstance(self.redis, Sentinel)
        return await self.redis_fault("failover", self.redis.failover)

    async def switch(self) -> bool:
        assert isinstance(self.redis, Sentinel)
        return await self.redis_fault("switch", self.redis.switch)

    async def lost_drain_job(self) -> bool:
        """Delete queued drain jobs by hand. Workers claim a queued job within a poll, so they are
        held still (SIGSTOP, well inside the lease TTL) until the clients' next enqueues on idle
        sessions have queued some, which are then deleted."""
        workers = self.live()
        for w in workers:
            w.signal(signal.SIGSTOP)
        lost: dict[str, str] = {}
        try:
            deadline = time.monotonic() + 1.5
            while not lost and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                for s in self.sessions:
                    if len(lost) < 3 and await faults.lose_drain_job(self.raw, self.keys, s):
                        lost[s] = ""  # no holder: resumed once anyone holds it, or nothing is left
        finally:
            for w in workers:
                w.signal(signal.SIGCONT)
        if lost:
            await self.measure("lost_drain_job", lost, time.monotonic())
        return bool(lost)

    FAULTS: tuple[tuple[str, int], ...] = (
        ("sigkill", 4), ("sigstop", 2), ("sigterm", 2), ("lost_drain_job", 2), ("partition", 2),
        ("redis_restart", 1), ("redis_outage", 1), ("redis_hang", 1), ("failover", 2), ("switch", 1),
    )  # fmt: skip
    # Kinds only some Redis setups support (soak_redis.Single.kinds / Sentinel.kinds): failovers need a
    # Sentinel group; partitions put a proxy between each worker and one redis-server.
    REDIS_ONLY = frozenset(("failover", "switch", "partition"))

    async def inject(self, until: float) -> None:
        chosen = set(self.opts.faults.split(",")) - (self.REDIS_ONLY - set(self.redis.kinds))
        deck: list[str] = []
        while time.monotonic() < until:
            await asyncio.sleep(self.rng.uniform(0.5, 1.5) * self.opts.fault_every_s)
            if not deck:
                # Dealt from a shuffled deck holding each kind as often as its weight, so every
                # kind occurs in any run longer than one deck (~13 faults, ~1.5 min).
                deck = [k for k, weight in self.FAULTS if k in chosen for _ in range(weight)]
                self.rng.shuffle(deck)
            kind = deck.pop()
            try:
                if await getattr(self, kind)():
                    self.tally.faults[kind] += 1
                    print(f"  {time.strftime('%H:%M:%S')} {kind}", flush=True)
            except (RedisUnavailable, redis_errors.ConnectionError, redis_errors.TimeoutError) as e:
                # The soak's own Redis reads can meet an outage it did not cause (a hung Redis
                # recovering); the fault still happened or did not, and the checks decide.
                print(f"  {time.strftime('%H:%M:%S')} {kind}: measurement interrupted ({e})", flush=True)

    # -- run ---------------------------------------------------------------------------------

    async def run(self) -> tuple[Report, dict[str, int], float]:
        for _ in range(self.opts.workers):
            await self.start_worker()
        await faults.wait_registered(self.raw, self.keys, [w.pid for w in self.workers], timeout=60)
        supervisor = asyncio.create_task(self.supervise())
        stop = asyncio.Event()
        t0 = time.monotonic()
        async with ChatProducer(settings=self.settings) as producer:
            clients = [asyncio.create_task(self.client(s, stop, producer)) for s in self.sessions]
            await self.inject(until=t0 + self.opts.minutes * 60)
            stop.set()
            await asyncio.gather(*clients)
            elapsed = time.monotonic() - t0
            print(f"  load and faults stopped after {elapsed:.0f}s; waiting for every turn to end", flush=True)
            await self.settle(producer)
            await asyncio.sleep(2.0)  # cut-off holders' attempt-end records reach Redis (worker.evidence)
            report = await check(producer, self.sent, self.excused)
        supervisor.cancel()
        # The workers talk to Redis through proxies served by this loop: stop them off the loop.
        await asyncio.gather(*(asyncio.to_thread(w.stop) for w in self.workers))
        for proxy in self.proxies.values():
            await proxy.__aexit__(None, None, None)
        st = await faults.stats(self.raw, self.keys)
        await self.raw.aclose()
        return report, st, elapsed

    async def settle(self, producer: ChatProducer) -> None:
        # Long enough for a turn that hangs on every attempt, behind a few queued ones.
        deadline = time.monotonic() + 3 * (self.opts.model_timeout_s + 1) * 3 + 60
        for tids in self.sent.values():
            for t in tids:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                with contextlib.suppress(TimeoutError, ReplicationTimeout):
                    await producer.wait(t, left)


def summary(soak: Soak, report: Report, stats: dict[str, int], elapsed: float) -> tuple[list[tuple[str, str]], bool]:
    t, o = soak.tally, soak.opts
    retried = sum(1 for st in report.statuses.values() if st.state is TurnState.completed and st.attempts > 1)
    rows: list[tuple[str, str]] = [
        ("duration", f"{elapsed / 60:.1f} min, {o.workers} workers, {report.sessions} sessions"),
        ("redis", soak.redis.describe()),
        ("turns accepted", str(report.accepted)),
        ("completed", f"{report.completed} ({retried} after model retries)"),
        ("failed (with reason)", str(report.failed)),
        ("cancelled", str(report.cancelled)),
        ("lost", str(report.lost)),
        ("duplicated", str(report.duplicated)),
        ("out of order", str(report.out_of_order)),
        ("overlapping in a session", str(report.overlapping)),
        ("overlaps by paused (SIGSTOPped) holders, expected", str(report.excused_overlaps)),
        ("attempts whose end was never recorded (SIGKILL)", str(report.unrecorded_ends)),
        ("stuck (not ended)", str(report.unfinished)),
    ]
    for kind, _ in Soak.FAULTS:
        if kind in Soak.REDIS_ONLY and kind not in soak.redis.kinds:
            continue
        rows.append((f"fault: {kind}", str(t.faults[kind])))
    rows.append(("fault: model (per attempt)", "fail 20%, fail mid-stream 5%, hang past timeout 2%"))
    rows += [(f"fault: turns with {d}", str(n)) for d, n in sorted(t.directives.items())]
    rows += [
        ("stale commits rejected", str(stats.get("stale_commits_rejected", 0))),
        ("leases lost, noticed on renewal", str(stats.get("leases_lost_on_renewal", 0))),
        ("drains re-queued by the sweep", str(stats.get("sweep_requeued", 0))),
        ("enqueue attempts refused (retried)", str(t.enqueue_failures)),
    ]
    # Holder faults and Redis faults: lease TTL + sweep; a lost drain job: the next sweep.
    # Redis faults and failovers are measured from when Redis takes acknowledged writes again.
    redis_faults = ("redis_restart", "redis_outage", "redis_hang", "failover", "switch")
    bounds = dict.fromkeys(("sigkill", "sigstop", "partition", *redis_faults), o.recovery_bound_s)
    bounds["lost_drain_job"] = o.sweep_interval_s + MARGIN_S
    over = 0
    for kind, waits in sorted(t.recoveries.items()):
        if not waits:
            continue
        bound = bounds.get(kind)  # a SIGTERM is bounded by the grace, checked when reaped
        note = f" (bound {bound:.1f}s)" if bound else ""
        if bound:
            over += sum(w > bound for w in waits)
        rows.append((f"longest wait to resume: {kind}", f"{max(waits):.2f}s over {len(waits)} sessions{note}"))
    if isinstance(soak.redis, Sentinel) and soak.redis.promotions:
        waits = sorted(soak.redis.promotions)
        rows.append(("failovers: fault → promotion", f"{len(waits)}, median {waits[len(waits) // 2]:.2f}s, "
                                                     f"longest {waits[-1]:.2f}s"))  # fmt: skip
    rows += [
        ("waits over the bound", str(over)),
        ("workers slow to stop after SIGTERM", str(t.slow_shutdowns)),
        ("workers that died unasked", str(t.unexpected_exits)),
    ]
    ok = report.ok and not over and not t.slow_shutdowns and not t.unexpected_exits
    rows.append(("verdict", "OK" if ok else "BROKEN"))
    return rows, ok


def table(rows: list[tuple[str, str]]) -> str:
    w = max(len(k) for k, _ in rows)
    line = f"+-{'-' * w}-+-{'-' * max(len(v) for _, v in rows)}-+"
    body = [f"| {k:<{w}} | {v:<{len(line) - w - 7}} |" for k, v in rows]
    return "\n".join([line, *body, line])


def parse(argv: list[str] | None) -> Options:
    p = argparse.ArgumentParser(prog="python -m devkit.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=5.0, help="how long to inject faults (default 5)")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--sessions", type=int, default=50)
    p.add_argument("--rate", type=float, default=12.0, help="turns per second, all sessions together")
    p.add_argument("--fault-every", dest="fault_every_s", type=float, default=4.0, help="mean seconds between faults")
    p.add_argument("--seed", type=int, default=int(time.time()) % 100_000)
    p.add_argument("--appendfsync", choices=["always", "everysec"], default="always")
    p.add_argument("--lease-ttl-ms", type=int, default=Settings().lease_ttl_ms)
    p.add_argument("--sweep-interval-s", type=int, default=Settings().sweep_interval_s)
    p.add_argument("--shutdown-grace-s", type=int, default=3, help="short, so some turns outlast it")
    p.add_argument("--model-timeout-s", type=float, default=6.0)
    p.add_argument("--keep-logs", action="store_true", help="keep worker logs even if all is well")
    kinds = ",".join(k for k, _ in Soak.FAULTS)
    p.add_argument("--faults", default=kinds, help=f"comma-separated subset of {kinds}")
    p.add_argument(
        "--redis", choices=["single", "sentinel"], default="single", help="one redis-server, or a Sentinel group"
    )
    p.add_argument("--min-replicas-ack", type=int, default=1, help="with --redis sentinel (default 1)")
    return Options(**vars(p.parse_args(argv)))


async def amain(opts: Options, log_dir: Path) -> bool:
    print(f"soak: seed {opts.seed}, {opts.minutes:g} min, logs in {log_dir}", flush=True)
    fsync: Fsync = "always" if opts.appendfsync == "always" else "everysec"
    redis = Single(fsync) if opts.redis == "single" else Sentinel(fsync, opts.min_replicas_ack)
    soak = Soak(opts, redis, log_dir)
    try:
        report, stats, elapsed = await soak.run()
    finally:
        for w in soak.workers:
            w.stop()
        redis.close()
    rows, ok = summary(soak, report, stats, elapsed)
    print(table(rows))
    for problem in [*report.violations[:20], *soak.tally.problems[:20]]:
        print(f"  ! {problem}")
    return ok


def main(argv: list[str] | None = None) -> None:
    opts = parse(argv)
    log_dir = Path(tempfile.mkdtemp(prefix="chatlane-soak-"))
    ok = asyncio.run(amain(opts, log_dir))
    if ok and not opts.keep_logs:
        shutil.rmtree(log_dir, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
