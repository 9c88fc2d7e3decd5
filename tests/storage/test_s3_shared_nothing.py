"""Workers that share nothing: a real SeaweedFS bucket, the web (this process) and an rq worker
process with different local folders, sharing only PostgreSQL, Redis and the bucket. A project is
imported, trained, predicted with and exported end to end; with S3_PUBLIC_URL set, stored files are
handed to browsers by presigned redirects the bucket answers. Run alone with `pytest -m s3`."""
import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from django.conf import settings as django_settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from tests.conftest import image_bytes
from tests.jobs.test_failures import _database_url
from tests.library.test_dicom import SECRET_ID, dicom_with_identity
from tests.s3_support import S3_MARKS
from transferapp.jobs import sweeps
from transferapp.library import images as library_images
from transferapp.library import projects as library_projects
from transferapp.models import BatchPrediction, Image, ImportJob, TrainingRun
from transferapp.serving import exports
from transferapp.storage import blobs

pytestmark = [*S3_MARKS, pytest.mark.django_db(transaction=True)]
CLASSES, PER_CLASS = ("red", "blue", "green"), 8


@pytest.fixture
def worker(queue, tmp_path, seaweed):
    """`manage.py rqworker default intake` in its own process, with folders of its own."""
    root = tmp_path / "worker"
    env = {key: value for key, value in os.environ.items()
           if key not in ("MEDIA_ROOT", "ARTIFACTS_ROOT", "FEATURE_CACHE_DIR", "SCRATCH_DIR")}
    env.update(seaweed.env(), DATABASE_URL=_database_url(), REDIS_URL=django_settings.REDIS_URL, TORCH_THREADS="1",
               DATA_DIR=str(root / "data"), MEDIA_ROOT=str(root / "media"), SCRATCH_DIR=str(root / "scratch"))
    log = open(tmp_path / "worker.log", "wb")
    process = subprocess.Popen([sys.executable, "manage.py", "rqworker", "default", "intake"], cwd=django_settings.BASE_DIR,
                               env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    yield root
    # SIGTERM first: rq then removes the worker from Redis, which a later test's "No worker is
    # running" would otherwise count for minutes.
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _wait(fetch, done, what: str, log: Path, timeout_s: float = 300):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        row = fetch()
        if done(row):
            return row
        time.sleep(0.5)
    raise AssertionError(f"{what} did not finish: {fetch()!r}\nworker log:\n{log.read_text()[-3000:]}")


def _zip_of_classes() -> SimpleUploadedFile:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for color in CLASSES:
            for i in range(PER_CLASS):
                archive.writestr(f"{color}/{color}-{i}.png", image_bytes(color, shape_seed=i))
    return SimpleUploadedFile("colours.zip", out.getvalue(), content_type="application/zip")


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def _zip_names(response) -> list[str]:
    assert response.status_code == 200 and response.streaming  # sent in chunks, never whole in memory
    return zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content))).namelist()


def test_web_and_worker_share_only_the_database_redis_and_the_bucket(alice, user, seaweed, web_dirs, worker, tmp_path):
    log = tmp_path / "worker.log"
    project = library_projects.project_create(owner=user, name="Colours")

    # Upload: the zip goes to the bucket; the worker fetches it, stores the images there too.
    response = alice.post(reverse("import_create", args=[project.pk]), {"archive": _zip_of_classes()})
    assert response.status_code == 302
    job = _wait(lambda: ImportJob.objects.get(project=project), lambda j: j.is_finished, "the import", log)
    assert (job.status, job.accepted) == ("done", len(CLASSES) * PER_CLASS), job.error
    images = seaweed.keys(f"projects/{project.pk}/images/")
    assert len(images) == len(CLASSES) * PER_CLASS and len(seaweed.keys(f"projects/{project.pk}/thumbs/")) == len(images)
    assert seaweed.keys("imports/") == []  # the uploaded zip is gone once imported

    # Train (fast preset) on the worker: it fetches the images, publishes the model folder.
    response = alice.post(reverse("training_start", args=[project.pk]), {"base_model": "efficientnet_lite0", "preset": "fast"})
    assert response.status_code == 302
    run = _wait(lambda: TrainingRun.objects.get(project=project), lambda r: r.is_finished, "the training", log)
    assert run.status == "succeeded", run.error
    assert run.artifact_dir == f"artifacts/project-{project.pk}/run-{run.pk}"  # a bucket prefix, no worker path
    model_keys = seaweed.keys(f"{run.artifact_dir}/")
    assert f"{run.artifact_dir}/meta.json" in model_keys and f"{run.artifact_dir}/report/provenance.json" in model_keys

    # Predict on the web: the model comes from the bucket into the web's own scratch folder.
    prediction = alice.post(reverse("predict", args=[project.pk]),
                            {"run": run.pk, "files": [SimpleUploadedFile("new.png", image_bytes("green", shape_seed=3))]},
                            HTTP_X_REQUESTED_WITH="XMLHttpRequest")
    assert prediction.status_code == 200
    assert '<td class="top-class"><strong>green' in prediction.content.decode()

    # A batch (any zip goes to the worker): its inputs go to the bucket, the worker fetches them and
    # publishes the CSV and thumbnails there; the web shows them and streams the CSV from it.
    shots = io.BytesIO()
    with zipfile.ZipFile(shots, "w") as archive:
        for i, color in enumerate(CLASSES * 2):
            archive.writestr(f"shot-{i}.png", image_bytes(color, shape_seed=20 + i))
        archive.writestr("broken.png", b"not an image")
    response = alice.post(reverse("predict_batch", args=[project.pk]),
                          {"files": [SimpleUploadedFile("shots.zip", shots.getvalue(), content_type="application/zip")]})
    assert response.status_code == 302, response.content[:300]
    batch = _wait(lambda: BatchPrediction.objects.get(project=project), lambda b: b.is_finished, "the batch", log)
    assert (batch.status, batch.done, batch.refused) == ("done", 7, 1), batch.error
    assert batch.folder.startswith("batches/") and batch.csv_path == f"{batch.folder}/predictions.csv"
    assert sorted(seaweed.keys(f"{batch.folder}/")) == sorted(
        [batch.csv_path] + [f"{batch.folder}/thumbs/{i}.jpg" for i in range(7) if i != 6])  # inputs gone; row 6 is broken.png
    panel = alice.get(reverse("predict", args=[project.pk]) + f"?batch={batch.pk}").content.decode()
    assert panel.count('class="pred-thumb" src="data:image/jpeg;base64,') == 6
    csv_reply = alice.get(reverse("batch_download", args=[batch.pk]))
    assert csv_reply.status_code == 200 and csv_reply.streaming and csv_reply["Content-Type"] == "text/csv; charset=utf-8"
    lines = b"".join(csv_reply.streaming_content).decode().splitlines()
    assert lines[0].startswith("file,label") and len(lines) == 8 and "broken.png" in lines[-1]

    # Export on the web: the bundle goes to the bucket, and is streamed back from it.
    response = alice.post(reverse("run_export", args=[run.pk]))
    assert response.status_code == 302
    assert f"{run.artifact_dir}/export/bundle.zip" in seaweed.keys(f"{run.artifact_dir}/export/")
    assert any(name.endswith("predict.py") for name in _zip_names(alice.get(reverse("run_export_download", args=[run.pk]))))
    assert any(name.endswith("/meta.json") for name in _zip_names(alice.get(reverse("run_download", args=[run.pk]))))

    # A thumbnail, streamed from the bucket after the ownership check (another user gets a 404).
    image = Image.objects.filter(project=project).first()
    thumb = alice.get(reverse("image_thumbnail", args=[image.pk]))
    assert thumb.status_code == 200 and thumb.streaming
    stored = seaweed.client().get_object(Bucket=seaweed.bucket, Key=image.thumbnail.name)["Body"].read()
    assert b"".join(thumb.streaming_content) == stored

    # Nothing crossed between the two machines' folders: each holds only its own scratch.
    web, work = _files(web_dirs), _files(worker)
    web_images = [p for p in web if "/projects/" in p.as_posix()]
    # The web fetched only the export's sample images, into its own scratch cache.
    assert all("web/scratch/media/" in p.as_posix() for p in web_images) and len(web_images) <= exports.SAMPLES
    assert not [p for p in web if "feature-cache" in p.as_posix()], "the web computed features"
    assert not _files(web_dirs / "media") and not _files(worker / "media"), "media written to a local folder"
    fetched = [p for p in work if f"scratch/media/projects/{project.pk}/images/" in p.as_posix()]
    assert len(fetched) == len(images)  # the worker fetched every image it trained on
    assert not [p for p in work if "/export/" in p.as_posix()], "the worker holds the web's export"
    assert not [p for p in work if "/work/" in p.as_posix()], "the worker kept the batch's inputs"
    assert [p for p in web if p.name == "bundle.zip"] and [p for p in work if p.name == "meta.json"]


def test_fetching_and_publishing_twice_is_idempotent(user, seaweed, web_dirs, tmp_path):
    """A job run again (its worker was lost) writes the same keys and refetches nothing it has."""
    project = library_projects.project_create(owner=user, name="Again")
    label = library_projects.label_create(project=project, name="red")
    image = library_images.image_add(label=label, name="a.png", data=image_bytes("red")).image
    first = blobs.media_path(image.file.name)
    inode = first.stat().st_ino
    assert blobs.media_path(image.file.name).stat().st_ino == inode  # served from the scratch cache
    run = TrainingRun.objects.create(project=project, base_model="efficientnet_lite0", preset="fast", config={})
    for _ in range(2):
        with blobs.training_into(run) as folder:
            (folder / "meta.json").write_text("{}")
            (folder / "weights.pt").write_bytes(b"w" * 1000)
        blobs.artifact_publish(run)
    assert sorted(seaweed.keys(f"{blobs.artifact_name(run)}/")) == [
        f"{blobs.artifact_name(run)}/meta.json", f"{blobs.artifact_name(run)}/weights.pt"]
    run.artifact_dir = blobs.artifact_record(run)
    mirrored = blobs.artifact_folder(run)
    assert (mirrored / "weights.pt").read_bytes() == b"w" * 1000


# --- presigned redirects ----------------------------------------------------------------------------
# With S3_PUBLIC_URL set, the web answers a download with a 302 to a short-lived presigned URL at
# that address, made only after the ownership check, and the bucket itself sends the file: fetched
# here as a browser would, by a plain HTTP client without credentials. S3_PUBLIC_URL names the same
# server as S3_ENDPOINT_URL (127.0.0.1) by another name (localhost), as a public address differs from
# the one the web reaches: a URL signed for the internal endpoint fails these tests.

EXPIRE_S = 90  # S3_URL_EXPIRE_S while S3_PUBLIC_URL is set


@pytest.fixture
def public(settings, seaweed, web_dirs):
    """S3_PUBLIC_URL set: the origin browsers are sent to."""
    settings.S3_PUBLIC_URL = f"http://localhost:{urlsplit(seaweed.endpoint).port}"
    settings.S3_URL_EXPIRE_S = EXPIRE_S
    return settings.S3_PUBLIC_URL


def _fetch(url: str) -> tuple[int, bytes, dict]:
    """GET as a browser following the redirect would: no credentials, no boto3."""
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return reply.status, reply.read(), dict(reply.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def _signed(response, public: str, key: str) -> dict:
    """The redirect's presigned URL, checked to point at the public address and the key; its query."""
    assert response.status_code == 302 and response["Cache-Control"] == "private, no-store"
    url = urlsplit(response["Location"])
    assert f"{url.scheme}://{url.netloc}" == public and url.path == f"/{django_settings.S3_BUCKET}/{key}"
    query = parse_qs(url.query)
    assert query["X-Amz-Expires"] == [str(EXPIRE_S)] and "X-Amz-Credential" in query
    return query


def _tampered(url: str) -> str:
    parts = urlsplit(url)
    query = {name: values[0] for name, values in parse_qs(parts.query).items()}
    signature = query["X-Amz-Signature"]
    query["X-Amz-Signature"] = signature[:-1] + ("0" if signature[-1] != "0" else "1")
    return parts._replace(query=urlencode(query)).geturl()


def _image(user):
    project = library_projects.project_create(owner=user, name="Signed")
    label = library_projects.label_create(project=project, name="red")
    return project, library_images.image_add(label=label, name="a.png", data=image_bytes("red")).image


def test_owner_gets_a_presigned_redirect_that_the_bucket_answers_with_the_stored_bytes(alice, user, seaweed, public):
    _, image = _image(user)
    for view, field in (("image_file", image.file), ("image_thumbnail", image.thumbnail)):
        response = alice.get(reverse(view, args=[image.pk]))
        _signed(response, public, field.name)
        stored = seaweed.client().get_object(Bucket=seaweed.bucket, Key=field.name)["Body"].read()
        assert _fetch(response["Location"])[:2] == (200, stored), view
        assert _fetch(_tampered(response["Location"]))[0] == 403, view


def test_another_user_gets_404_and_no_url(user, other_user, public):
    _, image = _image(user)
    mallory = Client()
    mallory.force_login(other_user)
    for view in ("image_file", "image_thumbnail"):
        response = mallory.get(reverse(view, args=[image.pk]))
        assert response.status_code == 404 and not response.has_header("Location")
        assert "X-Amz-" not in response.content.decode()


def test_a_dicom_is_rendered_by_the_web_never_redirected_to_its_identifying_file(alice, user, public):
    project = library_projects.project_create(owner=user, name="Scans")
    label = library_projects.label_create(project=project, name="mr")
    image = library_images.image_add(label=label, name="scan.dcm", data=dicom_with_identity()).image
    assert image.file.name.endswith(".dcm")
    response = alice.get(reverse("image_file", args=[image.pk]))
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    assert SECRET_ID.encode() not in response.content


def test_export_download_redirects_to_a_signed_attachment_that_is_the_bundle_zip(alice, user, other_user, seaweed,
                                                                                public):
    project, _ = _image(user)
    run = TrainingRun.objects.create(project=project, base_model="efficientnet_lite0", preset="fast", config={},
                                     status=TrainingRun.Status.SUCCEEDED)
    bundle = io.BytesIO()
    with zipfile.ZipFile(bundle, "w") as archive:
        archive.writestr("signed-v1/predict.py", "print('hi')\n")
    with blobs.training_into(run) as folder:  # what exports.run_export leaves, without a trained model
        (folder / "meta.json").write_text("{}")
        (folder / "export").mkdir()
        (folder / "export" / "bundle.zip").write_bytes(bundle.getvalue())
        (folder / "export" / "result.json").write_text(json.dumps({"passed": True, "report": {}, "name": "signed-v1"}))
    blobs.artifact_publish(run)
    run.artifact_dir = blobs.artifact_record(run)
    run.save(update_fields=["artifact_dir"])

    response = alice.get(reverse("run_export_download", args=[run.pk]))
    query = _signed(response, public, f"{run.artifact_dir}/export/bundle.zip")
    assert query["response-content-disposition"] == ['attachment; filename="signed-v1.zip"']
    status, body, headers = _fetch(response["Location"])
    assert status == 200 and headers["Content-Disposition"] == 'attachment; filename="signed-v1.zip"'
    assert zipfile.ZipFile(io.BytesIO(body)).namelist() == ["signed-v1/predict.py"]
    assert _fetch(_tampered(response["Location"]))[0] == 403
    mallory = Client()
    mallory.force_login(other_user)
    refused = mallory.get(reverse("run_export_download", args=[run.pk]))
    assert refused.status_code == 404 and not refused.has_header("Location")


def test_csp_allows_images_from_the_public_origin(alice, user, public):
    _, image = _image(user)
    policy = alice.get(reverse("project_list"))["Content-Security-Policy"]
    img_src = next(d.split()[1:] for d in policy.split("; ") if d.startswith("img-src "))
    location = urlsplit(alice.get(reverse("image_thumbnail", args=[image.pk]))["Location"])
    assert img_src == ["'self'", public, "data:", "blob:"]
    assert f"{location.scheme}://{location.netloc}" in img_src  # where the redirect sends the browser
    assert "script-src 'self';" in policy  # the bucket is allowed for images only


def test_a_machine_forgets_what_it_fetched_of_data_deleted_on_another(user, seaweed, web_dirs, tmp_path, settings):
    """The machine that deletes a project removes the bucket's copy and its own; each worker's reaper
    removes what its own scratch folder fetched (images, thumbnails, models, batch tables, features)."""
    gone, kept = (library_projects.project_create(owner=user, name=name) for name in ("Gone", "Kept"))
    images = [library_images.image_add(label=library_projects.label_create(project=project, name="red"), name="a.png",
                                 data=image_bytes("red", shape_seed=seed)).image for project, seed in ((gone, 1), (kept, 2))]
    copies = blobs.media_paths([images[0].file.name, images[0].thumbnail.name, images[1].file.name])
    run = TrainingRun.objects.create(project=gone, base_model="efficientnet_lite0", preset="fast", config={})
    with blobs.training_into(run) as folder:
        (folder / "meta.json").write_text("{}")
    blobs.artifact_publish(run)
    TrainingRun.objects.filter(pk=run.pk).update(artifact_dir=blobs.artifact_record(run))
    model_copy = blobs.artifact_workdir(run)
    features = [Path(settings.FEATURE_CACHE_DIR) / "efficientnet_lite0" / image.sha256[:2] / f"{image.sha256}.plain.npy"
                for image in images]
    for path in features:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"a cached feature")
    long_ago = time.time() - 2 * blobs.RECENT_S
    for path in copies:
        os.utime(path, (long_ago, long_ago))

    mine = settings.SCRATCH_DIR, settings.FEATURE_CACHE_DIR
    settings.SCRATCH_DIR, settings.FEATURE_CACHE_DIR = tmp_path / "other", tmp_path / "other" / "feature-cache"
    library_projects.project_delete(project=gone)  # on another machine
    settings.SCRATCH_DIR, settings.FEATURE_CACHE_DIR = mine
    assert all(path.exists() for path in copies + features) and model_copy.is_dir()
    assert seaweed.keys(f"projects/{gone.pk}/") == []

    assert sweeps.scratch_sweep() == 4  # the image, its thumbnail, the model folder, the feature
    assert not copies[0].exists() and not copies[1].exists() and not model_copy.exists() and not features[0].exists()
    assert copies[2].exists() and features[1].exists()  # another project's image and feature stay
    assert sweeps.scratch_sweep() == 0


def test_a_machine_releases_what_jobs_lost_with_its_killed_worker_left_in_its_scratch(user, seaweed, web_dirs):
    """A killed worker leaves a model folder marked busy (which would stop the cache's eviction for
    good) and fetched work files; the next sweep on that machine releases those of jobs no longer
    running there, and keeps those of jobs that are."""
    project = library_projects.project_create(owner=user, name="Lost")
    lost, live = (TrainingRun.objects.create(project=project, base_model="efficientnet_lite0", preset="fast", config={},
                                             status="running") for _ in range(2))
    for run in (lost, live):
        with blobs.training_into(run):
            pass
        (blobs.artifact_workdir(run) / blobs.BUSY).touch()  # as a training killed inside training_into leaves it
    TrainingRun.objects.filter(pk=lost.pk).update(status="queued", attempt=2)  # its try 2 waits for a worker
    ImportJob.objects.create(project=project, source_name="a.zip", upload_path="imports/a.zip", status="running")
    BatchPrediction.objects.create(project=project, source_name="s.zip", folder="batches/b", status="running", attempt=2)
    scratch = Path(django_settings.SCRATCH_DIR) / "work"
    left = [scratch / "imports" / "a.zip", scratch / "imports" / "gone.zip", scratch / "batches" / "b" / "try-2" / "inputs" / "0",
            scratch / "batches" / "b" / "try-1" / "inputs" / "0"]
    long_ago = time.time() - 2 * blobs.RECENT_S
    for path in left:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    for path in [*left, scratch / "batches" / "b" / "try-1", scratch / "batches" / "b" / "try-2"]:
        os.utime(path, (long_ago, long_ago))

    assert sweeps.scratch_sweep() == 3  # the lost run's busy mark, an ended import's zip, the batch's first try
    assert not (blobs.artifact_workdir(lost) / blobs.BUSY).exists() and (blobs.artifact_workdir(live) / blobs.BUSY).exists()
    assert [path.exists() for path in left] == [True, False, True, False]
