"""The compare-versions page in real Chromium: reached from the versions list, the selects swap the
comparison through htmx (and the address follows), it passes axe, and a phone never scrolls sideways."""
import re

from tests.browser.test_browser_rough_edges import _axe_violations, _no_sideways_scroll
from tests.browser_support import BROWSER_MARKS, TIMEOUT_MS, expect, sign_in
from tests.factories import project_with_images
from tests.reporting.test_version_diff import CLASSES, _eval_keys, _set_answer, _train

pytestmark = BROWSER_MARKS


def _two_versions_with_changes(user):
    """v1 and v2 trained for real; v2's stored answers then fix one image, break one and change one."""
    project = project_with_images(user, classes=CLASSES, per_class=6)
    v1, v2 = _train(project), _train(project)
    classes = v1.metrics["classes"]
    truth = {row[0]: classes[row[1]] for row in v1.metrics["eval_predictions"]}
    fixed, broken, changed = _eval_keys(v1)[:3]
    others = {k: [c for c in classes if c != truth[k]] for k in (fixed, broken, changed)}
    for run, key, answer, confidence in ((v1, fixed, others[fixed][0], 0.61), (v2, fixed, truth[fixed], 0.97),
                                         (v1, broken, truth[broken], 0.88), (v2, broken, others[broken][0], 0.77),
                                         (v1, changed, others[changed][0], 0.55), (v2, changed, others[changed][1], 0.66)):
        _set_answer(run, key, answer, confidence)
    return project


def test_compare_versions_page_in_a_real_browser(live_server, queue, user, browser, screenshots):
    project = _two_versions_with_changes(user)
    # bypass_csp: axe is a script the test injects, which the app's policy rightly blocks.
    context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    problems = []
    page.on("pageerror", lambda exc: problems.append(f"JS error: {exc}"))
    page.on("response", lambda r: r.status >= 500 and problems.append(f"HTTP {r.status} {r.url}"))
    try:
        sign_in(page, live_server.url, user.username, "a-long-password-1")
        page.goto(f"{live_server.url}{project.get_absolute_url()}")
        page.locator("#versions").get_by_role("link", name="Compare versions").click()
        page.wait_for_url(re.compile(r"/versions/compare/$"))
        expect(page.get_by_label("Before")).to_have_value("1")
        expect(page.get_by_label("After")).to_have_value("2")
        for name in ("fixed", "broken", "still_wrong"):
            group = page.locator(f"#group-{name}")
            expect(group.locator(".thumb img")).to_have_count(1)
        page.wait_for_function("() => [...document.querySelectorAll('#diff .thumb img')]"
                               ".every((img) => img.complete && img.naturalWidth > 0)")
        expect(page.locator("#per-class-diff tbody tr")).to_have_count(3)
        screenshots(page, "compare-versions")
        assert not _axe_violations(page), _axe_violations(page)

        page.get_by_label("Before").select_option("2")  # htmx: the comparison is swapped, the address follows
        expect(page.locator("#diff")).to_contain_text("Pick two different versions")
        page.get_by_label("After").select_option("1")
        expect(page.locator("#group-fixed")).to_contain_text("v2: ")
        page.wait_for_url(re.compile(r"before=2&after=1"))
        expect(page.locator("#group-broken .thumb img")).to_have_count(1)  # v2 → v1 breaks what v2 fixed

        page.set_viewport_size({"width": 390, "height": 844})
        page.goto(f"{live_server.url}/projects/{project.pk}/versions/compare/")
        expect(page.locator("#group-fixed .thumb img")).to_have_count(1)
        assert _no_sideways_scroll(page) <= 0, "the compare page scrolls sideways on a phone"
        screenshots(page, "compare-versions-phone")
        assert not _axe_violations(page)
        assert not problems, problems
    finally:
        context.close()
