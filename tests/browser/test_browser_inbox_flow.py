"""In a real Chromium, #24's "Done means" end to end through the UI: a new project imports a zip of
300 unlabelled images and 2 labelled a class (the import runs in the worker, and makes the two
classes); the project page counts the Inbox; the labelling page labels 40 with the keyboard alone;
a retrain in the worker changes the order and the suggestions the page shows; "more like this"
labels 10+ at once; the Train button trains a model in the worker; and the predict page shows the
most similar training images beside a prediction, with their class and similarity."""
import io
import re
import time
import zipfile

import django_rq
from rq import SimpleWorker

from tests.browser.test_browser_csp import RECORD_VIOLATIONS
from tests.browser_support import BROWSER_MARKS, RESULTS_TIMEOUT_MS, drop_files, expect, sign_in
from tests.conftest import PALETTE, image_bytes
from transferapp.models import Image, ImportJob, Project, TrainingRun

pytestmark = BROWSER_MARKS

COLOURS = ("red", "blue")
KEYS = {"blue": "1", "red": "2"}  # the page numbers the classes in name order
UNLABELLED = 300
SIZE = (48, 48)  # small: 300 of them import and featurise fast on a loaded machine


def _shade(colour: str, i: int) -> tuple:
    """The colour, nudged a little every 48 seeds: image_bytes repeats its shapes every 48 at this
    size, and an exact duplicate would be skipped by the import."""
    r, g, b = PALETTE[colour]
    return (r - i // 48, g + i // 48, b - i // 48)


def _zip() -> bytes:
    """unlabelled/ with 150 of each colour (the colour in the name, for the test's truth only) and
    a class folder of 2 per colour."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        for i in range(UNLABELLED):
            colour = COLOURS[i % 2]
            zf.writestr(f"unlabelled/u-{colour}-{i}.png", image_bytes(_shade(colour, i), size=SIZE, shape_seed=i))
        for colour in COLOURS:
            for i in range(2):
                zf.writestr(f"{colour}/{colour}-{i}.png", image_bytes(_shade(colour, 480 + i), size=SIZE, shape_seed=i))
    return archive.getvalue()


def _truth(pk) -> str:
    return Image.all_objects.get(pk=int(pk)).original_name.split("-")[1]  # u-<colour>-<n>.png


def _work_off(queue_name):
    django_rq.get_worker(queue_name, worker_class=SimpleWorker).work(burst=True)


def _queue(page, project) -> list[dict]:
    """The labelling page's own queue as it asks for it (its cookies): ids, suggestions, reasons."""
    return page.evaluate("(url) => fetch(url, {credentials: 'same-origin'}).then((r) => r.json())",
                         f"/projects/{project.pk}/label/queue/")["items"]


def _shown(page) -> dict:
    return {"pk": page.locator("#label-image").get_attribute("data-pk"),
            "suggestion": page.locator("#label-suggestion").inner_text(),
            "reason": page.locator("#label-reason").inner_text()}


def _label_by_keyboard(page, how_many: int) -> int:
    """Label `how_many` with keys alone: every other one by Enter where the suggestion is right, the
    rest by number key. Each time the shown image must change. Returns how many went by Enter."""
    image, by_enter = page.locator("#label-image"), 0
    for turn in range(how_many):
        pk = image.get_attribute("data-pk")
        truth = _truth(pk)
        suggestion = page.locator("#label-suggestion strong")
        if turn % 2 and suggestion.count() and suggestion.inner_text() == truth:
            page.keyboard.press("Enter")
            by_enter += 1
        else:
            page.keyboard.press(KEYS[truth])
        expect(image).not_to_have_attribute("data-pk", pk)
    return by_enter


def test_the_inbox_flow_from_import_to_similar_cases_beside_a_prediction(
        live_server, queue, user, settings, screenshots, watched_page):
    settings.INBOX_RETRAIN_EVERY = 40  # one retrain after the 40 keyboard labels, run below
    started = time.monotonic()
    base, page = live_server.url, watched_page
    page.add_init_script(RECORD_VIOLATIONS)
    sign_in(page, base, "alice", "a-long-password-1")

    # 1. A new project; the zip through the project page's import form; the import in the worker.
    page.fill("#id_name", "Inbox flow")
    page.get_by_role("button", name="Create project").click()
    page.wait_for_url(re.compile(r"/projects/\d+/$"))
    project = Project.objects.get(owner=user, name="Inbox flow")
    zone = "#import form[data-dropzone]"
    drop_files(page, zone, [("inbox.zip", "application/zip", _zip())])
    expect(page.locator(f"{zone} .upload-item.done")).to_have_count(1)
    _work_off("intake")
    job = ImportJob.objects.get(project=project)
    assert job.status == "done", job.error
    assert (job.accepted, job.skipped, job.refused) == (UNLABELLED + 4, 0, 0)
    assert Image.inbox.filter(project=project).count() == UNLABELLED
    assert sorted(project.labels.values_list("name", flat=True)) == ["blue", "red"]
    for colour in COLOURS:
        assert Image.objects.filter(project=project, label__name=colour).count() == 2
    page.reload()
    expect(page.locator("#inbox-summary")).to_contain_text(f"{UNLABELLED} unlabelled images waiting")
    expect(page.locator(".class-list .card")).to_have_count(2)
    screenshots(page, "imported")

    # 2. The labelling page from the project page; its first order from the worker.
    page.get_by_role("link", name="Label the Inbox").click()
    page.wait_for_url(re.compile(r"/label/$"))
    _work_off("intake")
    ranking, progress = page.locator("#label-ranking"), page.locator("#label-progress")
    expect(ranking).to_contain_text("Order from the quick model trained on", timeout=RESULTS_TIMEOUT_MS)
    expect(page.locator("#label-suggestion strong")).to_be_visible()
    expect(progress).to_contain_text(f"0 labelled · {UNLABELLED} left in the Inbox")
    screenshots(page, "labelling")

    by_enter = _label_by_keyboard(page, 40)
    expect(progress).to_contain_text(f"40 labelled · {UNLABELLED - 40} left")
    labelled = Image.objects.filter(project=project, labelled_at__isnull=False)
    assert labelled.count() == 40 and Image.inbox.filter(project=project).count() == UNLABELLED - 40
    assert all(image.label.name == _truth(image.pk) for image in labelled)
    assert 0 < by_enter <= 20
    print(f"40 labelled by keyboard, {by_enter} with Enter")

    # 3. The retrain the 40th label queued, in the worker: the page takes a new order and suggestions.
    before_queue, before_shown = _queue(page, project), _shown(page)
    ranked_at = ranking.get_attribute("data-ranked-at")
    _work_off("intake")
    expect(ranking).not_to_have_attribute("data-ranked-at", ranked_at, timeout=RESULTS_TIMEOUT_MS)
    expect(ranking).to_contain_text("trained on 44 labels")
    after_queue = _queue(page, project)
    expect(page.locator("#label-image")).to_have_attribute("data-pk", str(after_queue[0]["image"]))
    after_shown = _shown(page)
    print("before:", before_shown, [i["image"] for i in before_queue[:8]])
    print("after: ", after_shown, [i["image"] for i in after_queue[:8]])
    assert [i["image"] for i in after_queue[:10]] != [i["image"] for i in before_queue[:10]]
    before_cards = {i["image"]: (i["suggestion"], i["reason"]) for i in before_queue}
    assert any(before_cards[i["image"]] != (i["suggestion"], i["reason"]) for i in after_queue if i["image"] in before_cards)
    assert after_shown != before_shown
    screenshots(page, "after-retrain")

    # 4. More like this: 10 or more selected (the slider lowered if need be), one key labels them.
    shown = int(page.locator("#label-image").get_attribute("data-pk"))
    page.keyboard.press("m")
    tiles = page.locator("#similar-grid .similar-thumb")
    expect(tiles.first).to_be_visible()
    selected = page.locator("#similar-grid .similar-thumb.selected")
    preselected = selected.count()
    if preselected < 10:
        tenth = float(tiles.nth(9).locator("span").inner_text())
        page.locator("#similar-threshold").fill(f"{tenth:.2f}")
    chosen = [int(pk) for pk in selected.evaluate_all("(els) => els.map((e) => e.dataset.image)")]
    assert shown in chosen and len(chosen) >= 10, chosen
    print(f"more like this: {preselected} preselected, {len(chosen)} labelled at once")
    screenshots(page, "more-like-this")
    colour = _truth(shown)
    page.keyboard.press(KEYS[colour])
    expect(page.locator("#label-similar")).to_be_hidden()
    expect(progress).to_contain_text(f"{40 + len(chosen)} labelled")
    assert not Image.inbox.filter(pk__in=chosen).exists()
    assert Image.objects.filter(pk__in=chosen, label__name=colour).count() == len(chosen)
    assert sum(_truth(pk) == colour for pk in chosen) == len(chosen)  # the nearest really are alike

    # 5. Train from the project page (the fast preset), in the worker.
    page.goto(f"{base}{project.get_absolute_url()}")
    expect(page.locator("#inbox-summary")).to_contain_text(f"{UNLABELLED - 40 - len(chosen)} unlabelled")
    fast = page.locator("input[name=preset][value=fast]")
    if fast.count():
        fast.check()
    page.locator("#train").get_by_role("button", name="Train").click()
    page.wait_for_url(re.compile(r"/runs/\d+/$"))
    _work_off("default")
    run = TrainingRun.objects.get(project=project)
    assert run.status == "succeeded", run.error
    expect(page.locator("#run-status")).to_have_text("Succeeded", timeout=RESULTS_TIMEOUT_MS)
    screenshots(page, "trained")

    # 6. A prediction on the predict page, with the most similar training images beside it.
    page.get_by_role("link", name="Predict with this model").click()
    page.wait_for_url(re.compile(r"/projects/\d+/predict/"))
    drop_files(page, "form[data-dropzone]", [("new-red.png", "image/png", image_bytes("red", size=SIZE, shape_seed=777))])
    card = page.locator("#predictions .prediction")
    expect(card).to_have_count(1)
    expect(card.locator(".top-class")).to_contain_text("red")
    cases = card.locator(".similar-cases li")
    expect(cases.first).to_be_visible()
    for case in cases.all():
        alt = case.locator("img").get_attribute("alt")
        assert re.fullmatch(r"(red|blue), -?\d+% similar", alt), alt
        expect(case.locator("img")).to_have_js_property("complete", True)
        assert case.locator("img").evaluate("(i) => i.naturalWidth") > 0
    assert cases.first.locator("img").get_attribute("alt").startswith("red,")  # the nearest is its own colour
    screenshots(page, "prediction-with-similar-cases")

    assert not page.problems, page.problems
    assert page.evaluate("window.__cspViolations") == []
    print(f"inbox flow took {time.monotonic() - started:.0f} s")
