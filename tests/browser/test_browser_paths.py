"""The main user paths, one real-Chromium test each, every test with its own data and worker.

Sign up; import a zip with a bad file; curate a class (select, move, delete); train and watch
the live panel; cancel a running training; read the results page; predict by dropping images;
download the model. Assertions are on structure and meaning (roles, counts, file names,
statuses), not on exact wording. Screenshots: $SCREENSHOT_DIR/<test name>/.
"""
import io
import json
import re
import zipfile

import django_rq
from rq import SimpleWorker

from tests.browser_support import (
    BROWSER_MARKS,
    PASSWORD,
    RESULTS_TIMEOUT_MS,
    BackgroundWorker,
    accept_dialogs,
    assert_assets_loaded,
    drop_files,
    expect,
    sign_in,
)
from tests.conftest import image_bytes
from tests.factories import project_with_images
from transferapp.library import projects as library_projects
from transferapp.models import Image, ImportJob, TrainingRun
from transferapp.training import runs as training_runs

pytestmark = BROWSER_MARKS

USER_PASSWORD = "a-long-password-1"  # tests/conftest.py's `user`
TRAINING_TIMEOUT_MS = 120_000  # a real training on a shared 2-core machine


def _work_off(*queues):
    django_rq.get_worker(*(queues or ("default",)), worker_class=SimpleWorker).work(burst=True)


def _trained_run(owner, *, per_class=6, classes=("red", "blue"), config=None):
    """A project with a finished fast-preset model, trained by a real worker."""
    project = project_with_images(owner, classes=classes, per_class=per_class)
    run = training_runs.training_start(project=project, base_model="efficientnet_lite0", preset="fast", config=config or {})
    _work_off()
    run.refresh_from_db()
    assert run.status == "succeeded", run.error
    return project, run


def _start_training_in_the_page(page, project, *, preset, **advanced):
    page.goto(f"{page.base_url}{project.get_absolute_url()}")
    page.locator("input[name=base_model][value=efficientnet_lite0]").check()
    page.locator(f"input[name=preset][value={preset}]").check()
    if advanced:
        page.locator("#train details.advanced summary").click()
        for name, value in advanced.items():
            field = page.locator(f"#train [name={name}]")
            if field.evaluate("el => el.tagName") == "SELECT":
                field.select_option(value)
            else:
                field.fill(str(value))
    page.locator("#train").get_by_role("button", name="Train").click()
    page.wait_for_url(re.compile(r"/runs/\d+/$"))
    return TrainingRun.objects.get(pk=int(page.url.rstrip("/").rsplit("/", 1)[1]))


def _signed_in(page, live_server, user):
    page.base_url = live_server.url
    sign_in(page, live_server.url, user.username, USER_PASSWORD)
    return page


def test_a_visitor_signs_up_after_fixing_a_mistyped_password(live_server, screenshots, watched_page, django_user_model):
    page = watched_page
    page.goto(f"{live_server.url}/accounts/signup/")
    assert_assets_loaded(page)
    page.fill("#id_username", "new-nina")
    page.fill("#id_password1", PASSWORD)
    page.fill("#id_password2", PASSWORD + "-typo")
    page.get_by_role("button", name="Sign up").click()
    expect(page.locator("form .errorlist")).to_be_visible()  # the form says what is wrong, no account yet
    assert not django_user_model.objects.filter(username="new-nina").exists()
    screenshots(page, "password-mismatch")

    page.fill("#id_password1", PASSWORD)
    page.fill("#id_password2", PASSWORD)
    page.get_by_role("button", name="Sign up").click()
    page.wait_for_url(re.compile(r"/projects/$"))
    expect(page.locator(".topbar")).to_contain_text("new-nina")
    expect(page.get_by_role("button", name="Create project")).to_be_visible()
    assert django_user_model.objects.filter(username="new-nina").exists()
    screenshots(page, "signed-up")
    assert not page.problems, page.problems


def test_a_zip_import_reports_the_bad_file_by_name_and_files_the_good_ones_in_their_classes(
    live_server, queue, user, screenshots, watched_page
):
    page = _signed_in(watched_page, live_server, user)
    project = library_projects.project_create(owner=user, name="Imported")
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        for color in ("red", "blue"):
            for i in range(5):
                zf.writestr(f"{color}/{color}-{i}.png", image_bytes(color, shape_seed=i))
        zf.writestr("red/broken.jpg", b"this is a shopping list, not a photo\n")
        zf.writestr("__MACOSX/red/._red-0.png", b"junk")
    page.goto(f"{live_server.url}{project.get_absolute_url()}")
    zone = "#import form[data-dropzone]"
    drop_files(page, zone, [("colours.zip", "application/zip", archive.getvalue())])
    expect(page.locator(f"{zone} .upload-item.done")).to_have_count(1)
    expect(page.locator("#imports .import-live")).to_be_visible()  # the live report, polling
    screenshots(page, "import-queued")

    _work_off("intake")
    job = ImportJob.objects.get(project=project)
    assert job.status == "done", job.error
    live = page.locator("#imports .import-live")
    report = live.locator("table.import-report tbody tr")
    expect(report).to_have_count(1, timeout=RESULTS_TIMEOUT_MS)  # the next 1 s poll shows the finished report
    expect(report.locator("td").first).to_contain_text("broken.jpg")
    expect(report.locator("td").nth(1)).to_contain_text("not an image")
    expect(live.locator(".import-counts")).to_contain_text("10")
    screenshots(page, "import-report")

    page.goto(f"{live_server.url}{project.get_absolute_url()}")
    cards = page.locator(".class-list .card")
    expect(cards).to_have_count(2)
    for color in ("red", "blue"):
        card = cards.filter(has=page.get_by_role("heading", name=color, exact=True))
        expect(card).to_contain_text("5 images")
        card.click()
        expect(page.locator("#image-grid .thumb img")).to_have_count(5)
        names = page.locator("#image-grid .thumb img").evaluate_all("imgs => imgs.map((i) => i.alt)")
        assert sorted(name.rsplit("/", 1)[-1] for name in names) == sorted(f"{color}-{i}.png" for i in range(5))
        page.go_back()
    screenshots(page, "classes-after-import")
    assert sorted(Image.objects.filter(project=project).values_list("label__name", flat=True)) == ["blue"] * 5 + ["red"] * 5
    assert not page.problems, page.problems


def test_a_user_moves_and_deletes_selected_thumbnails_and_the_counts_follow(
    live_server, queue, user, screenshots, watched_page
):
    project = project_with_images(user, classes=("red", "blue"), per_class=5)
    red, blue = project.labels.get(name="red"), project.labels.get(name="blue")
    page = _signed_in(watched_page, live_server, user)
    accept_dialogs(page)
    page.goto(f"{live_server.url}{red.get_absolute_url()}")
    grid = page.locator("#image-grid")
    expect(grid.locator(".thumb")).to_have_count(5)
    boxes = grid.locator("input.thumb-select")
    boxes.nth(0).click()
    boxes.nth(2).click(modifiers=["Shift"])  # a range: the first three
    expect(page.locator("[data-selected-count]")).to_contain_text("3")
    moved = [boxes.nth(i).get_attribute("value") for i in range(3)]
    page.locator("select[name=target]").select_option(label="blue")
    screenshots(page, "three-selected")
    page.get_by_role("button", name="Move selected").click()
    page.wait_for_load_state()
    expect(grid.locator(".thumb")).to_have_count(2)
    expect(page.locator(".messages")).to_contain_text("3")
    assert {int(pk) for pk in moved} <= set(blue.images.values_list("pk", flat=True))
    assert red.images.count() == 2 and blue.images.count() == 8
    screenshots(page, "after-move")

    page.get_by_label("Select all").check()
    expect(page.locator("[data-selected-count]")).to_contain_text("2")
    page.get_by_role("button", name="Delete selected").click()
    expect(grid.locator(".thumb")).to_have_count(0)
    expect(grid).to_contain_text("0 images")
    assert red.images.count() == 0

    page.goto(f"{live_server.url}{project.get_absolute_url()}")
    counts = {name: page.locator(".class-list .card", has=page.get_by_role("heading", name=name, exact=True)) for name in ("red", "blue")}
    expect(counts["red"]).to_contain_text("0 images")
    expect(counts["blue"]).to_contain_text("8 images")
    screenshots(page, "project-counts")
    assert not page.problems, page.problems


LIVE_LOG = """
  // Every swap of the live panel is written down, in sessionStorage so that the log survives
  // the reload a finished run makes (HX-Refresh).
  document.addEventListener("htmx:afterSettle", () => {
    const live = document.querySelector("#live");
    if (!live) return;
    const log = JSON.parse(sessionStorage.getItem("liveLog") || "[]");
    log.push({
      status: document.querySelector("#run-status")?.textContent.trim(),
      percent: Number(live.querySelector("[role=progressbar]")?.getAttribute("aria-valuenow") ?? -1),
      charts: live.querySelectorAll("svg[role=img] polyline").length,
    });
    sessionStorage.setItem("liveLog", JSON.stringify(log));
  });
"""


def test_the_run_page_shows_progress_and_curves_live_while_a_real_worker_trains(
    live_server, queue, user, screenshots, watched_page
):
    # Enough larger images that the run outlasts a few 2-s polls on a fast machine (6 tiny images a
    # class once finished before the first poll, and the page never showed it running).
    project = project_with_images(user, classes=("red", "blue"), per_class=20, size=(128, 128))
    page = _signed_in(watched_page, live_server, user)
    page.context.add_init_script(LIVE_LOG)
    # "Always" split: 6 images a class would otherwise skip fine-tuning, whose epochs draw the curves.
    run = _start_training_in_the_page(page, project, preset="best", epochs=4, refit="no", validation="always")
    expect(page.locator("#run-status")).to_have_text(re.compile("queued", re.I))
    screenshots(page, "queued")
    with BackgroundWorker():
        expect(page.locator("#live svg[role=img] polyline").first).to_be_attached(timeout=TRAINING_TIMEOUT_MS)
        screenshots(page, "curves-while-training")
        expect(page.locator("#results")).to_be_visible(timeout=TRAINING_TIMEOUT_MS)
    run.refresh_from_db()
    assert run.status == "succeeded", run.error
    expect(page.locator("#run-status")).to_have_text(re.compile("succeeded", re.I))
    screenshots(page, "finished")

    log = page.evaluate("JSON.parse(sessionStorage.getItem('liveLog') || '[]')")
    running = [entry for entry in log if re.search("running", entry["status"] or "", re.I)]
    assert running, log  # the badge changed to Running without a reload
    percents = [entry["percent"] for entry in running]
    assert percents == sorted(percents) and percents[0] < 100, log  # the bar only moves forward...
    assert len(set(percents + [100])) >= 2, log  # ...from a live figure to the finished run's 100%
    assert any(entry["charts"] for entry in running), log  # curves drawn while it still ran
    expect(page.locator("#live svg[role=img]")).to_have_count(2)  # loss and accuracy, final
    assert not page.problems, page.problems


def test_a_running_training_is_cancelled_from_its_page(live_server, queue, user, screenshots, watched_page):
    # Enough images that fine-tuning lasts several seconds (patience ends it early on tiny sets).
    project = project_with_images(user, classes=("red", "blue"), per_class=40, size=(128, 128))
    page = _signed_in(watched_page, live_server, user)
    accept_dialogs(page)
    # Many fine-tuning epochs: the run is still busy when Cancel is pressed.
    run = _start_training_in_the_page(page, project, preset="best", epochs=100, refit="no")
    with BackgroundWorker():
        # Fine-tuning has begun once the quick first model is announced.
        expect(page.locator("#live .first-model-ready")).to_be_visible(timeout=TRAINING_TIMEOUT_MS)
        run.refresh_from_db()
        assert run.status == "running"
        screenshots(page, "running")
        page.get_by_role("button", name="Cancel").click()
        expect(page.locator("#run-status")).to_have_text(re.compile("cancelled", re.I), timeout=TRAINING_TIMEOUT_MS)
    run.refresh_from_db()
    assert run.status == "cancelled" and run.cancel_requested
    expect(page.get_by_role("button", name="Cancel")).to_have_count(0)
    expect(page.locator("#live [role=progressbar]")).to_have_count(0)
    screenshots(page, "cancelled")
    assert not page.problems, page.problems


def test_the_results_page_explains_a_finished_model(live_server, queue, user, screenshots, watched_page):
    # A validation split, as a project of 30+ images a class gets (the learning curve needs one).
    project, run = _trained_run(user, per_class=10, classes=("red", "blue", "green"), config={"small_data_below": 0})
    page = _signed_in(watched_page, live_server, user)
    page.goto(f"{live_server.url}{project.get_absolute_url()}")
    row = page.locator("table.metrics tbody tr", has=page.get_by_role("link", name=f"#{run.pk}"))
    expect(row).to_contain_text(re.compile(r"\d+%"))
    row.get_by_role("link", name=f"#{run.pk}").click()
    page.wait_for_url(re.compile(rf"/runs/{run.pk}/$"))
    expect(page.locator("#run-status")).to_have_text(re.compile("succeeded", re.I))
    accuracy = page.locator("#summary .stat").first.locator(".value")  # the headline figure
    assert accuracy.inner_text().strip() == f"{round(100 * run.metrics['accuracy'])}%"
    expect(page.locator("#summary")).to_contain_text("95% interval")
    expect(page.locator("#summary")).to_contain_text(f"{run.metrics['n_train']} / {run.metrics['n_val']}")
    per_class = page.locator("table.per-class tbody tr")
    expect(per_class).to_have_count(3)
    matrix = page.locator("#confusion-matrix tbody tr")
    expect(matrix).to_have_count(3)
    cells = [int(c) for c in page.locator("#confusion-matrix tbody td").all_inner_texts()]
    assert sum(cells) == run.metrics["n_scored"]  # every image the headline counts, once (issue 32: one n per page)
    expect(page.get_by_role("heading", name=re.compile(r"got wrong \(\d+\)"))).to_be_visible()
    expect(page.locator("#learning-curve .verdict")).not_to_be_empty()
    page.locator("#results details.advanced summary", has_text="Settings used").click()
    expect(page.locator("table.settings")).to_contain_text("Fast")
    expect(page.locator("table.settings")).not_to_contain_text("Learning rate")  # fine-tuning only
    expect(page.get_by_role("link", name="Predict with this model")).to_be_visible()
    expect(page.get_by_role("link", name="Download model")).to_be_visible()
    screenshots(page, "results")
    assert not page.problems, page.problems


def test_dropped_images_are_predicted_and_a_bad_file_is_reported_by_name(
    live_server, queue, user, screenshots, watched_page
):
    project, run = _trained_run(user)
    page = _signed_in(watched_page, live_server, user)
    page.goto(f"{live_server.url}{project.get_absolute_url()}")
    page.get_by_role("link", name="Predict", exact=True).click()
    page.wait_for_url(re.compile(r"/predict/"))
    assert_assets_loaded(page)
    expect(page.locator("select[name=run]")).to_have_value(str(run.pk))
    # Two of the labelled images (six flat images teach too little to judge unseen ones fairly).
    files = [
        ("a-red.png", "image/png", image_bytes("red", shape_seed=1)),
        ("notes.png", "image/png", b"not a picture\n"),
        ("a-blue.png", "image/png", image_bytes("blue", shape_seed=2)),
    ]
    drop_files(page, "form[data-dropzone]", files)
    expect(page.locator("form[data-dropzone] .upload-item")).to_have_count(3)
    cards = page.locator("#predictions .prediction")
    expect(cards).to_have_count(2)
    for name, color in (("a-red.png", "red"), ("a-blue.png", "blue")):
        card = cards.filter(has_text=name)
        expect(card.locator(".top-class")).to_contain_text(color)
        expect(card.locator(".runner-up")).to_contain_text("%")  # the other class, with its score
    # The refused file is marked as not done in the uploader, by name and with its reason.
    expect(page.locator("form[data-dropzone] .upload-item.done")).to_have_count(2)
    refused = page.locator("form[data-dropzone] .upload-item.error")
    expect(refused).to_have_count(1)
    expect(refused.locator(".upload-name")).to_have_text("notes.png")
    expect(refused.locator(".upload-status")).to_contain_text("not an image")
    expect(page.locator("form[data-dropzone] .upload-summary")).to_contain_text("1")
    assert project.images.count() == 12  # predicting stores nothing
    screenshots(page, "predictions")
    assert not page.problems, page.problems


def test_the_owner_downloads_the_model_as_a_zip_with_its_weights_and_meta(
    live_server, queue, user, screenshots, watched_page
):
    project, run = _trained_run(user)
    page = _signed_in(watched_page, live_server, user)
    page.goto(f"{live_server.url}{run.get_absolute_url()}")
    with page.expect_download() as info:
        page.get_by_role("link", name="Download model").click()
    download = info.value
    assert download.suggested_filename.endswith(".zip")
    with zipfile.ZipFile(download.path()) as archive:
        names = {name.rsplit("/", 1)[-1]: name for name in archive.namelist()}
        assert {"meta.json", "model.pt"} <= set(names), names
        meta = json.loads(archive.read(names["meta.json"]))
        assert sorted(meta["classes"]) == ["blue", "red"]
        assert archive.getinfo(names["model.pt"]).file_size > 100_000  # real weights, not a stub
    screenshots(page, "run-page")
    # Chromium reports a navigation that turned into a download as an aborted request.
    problems = [p for p in page.problems if not ("/download/" in p and "ERR_ABORTED" in p)]
    assert not problems, problems


COUNT_DOCUMENT_LISTENERS = """
  // How many click listeners the page's scripts add to the document, however often htmx swaps.
  window.documentClickListeners = 0;
  const add = Document.prototype.addEventListener;
  Document.prototype.addEventListener = function (type, ...rest) {
    if (type === "click") window.documentClickListeners += 1;
    return add.call(this, type, ...rest);
  };
"""


def test_swapping_the_class_grid_adds_no_listeners_and_selection_still_works(
    live_server, queue, user, screenshots, watched_page
):
    project = project_with_images(user, classes=("red", "blue"), per_class=6)
    red = project.labels.get(name="red")
    page = _signed_in(watched_page, live_server, user)
    page.context.add_init_script(COUNT_DOCUMENT_LISTENERS)
    page.goto(f"{live_server.url}{red.get_absolute_url()}")
    grid = page.locator("#image-grid")
    expect(grid.locator(".thumb")).to_have_count(6)
    listeners = page.evaluate("window.documentClickListeners")
    for remaining in (5, 4, 3):  # each × deletes one image and htmx swaps the whole grid
        grid.locator(".thumb-delete").first.click(force=True)
        expect(grid.locator(".thumb")).to_have_count(remaining)
    assert page.evaluate("window.documentClickListeners") == listeners
    boxes = grid.locator("input.thumb-select")
    boxes.nth(0).click()
    boxes.nth(2).click(modifiers=["Shift"])
    expect(page.locator("[data-selected-count]")).to_contain_text("3 selected")
    screenshots(page, "selection-after-swaps")
    assert not page.problems, page.problems
