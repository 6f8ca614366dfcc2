"""xAPI statements in: translated once, taken by id, sent to the attempts topic.

Both ways in, ``POST``/``PUT /xAPI/statements`` and the statements topic
(``PERF_ENGINE_XAPI_TOPIC``), go through :func:`ingest`:

1. each statement is translated (:func:`performance_engine.xapi.translate`): an attempt,
   a void, a statement the engine does not count (and why), or one that breaks the rules;
2. its id is taken (:mod:`performance_engine.store.statements`): a resend is taken again
   (the engine counts an attempt id once), a reused id with another body is a conflict;
   bodies are compared as xAPI compares statements
   (:func:`performance_engine.xapi.comparable_form`: not byte for byte);
3. the records for the attempts topic are built, keyed by ``user_id``: each attempt, and a
   void (SPEC 2) after the attempt it voids. A voiding statement whose statement was taken
   sends its void at once, to the voided attempt's scope; one that comes first is kept
   with the voided statement's id, whose attempt is then sent with its void. A question of
   a multi-question problem that refers to the whole problem's statement
   (``context.statement``) voids that one the same way, and the whole problem's statement
   that comes after one of its questions is not sent at all;
4. the learners' xAPI identifiers are kept (the reverse of the id they were mapped to).

Over HTTP (``strict``) a statement that breaks the rules or a conflict refuses the whole
request before anything is taken; from the topic they become dead letters and the rest is
taken.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import msgspec

from performance_engine.errors import InvalidAttemptError
from performance_engine.metrics.params import ParameterSet
from performance_engine.store.statements import (
    check_statements,
    remember_learners,
    statement_digest,
    take_statements,
    void_statements,
)
from performance_engine.store.stats_store import AsyncStatsStore
from performance_engine.worker.publisher import OutRecord
from performance_engine.xapi import (
    Ignored,
    Translated,
    Void,
    XapiMapping,
    comparable_form,
    read_statement,
    translate_statement,
)

__all__ = ["Ingested", "StatementsRefused", "fitted_classes", "ingest"]


class StatementsRefused(Exception):
    """A request's statements are refused whole: ``status`` 400 (one breaks the rules) or
    409 (an id taken with another body)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(slots=True)
class Ingested:
    """What became of a batch of statements."""

    #: Records for the attempts topic (key, value, headers), in the order to send them.
    records: list[OutRecord] = field(default_factory=list)
    #: Statements refused (their index and why): dead letters, from the topic.
    refused: list[tuple[int, InvalidAttemptError]] = field(default_factory=list)
    #: Per statement, what became of it: ``counted``, ``void``, ``void_held`` (its
    #: statement has not come yet), ``ignored:<reason>`` or ``refused:<error class>``.
    results: list[str] = field(default_factory=list)


_ENCODE = msgspec.json.Encoder().encode


def _scope(attempt: dict[str, object]) -> str:
    return f"{attempt['user_id']}:{attempt['sub_topic_id']}:{attempt['learning_mode']}"


def _void_record(scope: str, target: str, voider: str, at_ms: int) -> OutRecord:
    user, sub_topic, mode = scope.split(":", 2)
    value = _ENCODE(
        {
            "void": target,
            "user_id": int(user),
            "sub_topic_id": int(sub_topic),
            "learning_mode": mode,
            "occurred_at": at_ms,
            "voided_by": voider,
        }
    )
    return user.encode(), value, []


async def ingest(
    store: AsyncStatsStore,
    mapping: XapiMapping,
    values: Sequence[bytes],
    received_ms: Sequence[int],
    *,
    strict: bool,
    fitted: Mapping[int, int] | None = None,
    keep_seconds: int = 0,
) -> Ingested:
    """Translate and take statements (see the module docstring); the caller sends
    ``records`` to the attempts topic. ``received_ms``: each statement's time of receipt
    (its attempt's time when it has no ``timestamp``; from the topic, its record's time, so
    that a redelivery gives the same attempt). ``strict``: refuse the whole batch
    (:class:`StatementsRefused`) rather than leave out the statements that are refused.
    ``fitted``: the questions' fitted difficulty classes, if any. ``keep_seconds``: how long
    the statements taken are remembered (0: for good)."""
    done = Ingested()
    outcomes: list[Translated | Ignored | Void | InvalidAttemptError] = []
    ids: list[str | None] = []  # each statement's id, lower case (None: none, or refused)
    for i, value in enumerate(values):
        try:
            statement = read_statement(value)
            outcomes.append(translate_statement(statement, mapping, received_ms[i], fitted))
            ids.append(None if statement.id is None else statement.id.lower())
        except InvalidAttemptError as exc:
            if strict:
                raise StatementsRefused(
                    400, f"statements[{i}]: {exc.error_class}: {exc.reason}"
                ) from None
            outcomes.append(exc)
            ids.append(None)
    digests = [
        "" if ids[i] is None else statement_digest(comparable_form(value))
        for i, value in enumerate(values)
    ]
    taking = [i for i, found in enumerate(ids) if found is not None]  # not refused, an id
    keys = [str(ids[i]) for i in taking]
    clashing = _conflicts_within(taking, keys, [digests[i] for i in taking])
    # Over HTTP the whole request is refused before anything is taken, so every id is
    # checked first; from the topic, taking a statement finds a conflict itself.
    checked = (
        await check_statements(store, keys, [digests[i] for i in taking])
        if strict
        else [0] * len(keys)
    )
    for i, key, status in zip(taking, keys, checked, strict=True):
        if status == 2 or i in clashing:
            if strict:
                raise StatementsRefused(409, f"statement {key[:64]!r} was taken with another body")
            outcomes[i] = _conflict(key)
    taking = [i for i in taking if not isinstance(outcomes[i], InvalidAttemptError)]
    scopes = [
        _scope(found.attempt) if isinstance(found := outcomes[i], Translated) else ""
        for i in taking
    ]
    claims = dict(
        zip(
            taking,
            await take_statements(
                store,
                [str(ids[i]) for i in taking],
                [digests[i] for i in taking],
                scopes,
                keep_seconds,
            ),
            strict=True,
        )
    )
    raced = [i for i in taking if claims[i].status == 2]  # taken meanwhile, another body
    if strict and raced:
        # nothing is sent: the statements claimed with this request are resends when the
        # platform sends them again
        raise StatementsRefused(
            409, f"statement {str(ids[raced[0]])[:64]!r} was taken with another body"
        )
    # what makes a statement no longer count: a voiding statement, or a question of a
    # multi-question problem referring to the whole problem's statement
    marks: list[tuple[int, str, str, str]] = []  # (position, voided id, by, why)
    for i in taking:
        found = outcomes[i]
        if claims[i].status == 2:
            continue
        if isinstance(found, Void):
            marks.append((i, found.target, str(ids[i]), "void"))
        elif isinstance(found, Translated) and found.parent is not None:
            marks.append((i, found.parent, str(ids[i]), "parent"))
    marked = await void_statements(store, [mark[1:] for mark in marks], keep_seconds)
    voids: list[OutRecord] = []  # after every attempt of the batch
    void_results: dict[int, str] = {}
    for (i, target, by, _why), (taken, scope) in zip(marks, marked, strict=True):
        if scope:
            voids.append(_void_record(scope, target, by, received_ms[i]))
        if isinstance(outcomes[i], Void):
            void_results[i] = (
                "void" if scope else "void_held" if not taken else "ignored:void_of_uncounted"
            )
    learners: list[tuple[int, str, int]] = []
    for i, found in enumerate(outcomes):
        claim = claims.get(i)
        if claim is not None and claim.status == 2:  # taken meanwhile with another body
            found = _conflict(str(ids[i]))
        if isinstance(found, InvalidAttemptError):
            done.refused.append((i, found))
            done.results.append(f"refused:{found.error_class}")
        elif isinstance(found, Ignored):
            done.results.append(f"ignored:{found.reason}")
        elif isinstance(found, Void):
            done.results.append(void_results[i])
        elif claim is not None and claim.reason == "parent":
            # the whole problem's statement of a multi-question problem: not an attempt
            done.results.append("ignored:multi_question_parent")
        else:
            attempt = found.attempt
            user = attempt["user_id"]
            done.records.append((str(user).encode(), _ENCODE(attempt), []))
            if claim is not None and claim.voided_by:
                scope = _scope(attempt)
                voids.append(
                    _void_record(scope, attempt["attempt_id"], claim.voided_by, received_ms[i])
                )
            learners.append((user, found.learner, attempt["occurred_at"]))
            done.results.append("counted")
    done.records += voids
    if learners:
        await remember_learners(store, learners)
    return done


def fitted_classes(parameters: ParameterSet | None) -> Mapping[int, int] | None:
    """The questions' fitted difficulty classes, if fitted parameters hold them."""
    return parameters.questions if parameters is not None and parameters.questions else None


def _conflict(statement_id: str) -> InvalidAttemptError:
    return InvalidAttemptError(
        "xapi_conflict", f"id: statement {statement_id[:64]!r} was taken with another body"
    )


def _conflicts_within(
    positions: Sequence[int], keys: Sequence[str], digests: Sequence[str]
) -> set[int]:
    """The positions of statements whose id came earlier in the batch with another body."""
    first: dict[str, str] = {}
    clashing: set[int] = set()
    for position, key, digest in zip(positions, keys, digests, strict=True):
        if first.setdefault(key, digest) != digest:
            clashing.add(position)
    return clashing
