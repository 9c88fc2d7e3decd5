"""In a real Chromium: the results page's "Training report" link opens the report, which draws
every image and chart from inside itself under a policy that allows no fetch at all."""
import re
from pathlib import Path

import django_rq
from rq import SimpleWorker

from tests.browser_support import BROWSER_MARKS, expect, sign_in
from tests.factories import project_with_images
from transferapp.models import TrainingRun

pytestmark = BROWSER_MARKS
AXE = Path(__file__).parent.parent / "vendor" / "axe.min.js"


def test_the_report_link_opens_a_self_contained_report(live_server, queue, user, alice, browser, watched_page, screenshots):
    project = project_with_images(user, classes=("red", "blue", "green"), per_class=8)
    alice.post(f"/projects/{project.pk}/train/", {"base_model": "efficientnet_lite0", "preset": "fast"})
    django_rq.get_worker("default", worker_class=SimpleWorker).work(burst=True)
    run = TrainingRun.objects.get(project=project)
    assert run.status == "succeeded", run.error

    page = watched_page
    blocked = []
    page.on("console", lambda msg: blocked.append(msg.text) if "Content Security Policy" in msg.text else None)
    fetched = []
    page.on("request", lambda request: fetched.append(request.url) if "/report/" in page.url and not request.url.startswith("data:") else None)
    sign_in(page, live_server.url, "alice", "a-long-password-1")
    page.goto(f"{live_server.url}{run.get_absolute_url()}")
    page.locator("#report-link").click()
    page.wait_for_url(re.compile(r"/runs/\d+/report/$"))
    expect(page.locator("h1")).to_contain_text(f"{project.name}: model v{run.version}")
    expect(page.locator("#report-id")).to_have_text(re.compile(r"^[0-9A-F]{5}(-[0-9A-F]{5}){3}$"))
    expect(page.locator("#class-counts tbody tr")).to_have_count(4)
    # Every thumbnail decoded (a data: URI the policy allows), every chart drawn.
    sizes = page.evaluate("[...document.images].map(i => i.naturalWidth)")
    assert sizes and all(w > 0 for w in sizes), sizes
    assert page.locator("svg").count() >= 3
    screenshots(page, "training-report")
    assert not blocked, blocked
    assert fetched == [], fetched
    assert not page.problems, page.problems

    # axe-core needs its script injected, which the report's own policy forbids: a second tab that bypasses it.
    context = browser.new_context(storage_state=page.context.storage_state(), bypass_csp=True)
    checker = context.new_page()
    checker.goto(page.url)
    checker.add_script_tag(path=str(AXE))
    violations = checker.evaluate("async () => (await axe.run(document, {resultTypes: ['violations']})).violations")
    serious = [(v["id"], [n["target"] for n in v["nodes"]][:3]) for v in violations if v["impact"] in ("serious", "critical")]
    context.close()
    assert not serious, serious
