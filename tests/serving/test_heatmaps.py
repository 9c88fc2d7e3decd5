"""Heat maps on the web: the predict page and the misclassified gallery offer an overlay per class,
served from a bounded cache (a reload runs no model), and only to the model's owner."""
import io
import re

import pytest
from django.urls import reverse
from PIL import Image

from tests.conftest import image_bytes
from tests.factories import project_with_images, upload
from tests.serving import test_predict
from tests.serving.test_predict import CLASSES, SCRIPT, _finished_run
from transferapp.engine.predict import Predictor
from transferapp.serving import heatmaps as serving_heatmaps

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("queue")]
trained_model_dir = test_predict.trained_model_dir  # the session's real model (a fixture)


@pytest.fixture(autouse=True)
def empty_cache():
    serving_heatmaps.clear()
    yield
    serving_heatmaps.clear()


@pytest.fixture
def run(user, trained_model_dir, tmp_path):
    return _finished_run(project_with_images(user, classes=CLASSES), trained_model_dir, tmp_path)


def _predicted_row(client, run, name="new-red.png", seed=3, color="red") -> str:
    response = client.post(reverse("predict", args=[run.project.pk]), {"files": [upload(name, image_bytes(color, shape_seed=seed))]},
                           **SCRIPT)
    assert response.status_code == 200
    return response.content.decode()


def _choices(row: str) -> list[tuple[str, str]]:
    return re.findall(r'<option value="(/runs/\d+/heatmap/[0-9a-f]{64}/\d\.png)">(\w+)</option>', row)


def _png(response) -> Image.Image:
    assert response.status_code == 200 and response["Content-Type"] == "image/png", response.content[:200]
    return Image.open(io.BytesIO(response.content))


def test_the_predict_page_offers_the_predicted_class_first_then_every_class(alice, run):
    row = _predicted_row(alice, run)
    choices = _choices(row)
    assert [label for _, label in choices] == ["red", "blue"]  # the prediction first
    assert f'data-heatmap-src="{choices[0][0]}"' in row  # fetched only once the toggle shows it
    maps = [_png(alice.get(url)) for url, _ in choices]
    assert maps[0].size == maps[1].size and min(maps[0].size) == 73  # the model's resize for 64 px
    assert maps[0].tobytes() != maps[1].tobytes()  # each class has its own map


def test_a_reload_runs_no_model_and_the_browser_may_keep_it(alice, run, monkeypatch):
    url, _ = _choices(_predicted_row(alice, run))[0]
    calls = []
    real = Predictor.heat_map_png
    monkeypatch.setattr(Predictor, "heat_map_png", lambda *a: calls.append(1) or real(*a))
    first, again = alice.get(url), alice.get(url)
    assert first.content == again.content and len(calls) == 1
    assert "max-age" in again["Cache-Control"] and "private" in again["Cache-Control"]


def test_an_overlay_no_longer_kept_says_to_predict_again(alice, run):
    url, _ = _choices(_predicted_row(alice, run))[0]
    serving_heatmaps.clear()
    response = alice.get(url)
    assert response.status_code == 404 and b"predict the image again" in response.content


def test_the_cache_stays_within_its_budget_forgetting_the_oldest(alice, run, settings):
    settings.HEATMAP_CACHE_MB = 0.1  # ~4 of this tiny (64 px) model's images with their overlays
    urls = []
    for seed in range(8):
        urls.append(_choices(_predicted_row(alice, run, name=f"r{seed}.png", seed=seed))[0][0])
        alice.get(urls[-1])
    assert 0 < sum(serving_heatmaps._sizes.values()) <= 0.1 * 1024 * 1024
    assert alice.get(urls[0]).status_code == 404 and alice.get(urls[-1]).status_code == 200


def _with_a_mistake(run):
    image = run.project.images.filter(label__name="red").first()
    run.metrics = {**run.metrics, "classes": CLASSES,
                   "mistakes": [{"key": str(image.pk), "true": "red", "predicted": "blue", "confidence": 0.7}]}
    run.save()
    return image


def test_the_misclassified_gallery_offers_the_wrong_class_then_the_true_one(alice, run):
    image = _with_a_mistake(run)
    page = alice.get(reverse("run_detail", args=[run.pk])).content.decode()
    urls = re.findall(rf'<option value="(/runs/{run.pk}/images/{image.pk}/heatmap/\d\.png)">(\w+)</option>', page)
    assert [label for _, label in urls] == ["blue", "red"]
    assert "data-heatmap-toggle" in page
    first = _png(alice.get(urls[0][0]))
    serving_heatmaps.clear()  # a stored image is predicted again from its file
    assert _png(alice.get(urls[0][0])).tobytes() == first.tobytes()


def test_another_user_gets_a_404_for_both_kinds_of_heat_map(client, alice, run, other_user):
    url, _ = _choices(_predicted_row(alice, run))[0]
    image = _with_a_mistake(run)
    gallery_url = reverse("run_image_heatmap", args=[run.pk, image.pk, 0])
    assert alice.get(gallery_url).status_code == 200
    client.force_login(other_user)
    assert client.get(url).status_code == 404
    assert client.get(gallery_url).status_code == 404


def test_an_unknown_class_or_image_is_a_404_not_an_error(alice, run):
    url, _ = _choices(_predicted_row(alice, run))[0]
    assert alice.get(re.sub(r"/\d\.png$", "/7.png", url)).status_code == 404
    assert alice.get(reverse("run_image_heatmap", args=[run.pk, 999999, 0])).status_code == 404
