"""A real django-rq worker (burst mode, real Redis) runs real training jobs end to end."""
import os
from datetime import timedelta
from pathlib import Path

import django_rq
import pytest
from django.urls import reverse
from django.utils import timezone
from rq import SimpleWorker

from tests.conftest import image_bytes
from tests.factories import project_with_images, upload
from transferapp.models import Image, TrainingRun

pytestmark = pytest.mark.django_db(transaction=True)


def _work_off_queue(*queues):
    worker = django_rq.get_worker(*(queues or ("default",)), worker_class=SimpleWorker)
    worker.work(burst=True)


def _train(client, project, **fields):
    data = {"base_model": "efficientnet_lite0", "preset": "best", "epochs": 1, **fields}
    response = client.post(reverse("training_start", args=[project.pk]), data)
    assert response.status_code == 302, response.content
    return TrainingRun.objects.get(project=project)


def test_a_real_worker_trains_a_model_and_the_app_predicts_with_it(alice, user, queue):
    project = project_with_images(user, classes=("red", "blue", "green"), per_class=6)
    run = _train(alice, project, validation="always")  # a validation split and fine-tuning, though small
    assert queue.count == 1
    _work_off_queue()
    run.refresh_from_db()
    assert run.status == "succeeded", run.error
    assert run.metrics["accuracy"] >= 0.66 and run.metrics["n_val"] >= 3
    assert any(row["stage"] == "finetune" for row in run.history)
    assert len(run.metrics["confusion"]) == 3 and run.history
    assert (Path(run.artifact_dir) / "meta.json").exists()
    page = alice.get(run.get_absolute_url()).content.decode()
    assert 'id="confusion-matrix"' in page
    # One of the labelled green images (the final model is retrained on all of them): the app must
    # predict with the model this run trained. (An unseen circle position is not a fair test here:
    # six flat-colour images per class teach too little to generalise reliably.)
    prediction = alice.post(
        reverse("predict", args=[project.pk]),
        {"run": run.pk, "files": [upload("new.png", image_bytes("green", shape_seed=2))]},
        HTTP_X_REQUESTED_WITH="XMLHttpRequest",
    )
    assert prediction.status_code == 200
    assert '<td class="top-class"><strong>green' in prediction.content.decode()


def test_a_run_cancelled_before_the_worker_takes_it_never_trains(alice, user, queue):
    project = project_with_images(user, per_class=5)
    run = _train(alice, project)
    alice.post(reverse("run_cancel", args=[run.pk]))
    _work_off_queue()
    run.refresh_from_db()
    assert run.status == "cancelled" and not run.artifact_dir


def test_a_missing_weights_file_fails_the_run_with_instructions(alice, user, queue):
    from transferapp.engine.zoo import list_bases

    missing = [b.name for b in list_bases() if not b.weights_available]
    if not missing:
        pytest.skip("every base model's weights are on this machine")
    project = project_with_images(user, per_class=5)
    run = _train(alice, project, base_model=missing[0])
    _work_off_queue()
    run.refresh_from_db()
    assert run.status == "failed"
    assert "fetch_weights" in run.error and "Traceback" not in run.error
    assert "fetch_weights" in alice.get(run.get_absolute_url()).content.decode()


def test_uploads_warm_the_feature_cache_in_the_background(alice, user, queue, settings):
    from transferapp.library import projects as library_projects

    project = library_projects.project_create(owner=user, name="P")
    label = library_projects.label_create(project=project, name="red")
    url = reverse("label_upload", args=[project.pk, label.pk])
    for i in range(3):
        alice.post(url, {"files": [upload(f"{i}.png", image_bytes(shape_seed=i))]}, HTTP_X_REQUESTED_WITH="XMLHttpRequest")
    intake = django_rq.get_queue("intake")
    assert intake.job_ids == [f"features-{project.pk}"]  # one pending job per project, not one per file
    _work_off_queue("intake")
    cached = list(Path(settings.FEATURE_CACHE_DIR).rglob("*.npy"))
    assert len(cached) == 3


def test_a_queued_run_survives_redis_losing_its_job(alice, user, queue):
    project = project_with_images(user, per_class=5)
    run = _train(alice, project, preset="fast")
    queue.connection.flushdb()  # what a Redis restart without persistence does
    assert queue.count == 0
    alice.get(run.get_absolute_url())  # the row is the truth: showing the run queues it again
    assert queue.job_ids == [run.job_id]
    _work_off_queue()
    run.refresh_from_db()
    assert run.status == "succeeded"


def test_images_deleted_during_a_training_stay_readable_until_it_ends(alice, user, queue):
    from transferapp.library import images as library_images
    from transferapp.library import trash

    project = project_with_images(user, per_class=6)
    run = _train(alice, project, preset="fast")
    TrainingRun.objects.filter(pk=run.pk).update(status="running")  # as if the worker were mid-way
    doomed = project.images.first()
    path = Path(doomed.file.path)
    alice.post(reverse("image_delete", args=[doomed.pk]))
    assert not project.images.filter(pk=doomed.pk).exists() and path.exists()
    # The undo window ends while the training still runs: the row goes, the files stay for it.
    Image.all_objects.filter(pk=doomed.pk).update(deleted_at=timezone.now() - timedelta(days=1))
    assert trash.deleted_images_purge(project_id=project.pk) == 1
    assert not Image.all_objects.filter(pk=doomed.pk).exists() and path.exists()
    TrainingRun.objects.filter(pk=run.pk).update(status="succeeded")
    started = timezone.now()  # the run's start: the deleted image's files are older
    os.utime(path, (started.timestamp() - 60,) * 2)
    os.utime(Path(doomed.thumbnail.path), (started.timestamp() - 60,) * 2)
    fresh = library_images.image_add(label=project.labels.first(), name="new.png", data=image_bytes("red", shape_seed=77))
    Image.objects.filter(pk=fresh.image.pk).delete()  # an upload between file and row: newer than the run, kept
    assert trash.project_purge_files(project_id=project.pk, older_than=started) == 2  # the image and its thumbnail
    assert Path(fresh.image.file.path).exists()
    assert not path.exists() and all(Path(image.file.path).exists() for image in project.images.all())
