"""The review queue's pages (#25): the owner's only (another user's is a 404), the two streams
marked apart, reviews by form and by script, "add to class" and "add all reviewed", and the
version diff marking images added from production."""
import pytest
from django.urls import reverse
from django.utils import timezone

from tests.factories import project_with_images
from tests.library.test_reviews import make_prediction
from transferapp.library import reviews
from transferapp.models import Image, Prediction, TrainingRun

pytestmark = pytest.mark.django_db


@pytest.fixture
def project(user):
    return project_with_images(user, classes=("red", "blue"), per_class=5)


def test_another_users_queue_predictions_and_images_are_not_found(client, project, other_user):
    prediction = make_prediction(project, audit=True)
    client.force_login(other_user)
    assert client.get(reverse("review_queue", args=[project.pk])).status_code == 404
    assert client.get(reverse("prediction_image", args=[prediction.pk])).status_code == 404
    for name in ("prediction_review", "prediction_review_undo", "prediction_add"):
        assert client.post(reverse(name, args=[prediction.pk]), {"label": "blue"}).status_code == 404, name
    assert client.post(reverse("review_add_all", args=[project.pk])).status_code == 404
    prediction.refresh_from_db()
    assert prediction.review_label == ""


def test_the_owner_sees_both_streams_marked_and_the_kept_image(alice, project):
    audit = make_prediction(project, audit=True, top_label="red", probability=0.91, seed=1)
    learn = make_prediction(project, abstained=True, top_label="blue", probability=0.41, seed=2)
    page = alice.get(reverse("review_queue", args=[project.pk])).content.decode()
    assert "Audit sample: counts towards live accuracy" in page
    assert f'data-pk="{audit.pk}" data-stream="audit"' in page and f'data-pk="{learn.pk}" data-stream="learn"' in page
    assert page.index(f'data-pk="{audit.pk}"') < page.index(f'data-pk="{learn.pk}"')
    assert "<kbd>1</kbd> blue" in page and "<kbd>2</kbd> red" in page  # number keys in the classes' order
    assert 'src="/static/transferapp/review.js"' in page
    response = alice.get(reverse("prediction_image", args=[audit.pk]))
    assert response.status_code == 200 and b"".join(response.streaming_content)[:2] == b"\xff\xd8"  # a JPEG


def test_a_review_by_form_and_by_script_and_its_undo(alice, project):
    first, second = make_prediction(project, audit=True, top_label="red", seed=1), make_prediction(project, audit=True, seed=2)
    response = alice.post(reverse("prediction_review", args=[first.pk]), {"accept": "1"})
    assert response.status_code == 302 and response["Location"] == reverse("review_queue", args=[project.pk])
    first.refresh_from_db()
    assert (first.review_label, first.review_source) == ("red", "queue")
    response = alice.post(reverse("prediction_review", args=[second.pk]), {"label": "blue"},
                          headers={"X-Requested-With": "XMLHttpRequest"})
    assert response.json() == {"id": second.pk, "label": "blue", "correct": False}
    refused = alice.post(reverse("prediction_review", args=[second.pk]), {"label": "green"},
                         headers={"X-Requested-With": "XMLHttpRequest"})
    assert refused.status_code == 400 and "not a class" in refused.json()["error"]
    alice.post(reverse("prediction_review_undo", args=[second.pk]), headers={"X-Requested-With": "XMLHttpRequest"})
    second.refresh_from_db()
    assert second.review_label == ""
    page = alice.get(reverse("review_queue", args=[project.pk])).content.decode()
    assert f'data-pk="{second.pk}"' in page and f'data-pk="{first.pk}"' not in page  # reviewed: out of the queue
    assert f'id="reviewed-{first.pk}"' in page and "Add to class red" in page


def test_add_to_class_and_add_all_from_the_reviewed_list(alice, project, user):
    one, two, gone = (make_prediction(project, seed=s, keep_image=s != 3) for s in (1, 2, 3))
    for p in (one, two, gone):
        reviews.review_record(prediction=p, label="blue", by=user)
    response = alice.post(reverse("prediction_add", args=[one.pk]), headers={"HX-Request": "true"})
    body = response.content.decode()
    assert "Added to class “blue” (from production, reviewed by alice on" in body and "In training ✓" in body
    one.refresh_from_db()
    label_page = alice.get(reverse("label_detail", args=[project.pk, one.added_image.label_id])).content.decode()
    assert "from production, reviewed by alice on" in label_page and f'id="image-{one.added_image_id}"' in label_page
    response = alice.post(reverse("review_add_all", args=[project.pk]))
    assert response.status_code == 302
    assert Image.objects.filter(project=project).exclude(provenance="").count() == 2  # the one not kept is left
    refused = alice.post(reverse("prediction_add", args=[gone.pk]), headers={"HX-Request": "true"}).content.decode()
    assert "was not kept" in refused


def test_the_version_diff_marks_images_added_from_production(alice, project, user):
    prediction = make_prediction(project, top_label="red", color="blue", seed=1)
    v1 = _version(project, 1, answers=None)
    reviews.review_record(prediction=prediction, label="blue", by=user)
    image = reviews.add_to_training(prediction=prediction).image
    keys = [str(pk) for pk in project.images.values_list("pk", flat=True)]
    blue = 0  # classes ["blue", "red"]; the added image is blue: v1 said red (wrong), v2 says blue (fixed)
    _set(v1, [[k, 0 if k == str(image.pk) else 1, 1, 0.6] for k in keys])
    _version(project, 2, answers=[[k, 0 if k == str(image.pk) else 1, blue if k == str(image.pk) else 1, 0.9]
                                       for k in keys])
    page = alice.get(reverse("version_compare", args=[project.pk]), {"before": 1, "after": 2}).content.decode()
    assert 'id="from-production"' in page and "1 image added from production" in page
    assert 'id="from-production-fixed"' in page and f'title="{image.provenance}">from production</span>' in page


def _version(project, version, answers) -> TrainingRun:
    run = TrainingRun.objects.create(project=project, status=TrainingRun.Status.SUCCEEDED, base_model="efficientnet_lite0",
                                     preset="fast", classes=["blue", "red"], version=version, finished_at=timezone.now(),
                                     metrics={"classes": ["blue", "red"], "accuracy": 0.9})
    if answers is not None:
        _set(run, answers)
    return run


def _set(run, answers) -> None:
    run.metrics = {**run.metrics, "eval_predictions": answers, "n_scored": len(answers)}
    run.save(update_fields=["metrics"])


def test_no_queue_link_or_live_figure_without_versions(alice, project):
    page = alice.get(project.get_absolute_url()).content.decode()
    assert reverse("review_queue", args=[project.pk]) not in page
    assert Prediction.objects.count() == 0
