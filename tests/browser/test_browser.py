"""A real user's path through a real Chromium: sign up, build a dataset by drag and drop,
train with a real burst worker, read the results, predict, and one access-denied check.

Needs Debian's /usr/bin/chromium (Playwright's own browser download is not used). Runs against
pytest-django's `live_server` (transactional database), with SQLite or DATABASE_URL/REDIS_URL.
Screenshots of each step go to $SCREENSHOT_DIR (default: the test's tmp dir).
"""
import re

import django_rq
from rq import SimpleWorker

from tests.browser_support import (
    BROWSER_MARKS,
    PASSWORD,
    PER_CLASS,
    RESULTS_TIMEOUT_MS,
    TIMEOUT_MS,
    assert_assets_loaded,
    drop_files,
    expect,
    pngs,
)
from tests.conftest import image_bytes
from transferapp.models import TrainingRun

pytestmark = BROWSER_MARKS


def test_a_user_builds_trains_and_uses_a_model_in_a_real_browser(
    live_server, queue, other_user, screenshots, browser, watched_page
):
    page = watched_page
    base = live_server.url

    # 1. Sign up.
    page.goto(f"{base}/accounts/signup/")
    assert_assets_loaded(page)
    page.fill("#id_username", "browser-bob")
    page.fill("#id_password1", PASSWORD)
    page.fill("#id_password2", PASSWORD)
    screenshots(page, "signup")
    page.get_by_role("button", name="Sign up").click()
    page.wait_for_url(re.compile(r"/projects/$"))
    expect(page.locator(".messages")).to_contain_text("Welcome")
    expect(page.locator(".topbar")).to_contain_text("browser-bob")
    screenshots(page, "signed-up")

    # 2. A project with two classes.
    page.fill("#id_name", "Colours")
    page.get_by_role("button", name="Create project").click()
    page.wait_for_url(re.compile(r"/projects/\d+/$"))
    project_url = page.url
    expect(page.locator("h1")).to_have_text("Colours")
    class_urls = {}
    for color in ("red", "blue"):
        page.goto(project_url)
        page.get_by_placeholder("New class name").fill(color)
        page.get_by_role("button", name="Add class").click()
        page.wait_for_url(re.compile(r"/projects/\d+/classes/\d+/$"))
        expect(page.locator("h1")).to_have_text(color)
        class_urls[color] = page.url
    page.goto(project_url)
    expect(page.locator(".class-list .card")).to_have_count(2)
    expect(page.locator("#train button[type=submit]")).to_be_disabled()  # no images yet
    screenshots(page, "project-with-classes")

    # 3. Six images per class by drag and drop; one unreadable file among the red ones.
    for color in ("red", "blue"):
        page.goto(class_urls[color])
        assert_assets_loaded(page)
        expect(page.locator("#image-grid")).to_contain_text("0 images")
        files = pngs(color, PER_CLASS)
        if color == "red":
            files.insert(3, ("notes.png", "image/png", b"shopping list: not an image at all\n"))
        drop_files(page, "form[data-dropzone]", files)
        items = page.locator("form[data-dropzone] .upload-item")
        expect(items).to_have_count(len(files))
        expect(page.locator(".upload-item.done")).to_have_count(PER_CLASS)
        summary = page.locator(".upload-summary")
        if color == "red":
            bad = page.locator(".upload-item.error")
            expect(bad).to_have_count(1)
            expect(bad.locator(".upload-name")).to_have_text("notes.png")
            expect(bad.locator(".upload-status")).to_contain_text("not an image file")
            assert "HTTP" not in bad.locator(".upload-status").inner_text()
            expect(summary).to_have_text(f"{PER_CLASS} added, 1 refused")
        else:
            expect(summary).to_have_text(f"{PER_CLASS} added")
        # The grid refreshes itself through htmx after the batch.
        expect(page.locator("#image-grid .thumb")).to_have_count(PER_CLASS)
        expect(page.locator("#image-grid")).to_contain_text(f"{PER_CLASS} images in this class")
        page.wait_for_function(
            "() => [...document.querySelectorAll('#image-grid img')].every((i) => i.complete && i.naturalWidth > 0)"
        )
        screenshots(page, f"uploaded-{color}")

    # 4. Train: EfficientNet-Lite0, the fast preset.
    page.goto(project_url)
    expect(page.locator(".class-list")).to_contain_text(f"{PER_CLASS} images")
    expect(page.locator("#train .error-box")).to_have_count(0)
    page.locator("input[name=base_model][value=efficientnet_lite0]").check()
    page.locator("input[name=preset][value=fast]").check()
    screenshots(page, "train-form")
    page.locator("#train").get_by_role("button", name="Train").click()
    page.wait_for_url(re.compile(r"/runs/\d+/$"))
    run_url = page.url
    expect(page.locator("#run-status")).to_have_text("Queued")
    expect(page.locator("#live [role=progressbar]")).to_be_visible()
    screenshots(page, "run-queued")

    # 5. A real worker, in this (main) thread; the page keeps polling on its own meanwhile.
    assert queue.count >= 1
    worker = django_rq.get_worker("default", worker_class=SimpleWorker)
    worker.work(burst=True)
    run = TrainingRun.objects.get(pk=int(run_url.rstrip("/").rsplit("/", 1)[1]))
    assert run.status == "succeeded", run.error
    # The page polls every 2 s; a finished run makes it reload itself (HX-Refresh).
    expect(page.locator("#results")).to_be_visible(timeout=RESULTS_TIMEOUT_MS)
    expect(page.locator("#run-status")).to_have_text("Succeeded")
    # 6 images a class: every image trains, and the headline is an out-of-fold estimate that says so.
    accuracy = page.locator(".stat", has_text="out-of-fold accuracy")
    expect(accuracy).to_be_visible()
    assert re.fullmatch(r"\d{1,3}%", accuracy.locator(".value").inner_text().strip())
    expect(page.locator("#out-of-fold-note")).to_be_visible()
    matrix = page.locator("#confusion-matrix")
    expect(matrix).to_be_visible()
    expect(matrix.locator("tbody tr")).to_have_count(2)
    per_class = page.locator(".card", has=page.get_by_role("heading", name="Per class")).locator("table")
    expect(per_class).to_be_visible()
    expect(per_class.locator("tbody tr")).to_have_count(2)
    expect(per_class).to_contain_text("red")
    expect(per_class).to_contain_text("blue")
    expect(page.locator("#live [role=progressbar]")).to_have_count(0)
    screenshots(page, "run-results")

    # 6. Predict one new image by dropping it.
    page.get_by_role("link", name="Predict with this model").click()
    page.wait_for_url(re.compile(r"/projects/\d+/predict/"))
    assert_assets_loaded(page)
    drop_files(page, "form[data-dropzone]", [("new-blue.png", "image/png", image_bytes("blue", shape_seed=40))])
    card = page.locator("#predictions .prediction")
    expect(card).to_have_count(1)
    expect(card.locator(".top-class")).to_contain_text("blue")
    expect(card).to_contain_text("new-blue.png")
    expect(page.locator(".upload-item.done")).to_have_count(1)
    screenshots(page, "prediction")

    assert not page.problems, page.problems

    # 7. Another signed-in user cannot see this project.
    intruder_context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        intruder = intruder_context.new_page()
        intruder.set_default_timeout(TIMEOUT_MS)
        intruder.goto(f"{base}/accounts/login/")
        intruder.fill("#id_username", other_user.username)
        intruder.fill("#id_password", "a-long-password-2")
        intruder.get_by_role("button", name="Log in").click()
        intruder.wait_for_url(re.compile(r"/projects/$"))
        expect(intruder.locator(".topbar")).to_contain_text(other_user.username)
        expect(intruder.get_by_text("Colours")).to_have_count(0)
        response = intruder.goto(project_url)
        assert response.status == 404
        assert intruder.goto(run_url).status == 404
        screenshots(intruder, "other-user-404")
    finally:
        intruder_context.close()
