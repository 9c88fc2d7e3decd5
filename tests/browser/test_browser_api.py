"""Real Chromium: create an API key and use it, export a bundle, batch-predict to a CSV, API docs under CSP."""
import csv
import io
import re
import zipfile

from tests.api_support import photo_bytes, photo_project, train_version
from tests.browser_support import BROWSER_MARKS, RESULTS_TIMEOUT_MS, BackgroundWorker, drop_files, expect, sign_in
from transferapp.models import ApiKey

pytestmark = BROWSER_MARKS

USER_PASSWORD = "a-long-password-1"  # tests/conftest.py's `user`


def test_the_owner_makes_a_key_exports_a_bundle_and_batch_predicts(live_server, queue, user, screenshots, watched_page):
    project = photo_project(user, per_class=6)
    run = train_version(project)
    page = watched_page
    sign_in(page, live_server.url, user.username, USER_PASSWORD)

    page.goto(f"{live_server.url}{project.get_absolute_url()}")
    expect(page.locator("#versions")).to_contain_text("v1")
    page.locator("#api-keys input[name=name]").fill("line camera")
    page.get_by_role("button", name="Create API key").click()
    key = page.locator("#new-api-key").inner_text().strip()
    assert ApiKey.objects.get(project=project).key_hash == ApiKey.hash_of(key)
    answer = page.request.post(f"{live_server.url}/api/v1/projects/{project.pk}/predict", data=photo_bytes("sea", 70),
                               headers={"Authorization": f"Bearer {key}", "Content-Type": "image/jpeg"})
    assert answer.status == 200 and answer.json()["model"]["version"] == 1
    screenshots(page, "key-created")

    page.goto(f"{live_server.url}{run.get_absolute_url()}")
    page.get_by_role("button", name="Export (ONNX)").click()
    expect(page.locator("#export-status")).to_contain_text("Self-test passed")
    with page.expect_download() as info:
        page.locator("#export-download").click()
    with zipfile.ZipFile(info.value.path()) as archive:
        assert any(name.endswith("/model.onnx") for name in archive.namelist())
    screenshots(page, "exported")

    page.goto(f"{live_server.url}/projects/{project.pk}/predict/")
    page.locator("#batch-predict input[type=file]:not([webkitdirectory])").set_input_files(
        [{"name": f"sand-{i}.jpg", "mimeType": "image/jpeg", "buffer": photo_bytes("sand", 80 + i)} for i in range(3)])
    with page.expect_download() as info:  # a few loose images: the CSV comes back at once
        page.get_by_role("button", name="Predict all").click()
    rows = list(csv.DictReader(io.StringIO(open(info.value.path(), encoding="utf-8").read())))
    assert [row["file"] for row in rows] == [f"sand-{i}.jpg" for i in range(3)]
    assert all(row["label"] for row in rows)
    problems = [p for p in page.problems if not ("/download/" in p and "ERR_ABORTED" in p) and "ERR_ABORTED" not in p]
    assert not problems, problems


def test_a_dropped_zip_is_predicted_in_the_worker_with_a_progress_bar_then_a_table_and_a_csv(live_server, queue, user, screenshots,
                                                                                              watched_page, settings):
    project = photo_project(user, per_class=6)
    train_version(project)
    page = watched_page
    sign_in(page, live_server.url, user.username, USER_PASSWORD)
    page.goto(f"{live_server.url}/projects/{project.pk}/predict/")
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        for i in range(40):
            kind = ("sand", "sea", "meadow")[i % 3]
            zf.writestr(f"shots/{kind}-{i}.jpg", photo_bytes(kind, 80 + i))
        zf.writestr("shots/broken.jpg", b"not a photo")
    drop_files(page, "form.dropzone", [("shots.zip", "application/zip", archive.getvalue())])

    panel = page.locator("#batch-live")
    expect(panel).to_contain_text("Waiting for the worker")  # queued: no worker runs yet
    expect(panel.locator(".progress")).to_be_visible()
    screenshots(page, "batch-queued")
    with BackgroundWorker("intake"):
        expect(page.locator("#batch-download")).to_be_visible(timeout=RESULTS_TIMEOUT_MS * 4)
    expect(panel).to_contain_text("40 images predicted, 1 file could not be read")
    expect(panel.locator("img.pred-thumb")).to_have_count(40)
    screenshots(page, "batch-done")

    panel.locator("[data-batch-sort]").click()  # least confident first: the unreadable file heads the list
    expect(panel.locator("tbody tr").first).to_contain_text("broken.jpg")
    shown = [float(c) for c in panel.locator("tbody tr").evaluate_all("rows => rows.map(r => r.dataset.confidence)")]
    assert shown == sorted(shown)
    with page.expect_download() as info:
        page.locator("#batch-download").click()
    rows = list(csv.DictReader(io.StringIO(open(info.value.path(), encoding="utf-8").read())))
    assert len(rows) == 41 and sum(1 for row in rows if row["label"]) == 40

    # A dropped folder with more loose images than the page answers at once goes the same way.
    settings.BATCH_INLINE_MAX_IMAGES = 3
    page.goto(f"{live_server.url}/projects/{project.pk}/predict/")
    drop_files(page, "form.dropzone", [(f"sea-{i}.jpg", "image/jpeg", photo_bytes("sea", 200 + i)) for i in range(4)])
    expect(panel).to_contain_text("Batch prediction of 4 files")
    with BackgroundWorker("intake"):
        expect(panel).to_contain_text("4 images predicted", timeout=RESULTS_TIMEOUT_MS * 4)
    expect(panel.locator("img.pred-thumb")).to_have_count(4)
    expect(page.locator(".batch-list li")).to_have_count(2)  # both batches under "Recent batches"
    assert not page.problems, page.problems


def test_the_api_docs_page_runs_under_the_content_security_policy(live_server, watched_page):
    page = watched_page
    violations = []
    page.on("console", lambda msg: "Content Security Policy" in msg.text and violations.append(msg.text))
    page.goto(f"{live_server.url}/api/v1/docs")
    expect(page.locator(".swagger-ui .opblock").first).to_be_visible()
    expect(page.locator(".swagger-ui")).to_contain_text(re.compile("/api/v1/projects/\\{project_id\\}/predict"))
    assert not violations, violations
    assert not page.problems, page.problems
