"""The operator's ``chatlane`` commands act for the tenant ``--tenant`` names, and only for it."""

from __future__ import annotations

from producer import ChatProducer, TurnState
from tests.conftest import Fleet
from tests.ops.test_cli import cli, cli_json


async def test_cli_commands_take_a_tenant(fleet: Fleet) -> None:
    async with ChatProducer(settings=fleet.settings, tenant="acme") as acme:
        default = acme.for_tenant("default")
        # No worker: the turns stay queued, each in its own tenant's "alice".
        mine = await acme.enqueue("alice", "acme|alice|0")
        theirs = await default.enqueue("alice", "default|alice|0")

        view = await cli_json(fleet, "session", "alice", "--tenant", "acme")
        assert [t["turn_id"] for t in view["inbox"]] == [mine.turn_id]
        view = await cli_json(fleet, "session", "alice")
        assert [t["turn_id"] for t in view["inbox"]] == [theirs.turn_id]
        # Another tenant's turn is not found, as if it did not exist.
        err = await cli_json(fleet, "retry", theirs.turn_id, "--tenant", "acme", rc=1)
        assert err["error"] == "turn_not_found"
        code, _, stderr = await cli(fleet, "session", "alice", "--tenant", "Not A Tenant")
        assert code == 1 and "tenant must match" in stderr

        deleted = await cli_json(fleet, "delete-session", "alice", "--tenant", "acme")
        assert (deleted["session_id"], deleted["turns"], deleted["cancelled"]) == ("alice", 1, 1)
        assert (await default.status(theirs.turn_id)).state is TurnState.queued
        export = await cli_json(fleet, "export-session", "alice")
        assert [t["turn_id"] for t in export["turns"]] == [theirs.turn_id]
