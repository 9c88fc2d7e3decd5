"""Issue 25, item 1: every prediction (predict page, API, batch in the request and in the worker) leaves
one row in the prediction log, with its source, answer, features and, when the project keeps
them, a small JPEG; review.needed goes out once when the review queue reaches its size; the
retention sweep drops old images (and the oldest past the size cap) and old rows."""
import io
from datetime import timedelta

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.urls import reverse
from django.utils import timezone
from PIL import Image as PILImage

from tests.api_support import photo_bytes, work_off_queue
from tests.conftest import image_bytes
from tests.factories import project_with_images, upload
from tests.web.test_api import trained  # noqa: F401 (a fixture: the API tests' trained version with a key)
from transferapp.jobs import reaper
from transferapp.library import intake, reviews
from transferapp.models import (
    ApiKey,
    BatchPrediction,
    Prediction,
    TrainingRun,
    Webhook,
    WebhookDelivery,
)
from transferapp.serving import prediction_log

pytestmark = pytest.mark.django_db(transaction=True)


def _features(row) -> np.ndarray:
    return np.frombuffer(bytes(row.features), dtype=np.float16).astype(np.float32)


def _kept_jpeg(row) -> PILImage.Image:
    with default_storage.open(row.image.name) as stored:
        image = PILImage.open(io.BytesIO(stored.read()))
        image.load()
    return image


def test_the_page_the_api_and_batches_each_log_their_predictions(alice, trained, settings, queue):  # noqa: F811
    project, run, key = trained
    settings.PREDICTION_IMAGE_MAX_SIDE = 40  # the test photos are 88x72: the kept copy is smaller
    ApiKey.objects.filter(project=project).update(name="lab script")
    project.audit_percent = 100
    project.save()

    # The predict page.
    page = alice.post(reverse("predict", args=[project.pk]), {"files": [upload("leaf.jpg", photo_bytes("meadow", 501), "image/jpeg")]})
    assert page.status_code == 200
    prediction_log.flush()
    row = Prediction.objects.get(source="page")
    assert (row.project, row.run, row.version, row.file_name) == (project, run, run.version, "leaf.jpg")
    assert row.top_label in {"meadow", "sea", "sand"} and 0 < row.probability <= 1 and row.audit
    assert row.novelty is not None and not row.seen_in_training and len(row.sha256) == 64
    vector = _features(row)
    assert vector.size > 100 and abs(float(np.linalg.norm(vector)) - 1) < 0.01  # normalised head input, float16
    assert max(_kept_jpeg(row).size) == 40

    # The API: each answer carries its row's id; the key's name is the source's.
    response = alice.post(f"/api/v1/projects/{project.pk}/predict", data=photo_bytes("sea", 502), content_type="image/jpeg",
                          HTTP_AUTHORIZATION=f"Bearer {key}", HTTP_X_FILENAME="wave.jpg")
    answer = response.json()
    prediction_log.flush()
    row = Prediction.objects.get(pk=answer["id"])
    assert (row.source, row.source_name, row.file_name) == ("api", "lab script", "wave.jpg")
    assert (row.top_label, row.prediction_set, row.abstained, row.unfamiliar) == (
        answer["top"]["label"], answer["prediction_set"], answer["abstained"], answer["unfamiliar"])
    assert abs(row.probability - answer["top"]["probability"]) < 1e-9 and "features" not in answer
    assert row.image and _kept_jpeg(row).format == "JPEG"

    # A project that keeps no images: the row, without its image.
    project.keep_prediction_images, project.audit_percent = False, 0
    project.save()
    answer = alice.post(f"/api/v1/projects/{project.pk}/predict", data=photo_bytes("sand", 503), content_type="image/jpeg",
                        HTTP_AUTHORIZATION=f"Bearer {key}").json()
    row = Prediction.objects.get(pk=answer["id"])
    assert not row.image and not row.audit and row.features is not None

    # A small batch, answered in the request: one row per image, named by the batch.
    files = [upload(f"b{i}.jpg", photo_bytes("meadow", 510 + i), "image/jpeg") for i in range(3)]
    assert alice.post(reverse("predict_batch", args=[project.pk]), {"files": files}).status_code == 200
    assert sorted(Prediction.objects.filter(source="batch").values_list("file_name", "source_name")) == [
        ("b0.jpg", "3 files"), ("b1.jpg", "3 files"), ("b2.jpg", "3 files")]

    # A batch the worker predicts (above the inline limit): its rows come from the worker's chunks.
    settings.BATCH_INLINE_MAX_IMAGES = 1
    project.keep_prediction_images = True
    project.save()
    files = [upload(f"w{i}.jpg", photo_bytes("sea", 520 + i), "image/jpeg") for i in range(2)]
    alice.post(reverse("predict_batch", args=[project.pk]), {"files": files})
    work_off_queue("intake")
    assert BatchPrediction.objects.get(project=project).status == "done"
    rows = Prediction.objects.filter(source="batch", source_name="2 files")
    assert sorted(rows.values_list("file_name", flat=True)) == ["w0.jpg", "w1.jpg"]
    assert all(row.image and default_storage.exists(row.image.name) and row.features for row in rows)
    assert Prediction.objects.filter(project=project).count() == 8


def test_logging_off_logs_nothing_and_the_api_answers_as_before(client, trained, settings):  # noqa: F811
    project, _, key = trained
    settings.PREDICTION_LOG = False
    answer = client.post(f"/api/v1/projects/{project.pk}/predict", data=photo_bytes("sea", 601), content_type="image/jpeg",
                         HTTP_AUTHORIZATION=f"Bearer {key}").json()
    assert answer["id"] is None and answer["top"]["label"] and not Prediction.objects.exists()


# --- without a trained model: the log's own rules ----------------------------------------------

def _run(project) -> TrainingRun:
    return TrainingRun.objects.create(project=project, base_model="efficientnet_lite0", status="succeeded", version=1)


def _answer(seed: int, abstained: bool = False, probability: float = 0.6) -> prediction_log.Answer:
    checked = intake.check_image(image_bytes("red", shape_seed=seed), max_bytes=10**7, max_pixels=10**7)
    result = {"top": "red", "probabilities": {"red": probability, "blue": 1 - probability}, "prediction_set": ["red", "blue"] if abstained else ["red"],
              "abstained": abstained, "unfamiliar": False, "novelty": 0.2, "features": np.ones(4, np.float16).tobytes()}
    return prediction_log.Answer(f"{seed}.png", checked, result)


def test_a_prediction_of_a_training_image_is_never_drawn_into_the_audit_sample(user, settings):
    project = project_with_images(user)
    project.audit_percent = 100
    project.save()
    seen = [prediction_log.Answer(a.name, a.checked, a.result, seen_in_training=True) for a in (_answer(1), _answer(2))]
    prediction_log.record(_run(project), prediction_log.page(), seen + [_answer(3)])
    assert list(Prediction.objects.order_by("pk").values_list("seen_in_training", "audit")) == [
        (True, False), (True, False), (False, True)]
    prediction_log.flush()


def test_review_needed_is_sent_once_when_the_queue_reaches_its_size(user, settings, queue):
    settings.REVIEW_NEEDED_AT = 3
    project = project_with_images(user)
    project.audit_percent = 0
    project.save()
    run = _run(project)
    Webhook.objects.create(project=project, url="https://example.com/hook", events=["review.needed"], secret="whsec_dGVzdA==")
    source = prediction_log.page()
    prediction_log.record(run, source, [_answer(1, probability=0.9), _answer(2, abstained=True)])  # one in the queue
    assert not WebhookDelivery.objects.exists()
    prediction_log.record(run, source, [_answer(3, abstained=True), _answer(4, abstained=True)])  # 3: reached
    prediction_log.record(run, source, [_answer(5, abstained=True)])  # 4: past it, no second event
    deliveries = WebhookDelivery.objects.all()
    assert [(d.event, d.payload["data"]["queue"]) for d in deliveries] == [("review.needed", 3)]
    prediction_log.flush()


def test_review_needed_counts_the_queue_the_review_page_shows(user, settings, queue):
    """The page's queue: a kept image, and audit, "don't know" or low-confidence (library.reviews)."""
    settings.REVIEW_NEEDED_AT = 2
    project = project_with_images(user)
    project.audit_percent, project.keep_prediction_images = 0, False
    project.save()
    run = _run(project)
    Webhook.objects.create(project=project, url="https://example.com/hook", events=["review.needed"], secret="whsec_dGVzdA==")
    source = prediction_log.page()
    prediction_log.record(run, source, [_answer(1, abstained=True), _answer(2, abstained=True)])  # no image: nothing to review
    assert reviews.queue_size(project) == 0 and not WebhookDelivery.objects.exists()
    project.keep_prediction_images = True
    project.save()
    run.project = project
    prediction_log.record(run, source, [_answer(3, probability=0.95)])  # sure: not asked
    prediction_log.record(run, source, [_answer(4, probability=0.55)])  # low-confidence: in the queue
    assert not WebhookDelivery.objects.exists()
    prediction_log.record(run, source, [_answer(5, probability=0.5)])
    assert [(d.event, d.payload["data"]["queue"]) for d in WebhookDelivery.objects.all()] == [("review.needed", 2)]
    assert reviews.queue_size(project) == 2
    prediction_log.flush()


def test_the_retention_sweep_drops_old_images_then_the_oldest_past_the_cap_then_old_rows(user, settings):
    settings.PREDICTION_IMAGES_KEPT_DAYS, settings.PREDICTION_LOG_KEPT_DAYS = 30, 365
    project = project_with_images(user)
    run, now = _run(project), timezone.now()
    ages = {"ancient": 400, "old": 40, "older-recent": 3, "middle": 2, "newest": 1}
    rows = {}
    for name, days in ages.items():
        row = Prediction(project=project, run=run, version=1, created_at=now - timedelta(days=days), source="api",
                         sha256=f"{days:064d}", top_label="red", probability=0.9, file_name=name)
        row.image.save("x.jpg", ContentFile(b"j" * 1000), save=False)
        row.save()
        rows[name] = row
    files = {name: row.image.name for name, row in rows.items()}
    settings.PREDICTION_IMAGES_MAX_MB = 2500 / 1024 / 1024  # room for two of the three recent images

    done = prediction_log.predictions_purge_expired()

    assert not Prediction.objects.filter(file_name="ancient").exists()
    kept = dict(Prediction.objects.values_list("file_name", "image"))
    assert kept == {"old": "", "older-recent": "", "middle": files["middle"], "newest": files["newest"]}
    assert [name for name in files if default_storage.exists(files[name])] == ["middle", "newest"]
    assert done == {"rows": 1, "images": 2, "files": 3}


def test_a_shared_image_file_stays_while_a_row_still_names_it(user, settings):
    project = project_with_images(user)
    run, now = _run(project), timezone.now()
    name = f"projects/{project.pk}/predictions/same.jpg"
    default_storage.save(name, ContentFile(b"j"))
    for days in (40, 1):  # the same image twice: one file
        Prediction.objects.create(project=project, run=run, version=1, created_at=now - timedelta(days=days), source="page",
                                  sha256="a" * 64, top_label="red", probability=0.9, image=name)
    prediction_log.predictions_purge_expired()
    assert default_storage.exists(name) and Prediction.objects.filter(image=name).count() == 1


def test_the_reaper_runs_the_retention_sweep(user, settings, monkeypatch):
    project = project_with_images(user)
    Prediction.objects.create(project=project, run=_run(project), version=1, source="page", sha256="b" * 64, top_label="red",
                              probability=0.5, created_at=timezone.now() - timedelta(days=settings.PREDICTION_LOG_KEPT_DAYS + 1))
    monkeypatch.setattr(reaper, "_predictions_swept_at", float("-inf"))
    reaper.sweep()
    assert not Prediction.objects.exists()


def test_a_failed_image_write_costs_the_image_never_the_row(user, settings):
    """A real failure: a file stands where the project's image folder must go, so the write fails."""
    project = project_with_images(user)
    blocker = settings.MEDIA_ROOT / "projects" / str(project.pk) / "predictions"
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_bytes(b"not a folder")
    run = _run(project)
    (pk,) = prediction_log.record(run, prediction_log.page(), [_answer(7)])  # written by the pool
    prediction_log.flush()
    row = Prediction.objects.get(pk=pk)
    assert row.image.name == "" and row.top_label == "red" and row.features is not None
    blocker.unlink()
    (pk,) = prediction_log.record(run, prediction_log.batch("x.zip", in_worker=True), [_answer(8)])
    row = Prediction.objects.get(pk=pk)  # the worker writes it at once
    assert row.image.name and default_storage.exists(row.image.name)


@pytest.mark.s3
def test_in_bucket_mode_the_kept_image_goes_to_the_bucket_and_the_sweep_removes_it(user, settings, seaweed, web_dirs):
    from tests.s3_support import MISSING
    if MISSING:
        pytest.skip(MISSING)
    project = project_with_images(user)
    (pk,) = prediction_log.record(_run(project), prediction_log.api(ApiKey(name="lims")), [_answer(9)])
    prediction_log.flush()
    row = Prediction.objects.get(pk=pk)
    assert row.source_name == "lims" and seaweed.keys(f"projects/{project.pk}/predictions/") == [row.image.name]
    assert not [p for p in (web_dirs / "media").rglob("*") if p.is_file()]  # nothing on this machine's disk
    settings.PREDICTION_IMAGES_MAX_MB = 0  # no room: the sweep lists the bucket and drops it
    assert prediction_log.predictions_purge_expired()["files"] == 1
    assert seaweed.keys(f"projects/{project.pk}/predictions/") == [] and Prediction.objects.get(pk=pk).image.name == ""
