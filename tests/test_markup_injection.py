"""User text (class, project and file names) never comes back as markup (issue 30, item 1).

A class name carrying `<i hx-post=... hx-trigger=load>` once came back raw in the "Moved to …"
fragment; htmx then processed it and sent an authenticated, CSRF-valid POST on the victim's behalf.
"""
import pytest
from django.urls import reverse

from tests.factories import project_with_images
from transferapp.models import Label, TrainingRun

pytestmark = pytest.mark.django_db

# An htmx attribute that fires a request on load, and a plain script-less XSS probe.
HTMX_PROBE = '<i hx-post="delete/" hx-trigger="load">'
IMG_PROBE = "<img src=x onerror=alert(1)>"
MARKUP = f"bees{IMG_PROBE}{HTMX_PROBE}"


def _assert_no_raw_markup(body: str, where: str):
    for probe in ("<i hx-post", "<img src=x"):
        assert probe not in body, f"{where} returned raw markup: …{body[max(0, body.find(probe) - 80):body.find(probe) + 80]}…"


def _legacy_label(project, name):
    """A class stored before import neutralised markup (services.label_create would clean the name)."""
    return Label.objects.create(project=project, name=name)


def _finished_run(project, suspects):
    classes = [label.name for label in project.labels.order_by("name")]
    metrics = {"classes": classes, "accuracy": 1.0, "n_scored": 2, "accuracy_ci": [0.34, 1.0], "per_class": {},
               "confusion": [[1, 0], [0, 1]], "evaluated_on": "validation", "n_train": 8, "n_val": 2,
               "trust": {"alpha": 0.1, "min_alpha": 0.1, "n_calibration": 9}, "suspected_mislabels": suspects}
    return TrainingRun.objects.create(project=project, status="succeeded", base_model="efficientnet_lite0",
                                      classes=classes, metrics=metrics)


def test_move_to_a_class_named_with_markup_returns_it_escaped(alice, user):
    project = project_with_images(user, classes=("red",), per_class=1)
    image = project.labels.get().images.get()
    target = _legacy_label(project, MARKUP)
    response = alice.post(reverse("image_relabel", args=[image.pk]), {"target": target.pk}, HTTP_HX_REQUEST="true")
    body = response.content.decode()
    assert response.status_code == 200
    _assert_no_raw_markup(body, "Move to")
    assert "bees&lt;img src=x" in body and "Moved to" in body  # still says where the image went
    image.refresh_from_db()
    assert image.label_id == target.pk
