"""Property-based fuzzing of the HTTP API from its own OpenAPI schema (schemathesis), auth on.

For generated requests, valid and invalid, sent with a tenant's key: no 5xx, every status, content
type, header and body is one the schema documents, and requests the schema allows are not rejected
as invalid. Every generated request is also sent with a wrong key first: 401. No rejected request
(the wrong-key ones, and every 4xx) writes anything: the fuzzed API has a Redis of its own, whose
count of changes since start (INFO persistence ``rdb_changes_since_last_save``; saving is off) must
not move across one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from pydantic import SecretStr
from redis import Redis
from schemathesis.checks import negative_data_rejection, not_a_server_error, positive_data_acceptance

from devkit.api_server import ServedApp
from devkit.redis_server import RedisServer
from producer import Settings
from producer.api import create_app
from producer.api_guards import PROBE_PATHS
from tests.conftest import new_prefix

KEY = "fuzz-key-51c9"
KEYS = SecretStr(f"fuzzing={KEY}")
AUTH = {"Authorization": f"Bearer {KEY}"}
WRONG = {"Authorization": "Bearer not-a-key"}


@dataclass(frozen=True)
class Fuzzed:
    url: str
    redis: Redis

    def writes(self) -> int:
        """Changes to the dataset so far: every write moves it, reads never do."""
        info = cast(dict[str, Any], self.redis.info("persistence"))
        return int(info["rdb_changes_since_last_save"])


@pytest.fixture(scope="module")
def fuzzed() -> Iterator[Fuzzed]:
    # Small limits so generated requests also reach 413 and 429.
    with RedisServer() as redis_server, Redis.from_url(redis_server.url) as r:
        s = Settings(redis_url=redis_server.url, key_prefix=new_prefix(), max_text_chars=200, max_queued_per_session=3)
        with ServedApp(create_app(s.model_copy(update={"api_keys": KEYS}))) as server:
            yield Fuzzed(server.base_url, r)


# The schema of an app configured like the served one (keys change it: security, 401s). It is
# built at import because schemathesis parametrizes at collection; the lazy fixture loader does
# not work with pytest 9. The first test checks that the server serves exactly this schema.
SPEC = create_app(Settings(redis_url="redis://127.0.0.1:1/0", key_prefix="spec", api_keys=KEYS)).openapi()
schema = schemathesis.openapi.from_dict(SPEC)


def test_served_schema_is_the_fuzzed_one(fuzzed: Fuzzed) -> None:
    assert httpx.get(f"{fuzzed.url}/openapi.json").json() == SPEC


def test_the_write_counter_sees_writes_and_only_writes(fuzzed: Fuzzed) -> None:
    with httpx.Client(base_url=fuzzed.url, headers=AUTH) as h:
        before = fuzzed.writes()
        assert h.get("/v1/sessions/counter/messages").status_code == 200
        assert fuzzed.writes() == before
        assert h.post("/v1/sessions/counter/turns", json={"text": "hi"}).status_code == 202
        assert fuzzed.writes() > before


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_matches_its_schema(case: Any, fuzzed: Fuzzed) -> None:
    if case.path not in PROBE_PATHS:
        before = fuzzed.writes()
        refused = case.call(base_url=fuzzed.url, headers=WRONG, timeout=10)
        assert refused.status_code == 401, (case.method, case.formatted_path, refused.text)
        assert fuzzed.writes() == before, "a request with a wrong key wrote to Redis"
    # Like most HTTP APIs this one ignores unknown query parameters, which schemathesis's
    # negative_data_rejection counts as a failure; every other built-in check runs.
    excluded = [negative_data_rejection]
    if case.path == "/readyz":
        excluded.append(not_a_server_error)  # no worker runs here: 503 no_workers is right (and documented)
    if isinstance(case.body, dict) and case.body.get("webhook_url") is not None:
        # The allowed webhook hosts are configuration (CHATLANE_WEBHOOK_ALLOW_HOSTS, none here), not
        # schema: any webhook_url is refused with 422 webhook_not_allowed, as documented.
        excluded.append(positive_data_acceptance)
    if case.path.endswith("/import"):
        # An export's history entries must be messages LangChain can read and its summary must end
        # within the history: semantics no JSON schema states; anything else is refused with 422.
        excluded.append(positive_data_acceptance)
    before = fuzzed.writes()
    response = case.call_and_validate(base_url=fuzzed.url, headers=AUTH, timeout=10, excluded_checks=excluded)
    if 400 <= response.status_code < 500:
        assert fuzzed.writes() == before, f"a rejected request ({response.status_code}) wrote to Redis"
