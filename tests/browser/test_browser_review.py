"""In a real Chromium (#25): three audit predictions of a version trained for real are reviewed in
the queue with the keyboard alone (Enter, a number key, z to undo), the next image already fetched;
the version's page then shows live accuracy as k/n with an interval; and one correction is added
to training and appears in its class with its provenance."""
import re

import django_rq
from django.urls import reverse
from rq import SimpleWorker

from tests.browser.test_browser_csp import RECORD_VIOLATIONS
from tests.browser.test_browser_rough_edges import _axe_violations, _no_sideways_scroll
from tests.browser_support import BROWSER_MARKS, TIMEOUT_MS, expect, sign_in
from tests.factories import project_with_images
from tests.library.test_reviews import make_prediction
from transferapp.engine.metrics import wilson_interval
from transferapp.models import Prediction, TrainingRun

pytestmark = BROWSER_MARKS


def test_three_reviews_by_keyboard_live_accuracy_and_a_correction_added(live_server, queue, user, alice, screenshots,
                                                                       watched_page):
    project = project_with_images(user, classes=("red", "blue"), per_class=6)
    alice.post(reverse("training_start", args=[project.pk]), {"base_model": "efficientnet_lite0", "preset": "fast"})
    django_rq.get_worker("default", worker_class=SimpleWorker).work(burst=True)
    run = TrainingRun.objects.get(project=project)
    assert run.status == "succeeded", run.error
    # The log as the predict page and the API write it: three in the audit sample, one "don't know".
    right = make_prediction(project, version=run.version, top_label="red", color="red", audit=True, seed=41, minutes_ago=3)
    wrong = make_prediction(project, version=run.version, top_label="red", color="blue", audit=True, seed=42,
                            minutes_ago=2, file_name="shift-2.jpg")
    third = make_prediction(project, version=run.version, top_label="blue", color="blue", audit=True, seed=43, minutes_ago=1)
    make_prediction(project, version=run.version, top_label="red", probability=0.4, abstained=True, color="green", seed=44)

    page = watched_page
    page.add_init_script(RECORD_VIOLATIONS)  # the queue's script runs under the app's CSP, unblocked
    sign_in(page, live_server.url, "alice", "a-long-password-1")
    page.goto(f"{live_server.url}{project.get_absolute_url()}")
    page.get_by_role("link", name="Review predictions").click()
    page.wait_for_url(re.compile(r"/review/$"))
    progress, stream, image = page.locator("#review-progress"), page.locator("#review-stream"), page.locator("#review-image")
    expect(progress).to_contain_text("0 reviewed · 4 left (3 in the audit sample, 1 to learn from)")
    expect(stream).to_have_text("Audit sample: counts towards live accuracy")
    expect(image).to_have_attribute("data-pk", str(right.pk))
    next_image = reverse("prediction_image", args=[wrong.pk])  # the next one, fetched ahead
    page.wait_for_function(f"() => performance.getEntriesByType('resource').some((e) => e.name.endsWith('{next_image}'))")
    screenshots(page, "review-queue")

    page.keyboard.press("Enter")  # the model was right
    expect(progress).to_contain_text("1 reviewed")
    expect(image).to_have_attribute("data-pk", str(wrong.pk))
    page.keyboard.press("2")  # red: a slip of the finger (classes: 1 blue, 2 red)...
    expect(progress).to_contain_text("2 reviewed")
    page.keyboard.press("z")  # ...undone: back to the same image
    expect(progress).to_contain_text("1 reviewed")
    expect(image).to_have_attribute("data-pk", str(wrong.pk))
    page.keyboard.press("ArrowRight")  # a look at the next one, and back
    expect(image).to_have_attribute("data-pk", str(third.pk))
    page.keyboard.press("ArrowLeft")
    expect(image).to_have_attribute("data-pk", str(wrong.pk))
    page.keyboard.press("1")  # blue: corrected
    expect(progress).to_contain_text("2 reviewed")
    page.keyboard.press("Enter")
    expect(progress).to_contain_text("3 reviewed · 1 left (0 in the audit sample, 1 to learn from)")
    expect(stream).to_have_text("To learn from: does not count towards live accuracy")
    expect(page.locator("#review-answer")).to_contain_text("don't know")
    reviews = {p.pk: (p.review_label, p.review_source) for p in Prediction.objects.filter(audit=True)}
    assert reviews == {right.pk: ("red", "queue"), wrong.pk: ("blue", "queue"), third.pk: ("blue", "queue")}
    expect(page.locator(f"#reviewed-{wrong.pk}")).to_contain_text("model said red")  # the list refreshed itself
    assert page.evaluate("window.__cspViolations") == []
    screenshots(page, "reviewed")

    page.goto(f"{live_server.url}{run.get_absolute_url()}")
    low, high = wilson_interval(2, 3)
    live = page.locator("#live-accuracy")
    expect(live).to_contain_text("2/3")
    expect(live).to_contain_text(f"Live accuracy: 2/3 right on real work ({round(low * 100)}–{round(high * 100)}%, 95% interval)")
    expect(page.locator("#reviews-from-queue")).to_have_text("3 from the review queue")
    screenshots(page, "live-accuracy")

    page.goto(f"{live_server.url}{reverse('review_queue', args=[project.pk])}")
    card = page.locator(f"#reviewed-{wrong.pk}")
    card.get_by_role("button", name="Add to class blue").click()
    expect(page.locator(f"#reviewed-{wrong.pk}")).to_contain_text("In training")
    expect(page.locator("#reviewed .messages")).to_contain_text("Added to class “blue”")
    wrong.refresh_from_db()
    added = wrong.added_image
    assert added.label.name == "blue" and added.provenance.startswith("from production, reviewed by alice on ")
    page.locator(f"#reviewed-{wrong.pk}").get_by_role("link", name="In training").click()
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
