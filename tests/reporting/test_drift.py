"""Drift (#25): predictions on images of another data set than the training one raise the drift
sentence and one `drift.detected` webhook delivery a day; images like the training ones do not.

A real version trained by the real worker (the API tests' fixture: textured "landscape" photos);
the predictions are logged as the prediction log records them, with the model's own features of
each image (its normalised head input, the space of the artifact's novelty bank)."""
import io
from datetime import timedelta

import numpy as np
import pytest
import torch
from django.core.cache import cache
from django.urls import reverse
from django.utils import timezone
from PIL import Image as PILImage

from tests.api_support import CLASS_TINTS, photo_bytes, work_off_queue
from tests.conftest import image_bytes
from tests.web.test_api import trained  # noqa: F401 (a fixture: the API tests' trained version with a key)
from transferapp.engine import calibrate
from transferapp.jobs import reaper
from transferapp.models import Prediction, Webhook, WebhookDelivery
from transferapp.reporting import drift
from transferapp.serving import predictions

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def fresh_cache(embedded_redis):
    """The hourly sweep's mark and the once-a-day alert marks live in the shared cache (Redis)."""
    cache.clear()


def log_predictions(run, images: list[bytes], source="api", when=None) -> list[Prediction]:
    """Predict `images` with the run's model and record each answer as the prediction log does."""
    predictor = predictions.predictor_for(run)
    decoded = [PILImage.open(io.BytesIO(data)).convert("RGB") for data in images]
    answers = predictor.predict_images(decoded)
    batch = torch.stack([predictor.transform(image) for image in decoded])
    with torch.inference_mode(), calibrate.head_input(predictor.model) as seen:
        predictor.model.predict_proba(batch.contiguous(memory_format=torch.channels_last))
    features = calibrate.normalise(seen[0].float().numpy()).astype(np.float16)
    when = when or timezone.now()
    return Prediction.objects.bulk_create([
        Prediction(project=run.project, run=run, version=run.version, created_at=when - timedelta(minutes=i),
                   source=source, sha256=f"{i:064x}", top_label=answer["top"], probability=answer["confidence"],
                   prediction_set=answer["prediction_set"], abstained=answer["abstained"],
                   unfamiliar=answer["unfamiliar"], novelty=answer["novelty"], features=row.tobytes())
        for i, (answer, row) in enumerate(zip(answers, features))])


def like_training(n=30) -> list[bytes]:
    """New photos of the training classes (other seeds than the training images')."""
    kinds = list(CLASS_TINTS)
    return [photo_bytes(kinds[i % len(kinds)], 100 + i) for i in range(n)]


def another_data_set(n=30) -> list[bytes]:
    """Flat coloured cards with a white disc: nothing like the textured photos it learnt from."""
    rng = np.random.default_rng(7)
    return [image_bytes(tuple(int(v) for v in rng.integers(0, 256, 3)), shape_seed=i) for i in range(n)]


def sweep() -> None:
    """What a worker does hourly: its reaper queues the drift sweep; a worker runs it."""
    cache.delete("drift-sweep-queued")  # the hour has passed
    assert reaper.drift_sweep_enqueue()
    assert not reaper.drift_sweep_enqueue()  # a second worker's reaper in the same hour queues nothing
    work_off_queue("intake")


def test_another_data_sets_images_raise_the_drift_sentence_and_one_event_a_day_training_like_ones_do_not(
        alice, trained):  # noqa: F811
    project, run, _ = trained
    Webhook.objects.create(project=project, url="https://hooks.example.org/drift", events=["drift.detected"],
                           secret="whsec_dGVzdC1zZWNyZXQtZm9yLWRyaWZ0LXRlc3Rz")
    page = reverse("project_monitoring", args=[project.pk])

    log_predictions(run, like_training())
    report = drift.drift_report(project)
    assert report["n"] == 30 and report["version"] == run.version
    assert report["unlike_share"] < drift.MIN_UNLIKE_SHARE, report
    assert not report["detected"], report
    assert report["sentence"].startswith("This week's images look like the training images"), report
    sweep()
    assert not WebhookDelivery.objects.exists()
    assert "This week&#x27;s images look like the training images" in alice.get(page).content.decode()

    Prediction.objects.filter(project=project).delete()
    log_predictions(run, another_data_set())
    report = drift.drift_report(project)
    assert report["p_value"] < drift.DRIFT_P and report["unlike_share"] >= drift.MIN_UNLIKE_SHARE, report
    assert report["detected"], report
    percent = f"{report['unlike_share'] * 100:.0f}%"
    assert report["sentence"] == f"{percent} of this week's images are unlike anything the model was trained on."
    sweep()
    delivery = WebhookDelivery.objects.get()
    assert delivery.event == "drift.detected" and delivery.webhook.project == project
    data = delivery.payload["data"]
    assert data["project"]["id"] == project.pk and data["version"] == run.version
    assert data["p_value"] == report["p_value"] and data["sentence"] == report["sentence"]
    sweep()  # the same day: the owner was told already
    cache.clear()  # even when Redis forgot its mark: the delivery log says so
    sweep()
    assert WebhookDelivery.objects.count() == 1
    body = alice.get(page).content.decode()
    assert f"{percent} of this week&#x27;s images are unlike anything the model was trained on." in body
    assert 'class="verdict drift-detected"' in body


def test_the_mmd_test_keeps_its_false_alarm_rate_and_finds_a_shift():
    """The permutation p-value is exact: on samples from one distribution it falls below 0.05 about
    5% of the time; a moderate shift of the mean is found at these sample sizes."""
    p_values = []
    for seed in range(60):
        rng = np.random.default_rng(seed)
        x, y = (calibrate.normalise(rng.normal(size=(n, 32)) + 1) for n in (30, 24))
        p_values.append(drift.mmd_test(x, y, permutations=200)[1])
    assert 0 < np.mean(np.array(p_values) < 0.05) <= 0.12
    rng = np.random.default_rng(99)
    x, y = calibrate.normalise(rng.normal(size=(30, 32)) + 1), calibrate.normalise(rng.normal(size=(24, 32)) + 1.6)
    assert drift.mmd_test(x, y)[1] < 0.01
