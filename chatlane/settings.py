"""Configuration shared by producers and workers (env prefix ``CHATLANE_``, ``.env`` supported).

The fields come in groups, one class each; ``Settings`` is all of them in one flat object so an
environment variable keeps its plain name (``CHATLANE_REDIS_URL``, ``CHATLANE_LEASE_TTL_MS``).
Nothing here is read at import time: ``get_settings()`` reads the environment once, on first use.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from chatlane.turns import OnBusy

DEFAULT_REDIS_URL = "redis://localhost:6379/0"


def ms(seconds: float) -> int:
    """Seconds (settings) to milliseconds (what the Lua scripts and PX/PEXPIRE take)."""
    return int(seconds * 1000)


class RedisConfig(BaseModel):
    redis_url: str = DEFAULT_REDIS_URL
    # How long a client waits to connect to Redis, and for one command's answer (a blocking
    # stream read adds its block time), before the call fails with RedisUnavailable.
    redis_timeout_s: float = Field(2.0, gt=0)
    key_prefix: str = Field("chatlane", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    # Sentinel: "host:port,host:port,..." of the sentinels. When set, every connection (producers,
    # the HTTP API, the worker's state and arq's queue) asks them for the current primary of
    # `redis_sentinel_master` and follows a failover without a restart; `redis_url` is not used.
    redis_sentinels: str = ""
    redis_sentinel_master: str = "mymaster"
    # Password of the primary and replicas, with sentinels (a plain URL carries its own), and of
    # the sentinels themselves (their `requirepass`), if they have one.
    redis_password: SecretStr = SecretStr("")
    redis_sentinel_password: SecretStr = SecretStr("")
    # Acknowledged means replicated: an enqueue and a commit count only once `WAIT` confirms this
    # many replicas (0: as soon as the primary has it). docs/faults.md has what each value buys.
    redis_min_replicas_ack: int = Field(0, ge=0)
    # How long such a write waits for its replicas before the caller gets ReplicationTimeout.
    redis_wait_timeout_ms: int = Field(1000, ge=1)
    # Connections one client (one pool) may hold: Redis's `maxclients` (10000 by default) is shared
    # by every API process and worker. A call that finds them all busy waits up to
    # redis_timeout_s for one, then fails as "Redis unavailable" (with sentinels: at once).
    redis_max_connections: int = Field(64, ge=1)
    # CLIENT SETNAME of chatlane's connections, so `CLIENT LIST` tells them apart: the HTTP API
    # appends "-api", a worker "-worker" (chatlane-api, chatlane-worker); a ChatProducer in your
    # own service uses it as is. Empty: connections stay unnamed (for a user without CLIENT).
    redis_client_name: str = Field("chatlane", pattern=r"^[!-~]{0,64}$")

    @field_validator("redis_sentinels")
    @classmethod
    def _sentinel_list(cls, value: str) -> str:
        parse_addresses(value)
        return value

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        return parse_addresses(self.redis_sentinels)


def parse_addresses(value: str) -> list[tuple[str, int]]:
    """``host:port,host:port`` (IPv6 hosts in brackets) as (host, port) pairs."""
    out: list[tuple[str, int]] = []
    for item in filter(None, (part.strip() for part in value.split(","))):
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"expected host:port, got {item!r}")
        out.append((host.strip("[]"), int(port)))
    return out


class ModelConfig(BaseModel):
    # What runs a turn: "package.module:attr" naming a chat model, a compiled LangGraph graph with a
    # `messages` state (create_agent), an async generator function handle(turn), or a zero-argument
    # factory of one (called once per worker process). Unset: the chat model named by `model`.
    handler: str | None = None
    # "fake" (offline, deterministic) or any init_chat_model string, e.g. "openai:gpt-4o-mini"
    model: str = "fake"
    # Prepended to the history when the handler is a chat model (an agent has its own).
    system_prompt: str = "You are a helpful assistant."
    history_max_tokens: int = Field(4000, ge=1)
    # "trim": the window is the newest whole turns that fit history_max_tokens. "summarize": also
    # feed a summary of what no longer fits, written by the model (CHATLANE_MODEL, or the handler
    # when it is a chat model) and refreshed once this many messages have left the window since.
    history_strategy: Literal["trim", "summarize"] = "trim"
    summary_refresh_messages: int = Field(20, ge=1)
    # OpenAI-compatible chat models hand the SDK their messages already serialized (extra_body), so
    # it does not walk them again: ~80 % of a worker's CPU at a full window (bench B9). Off: plain SDK.
    openai_preserialize: bool = True
    model_timeout_s: float = Field(120.0, gt=0)
    # per-turn retries of a failing generation
    max_attempts: int = Field(3, ge=1)
    retry_backoff_s: float = Field(0.5, ge=0)
    retry_backoff_max_s: float = Field(10.0, ge=0)


class FaultConfig(BaseModel):
    """The offline fake model's pace and its fault injection (soaks and demos), and the one
    deliberate mutation the G1 tests use to show they can fail."""

    fake_delay_ms: int = Field(0, ge=0)
    fake_chunks: int = Field(8, ge=1)
    # probabilities per generation attempt
    fake_fail_rate: float = Field(0.0, ge=0, le=1)
    fake_midstream_fail_rate: float = Field(0.0, ge=0, le=1)
    fake_hang_rate: float = Field(0.0, ge=0, le=1)
    # Benchmarks: append "<first user message>\t<start>\t<end>" (epoch s) per generation to this
    # file, so the handoff between a session's turns is measured at the model (bench B8).
    fake_span_log: str | None = None
    # Tests: append one JSON line per request the fake model answers (turn id, attempt, message
    # types and approximate tokens), so a test can see what each request held.
    fake_request_log: str | None = None
    # A broken build for mutation tests: lease holders keep generating after losing the lease.
    fault_ignore_lease_loss: bool = False


class LeaseConfig(BaseModel):
    # lease: a holder renews it every renew interval (default ttl/3) and gives it up once no
    # renewal has succeeded for ttl - interval; a dead holder is replaced within ttl + sweep
    # interval (+ poll delay). See docs/faults.md for the trade-offs.
    lease_ttl_ms: int = Field(5000, ge=300)
    lease_renew_interval_ms: int | None = Field(None, ge=50)
    # A holder stops generating (and writes nothing more) once this little of the TTL is left,
    # counted from when its last successful claim or renewal was *sent*: it must be gone before
    # Redis could let anyone else take the session, whatever its loop lag. Default ttl / 5.
    lease_margin_ms: int | None = Field(None, ge=50)
    sweep_interval_s: int = Field(1, ge=1, le=60)
    # a drain job re-enqueues itself after this many seconds, and after this many turns if other
    # drain jobs wait for a slot (with none waiting it keeps the session: no poll-delay gap)
    drain_max_turns: int = Field(16, ge=1)
    drain_max_seconds: float = Field(60.0, gt=0)
    # After this long a drain also gives its job slot up at the next turn boundary if another
    # session's drain job has waited for a slot: with every slot busy, a recovered (or new) session
    # waits at most this plus one turn, not drain_max_seconds.
    drain_yield_after_s: float = Field(5.0, gt=0)
    # arq
    max_jobs: int = Field(100, ge=1)
    # An enqueue on an idle worker waits for arq's next poll. `python -m bench --poll-sweep`:
    # 10 ms gives idle enqueue -> model call p50 ~9 ms, p99 ~16 ms for 3 % of a core per idle
    # worker; 50 ms gave 28/54 ms (over B4's 15/50 ms targets), 5 ms costs 4.7 % idle.
    poll_delay_s: float = Field(0.01, gt=0)
    shutdown_grace_s: int = Field(20, ge=0)


class BudgetConfig(BaseModel):
    """Fleet-wide limits of the model provider, enforced in Redis (0 = no limit)."""

    model_max_concurrency: int = Field(0, ge=0)
    model_rpm: int = Field(0, ge=0)
    model_tpm: int = Field(0, ge=0)
    # A JSON file {"<model>": {"max_concurrency": n, "rpm": n, "tpm": n, "burst_s": s}} whose entry
    # for the configured model replaces the three settings above.
    budgets_file: str | None = None
    # The request and token buckets hold at most this many seconds' worth (providers refill theirs
    # continuously and allow a minute's worth at once: 60).
    budget_burst_s: float = Field(60.0, gt=0)
    # Tokens a reply is assumed to take before the call; settled from usage_metadata after it.
    budget_reply_tokens: int = Field(512, ge=0)
    # How long the fleet leaves a model alone after a 429 that names no Retry-After.
    provider_backoff_s: float = Field(5.0, gt=0)


class WebhookConfig(BaseModel):
    """Calls back a URL when a turn ends (Standard Webhooks: signed, retried, at least once)."""

    # Used for turns enqueued without a webhook_url of their own; unset: no webhook.
    webhook_url: str | None = None
    # "whsec_<base64>" (the Standard Webhooks form); deliveries are signed with it. Required when
    # any webhook URL is set.
    webhook_secret: SecretStr = SecretStr("")
    # Comma-separated hosts a webhook URL may name ("hooks.example.com", or "*.example.com" for
    # its subdomains); empty allows none, so a caller cannot make workers call internal addresses.
    webhook_allow_hosts: str = ""
    # Deliveries are retried with exponential backoff for this long after the first attempt (at
    # most the turn's own retention, CHATLANE_TURN_TTL_S), then given up, as the log says.
    webhook_retry_span_s: float = Field(86400.0, gt=0)
    webhook_backoff_s: float = Field(1.0, gt=0)
    webhook_backoff_max_s: float = Field(3600.0, gt=0)
    webhook_timeout_s: float = Field(10.0, gt=0)
    # Deliveries in flight per worker process: webhooks never take an arq job slot from a drain.
    webhook_concurrency: int = Field(8, ge=1)


class SteeringConfig(BaseModel):
    """What a new text does to a busy session, how rapid texts coalesce, how long a turn may wait.
    README "Steering a live conversation" has a timeline for each policy."""

    # enqueue | reject | interrupt | rollback | coalesce, for enqueues that name no policy
    on_busy: OnBusy = OnBusy.enqueue
    # Debounce of on_busy=coalesce: a turn that can still absorb texts begins this long after its
    # newest text, at most coalesce_max_wait_ms after its first, and absorbs at most
    # coalesce_max_texts texts. 2 s covers the gap between the parts of a thought sent as quick
    # separate messages; 8 s bounds what a user who keeps typing waits; 10 bounds the prompt a
    # flood of texts can build. Every coalesced turn pays the window before its model call starts.
    coalesce_window_ms: int = Field(2000, ge=0, le=600_000)
    coalesce_max_wait_ms: int = Field(8000, ge=0, le=3_600_000)
    coalesce_max_texts: int = Field(10, ge=1, le=1000)
    # Default expires_after_s of an enqueue: a turn not started this long after it was accepted
    # ends `expired` without running. Unset: no deadline.
    queued_turn_ttl_s: float | None = Field(None, gt=0, le=30 * 86400)


class ApiConfig(BaseModel):
    """Who may call the HTTP API, and as which tenant (README "Security"; parsed and checked when
    the app is created, by producer/api_keys.py)."""

    # "keys": every route but the probes and docs needs a key; with none configured the API
    # refuses service (closed by default). "none": no auth, every request acts for tenant
    # "default"; only for an API that nothing untrusted can reach.
    auth: Literal["keys", "none"] = "keys"
    # Comma-separated entries: `tenant=KEY`, `tenant=sha256:<64 hex>` (the key's SHA-256, so the
    # key itself need not be stored), or a bare KEY / `sha256:<hex>`, which belongs to tenant
    # "default".
    api_keys: SecretStr = SecretStr("")
    # A file of the same entries, one per line (# comments), each optionally followed by the
    # tenant's quota overrides: `acme=sha256:<hex> max_queued=100 turns_per_min=60`.
    api_keys_file: str | None = None
    # Comma-separated keys (or `sha256:<hex>`) that may act for any tenant, named per request in
    # the X-Chatlane-Tenant header (required with an admin key).
    admin_keys: SecretStr = SecretStr("")


class LimitsConfig(BaseModel):
    # input limits (checked before anything is written)
    max_text_chars: int = Field(32000, ge=1)
    max_queued_per_session: int = Field(100, ge=1)
    # Per tenant, enforced inside the enqueue script across every API process (README "Tenants and
    # quotas"); a tenant's line in CHATLANE_API_KEYS_FILE may override either. 0: no limit.
    # Turns queued or running across all of a tenant's sessions:
    tenant_max_queued: int = Field(0, ge=0)
    # New turns a tenant may enqueue a minute (a token bucket that holds as many, so a minute's
    # worth may come at once):
    tenant_turns_per_min: int = Field(0, ge=0)
    # retention of finished turns, their idempotency keys and token streams
    turn_ttl_s: int = Field(86400, ge=1)
    stream_ttl_s: int = Field(600, ge=1)
    # retention of sessions (README "Retention"): keep at most this many history messages, the
    # oldest trimmed at commit, whole tool-call groups only (0: unbounded); a session with nothing
    # queued or running for this long expires entirely (0: never)
    history_max_messages: int = Field(0, ge=0)
    session_idle_ttl_s: float = Field(0, ge=0)


class StreamConfig(BaseModel):
    """Caps on open SSE streams (GET /v1/turns/{id}/stream), per API process: each open stream
    costs the process a socket and some memory, but no Redis connection (producer/stream_hub.py).
    A stream over a cap is refused with 429 ``stream_limit`` before it starts."""

    # Open streams in one API process. Bench B11 holds 5,000 on one process.
    max_streams: int = Field(10_000, ge=1)
    # Open streams of one tenant in one API process, so one tenant cannot take every slot;
    # 0 = only max_streams applies.
    max_streams_per_tenant: int = Field(0, ge=0)


class OpsConfig(BaseModel):
    """What operators see: the worker's metrics port and its log format."""

    # A worker process serves Prometheus metrics on this port (0 or unset: none). Each worker
    # process needs its own port: README "Operating chatlane" has how to run several.
    metrics_port: int | None = Field(None, ge=0, lt=65536)
    # Worker log lines as text or as one JSON object per line (chatlane/logs.py).
    log_format: Literal["text", "json"] = "text"
    # OpenTelemetry spans (chatlane/tracing.py; needs the `otel` extra): enqueue, queue wait,
    # drain, model call, commit, one trace per turn from the HTTP request to the commit. Where
    # spans go is OpenTelemetry's own OTEL_TRACES_EXPORTER, OTEL_EXPORTER_OTLP_ENDPOINT and
    # OTEL_SERVICE_NAME.
    tracing: Literal["off", "on"] = "off"


class Settings(
    BaseSettings,
    RedisConfig,
    ModelConfig,
    FaultConfig,
    LeaseConfig,
    BudgetConfig,
    WebhookConfig,
    SteeringConfig,
    ApiConfig,
    LimitsConfig,
    StreamConfig,
    OpsConfig,
):
    # hide_input_in_errors: a rejected value may be a secret (a Redis URL with its password, a key).
    model_config = SettingsConfigDict(
        env_prefix="CHATLANE_", env_file=".env", extra="ignore", hide_input_in_errors=True
    )

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.retry_backoff_max_s < self.retry_backoff_s:
            raise ValueError("retry_backoff_max_s must be >= retry_backoff_s")
        if 2 * self.lease_renew_ms > self.lease_ttl_ms:
            # At least two renewals per TTL, so one slow or failed renewal does not lose it.
            raise ValueError("lease_renew_interval_ms must be at most lease_ttl_ms / 2")
        if self.lease_renew_ms + self.lease_safety_ms >= self.lease_ttl_ms:
            # A renewal must be due before the holder's own deadline, or it would give up every lease.
            raise ValueError("lease_renew_interval_ms + lease_margin_ms must be below lease_ttl_ms")
        if self.coalesce_max_wait_ms < self.coalesce_window_ms:
            raise ValueError("coalesce_max_wait_ms must be >= coalesce_window_ms")
        if self.redis_wait_timeout_ms > ms(self.redis_timeout_s):
            # WAIT blocks the connection: past the socket timeout the call would fail as
            # "Redis unavailable" instead of as a replication timeout.
            raise ValueError("redis_wait_timeout_ms must be at most redis_timeout_s * 1000")
        return self

    def with_role(self, role: str) -> Settings:
        """These settings for one part of chatlane (``api``, ``worker``): its Redis connections
        are named ``<redis_client_name>-<role>``."""
        if not self.redis_client_name:
            return self
        return self.model_copy(update={"redis_client_name": f"{self.redis_client_name}-{role}"})

    @property
    def lease_safety_ms(self) -> int:
        return self.lease_margin_ms or self.lease_ttl_ms // 5

    @property
    def yield_grace_ms(self) -> int:
        """How long a drain job may wait before a running drain yields its slot to it: a few of arq's
        polls, so a job that an idle worker is about to pick up does not make busy drains yield."""
        return max(50, ms(5 * self.poll_delay_s))

    @property
    def lease_renew_ms(self) -> int:
        return self.lease_renew_interval_ms or self.lease_ttl_ms // 3

    @property
    def turn_ttl_ms(self) -> int:
        return ms(self.turn_ttl_s)

    @property
    def stream_ttl_ms(self) -> int:
        return ms(self.stream_ttl_s)

    @property
    def session_idle_ttl_ms(self) -> int:
        return ms(self.session_idle_ttl_s)

    @property
    def job_timeout_s(self) -> float:
        """arq's hard limit for one drain job: its budget plus one full turn with retries."""
        per_turn = self.max_attempts * (self.model_timeout_s + self.retry_backoff_max_s)
        return self.drain_max_seconds + per_turn + 30.0


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
