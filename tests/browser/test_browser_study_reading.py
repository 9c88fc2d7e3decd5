"""In a real Chromium (#26): a reader reads a study with the number keys alone, goes back with ← and
changes a read; an editor closes the study and adjudicates the disagreement with a key, under the
Content-Security-Policy."""
import re

from tests.browser.test_browser_csp import RECORD_VIOLATIONS
from tests.browser_support import BROWSER_MARKS, expect, sign_in
from tests.factories import member, project_with_images
from transferapp.studies import studies

pytestmark = BROWSER_MARKS

CLASSES = ("crimson", "teal")  # keys 1 and 2, in the project's order


def _press(page, key):
    """A key once the page's keys are bound: each read loads a new page, and a key pressed before
    its deferred script ran is lost (seen in CI under load)."""
    expect(page.locator("[data-keyed]")).to_have_attribute("data-keyed-ready", "1")
    page.keyboard.press(key)


def test_a_reader_reads_by_keyboard_and_an_editor_adjudicates_by_key(live_server, user, watched_page):
    project = project_with_images(user, classes=CLASSES, per_class=2)
    ann, bob = member(project, "ann", "labeller"), member(project, "bob", "labeller")
    member(project, "eve", "editor")  # the adjudicator
    study = studies.study_create(project=project, name="Second look", readers=[ann, bob],
                                 images=list(project.images.values_list("pk", flat=True)), created_by=user)
    ids = list(study.items.values_list("pk", flat=True))
    for item_id in ids:
        studies.read(study=study, reader=bob, item_id=item_id, label="teal")
    base, page = live_server.url, watched_page
    page.add_init_script(RECORD_VIOLATIONS)
    sign_in(page, base, "ann", "ann-long-password-1")
    page.goto(f"{base}/studies/{study.pk}/read/")
    progress = page.locator("#read-progress")
    expect(progress).to_contain_text("0 of 4 read · image 1 of 4")
    expect(page.locator("#read-image")).to_have_js_property("complete", True)
    assert page.locator("#read-image").evaluate("img => img.naturalWidth") == 64
    for n in range(1, 4):
        _press(page, "2")
        expect(progress).to_contain_text(f"{n} of 4 read · image {n + 1} of 4")
    _press(page, "ArrowLeft")
    expect(page.locator("#my-read")).to_contain_text("Your read: teal")
    _press(page, "1")  # changed to crimson, then on to the one left
    expect(progress).to_contain_text("3 of 4 read · image 4 of 4")
    _press(page, "2")
    expect(page.locator("#read-done")).to_contain_text("You have read all 4 images.")
    assert studies.reads_of(study=study, reader=ann) == {**{i: "teal" for i in ids}, ids[2]: "crimson"}
    assert page.evaluate("window.__cspViolations") == []

    page.context.clear_cookies()
    sign_in(page, base, "eve", "eve-long-password-1")
    page.goto(f"{base}/studies/{study.pk}/adjudicate/")
    page.get_by_role("button", name="Close the study").click()
    expect(page.locator("#adjudication-progress")).to_contain_text("0 of 1 disagreements adjudicated")
    expect(page.locator("#reads")).to_contain_text("crimson")
    _press(page, "1")
    expect(page.locator("#adjudication-progress")).to_contain_text("1 of 1 disagreements adjudicated")
    page.get_by_role("button", name=re.compile("Write 1 adjudicated label")).click()
    expect(page.locator(".messages")).to_contain_text("1 image(s) moved")
    assert project.images.get(pk=study.items.get(pk=ids[2]).image_id).label.name == "crimson"  # ids: the study's item ids
    assert page.evaluate("window.__cspViolations") == []
    assert not page.problems, page.problems
