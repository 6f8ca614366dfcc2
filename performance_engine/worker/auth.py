"""Who may read what from the worker's web server (with ``PERF_ENGINE_WEB_TOKENS_FILE``).

Every request but ``/health``, ``/openapi.json``, the sign-in page and its assets and
CORS preflights needs a token with the path's scope (:func:`scope_of`): a bearer token
(``Authorization: Bearer pe_...``) or, for the dashboard, the session cookie its sign-in
page sets. No token, or one that is not in the file: ``401``; a token without the scope:
``403``; both JSON with a reason. The file is read again when it changes, so tokens are
added and revoked while the worker runs (a revoked token's sessions end with it). A client
that presents wrong tokens more than :data:`MAX_FAILURES` times a minute gets ``429``
until the minute is over. Every denial is logged with the token's name when there is one,
never the token.
"""

from __future__ import annotations

import base64
import logging
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiohttp import web

from performance_engine.tokens import Token, find_token, read_tokens

__all__ = ["COOKIE", "Guard", "scope_of"]

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

COOKIE = "pe_session"
SESSION_SECONDS = 8 * 3600
MAX_FAILURES = 20  # wrong tokens per client and minute
WINDOW_SECONDS = 60.0
MAX_CLIENTS = 10_000  # clients whose failures are remembered
MAX_SESSIONS = 10_000  # live dashboard sessions; the oldest end first beyond it

#: Paths anyone may request.
OPEN = ("/health", "/openapi.json", "/dashboard/sign-in", "/dashboard/sign-out")
OPEN_PREFIXES = ("/dashboard/static/", "/dashboard/vendor/")
#: The dashboard's pages: without a session they send the browser to the sign-in page.
PAGES = ("/dashboard", "/dashboard/cohort", "/dashboard/learner")


def scope_of(method: str, path: str) -> str | None:
    """The scope a request needs; None for an open one; ``""`` for any valid token."""
    if path in OPEN or path.startswith(OPEN_PREFIXES):
        return None
    if path == "/metrics":
        return "metrics"
    if path == "/dashboard" or path.startswith("/dashboard/"):
        return "dashboard"
    if path == "/stats" or path.startswith(("/stats/", "/predict/")):
        return "stats:read"
    if path.startswith("/learners/"):
        return "learner:erase"
    if path.startswith("/xAPI/"):
        return "xapi:write"
    return ""


@dataclass(slots=True)
class _Session:
    name: str
    sha256: str
    expires: float


@dataclass
class Guard:
    """The tokens file (read again when it changes), the dashboard's sessions and the
    failed attempts per client."""

    path: Path
    clock: Callable[[], float] = time.monotonic
    _tokens: list[Token] = field(default_factory=list)
    _stamp: tuple[int, int, int] | None = None
    sessions: dict[str, _Session] = field(default_factory=dict)
    _failures: dict[str, deque[float]] = field(default_factory=dict)

    def tokens(self) -> list[Token]:
        """The file's tokens; kept as they were if the file cannot be read or parsed now
        (logged), so a half-written edit does not open or close the server."""
        try:
            info = self.path.stat()
            stamp = (info.st_mtime_ns, info.st_size, info.st_ino)
            if stamp != self._stamp:
                self._tokens = read_tokens(self.path)
                self._stamp = stamp
        except Exception as exc:
            logger.error(
                "the tokens file could not be read again (%s); the tokens in force stay", exc
            )
        return self._tokens

    # -- sessions --------------------------------------------------------------------

    def open_session(self, token: Token) -> str:
        now = self.clock()
        self.sessions = {k: s for k, s in self.sessions.items() if s.expires > now}
        while len(self.sessions) >= MAX_SESSIONS:  # insertion order: the oldest first
            self.sessions.pop(next(iter(self.sessions)))
        sid = secrets.token_urlsafe(32)
        self.sessions[sid] = _Session(token.name, token.sha256, now + SESSION_SECONDS)
        return sid

    def session_token(self, sid: str | None) -> Token | None:
        """The token behind a live session (None once it expired or its token was revoked)."""
        session = self.sessions.get(sid or "")
        if session is None or session.expires <= self.clock():
            return None
        for token in self.tokens():
            if token.sha256 == session.sha256 and token.name == session.name:
                return token
        return None

    def close_session(self, sid: str | None) -> None:
        self.sessions.pop(sid or "", None)

    # -- failed attempts -------------------------------------------------------------

    def limited(self, client: str) -> float:
        """Seconds until ``client`` may try again (0: now)."""
        failures = self._failures.get(client)
        if failures is None:
            return 0.0
        now = self.clock()
        while failures and failures[0] <= now - WINDOW_SECONDS:
            failures.popleft()
        if len(failures) < MAX_FAILURES:
            return 0.0
        return failures[0] + WINDOW_SECONDS - now

    def failed(self, client: str) -> None:
        if client not in self._failures and len(self._failures) >= MAX_CLIENTS:
            self._failures.pop(next(iter(self._failures)))
        self._failures.setdefault(client, deque()).append(self.clock())

    # -- the middleware --------------------------------------------------------------

    def middleware(self) -> Any:
        @web.middleware
        async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
            preflight = request.method == "OPTIONS" and (
                "Access-Control-Request-Method" in request.headers
            )
            needed = None if preflight else scope_of(request.method, request.path)
            if needed is None:
                return await handler(request)
            client = request.remote or "?"
            wait = self.limited(client)
            if wait > 0:
                return _deny(request, 429, f"too many failed attempts; try again in {wait:.0f} s",
                             None, {"Retry-After": str(int(wait) + 1)})  # fmt: skip
            token, presented = self._presented(request)
            if token is None:
                if presented:
                    self.failed(client)
                if request.path in PAGES and request.method == "GET":
                    target = request.path_qs
                    raise web.HTTPSeeOther(f"/dashboard/sign-in?next={quote(target, safe='')}")
                reason = "the token is not valid" if presented else "a token is required"
                return _deny(request, 401, reason, None, {"WWW-Authenticate": "Bearer"})
            if needed and needed not in token.scopes:
                return _deny(
                    request, 403, f"the token {token.name!r} lacks the scope {needed!r}", token
                )
            request["token"] = token
            return await handler(request)

        return authenticate

    def _presented(self, request: web.Request) -> tuple[Token | None, bool]:
        """The request's token (bearer, else the dashboard's session) and whether it
        presented one at all."""
        header = request.headers.get("Authorization")
        if header is not None:
            kind, _, value = header.partition(" ")
            if kind.lower() == "basic":  # an LRS client's key and secret: the token is the secret
                value = _basic_secret(value)
            elif kind.lower() != "bearer":
                return None, True
            return find_token(self.tokens(), value), True
        sid = request.cookies.get(COOKIE)
        if sid is not None and request.path.startswith("/dashboard"):
            return self.session_token(sid), True
        return None, False


def _basic_secret(value: str) -> str:
    """The password of HTTP basic credentials ('' if they cannot be read)."""
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return ""
    return decoded.partition(":")[2]


def _deny(
    request: web.Request,
    status: int,
    reason: str,
    token: Token | None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    logger.warning(
        "denied %s %s from %s: %s (token: %s)",
        request.method,
        request.path[:200],
        request.remote,
        reason,
        token.name if token is not None else "-",
    )
    return web.json_response({"error": reason}, status=status, headers=headers)
