"""Property-based fuzzing of the HTTP API from its own OpenAPI schema (schemathesis).

For generated requests, valid and invalid: no 5xx, every status, content type, header and body
is one the schema documents, and requests the schema allows are not rejected as invalid.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from pydantic import SecretStr
from schemathesis.checks import negative_data_rejection, not_a_server_error, positive_data_acceptance

from devkit.api_server import ServedApp
from devkit.redis_server import RedisServer
from producer import Settings
from producer.api import create_app
from tests.conftest import new_prefix
from tests.http.conftest import API_KEY

AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="module")
def fuzzed_url(redis_server: RedisServer) -> Iterator[str]:
    # Small limits so generated requests also reach 413 and 429.
    s = Settings(redis_url=redis_server.url, key_prefix=new_prefix(), max_text_chars=200, max_queued_per_session=3)
    with ServedApp(create_app(s.model_copy(update={"api_keys": SecretStr(API_KEY)}))) as server:
        yield server.base_url


# The schema of an app configured like the served one (keys change it: security, 401s). It is
# built at import because schemathesis parametrizes at collection; the lazy fixture loader does
# not work with pytest 9. The first test checks that the server serves exactly this schema.
SPEC = create_app(Settings(redis_url="redis://127.0.0.1:1/0", key_prefix="spec", api_keys=SecretStr(API_KEY))).openapi()
schema = schemathesis.openapi.from_dict(SPEC)


def test_served_schema_is_the_fuzzed_one(fuzzed_url: str) -> None:
    assert httpx.get(f"{fuzzed_url}/openapi.json").json() == SPEC


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_matches_its_schema(case: Any, fuzzed_url: str) -> None:
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
    case.call_and_validate(base_url=fuzzed_url, headers=AUTH, timeout=10, excluded_checks=excluded)
