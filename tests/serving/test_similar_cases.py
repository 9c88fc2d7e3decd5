"""Item 6 of issue 24: beside each prediction, the training images the model finds most like it
(the API's ?similar=k, the predict page, the batch CSV and table, the results page's mistakes)."""
import csv
import io
import os
import zipfile

import numpy as np
import pytest
from django.test import Client
from django.urls import reverse

from tests.api_support import photo_bytes, photo_project, work_off_queue
from tests.factories import upload
from tests.web.test_api import trained  # noqa: F401 (a fixture: the API tests' trained version with a key)
from transferapp.library import trash
from transferapp.models import BatchPrediction, Image
from transferapp.storage import blobs

pytestmark = pytest.mark.django_db(transaction=True)


def _bank_keys(run) -> list[str]:
    with np.load(blobs.artifact_folder(run) / "trust.npz") as arrays:
        return [str(k) for k in arrays["bank_keys"]]


def _rewrite_bank_keys(run, keys: list[str]) -> None:
    """Changes which image each bank row names, and makes the web process load the model again."""
    folder = blobs.artifact_folder(run)
    with np.load(folder / "trust.npz") as stored:
        arrays = {**stored, "bank_keys": np.array(keys)}
    np.savez(folder / "trust.npz.tmp.npz", **arrays)
    (folder / "trust.npz.tmp.npz").replace(folder / "trust.npz")
    _reload(folder)


def _reload(folder) -> None:
    """Makes the web process load the model again (predictor_for's cache key is meta.json's mtime)."""
    stat = (folder / "meta.json").stat()
    os.utime(folder / "meta.json", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))


def _assert_cases(cases: list[dict], project, k: int) -> None:
    live = dict(Image.objects.filter(project=project).values_list("pk", "label__name"))
    assert len(cases) == k
    assert all(set(case) == {"image", "label", "similarity"} for case in cases)
    assert all(live[case["image"]] == case["label"] for case in cases)  # a KeyError: not a live image of it
    similarities = [case["similarity"] for case in cases]
    assert similarities == sorted(similarities, reverse=True) and all(-1 <= s <= 1 for s in similarities)


def test_similar_cases_in_the_api_the_pages_and_the_batch_csv(alice, user, other_user, trained):  # noqa: F811
    """One real run (training is the slow part) checked through every way of predicting."""
    project, run, key = trained
    keys = _bank_keys(run)
    assert keys and set(keys) <= {str(pk) for pk in Image.objects.filter(project=project).values_list("pk", flat=True)}
    path, auth = f"/api/v1/projects/{project.pk}/predict", {"HTTP_AUTHORIZATION": f"Bearer {key}"}
    new = photo_bytes("sea", 999)

    plain = alice.post(path, data=new, content_type="image/jpeg", **auth).json()
    assert plain["similar"] == []  # off unless asked for
    answer = alice.post(path + "?similar=3", data=new, content_type="image/jpeg", **auth).json()
    _assert_cases(answer["similar"], project, 3)
    assert answer["similar"][0]["label"] == "sea"
    assert alice.post(path + "?similar=999", data=new, content_type="image/jpeg", **auth).status_code == 422

    # A training image is its own most similar case.
    own = Image.objects.get(pk=int(keys[0]))
    old = own.file.read()
    answer = alice.post(path + "?similar=3", data=old, content_type="image/jpeg", **auth).json()
    _assert_cases(answer["similar"], project, 3)
    assert answer["similar"][0]["image"] == own.pk and answer["similar"][0]["similarity"] > 0.99  # the bank and the request embed through different paths (ONNX or eager; float16 rows)

    # The predict page: thumbnails that open the images.
    page = alice.post(reverse("predict", args=[project.pk]), {"files": [upload("old.jpg", old, "image/jpeg")]}).content.decode()
    row = page.split('<tr class="prediction"')[1].split("</tr>")[0]
    assert row.count("<img src=\"/images/") == 3
    assert reverse("image_thumbnail", args=[own.pk]) in row and reverse("image_file", args=[own.pk]) in row
    assert f'{own.label.name}</span><span class="similar-caption">100%' in row

    # The batch CSV answered in the request, and a worker's batch table.
    response = alice.post(reverse("predict_batch", args=[project.pk]), {"files": [upload("old.jpg", old, "image/jpeg")]})
    (csv_row,) = csv.DictReader(io.StringIO(response.content.decode()))
    cells = csv_row["similar"].split(";")
    assert len(cells) == 3 and cells[0].rsplit(":", 1)[0] == f"{own.pk}:{own.label.name}"
    assert float(cells[0].rsplit(":", 1)[1]) > 0.99
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("batch/old.jpg", old)
    assert alice.post(reverse("predict_batch", args=[project.pk]),
                      {"files": [upload("photos.zip", archive.getvalue(), "application/zip")]}).status_code == 302
    work_off_queue("intake")
    batch = BatchPrediction.objects.get(project=project)
    table = alice.get(reverse("predict", args=[project.pk]) + f"?batch={batch.pk}").content.decode()
    row = table.split('<tr class="prediction"')[1].split("</tr>")[0]
    assert row.count('class="similar-cases"') == 1 and reverse("image_thumbnail", args=[own.pk]) in row

    # The results page: beside a mistake, an htmx slot whose fragment lists the images most like it (not itself).
    run.metrics["mistakes"] = [{"key": str(own.pk), "true": own.label.name, "predicted": "meadow", "confidence": 0.9}]
    run.save(update_fields=["metrics"])
    slot = reverse("run_image_similar", args=[run.pk, own.pk])
    assert f'hx-get="{slot}"' in alice.get(run.get_absolute_url()).content.decode()
    fragment = alice.get(slot).content.decode()
    assert fragment.count("<img src=\"/images/") == 3 and reverse("image_thumbnail", args=[own.pk]) not in fragment

    # Another user sees no run's similar cases.
    client = Client()
    client.force_login(other_user)
    assert client.get(slot).status_code == 404

    # A trashed training image is linked nowhere.
    trash.images_delete(images=[own])
    answer = alice.post(path + "?similar=3", data=old, content_type="image/jpeg", **auth).json()
    _assert_cases(answer["similar"], project, 3)
    assert own.pk not in {case["image"] for case in answer["similar"]}
    table = alice.get(reverse("predict", args=[project.pk]) + f"?batch={batch.pk}").content.decode()
    assert reverse("image_thumbnail", args=[own.pk]) not in table

    # Another project's image is never linked, even where the artifact names it.
    other = Image.objects.filter(project=photo_project(user, per_class=1, name="Elsewhere")).first()
    second = Image.objects.get(pk=int(answer["similar"][0]["image"]))
    _rewrite_bank_keys(run, [str(other.pk) if k == str(second.pk) else k for k in keys])
    answer = alice.post(path + "?similar=3", data=old, content_type="image/jpeg", **auth).json()
    assert {case["image"] for case in answer["similar"]}.isdisjoint({other.pk, second.pk, own.pk})
    _assert_cases(answer["similar"], project, 3)

    # A model written before its bank rows were keyed answers as before, with no similar cases.
    folder = blobs.artifact_folder(run)
    with np.load(folder / "trust.npz") as stored:
        arrays = {name: stored[name] for name in stored.files if name not in ("bank_keys", "bank_labels")}
    np.savez(folder / "trust.npz.tmp.npz", **arrays)  # an artifact written before similar cases existed
    (folder / "trust.npz.tmp.npz").replace(folder / "trust.npz")
    _reload(folder)
    response = alice.post(path + "?similar=3", data=new, content_type="image/jpeg", **auth)
    assert response.status_code == 200 and response.json()["similar"] == []
    page = alice.post(reverse("predict", args=[project.pk]), {"files": [upload("a.jpg", photo_bytes("sea", 5), "image/jpeg")]})
    assert page.status_code == 200 and 'class="similar-cases"' not in page.content.decode()

