"""Redis key names, built in one place.

Layout (``{prefix}`` is ``PERF_ENGINE_KEY_PREFIX``, ``pe`` by default)::

    {prefix}:{u<user_id>}:<sub_topic_id>:<learning_mode>    a string, one per scope: its
        revision and rolling state (the layout: store/layout.py)

    {prefix}:stats:{u<user_id>}    a hash, one per learner: field
        ``<sub_topic_id>:<learning_mode>``, value the scope's latest stats JSON (SPEC 4),
        plain UTF-8 that any client reads with ``HGET`` (one scope), ``HMGET`` (several)
        or ``HGETALL`` (all of the learner's). Written in the same compare-and-set as the
        scope's string. The key pattern ``{prefix}:stats:*`` holds nothing else, so a
        read-only ACL user can be given the stats and nothing more. A public interface:
        docs/redis-layout.md (layout version 2).

    {prefix}:{u<user_id>}:<sub_topic_id>:<learning_mode>:history    a string, only for a
        scope whose attempt history outgrew its state (512 bytes by default; smaller
        ones live in the state): the scope's distinct attempts, each a msgpack array
        (see metrics/history.py); the state holds how many. Written in the same
        compare-and-set as the scope's string; an attempt that comes last in learning
        order is appended.

State formats: format 1 (the first release) had no history key and ten state fields;
format 2 appended five. A format-1 scope is read as it is, its sequential metrics
unknown, until its history is rebuilt (``perf-engine backfill`` of the platform's
history); see "Upgrading state from the first release" in docs/operations.md.

One string rather than a hash: a hash whose values exceed ``hash-max-listpack-value``
(64 bytes by default) becomes a hash table and costs about 300 bytes more per scope.

    {prefix}:erased:{u<user_id>}    a string, only for an erased learner: the epoch and
        record of their last erasure (see performance_engine/erasure.py), which every
        compare-and-set creating a scope of the learner checks. The durable copy of the
        record is the erasures topic; a worker puts a lost marker back from it.

    {prefix}:erasures    a set: the user id of every learner with a marker.

    {prefix}:{stream}:positions    a hash, the positions ledger (see store/ledger.py): per
        partition of the attempts topic (field ``<topic>:<partition>``) the next offset
        whose effect the state holds, written after each batch's state; ``created``, when
        the ledger was first written.

    {prefix}:{params}:learning, {prefix}:{params}:version    strings: the learning
        parameter set published with ``perf-engine params publish`` (its JSON, see
        metrics/params.py) and its version, which workers compare before each batch (see
        store/params.py). Written together, in one transaction.

    {prefix}:{dash}:...    the dashboard's index, kept by its own consumer of the stats
        topic (see performance_engine/store/dashboard_index.py): ``cohorts`` (a set of
        ``<sub_topic_id>:<learning_mode>``), ``cohort:<sub_topic_id>:<learning_mode>:<order>``
        (a sorted set of user ids per order: stuck, mastery, attempts), ``learner:<user_id>``
        (a set of the learner's ``<sub_topic_id>:<learning_mode>``), ``followed`` (the
        index has read the stats topic from its start).

Every key is built here; the backfill's compiled writer of keys takes the literal pieces
of a scope's key from :meth:`KeySpace.scope_pieces`, so it cannot spell one differently.

The ``{u<user_id>}`` part is a Redis Cluster hash tag: every key of one learner hashes to
the same slot, so a learner's scopes can be written together. ``user_id`` and
``sub_topic_id`` are integers and learning modes are validated names, so no identifier can
reach outside its own key.
"""

from __future__ import annotations

from dataclasses import dataclass

from performance_engine.metrics.types import ScopeKey

__all__ = ["KeySpace"]


@dataclass(frozen=True, slots=True)
class KeySpace:
    """Builds every Redis key the engine reads or writes."""

    prefix: str

    def scope(self, user_id: int | str, sub_topic_id: int | str, learning_mode: str) -> str:
        return f"{self.prefix}:{{u{user_id}}}:{sub_topic_id}:{learning_mode}"

    def for_scope(self, scope: ScopeKey) -> str:
        return self.scope(scope.user_id, scope.sub_topic_id, scope.learning_mode)

    def history(self, scope: ScopeKey) -> str:
        """The key of a scope's attempt history (same hash slot as the scope's key)."""
        return self.history_of(self.for_scope(scope))

    @staticmethod
    def history_of(scope_key: str) -> str:
        """:meth:`history` of the scope whose key is ``scope_key``."""
        return f"{scope_key}:history"

    def scope_pieces(self) -> tuple[bytes, bytes, bytes, bytes, bytes]:
        """The literal parts of a scope's key around its user id, sub-topic id and mode
        (before, between, between, after), then the suffix of its history key: for a
        writer that builds keys from arrays of ids (``store.kernels.msetnx_commands``)."""
        marks = ("\x00u\x00", "\x00s\x00", "\x00m\x00")
        key = self.history_of(self.scope(*marks))
        rest = key
        pieces = []
        for mark in marks:
            before, rest = rest.split(mark)
            pieces.append(before.encode())
        suffix = self.history_of("")
        if not rest.endswith(suffix):
            raise AssertionError(f"a history key must end with its suffix {suffix!r}")
        pieces += (rest[: len(rest) - len(suffix)].encode(), suffix.encode())
        return pieces[0], pieces[1], pieces[2], pieces[3], pieces[4]

    def parse_scope(self, key: str | bytes) -> ScopeKey | None:
        """The scope whose key is ``key``; None for any other key (a history key, or
        another prefix's)."""
        text = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
        head = f"{self.prefix}:{{u"
        if not text.startswith(head):
            return None
        user, _, rest = text[len(head) :].partition("}:")
        parsed = self.parse_stats_field(rest)  # the same "<sub_topic_id>:<mode>" ends it
        if parsed is None or not user.isdigit():
            return None
        return ScopeKey(int(user), *parsed)

    def stats(self, user_id: int | str) -> str:
        """The learner's stats hash (same hash slot as the learner's scope keys)."""
        return f"{self.prefix}:stats:{{u{user_id}}}"

    @staticmethod
    def stats_field(sub_topic_id: int | str, learning_mode: str) -> str:
        """A scope's field in its learner's stats hash."""
        return f"{sub_topic_id}:{learning_mode}"

    def stats_pieces(self) -> tuple[bytes, bytes]:
        """The literal parts of a stats hash's key before and after the user id (for the
        compiled writer of new scopes, ``store.kernels.create_commands``)."""
        before, after = self.stats("\x00").split("\x00")
        return before.encode(), after.encode()

    @staticmethod
    def parse_stats_field(field: str | bytes) -> tuple[int, str] | None:
        """(sub-topic id, learning mode) of a stats hash's field; None if it is not one."""
        text = field.decode("utf-8", "replace") if isinstance(field, bytes) else field
        sub, _, mode = text.partition(":")
        if not sub.isdigit() or not mode or ":" in mode:
            return None
        return int(sub), mode

    def erased(self, user_id: int | str) -> str:
        """The learner's erasure marker (same hash slot as the learner's scope keys): the
        epoch and record of their last erasure (see :mod:`performance_engine.erasure`)."""
        return f"{self.prefix}:erased:{{u{user_id}}}"

    def xapi_learner(self, user_id: int | str) -> str:
        """The learner's xAPI identifier (the reverse of the id it was mapped to; same hash
        slot as the learner's scope keys, erased with them)."""
        return f"{self.prefix}:xapi:learner:{{u{user_id}}}"

    def xapi_statement(self, statement_id: str) -> str:
        """What the xAPI ingest knows of a statement it took: a hash (see
        :mod:`performance_engine.store.statements`)."""
        return f"{self.prefix}:xapi:stmt:{statement_id}"

    def erasures(self) -> str:
        """The set of every erased learner's user id (to find their markers without a
        SCAN)."""
        return f"{self.prefix}:erasures"

    def erased_pieces(self) -> tuple[bytes, bytes]:
        """The literal parts of an erasure marker's key before and after the user id (for
        the compiled writer of new scopes)."""
        before, after = self.erased("\x00").split("\x00")
        return before.encode(), after.encode()

    def stats_pattern(self) -> str:
        """The key pattern of every stats hash (for an ACL rule or a SCAN)."""
        return f"{self.prefix}:stats:*"

    def scope_pattern(self) -> str:
        """A SCAN pattern matching every scope key (and history key) of the prefix."""
        return f"{self.prefix}:{{u*"

    def positions(self) -> str:
        """The positions ledger (see :mod:`performance_engine.store.ledger`)."""
        return f"{self.prefix}:{{stream}}:positions"

    def learning_params(self) -> str:
        """The published learning parameter set (its JSON)."""
        return f"{self.prefix}:{{params}}:learning"

    def learning_params_version(self) -> str:
        """The version of the published learning parameter set."""
        return f"{self.prefix}:{{params}}:version"

    def dashboard(self, *parts: object) -> str:
        """A key of the dashboard's index (all in one hash slot)."""
        return ":".join([f"{self.prefix}:{{dash}}", *map(str, parts)])
