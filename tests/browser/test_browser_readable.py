"""Issue 32, items 13 and 15 in real Chromium: every count of the confusion matrix readable (WCAG AA),
and the pages a phone user hit neither clip nor hide their words."""
import re

from tests.browser.test_browser_rough_edges import (  # noqa: F401 - a fixture
    AXE,
    _log_in,
    _trained_project,
    expert,
)
from tests.browser_support import BROWSER_MARKS, TIMEOUT_MS, expect

pytestmark = BROWSER_MARKS

# Contrast of each cell's text on the background it is painted on, from the computed styles (the
# cell's rgba shade composited over the nearest opaque ancestor's background).
CELL_CONTRASTS = """() => {
  const rgba = (s) => (s.match(/[\\d.]+/g) || []).map(Number).concat([1]).slice(0, 4);
  const lum = ([r, g, b]) => { const f = (c) => { c /= 255; return c <= 0.04045 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; };
                               return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b); };
  const over = (top, under) => [0, 1, 2].map((i) => top[3] * top[i] + (1 - top[3]) * under[i]);
  const opaqueBehind = (el) => { for (let e = el.parentElement; e; e = e.parentElement) {
      const c = rgba(getComputedStyle(e).backgroundColor); if (c[3] === 1) return c; } return [255, 255, 255, 1]; };
  return [...document.querySelectorAll('#confusion-matrix td')].map((td) => {
    const text = td.querySelector('a') || td;
    const bg = over(rgba(getComputedStyle(td).backgroundColor), opaqueBehind(td));
    const fg = rgba(getComputedStyle(text).color);
    const [a, b] = [lum(fg), lum(bg)].sort((x, y) => y - x);
    return {text: td.textContent.trim(), correct: td.classList.contains('correct'), contrast: (a + 0.05) / (b + 0.05)};
  });
}"""


def _contrast_failures(page) -> list:
    page.add_script_tag(path=str(AXE))
    axe = page.evaluate("""async () => (await axe.run('#confusion-matrix', {runOnly: ['color-contrast']})).violations
                           .flatMap((v) => v.nodes.map((n) => n.target.join(' ') + ': ' + n.failureSummary))""")
    cells = page.evaluate(CELL_CONTRASTS)
    assert any(c["correct"] for c in cells) and len(cells) >= 4
    return axe + [c for c in cells if c["contrast"] < 4.5]


def test_every_count_in_the_confusion_matrix_has_aa_contrast_on_desktop_and_phone(live_server, queue, expert, browser, screenshots):  # noqa: F811
    _, run = _trained_project(expert)
    failures = {}
    for name, viewport in (("desktop", {"width": 1280, "height": 900}), ("phone", {"width": 375, "height": 812})):
        context = browser.new_context(viewport=viewport, bypass_csp=True)  # the checker is an injected script
        context.set_default_timeout(TIMEOUT_MS)
        page = context.new_page()
        try:
            _log_in(page, live_server.url, expert)
            page.goto(live_server.url + run.get_absolute_url())
            assert page.locator("#confusion-matrix td a").count() >= 2, "the counts are links to their images"
            failures[name] = _contrast_failures(page)
            screenshots(page, f"confusion-{name}")
        finally:
            context.close()
    assert not any(failures.values()), failures


# Elements of "Please look at these first" whose content is cut: wider than their box (clipped or
# ellipsised), or sticking out of their thumbnail card.
CLIPPED = """() => [...document.querySelectorAll('#suspects .suspect figcaption, #suspects .suspect .btn')].flatMap((el) => {
  const card = el.closest('.suspect').getBoundingClientRect(), box = el.getBoundingClientRect();
  const cut = el.scrollWidth > el.clientWidth + 1 || box.right > card.right + 0.5 || box.left < card.left - 0.5;
  return cut ? [el.textContent.trim() + ` (${el.scrollWidth}px in ${el.clientWidth}px)`] : [];
})"""


def test_a_phone_shows_the_suspects_whole_and_the_predict_pages_file_inputs_have_their_own_names(live_server, queue, expert, browser, screenshots):  # noqa: F811
    project, run = _trained_project(expert)
    # What a run records for images whose label it doubts (the real run's own images and classes).
    bees, wasps = (project.labels.get(name=n) for n in ("bees", "wasps"))
    classes = run.metrics["classes"]
    doubted = [(image, bees, wasps) for image in bees.images.all()[:2]] + [(image, wasps, bees) for image in wasps.images.all()[:2]]
    run.metrics["suspected_mislabels"] = [{"key": str(image.pk), "label": classes.index(given.name), "suggested": classes.index(other.name),
                                           "p_given": 0.1, "p_suggested": 0.9} for image, given, other in doubted]
    run.save(update_fields=["metrics"])
    context = browser.new_context(viewport={"width": 375, "height": 812}, is_mobile=True, has_touch=True)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    try:
        _log_in(page, live_server.url, expert)
        page.goto(live_server.url + run.get_absolute_url() + "#suspects")
        assert page.locator("#suspects .suspect").count() == 4
        assert page.locator("#suspects .suspect .btn", has_text=re.compile("Move to wasps")).count() == 2
        clipped = page.evaluate(CLIPPED)
        screenshots(page, "phone-suspects")
        assert not clipped, clipped
        page.goto(f"{live_server.url}/projects/{project.pk}/predict/")
        names = ["Images to predict now", "Images or a .zip for a batch prediction", "A folder for a batch prediction"]
        inputs = page.locator("input[type=file]")
        assert inputs.count() == len(names)
        for i, name in enumerate(names):
            expect(inputs.nth(i)).to_have_accessible_name(name)
    finally:
        context.close()
