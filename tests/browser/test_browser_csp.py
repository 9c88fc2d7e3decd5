"""The Content-Security-Policy breaks nothing: a real Chromium walks every main page and the
upload and predict flows, and the browser reports no policy violation (issue 13, finding 6)."""
import re

import django_rq
from rq import SimpleWorker

from tests.browser_support import BROWSER_MARKS, TIMEOUT_MS, assert_assets_loaded, drop_files, expect, pngs
from tests.conftest import image_bytes
from tests.factories import project_with_images
from transferapp.models import ImportJob
from transferapp.training import runs as training_runs

pytestmark = BROWSER_MARKS

# Chromium fires this event for every blocked script, style, image, frame or form target.
RECORD_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(`${e.violatedDirective} blocked ${e.blockedURI || "inline"} at ${e.sourceFile}:${e.lineNumber}`);
});
"""


def _trained_project(owner):
    project = project_with_images(owner, per_class=5)
    run = training_runs.training_start(project=project, base_model="efficientnet_lite0", preset="fast", config={})
    django_rq.get_worker("default", worker_class=SimpleWorker).work(burst=True)
    run.refresh_from_db()
    assert run.status == "succeeded", run.error
    return project, run


def test_no_page_or_flow_violates_the_content_security_policy(live_server, queue, user, browser, watched_page):
    project, run = _trained_project(user)
    label = project.labels.get(name="red")
    job = ImportJob.objects.create(project=project, source_name="photos.zip", status="done")
    job.report_rows.create(name="x.txt", label="red", ok=False, reason="not an image")
    page, base = watched_page, live_server.url
    page.context.add_init_script(RECORD_VIOLATIONS)
    console = []
    page.on("console", lambda msg: "Content Security Policy" in msg.text and console.append(msg.text))

    def visit(path, ours=True):
        page.goto(base + path)
        if ours:  # the admin's pages load Django's own scripts, not ours
            assert_assets_loaded(page)
        return page.evaluate("window.__cspViolations")

    violations = visit("/accounts/signup/") + visit("/admin/login/", ours=False) + visit("/accounts/login/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", "a-long-password-1")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r"/projects/$"))
    for path in ("/projects/", project.get_absolute_url(), run.get_absolute_url(), job.get_absolute_url()):
        violations += visit(path)

    violations += visit(label.get_absolute_url())
    drop_files(page, "form[data-dropzone]", pngs("red", 2, first_seed=20))  # blob: previews, JS-styled bars
    expect(page.locator(".upload-item.done")).to_have_count(2, timeout=TIMEOUT_MS)
    expect(page.locator("#image-grid .thumb")).to_have_count(7, timeout=TIMEOUT_MS)  # the grid refreshed; let its thumbnails load
    page.wait_for_function("() => [...document.querySelectorAll('#image-grid img')].every((i) => i.complete)")
    violations += page.evaluate("window.__cspViolations")

    violations += visit(f"/projects/{project.pk}/predict/")
    drop_files(page, "form[data-dropzone]", [("new.png", "image/png", image_bytes("blue", shape_seed=41))])
    expect(page.locator("#predictions .prediction")).to_have_count(1, timeout=TIMEOUT_MS)  # data: thumbnail, styled bars
    expect(page.locator("#predictions .prob-bar").first).to_be_visible(timeout=TIMEOUT_MS)
    violations += page.evaluate("window.__cspViolations")

    assert not violations and not console, violations + console
    # Thumbnails still loading when the test moves on are aborted by the navigation: not a fault.
    problems = [p for p in page.problems if "net::ERR_ABORTED" not in p]
    assert not problems, problems
