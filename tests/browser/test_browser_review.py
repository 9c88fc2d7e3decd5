"""In a real Chromium (#25), end to end: with the audit share set to 100% on the project page,
images of a version trained for real are predicted on the predict page (dropped and chosen) and
through the REST API with a key made on the page; the monitoring page counts them by source, with
its charts and the drift sentence, and the monitoring API says the same; one API prediction gets
feedback through the API, three are reviewed in the queue with the keyboard alone (Enter, a number
key, z to undo), the next image already fetched; the version's page and the monitoring page then
show live accuracy as k/n with an interval; and one correction is added to training and appears in
its class with its provenance."""
import json
import re
import urllib.request

import django_rq
from django.urls import reverse
from rq import SimpleWorker

from tests.browser.test_browser_csp import RECORD_VIOLATIONS
from tests.browser.test_browser_rough_edges import _axe_violations, _no_sideways_scroll
from tests.browser_support import BROWSER_MARKS, TIMEOUT_MS, drop_files, expect, sign_in
from tests.conftest import image_bytes
from tests.factories import project_with_images
from tests.library.test_reviews import make_prediction
from transferapp.engine.metrics import wilson_interval
from transferapp.models import Prediction, TrainingRun
from transferapp.serving import prediction_log

pytestmark = BROWSER_MARKS

KEYS = {"blue": "1", "red": "2"}  # the queue numbers the classes in name order


def _api(base, path, key, data=None, content_type="application/json"):
    """A real HTTP call to the live server with the key, as a script would make it (no browser cookies)."""
    request = urllib.request.Request(f"{base}{path}", data=data, method="POST" if data is not None else "GET",
                                     headers={"Authorization": f"Bearer {key}", "Content-Type": content_type})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def test_page_and_api_predictions_are_monitored_reviewed_by_keyboard_and_one_corrected(
        live_server, queue, user, alice, screenshots, watched_page):
    project = project_with_images(user, classes=("red", "blue"), per_class=6)
    alice.post(reverse("training_start", args=[project.pk]), {"base_model": "efficientnet_lite0", "preset": "fast"})
    django_rq.get_worker("default", worker_class=SimpleWorker).work(burst=True)
    run = TrainingRun.objects.get(project=project)
    assert run.status == "succeeded", run.error
    base = live_server.url

    page = watched_page
    page.add_init_script(RECORD_VIOLATIONS)  # the pages' scripts run under the app's CSP, unblocked
    sign_in(page, base, "alice", "a-long-password-1")
    # Every prediction into the audit sample, set on the project page.
    page.goto(f"{base}{project.get_absolute_url()}")
    page.locator("#id_audit_percent").fill("100")
    page.get_by_role("button", name="Save what is kept").click()
    expect(page.locator(".messages")).to_contain_text("Saved: new predictions are logged with these settings.")
    project.refresh_from_db()
    assert project.audit_percent == 100 and project.keep_prediction_images

    # Two on the predict page: one dropped, one chosen with the file picker.
    page.goto(f"{base}{reverse('predict', args=[project.pk])}")
    drop_files(page, "form[data-dropzone]", [("dropped-red.png", "image/png", image_bytes("red", shape_seed=41))])
    expect(page.locator("#predictions .prediction")).to_have_count(1)
    page.locator("form[data-dropzone] input[type=file]").set_input_files(
        [{"name": "chosen-blue.png", "mimeType": "image/png", "buffer": image_bytes("blue", shape_seed=42)}])
    expect(page.locator("#predictions .prediction")).to_have_count(2)
    expect(page.locator("#predictions")).to_contain_text("chosen-blue.png")

    # Two through the REST API, with a key made on the project page.
    page.goto(f"{base}{project.get_absolute_url()}")
    page.locator("#api-keys input[name=name]").fill("line camera")
    page.get_by_role("button", name="Create API key").click()
    key = page.locator("#new-api-key").inner_text().strip()
    answers = [_api(base, f"/api/v1/projects/{project.pk}/predict", key, image_bytes(color, fmt="JPEG", shape_seed=seed),
                    "image/jpeg") for color, seed in (("red", 43), ("blue", 44))]
    assert all(answer["id"] and answer["model"]["version"] == 1 for answer in answers)
    prediction_log.flush()  # the API keeps its images in the background
    made = list(Prediction.objects.filter(project=project).order_by("created_at", "pk"))
    assert [p.source for p in made] == ["page", "page", "api", "api"] and all(p.audit for p in made)
    assert [p.pk for p in made[2:]] == [answer["id"] for answer in answers]

    # Feedback on the last API prediction through the API: it counts as an API review.
    by_api = made[3]
    reviewed = _api(base, f"/api/v1/predictions/{by_api.pk}/feedback", key,
                    json.dumps({"label": by_api.top_label}).encode())
    assert reviewed["review"]["label"] == by_api.top_label and reviewed["review"]["source"] == "api"

    # The monitoring page counts them, by source, with its charts and the drift sentence.
    figures = _api(base, f"/api/v1/projects/{project.pk}/monitoring?days=30", key)
    assert figures["predictions"] == 4 and figures["sources"] == {"api": 2, "page": 2}
    assert figures["reviews"] == {"queue": 0, "api": 1}
    page.goto(f"{base}{project.get_absolute_url()}")
    page.get_by_role("link", name="Monitoring", exact=True).click()
    page.wait_for_url(re.compile(r"/monitoring/$"))
    volume = page.locator("#volume")
    expect(volume.locator("h2")).to_have_text("4 predictions in the last 30 days")
    expect(volume.locator("rect.src-page title")).to_contain_text("2 from Predict page")
    expect(volume.locator("rect.src-api title")).to_contain_text("2 from API")
    expect(page.locator("#drift-sentence")).to_have_text(figures["drift"]["sentence"])
    assert figures["drift"]["sentence"].strip()
    expect(volume.locator("svg")).to_have_count(2)  # per day by source, and the class mix
    expect(page.locator("#sureness svg").first).to_be_visible()
    expect(page.locator("#review-counts")).to_contain_text("0 reviews from the review queue and 1 from the feedback API")
    screenshots(page, "monitoring-before-reviews")

    # Three reviewed in the queue with the keyboard alone.
    first, second, third = made[:3]
    page.goto(f"{base}{project.get_absolute_url()}")
    page.get_by_role("link", name="Review predictions").click()
    page.wait_for_url(re.compile(r"/review/$"))
    progress, stream, image = page.locator("#review-progress"), page.locator("#review-stream"), page.locator("#review-image")
    expect(progress).to_contain_text("0 reviewed · 3 left (3 in the audit sample, 0 to learn from)")
    expect(stream).to_have_text("Audit sample: counts towards live accuracy")
    expect(image).to_have_attribute("data-pk", str(first.pk))
    next_image = reverse("prediction_image", args=[second.pk])  # the next one, fetched ahead
    page.wait_for_function(f"() => performance.getEntriesByType('resource').some((e) => e.name.endsWith('{next_image}'))")
    screenshots(page, "review-queue")

    page.keyboard.press("Enter")  # the model was right
    expect(progress).to_contain_text("1 reviewed")
    expect(image).to_have_attribute("data-pk", str(second.pk))
    page.keyboard.press(KEYS[second.top_label])  # the model's own class: a slip of the finger...
    expect(progress).to_contain_text("2 reviewed")
    page.keyboard.press("z")  # ...undone: back to the same image
    expect(progress).to_contain_text("1 reviewed")
    expect(image).to_have_attribute("data-pk", str(second.pk))
    page.keyboard.press("ArrowRight")  # a look at the next one, and back
    expect(image).to_have_attribute("data-pk", str(third.pk))
    page.keyboard.press("ArrowLeft")
    expect(image).to_have_attribute("data-pk", str(second.pk))
    other = "blue" if second.top_label == "red" else "red"
    page.keyboard.press(KEYS[other])  # the other class: the model was wrong
    expect(progress).to_contain_text("2 reviewed")
    page.keyboard.press("Enter")
    expect(progress).to_contain_text("3 reviewed · 0 left (0 in the audit sample, 0 to learn from)")
    reviews = {p.pk: (p.review_label, p.review_source) for p in Prediction.objects.filter(project=project)}
    assert reviews == {first.pk: (first.top_label, "queue"), second.pk: (other, "queue"),
                       third.pk: (third.top_label, "queue"), by_api.pk: (by_api.top_label, "api")}
    expect(page.locator(f"#reviewed-{second.pk}")).to_contain_text(f"model said {second.top_label}")  # the list refreshed itself
    assert page.evaluate("window.__cspViolations") == []
    screenshots(page, "reviewed")

    # Live accuracy: 3 of the 4 audit predictions right (2 in the queue, 1 by the API).
    low, high = wilson_interval(3, 4)
    page.goto(f"{base}{run.get_absolute_url()}")
    live = page.locator("#live-accuracy")
    expect(live).to_contain_text("3/4")
    expect(live).to_contain_text(f"Live accuracy: 3/4 right on real work ({round(low * 100)}–{round(high * 100)}%, 95% interval)")
    expect(page.locator("#reviews-from-queue")).to_have_text("3 from the review queue")
    expect(page.locator("#reviews-from-api")).to_have_text("1 from the feedback API")
    screenshots(page, "live-accuracy")

    page.goto(f"{base}{reverse('project_monitoring', args=[project.pk])}")
    live = page.locator("#live-accuracy")
    expect(live.locator("svg")).to_be_visible()
    expect(live).to_contain_text("3/4 right")
    expect(live).to_contain_text(f"v1 live: 95% interval {low * 100:.0f}-{high * 100:.0f}%")
    expect(page.locator("#review-counts")).to_contain_text("3 reviews from the review queue and 1 from the feedback API")
    figures = _api(base, f"/api/v1/projects/{project.pk}/monitoring?days=30", key)
    assert figures["predictions"] == 4 and figures["reviews"] == {"queue": 3, "api": 1}
    assert [(row["version"], row["k"], row["n"]) for row in figures["live_accuracy"]] == [(1, 3, 4)]
    assert figures["live_accuracy"][0]["interval"] == list(wilson_interval(3, 4))
    screenshots(page, "monitoring-live-accuracy")

    # One correction added to training, shown in its class with its provenance.
    page.goto(f"{base}{reverse('review_queue', args=[project.pk])}")
    card = page.locator(f"#reviewed-{second.pk}")
    card.get_by_role("button", name=f"Add to class {other}").click()
    expect(page.locator(f"#reviewed-{second.pk}")).to_contain_text("In training")
    expect(page.locator("#reviewed .messages")).to_contain_text(f"Added to class “{other}”")
    second.refresh_from_db()
    added = second.added_image
    assert added.label.name == other and added.provenance.startswith("from production, reviewed by alice on ")
    page.locator(f"#reviewed-{second.pk}").get_by_role("link", name="In training").click()
    thumb = page.locator(f"#image-{added.pk}")
    expect(thumb.locator(".provenance")).to_have_text(added.provenance)
    screenshots(page, "class-page-provenance")
    assert not page.problems, page.problems


def test_the_queue_passes_axe_skips_with_x_fits_a_phone_and_takes_clicks(live_server, user, browser, screenshots):
    """No training needed: the queue shows whatever the log holds."""
    project = project_with_images(user, classes=("red", "blue"), per_class=1)
    first = make_prediction(project, audit=True, seed=61, minutes_ago=2)
    second = make_prediction(project, audit=True, seed=62, minutes_ago=1)
    # bypass_csp: axe is a script the test injects, which the app's policy rightly blocks.
    context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    problems = []
    page.on("pageerror", lambda exc: problems.append(f"JS error: {exc}"))
    page.on("response", lambda r: r.status >= 500 and problems.append(f"HTTP {r.status} {r.url}"))
    try:
        sign_in(page, live_server.url, user.username, "a-long-password-1")
        page.goto(f"{live_server.url}{reverse('review_queue', args=[project.pk])}")
        image = page.locator("#review-image")
        expect(image).to_have_attribute("data-pk", str(first.pk))
        assert not _axe_violations(page), _axe_violations(page)
        page.keyboard.press("x")  # skipped: nothing recorded, the next one shown
        expect(image).to_have_attribute("data-pk", str(second.pk))
        expect(page.locator("#review-progress")).to_contain_text("0 reviewed · 2 left")
        assert not Prediction.objects.exclude(review_label="").exists()
        page.set_viewport_size({"width": 390, "height": 844})
        page.reload()
        expect(image).to_have_attribute("data-pk", str(first.pk))
        assert _no_sideways_scroll(page) <= 0, "the review queue scrolls sideways on a phone"
        screenshots(page, "review-queue-phone")
        page.locator('#review-form button[value="blue"]').click()  # by mouse (or finger)
        expect(page.locator("#review-progress")).to_contain_text("1 reviewed")
        page.keyboard.press("Enter")  # then Enter: the model's answer for the next one, not "blue" again
        expect(page.locator("#review-progress")).to_contain_text("2 reviewed")
        assert dict(Prediction.objects.values_list("pk", "review_label")) == {first.pk: "blue", second.pk: "red"}
        assert not problems, problems
    finally:
        context.close()
