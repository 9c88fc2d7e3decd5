"""Workers that share nothing: a real SeaweedFS bucket, the web (this process) and an rq worker
process with different local folders, sharing only PostgreSQL, Redis and the bucket. A project is
imported, trained, predicted with and exported end to end. Run alone with `pytest -m s3`."""
import io
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from tests.conftest import image_bytes
from tests.s3_support import S3_MARKS, start_seaweedfs, stop_seaweedfs
from tests.test_failures import _database_url
from transferapp import blobs, exports, services
from transferapp.models import BatchPrediction, Image, ImportJob, TrainingRun
from transferapp.settings import s3_storage

pytestmark = [*S3_MARKS, pytest.mark.django_db(transaction=True)]
CLASSES, PER_CLASS = ("red", "blue", "green"), 8


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory):
    server = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    yield server
    stop_seaweedfs(server)


@pytest.fixture
def web_dirs(settings, tmp_path, seaweed):
    """This process is the web: its own folders, media in the bucket."""
    root = tmp_path / "web"
    settings.S3_BUCKET, settings.S3_ENDPOINT_URL, settings.S3_PUBLIC_URL = seaweed.bucket, seaweed.endpoint, ""
    settings.STORAGES = {**settings.STORAGES, "default": s3_storage(seaweed.bucket, seaweed.endpoint, seaweed.access_key,
                                                                    seaweed.secret_key, seaweed.region)}
    settings.MEDIA_ROOT, settings.SCRATCH_DIR = root / "media", root / "scratch"
    settings.ARTIFACTS_ROOT, settings.FEATURE_CACHE_DIR = root / "media" / "artifacts", root / "scratch" / "feature-cache"
    return root


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
    project = services.project_create(owner=user, name="Colours")

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
    assert csv_reply.status_code == 200 and csv_reply.streaming
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
    project = services.project_create(owner=user, name="Again")
    label = services.label_create(project=project, name="red")
    image = services.image_add(label=label, name="a.png", data=image_bytes("red")).image
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
