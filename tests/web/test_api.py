"""The REST API, model versions and the export bundle, through HTTP with real keys and a real worker."""
import csv
import io
import json
import os
import subprocess
import sys
import zipfile

import pytest
from django.urls import reverse

from tests.api_support import CLASS_TINTS, photo_bytes, photo_project, train_version, work_off_queue
from tests.conftest import image_bytes
from tests.factories import project_with_images, upload
from transferapp.accounts import api_keys
from transferapp.library import images as library_images
from transferapp.library import intake
from transferapp.models import ApiKey, BatchPrediction, Project, TrainingRun
from transferapp.serving import predictions
from transferapp.training import versions as training_versions

pytestmark = pytest.mark.django_db(transaction=True)

API = "/api/v1"


@pytest.fixture(autouse=True)
def fresh_rate_limits(embedded_redis):
    """Rate-limit counters live in the shared cache (Redis): each test starts with none."""
    from django.core.cache import cache
    cache.clear()


def bearer(key):
    return {"HTTP_AUTHORIZATION": f"Bearer {key}"}


def predict_raw(client, project, key, data, version=None, content_type="image/jpeg"):
    path = f"{API}/projects/{project.pk}/predict" if version is None else f"{API}/projects/{project.pk}/versions/{version}/predict"
    return client.post(path, data=data, content_type=content_type, **bearer(key))


@pytest.fixture
def trained(user, queue):
    project = photo_project(user)
    run = train_version(project)
    _, key = api_keys.api_key_create(project=project)
    return project, run, key


# --- keys ---------------------------------------------------------------------------------------

def test_the_api_refuses_requests_without_a_key(client, user):
    project = project_with_images(user)
    response = client.get(f"{API}/projects/{project.pk}/versions")
    assert response.status_code == 401
    assert "API key" in response.json()["error"]


def test_the_api_refuses_a_wrong_key(client, user):
    project = project_with_images(user)
    api_keys.api_key_create(project=project)
    response = client.get(f"{API}/projects", **bearer("ta_not-a-real-key"))
    assert response.status_code == 401 and "error" in response.json()


def test_a_revoked_key_no_longer_opens_the_project(client, user, alice):
    project = project_with_images(user)
    row, key = api_keys.api_key_create(project=project)
    assert client.get(f"{API}/projects", **bearer(key)).status_code == 200
    alice.post(reverse("api_key_revoke", args=[row.pk]))
    assert ApiKey.objects.get(pk=row.pk).revoked_at is not None
    assert client.get(f"{API}/projects", **bearer(key)).status_code == 401


def test_a_deactivated_owners_keys_open_nothing(client, user):
    """Off-boarding by is_active=False (even from a shell, without the admin) shuts every key out."""
    project = project_with_images(user)
    _, key = api_keys.api_key_create(project=project)
    assert client.get(f"{API}/projects", **bearer(key)).status_code == 200
    user.is_active = False
    user.save()
    label, images_before = project.labels.first(), project.images.count()
    for response in (client.get(f"{API}/projects", **bearer(key)),
                     client.post(f"{API}/projects/{project.pk}/classes/{label.name}/images",
                                 {"files": [upload("x.png", image_bytes())]}, **bearer(key)),
                     predict_raw(client, project, key, image_bytes("red")),
                     client.post(f"{API}/projects/{project.pk}/train", data={}, content_type="application/json", **bearer(key))):
        assert response.status_code == 401
        assert "deactivated" in response.json()["error"]
    assert project.images.count() == images_before and not project.runs.exists()


def test_deactivating_a_user_in_the_admin_revokes_their_keys_for_good(client, user, django_user_model):
    root = django_user_model.objects.create_superuser("root", password="a-long-password-0")
    project = project_with_images(user)
    row, key = api_keys.api_key_create(project=project)
    client.force_login(root)
    change = reverse("admin:auth_user_change", args=[user.pk])
    form = {"username": "alice", "is_active": "", "date_joined_0": "2024-01-01", "date_joined_1": "00:00:00",
            "quota-TOTAL_FORMS": "0", "quota-INITIAL_FORMS": "0"}
    assert client.post(change, form).status_code == 302
    assert ApiKey.objects.get(pk=row.pk).revoked_at is not None
    user.refresh_from_db()
    user.is_active = True  # reactivated: the account is back, its old keys are not
    user.save()
    assert client.get(f"{API}/projects", **bearer(key)).status_code == 401


def test_the_admins_deactivate_action_revokes_keys(client, user, other_user, django_user_model):
    root = django_user_model.objects.create_superuser("root", password="a-long-password-0")
    mine, theirs = project_with_images(user), project_with_images(other_user, name="Theirs")
    (row, _), (kept, _) = api_keys.api_key_create(project=mine), api_keys.api_key_create(project=theirs)
    client.force_login(root)
    response = client.post(reverse("admin:auth_user_changelist"),
                           {"action": "deactivate_and_revoke_keys", "_selected_action": [user.pk]})
    assert response.status_code == 302
    user.refresh_from_db()
    assert not user.is_active and ApiKey.objects.get(pk=row.pk).revoked_at is not None
    assert ApiKey.objects.get(pk=kept.pk).revoked_at is None


def test_a_key_opens_only_its_own_project(client, user, other_user):
    mine = project_with_images(user)
    theirs = project_with_images(other_user, name="Theirs")
    _, key = api_keys.api_key_create(project=theirs)
    assert client.get(f"{API}/projects/{mine.pk}/versions", **bearer(key)).status_code == 404
    response = predict_raw(client, mine, key, image_bytes("red"))
    assert response.status_code == 404 and "error" in response.json()
    listed = client.get(f"{API}/projects", **bearer(key)).json()
    assert [p["id"] for p in listed] == [theirs.pk]


def test_keys_are_created_on_the_project_page_shown_once_and_stored_hashed(alice, user):
    project = project_with_images(user)
    response = alice.post(reverse("api_key_create", args=[project.pk]), {"name": "camera 2"})
    assert response["Cache-Control"] == "no-store"  # the one page with the secret is never cached
    page = response.content.decode()
    row = ApiKey.objects.get(project=project)
    key = page.split('id="new-api-key">')[1].split("<")[0]
    assert key.startswith(row.prefix) and row.name == "camera 2"
    assert row.key_hash == ApiKey.hash_of(key) and key not in row.key_hash
    assert key not in alice.get(project.get_absolute_url()).content.decode()  # never shown again
    assert row.prefix in alice.get(project.get_absolute_url()).content.decode()


def test_another_user_cannot_revoke_a_key(client, user, other_user):
    project = project_with_images(user)
    row, _ = api_keys.api_key_create(project=project)
    client.force_login(other_user)
    assert client.post(reverse("api_key_revoke", args=[row.pk])).status_code == 404
    assert ApiKey.objects.get(pk=row.pk).revoked_at is None


def test_the_create_api_key_command_prints_a_working_key(client, user, capsys):
    from django.core.management import call_command
    project = project_with_images(user)
    call_command("create_api_key", user="alice", project="Colours")
    key = capsys.readouterr().out.strip().splitlines()[-1]
    assert client.get(f"{API}/projects", **bearer(key)).json()[0]["id"] == project.pk


# --- schema and docs -------------------------------------------------------------------------------

def test_the_openapi_schema_lists_the_endpoints(client):
    schema = client.get(f"{API}/openapi.json").json()
    paths = set(schema["paths"])
    for path in ("/api/v1/projects", "/api/v1/health", "/api/v1/projects/{project_id}/predict",
                 "/api/v1/projects/{project_id}/versions/{version}/predict", "/api/v1/projects/{project_id}/versions",
                 "/api/v1/projects/{project_id}/versions/{version}", "/api/v1/projects/{project_id}/runs/{run_id}",
                 "/api/v1/projects/{project_id}/classes/{name}/images", "/api/v1/projects/{project_id}/train",
                 "/api/v1/projects/{project_id}/predictions", "/api/v1/predictions/{prediction_id}/feedback"):
        assert path in paths, path


def test_the_docs_page_loads_swagger_from_this_server_not_a_cdn(client):
    page = client.get(f"{API}/docs")
    html = page.content.decode()
    assert page.status_code == 200
    assert "/static/ninja/swagger-ui-bundle.js" in html and "cdn" not in html.lower()
    assert "script-src 'self'" in page["Content-Security-Policy"]


def test_health_needs_no_key(client):
    assert client.get(f"{API}/health").json() == {"status": "ok"}


# --- errors ----------------------------------------------------------------------------------------

def test_predicting_before_any_training_is_a_404_with_a_message(client, user):
    project = project_with_images(user)
    _, key = api_keys.api_key_create(project=project)
    response = predict_raw(client, project, key, image_bytes("red"))
    assert response.status_code == 404 and "no trained version" in response.json()["error"]


def test_api_errors_have_the_right_status(client, trained, settings):
    project, run, key = trained
    assert predict_raw(client, project, key, b"not an image at all").status_code == 415
    settings.MAX_UPLOAD_MB = 1
    big = predict_raw(client, project, key, b"\xff" * (1024 * 1024 + 10))
    assert big.status_code == 413 and "limit" in big.json()["error"]
    settings.MAX_UPLOAD_MB = 25
    settings.MAX_IMAGE_PIXELS = 1000
    assert predict_raw(client, project, key, photo_bytes("sea", 1)).status_code == 413
    settings.MAX_IMAGE_PIXELS = 50_000_000
    assert predict_raw(client, project, key, photo_bytes("sea", 1), version=99).status_code == 404
    from django.core.cache import cache
    cache.clear()  # the requests above counted too
    settings.API_RATE_PER_MIN = 2
    statuses = [predict_raw(client, project, key, photo_bytes("sea", 1)).status_code for _ in range(4)]
    assert statuses[-1] == 429 and 200 in statuses
    assert "a minute" in predict_raw(client, project, key, photo_bytes("sea", 1)).json()["error"]


def test_a_multipart_request_over_the_request_cap_is_a_json_413(client, user, settings):
    project = project_with_images(user)
    _, key = api_keys.api_key_create(project=project)
    settings.MAX_IMPORT_MB = 1
    files = [upload(f"f{i}.png", os.urandom(400_000)) for i in range(4)]
    response = client.post(f"{API}/projects/{project.pk}/classes/red/images", {"files": files}, **bearer(key))
    assert response.status_code == 413 and "too large" in response.json()["error"]


def test_an_empty_file_sent_as_multipart_is_not_an_image_rather_than_too_large(client, user):
    project = project_with_images(user)
    project.runs.create(base_model="efficientnet_lite0", status="succeeded", version=1)
    _, key = api_keys.api_key_create(project=project)
    response = client.post(f"{API}/projects/{project.pk}/predict", {"files": [upload("empty.png", b"")]}, **bearer(key))
    assert response.status_code == 415 and "empty" in response.json()["error"]


# --- predictions -------------------------------------------------------------------------------------

def test_a_prediction_has_the_documented_shape(client, trained):
    project, run, key = trained
    body = predict_raw(client, project, key, photo_bytes("sea", 3), ).json()
    assert set(body) == {"id", "file", "model", "top", "predictions", "prediction_set", "abstained", "seen_in_training",
                         "unfamiliar", "similar"}
    assert body["similar"] == []  # only with ?similar=k (tests/serving/test_similar_cases.py)
    assert isinstance(body["id"], int)  # the prediction log's row: feedback names it
    assert body["model"] == {"project": project.name, "version": run.version, "base": "efficientnet_lite0"}
    assert set(body["top"]) == {"label", "probability"} and body["top"] == body["predictions"][0]
    assert sorted(p["label"] for p in body["predictions"]) == sorted(CLASS_TINTS)
    assert body["prediction_set"] == [body["top"]["label"]] and body["abstained"] is False and body["unfamiliar"] is False
    # The OpenAPI schema names every field the answer carries (clients generate types from it).
    schema = client.get(f"{API}/openapi.json").json()["components"]["schemas"]["PredictionOut"]
    assert set(schema["properties"]) == set(body)


def test_heatmap_1_adds_the_predicted_class_overlay_as_a_base64_png(client, trained):
    import base64

    from PIL import Image as PILImage
    project, run, key = trained
    path = f"{API}/projects/{project.pk}/predict?heatmap=1"
    body = client.post(path, data=photo_bytes("sea", 3), content_type="image/jpeg", **bearer(key)).json()
    png = base64.b64decode(body["heatmap_png_base64"])
    with PILImage.open(io.BytesIO(png)) as overlay:
        assert overlay.format == "PNG" and min(overlay.size) > 0
    many = client.post(f"{API}/projects/{project.pk}/versions/{run.version}/predict?heatmap=true",
                       {"files": [upload("a.jpg", photo_bytes("sea", 4)), upload("b.jpg", photo_bytes("sea", 5))]},
                       **bearer(key)).json()
    assert [bool(answer["heatmap_png_base64"]) for answer in many] == [True, True]
    plain = predict_raw(client, project, key, photo_bytes("sea", 3)).json()
    assert "heatmap_png_base64" not in plain  # only when asked: it costs time and bytes
    schema = json.dumps(client.get(f"{API}/openapi.json").json())
    assert "heatmap_png_base64" in schema


def test_several_files_are_predicted_and_a_bad_one_is_reported_by_name(client, trained):
    project, run, key = trained
    files = [upload("a.jpg", photo_bytes("sea", 30), "image/jpeg"), upload("broken.png", b"garbage"),
             upload("b.jpg", photo_bytes("sand", 31), "image/jpeg")]
    body = client.post(f"{API}/projects/{project.pk}/predict", {"files": files}, **bearer(key)).json()
    by_name = {row["file"]: row for row in body}
    assert set(by_name) == {"a.jpg", "b.jpg", "broken.png"}
    assert by_name["broken.png"]["status"] == 415 and by_name["a.jpg"]["top"]["label"] in CLASS_TINTS


def test_versions_are_numbered_and_the_published_one_answers(client, alice, trained):
    project, v1, key = trained
    v2 = train_version(project)
    assert (v1.version, v2.version) == (1, 2)
    assert predict_raw(client, project, key, photo_bytes("sea", 5)).json()["model"]["version"] == 2  # latest
    alice.post(reverse("run_publish", args=[v1.pk]))
    assert Project.objects.get(pk=project.pk).published_run_id == v1.pk
    assert predict_raw(client, project, key, photo_bytes("sea", 5)).json()["model"]["version"] == 1
    assert predict_raw(client, project, key, photo_bytes("sea", 5), version=2).json()["model"]["version"] == 2
    versions = client.get(f"{API}/projects/{project.pk}/versions", **bearer(key)).json()
    assert [(v["version"], v["published"]) for v in versions] == [(2, False), (1, True)]
    page = alice.get(project.get_absolute_url()).content.decode()
    assert 'id="versions"' in page and "Publish v2" in page and "Publish v1" not in page


def test_the_train_endpoint_starts_a_run_that_gets_a_version(client, user, queue):
    project = photo_project(user, per_class=6)
    _, key = api_keys.api_key_create(project=project)
    started = client.post(f"{API}/projects/{project.pk}/train", data={"preset": "fast"}, content_type="application/json", **bearer(key))
    assert started.status_code == 202, started.content
    run_id = started.json()["run"]
    work_off_queue()
    body = client.get(f"{API}/projects/{project.pk}/runs/{run_id}", **bearer(key)).json()
    assert body["status"] == "succeeded" and body["version"] == 1 and body["metrics"]["accuracy"] is not None
    assert client.get(f"{API}/projects/{project.pk}/versions/1", **bearer(key)).json()["run"] == run_id


def test_images_uploaded_through_the_api_get_the_upload_pages_report(client, user, settings):
    project = project_with_images(user)
    _, key = api_keys.api_key_create(project=project)
    files = [upload("new.png", image_bytes("red", shape_seed=40)), upload("red-0.png", image_bytes("red", shape_seed=0)),
             upload("junk.png", b"junk")]
    body = client.post(f"{API}/projects/{project.pk}/classes/red/images", {"files": files}, **bearer(key)).json()
    assert [(r["file"], r["status"]) for r in body["results"]] == [("new.png", "added"), ("red-0.png", "skipped"), ("junk.png", "refused")]
    assert project.images.filter(original_name="new.png").exists()
    assert client.post(f"{API}/projects/{project.pk}/classes/nope/images", {"files": files[:1]}, **bearer(key)).status_code == 404


def test_api_uploads_respect_the_owners_image_quota(client, user, settings):
    project = project_with_images(user)
    settings.QUOTA_IMAGES = project.images.count()
    _, key = api_keys.api_key_create(project=project)
    body = client.post(f"{API}/projects/{project.pk}/classes/red/images",
                       {"files": [upload("more.png", image_bytes("red", shape_seed=41))]}, **bearer(key)).json()
    assert body["results"][0]["status"] == "refused" and body["added"] == 0


# --- export bundle and parity ----------------------------------------------------------------------

def test_the_exported_bundle_predicts_what_the_app_and_the_api_predict(client, alice, trained, tmp_path):
    project, run, key = trained
    response = alice.post(reverse("run_export", args=[run.pk]), follow=True)
    assert "Export ready" in response.content.decode(), [str(m) for m in response.context["messages"]]
    bundle_zip = alice.get(reverse("run_export_download", args=[run.pk]))
    assert bundle_zip.status_code == 200
    with zipfile.ZipFile(io.BytesIO(b"".join(bundle_zip.streaming_content))) as archive:
        archive.extractall(tmp_path / "unzipped")
    bundle = next((tmp_path / "unzipped").iterdir())
    assert {"model.onnx", "labels.json", "config.json", "predict.py", "requirements.txt", "README.md", "samples.json"} <= {
        p.name for p in bundle.iterdir()}
    assert len(json.loads((bundle / "samples.json").read_text())) >= 20
    assert "meadow: 8 images" in (bundle / "README.md").read_text()

    # >= 20 unseen photo-like images, each predicted three ways.
    images = {f"new-{kind}-{i}.jpg": photo_bytes(kind, 100 + i, size=(120 + 7 * i, 90)) for kind in CLASS_TINTS for i in range(7)}
    for name, data in images.items():
        (tmp_path / name).write_bytes(data)
    from transferapp.engine.imaging import load_rgb
    in_app = {name: predictions.describe_for_api(run, name, predictions.predictor_for(run).predict_images([load_rgb(data)])[0])
              for name, data in images.items()}
    over_http = {name: predict_raw(client, project, key, data, content_type="image/jpeg", ).json() for name, data in images.items()}
    done = subprocess.run([sys.executable, "-I", str(bundle / "predict.py"), *[str(tmp_path / n) for n in images]],
                          capture_output=True, text=True, env={"PATH": os.environ["PATH"]}, timeout=300)
    assert done.returncode == 0, done.stderr
    exported = {row["file"]: row for row in map(json.loads, done.stdout.splitlines())}
    assert len(exported) == len(images) >= 20
    worst = 0.0
    for name in images:
        app, http, onnx = in_app[name], over_http[name], exported[name]
        assert app["top"]["label"] == http["top"]["label"] == onnx["top"]["label"], name
        assert http["model"] == onnx["model"] == app["model"]
        for source in (http, onnx):
            theirs = {p["label"]: p["probability"] for p in source["predictions"]}
            worst = max([worst] + [abs(theirs[p["label"]] - p["probability"]) for p in app["predictions"]])
    assert worst <= 1e-4, worst
    assert subprocess.run([sys.executable, "-I", str(bundle / "predict.py"), "--selftest"], env={"PATH": os.environ["PATH"]},
                          capture_output=True, timeout=300).returncode == 0


def _solid_square(rgb, side=120) -> bytes:
    from PIL import Image as PILImage

    out = io.BytesIO()
    PILImage.new("RGB", (side, side), rgb).save(out, format="PNG")
    return out.getvalue()


def _exported_bundle(alice, run, tmp_path):
    response = alice.post(reverse("run_export", args=[run.pk]), follow=True)
    assert "Export ready" in response.content.decode(), [str(m) for m in response.context["messages"]]
    with zipfile.ZipFile(io.BytesIO(b"".join(alice.get(reverse("run_export_download", args=[run.pk])).streaming_content))) as archive:
        archive.extractall(tmp_path / "unzipped")
    return next((tmp_path / "unzipped").iterdir())


def test_the_bundle_says_dont_know_where_the_api_does_and_its_readme_counts_the_versions_images(client, alice, trained, tmp_path):
    """Issue #32.6: the bundle ships the novelty rule, so an image unlike the training images is
    abstained (unfamiliar) in the bundle as in the API, and its self-test covers such an image; the
    model card counts the images this version trained on, not the project's images today."""
    project, run, key = trained
    meadow = project.labels.get(name="meadow")
    for i in range(3):  # added after v1 was trained: v1's card must not count them
        assert library_images.image_add(label=meadow, name=f"late-{i}.jpg", data=photo_bytes("meadow", 300 + i)).image
    bundle = _exported_bundle(alice, run, tmp_path)
    card = (bundle / "README.md").read_text()
    assert "meadow: 8 images" in card and "meadow: 11 images" not in card
    assert "don't know" in card.lower() and "always answers with one of these classes" not in card

    squares = {"grey.png": _solid_square((128, 128, 128)), "magenta.png": _solid_square((230, 20, 200))}
    familiar = {"sea.jpg": photo_bytes("sea", 200), "sand.jpg": photo_bytes("sand", 201)}
    for name, data in {**squares, **familiar}.items():
        (tmp_path / name).write_bytes(data)
    over_http = {name: predict_raw(client, project, key, data, content_type="image/png").json()
                 for name, data in {**squares, **familiar}.items()}
    assert all(over_http[name]["abstained"] and over_http[name]["unfamiliar"] for name in squares), over_http
    done = subprocess.run([sys.executable, "-I", str(bundle / "predict.py"), *[str(tmp_path / n) for n in over_http]],
                          capture_output=True, text=True, env={"PATH": os.environ["PATH"]}, timeout=300)
    assert done.returncode == 0, done.stderr
    exported = {row["file"]: row for row in map(json.loads, done.stdout.splitlines())}
    for name, http in over_http.items():
        onnx = exported[name]
        assert (onnx["abstained"], onnx["unfamiliar"], onnx["prediction_set"]) == (
            http["abstained"], http["unfamiliar"], http["prediction_set"]), (name, onnx, http)
        assert onnx["top"]["label"] == http["top"]["label"]

    # The self-test holds an image the app called unfamiliar, and checks the bundle says so too.
    samples = json.loads((bundle / "samples.json").read_text())
    assert any(row["unfamiliar"] and row["abstained"] for row in samples)
    assert all("abstained" in row and "unfamiliar" in row for row in samples)
    config = json.loads((bundle / "config.json").read_text())
    assert config["output"]["features"] and config["novelty"]["threshold"] > 0
    flipped = [dict(row, unfamiliar=not row["unfamiliar"]) if row["unfamiliar"] else row for row in samples]
    (bundle / "samples.json").write_text(json.dumps(flipped))  # a bundle that forgot the rule must fail it
    failed = subprocess.run([sys.executable, "-I", str(bundle / "predict.py"), "--selftest"], env={"PATH": os.environ["PATH"]},
                            capture_output=True, text=True, timeout=300)
    assert failed.returncode == 1 and json.loads(failed.stdout.splitlines()[-1])["different_answer"]


def test_an_export_whose_self_test_fails_is_not_offered(alice, trained, monkeypatch):
    project, run, key = trained
    from transferapp.engine import export
    recorded = export._sample_expectations

    def off_by_a_little(*args):  # what the app "computed" no longer matches what the bundle computes
        rows = recorded(*args)
        rows[0]["probabilities"] = {label: p + 0.01 for label, p in rows[0]["probabilities"].items()}
        return rows

    monkeypatch.setattr(export, "_sample_expectations", off_by_a_little)
    page = alice.post(reverse("run_export", args=[run.pk]), follow=True).content.decode()
    assert "failed its self-test" in page and 'id="export-download"' not in page
    assert alice.get(reverse("run_export_download", args=[run.pk])).status_code == 404


def test_a_run_without_a_model_has_no_export_to_download(alice, user):
    project = project_with_images(user, per_class=5)
    run = TrainingRun.objects.create(project=project, base_model="efficientnet_lite0", preset="fast", config={},
                                     classes=["blue", "red"], status=TrainingRun.Status.QUEUED)
    assert alice.get(reverse("run_export_download", args=[run.pk])).status_code == 404  # was a 500


def test_a_zip_and_loose_files_come_back_as_one_csv_made_by_the_worker(alice, trained):
    project, run, key = trained
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("batch/sea-1.jpg", photo_bytes("sea", 50))
        zf.writestr("batch/sand-1.jpg", photo_bytes("sand", 51))
        zf.writestr("batch/notes.txt", "not an image")
    files = [upload("photos.zip", archive.getvalue(), "application/zip"), upload("meadow.jpg", photo_bytes("meadow", 52), "image/jpeg"),
             upload("broken.jpg", b"nope", "image/jpeg")]
    response = alice.post(reverse("predict_batch", args=[project.pk]), {"files": files})
    assert response.status_code == 302  # a zip goes to the worker
    work_off_queue("intake")
    response = alice.get(reverse("batch_download", args=[BatchPrediction.objects.get(project=project).pk]))
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    by_file = {row["file"]: row for row in rows}
    assert set(by_file) == {"batch/sea-1.jpg", "batch/sand-1.jpg", "meadow.jpg", "broken.jpg"}
    expected = predictions.predict_checked(run, [("m", intake.check_image(photo_bytes("meadow", 52), max_bytes=10**8,
                                                                          max_pixels=10**8))])[0]
    assert by_file["meadow.jpg"]["label"] == expected["top"]["label"]
    assert abs(float(by_file["meadow.jpg"]["probability"]) - expected["top"]["probability"]) < 1e-6
    assert by_file["meadow.jpg"]["prediction_set"] == expected["top"]["label"] and by_file["meadow.jpg"]["abstained"] == "False"
    assert by_file["broken.jpg"]["label"] == "" and by_file["broken.jpg"]["error"]


def test_another_user_cannot_batch_predict_with_my_project(client, other_user, trained):
    project, run, key = trained
    client.force_login(other_user)
    response = client.post(reverse("predict_batch", args=[project.pk]), {"files": [upload("a.jpg", photo_bytes("sea", 1), "image/jpeg")]})
    assert response.status_code == 404


def test_the_export_model_command_writes_a_bundle_that_passed_its_self_test(trained, tmp_path, capsys):
    from django.core.management import call_command
    project, run, key = trained
    call_command("export_model", user="alice", project=project.name, model_version=1, out=str(tmp_path / "out"))
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["passed"] and printed["report"]["max_abs_difference"] <= 1e-4
    assert (tmp_path / "out" / "model.onnx").stat().st_size > 1_000_000
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["model"]["version"] == 1 and config["input"]["layout"] == "NCHW" and config["input"]["dtype"] == "uint8"


def test_the_train_command_starts_a_run_for_the_owners_project(user, queue, capsys):
    from django.core.management import call_command
    project = photo_project(user, per_class=5)
    call_command("train", user="alice", project=project.name, preset="fast")
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert TrainingRun.objects.get(pk=printed["run"]).project == project and queue.count == 1


def test_a_deleted_versions_number_is_never_given_again(alice, trained):
    project, v1, key = trained
    v2 = train_version(project)
    alice.post(reverse("run_delete", args=[v2.pk]))
    assert not TrainingRun.objects.filter(pk=v2.pk).exists()
    assert train_version(project).version == 3


def test_api_training_respects_the_owners_training_quota(client, user, queue, settings):
    project = project_with_images(user)
    _, key = api_keys.api_key_create(project=project)
    settings.QUOTA_RUNS = 1
    first = client.post(f"{API}/projects/{project.pk}/train", data={}, content_type="application/json", **bearer(key))
    second = client.post(f"{API}/projects/{project.pk}/train", data={}, content_type="application/json", **bearer(key))
    assert first.status_code == 202 and second.status_code == 409
    assert second.json()["error"] and TrainingRun.objects.filter(project=project).count() == 1


def test_a_version_whose_model_files_are_gone_is_a_clear_error_not_a_crash(client, user):
    project = project_with_images(user)
    run = project.runs.create(base_model="efficientnet_lite0", status="succeeded", artifact_dir="/nonexistent/run")
    training_versions.run_assign_version(run_id=run.pk)
    _, key = api_keys.api_key_create(project=project)
    response = predict_raw(client, project, key, image_bytes("red"), content_type="image/png")
    assert response.status_code == 409 and "model files are missing" in response.json()["error"]


# --- the API's rough edges (issue 32, item 11) -------------------------------------------------------

def test_a_wrong_method_is_a_json_405_like_every_other_error(client, user):
    project = project_with_images(user)
    _, key = api_keys.api_key_create(project=project)
    response = client.get(f"{API}/projects/{project.pk}/predict", **bearer(key))
    assert response.status_code == 405 and response["Content-Type"].startswith("application/json")
    assert "GET" in response.json()["error"] and "POST" in response.json()["error"]
    assert "POST" in response["Allow"]  # HTTP still names the methods that work
    assert client.delete(f"{API}/projects", **bearer(key)).json()["error"]


def test_the_upload_limit_reads_the_same_on_a_raw_body_and_on_multipart(client, trained, settings):
    """One limit, one wording: MB as the setting counts them (MAX_UPLOAD_MB=20 is 20.97e6 bytes)."""
    project, _, key = trained
    settings.MAX_UPLOAD_MB = 20
    too_big = b"\xff" * (20 * 1024 * 1024 + 10)
    raw = predict_raw(client, project, key, too_big)
    multipart = client.post(f"{API}/projects/{project.pk}/predict", {"files": [upload("big.jpg", too_big)]}, **bearer(key))
    assert raw.status_code == multipart.status_code == 413
    for message in (raw.json()["error"], multipart.json()["error"]):
        assert "the limit is 20 MB" in message and "21 MB" not in message


def test_published_version_is_the_published_one_and_effective_version_is_what_answers(client, alice, user):
    project = project_with_images(user)
    v1 = project.runs.create(base_model="efficientnet_lite0", status="succeeded", version=1)
    project.runs.create(base_model="efficientnet_lite0", status="succeeded", version=2)
    _, key = api_keys.api_key_create(project=project)
    listed = client.get(f"{API}/projects", **bearer(key)).json()[0]
    assert (listed["published_version"], listed["effective_version"]) == (None, 2)  # the page: none published
    assert "none is published" in alice.get(project.get_absolute_url()).content.decode()
    Project.objects.filter(pk=project.pk).update(published_run=v1)
    listed = client.get(f"{API}/projects", **bearer(key)).json()[0]
    assert (listed["published_version"], listed["effective_version"]) == (1, 1)


def test_the_openapi_schema_lets_try_it_out_send_an_image_and_names_the_errors(client):
    schema = client.get(f"{API}/openapi.json").json()
    for path in ("/api/v1/projects/{project_id}/predict", "/api/v1/projects/{project_id}/versions/{version}/predict"):
        operation = schema["paths"][path]["post"]
        content = operation["requestBody"]["content"]
        assert "image/*" in content and content["image/*"]["schema"]["format"] == "binary"
        files = content["multipart/form-data"]["schema"]["properties"]["files"]
        assert files["type"] == "array" and files["items"]["format"] == "binary"
        assert {"200", "401", "404", "413", "415", "429", "409"} <= set(operation["responses"])
        ref = operation["responses"]["413"]["content"]["application/json"]["schema"]["$ref"]
        assert "error" in schema["components"]["schemas"][ref.rsplit("/", 1)[-1]]["properties"]
    upload_op = schema["paths"]["/api/v1/projects/{project_id}/classes/{name}/images"]["post"]
    assert "files" in upload_op["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    assert {"200", "401", "404", "413"} <= set(upload_op["responses"])
    assert {"202", "409"} <= set(schema["paths"]["/api/v1/projects/{project_id}/train"]["post"]["responses"])
