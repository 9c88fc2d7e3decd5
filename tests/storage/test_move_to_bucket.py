"""`manage.py move_files_to_bucket`: an installation that kept its files on the disk moves them into
a real SeaweedFS bucket, and the app in bucket mode reads them there. Run alone with `pytest -m s3`."""
import io
import os
import shutil
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from tests.conftest import image_bytes
from tests.s3_support import S3_MARKS, use_bucket
from transferapp.library import images as library_images
from transferapp.library import projects as library_projects
from transferapp.models import BatchPrediction, ImportJob, TrainingRun
from transferapp.serving import batch as serving_batch
from transferapp.storage import blobs

pytestmark = [*S3_MARKS, pytest.mark.django_db(transaction=True)]
CSV, THUMB = BatchPrediction.CSV, f"{BatchPrediction.THUMBS}/0.jpg"


def _batch(project, run, finished_at) -> BatchPrediction:
    """A finished batch as the worker leaves it in local mode: its CSV and thumbnails, inputs gone."""
    folder = Path(blobs.folder_record(f"batches/{uuid.uuid4().hex}"))
    (folder / BatchPrediction.THUMBS).mkdir(parents=True)
    rows = [{"file": "a.png", "top": {"label": "red", "probability": 0.9}, "prediction_set": ["red"], "abstained": False},
            {"file": "b.png", "error": "not an image"}]
    (folder / CSV).write_text(serving_batch.to_csv(rows))
    (folder / THUMB).write_bytes(image_bytes("red", size=(32, 32), fmt="JPEG"))
    return BatchPrediction.objects.create(project=project, run=run, version=1, source_name="2 files", folder=str(folder),
                                          csv_path=str(folder / CSV), status="done", total=2, done=2, refused=1,
                                          finished_at=finished_at)


def _local_install(user):
    """What local mode left: images with thumbnails, a second try's model folder (with a marker and
    a half-written file of a killed worker), a batch, one past BATCH_KEPT_DAYS, a zip waiting for import."""
    project = library_projects.project_create(owner=user, name="Moved")
    label = library_projects.label_create(project=project, name="red")
    images = [library_images.image_add(label=label, name=f"{i}.png", data=image_bytes("red", shape_seed=i)).image for i in range(3)]
    run = TrainingRun.objects.create(project=project, base_model="efficientnet_lite0", preset="fast", config={},
                                     status="succeeded", version=1, attempt=2)
    with blobs.training_into(run) as folder:
        (folder / "meta.json").write_text("{}")
        (folder / "weights.pt").write_bytes(os.urandom(50_000))
        (folder / "report").mkdir()
        (folder / "report" / "provenance.json").write_text('{"run": 1}')
        (folder / ".weights.pt.abc.part").write_bytes(b"half")
    (folder / blobs.BUSY).touch()
    run.artifact_dir = blobs.artifact_record(run)
    run.save(update_fields=["artifact_dir"])
    batch = _batch(project, run, timezone.now())
    expired = _batch(project, run, timezone.now() - timedelta(days=django_settings.BATCH_KEPT_DAYS + 1))
    waiting = ImportJob.objects.create(project=project, source_name="more.zip",
                                       upload_path=blobs.keep_upload(SimpleUploadedFile("more.zip", b"PK zip"), "imports"))
    return images, run, batch, expired, waiting


def _move(*args) -> str:
    out = io.StringIO()
    call_command("move_files_to_bucket", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def _object(seaweed, key: str) -> bytes:
    return seaweed.client().get_object(Bucket=seaweed.bucket, Key=key)["Body"].read()


def test_moves_the_local_files_into_the_bucket_where_the_app_reads_them(alice, user, seaweed, settings, tmp_path):
    images, run, batch, expired, waiting = _local_install(user)
    media, old_folder, old_batch = Path(settings.MEDIA_ROOT), Path(run.artifact_dir), Path(batch.folder)
    use_bucket(settings, seaweed, tmp_path / "scratch")

    output = _move()
    assert "Uploaded 12 files" in output and "pointed 1 training runs, 1 batch predictions, 1 import jobs" in output

    for image in images:  # keyed by their storage names, the same in both modes
        for name in (image.file.name, image.thumbnail.name):
            assert _object(seaweed, name) == (media / name).read_bytes()
    run.refresh_from_db()
    assert run.artifact_dir == f"artifacts/project-{run.project_id}/run-{run.pk}-try-2" == blobs.artifact_name(run)
    assert sorted(seaweed.keys(f"{run.artifact_dir}/")) == [f"{run.artifact_dir}/{rel}" for rel in
                                                            ("meta.json", "report/provenance.json", "weights.pt")]
    assert _object(seaweed, f"{run.artifact_dir}/weights.pt") == (old_folder / "weights.pt").read_bytes()
    batch.refresh_from_db()
    assert batch.folder == f"batches/{old_batch.name}" and batch.csv_path == f"{batch.folder}/{CSV}"
    assert sorted(seaweed.keys(f"{batch.folder}/")) == [f"{batch.folder}/{CSV}", f"{batch.folder}/{THUMB}"]
    expired.refresh_from_db()  # left for the reaper to delete
    assert Path(expired.folder).is_absolute() and not seaweed.keys(f"batches/{Path(expired.folder).name}/")
    waiting.refresh_from_db()
    assert waiting.upload_path.startswith("imports/") and _object(seaweed, waiting.upload_path) == b"PK zip"

    # The app in bucket mode reads them: the model folder, the batch's table and CSV, a thumbnail.
    assert (blobs.artifact_folder(run) / "weights.pt").read_bytes() == (old_folder / "weights.pt").read_bytes()
    table = serving_batch.table_rows(batch, "file")
    assert [row["file"] for row in table] == ["a.png", "b.png"] and table[0]["thumbnail"].startswith("data:image/jpeg;base64,")
    download = alice.get(reverse("batch_download", args=[batch.pk]))
    assert download.status_code == 200 and b"".join(download.streaming_content) == (old_batch / CSV).read_bytes()
    thumb = alice.get(reverse("image_thumbnail", args=[images[0].pk]))
    assert thumb.status_code == 200 and b"".join(thumb.streaming_content) == (media / images[0].thumbnail.name).read_bytes()
    assert (old_folder / "weights.pt").exists() and (old_batch / CSV).exists()  # the operator deletes them

    # Run again: the images are there already, the moved rows are left alone. Interrupted before a
    # row was rewritten: its files are there already, only the row changes.
    again = _move()
    assert "Uploaded 0 files (0 bytes); 6 files" in again and "pointed 0 training runs" in again
    TrainingRun.objects.filter(pk=run.pk).update(artifact_dir=str(old_folder))
    resumed = _move()
    assert "Uploaded 0 files (0 bytes); 9 files" in resumed and "pointed 1 training runs" in resumed
    run.refresh_from_db()
    assert run.artifact_dir == blobs.artifact_name(run)


def test_dry_run_uploads_and_rewrites_nothing(user, seaweed, settings, tmp_path):
    images, run, batch, _, waiting = _local_install(user)
    use_bucket(settings, seaweed, tmp_path / "scratch")
    before = set(seaweed.keys())

    output = _move("--dry-run")
    assert "Would upload 12 files" in output and "would point 1 training runs, 1 batch predictions, 1 import jobs" in output
    assert f"would point training run {run.pk} at {blobs.artifact_name(run)}" in output
    assert set(seaweed.keys()) == before
    assert TrainingRun.objects.get(pk=run.pk).artifact_dir == run.artifact_dir
    assert BatchPrediction.objects.get(pk=batch.pk).folder == batch.folder
    assert ImportJob.objects.get(pk=waiting.pk).upload_path == waiting.upload_path


def test_a_missing_file_fails_the_command_and_keeps_its_rows_local(user, seaweed, settings, tmp_path):
    images, run, batch, _, _ = _local_install(user)
    shutil.rmtree(run.artifact_dir)
    (Path(settings.MEDIA_ROOT) / images[0].thumbnail.name).unlink()
    use_bucket(settings, seaweed, tmp_path / "scratch")

    errors = io.StringIO()
    with pytest.raises(CommandError, match="2 files or folders could not be moved"):
        call_command("move_files_to_bucket", stdout=io.StringIO(), stderr=errors)
    assert f"FAILED {images[0].thumbnail.name}" in errors.getvalue() and f"training run {run.pk}: its folder" in errors.getvalue()
    run_before = run.artifact_dir
    run.refresh_from_db()
    batch.refresh_from_db()
    assert run.artifact_dir == run_before and batch.folder.startswith("batches/")  # the others moved


def test_refuses_without_a_bucket(settings):
    settings.S3_BUCKET = ""
    with pytest.raises(CommandError, match="S3_BUCKET is not set"):
        call_command("move_files_to_bucket")
