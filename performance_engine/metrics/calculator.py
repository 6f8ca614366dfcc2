"""MetricsCalculator: the built-in metrics plus registered custom ones, for every path.

The stream, the pandas batch path (for scopes that already have a state) and the tests
all change a scope through :meth:`MetricsCalculator.plan` and
:meth:`MetricsCalculator.apply_plan` (or :meth:`MetricsCalculator.apply`, both at once),
and read it through :meth:`MetricsCalculator.stats`. The batch path builds the state of
new scopes with numpy instead (``metrics.batch``, ``metrics.sequence``), and the
property tests hold it equal to this.

Applying attempts to a scope:

1. attempts already applied change nothing (their fingerprints are in the state); the
   first of several with one ``attempt_id`` wins;
2. the new ones are sorted into learning order (``occurred_at``, then ``attempt_id``) and
   counted (SPEC 3);
3. if they all come after the scope's last attempt, the sequential metrics (the built-in
   ``learning`` block and any :class:`SequentialMetric`) take one step each, and the
   history gets them appended; otherwise, or if the parameters or the sequential metrics
   changed since the scope was last folded, the history is needed: the new attempts are
   put in their places and everything sequential is folded again from the start.

A scope whose state predates the history (format 1) has no sequential values; they stay
unknown (``learning`` is None) until its history is complete again: attempts already
applied, met again with the history at hand (a backfill of the platform's history, or a
replay of the topic), are put into it without being counted twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import msgspec
import xxhash

from performance_engine.errors import ConfigurationError
from performance_engine.metrics.attempt import Attempt
from performance_engine.metrics.base import (
    BaseMetric,
    FoldMetric,
    IncrementalMetric,
    SequentialMetric,
    log_frame,
)
from performance_engine.metrics.builtin import builtin_fields
from performance_engine.metrics.history import (
    DIFFICULTY_INDEX,
    Entry,
    HistoryWrite,
    attempt_of,
    encode_entries,
    entry_of,
    learning_key,
)
from performance_engine.metrics.history import encode_entry as _encode_entry
from performance_engine.metrics.learning import (
    FOLD_FORMAT,
    Coefficients,
    LearningParams,
    LearningState,
    fold_learning,
    initial_learning,
    learning_stats,
    learning_step,
    predict_correct,
)
from performance_engine.metrics.model import LearningModel
from performance_engine.metrics.modes import LearningModes
from performance_engine.metrics.params import ParameterSet
from performance_engine.metrics.state import (
    DUPLICATE,
    NEW_QUESTION,
    ScopeState,
    fingerprint,
    insert_sorted,
)
from performance_engine.metrics.types import (
    LearningStats,
    PerformanceStatsData,
    ScopeKey,
    with_custom_metrics,
)

__all__ = [
    "COLUMNAR_MIN_SCOPES",
    "HISTORY_INLINE_LIMIT",
    "Applied",
    "MetricsCalculator",
    "Plan",
]

#: A scope's history is kept in its state up to this many bytes (about 20 attempts), then
#: in a key of its own (see ``metrics.history``).
HISTORY_INLINE_LIMIT = 512

#: From this many scopes on, stats_json_many takes the columnar path (below it, numpy's
#: fixed cost per call is more than the per-scope path's).
COLUMNAR_MIN_SCOPES = 64


class Plan(msgspec.Struct, gc=False):
    """What applying some attempts to a scope will take, decided before anything changes."""

    #: Attempts not applied yet, in learning order, with their fingerprints.
    fresh: list[tuple[Attempt, int]]
    #: Attempts applied before; kept only when the scope's history is incomplete.
    known: list[Attempt]
    #: How many attempts were given.
    given: int
    #: Whether :meth:`MetricsCalculator.apply_plan` needs the scope's history.
    needs_history: bool
    #: Whether the sequential metrics must be folded again over the whole history.
    refold: bool
    #: The attempt ids that no longer count (voided), or None.
    voids: list[str] | None = None


class Applied(msgspec.Struct, gc=False):
    """What applying attempts did: counts, the change to store in the history key, and
    the scope's whole history when it was at hand (what frame-based metrics need)."""

    applied: int
    duplicates: int
    history: HistoryWrite | None
    entries: list[Entry] | None = None
    #: Attempts taken out of the scope (voided).
    voided: int = 0


def _fresh_key(pair: tuple[Attempt, int]) -> tuple[int, str]:
    attempt = pair[0]
    return attempt.occurred_at, attempt.attempt_id


def _fold(metric: FoldMetric, attempts: Iterable[Attempt]) -> Any:
    value = metric.initial()
    for attempt in attempts:
        value = metric.update(value, attempt)
    return value


class MetricsCalculator:
    """Computes :class:`PerformanceStatsData` from a scope's state.

    ``required_correct_questions`` is the seed's single threshold: when given, it applies
    to every built-in learning mode and difficulty. Otherwise the thresholds come from
    ``learning_modes`` (the built-in rules by default). ``parameters``: a fitted parameter
    set (SPEC 3.2), which :meth:`use_parameters` replaces while the calculator runs.
    """

    def __init__(
        self,
        required_correct_questions: int | None = None,
        *,
        learning_modes: LearningModes | None = None,
        attempt_log_limit: int = 1000,
        history_inline_limit: int = HISTORY_INLINE_LIMIT,
        parameters: ParameterSet | None = None,
    ) -> None:
        if required_correct_questions is not None and learning_modes is not None:
            raise ConfigurationError(
                "give either required_correct_questions or learning_modes, not both"
            )
        if required_correct_questions is not None:
            learning_modes = LearningModes.uniform(required_correct_questions)
        self.model = LearningModel(learning_modes or LearningModes.default(), parameters)
        if attempt_log_limit < 1:
            raise ConfigurationError("attempt_log_limit must be at least 1")
        self.attempt_log_limit = attempt_log_limit
        #: Bytes of history kept in the scope's own value before it moves to its own key.
        self.history_inline_limit = history_inline_limit
        self._metrics: dict[str, BaseMetric] = {}
        self._incremental: tuple[IncrementalMetric, ...] = ()
        self._sequential: tuple[SequentialMetric, ...] = ()
        self._frame: tuple[BaseMetric, ...] = ()
        self._signatures: dict[tuple[str, int | None], int] = {}
        self._groups: dict[tuple[str, int], _Group] = {}

    @property
    def learning_modes(self) -> LearningModes:
        return self.model.modes

    @property
    def parameters(self) -> ParameterSet | None:
        """The fitted parameter set in use, if any."""
        return self.model.fitted

    def use_parameters(self, parameters: ParameterSet | None) -> None:
        """Use another fitted parameter set (None: the modes' parameters) from now on.
        Stored scopes folded with other parameters are folded again when next written
        (or by ``perf-engine refold``)."""
        self.model = LearningModel(self.model.modes, parameters)
        self._signatures.clear()
        self._groups.clear()

    def register_metrics(self, metrics: Iterable[BaseMetric]) -> None:
        """Add custom metrics; each needs a unique, non-empty ``name``."""
        for metric in metrics:
            if not isinstance(metric, BaseMetric):
                raise ConfigurationError(
                    f"{metric!r} is not a BaseMetric instance; subclass BaseMetric and "
                    "register an instance"
                )
            name = metric.name
            if not isinstance(name, str) or not name:
                raise ConfigurationError(f"{type(metric).__name__} needs a non-empty `name`")
            if name in self._metrics:
                raise ConfigurationError(f"a metric named {name!r} is already registered")
            self._metrics[name] = metric
        values = self._metrics.values()
        self._incremental = tuple(m for m in values if isinstance(m, IncrementalMetric))
        self._sequential = tuple(m for m in values if isinstance(m, SequentialMetric))
        self._frame = tuple(m for m in values if not isinstance(m, FoldMetric))
        self._signatures.clear()
        self._groups.clear()

    @property
    def metrics(self) -> Mapping[str, BaseMetric]:
        """The registered custom metrics by name."""
        return dict(self._metrics)

    @property
    def incremental_metrics(self) -> tuple[IncrementalMetric, ...]:
        return self._incremental

    @property
    def sequential_metrics(self) -> tuple[SequentialMetric, ...]:
        return self._sequential

    @property
    def frame_metrics(self) -> tuple[BaseMetric, ...]:
        """Registered seed-style metrics, which need the scope's attempts as a frame."""
        return self._frame

    def signature(self, mode: str, sub_topic_id: int | None) -> int:
        """What a scope's sequential values were folded with: the form of the stored
        learning values, the scope's learning parameters, the fitted question classes (as
        the fitted set's version) and the sequential metrics' names and versions (never
        0). A state with another signature is folded again. A sub-topic of None: the
        mode's own parameters."""
        key = (mode, sub_topic_id)
        found = self._signatures.get(key)
        if found is None:
            params = self.model.params(mode, sub_topic_id).as_tuple()
            classes = self.model.fitted_version if self.model.classes else None
            metrics = [(m.name, m.version) for m in self._sequential]
            digest = xxhash.xxh3_64_intdigest(
                msgspec.msgpack.encode((FOLD_FORMAT, params, classes, metrics))
            )
            found = self._signatures[key] = digest or 1
        return found

    def group(self, scope: ScopeKey) -> _Group:
        """A scope's learning parameters, their coefficients, the fold's signature and the
        parameters' version."""
        key = (scope.learning_mode, scope.sub_topic_id)
        found = self._groups.get(key)
        if found is None:
            model = self.model
            params = model.params(*key)
            found = self._groups[key] = _Group(
                params,
                params.coefficients,
                self.signature(*key),
                model.params_version(key[0]),
                model.classes or None,
            )
        return found

    def new_state(self) -> ScopeState:
        custom = {m.name: m.initial() for m in self._incremental} if self._incremental else {}
        # Positional and literal: ScopeState() would call a Python factory per list.
        return ScopeState(
            0,
            None,
            None,
            [0, 0, 0],
            [0, 0, 0],
            [b"", b"", b""],
            [b"", b"", b""],
            b"",
            custom,
            (),
            0,
            False,
            b"",
            "",
            None,
            None,
            0,
        )

    # -- applying attempts ----------------------------------------------------------

    def plan(
        self,
        scope: ScopeKey,
        state: ScopeState,
        attempts: Sequence[tuple[Attempt, int]],
        voids: list[str] | None = None,
    ) -> Plan:
        """Decide what applying ``attempts`` (with their fingerprints) to a scope takes,
        and taking out the attempts ``voids`` names (voided: their ids)."""
        version = state.version
        complete = state.history == version
        tail = (state.last_at or 0, state.tail_id)
        fresh: list[tuple[Attempt, int]] = []
        known: list[Attempt] = []
        late = False
        batch: set[int] | None = set() if len(attempts) > 1 else None
        for pair in attempts:
            attempt, fp = pair
            if batch is not None:
                if fp in batch:
                    continue
                batch.add(fp)
            if version == 0 or (
                complete and (attempt.occurred_at, attempt.attempt_id) > tail
            ):  # later than every applied attempt: not one of them
                fresh.append(pair)
            elif state.has_seen(fp):
                if not complete:
                    known.append(attempt)
            else:
                fresh.append(pair)
                late = True
        if len(fresh) > 1:
            fresh.sort(key=_fresh_key)
        if complete:
            refold = version > 0 and (late or state.signature != self.group(scope).signature)
            uses = refold or bool(self._frame)
        else:
            refold = False
            uses = bool(known) or bool(state.log) or bool(self._frame)
        if voids:
            uses = True
        return Plan(fresh, known, len(attempts), uses and state.spilled, refold, voids)

    def apply_plan(
        self,
        scope: ScopeKey,
        state: ScopeState,
        plan: Plan,
        history: list[Entry] | None = None,
        *,
        lost: bool = False,
    ) -> Applied:
        """Carry out a plan on ``state`` in place; returns what to store in the history key.

        ``history`` is the scope's stored history (its entries, in learning order), which
        the plan says when it needs (``needs_history``); a small history is kept in the
        state itself and needs nothing. It is changed in place too.
        ``lost``: the stored history was not there or not whole (``history`` is then
        empty): the scope counts as having no history, which is stored anew.
        """
        if plan.needs_history and history is None:
            raise ValueError(f"applying these attempts to {scope} needs its history")
        if lost:
            state.history = 0
        spilled = state.spilled
        version_before = state.version
        voids = plan.voids
        if not spilled:  # the history is at hand, in the state
            needed = (
                plan.refold
                or bool(plan.known)
                or bool(state.log)
                or bool(self._frame)
                or bool(voids)
            )
            history = state.inline_entries() if needed else None
        rebuilt = False
        if history is not None and state.history != version_before:
            rebuilt = _rebuild(state, history, plan.known)
        complete = state.history == version_before
        refold = complete and (plan.refold or rebuilt)
        params, coefficients, signature, _, classes = self.group(scope)
        learning = state.learning if complete and not refold else None
        sequential = self._sequential
        if complete and not refold and version_before == 0:
            learning = state.learning = initial_learning(params)
            state.sequential = {m.name: m.initial() for m in sequential} if sequential else None
            state.signature = signature
        values = state.sequential
        incremental = self._incremental
        entries: list[Entry] = []
        collisions = 0
        voided = 0
        for attempt, fp in plan.fresh:
            outcome = state.apply(attempt, fp)
            if outcome == DUPLICATE:  # another attempt_id with the same fingerprint
                collisions += 1
                continue
            if learning is not None:
                d = DIFFICULTY_INDEX[attempt.difficulty]
                learning_step(
                    learning,
                    coefficients,
                    d,
                    attempt.is_correct,
                    outcome == NEW_QUESTION,
                    classes.get(attempt.question_id, d) if classes else d,
                )
                if values is not None:
                    for metric in sequential:
                        values[metric.name] = metric.update(values[metric.name], attempt)
            if incremental:
                custom = state.custom
                for inc in incremental:
                    custom[inc.name] = inc.update(custom.get(inc.name, inc.initial()), attempt)
            entries.append(entry_of(attempt))
        state.history += len(entries)
        if learning is not None and entries:
            state.tail_id = entries[-1][1]
        whole: bytes | None = None  # the history anew, or None if only ``entries`` were added
        if history is not None:
            if entries:
                history.extend(entries)
                if learning is None:
                    history.sort(key=learning_key)
            if voids and complete:  # (incomplete: what is voided only never counts later)
                voided = self._void(scope, state, history, voids)
            if refold and not voided:
                self._refold(scope, state, history)
            if entries or rebuilt or refold or lost or voided:
                whole = encode_entries(history)
        if voids:  # their ids stay applied: sent again, or arriving later, they are duplicates
            self._block(state, voids)
        added = b""
        if whole is None and entries:
            added = _encode_entry(entries[0]) if len(entries) == 1 else encode_entries(entries)
        write = self._store_history(state, version_before == 0 or lost, whole, added)
        applied = len(plan.fresh) - collisions
        return Applied(applied, plan.given - applied, write, history, voided)

    @staticmethod
    def _block(state: ScopeState, voids: Sequence[str]) -> None:
        """Mark voided attempt ids as applied: one that arrives later is a duplicate."""
        for attempt_id in voids:
            seen = insert_sorted(state.seen, fingerprint(attempt_id))
            if seen is not None:
                state.seen = seen

    def _void(
        self, scope: ScopeKey, state: ScopeState, history: list[Entry], voids: Sequence[str]
    ) -> int:
        """Take the voided attempts out of a scope whose whole history is at hand: the
        history loses them, and everything is counted and folded again over what is left
        (``version`` falls; ``seen`` keeps their ids). Returns how many were taken out."""
        gone = set(voids)
        kept = [entry for entry in history if entry[1] not in gone]
        removed = len(history) - len(kept)
        if not removed:
            return 0
        history[:] = kept
        seen = state.seen
        fresh = self.new_state()
        attempts = [attempt_of(scope, entry) for entry in kept]
        for attempt in attempts:
            fresh.apply(attempt, fingerprint(attempt.attempt_id))
        for name in ("version", "first_at", "last_at", "attempts", "correct"):
            setattr(state, name, getattr(fresh, name))
        state.questions, state.solved = fresh.questions, fresh.solved
        state.seen = seen
        state.history = len(kept)
        if self._incremental:
            state.custom = {inc.name: _fold(inc, attempts) for inc in self._incremental}
        self._refold(scope, state, history)
        return removed

    def _store_history(
        self, state: ScopeState, fresh: bool, whole: bytes | None, added: bytes
    ) -> HistoryWrite | None:
        """Keep the history in the state while it is small; past ``history_inline_limit``
        bytes move it to its own key, which is appended to from then on."""
        if not state.spilled:
            inline = whole if whole is not None else state.inline + added
            if len(inline) <= self.history_inline_limit:
                state.inline = inline
                return None
            state.inline = b""
            state.spilled = True
            return HistoryWrite(inline, True)
        if whole is not None:
            return HistoryWrite(whole, True)
        return HistoryWrite(added, fresh) if added else None

    def apply(
        self,
        scope: ScopeKey,
        state: ScopeState,
        attempts: Iterable[Attempt],
        history: list[Entry] | None = None,
    ) -> Applied:
        """:meth:`plan` and :meth:`apply_plan` at once (fingerprints computed here)."""
        pairs = [(a, fingerprint(a.attempt_id)) for a in attempts]
        return self.apply_plan(scope, state, self.plan(scope, state, pairs), history)

    def _refold(self, scope: ScopeKey, state: ScopeState, history: Sequence[Entry]) -> None:
        """Every sequential value folded again over the complete history."""
        params, _, signature, _, classes = self.group(scope)
        state.learning = fold_learning(history, params, classes)
        if self._sequential:
            attempts = [attempt_of(scope, entry) for entry in history]
            state.sequential = {m.name: _fold(m, attempts) for m in self._sequential}
        else:
            state.sequential = None
        state.signature = signature
        state.tail_id = history[-1][1] if history else ""

    # -- stats ----------------------------------------------------------------------

    def stats_json_many(
        self,
        scopes: Sequence[ScopeKey],
        states: Sequence[ScopeState],
        histories: Sequence[Sequence[Entry] | None] | None = None,
    ) -> list[bytes]:
        """Each scope's stats JSON, byte-equal to ``self.stats(scope, state).to_json()``.

        Many scopes at once take the columnar path for the built-in metrics
        (:mod:`metrics.columnar`, numpy: several times faster per scope); registered
        custom metrics are then computed per scope and written into each record's
        ``custom_metrics``.
        """
        model = self.model
        if (
            len(scopes) >= COLUMNAR_MIN_SCOPES
            and {scope.learning_mode for scope in scopes} <= model.rules.keys()
        ):
            from performance_engine.metrics.columnar import builtin_stats_json

            columnar = builtin_stats_json(scopes, states, model)
            if columnar is not None:
                if not self._metrics:
                    return columnar
                if histories is None:
                    histories = [None] * len(scopes)
                return [
                    with_custom_metrics(js, self.custom_metrics(s, state, history))
                    for js, s, state, history in zip(
                        columnar, scopes, states, histories, strict=True
                    )
                ]
        if histories is None:
            return [self.stats(s, state).to_json() for s, state in zip(scopes, states, strict=True)]
        return [
            self.stats(s, state, history).to_json()
            for s, state, history in zip(scopes, states, histories, strict=True)
        ]

    def _folded_as_now(self, scopes: Sequence[ScopeKey], states: Sequence[ScopeState]) -> bool:
        """Whether every state's learning values were folded with today's parameters (the
        columnar path takes them as they are; :meth:`learning` folds the others again)."""
        signature = self.signature
        return all(
            state.signature == signature(scope.learning_mode, scope.sub_topic_id)
            or not state.version
            for scope, state in zip(scopes, states, strict=True)
        )

    def stats(
        self, scope: ScopeKey, state: ScopeState, history: Sequence[Entry] | None = None
    ) -> PerformanceStatsData:
        """The stats of one scope, derived from its state (and its history, which only
        frame-based metrics need, and only when it is kept in its own key)."""
        required = self.learning_modes.rules.get(scope.learning_mode)
        if required is None:
            raise ConfigurationError(
                f"learning mode {scope.learning_mode!r} of scope {scope} is not configured; "
                "add it to the learning-mode file (PERF_ENGINE_LEARNING_MODES)"
            )
        return PerformanceStatsData(
            user_id=scope.user_id,
            sub_topic_id=scope.sub_topic_id,
            learning_mode=scope.learning_mode,
            learning=self.learning(scope, state, history),
            custom_metrics=self.custom_metrics(scope, state, history),
            **builtin_fields(state, required),
        )

    def custom_metrics(
        self, scope: ScopeKey, state: ScopeState, history: Sequence[Entry] | None = None
    ) -> dict[str, Any]:
        """The ``custom_metrics`` block of a scope's stats (empty without custom metrics)."""
        custom: dict[str, Any] = {}
        if not self._metrics:
            return custom
        complete = state.history_complete
        for name, metric in self._metrics.items():
            if isinstance(metric, IncrementalMetric):
                value = state.custom.get(name)
                custom[name] = metric.result(metric.initial() if value is None else value)
            elif isinstance(metric, SequentialMetric):
                folded = metric.initial() if state.version == 0 else None
                if state.version and state.sequential is not None:
                    folded = state.sequential.get(name)
                custom[name] = metric.result(folded) if complete and folded is not None else None
        if self._frame:
            if history is None and not state.spilled:
                history = state.inline_entries()
            if history is None:
                raise ValueError(f"the stats of {scope} need its history (frame-based metrics)")
            groups = log_frame(scope, history[-self.attempt_log_limit :]).groupby("difficulty")
            for frame_metric in self._frame:
                custom[frame_metric.name] = frame_metric(groups)
        return custom

    def learning(
        self, scope: ScopeKey, state: ScopeState, history: Sequence[Entry] | None = None
    ) -> LearningStats | None:
        """The ``learning`` block of a scope, or None while its history is incomplete.

        Values folded with other parameters, or by a release that stored them in another
        form (``FOLD_FORMAT``), are folded again from the history when it is at hand (kept
        in the state, or given); else the block is None until the scope's next write.
        """
        folded = self.learning_state(scope, state, history)
        if folded is None:
            return None
        group = self.group(scope)
        questions = state.questions
        counts = (len(questions[0]) >> 3, len(questions[1]) >> 3, len(questions[2]) >> 3)
        return learning_stats(folded, group.params, counts, group.version)

    def learning_state(
        self, scope: ScopeKey, state: ScopeState, history: Sequence[Entry] | None = None
    ) -> LearningState | None:
        """The scope's learning fold with today's parameters (folded again from the
        history when stored with others), or None while the history is incomplete or not
        at hand."""
        if not state.history_complete:
            return None
        group = self.group(scope)
        folded = state.learning
        if state.version == 0 or folded is None:
            return initial_learning(group.params)
        if state.signature != group.signature:
            if history is None and state.spilled:
                return None
            entries = history if history is not None else state.inline_entries()
            return fold_learning(entries, group.params, group.classes)
        return folded

    def predict(
        self,
        scope: ScopeKey,
        state: ScopeState,
        question_id: int,
        difficulty: int,
        history: Sequence[Entry] | None = None,
    ) -> float | None:
        """P(the scope's next answer, to ``question_id`` at ``difficulty``, is right)
        (SPEC 3.3), unrounded; None while the learning values are unknown. A new scope
        gets the prior's prediction; a question the fit never saw, its difficulty's."""
        folded = self.learning_state(scope, state, history)
        if folded is None:
            return None
        group = self.group(scope)
        model = self.model
        return predict_correct(
            folded.logit,
            group.coefficients,
            model.question_class(question_id, difficulty),
            model.question_offset(question_id),
        )


class _Group(NamedTuple):
    """What the fold of a (mode, sub-topic) uses (``MetricsCalculator.group``)."""

    params: LearningParams
    coefficients: Coefficients
    signature: int
    version: str
    classes: Mapping[int, int] | None


def _rebuild(state: ScopeState, history: list[Entry], known: Sequence[Attempt]) -> bool:
    """Bring into an incomplete history the attempts it lacks that are at hand: a format-1
    state's log, and attempts applied before and met again. True if anything changed."""
    have = {entry[1] for entry in history}
    added = False
    for entry in [*state.log, *map(entry_of, known)]:
        if entry[1] not in have:
            have.add(entry[1])
            history.append(entry)
            added = True
    changed = added or bool(state.log)
    state.log = ()
    if added:
        history.sort(key=learning_key)
        state.history = len(history)
    return changed
