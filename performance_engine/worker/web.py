"""The worker's HTTP views (Faust's web server, port ``PERF_ENGINE_WEB_PORT``).

* ``GET /stats/{user_id}/{sub_topic_id}/{learning_mode}``: the SPEC 4 JSON; 404 with a
  JSON error when the scope has none, 400 for malformed ids or a mode that is not
  configured, 503 when Redis fails. Its ``ETag`` is the scope's ``revision`` (SPEC 4):
  a request with ``If-None-Match`` naming it is answered ``304 Not Modified``.
* ``GET /stats/{user_id}``: ``{"user_id", "stats": [...]}``, every scope of the learner
  (one ``HGETALL``); 404 when there are none.
* ``POST /stats`` with ``{"scopes": [...]}`` (up to 1,000; each a ``"u:s:mode"``
  string or an object of the three): ``{"stats": [...]}``, in the order asked, ``null``
  where there are none; 400 names the first malformed scope.
* ``GET /predict/{user_id}/{sub_topic_id}/{learning_mode}?question_id=Q&difficulty=D``:
  ``{"p", "params_version", "version"}`` (SPEC 3.3) with the parameters in force; 400 for
  a malformed id, an unknown mode or difficulty; 404 while the scope's learning values
  are unknown.
* ``DELETE /learners/{user_id}[?reason=TEXT]``: erases the learner everywhere (see
  :mod:`performance_engine.platform.erase`; the outbox through ``PERF_ENGINE_OUTBOX_URL``);
  ``{"user_id", "erased_at", "scopes", "outbox_rows", "offsets"}``; 503 when Redis or the
  broker fail (run it again). The token's name is recorded as who asked.
* ``GET /health``: ``{"status", "redis": {...}, "kafka": {...}, "state": {...}}``; 200
  when both answer and the worker goes on, else 503 (``state.error`` says why the worker
  refuses to go on: Redis lost state the attempts topic no longer holds).
* ``GET /metrics``: Prometheus text (see :mod:`performance_engine.worker.instrumentation`).
* ``GET /openapi.json``: all of the above, as OpenAPI 3.1 (:mod:`.openapi`).

Every error, on every path (an unknown one: 404; a method a path does not take: 405), is
``{"error": reason}``: the views raise the engine's errors and :mod:`.middleware` gives
each its status (and answers CORS).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any, cast

import msgspec
from faust.web import Request, Response, View

from performance_engine.broker import bootstrap_hosts
from performance_engine.errors import (
    BrokerUnavailableError,
    DatabaseQueryError,
    InvalidScopeError,
    UserAttemptsNotFoundError,
)
from performance_engine.events import MAX_REASON
from performance_engine.metrics.attempt import scope_key
from performance_engine.metrics.types import ScopeKey
from performance_engine.platform.erase import erase_learner, learner_id
from performance_engine.settings import Settings
from performance_engine.store.params import reading_follower
from performance_engine.store.predictions import predict_async
from performance_engine.store.statements import xapi_identifier
from performance_engine.store.stats_store import AsyncStatsStore
from performance_engine.worker.instrumentation import CONTENT_TYPE
from performance_engine.worker.openapi import BatchRequest, Erased, ScopeRef, openapi_document
from performance_engine.worker.status import status_of
from performance_engine.worker.xapi_ingest import StatementsRefused, fitted_classes, ingest
from performance_engine.xapi import xapi_mapping

__all__ = [
    "BatchStatsView",
    "HealthView",
    "LearnerStatsView",
    "MetricsView",
    "OpenAPIView",
    "PredictView",
    "StatsView",
    "install_views",
]

_BATCH = msgspec.json.Decoder(BatchRequest)
_STARTING = "the worker is starting; try again shortly"


def _int(text: str, name: str) -> int:
    if not text.isdigit() or not text.isascii():
        raise InvalidScopeError(f"{name} must be a positive whole number, got {text!r}")
    return int(text)


def _matches(if_none_match: str, tag: str) -> bool:
    """Whether an ``If-None-Match`` header names ``tag`` (or is ``*``); weak tags compare
    as their strong form (RFC 9110, the weak comparison GET uses)."""
    for item in if_none_match.split(","):
        item = item.strip()
        if item == "*" or item.removeprefix("W/") == tag:
            return True
    return False


async def _broker_answers(settings: Settings) -> tuple[bool, str]:
    errors = []
    for host, port in bootstrap_hosts(settings):
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 2.0)
        except (OSError, TimeoutError) as exc:
            errors.append(f"{host}:{port}: {exc or 'timed out'}")
            continue
        writer.close()
        return True, ""
    return False, "; ".join(errors)


def _store(view: View) -> AsyncStatsStore:
    """The worker's store; DatabaseQueryError (503) until it is connected."""
    store = status_of(view).store
    if store is None:
        raise DatabaseQueryError(_STARTING)
    return store


def _path_scope(user_id: str, sub_topic_id: str, learning_mode: str) -> ScopeKey:
    """The scope a path names; InvalidScopeError (400) for malformed ids."""
    return scope_key(_int(user_id, "user_id"), _int(sub_topic_id, "sub_topic_id"), learning_mode)


def _configured(view: View, scope: ScopeKey, learning_mode: str) -> None:
    """InvalidScopeError unless the scope's learning mode is configured."""
    modes = reading_follower(status_of(view).settings).calculator.learning_modes
    if scope.learning_mode not in modes.rules:
        raise InvalidScopeError(
            f"learning_mode {learning_mode!r} is not configured; known modes: "
            f"{', '.join(modes.names)}"
        )


def _batch_scope(item: str | ScopeRef, index: int) -> ScopeKey:
    """A batch item as a scope; InvalidScopeError naming its position."""
    if isinstance(item, str):
        parts = item.split(":")
        if len(parts) != 3:
            raise InvalidScopeError(
                f"scopes[{index}] {item!r} is not <user_id>:<sub_topic_id>:<learning_mode>"
            )
        user, sub, mode = parts
        ids: tuple[int | str, int | str] = (user, sub)
    else:
        ids, mode = (item.user_id, item.sub_topic_id), item.learning_mode
    try:
        user_id, sub_topic_id = (
            _int(i, name) if isinstance(i, str) else i
            for i, name in zip(ids, ("user_id", "sub_topic_id"), strict=True)
        )
        return scope_key(user_id, sub_topic_id, mode)
    except InvalidScopeError as exc:
        raise InvalidScopeError(f"scopes[{index}]: {exc}") from None


class StatsView(View):
    """``GET /stats/{user_id}/{sub_topic_id}/{learning_mode}``."""

    async def get(
        self, request: Request, user_id: str, sub_topic_id: str, learning_mode: str
    ) -> Response:
        scope = _path_scope(user_id, sub_topic_id, learning_mode)
        _configured(self, scope, learning_mode)
        body, revision = await _store(self).stats_json_and_revision(scope)
        tag = f'"{revision}"'
        headers = {"ETag": tag, "Cache-Control": "no-cache"}
        if _matches(request.headers.get("If-None-Match", ""), tag):
            return self.bytes(b"", status=304, headers=headers)
        return self.bytes(body, content_type="application/json", headers=headers)


class LearnerStatsView(View):
    """``GET /stats/{user_id}``."""

    async def get(self, request: Request, user_id: str) -> Response:
        user = scope_key(_int(user_id, "user_id"), 1, "standard").user_id
        store = _store(self)
        found = await store.learner_stats(user)
        if not found:
            raise UserAttemptsNotFoundError(
                f"no stats for user {user}: no attempt of theirs is counted"
            )
        actor = msgspec.json.encode(await xapi_identifier(store, user))
        body = b'{"user_id":%d,"stats":[%s],"xapi_actor":%s}' % (
            user,
            b",".join(found.values()),
            actor,
        )
        return self.bytes(body, content_type="application/json")


class BatchStatsView(View):
    """``POST /stats``."""

    async def post(self, request: Request) -> Response:
        try:
            asked = _BATCH.decode(await request.read())
            scopes = [_batch_scope(item, i) for i, item in enumerate(asked.scopes)]
            for scope, item in zip(scopes, asked.scopes, strict=True):
                mode = item if isinstance(item, str) else item.learning_mode
                _configured(self, scope, mode.rsplit(":", 1)[-1])
        except msgspec.DecodeError as exc:
            return self.error(400, f'the body must be {{"scopes": [...]}}: {exc}')
        found = await _store(self).read_stats(scopes)
        body = b'{"stats":[%s]}' % b",".join(b"null" if s is None else s for s in found)
        return self.bytes(body, content_type="application/json")


class OpenAPIView(View):
    """``GET /openapi.json``."""

    async def get(self, request: Request) -> Response:
        from importlib.metadata import version

        return self.json(openapi_document(version("performance-engine")))


class PredictView(View):
    """``GET /predict/{user_id}/{sub_topic_id}/{learning_mode}?question_id=Q&difficulty=D``."""

    async def get(
        self, request: Request, user_id: str, sub_topic_id: str, learning_mode: str
    ) -> Response:
        query = request.query
        scope = _path_scope(user_id, sub_topic_id, learning_mode)
        question_id = _int(query.get("question_id", ""), "question_id")
        store = _store(self)
        follower = reading_follower(status_of(self).settings)
        await follower.refresh(store)
        found = await predict_async(
            store, follower.calculator, scope, question_id, query.get("difficulty", "")
        )
        if found is None:
            return self.error(
                404, f"the learning values of {scope} are unknown until its history is rebuilt"
            )
        return self.bytes(msgspec.json.encode(found), content_type="application/json")


class LearnerView(View):
    """``DELETE /learners/{user_id}``: erase the learner (token scope ``learner:erase``)."""

    async def delete(self, request: Request, user_id: str) -> Response:
        user = learner_id(_int(user_id, "user_id"))
        reason = request.query.get("reason", "")
        if len(reason) > MAX_REASON:
            raise InvalidScopeError(f"reason is longer than {MAX_REASON} characters")
        token = cast(Any, request).get("token")  # set by the tokens' middleware
        settings = status_of(self).settings
        report = await asyncio.to_thread(
            erase_learner,
            user,
            reason,
            settings=settings,
            erased_by=token.name if token is not None else "http",
        )
        record = report.record
        answer = Erased(
            record.user_id,
            record.erased_at,
            report.scopes,
            report.outbox_rows,
            record.offsets or {},
        )
        return self.bytes(msgspec.json.encode(answer), content_type="application/json")


#: Most statements, and bytes, one xAPI request takes.
MAX_STATEMENTS = 1000
MAX_STATEMENTS_BYTES = 8 << 20


class _Refused(Exception):
    """An xAPI request refused: its status and reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


class XapiStatementsView(View):
    """``POST /xAPI/statements`` (one statement or an array) and ``PUT
    /xAPI/statements?statementId=ID``: an LRS's statements resource, for Open edX, Moodle
    and other producers (token scope ``xapi:write``; bearer or HTTP basic with the token as
    the password). Each statement is translated into the attempt it stands for
    (:mod:`performance_engine.xapi`) and sent to the attempts topic; a statement that breaks
    the rules fails the request (400, naming it and the field) and nothing of it is taken; a
    reused id with another body is 409 and nothing is taken; a resend is taken again (the
    engine counts an attempt id once)."""

    async def post(self, request: Request) -> Response:
        try:
            ids = await self._take(await self._statements(request))
        except _Refused as refused:
            return self.error(refused.status, refused.reason)
        return self.bytes(msgspec.json.encode(ids), content_type="application/json")

    async def put(self, request: Request) -> Response:
        wanted = request.query.get("statementId", "")
        try:
            if not wanted:
                raise _Refused(400, "PUT needs ?statementId=...")
            parsed = await self._statements(request, {"id": wanted})
            if len(parsed) != 1:
                raise _Refused(400, "PUT takes one statement")
            if parsed[0]["id"] != wanted:
                given = str(parsed[0]["id"])[:64]
                raise _Refused(400, f"the statement's id {given!r} is not statementId")
            await self._take(parsed)
        except _Refused as refused:
            return self.error(refused.status, refused.reason)
        return self.bytes(b"", status=204)

    async def _statements(
        self, request: Request, defaults: dict[str, str] | None = None
    ) -> list[dict[str, Any]]:
        version = request.headers.get("X-Experience-API-Version", "")
        if not version.startswith("1.0"):
            raise _Refused(400, "the X-Experience-API-Version header must be 1.0.x")
        body = await request.read()
        if len(body) > MAX_STATEMENTS_BYTES:
            raise _Refused(400, f"the body is over {MAX_STATEMENTS_BYTES} bytes")
        try:
            document = msgspec.json.decode(body)
        except (msgspec.DecodeError, RecursionError) as exc:
            raise _Refused(400, f"the body is not JSON: {str(exc)[:200]}") from None
        statements = document if isinstance(document, list) else [document]
        if not 1 <= len(statements) <= MAX_STATEMENTS:
            raise _Refused(400, f"send 1 to {MAX_STATEMENTS} statements")
        for i, item in enumerate(statements):
            if not isinstance(item, dict):
                raise _Refused(400, f"statements[{i}] is not a JSON object")
            item.setdefault("id", (defaults or {}).get("id") or str(uuid.uuid4()))
            if not isinstance(item["id"], str):
                raise _Refused(400, f"statements[{i}].id is not a string")
        return statements

    async def _take(self, statements: list[dict[str, Any]]) -> list[str]:
        status = status_of(self)
        settings = status.settings
        values = [msgspec.json.encode(item) for item in statements]
        try:
            done = await ingest(
                _store(self),
                xapi_mapping(settings),
                values,
                [int(time.time() * 1000)] * len(values),
                strict=True,
                fitted=fitted_classes(status.calculator.parameters),
                keep_seconds=settings.xapi_statement_seconds,
            )
        except StatementsRefused as refused:
            raise _Refused(refused.status, refused.reason) from None
        publish = status.publish
        if publish is None:
            raise DatabaseQueryError(_STARTING)
        try:
            await publish(settings.attempts_topic, done.records)
        except Exception as exc:  # the broker: the platform sends the statements again
            raise BrokerUnavailableError(f"sending the attempts failed: {exc}") from exc
        status.metrics.count_statements(done.results)
        return [str(item["id"]) for item in statements]


class HealthView(View):
    """``GET /health``."""

    async def get(self, request: Request) -> Response:
        status = status_of(self)
        redis_state: dict[str, Any] = {"ok": False}
        if status.store is None:
            redis_state["error"] = "not connected yet"
        else:
            try:
                await status.store.ping()
                redis_state["ok"] = True
            except DatabaseQueryError as exc:
                redis_state["error"] = str(exc)
        broker_ok, broker_error = await _broker_answers(status.settings)
        kafka_state: dict[str, Any] = {
            "ok": broker_ok,
            "assigned_partitions": sorted(status.assigned_partitions()),
        }
        if broker_error:
            kafka_state["error"] = broker_error
        state: dict[str, Any] = {"ok": status.refusal is None}
        if status.refusal is not None:
            state["error"] = status.refusal
        healthy = redis_state["ok"] and broker_ok and state["ok"]
        return self.json(
            {
                "status": "ok" if healthy else "unavailable",
                "redis": redis_state,
                "kafka": kafka_state,
                "state": state,
            },
            status=200 if healthy else 503,
        )


class MetricsView(View):
    """``GET /metrics``."""

    async def get(self, request: Request) -> Response:
        body = status_of(self).metrics.render()
        return self.bytes(body, headers={"Content-Type": CONTENT_TYPE})


def install_views(app: Any) -> None:
    """Register the engine's views on the app's web server (the app carries the worker's
    status: ``worker.status.attach_status``)."""
    app.page("/stats")(BatchStatsView)
    app.page("/stats/{user_id}/{sub_topic_id}/{learning_mode}")(StatsView)
    app.page("/stats/{user_id}")(LearnerStatsView)
    app.page("/openapi.json")(OpenAPIView)
    app.page("/predict/{user_id}/{sub_topic_id}/{learning_mode}")(PredictView)
    app.page("/learners/{user_id}")(LearnerView)
    app.page("/xAPI/statements")(XapiStatementsView)
    app.page("/health")(HealthView)
    app.page("/metrics")(MetricsView)
