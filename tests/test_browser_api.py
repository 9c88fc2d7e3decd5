"""Real Chromium: create an API key and use it, export a bundle, batch-predict to a CSV, API docs under CSP."""
import csv
import io
import re
import zipfile

from tests.api_support import photo_bytes, photo_project, train_version
from tests.browser_support import BROWSER_MARKS, expect, sign_in
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
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        for i in range(3):
            zf.writestr(f"shots/sand-{i}.jpg", photo_bytes("sand", 80 + i))
    page.locator("#batch-predict input[type=file]:not([webkitdirectory])").set_input_files(
        [{"name": "shots.zip", "mimeType": "application/zip", "buffer": archive.getvalue()}])
    with page.expect_download() as info:
        page.get_by_role("button", name="Download CSV").click()
    rows = list(csv.DictReader(io.StringIO(open(info.value.path(), encoding="utf-8").read())))
    assert [row["file"] for row in rows] == [f"shots/sand-{i}.jpg" for i in range(3)]
    assert all(row["label"] for row in rows)
    problems = [p for p in page.problems if not ("/download/" in p and "ERR_ABORTED" in p) and "ERR_ABORTED" not in p]
    assert not problems, problems


def test_the_api_docs_page_runs_under_the_content_security_policy(live_server, watched_page):
    page = watched_page
    violations = []
    page.on("console", lambda msg: "Content Security Policy" in msg.text and violations.append(msg.text))
    page.goto(f"{live_server.url}/api/v1/docs")
    expect(page.locator(".swagger-ui .opblock").first).to_be_visible()
    expect(page.locator(".swagger-ui")).to_contain_text(re.compile("/api/v1/projects/\\{project_id\\}/predict"))
    assert not violations, violations
    assert not page.problems, page.problems
