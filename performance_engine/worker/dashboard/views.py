"""The dashboard's pages, JSON and live stream on the worker's web server.

Pages (one HTML shell; ``static/app.js`` draws each): ``/dashboard`` (overview),
``/dashboard/cohort?sub_topic_id=..&learning_mode=..`` and ``/dashboard/learner?user_id=..``.

JSON (read-only; documented in docs/events-and-http.md):

* ``GET /dashboard/api/overview``: attempts/s, totals, rejected by reason, lag per
  partition, batch time quantiles, the newest stats updates;
* ``GET /dashboard/api/cohorts``: every (sub-topic, mode) with its number of learners;
* ``GET /dashboard/api/cohorts/{sub_topic_id}/{learning_mode}``: one page of a cohort, from
  the index (never a scan); ``order``, ``dir``, ``page``, ``per_page``, ``user_id``;
* ``GET /dashboard/api/learners/{user_id}``: the learner's latest stats per scope and the
  recent points of each;
* ``GET /dashboard/api/stream[?user_id=]``: Server-Sent Events, ``overview`` every second and
  ``update`` for the stats updates (a learner's: every one, at once; all learners': the
  newest 20 of each second), ``erased`` at once when a learner's tombstones arrive.

Bad parameters answer 400, unknown cohorts and learners 404, Redis trouble 503, each with
``{"error": ...}``. Every response carries a strict Content-Security-Policy: the pages
load scripts and styles from the worker only, and the script writes every value from the
events as text, never as HTML.
"""

from __future__ import annotations

import asyncio
import html
import json
import time
from collections import deque
from importlib.resources import files
from typing import Any
from weakref import WeakKeyDictionary

from aiohttp import web
from faust.web import Request, Response, View

from performance_engine.errors import DatabaseQueryError, InvalidScopeError
from performance_engine.metrics.attempt import scope_key
from performance_engine.metrics.types import DIFFICULTIES, PerformanceStatsData
from performance_engine.store.dashboard_index import ORDERS
from performance_engine.store.statements import xapi_identifier
from performance_engine.tokens import find_token
from performance_engine.worker.auth import COOKIE, SESSION_SECONDS
from performance_engine.worker.dashboard.feed import Erased, Update
from performance_engine.worker.status import WorkerStatus, status_of

__all__ = ["install_dashboard"]

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
CONTENT_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
MAX_PER_PAGE = 200


class BadRequest(Exception):
    """A parameter the JSON endpoints refuse (400)."""


def _positive(text: str | None, name: str, default: int | None = None) -> int:
    if text is None or text == "":
        if default is None:
            raise BadRequest(f"{name} is required")
        return default
    if not (text.isdigit() and text.isascii()) or len(text) > 19 or int(text) < 1:
        raise BadRequest(f"{name} must be a positive whole number, got {text[:40]!r}")
    return int(text)


def _static(name: str) -> bytes | None:
    """A file of ``static/`` (or ``static/vendor/``), or None if there is no such file."""
    folder = files("performance_engine.worker.dashboard") / "static"
    for part in name.split("/"):
        if part in ("", ".", "..") or not all(c.isalnum() or c in "._-" for c in part):
            return None
        folder = folder / part
    return folder.read_bytes() if folder.is_file() else None


def _row(user_id: int, stats: PerformanceStatsData | None) -> dict[str, Any]:
    """A learner's row in a cohort: each difficulty's completion and score, mastery."""
    if stats is None:
        return {"user_id": user_id, "missing": True}
    learning = stats.learning
    return {
        "user_id": user_id,
        "total_attempts": stats.total_attempts,
        "attempts_not_completed": stats.total_attempts
        - sum(stats.attempts[d] for d in stats.passed_difficulties),
        "difficulties": {
            d.value: {
                "completion": stats.difficulty_completion[d].value,
                "attempted": stats.attempts[d] > 0,
                "score": stats.difficulty_scores[d],
                "attempts": stats.attempts[d],
                "accuracy": stats.accuracy[d],
            }
            for d in DIFFICULTIES
        },
        "mastery": learning.mastery_probability if learning is not None else None,
        "mastered": learning.mastered if learning is not None else None,
        "recommended_difficulty": learning.recommended_difficulty.value if learning else None,
        "last_attempt_at": stats.last_attempt_at,
    }


class _Rate:
    """Attempts handled per second, from the processor's running totals."""

    def __init__(self) -> None:
        self.samples: deque[tuple[float, int]] = deque(maxlen=20)

    def __call__(self, total: int) -> float:
        now = time.monotonic()
        self.samples.append((now, total))
        while len(self.samples) > 2 and now - self.samples[1][0] >= 5.0:
            self.samples.popleft()
        (t0, n0), (t1, n1) = self.samples[0], self.samples[-1]
        return (n1 - n0) / (t1 - t0) if t1 - t0 >= 0.5 else 0.0


#: Each running worker's attempts-per-second reading (a worker's views share one).
_RATES: WeakKeyDictionary[Any, _Rate] = WeakKeyDictionary()


def overview(status: WorkerStatus) -> dict[str, Any]:
    """The overview's JSON: rates, totals, rejected records, lag, batch times, updates."""
    rate = _RATES.setdefault(status, _Rate())
    counters = status.counters()
    feed = status.feed
    handled = 0 if counters is None else counters.attempts_applied + counters.duplicates
    return {
        "attempts_per_second": round(rate(handled), 1),
        "totals": {
            "attempts_applied": counters.attempts_applied if counters else 0,
            "duplicates": counters.duplicates if counters else 0,
            "stats_published": counters.stats_published if counters else 0,
            "batches": counters.batches if counters else 0,
            "state_recoveries": counters.state_recoveries if counters else 0,
        },
        "rejected": dict(sorted(counters.rejected.items())) if counters else {},
        "lag": {str(p): n for p, n in sorted(status.lag().items())},
        "batch_seconds": status.metrics.batch_seconds(),
        "stats_updates_per_second": round(feed.updates_per_second(), 1) if feed else 0.0,
        "recent": [_update(u) for u in reversed(feed.recent)] if feed else [],
        "refusal": status.refusal,
    }


class _Base(View):
    def fail(self, status: int, message: str) -> Response:
        return self.json({"error": message}, status=status, headers=dict(SECURITY_HEADERS))

    def ok(self, value: Any) -> Response:
        return self.json(value, headers=dict(SECURITY_HEADERS))


class Page(_Base):
    """The HTML shell of every page (``static/app.js`` draws each)."""

    async def get(self, request: Request) -> Response:
        body = _static("index.html")
        assert body is not None
        return self.bytes(body, content_type="text/html", headers=dict(SECURITY_HEADERS))


class Static(_Base):
    """A file of ``static/``."""

    folder = ""

    async def get(self, request: Request, name: str) -> Response:
        body = _static(self.folder + name)
        suffix = name[name.rfind(".") :] if "." in name else ""
        if body is None or suffix not in CONTENT_TYPES:
            return self.fail(404, f"no file {name[:60]!r}")
        return self.bytes(body, content_type=CONTENT_TYPES[suffix], headers=dict(SECURITY_HEADERS))


class Vendor(Static):
    """A file of ``static/vendor/`` (the charting library)."""

    folder = "vendor/"


class Overview(_Base):
    async def get(self, request: Request) -> Response:
        return self.ok(overview(status_of(self)))


class Cohorts(_Base):
    async def get(self, request: Request) -> Response:
        index = status_of(self).dashboard_index
        if index is None:
            return self.fail(503, "the worker is starting; try again shortly")
        try:
            found = await index.cohorts()
        except DatabaseQueryError as exc:
            return self.fail(503, str(exc))
        return self.ok(
            {
                "cohorts": [
                    {
                        "sub_topic_id": c.sub_topic_id,
                        "learning_mode": c.learning_mode,
                        "learners": c.learners,
                    }
                    for c in found
                ]
            }
        )


class CohortPage(_Base):
    async def get(self, request: Request, sub_topic_id: str, learning_mode: str) -> Response:
        status = status_of(self)
        index, store = status.dashboard_index, status.store
        if index is None or store is None:
            return self.fail(503, "the worker is starting; try again shortly")
        query = request.query
        try:
            sub = _positive(sub_topic_id, "sub_topic_id")
            mode = scope_key(1, sub, learning_mode).learning_mode
            order = query.get("order", "stuck")
            if order not in ORDERS:
                raise BadRequest(f"order must be one of {', '.join(ORDERS)}")
            direction = query.get("dir", "asc" if order == "mastery" else "desc")
            if direction not in ("asc", "desc"):
                raise BadRequest("dir must be asc or desc")
            page = _positive(query.get("page"), "page", 1)
            per_page = _positive(query.get("per_page"), "per_page", 50)
            if per_page > MAX_PER_PAGE:
                raise BadRequest(f"per_page must be at most {MAX_PER_PAGE}")
            wanted = query.get("user_id")
            user = _positive(wanted, "user_id") if wanted else None
        except (BadRequest, InvalidScopeError) as exc:
            return self.fail(400, str(exc))
        try:
            total, users = await index.page(
                sub,
                mode,
                order,
                descending=direction == "desc",
                offset=(page - 1) * per_page,
                limit=per_page,
            )
            if total == 0:
                return self.fail(404, f"no learners in sub-topic {sub}, mode {mode!r}")
            if user is not None:
                users = [user] if (sub, mode) in await index.learner_cohorts(user) else []
            stored = await store.read_stats([scope_key(u, sub, mode) for u in users])
        except DatabaseQueryError as exc:
            return self.fail(503, str(exc))
        rows = [
            _row(u, None if s is None else PerformanceStatsData.from_json(s))
            for u, s in zip(users, stored, strict=True)
        ]
        return self.ok(
            {
                "sub_topic_id": sub,
                "learning_mode": mode,
                "order": order,
                "dir": direction,
                "page": page,
                "per_page": per_page,
                "learners": total,
                "rows": rows,
            }
        )


class Learner(_Base):
    async def get(self, request: Request, user_id: str) -> Response:
        status = status_of(self)
        index, store, feed = status.dashboard_index, status.store, status.feed
        if index is None or store is None or feed is None:
            return self.fail(503, "the worker is starting; try again shortly")
        try:
            user = _positive(user_id, "user_id")
        except BadRequest as exc:
            return self.fail(400, str(exc))
        try:
            cohorts = await index.learner_cohorts(user)
            scopes = [scope_key(user, sub, mode) for sub, mode in cohorts]
            stored = await store.read_stats(scopes)
            actor = await xapi_identifier(store, user)
        except DatabaseQueryError as exc:
            return self.fail(503, str(exc))
        found = [
            {
                "stats": json.loads(item),
                "history": [_point(p) for p in feed.history(scope)],
            }
            for scope, item in zip(scopes, stored, strict=True)
            if item is not None
        ]
        if not found:
            return self.fail(404, f"no stats for learner {user}")
        return self.ok({"user_id": user, "xapi_actor": actor, "scopes": found})


class Stream(_Base):
    async def get(self, request: Request) -> Any:
        status = status_of(self)
        feed = status.feed
        if feed is None:
            return self.fail(503, "the worker is starting; try again shortly")
        wanted = request.query.get("user_id")
        try:
            user = _positive(wanted, "user_id") if wanted else None
        except BadRequest as exc:
            return self.fail(400, str(exc))
        response = web.StreamResponse(
            headers={**SECURITY_HEADERS, "Content-Type": "text/event-stream"}
        )
        queue = feed.listen(user)  # before the browser hears the stream is open
        try:
            await response.prepare(request)  # type: ignore[arg-type]
            while not status.should_stop:
                await response.write(_event("overview", overview(status)))
                deadline = time.monotonic() + 1.0
                newest: deque[Update] = deque(maxlen=20)  # a busy second: its last 20
                while (left := deadline - time.monotonic()) > 0:
                    try:
                        notice = await asyncio.wait_for(queue.get(), left)
                    except TimeoutError:
                        break
                    if isinstance(notice, Erased):  # at once, and none of theirs after it
                        await response.write(_event("erased", _erased(notice)))
                        newest = deque((u for u in newest if u.user_id != notice.user_id), 20)
                    elif user is not None:  # one learner's: every update, at once
                        await response.write(_event("update", _update(notice)))
                    else:
                        newest.append(notice)
                for update in newest:
                    await response.write(_event("update", _update(update)))
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            feed.stop_listening(queue)
        return response


def install_dashboard(app: Any) -> None:
    """Register the dashboard's pages and JSON on the worker's web server (the app
    carries the worker's status: ``worker.status.attach_status``)."""
    for path in ("/dashboard", "/dashboard/cohort", "/dashboard/learner"):
        app.page(path, name=f"dashboard-page{path}")(Page)
    app.page("/dashboard/static/{name}", name="dashboard-static")(Static)
    app.page("/dashboard/vendor/{name}", name="dashboard-vendor")(Vendor)
    app.page("/dashboard/api/overview")(Overview)
    app.page("/dashboard/api/cohorts")(Cohorts)
    app.page("/dashboard/api/cohorts/{sub_topic_id}/{learning_mode}")(CohortPage)
    app.page("/dashboard/api/learners/{user_id}")(Learner)
    app.page("/dashboard/api/stream")(Stream)
    app.page("/dashboard/sign-in")(SignIn)
    app.page("/dashboard/sign-out")(SignOut)


def _point(point: Any) -> list[Any]:
    return [point.at, point.mastery, point.accuracy, point.version]


def _update(update: Update) -> dict[str, Any]:
    return {
        "user_id": update.user_id,
        "sub_topic_id": update.sub_topic_id,
        "learning_mode": update.learning_mode,
        "version": update.version,
        "total_attempts": update.total_attempts,
        "passed": update.passed,
        "mastery": update.mastery,
        "accuracy": update.accuracy,
        "updated_at": update.updated_at,
        "attempt_id": update.attempt_id,
    }


def _erased(erased: Erased) -> dict[str, Any]:
    return {
        "user_id": erased.user_id,
        "scopes": [
            {"sub_topic_id": scope.sub_topic_id, "learning_mode": scope.learning_mode}
            for scope in erased.scopes
        ],
    }


def _event(name: str, value: Any) -> bytes:
    return f"event: {name}\ndata: {json.dumps(value)}\n\n".encode()


SIGN_IN_HEADERS = {
    **SECURITY_HEADERS,
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; "
        "base-uri 'none'"
    ),
}

_SIGN_IN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in: performance-engine</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/dashboard/static/app.css"></head>
<body><main class="sign-in"><h1>performance-engine</h1>
<form method="post" action="/dashboard/sign-in">
<label for="token">Access token (with the <code>dashboard</code> scope)</label>
<input id="token" name="token" type="password" autocomplete="off" required autofocus>
<input type="hidden" name="next" value="{next}">
<button type="submit">Sign in</button>
<p class="problem" role="alert">{problem}</p>
</form></main></body></html>
"""


def _next_page(value: str | None) -> str:
    """Where to go after signing in: a dashboard page of this server, else the overview."""
    if value and value.startswith("/dashboard") and not value.startswith("//"):
        return value
    return "/dashboard"


def _sign_in_page(next_page: str, problem: str = "", status: int = 200) -> Response:
    body = _SIGN_IN_PAGE.format(next=html.escape(next_page), problem=html.escape(problem))
    return web.Response(  # type: ignore[return-value]
        text=body, status=status, content_type="text/html", headers=SIGN_IN_HEADERS
    )


class SignIn(_Base):
    """``/dashboard/sign-in``: a form that trades a token for a session cookie."""

    async def get(self, request: Request) -> Response:
        guard = getattr(self.app, "guard", None)
        next_page = _next_page(request.query.get("next"))
        if guard is None:  # no tokens file: the dashboard is open
            raise web.HTTPSeeOther(next_page)
        return _sign_in_page(next_page)

    async def post(self, request: Request) -> Response:
        guard = getattr(self.app, "guard", None)
        form = await request.post()
        next_page = _next_page(str(form.get("next", "")))
        if guard is None:
            raise web.HTTPSeeOther(next_page)
        client = request.remote or "?"  # type: ignore[attr-defined]
        if guard.limited(client) > 0:
            return _sign_in_page(next_page, "Too many failed attempts; wait a minute.", 429)
        token = find_token(guard.tokens(), str(form.get("token", "")))  # exactly as typed
        if token is None or "dashboard" not in token.scopes:
            guard.failed(client)
            problem = (
                "That token is not valid."
                if token is None
                else "That token may not open the dashboard."
            )
            return _sign_in_page(next_page, problem, 401 if token is None else 403)
        response = web.HTTPSeeOther(next_page)
        secure = request.secure or request.headers.get("X-Forwarded-Proto") == "https"  # type: ignore[attr-defined]
        response.set_cookie(
            COOKIE,
            guard.open_session(token),
            max_age=SESSION_SECONDS,
            path="/dashboard",
            httponly=True,
            samesite="Strict",
            secure=secure,
        )
        raise response


class SignOut(_Base):
    """``POST /dashboard/sign-out``: ends the session."""

    async def post(self, request: Request) -> Response:
        guard = getattr(self.app, "guard", None)
        if guard is not None:
            guard.close_session(request.cookies.get(COOKIE))
        response = web.HTTPSeeOther("/dashboard/sign-in")
        response.del_cookie(COOKIE, path="/dashboard")
        raise response
