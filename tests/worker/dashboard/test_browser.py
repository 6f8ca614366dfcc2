"""The dashboard in a real headless browser (Debian's chromium, driven by Playwright)
against a running worker: the overview's counter rises while attempts stream in, a hostile
attempt id is shown as text, the cohort page lists its learners, and a learner's card
changes when a new attempt of theirs arrives, then shows at once that they were erased.
Screenshots go to ``test-artifacts/``
(``PERF_ENGINE_TEST_ARTIFACTS``)."""

from __future__ import annotations

import json
import os
import re
import shutil
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from performance_engine.metrics.types import DIFFICULTIES
from performance_engine.platform.erase import erase_learner
from performance_engine.settings import Settings
from performance_engine.tokens import add_token, revoke_token
from performance_engine.tools.simulator import generate_attempts
from tests.helpers import ROOT, oracle, produce_slowly, wait_for_oracle
from tests.services import attempt_records, produce, wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.browser, pytest.mark.slow]

ARTIFACTS = Path(os.environ.get("PERF_ENGINE_TEST_ARTIFACTS", ROOT / "test-artifacts"))
#: Headless, and nothing that reaches for the network (this machine has none to reach).
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
HOSTILE = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'


def chromium() -> str:
    found = os.environ.get("PERF_ENGINE_TEST_CHROMIUM") or shutil.which("chromium")
    if not found:
        pytest.fail(
            "the dashboard's browser tests need Debian's chromium (apt-get install chromium; "
            ".ci/run installs it) or PERF_ENGINE_TEST_CHROMIUM"
        )
    return found


@pytest.fixture
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    opened = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    yield opened
    opened.close()
    assert errors == []  # no script error on any page


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"dashboard-{name}.png"), full_page=True)


def dashboard(worker: Any) -> str:
    base = f"http://127.0.0.1:{worker.env['PERF_ENGINE_WEB_PORT']}/dashboard"

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"{base}/api/cohorts", timeout=5) as reply:
                return bool(reply.status == 200)
        except OSError:
            return False

    wait_until(ready, 90, "the worker's dashboard")
    return base


def number(text: str) -> int:
    return int(text.replace(",", "")) if text.replace(",", "").isdigit() else -1


def test_the_overview_counts_live_and_shows_hostile_ids_as_text(
    stream_settings: Settings, workers: Callable[..., Any], page: Page
) -> None:
    base = dashboard(workers(stream_settings))
    records = attempt_records(generate_attempts(3000, users=60, seed=71))
    feeding = produce_slowly(stream_settings, records, chunks=30, pause=0.4)
    page.goto(base)
    total = page.locator("#attempts-total")
    expect(total).to_have_text(re.compile(r"^[0-9,]+$"), timeout=30_000)
    first = number(total.inner_text())
    page.wait_for_function(
        "n => Number(document.getElementById('attempts-total').textContent.replace(/,/g, '')) > n",
        arg=first,
        timeout=30_000,
    )
    expect(page.locator("#live")).to_have_text("live")
    feeding.join(timeout=60)  # then the hostile one alone: the stream samples busy seconds
    hostile = generate_attempts(1, users=1, seed=72)[0] | {"attempt_id": HOSTILE}
    produce(
        stream_settings.kafka_bootstrap,
        stream_settings.attempts_topic,
        [(str(hostile["user_id"]).encode(), json.dumps(hostile).encode())],
    )
    shown = page.locator("#recent .attempt", has_text="window.__pwned")
    expect(shown.first).to_have_text(f"attempt {HOSTILE}", timeout=60_000)
    assert page.evaluate("window.__pwned") is None  # neither the script nor the onerror ran
    assert page.locator("#recent script, #recent img").count() == 0
    shot(page, "overview")


def pct(x: float) -> str:
    """What the page's ``fmt.pct`` shows: JavaScript's ``(100 * x).toFixed(1)``, which
    rounds the double's exact value, halves up."""
    return f"{Decimal(100 * x).quantize(Decimal('0.1'), ROUND_HALF_UP)}%"


def test_a_cohort_lists_its_learners_and_a_learner_card_follows_new_attempts(
    stream_settings: Settings, workers: Callable[..., Any], browser: Browser, page: Page
) -> None:
    base = dashboard(workers(stream_settings))
    rows = generate_attempts(800, users=24, seed=73)
    produce(stream_settings.kafka_bootstrap, stream_settings.attempts_topic, attempt_records(rows))
    expected = oracle(rows)
    wait_for_oracle(stream_settings, expected)
    (sub, mode), _ = Counter((s.sub_topic_id, s.learning_mode) for s in expected).most_common(1)[0]
    members = {s.user_id for s in expected if (s.sub_topic_id, s.learning_mode) == (sub, mode)}

    page.goto(f"{base}/cohort?sub_topic_id={sub}&learning_mode={mode}")
    expect(page.locator("#cohort tbody tr")).to_have_count(len(members), timeout=30_000)
    listed = {int(u) for u in page.locator("#cohort tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.user)"
    )}  # fmt: skip
    assert listed == members
    page.locator("#cohort th", has_text="mastery").click()  # sorted by mastery, ascending
    expect(page.locator("#cohort th.sorted")).to_have_text("mastery")
    shot(page, "cohort")

    user = min(members)
    scope = next(s for s in expected if s.user_id == user and s.sub_topic_id == sub)
    page.goto(f"{base}/learner?user_id={user}")
    card = page.locator(f'[data-scope="{sub}:{mode}"]')
    expect(card.locator(".version")).to_have_text(str(expected[scope].version), timeout=30_000)
    # The predicted success of the next question per difficulty, and which parameters.
    learning = expected[scope].learning
    assert learning is not None
    shown = " · ".join(f"{d.value} {pct(learning.predicted_correct[d])}" for d in DIFFICULTIES)
    expect(card.locator(".predicted")).to_have_text(shown)
    expect(card.locator(".params-version")).to_have_text("defaults")
    expect(page.locator("#live")).to_have_text("live", timeout=30_000)
    later = max(r["occurred_at"] for r in rows) + 60_000
    newer = {**rows[0], "user_id": user, "sub_topic_id": sub, "learning_mode": mode,
             "attempt_id": "browser-new-attempt", "occurred_at": later}  # fmt: skip
    produce(
        stream_settings.kafka_bootstrap,
        stream_settings.attempts_topic,
        [(str(user).encode(), json.dumps(newer).encode())],
    )
    expect(card.locator(".version")).to_have_text(str(expected[scope].version + 1), timeout=60_000)
    expect(card.locator("canvas").first).to_be_visible()
    shot(page, "learner")

    # Erased while their page and the overview are open: the page says so at once and
    # keeps none of their stats, without a reload (a reload would answer 404); the
    # overview drops their rows from the newest updates.
    overview = browser.new_page(viewport={"width": 1280, "height": 900})
    overview.goto(base)
    their_rows = overview.locator(f'#recent li[data-user="{user}"]')
    expect(their_rows.first).to_contain_text("browser-new-attempt", timeout=30_000)
    expect(overview.locator("#live")).to_have_text("live", timeout=30_000)
    erase_learner(user, "browser test", settings=stream_settings)
    expect(page.locator("#erased")).to_contain_text("was erased", timeout=30_000)
    expect(page.locator("#scopes .card")).to_have_count(0)
    assert page.locator("body").inner_text().count("browser-new-attempt") == 0
    shot(page, "learner-erased")
    expect(their_rows).to_have_count(0, timeout=30_000)
    assert overview.locator("#recent li").count() > 0  # the others' rows stay
    overview.close()


@pytest.mark.timeout(300)
def test_with_tokens_the_dashboard_signs_in_and_its_stream_needs_the_cookie(
    stream_settings: Settings, workers: Callable[..., Any], page: Page, tmp_path: Path
) -> None:
    path = tmp_path / "tokens"
    token = add_token(path, "teacher", ["dashboard"])
    reader = add_token(path, "app", ["stats:read"])
    worker = workers(replace(stream_settings, web_tokens_file=path))
    base = f"http://127.0.0.1:{worker.env['PERF_ENGINE_WEB_PORT']}/dashboard"

    def up() -> bool:  # the dashboard's index and feed are ready (as dashboard() waits)
        ready = urllib.request.Request(
            f"{base}/api/cohorts", headers={"Authorization": f"Bearer {token}"}
        )
        try:
            with urllib.request.urlopen(ready, timeout=5) as reply:
                return bool(reply.status == 200)
        except OSError:
            return False

    wait_until(up, 90, "the worker's dashboard")
    produce(
        stream_settings.kafka_bootstrap,
        stream_settings.attempts_topic,
        attempt_records(generate_attempts(300, users=6, seed=74)),
    )
    page.goto(f"{base}/cohort?sub_topic_id=101&learning_mode=standard")
    expect(page).to_have_url(re.compile(r"/dashboard/sign-in\?next="))  # no session yet
    for wrong, says in ((reader, "may not open the dashboard"), (token + " ", "not valid")):
        page.fill("#token", wrong)
        page.click("button[type=submit]")
        expect(page.locator(".problem")).to_contain_text(says)
    page.fill("#token", token)
    page.click("button[type=submit]")
    expect(page).to_have_url(re.compile(r"/dashboard/cohort\?sub_topic_id=101"))
    cookie = next(c for c in page.context.cookies() if c["name"] == "pe_session")
    assert (cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (
        True,
        "Strict",
        "/dashboard",
    )
    page.goto(base)
    expect(page.locator("#attempts-total")).to_have_text(re.compile(r"^[0-9,]+$"), timeout=30_000)
    expect(page.locator("#live")).to_have_text("live", timeout=30_000)  # the stream, by cookie
    assert page.evaluate("document.cookie") == ""  # HttpOnly: scripts cannot read it
    request = urllib.request.Request(f"{base}/api/stream")
    with pytest.raises(urllib.error.HTTPError) as refused:  # the stream without the cookie
        urllib.request.urlopen(request, timeout=10)
    refused.value.close()
    assert refused.value.code == 401
    revoke_token(path, "teacher")  # its sessions end with it
    page.goto(base)
    expect(page).to_have_url(re.compile(r"/dashboard/sign-in"))
    shot(page, "sign-in")
