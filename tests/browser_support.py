"""Shared set-up for the real-browser tests: Debian's Chromium driven by Playwright, pages that
record script and server errors, screenshots, and a real drag-and-drop.

Loaded as a pytest plugin from tests/conftest.py so every browser test file shares it.
"""
import base64
import os
from pathlib import Path

import pytest
from django.db import connections

from tests.conftest import image_bytes

CHROMIUM = Path("/usr/bin/chromium")
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

# Every browser test module sets `pytestmark = BROWSER_MARKS`.
BROWSER_MARKS = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"real-browser test needs Chromium at {CHROMIUM} (apt-get install chromium)"),
]


def sync_playwright():
    from playwright.sync_api import sync_playwright as start

    return start()


@pytest.fixture
def screenshots(tmp_path, request):
    """shot("name") saves a full-page screenshot of a page as NN-name.png."""
    folder = Path(os.environ.get("SCREENSHOT_DIR") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
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
    page.on("requestfailed", lambda r: page.problems.append(f"request failed: {r.method} {r.url} {r.failure}"))
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
