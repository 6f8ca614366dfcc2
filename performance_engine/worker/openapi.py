"""The worker's HTTP read API described for machines: its request and response types
and the OpenAPI 3.1 document served at ``/openapi.json`` (schemas generated from the same
types the views encode and decode, so the two cannot drift apart)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from performance_engine.metrics.attempt import IdValue
from performance_engine.metrics.types import PerformanceStatsData
from performance_engine.store.predictions import Prediction
from performance_engine.worker.auth import scope_of

__all__ = ["MAX_BATCH", "BatchRequest", "Erased", "ScopeRef", "openapi_document"]

#: Most scopes one batch read takes.
MAX_BATCH = 1000


class ScopeRef(msgspec.Struct, forbid_unknown_fields=True):
    """One scope of a batch read, as an object (ids as in attempts: integers or decimal
    strings)."""

    user_id: IdValue
    sub_topic_id: IdValue
    learning_mode: str


class BatchRequest(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /stats``: the scopes to read, each a ``"<user_id>:<sub_topic_id>:<mode>"``
    string (a stats record's ``scope``) or a :class:`ScopeRef`."""

    scopes: Annotated[
        list[Annotated[str, msgspec.Meta(max_length=100)] | ScopeRef],
        msgspec.Meta(min_length=1, max_length=MAX_BATCH),
    ]


class BatchStats(msgspec.Struct):
    """The stats of each scope asked for, in the order asked; null where there are none."""

    stats: list[PerformanceStatsData | None]


class LearnerStats(msgspec.Struct):
    """Every scope of one learner that has stats, by sub-topic then mode."""

    user_id: int
    stats: list[PerformanceStatsData]
    #: The xAPI identifier the learner's statements carried (``account:<homePage>|<name>``,
    #: ``mbox:<address>``, ``mbox_sha1sum:<hex>`` or ``openid:<url>``); null if none came
    #: through xAPI.
    xapi_actor: str | None = None


class Error(msgspec.Struct):
    """Why a request was not answered."""

    error: str


class Health(msgspec.Struct):
    """``/health``: ``status`` is ``ok`` when Redis and Kafka answer and the worker goes on."""

    status: str
    redis: dict[str, Any]
    kafka: dict[str, Any]
    state: dict[str, Any]


class Erased(msgspec.Struct):
    """``DELETE /learners/{user_id}``: what the erasure removed and recorded."""

    user_id: str
    erased_at: str
    #: The erased scopes, as ``<user_id>:<sub_topic_id>:<learning_mode>``.
    scopes: list[str]
    #: The learner's rows deleted from the platform's outbox (null: no outbox URL set).
    outbox_rows: int | None
    #: The attempts topic's end offset per partition: the learner's attempts before them
    #: are erased.
    offsets: dict[str, int]


_TYPES = (
    PerformanceStatsData,
    BatchRequest,
    BatchStats,
    LearnerStats,
    Prediction,
    Error,
    Health,
    Erased,
)


def _json(name: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}


def _ok(description: str, name: str) -> dict[str, Any]:
    return {"description": description, "content": _json(name)}


def _errors(*statuses: int) -> dict[str, Any]:
    meaning = {
        400: "a malformed id, a learning mode that is not configured, a malformed body",
        404: "no stats (or no learning values) for it",
        503: "Redis (or, for an erasure or statements, the broker) does not answer, or the "
        "worker is starting",
        409: "a statement id taken before with another body (nothing of the request taken)",
    }
    return {str(s): {"description": meaning[s], "content": _json("Error")} for s in statuses}


def _denials() -> dict[str, Any]:
    meaning = {
        401: "no token, or one that is not valid",
        403: "the token lacks the scope",
        429: "too many wrong tokens from this client; see Retry-After",
    }
    return {str(s): {"description": m, "content": _json("Error")} for s, m in meaning.items()}


def _id_parameter(name: str, what: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": f"{what}: a decimal integer from 1 to 2^63-1",
        "schema": {"type": "string", "pattern": "^[0-9]{1,19}$"},
        "example": "1",
    }


_XAPI_VERSION = {
    "name": "X-Experience-API-Version",
    "in": "header",
    "required": True,
    "schema": {"type": "string", "pattern": "^1\\.0(\\.[0-9]+)?$"},
    "example": "1.0.3",
}
_XAPI_BODY = {
    "application/json": {
        "schema": {
            "oneOf": [
                {"type": "object", "description": "an xAPI statement"},
                {"type": "array", "items": {"type": "object"}, "minItems": 1, "maxItems": 1000},
            ]
        }
    }
}
_MODE = {
    "name": "learning_mode",
    "in": "path",
    "required": True,
    "description": "a configured learning mode (standard, practice, mastery by default), "
    "in any case",
    "schema": {"type": "string", "pattern": "^[A-Za-z][A-Za-z0-9_-]{0,31}$"},
    "example": "standard",
}
_SCOPE = [_id_parameter("user_id", "the learner"), _id_parameter("sub_topic_id", "the sub-topic")]
_ETAG = {
    "ETag": {
        "description": 'the scope\'s revision, quoted ("42")',
        "schema": {"type": "string"},
    }
}


def openapi_document(version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the read API."""
    _, components = msgspec.json.schema_components(
        _TYPES, ref_template="#/components/schemas/{name}"
    )
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "performance-engine read API",
            "version": version,
            "description": "The latest stats of learners, per scope (user, sub-topic, "
            "learning mode), and next-answer predictions. The same stats are in Redis "
            "(docs/redis-layout.md) and in stats-updated events.",
        },
        "paths": {
            "/stats/{user_id}/{sub_topic_id}/{learning_mode}": {
                "get": {
                    "operationId": "getScopeStats",
                    "summary": "One scope's latest stats",
                    "parameters": [
                        *_SCOPE,
                        _MODE,
                        {
                            "name": "If-None-Match",
                            "in": "header",
                            "required": False,
                            "description": "an ETag from an earlier answer",
                            "schema": {"type": "string"},
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "the stats (SPEC 4)",
                            "headers": _ETAG,
                            "content": _json("PerformanceStatsData"),
                        },
                        "304": {"description": "unchanged since the ETag", "headers": _ETAG},
                        **_errors(400, 404, 503),
                    },
                }
            },
            "/stats/{user_id}": {
                "get": {
                    "operationId": "getLearnerStats",
                    "summary": "Every scope of one learner",
                    "parameters": [_SCOPE[0]],
                    "responses": {
                        "200": {
                            "description": "the learner's stats",
                            "content": _json("LearnerStats"),
                        },
                        **_errors(400, 404, 503),
                    },
                }
            },
            "/stats": {
                "post": {
                    "operationId": "getStatsBatch",
                    "summary": f"Many scopes' stats in one request (up to {MAX_BATCH})",
                    "requestBody": {"required": True, "content": _json("BatchRequest")},
                    "responses": {
                        "200": {
                            "description": "in the order asked",
                            "content": _json("BatchStats"),
                        },
                        **_errors(400, 503),
                    },
                }
            },
            "/predict/{user_id}/{sub_topic_id}/{learning_mode}": {
                "get": {
                    "operationId": "predictNextAnswer",
                    "summary": "P(the scope's next answer to a question is right) (SPEC 3.3)",
                    "parameters": [
                        *_SCOPE,
                        _MODE,
                        {
                            "name": "question_id",
                            "in": "query",
                            "required": True,
                            "schema": {"type": "string", "pattern": "^[0-9]{1,19}$"},
                            "example": "7",
                            "description": "the question: a decimal integer",
                        },
                        {
                            "name": "difficulty",
                            "in": "query",
                            "required": True,
                            "schema": {"type": "string"},
                            "example": "easy",
                            "description": "easy, medium or hard",
                        },
                    ],
                    "responses": {
                        "200": _ok("the prediction", "Prediction"),
                        **_errors(400, 404, 503),
                    },
                }
            },
            "/learners/{user_id}": {
                "delete": {
                    "operationId": "eraseLearner",
                    "summary": "Erase a learner everywhere, for good (run it again if it "
                    "failed half-way)",
                    "parameters": [
                        _SCOPE[0],
                        {
                            "name": "reason",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string", "maxLength": 1000},
                            "description": "recorded with the erasure",
                        },
                    ],
                    "responses": {
                        "200": _ok("erased", "Erased"),
                        **_errors(400, 503),
                    },
                }
            },
            "/xAPI/statements": {
                "post": {
                    "operationId": "postStatements",
                    "summary": "xAPI 1.0.x statements in (one or an array), as an LRS takes "
                    "them; each becomes the attempt it stands for",
                    "parameters": [_XAPI_VERSION],
                    "requestBody": {"required": True, "content": _XAPI_BODY},
                    "responses": {
                        "200": {
                            "description": "the statements' ids, in order",
                            "content": {
                                "application/json": {
                                    "schema": {"type": "array", "items": {"type": "string"}}
                                }
                            },
                        },
                        **_errors(400, 409, 503),
                    },
                },
                "put": {
                    "operationId": "putStatement",
                    "summary": "One xAPI statement, with its id",
                    "parameters": [
                        _XAPI_VERSION,
                        {
                            "name": "statementId",
                            "in": "query",
                            "required": True,
                            "schema": {"type": "string"},
                        },
                    ],
                    "requestBody": {"required": True, "content": _XAPI_BODY},
                    "responses": {"204": {"description": "taken"}, **_errors(400, 409, 503)},
                },
            },
            "/health": {
                "get": {
                    "operationId": "getHealth",
                    "summary": "Whether Redis and Kafka answer and the worker goes on",
                    "responses": {
                        "200": {"description": "healthy", "content": _json("Health")},
                        "503": {"description": "not healthy", "content": _json("Health")},
                    },
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "getMetrics",
                    "summary": "Prometheus metrics",
                    "responses": {
                        "200": {
                            "description": "Prometheus text format",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "getOpenAPI",
                    "summary": "This document",
                    "responses": {
                        "200": {
                            "description": "OpenAPI 3.1",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
        },
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "a token of PERF_ENGINE_WEB_TOKENS_FILE with the "
                    "operation's scope (perf-engine token add); without a tokens file the "
                    "server is open on loopback",
                }
            },
        },
    }
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            scope = scope_of(method.upper(), path)
            if scope is None:
                operation["security"] = []
                continue
            operation["security"] = [{"bearer": []}]
            operation["description"] = f"Needs a token with the scope `{scope}`."
            operation["responses"].update(_denials())
    return document
