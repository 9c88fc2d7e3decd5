"""Item 1 of issue 32: a prediction of an image the model learnt from says so (page, API, batch CSV),
since its answer is no evidence of how the model does on new images."""
import csv
import io

import pytest
from django.urls import reverse

from tests.api_support import photo_bytes
from tests.factories import upload
from tests.web.test_api import trained  # noqa: F401 (a fixture: the API tests' trained version with a key)
from transferapp.engine.final import TRAINED_ON
from transferapp.models import Image
from transferapp.storage import blobs

pytestmark = pytest.mark.django_db(transaction=True)

MARK = "this image was used to train this model"


def _a_training_image(run) -> bytes:
    """The bytes of one image the served model learnt from, as the artifact lists them."""
    listed = set((blobs.artifact_folder(run) / TRAINED_ON).read_text().split())
    image = next(i for i in Image.objects.filter(project=run.project).order_by("pk") if i.sha256 in listed)
    return image.file.read()


def test_a_training_image_is_marked_on_the_page_in_the_api_and_in_the_batch_csv_a_new_one_is_not(alice, trained):  # noqa: F811
    """One real run (training is the slow part) checked through every way of predicting."""
    project, run, key = trained
    listed = set((blobs.artifact_folder(run) / TRAINED_ON).read_text().split())
    trained_on = run.metrics["n_train"] + (run.metrics["n_val"] if (run.metrics.get("refit") or {}).get("done") else 0)
    assert len(listed) == trained_on > 0
    assert listed <= set(Image.objects.filter(project=project).values_list("sha256", flat=True))
    old, new = _a_training_image(run), photo_bytes("sea", 999)

    path, auth = f"/api/v1/projects/{project.pk}/predict", {"HTTP_AUTHORIZATION": f"Bearer {key}"}
    assert alice.post(path, data=old, content_type="image/jpeg", **auth).json()["seen_in_training"] is True
    assert alice.post(path, data=new, content_type="image/jpeg", **auth).json()["seen_in_training"] is False

    files = lambda: [upload("old.jpg", old, "image/jpeg"), upload("new.jpg", new, "image/jpeg")]  # noqa: E731
    page = alice.post(reverse("predict", args=[project.pk]), {"files": files()}).content.decode()
    rows = page.split('<tr class="prediction"')[1:]
    assert {row.split('title="')[1].split('"')[0]: MARK in row for row in rows} == {"old.jpg": True, "new.jpg": False}

    response = alice.post(reverse("predict_batch", args=[project.pk]), {"files": files()})
    csv_rows = {row["file"]: row for row in csv.DictReader(io.StringIO(response.content.decode()))}
    assert (csv_rows["old.jpg"]["seen_in_training"], csv_rows["new.jpg"]["seen_in_training"]) == ("True", "False")
