"""The arq side of the contract: job names, the JSON job codec, and drain job payloads.

Producers never import the worker; they only need to write a ``drain(session_id)`` job in the
exact form arq reads, which ``serialize_job`` from arq itself guarantees.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from arq.constants import in_progress_key_prefix, job_key_prefix
from arq.jobs import serialize_job

DRAIN = "drain"
# arq drops a job that has not started this long after it was due.
DRAIN_JOB_EXPIRES_MS = 24 * 3600 * 1000


def job_serializer(obj: Any) -> bytes:
    # default=repr: arq also serializes exceptions into failed-job results.
    return json.dumps(obj, separators=(",", ":"), default=repr).encode()


def job_deserializer(data: bytes) -> Any:
    return json.loads(data)


@dataclass(frozen=True)
class DrainJob:
    """A serialized ``drain(session_id)`` job, ready for ``queue_drain.lua``."""

    job_id: str
    payload: bytes
    expires_ms: int = DRAIN_JOB_EXPIRES_MS

    @property
    def key(self) -> str:
        return job_key(self.job_id)

    @classmethod
    def new(cls, session_id: str) -> DrainJob:
        # The job is due at once: queue_drain.lua scores it with Redis' own clock, so a producer
        # whose clock is off cannot delay (or strand) the session. The enqueue time inside the
        # payload is informational only (arq logs it).
        payload = serialize_job(DRAIN, (session_id,), {}, None, int(time.time() * 1000), serializer=job_serializer)
        return cls(uuid.uuid4().hex, payload)


def job_key(job_id: str) -> str:
    return job_key_prefix + job_id


def in_progress_key(job_id: str) -> str:
    return in_progress_key_prefix + job_id
