"""What every answer of the worker's web server gets, whatever its path (aiohttp
middlewares, given to Faust's web server through its ``web_application_options``):

- **JSON errors**: a path that does not exist answers ``404 {"error": ...}``, a method a
  path does not take ``405 {"error": ...}`` with ``Allow``; never aiohttp's plain text.
  The engine's errors a view lets through answer with their status (:data:`ERROR_STATUS`):
  a malformed scope 400, no stats 404, Redis failing (or not connected yet) 503.
- **CORS** (``PERF_ENGINE_CORS_ORIGINS``, none by default): a request from an allowed
  origin gets ``Access-Control-Allow-Origin`` (and ``ETag`` exposed, so a page can send
  ``If-None-Match``); a preflight (``OPTIONS`` with ``Access-Control-Request-Method``)
  from one is answered ``204`` with the methods and headers it may use. Other origins get
  no CORS headers, so browsers keep their pages from reading the answers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiohttp import web

from performance_engine.errors import (
    BrokerUnavailableError,
    DatabaseQueryError,
    InvalidScopeError,
    PerformanceEngineError,
    UserAttemptsNotFoundError,
)

__all__ = ["ERROR_STATUS", "middlewares"]

#: The HTTP status of each engine error a view may raise.
ERROR_STATUS: tuple[tuple[type[PerformanceEngineError], int], ...] = (
    (InvalidScopeError, 400),
    (UserAttemptsNotFoundError, 404),
    (DatabaseQueryError, 503),
    (BrokerUnavailableError, 503),
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: What a page from an allowed origin may send and read.
CORS_METHODS = "GET, POST, DELETE, OPTIONS"
CORS_HEADERS = "Authorization, Content-Type, If-None-Match"
CORS_EXPOSED = "ETag"
CORS_MAX_AGE = "600"


def _error(status: int, reason: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": reason}, status=status, headers=headers)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp's own 404 and 405 (and any other HTTP error it raises), and the engine's
    errors of :data:`ERROR_STATUS`, as JSON."""
    try:
        return await handler(request)
    except PerformanceEngineError as exc:
        for kind, status in ERROR_STATUS:
            if isinstance(exc, kind):
                return _error(status, str(exc))
        raise
    except web.HTTPMethodNotAllowed as exc:
        allowed = ", ".join(sorted(exc.allowed_methods))
        return _error(
            405,
            f"{request.method} is not allowed on {request.path}; allowed: {allowed}",
            {"Allow": allowed},
        )
    except web.HTTPNotFound:
        return _error(404, f"no such path: {request.path} (the API is at /openapi.json)")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(exc.status, exc.reason)


def cors(origins: Iterable[str]) -> Any:
    """A middleware allowing pages of ``origins`` (``*``: any) to read the answers."""
    allowed = frozenset(origins)
    anyone = "*" in allowed

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin is None or not (anyone or origin in allowed):
            return await handler(request)
        headers = {"Access-Control-Allow-Origin": "*" if anyone else origin}
        if not anyone:
            headers["Vary"] = "Origin"
        preflight = request.method == "OPTIONS" and (
            "Access-Control-Request-Method" in request.headers
        )
        if preflight:
            headers.update(
                {
                    "Access-Control-Allow-Methods": CORS_METHODS,
                    "Access-Control-Allow-Headers": CORS_HEADERS,
                    "Access-Control-Max-Age": CORS_MAX_AGE,
                }
            )
            return web.Response(status=204, headers=headers)
        response = await handler(request)
        response.headers.update(headers)
        response.headers["Access-Control-Expose-Headers"] = CORS_EXPOSED
        return response

    return middleware


def middlewares(cors_origins: Iterable[str], authenticate: Any = None) -> list[Any]:
    """The worker's middlewares, outermost first: CORS (its headers go on every answer,
    denials and errors too), then the tokens' check (``worker.auth``), then JSON errors."""
    origins = tuple(cors_origins)
    found = [cors(origins)] if origins else []
    if authenticate is not None:
        found.append(authenticate)
    return [*found, json_errors]
