"""Shared set-up for the real-browser tests: Debian's Chromium driven by Playwright, pages that
record script and server errors, screenshots, and a real drag-and-drop.

Loaded as a pytest plugin from tests/conftest.py so every browser test file shares it.
"""
import base64
import importlib.util
import os
import re
import threading
from pathlib import Path

import pytest
from django.db import connections

from tests.conftest import image_bytes

# CHROMIUM overrides the path (CI checks that a wrong one fails the run under REQUIRE_BROWSER).
CHROMIUM = Path(os.environ.get("CHROMIUM") or "/usr/bin/chromium")
# CI sets REQUIRE_BROWSER=1: a missing browser then fails every browser test instead of skipping it,
# so a broken Chromium install can never turn the only end-to-end tests into a silent pass.
REQUIRE_BROWSER = os.environ.get("REQUIRE_BROWSER", "").lower() in ("1", "true", "yes")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PER_CLASS = 6
PASSWORD = "a-long-password-for-browser-1"
TIMEOUT_MS = 20_000  # per browser wait; the slow part (training) runs outside the browser
RESULTS_TIMEOUT_MS = 30_000  # after the worker: the next 2 s poll, HX-Refresh, full reload



def browser_missing() -> str:
    """Why the real-browser tests cannot run here, or "" when they can."""
    if not CHROMIUM.exists():
        return f"Chromium is not at {CHROMIUM} (install it with: apt-get install chromium)"
    if importlib.util.find_spec("playwright") is None:
        return "the playwright Python package is not installed (pip install -e '.[test]')"
    return ""


MISSING = browser_missing()

# Every browser test module sets `pytestmark = BROWSER_MARKS`. Under REQUIRE_BROWSER nothing is
# skipped: the `browser` fixture fails each test with the reason instead.
BROWSER_MARKS = [
    pytest.mark.browser,
    pytest.mark.skipif(bool(MISSING) and not REQUIRE_BROWSER, reason=f"real-browser test skipped: {MISSING}"),
]


def sync_playwright():
    from playwright.sync_api import sync_playwright as start

    return start()


def expect(*args, **kwargs):
    """Playwright's expect, imported late so that test modules load (and skip) without playwright,
    and waiting as long as the pages' own default: its 5 s is too short for a first prediction
    (which loads the model) on a busy shared machine."""
    from playwright.sync_api import expect as playwright_expect

    playwright_expect.set_options(timeout=TIMEOUT_MS)
    return playwright_expect(*args, **kwargs)


@pytest.fixture
def screenshots(tmp_path, request):
    """shot(page, "name") saves a full-page screenshot as NN-name.png in a folder of this test's own
    ($SCREENSHOT_DIR/<test name>/), so two tests never overwrite each other's pictures."""
    root = Path(os.environ.get("SCREENSHOT_DIR") or tmp_path / "screenshots")
    folder = root / re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.png"):  # from an earlier run of the same test
        stale.unlink()
    counter = iter(range(1, 100))

    def shot(page, name):
        path = folder / f"{next(counter):02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    shot.folder = folder
    return shot


@pytest.fixture
def browser(monkeypatch):
    # Playwright's sync API keeps an asyncio loop in this thread, which Django's async-safety
    # check mistakes for async code; the ORM calls here (fixtures, the worker) are plain sync.
    if MISSING:
        pytest.fail(f"REQUIRE_BROWSER is set but {MISSING}.", pytrace=False)
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            # While Playwright runs, asgiref's Local behind django.db.connections sees its event
            # loop and hands the test its own connection objects, which pytest-django's teardown
            # never closes; left open, Postgres refuses to drop the test database at the end.
            connections.close_all()
            browser.close()


@pytest.fixture
def watched_page(browser):
    """A page in a fresh context that records script errors and server errors (5xx, failed static)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.problems = []
    page.on("pageerror", lambda exc: page.problems.append(f"JS error: {exc}"))
    page.on(
        "response",
        lambda r: (r.status >= 500 or ("/static/" in r.url and r.status >= 400))
        and page.problems.append(f"HTTP {r.status} {r.request.method} {r.url}"),
    )
    # ERR_ABORTED is the browser cancelling its own request (a lazy image scrolled away while a
    # full-page screenshot resizes the page, an element swapped out): not a failure of the app.
    page.on("requestfailed", lambda r: "ERR_ABORTED" not in (r.failure or "")
            and page.problems.append(f"request failed: {r.method} {r.url} {r.failure}"))
    yield page
    context.close()


def drop_files(page, selector, files):
    """A real drag-and-drop: a DataTransfer holding File objects, then dragenter/dragover/drop.

    `files` is a list of (name, mime type, bytes).
    """
    payload = [{"name": n, "type": t, "b64": base64.b64encode(data).decode()} for n, t, data in files]
    data_transfer = page.evaluate_handle(
        """(files) => {
            const dt = new DataTransfer();
            for (const f of files) {
                const bytes = Uint8Array.from(atob(f.b64), (c) => c.charCodeAt(0));
                dt.items.add(new File([bytes], f.name, { type: f.type }));
            }
            return dt;
        }""",
        payload,
    )
    for event in ("dragenter", "dragover", "drop"):
        page.dispatch_event(selector, event, {"dataTransfer": data_transfer})
    data_transfer.dispose()


def pngs(color, count, first_seed=0):
    return [
        (f"{color}-{i}.png", "image/png", image_bytes(color, size=(64, 64), shape_seed=i))
        for i in range(first_seed, first_seed + count)
    ]


def assert_assets_loaded(page):
    assert page.evaluate("typeof htmx") == "object", "htmx did not load"
    assert page.evaluate("document.documentElement.classList.contains('js')"), "app.js did not run"
    # app.css: the top bar is a flex row only when the stylesheet applied.
    assert page.evaluate("getComputedStyle(document.querySelector('.topbar')).display") == "flex", "app.css did not load"


def sign_in(page, base, username, password):
    page.goto(f"{base}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r"/projects/$"))


def accept_dialogs(page):
    """Answer "OK" to data-confirm prompts (Playwright dismisses them by default)."""
    page.on("dialog", lambda dialog: dialog.accept())


class BackgroundWorker:
    """A real rq worker in a thread, so the browser keeps driving pages while a job really runs.

    rq's SimpleWorker installs signal handlers and a SIGALRM job timeout, both of which only work
    in the main thread (Playwright's): this one skips the handlers and times jobs with a timer.
    """

    def __init__(self, *queues):
        import django_rq
        from rq import SimpleWorker
        from rq.timeouts import TimerDeathPenalty

        class ThreadWorker(SimpleWorker):
            death_penalty_class = TimerDeathPenalty

            def _install_signal_handlers(self):
                pass

        self.worker = django_rq.get_worker(*(queues or ("default",)), worker_class=ThreadWorker)
        self.errors = []
        self.thread = threading.Thread(target=self._work, daemon=True)

    def _work(self):
        from django.db import connection

        try:
            self.worker.work(burst=True)
        except Exception as exc:  # reported by join(): a thread's exception would be lost
            self.errors.append(exc)
        finally:
            connection.close()  # this thread's own connection (Postgres must drop the test database)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc_info):
        self.join()

    def join(self, timeout=300):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the background worker did not finish its jobs in time"
        assert not self.errors, self.errors
