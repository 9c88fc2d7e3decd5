"""Large batch predictions run in the worker: a row (the truth), a real rq job on the intake queue,
progress the page polls, a CSV equal to direct predictions, recovery, retention and ownership."""
import csv
import io
import re
import time
import zipfile
from datetime import timedelta
from pathlib import Path

import django_rq
import pytest
from django.conf import settings
from django.core.cache import cache
from django.urls import reverse
from django.utils import timezone

from tests.api_support import photo_bytes, photo_project, train_version, work_off_queue
from tests.browser_support import BackgroundWorker
from tests.factories import project_with_images, upload
from transferapp.accounts import throttle
from transferapp.jobs import checks, reaper
from transferapp.library import intake
from transferapp.library import projects as library_projects
from transferapp.models import BatchPrediction
from transferapp.serving import batch as serving_batch
from transferapp.serving import predictions

pytestmark = pytest.mark.django_db(transaction=True)

KINDS = ("meadow", "sea", "sand")
LONG_AGO = timedelta(hours=1)


@pytest.fixture(autouse=True)
def fresh_rate_limits(embedded_redis):
    cache.clear()


@pytest.fixture
def trained(user, queue):
    project = photo_project(user, per_class=6)
    return project, train_version(project)


def photos(count, first_seed=100):
    """(name, bytes) of `count` photo-like JPEGs, the classes in turn."""
    return [(f"{KINDS[i % 3]}-{i}.jpg", photo_bytes(KINDS[i % 3], first_seed + i)) for i in range(count)]


def zip_of(members) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in members:
            archive.writestr(name, data)
    return out.getvalue()


def direct(run, data) -> dict:
    """What the predict code answers for this one image alone."""
    checked = intake.check_image(data, max_bytes=10**8, max_pixels=10**8)
    return predictions.predict_checked(run, [("x", checked)])[0]


def send_batch(client, project, files) -> BatchPrediction:
    response = client.post(reverse("predict_batch", args=[project.pk]), {"files": files})
    assert response.status_code == 302, response.content[:300]
    batch = BatchPrediction.objects.get(project=project)
    assert response["Location"] == f"{reverse('predict', args=[project.pk])}?batch={batch.pk}#batch-live"
    return batch


def poll_while_the_worker_runs(client, batch, on_panel=None) -> tuple[list[int], float]:
    """Run a real worker in a thread and poll the live panel as htmx does; returns the counts the
    panel showed ("N of M images predicted") and the seconds the worker took. on_panel(text) is
    called with every panel."""
    seen, started = [], time.monotonic()
    url = reverse("batch_detail", args=[batch.pk]) + "?live=1"
    with BackgroundWorker("intake") as worker:
        while worker.thread.is_alive():
            panel = client.get(url, HTTP_HX_REQUEST="true").content.decode()
            shown = re.search(r"(\d+) of (\d+) images predicted", panel)
            if shown:
                seen.append(int(shown.group(1)))
            if on_panel:
                on_panel(panel)
            time.sleep(0.05)
    elapsed = time.monotonic() - started
    final = client.get(url, HTTP_HX_REQUEST="true")
    assert final.status_code == 286  # htmx stops polling
    return seen, elapsed


def csv_rows(client, batch) -> list[dict]:
    response = client.get(reverse("batch_download", args=[batch.pk]))
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    assert 'filename="landscapes-v1-predictions.csv"' in response["Content-Disposition"]
    return list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))


def test_a_large_zip_is_predicted_in_the_worker_with_progress_and_a_csv_equal_to_direct_predictions(alice, user, trained):
    project, run = trained
    images = photos(100)
    members = images[:50] + [("broken.jpg", b"this is not a jpeg")] + images[50:] + [("notes.txt", b"ignored")]
    batch = send_batch(alice, project, [upload("shots.zip", zip_of(members), "application/zip")])
    assert batch.status == "queued" and batch.run == run and (inputs_of(batch) / BatchPrediction.MANIFEST).exists()
    queued_panel = alice.get(reverse("predict", args=[project.pk]) + f"?batch={batch.pk}").content.decode()
    assert "Waiting for the worker" in queued_panel and 'class="progress' in queued_panel

    # The minute's allowance is used up: the worker pauses after its first chunk and says so; it
    # goes on when a new minute starts (here: when the test sees the pause and clears the count).
    allowance_key = f"throttle:predict:{user.pk}"
    cache.set(allowance_key, settings.PREDICT_RATE_PER_MIN, timeout=60)
    paused = []

    def new_minute_once_paused(panel):
        if "Paused: 120 predictions a minute are allowed" in panel and not paused:
            paused.append(panel)
            cache.delete(allowance_key)

    seen, _ = poll_while_the_worker_runs(alice, batch, new_minute_once_paused)
    assert paused
    batch.refresh_from_db()
    assert batch.status == "done" and (batch.total, batch.done, batch.refused) == (101, 101, 1)
    assert any(0 < count < 101 for count in seen), seen  # the bar moved while the worker ran
    assert seen == sorted(seen)
    rows = csv_rows(alice, batch)
    assert [row["file"] for row in rows] == [name for name, _ in members[:-1]]  # flat zip, input order, .txt skipped
    broken = rows[50]
    assert broken["error"] and broken["label"] == "" and broken["probability"] == ""
    # The same images through the request's code path (batch.predict_rows, chunks of 32 as in the
    # worker): equal within 1e-6 (the CSV rounds to 6 decimals). One image predicted alone differs
    # a little more (float32 sums in another order for another batch size): same label, within 1e-5.
    in_request = serving_batch.predict_rows(run, members[:-1])
    for (name, data), row, expected in zip(images, rows[:50] + rows[51:], in_request[:50] + in_request[51:]):
        assert row["label"] == expected["top"]["label"] == direct(run, data)["top"]["label"], name
        assert abs(float(row["probability"]) - expected["top"]["probability"]) < 1e-6, name
        assert abs(float(row["probability"]) - direct(run, data)["top"]["probability"]) < 1e-5, name
        assert row["prediction_set"] == ";".join(expected["prediction_set"]) and row["abstained"] == str(expected["abstained"])
    assert not inputs_of(batch).exists()  # the uploaded zip is gone once predicted
    assert len(list((Path(batch.folder) / BatchPrediction.THUMBS).iterdir())) == 100

    # The table: the first 100 of 101 rows, with thumbnails, sorted by confidence on request.
    page = alice.get(reverse("predict", args=[project.pk]) + f"?batch={batch.pk}&order=low").content.decode()
    assert 'id="batch-download"' in page and "the first 100 of 101 rows" in page
    shown = [float(c) for c in re.findall(r'<tr class="prediction[^"]*" data-confidence="([-0-9.]+)"', page)]
    assert len(shown) == 100 and shown == sorted(shown) and shown[0] == -1  # the unreadable file first
    assert page.count('class="pred-thumb" src="data:image/jpeg;base64,') == 99
    high = alice.get(reverse("predict", args=[project.pk]) + f"?batch={batch.pk}&order=high").content.decode()
    ranked = [float(c) for c in re.findall(r'<tr class="prediction[^"]*" data-confidence="([-0-9.]+)"', high)]
    every = sorted((float(row["probability"]) for row in rows if row["probability"]), reverse=True)
    assert ranked == every[:100]


def test_loose_images_go_to_the_worker_above_the_inline_limit_and_count_against_the_allowance(alice, user, trained, settings):
    project, run = trained
    settings.BATCH_INLINE_MAX_IMAGES, settings.PREDICT_RATE_PER_MIN = 5, 9
    small = [upload(name, data, "image/jpeg") for name, data in photos(3)]
    response = alice.post(reverse("predict_batch", args=[project.pk]), {"files": small})
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")  # at once, as before
    assert len(list(csv.DictReader(io.StringIO(response.content.decode())))) == 3 and not BatchPrediction.objects.exists()

    images = photos(6, first_seed=300)
    files = [upload(name, data, "image/jpeg") for name, data in images[:3]] + [upload("bad.jpg", b"nope", "image/jpeg")]
    files += [upload(name, data, "image/jpeg") for name, data in images[3:]]
    batch = send_batch(alice, project, files)
    assert batch.source_name == "7 files"
    poll_while_the_worker_runs(alice, batch)
    rows = csv_rows(alice, batch)
    assert [row["file"] for row in rows] == [f.name for f in files]
    assert rows[3]["error"] and all(row["label"] for i, row in enumerate(rows) if i != 3)
    assert rows[0]["label"] == direct(run, images[0][1])["top"]["label"]
    # 3 at once + 6 images by the worker (the unreadable one is not counted): the allowance of 9 is used up.
    assert throttle.predictions_per_user().exceeded(str(user.pk))
    refused = alice.post(reverse("predict", args=[project.pk]), {"files": [upload("a.jpg", photo_bytes("sea", 1), "image/jpeg")]},
                         HTTP_X_REQUESTED_WITH="XMLHttpRequest")
    assert refused.status_code == 429

    # Large images make smaller chunks: at most `pixels` decoded pixels are held at once.
    chunks = list(serving_batch.answered(run, images, pixels=2 * 88 * 72))  # photos are 88x72
    assert [len(chunk) for chunk in chunks] == [2, 2, 2]


# --- no training needed below: rows and files made directly --------------------------------------

def inputs_of(batch: BatchPrediction) -> Path:
    return Path(batch.folder) / BatchPrediction.INPUTS


def stored_batch(project, *, status="queued", finished_at=None, heartbeat_at=None, with_csv=False, attempt=1) -> BatchPrediction:
    folder = Path(settings.MEDIA_ROOT) / "batches" / f"made-{status}-{project.pk}"
    batch = BatchPrediction.objects.create(project=project, version=1, source_name="shots.zip", folder=str(folder),
                                           status=status, finished_at=finished_at, heartbeat_at=heartbeat_at,
                                           job_id="batch-made", attempt=attempt)
    inputs_of(batch).mkdir(parents=True)
    (inputs_of(batch) / "0").write_bytes(zip_of(photos(2)))
    (inputs_of(batch) / BatchPrediction.MANIFEST).write_text('[{"name": "shots.zip", "path": "0", "zip": true}]')
    if with_csv:
        (folder / "predictions.csv").write_text("file,label,probability,prediction_set,abstained,error\na.jpg,sea,0.9,sea,False,\n")
        BatchPrediction.objects.filter(pk=batch.pk).update(csv_path=str(folder / "predictions.csv"))
        batch.refresh_from_db()
    return batch


def test_another_user_gets_404_for_the_batchs_panel_progress_and_download(client, user, other_user):
    project = project_with_images(user)
    batch = stored_batch(project, status="done", finished_at=timezone.now(), with_csv=True)
    client.force_login(user)
    assert client.get(reverse("batch_download", args=[batch.pk])).status_code == 200
    client.force_login(other_user)
    theirs = project_with_images(other_user, name="Theirs")
    assert client.get(reverse("batch_download", args=[batch.pk])).status_code == 404
    assert client.get(reverse("batch_detail", args=[batch.pk]) + "?live=1", HTTP_HX_REQUEST="true").status_code == 404
    assert client.get(reverse("batch_detail", args=[batch.pk])).status_code == 404
    assert client.get(reverse("predict", args=[project.pk]) + f"?batch={batch.pk}").status_code == 404
    assert client.get(reverse("predict", args=[theirs.pk]) + f"?batch={batch.pk}").status_code == 404


def test_a_batch_whose_worker_died_is_run_again_with_its_inputs_kept(alice, user, queue):
    from tests.jobs.test_recovery import _start_a_worker_with_nothing_to_do

    project = project_with_images(user)
    batch = stored_batch(project, status="running", heartbeat_at=timezone.now() - LONG_AGO)
    _start_a_worker_with_nothing_to_do()  # no page view: the reaper settles it
    batch.refresh_from_db()
    assert batch.status == "queued" and batch.attempt == 2 and batch.job_id == "batch-made-try-2"
    assert "stopped responding" in batch.message and "Running it again (try 2 of 2)" in batch.message
    assert (inputs_of(batch) / "0").exists()  # the next try needs them
    assert django_rq.get_queue("intake").fetch_job("batch-made-try-2") is not None
    page = alice.get(reverse("predict", args=[project.pk]) + f"?batch={batch.pk}").content.decode()
    assert "Running it again (try 2 of 2)" in page


def test_a_batch_whose_last_try_died_is_failed_by_a_worker_with_a_plain_message_and_its_files_deleted(alice, user, queue, settings):
    from tests.jobs.test_recovery import _start_a_worker_with_nothing_to_do

    project = project_with_images(user)
    batch = stored_batch(project, status="running", heartbeat_at=timezone.now() - LONG_AGO, attempt=settings.JOB_ATTEMPTS)
    _start_a_worker_with_nothing_to_do()  # no page view: the reaper settles it
    batch.refresh_from_db()
    assert batch.status == "failed" and "stopped responding" in batch.error and "send them again" in batch.error
    assert not inputs_of(batch).exists()
    page = alice.get(reverse("predict", args=[project.pk]) + f"?batch={batch.pk}").content.decode()
    assert "The batch stopped." in page and "stopped responding" in page
    assert alice.get(reverse("batch_download", args=[batch.pk])).status_code == 404


def test_a_queued_batch_whose_job_vanished_is_queued_again(user, queue):
    project = project_with_images(user)
    batch = stored_batch(project)
    checks.batch_check(batch=batch)
    assert django_rq.get_queue("intake").fetch_job("batch-made") is not None


def test_finished_batches_are_deleted_after_the_retention_time(user, settings):
    project = project_with_images(user)
    old = stored_batch(project, status="done", finished_at=timezone.now() - timedelta(days=settings.BATCH_KEPT_DAYS, hours=1),
                       with_csv=True)
    recent = stored_batch(project, status="failed", finished_at=timezone.now() - timedelta(days=1))
    reaper.sweep()
    assert not BatchPrediction.objects.filter(pk=old.pk).exists() and not Path(old.folder).exists()
    assert BatchPrediction.objects.filter(pk=recent.pk).exists() and Path(recent.folder).exists()


def test_deleting_a_project_removes_its_batches_files(user):
    project = project_with_images(user)
    batch = stored_batch(project, status="done", finished_at=timezone.now(), with_csv=True)
    library_projects.project_delete(project=project)
    assert not Path(batch.folder).exists()


def test_a_third_unfinished_batch_waits_and_a_batch_whose_model_vanished_fails_with_a_plain_message(alice, user, trained):
    project, run = trained
    stored_batch(project, status="running", heartbeat_at=timezone.now())
    BatchPrediction.objects.create(project=project, version=1, source_name="b.zip", folder="/nonexistent", status="queued")
    response = alice.post(reverse("predict_batch", args=[project.pk]),
                          {"files": [upload("shots.zip", zip_of(photos(2)), "application/zip")]}, follow=True)
    assert "2 batch predictions of yours are waiting or running" in response.content.decode()
    assert BatchPrediction.objects.count() == 2

    BatchPrediction.objects.all().delete()
    batch = send_batch(alice, project, [upload("shots.zip", zip_of(photos(3)), "application/zip")])
    (Path(run.artifact_dir) / "meta.json").unlink()  # the model's files lost before the worker starts
    work_off_queue("intake")
    batch.refresh_from_db()
    assert batch.status == "failed" and "model files are missing" in batch.error
    assert not inputs_of(batch).exists() and not batch.csv_path


@pytest.mark.django_db
def test_a_batch_run_again_counts_only_the_images_its_earlier_try_did_not(user, settings):
    from transferapp.accounts import throttle
    from transferapp.jobs import progress

    settings.PREDICT_RATE_PER_MIN = 100
    project = project_with_images(user, per_class=1)
    batch = stored_batch(project, status="running")
    counter = throttle.predictions_per_user()._key(str(user.pk))
    progress.BatchReporter(batch, total=5).report(done=3, refused=0, images=3)  # then its worker died
    assert cache.get(counter) == 3
    BatchPrediction.objects.filter(pk=batch.pk).update(attempt=2, done=0, refused=0)  # the reaper runs it again
    batch.refresh_from_db()
    again = progress.BatchReporter(batch, total=5)
    again.report(done=3, refused=0, images=3)
    assert cache.get(counter) == 3  # the same three images: counted once
    again.report(done=5, refused=0, images=2)
    assert cache.get(counter) == 5
