"""Live accuracy (#25): from the reviewed random audit sample only, per version, beside the
validation figure on the results page, with a warning when the two intervals do not overlap."""
import pytest
from django.urls import reverse
from django.utils import timezone

from tests.factories import project_with_images
from tests.library.test_reviews import make_prediction
from transferapp.engine.metrics import wilson_interval
from transferapp.library import reviews
from transferapp.models import Prediction, TrainingRun
from transferapp.reporting import live_accuracy

pytestmark = pytest.mark.django_db


def _version(project, version=1, ci=(0.9, 1.0)) -> TrainingRun:
    """A version row with the figures the results page reads (the trained-for-real path is the browser test's)."""
    return TrainingRun.objects.create(project=project, status=TrainingRun.Status.SUCCEEDED, base_model="efficientnet_lite0",
                                      preset="fast", classes=["blue", "red"], version=version, finished_at=timezone.now(),
                                      metrics={"accuracy": 0.95, "accuracy_ci": list(ci), "n_train": 8, "n_val": 2})


def _reviewed(project, user, *, top_label, label, audit, version=1, seed=0, source=Prediction.ReviewSource.QUEUE):
    prediction = make_prediction(project, top_label=top_label, audit=audit, version=version, seed=seed)
    return reviews.review_record(prediction=prediction, label=label, by=user, source=source)


@pytest.fixture
def project(user):
    return project_with_images(user, classes=("red", "blue"), per_class=5)


def test_only_reviewed_audit_predictions_count_per_version(project, user):
    _reviewed(project, user, top_label="red", label="red", audit=True, seed=1)
    _reviewed(project, user, top_label="red", label="blue", audit=True, seed=2)
    _reviewed(project, user, top_label="red", label="red", audit=True, seed=3, source=Prediction.ReviewSource.API)
    for seed in (4, 5, 6):  # hard ones from the "to learn from" stream, all wrong: they must not count
        _reviewed(project, user, top_label="red", label="blue", audit=False, seed=seed)
    make_prediction(project, audit=True, seed=7)  # in the sample, not reviewed yet
    _reviewed(project, user, top_label="blue", label="blue", audit=True, version=2, seed=8)
    rows = live_accuracy.live_accuracy(project)
    assert [(r["version"], r["k"], r["n"]) for r in rows] == [(2, 1, 1), (1, 2, 3)]
    assert rows[1]["interval"] == pytest.approx([0.2077, 0.9385], abs=1e-3)  # Wilson 95% for 2/3


def test_predictions_of_training_images_never_count_toward_live_accuracy(project, user):
    _reviewed(project, user, top_label="red", label="blue", audit=True, seed=1)
    for seed in (2, 3, 4):  # the model learnt these: it is right on them, and that says nothing
        seen = _reviewed(project, user, top_label="red", label="red", audit=True, seed=seed)
        Prediction.objects.filter(pk=seen.pk).update(seen_in_training=True)
    assert [(r["version"], r["k"], r["n"]) for r in live_accuracy.live_accuracy(project)] == [(1, 0, 1)]


@pytest.mark.parametrize("k, n, expected", [(3, 3, (0.4385, 1.0)), (8, 10, (0.4902, 0.9433)), (0, 5, (0.0, 0.4345))])
def test_the_wilson_interval_has_its_published_values(k, n, expected):
    assert wilson_interval(k, n) == pytest.approx(expected, abs=1e-3)


def test_the_version_figure_says_where_reviews_came_from_and_warns_when_intervals_part(project, user):
    run = _version(project, ci=(0.9, 1.0))
    for seed in range(1, 6):  # 1 of 5 right: 95% interval about 4-62%, far below 90-100%
        _reviewed(project, user, top_label="red", label="red" if seed == 1 else "blue", audit=True, seed=seed)
    _reviewed(project, user, top_label="red", label="blue", audit=False, seed=9, source=Prediction.ReviewSource.API)
    make_prediction(project, audit=True, seed=10)
    live = live_accuracy.version_live(run)
    assert (live["live"]["k"], live["live"]["n"]) == (1, 5)
    assert live["disagree"] and live["worse"]
    assert (live["from_queue"], live["from_api"], live["audit_waiting"]) == (5, 1, 1)
    agreeing = _version(project, version=2, ci=(0.1, 0.5))
    _reviewed(project, user, top_label="red", label="blue", audit=True, version=2, seed=20)
    assert live_accuracy.version_live(agreeing)["disagree"] is False
    assert live_accuracy.version_live(_version(project, version=3)) is None  # nothing logged for v3


def test_the_results_page_shows_live_accuracy_beside_the_validation_figure(alice, project, user):
    run = _version(project, ci=(0.9, 1.0))
    for seed in range(1, 4):
        _reviewed(project, user, top_label="red", label="red" if seed < 2 else "blue", audit=True, seed=seed)
    page = alice.get(reverse("run_detail", args=[run.pk])).content.decode()
    low, high = wilson_interval(1, 3)
    assert "Live accuracy: 1/3 right" in page and f"({round(low * 100)}–{round(high * 100)}%, 95% interval)" in page
    assert 'id="live-accuracy-warning"' in page and "3 from the review queue" in page and "0 from the feedback API" in page
