"""Reviews of logged predictions (#25): the queue's two streams, review and undo, and reviewed
predictions added to their class as training images with their provenance. Real database, real
images kept through the storage layer as the prediction log keeps them."""
import hashlib
from datetime import timedelta

import pytest
from django.core.files.base import ContentFile
from django.utils import timezone

from tests.conftest import image_bytes
from tests.factories import project_with_images
from transferapp.library import errors, reviews
from transferapp.models import Image, Prediction

pytestmark = pytest.mark.django_db


def make_prediction(project, *, top_label="red", probability=0.9, audit=False, abstained=False, keep_image=True,
                    version=1, color="red", seed=100, minutes_ago=0, file_name="") -> Prediction:
    """A logged prediction as the log writes it: the row, and (kept) its small JPEG saved through
    the storage layer (Prediction.image)."""
    data = image_bytes(color, size=(48, 48), fmt="JPEG", shape_seed=seed)
    prediction = Prediction(project=project, version=version, source=Prediction.Source.API, source_name="lab script",
                            created_at=timezone.now() - timedelta(minutes=minutes_ago), file_name=file_name,
                            sha256=hashlib.sha256(data).hexdigest(), top_label=top_label, probability=probability,
                            prediction_set=[top_label], abstained=abstained, audit=audit)
    if keep_image:
        prediction.image.save("kept.jpg", ContentFile(data), save=False)
    prediction.save()
    return prediction


@pytest.fixture
def project(user):
    return project_with_images(user, classes=("red", "blue"), per_class=5)


def test_a_review_records_the_true_class_and_undo_forgets_it(project, user):
    prediction = make_prediction(project, top_label="red", audit=True)
    reviews.review_record(prediction=prediction, label="blue", by=user)
    prediction.refresh_from_db()
    assert (prediction.review_label, prediction.review_source, prediction.reviewed_by) == ("blue", "queue", user)
    assert prediction.reviewed_at is not None and prediction.correct is False
    reviews.review_undo(prediction=prediction)
    prediction.refresh_from_db()
    assert (prediction.review_label, prediction.review_source, prediction.reviewed_by, prediction.reviewed_at) == ("", "", None, None)
    with pytest.raises(errors.ServiceError, match="not a class"):
        reviews.review_record(prediction=prediction, label="green", by=user)


def test_the_queue_has_the_audit_sample_and_separately_the_ones_to_learn_from(project, user):
    audit_old = make_prediction(project, audit=True, minutes_ago=5, seed=1)
    audit_new = make_prediction(project, audit=True, probability=0.3, minutes_ago=1, seed=2)
    dont_know = make_prediction(project, abstained=True, probability=0.8, seed=3)
    unsure = make_prediction(project, probability=0.55, seed=4)
    make_prediction(project, probability=0.95, seed=5)  # sure, not audited: not asked
    make_prediction(project, abstained=True, keep_image=False, seed=6)  # nothing to look at
    done = make_prediction(project, audit=True, seed=7)
    reviews.review_record(prediction=done, label="red", by=user)
    assert list(reviews.queue_audit(project)) == [audit_old, audit_new]  # the order they were made
    assert list(reviews.queue_to_learn(project)) == [dont_know, unsure]  # "don't know" first, then the least sure
    assert reviews.queue_size(project) == 4


def test_a_reviewed_prediction_is_added_to_its_reviewed_class_with_provenance(project, user):
    prediction = make_prediction(project, top_label="red", color="blue", seed=11, file_name="shift-3.jpg")
    reviews.review_record(prediction=prediction, label="blue", by=user)
    outcome = reviews.add_to_training(prediction=prediction)
    image = Image.objects.get(pk=outcome.image.pk)
    assert image.label.name == "blue" and image.split == ""  # the reviewed class, used for training
    assert image.original_name == "shift-3.jpg"
    today = timezone.localdate().isoformat()
    assert image.provenance == f"from production, reviewed by alice on {today}"
    with prediction.image.open("rb") as kept, image.file.open("rb") as stored:
        assert kept.read() == stored.read()
    prediction.refresh_from_db()
    assert prediction.added_image == image
    again = reviews.add_to_training(prediction=prediction)  # a second click adds nothing
    assert again.image == image and Image.objects.filter(project=project).count() == 11


def test_the_same_image_already_in_the_project_is_reported_not_added(project, user):
    prediction = make_prediction(project, seed=12)
    existing = make_prediction(project, seed=12)  # the same bytes, logged twice
    for p in (prediction, existing):
        reviews.review_record(prediction=p, label="red", by=user)
    assert reviews.add_to_training(prediction=existing).image is not None
    outcome = reviews.add_to_training(prediction=prediction)
    assert outcome.image is None and outcome.duplicate and "already a training image of class “red”" in outcome.message
    prediction.refresh_from_db()
    assert prediction.added_image is None


def test_adding_is_refused_without_a_kept_image_or_a_review(project, user):
    not_kept = make_prediction(project, keep_image=False)
    reviews.review_record(prediction=not_kept, label="red", by=user)
    with pytest.raises(errors.ServiceError, match="not kept"):
        reviews.add_to_training(prediction=not_kept)
    with pytest.raises(errors.ServiceError, match="Review this prediction first"):
        reviews.add_to_training(prediction=make_prediction(project, seed=13))
    assert Image.objects.filter(project=project).count() == 10


def test_add_all_reviewed_adds_each_reviewed_one_and_reports_the_rest(project, user):
    right = make_prediction(project, top_label="red", color="red", seed=21)
    corrected = make_prediction(project, top_label="red", color="blue", seed=22)
    by_api = make_prediction(project, top_label="blue", color="blue", seed=23)
    duplicate = make_prediction(project, seed=21)
    make_prediction(project, seed=24)  # not reviewed: not added
    gone = make_prediction(project, keep_image=False, seed=25)
    for p, label in ((right, "red"), (corrected, "blue"), (duplicate, "red"), (gone, "red")):
        reviews.review_record(prediction=p, label=label, by=user)
    reviews.review_record(prediction=by_api, label="blue", source=Prediction.ReviewSource.API)
    outcomes = reviews.add_all_reviewed(project=project)
    added = {o.prediction.pk: o.image for o in outcomes if o.image}
    assert set(added) == {corrected.pk, by_api.pk} | ({right.pk} if right.pk in added else {duplicate.pk})
    assert len(added) == 3 and sum(o.duplicate for o in outcomes) == 1  # one of the same two bytes
    assert added[corrected.pk].label.name == "blue"
    assert added[by_api.pk].provenance.startswith("from production, reviewed by the feedback API on ")
    again = reviews.add_all_reviewed(project=project)  # the added ones are not tried again
    assert len(again) == 1 and again[0].duplicate and again[0].image is None
    assert Image.objects.filter(project=project).exclude(provenance="").count() == 3


def test_added_between_counts_only_images_from_production_in_the_window(project, user):
    start = timezone.now()
    prediction = make_prediction(project, seed=31)
    reviews.review_record(prediction=prediction, label="red", by=user)
    reviews.add_to_training(prediction=prediction)
    assert reviews.added_between(project=project, start=start, end=timezone.now()) == 1
    assert reviews.added_between(project=project, start=timezone.now(), end=timezone.now() + timedelta(days=1)) == 0


def test_renaming_a_class_renames_it_in_the_logged_predictions_and_their_reviews(project, user):
    from transferapp.library import projects
    from transferapp.reporting.live_accuracy import live_accuracy

    older = make_prediction(project, top_label="red", audit=True, seed=41)
    older.prediction_set = ["red", "blue"]
    older.save(update_fields=["prediction_set"])
    reviewed_red = make_prediction(project, top_label="red", audit=True, seed=42)
    reviews.review_record(prediction=reviewed_red, label="red", by=user)
    other = make_prediction(project, top_label="blue", seed=43)
    projects.label_rename(label=project.labels.get(name="red"), name="rouge")
    older.refresh_from_db()
    reviewed_red.refresh_from_db()
    other.refresh_from_db()
    assert (older.top_label, older.prediction_set) == ("rouge", ["rouge", "blue"])
    assert (reviewed_red.top_label, reviewed_red.review_label) == ("rouge", "rouge")
    assert (other.top_label, other.prediction_set) == ("blue", ["blue"])
    reviews.review_record(prediction=older, label=older.top_label, by=user)  # "Right" (Enter) on the older one
    assert [(r["k"], r["n"]) for r in live_accuracy(project)] == [(2, 2)]


def test_a_training_image_predicted_again_is_reported_not_added_as_a_near_duplicate(project, user):
    """The kept JPEG is a re-encoding: its bytes never match the training image, so the check is on
    the original's sha256 (and on seen_in_training), and says which class holds the image."""
    training = Image.objects.filter(project=project, label__name="blue").first()
    same_bytes = make_prediction(project, top_label="blue", color="blue", seed=51)
    Prediction.objects.filter(pk=same_bytes.pk).update(sha256=training.sha256)
    same_bytes.refresh_from_db()
    learnt = make_prediction(project, top_label="red", color="red", seed=52)
    Prediction.objects.filter(pk=learnt.pk).update(seen_in_training=True)
    learnt.refresh_from_db()
    for prediction in (same_bytes, learnt):
        reviews.review_record(prediction=prediction, label="red", by=user)
    outcome = reviews.add_to_training(prediction=same_bytes)
    assert outcome.image is None and outcome.duplicate
    assert f"already a training image of class “blue” (as “{training.original_name}”)" in outcome.message
    outcome = reviews.add_to_training(prediction=learnt)
    assert outcome.image is None and outcome.duplicate and "The model learnt from this very image" in outcome.message
    assert Image.objects.filter(project=project).count() == 10
