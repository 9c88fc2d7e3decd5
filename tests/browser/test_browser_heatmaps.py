"""Heat maps in real Chromium: the predict page's toggle swaps thumbnails for overlays (fetched only
once shown, also for images dropped afterwards), a class picker swaps the overlay, and the
misclassified gallery has the same toggle."""
from tests.browser.test_browser_paths import _signed_in, _trained_run
from tests.browser_support import BROWSER_MARKS, drop_files, expect, pngs

pytestmark = BROWSER_MARKS

LOADED = "(img) => img.complete && img.naturalWidth > 0"


def _overlays_loaded(locator) -> list[bool]:
    return locator.evaluate_all(f"(imgs) => imgs.map({LOADED})")


def test_the_toggle_shows_where_the_model_looked_for_any_class(live_server, queue, user, screenshots, watched_page):
    project, run = _trained_run(user)
    page = _signed_in(watched_page, live_server, user)
    page.goto(f"{live_server.url}/projects/{project.pk}/predict/")
    drop_files(page, "form[data-dropzone]", pngs("red", 1, first_seed=40) + pngs("blue", 1, first_seed=40))
    rows = page.locator("#predictions tr.prediction")
    expect(rows).to_have_count(2)
    overlays = page.locator("#predictions .heatmap-img")
    expect(overlays.first).to_be_hidden()
    assert overlays.evaluate_all("(imgs) => imgs.every((img) => !img.getAttribute('src'))")  # nothing fetched yet

    toggle = page.get_by_label("Show where the model looked")
    toggle.check()
    expect(overlays.first).to_be_visible()
    expect(page.locator("#predictions .pred-thumb").first).to_be_hidden()
    page.wait_for_function("() => [...document.querySelectorAll('#predictions .heatmap-img')]"
                           ".every((img) => img.complete && img.naturalWidth > 0)")
    first = rows.first
    before = first.locator(".heatmap-img").get_attribute("src")
    picker = first.locator("select[data-heatmap-class]")
    other = picker.locator("option").nth(1)
    picker.select_option(other.get_attribute("value"))
    expect(first.locator(".heatmap-img")).to_have_attribute("alt", f"Heat map for {other.inner_text()}")
    assert first.locator(".heatmap-img").get_attribute("src") != before
    page.wait_for_function(f"() => ({LOADED})(document.querySelector('#predictions tr.prediction .heatmap-img'))")
    screenshots(page, "heat-maps")

    drop_files(page, "form[data-dropzone]", pngs("blue", 1, first_seed=41))  # added while the toggle is on
    expect(rows).to_have_count(3)
    page.wait_for_function("() => [...document.querySelectorAll('#predictions .heatmap-img')]"
                           ".every((img) => img.complete && img.naturalWidth > 0)")
    toggle.uncheck()
    expect(overlays.first).to_be_hidden()
    expect(page.locator("#predictions .pred-thumb").first).to_be_visible()
    assert not page.problems, page.problems


def test_the_misclassified_gallery_shows_heat_maps_too(live_server, queue, user, screenshots, watched_page):
    project, run = _trained_run(user)
    image = project.images.filter(label__name="red").first()
    run.metrics = {**run.metrics, "mistakes": [{"key": str(image.pk), "true": "red", "predicted": "blue",
                                                "confidence": 0.6}]}
    run.save()
    page = _signed_in(watched_page, live_server, user)
    page.goto(f"{live_server.url}{run.get_absolute_url()}")
    gallery = page.locator("#mistakes")
    gallery.get_by_label("Show where the model looked").check()
    overlay = gallery.locator(".heatmap-img")
    expect(overlay).to_be_visible()
    expect(overlay).to_have_attribute("alt", "Heat map for blue")  # the wrong answer first
    page.wait_for_function(f"() => ({LOADED})(document.querySelector('#mistakes .heatmap-img'))")
    assert _overlays_loaded(overlay) == [True]
    screenshots(page, "gallery-heat-map")
    assert not page.problems, page.problems
