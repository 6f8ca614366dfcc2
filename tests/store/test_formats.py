"""One test per stored format: every implementation that writes it, on the same inputs,
byte for byte against the reference writer (the format's one definition).

- the stats JSON: ``PerformanceStatsData.to_json`` (reference); the columnar path in
  Python (the worker's) and through the compiled loop (the backfill's);
- the history: ``metrics.history.encode_entries`` (reference); the compiled encoder
  (``metrics.sequence.encode_history_buffer``, through the batch path);
- a scope's stored value: ``store.layout.pack_scope`` (reference); the compiled writer
  (``store.bulk.pack_fresh``);
- the keys, fields and compare-and-set commands that create new scopes: the arguments the
  store's own write plan sends, keys and fields from ``KeySpace`` (reference); the compiled
  wire-protocol writer (``store.bulk.create_payload``), parsed back with a RESP reader of
  the test's own.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from performance_engine.metrics import columnar
from performance_engine.metrics.attempt import Attempt
from performance_engine.metrics.batch import FreshScopes, compute_parts
from performance_engine.metrics.calculator import MetricsCalculator
from performance_engine.metrics.frame import attempts_to_frame
from performance_engine.metrics.history import encode_entries, entry_of, learning_key
from performance_engine.metrics.types import ScopeKey
from performance_engine.store.bulk import FIRST_REVISION, create_payload, pack_fresh
from performance_engine.store.keyspace import KeySpace
from performance_engine.store.layout import pack_scope
from performance_engine.store.stats_store import WRITE_SCOPES_LUA, _new_rows, _WritePlan
from tests.helpers import attempt
from tests.strategies import attempts

SPILL_LIMITS = (0, 64, 512)


class Case:
    """The inputs every writer of a format gets: a batch of new scopes."""

    def __init__(self, stream: list[Attempt], limit: int) -> None:
        self.calculator = MetricsCalculator(history_inline_limit=limit)
        self.stream = stream
        fresh, rest = compute_parts(attempts_to_frame(stream), self.calculator)
        assert not rest.scopes
        self.fresh: FreshScopes = fresh
        self.result = fresh.result(self.calculator)

    @property
    def scopes(self) -> list[ScopeKey]:
        return self.result.scopes


# -- the stats JSON ------------------------------------------------------------------


T0 = 1_795_510_800_000  # 2026-11-24T09:00:00Z


def stats_reference(case: Case) -> list[bytes]:
    return [case.calculator.stats(s, state).to_json() for s, state in case.result.items()]


def stats_columnar_python(case: Case) -> list[bytes]:
    found = columnar.builtin_stats_json(
        case.result.scopes, case.result.states, case.calculator.model
    )
    assert found is not None
    return found


def stats_columnar_compiled(case: Case) -> list[bytes]:
    n = len(case.fresh)
    if n == 0:
        return []
    buffer, ends = case.fresh.stats_buffer(case.calculator, 0, n)
    data = buffer.tobytes()
    return [data[a:b] for a, b in pairwise(ends.tolist())]


# -- the history ---------------------------------------------------------------------


def history_reference(case: Case) -> list[bytes]:
    """Each scope's distinct attempts (the first of an id in stream order) in learning
    order, encoded entry by entry."""
    by_scope: dict[ScopeKey, dict[str, Attempt]] = {}
    for item in case.stream:
        by_scope.setdefault(item.scope, {}).setdefault(item.attempt_id, item)
    return [
        encode_entries(sorted(map(entry_of, by_scope[scope].values()), key=learning_key))
        for scope in case.scopes
    ]


def history_compiled(case: Case) -> list[bytes]:
    data = case.fresh.history.tobytes()
    return [data[a:b] for a, b in pairwise(case.fresh.history_ends.tolist())]


# -- the stored value ----------------------------------------------------------------


def value_reference(case: Case) -> list[bytes]:
    """Each new scope stored at its first revision, as the backfill's per-scope path does."""
    states = [msgspec.structs.replace(s, revision=FIRST_REVISION) for s in case.result.states]
    return [pack_scope(state) for state in states]


def value_compiled(case: Case) -> list[bytes]:
    values: list[bytes] = []
    for lo in range(0, len(case.fresh), 3):  # in chunks, as the backfill packs them
        packed = pack_fresh(case.fresh, case.calculator, lo, min(lo + 3, len(case.fresh)))
        values += [packed.values[a:b] for a, b in pairwise(packed.value_ends)]
    return values


# -- the keys and commands -----------------------------------------------------------

GROUP = 2  # scopes per script call: small, so that the cases hold several commands
KEYS = KeySpace("pe-test.formats")


def commands_reference(case: Case) -> list[list[bytes]]:
    """What the store's own write plan sends for the same new scopes, keys from KeySpace."""
    packed = pack_fresh(case.fresh, case.calculator, 0, len(case.fresh))
    sent: list[list[bytes]] = []
    for lo in range(0, len(packed.scopes), GROUP):
        hi = min(lo + GROUP, len(packed.scopes))
        plan = _WritePlan.of(_new_rows(KEYS, packed, lo, hi), cluster=False)
        assert len(plan.commands) == 1, "one script call per group"
        recorder = _Recorder()
        plan.queue(recorder)
        sent += recorder.commands
    return sent


def commands_compiled(case: Case) -> list[list[bytes]]:
    packed = pack_fresh(case.fresh, case.calculator, 0, len(case.fresh))
    payload, count = create_payload(KEYS, packed, WRITE_SCOPES_LUA, GROUP)
    commands = read_resp(payload)
    assert len(commands) == count
    return commands


class _Recorder:
    """Stands where a redis-py pipeline would, keeping the commands queued on it."""

    def __init__(self) -> None:
        self.commands: list[list[bytes]] = []

    def execute_command(self, *args: Any) -> None:
        self.commands.append([a if isinstance(a, bytes) else str(a).encode() for a in args])


def read_resp(data: bytes) -> list[list[bytes]]:
    """Commands in Redis's wire protocol (arrays of bulk strings) back as lists of bytes;
    anything else in ``data`` fails the test."""
    commands: list[list[bytes]] = []
    at = 0
    while at < len(data):
        assert data[at : at + 1] == b"*", f"an array expected at byte {at}"
        end = data.index(b"\r\n", at)
        count = int(data[at + 1 : end])
        at = end + 2
        args = []
        for _ in range(count):
            assert data[at : at + 1] == b"$", f"a bulk string expected at byte {at}"
            end = data.index(b"\r\n", at)
            length = int(data[at + 1 : end])
            at = end + 2
            args.append(data[at : at + length])
            assert data[at + length : at + length + 2] == b"\r\n"
            at += length + 2
        commands.append(args)
    return commands


# -- one test per format, every implementation -----------------------------------------

Writer = Callable[[Case], Any]
FORMATS: dict[str, tuple[Writer, dict[str, Writer]]] = {
    "stats-json": (
        stats_reference,
        {"numpy": stats_columnar_python, "compiled": stats_columnar_compiled},
    ),
    "history": (history_reference, {"compiled": history_compiled}),
    "stored-value": (value_reference, {"compiled": value_compiled}),
    "create-commands": (commands_reference, {"compiled": commands_compiled}),
}


@pytest.mark.parametrize(
    ("layout", "implementation"),
    [(layout, name) for layout, (_, writers) in FORMATS.items() for name in writers],
)
@settings(max_examples=150, deadline=None)
@given(stream=attempts(), limit=st.sampled_from(SPILL_LIMITS))
def test_every_writer_writes_the_reference_bytes(
    layout: str, implementation: str, stream: list[Attempt], limit: int
) -> None:
    case = Case(stream, limit)
    reference, writers = FORMATS[layout]
    assert writers[implementation](case) == reference(case)


def test_the_reference_commands_hold_keyspace_keys() -> None:
    """The reference the compiled commands are held to is spelled by KeySpace itself."""
    stream = [
        attempt(user_id=10**18 + i, sub_topic_id=7, learning_mode="practice", occurred_at=T0 + i)
        for i in range(3)
    ]
    case = Case(stream, 0)  # every history gets a key of its own
    commands = commands_compiled(case)
    keys, fields, epochs = [], [], []
    for command in commands:
        assert command[:2] == [b"EVAL", WRITE_SCOPES_LUA.encode()]
        count = int(command[2])
        keys += command[3 : 3 + count]
        fields += command[3 + count :][4::7]
        epochs += command[3 + count :][6::7]
    expected = []
    for scope in case.scopes:
        key = KEYS.for_scope(scope)
        expected += [key.encode(), KEYS.history_of(key).encode()]
        expected += [KEYS.stats(scope.user_id).encode(), KEYS.erased(scope.user_id).encode()]
    assert keys == expected
    assert fields == [b"7:practice"] * 3
    assert epochs == [b""] * 3
    assert KEYS.stats(1) == "pe-test.formats:stats:{u1}"


def test_a_key_prefix_with_every_allowed_character_is_written_as_keyspace_spells_it() -> None:
    case = Case([attempt(user_id=1, sub_topic_id=2, difficulty="hard", is_correct=False)], 512)
    packed = pack_fresh(case.fresh, case.calculator, 0, 1)
    keys = KeySpace("Ab-9_.x")
    payload, _ = create_payload(keys, packed, WRITE_SCOPES_LUA, GROUP)
    scope = case.scopes[0]
    assert read_resp(payload)[0][3:7] == [
        keys.for_scope(scope).encode(),
        keys.history(scope).encode(),
        keys.stats(scope.user_id).encode(),
        keys.erased(scope.user_id).encode(),
    ]
