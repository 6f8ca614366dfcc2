"""What the xAPI ingest remembers of a statement, and for how long (real Redis)."""

from __future__ import annotations

from typing import Any

import pytest

from performance_engine.errors import ConfigurationError
from performance_engine.settings import Settings, load_settings
from performance_engine.store.statements import (
    check_statements,
    take_statements,
    void_statements,
)
from performance_engine.store.stats_store import AsyncStatsStore
from tests.helpers import run

DAY = 86_400


async def _scenario(settings: Settings) -> dict[str, Any]:
    async with AsyncStatsStore.from_settings(settings) as store:
        client, keys = store.client, store.keys
        ttl = client.ttl
        found: dict[str, Any] = {}
        claims = await take_statements(store, ["a", "b"], ["d1", "d2"], ["7:1:standard", ""], DAY)
        found["new"] = [claim.status for claim in claims]
        found["ttl_new"] = await ttl(keys.xapi_statement("a"))
        await client.expire(keys.xapi_statement("a"), 100)
        claims = await take_statements(store, ["a"], ["d1"], ["7:1:standard"], DAY)
        found["resend"] = claims[0].status
        found["ttl_after_resend"] = await ttl(keys.xapi_statement("a"))  # not renewed
        claims = await take_statements(store, ["a"], ["other"], ["7:1:standard"], DAY)
        found["conflict"] = claims[0].status
        await take_statements(store, ["c"], ["d3"], ["7:1:standard"], 0)
        found["ttl_for_good"] = await ttl(keys.xapi_statement("c"))
        # a void of a statement taken: its time is the statement's
        found["void_taken"] = await void_statements(store, [("a", "v1", "void")], DAY)
        found["ttl_voided"] = await ttl(keys.xapi_statement("a"))
        # a void held for a statement not taken yet: remembered as long as a statement,
        # and from the statement's receipt once it comes
        found["void_held"] = await void_statements(store, [("later", "v2", "void")], DAY)
        await client.expire(keys.xapi_statement("later"), 100)
        claims = await take_statements(store, ["later"], ["d4"], ["8:1:standard"], DAY)
        found["held_claim"] = (claims[0].status, claims[0].voided_by, claims[0].reason)
        found["ttl_held_then_taken"] = await ttl(keys.xapi_statement("later"))
        return found


def test_a_statement_is_remembered_for_the_days_set_from_its_first_receipt(
    redis_url: str, key_prefix: str
) -> None:
    settings = load_settings(
        {"PERF_ENGINE_REDIS_URL": redis_url, "PERF_ENGINE_KEY_PREFIX": key_prefix}
    )
    found = run(_scenario(settings))
    assert found["new"] == [0, 0]
    assert DAY - 5 < found["ttl_new"] <= DAY
    assert found["resend"] == 1
    assert found["ttl_after_resend"] <= 100
    assert found["conflict"] == 2
    assert found["ttl_for_good"] == -1
    assert found["void_taken"] == [(True, "7:1:standard")]
    assert found["ttl_voided"] <= 100
    assert found["void_held"] == [(False, "")]
    assert found["held_claim"] == (0, "v2", "void")
    assert DAY - 5 < found["ttl_held_then_taken"] <= DAY


@pytest.mark.parametrize(("days", "seconds"), [("0", 0), ("30", 30 * DAY)])
def test_the_days_setting(days: str, seconds: int) -> None:
    settings = load_settings({"PERF_ENGINE_XAPI_STATEMENT_DAYS": days})
    assert settings.xapi_statement_seconds == seconds
    assert load_settings({}).xapi_statement_days == 365


def test_the_days_cannot_be_negative() -> None:
    with pytest.raises(ConfigurationError, match="PERF_ENGINE_XAPI_STATEMENT_DAYS"):
        load_settings({"PERF_ENGINE_XAPI_STATEMENT_DAYS": "-1"})


def test_checking_statements_finds_each_status_among_many_new_ones(
    redis_url: str, key_prefix: str
) -> None:
    """The check reads digests only where a key exists: among 1,000 new statements (more
    than one group of keys), those taken before answer 1 (this body) or 2 (another), one
    with only a void held for it answers 0."""
    settings = load_settings(
        {"PERF_ENGINE_REDIS_URL": redis_url, "PERF_ENGINE_KEY_PREFIX": key_prefix}
    )
    ids = [f"s{n}" for n in range(1000)]

    async def scenario() -> tuple[list[int], list[int]]:
        async with AsyncStatsStore.from_settings(settings) as store:
            fresh = await check_statements(store, ids, ["d"] * len(ids))
            await take_statements(store, ["s10", "s700"], ["d", "d"], ["", ""])
            await void_statements(store, [("s500", "v", "void")])
            digests = ["d"] * len(ids)
            digests[700] = "other"
            return fresh, await check_statements(store, ids, digests)

    fresh, found = run(scenario())
    assert fresh == [0] * len(ids)
    expected = [0] * len(ids)
    expected[10], expected[700] = 1, 2
    assert found == expected
