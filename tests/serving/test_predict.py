"""The predict page's error paths: every refusal is a clear message (never a 500 or a traceback),
good images in a batch are still predicted, and nobody reaches another user's model.

One real model is trained once per session by the engine (fast preset, tiny images); each test
gets its own copy of its folder, so a test that damages it harms no other.
"""
import html
import json
import re
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest
from django.urls import reverse

from tests.conftest import image_bytes
from tests.factories import project_with_images, upload
from transferapp.engine.config import TrainConfig
from transferapp.engine.data import Sample
from transferapp.engine.fitting import fit
from transferapp.models import TrainingRun

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("queue")]

CLASSES = ["blue", "red"]
SCRIPT = {"HTTP_X_REQUESTED_WITH": "XMLHttpRequest"}  # what app.js's uploader sends


@pytest.fixture(scope="session")
def trained_model_dir(tmp_path_factory) -> Path:
    """A real artifact (meta.json + model.pt) of the bundled base, trained on red and blue images."""
    root = tmp_path_factory.mktemp("predict-model")
    samples = []
    for label, color in enumerate(CLASSES):
        for i in range(6):
            path = root / "images" / f"{color}-{i}.png"
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(image_bytes(color, shape_seed=i))
            samples.append(Sample(path=str(path), label=label, key=path.name))
    config = TrainConfig(base="efficientnet_lite0", preset="fast", image_size=64, refit=False)
    train = [s for s in samples if not s.key.endswith("-0.png")]
    val = [s for s in samples if s.key.endswith("-0.png")]
    fit(train, val, CLASSES, config, root / "model", cache_dir=root / "cache")
    return root / "model"


def _finished_run(project, model_dir: Path, tmp_path: Path) -> TrainingRun:
    copy = tmp_path / f"run-model-{project.pk}"
    shutil.copytree(model_dir, copy)
    return TrainingRun.objects.create(
        project=project, base_model="efficientnet_lite0", preset="fast", status=TrainingRun.Status.SUCCEEDED,
        config=asdict(TrainConfig(preset="fast")), classes=CLASSES, n_images=10, artifact_dir=str(copy),
        metrics={"accuracy": 1.0},
    )


@pytest.fixture
def run(user, trained_model_dir, tmp_path):
    return _finished_run(project_with_images(user, classes=CLASSES), trained_model_dir, tmp_path)


def _predict(client, project, *files, script=False, follow=False, **data):
    extra = SCRIPT if script else {}
    return client.post(reverse("predict", args=[project.pk]), {"files": list(files), **data}, follow=follow, **extra)


def _error(response) -> str:
    """The reason given for a refusal: a JSON error (nothing to predict with, or nothing sent), or a
    refused row of the predictions table (a file the model could not be given)."""
    if response.status_code == 400:
        return json.loads(response.content)["error"]
    assert response.status_code == 200, response.content[:300]
    row = re.search(r'data-upload-status="refused" data-upload-reason="([^"]*)"', response.content.decode())
    assert row, response.content[:300]
    return html.unescape(row.group(1))


def _red():
    return upload("new-red.png", image_bytes("red", shape_seed=3))


def test_it_predicts_a_good_image(alice, run):
    response = _predict(alice, run.project, _red(), script=True)
    assert response.status_code == 200
    assert '<td class="top-class"><strong>red' in response.content.decode()


def test_it_says_to_train_first_when_the_project_has_no_model(alice, user):
    project = project_with_images(user, per_class=1)
    assert "No trained model yet" in alice.get(reverse("predict", args=[project.pk])).content.decode()
    assert "Train a model first" in _error(_predict(alice, project, _red(), script=True))
    page = _predict(alice, project, _red(), follow=True).content.decode()
    assert "Train a model first" in page


def test_a_run_still_queued_is_not_offered_for_predictions(alice, run):
    TrainingRun.objects.filter(pk=run.pk).update(status=TrainingRun.Status.QUEUED)
    assert "Train a model first" in _error(_predict(alice, run.project, _red(), script=True))


def test_it_asks_for_a_file_when_none_was_sent(alice, run):
    assert "Choose one or more images" in _error(_predict(alice, run.project, script=True))
    page = _predict(alice, run.project, follow=True)
    assert page.status_code == 200 and "Choose one or more images" in page.content.decode()


@pytest.mark.parametrize(
    "name, data, says",
    [
        ("notes.png", b"a shopping list, not a photo\n", "not an image file"),
        ("empty.jpg", b"", "empty"),
        ("tiny.png", image_bytes("red", size=(8, 8)), "only 8x8 pixels"),
        ("cut.png", image_bytes("red")[:120], "corrupt or truncated"),
    ],
)
def test_an_unusable_file_is_refused_with_its_reason(alice, run, name, data, says):
    response = _predict(alice, run.project, upload(name, data), script=True)
    reason = _error(response)
    assert says in reason and "Traceback" not in reason
    assert f'title="{name}"' in response.content.decode()  # the refused row names its file


def test_an_oversized_file_is_refused_before_it_is_read(alice, run, settings):
    settings.MAX_UPLOAD_MB = 1
    huge = upload("huge.png", b"\x89PNG" + b"0" * 2_000_000)
    assert "the limit is 1 MB" in _error(_predict(alice, run.project, huge, script=True))


@pytest.mark.parametrize("damage", ["delete meta.json", "delete model.pt", "garble model.pt", "garble meta.json"])
def test_a_damaged_model_folder_gives_a_clear_message_not_a_server_error(alice, run, damage):
    action, name = damage.split()
    path = Path(run.artifact_dir) / name
    if action == "delete":
        path.unlink()
    else:
        path.write_bytes(b"\x00 half-copied \xff")
    reason = _error(_predict(alice, run.project, _red(), script=True))
    assert "train again" in reason and "Traceback" not in reason
    page = _predict(alice, run.project, _red())
    assert page.status_code == 200 and "train again" in page.content.decode()


def test_a_mixed_batch_still_predicts_the_good_images(alice, run):
    files = [
        _red(),
        upload("notes.png", b"not a picture"),
        upload("new-blue.png", image_bytes("blue", shape_seed=4)),
        upload("empty.png", b""),
    ]
    page = _predict(alice, run.project, *files).content.decode()
    assert page.count('<tr class="prediction"') == 2
    assert '<td class="top-class"><strong>red' in page and '<td class="top-class"><strong>blue' in page
    assert page.count("prediction-error") == 2 and "notes.png" in page and "empty.png" in page
    assert run.project.images.count() == 10  # predicting stores nothing


def test_another_users_project_and_model_are_a_404(client, run, other_user, trained_model_dir, tmp_path):
    client.force_login(other_user)
    project = run.project
    assert client.get(reverse("predict", args=[project.pk])).status_code == 404
    assert _predict(client, project, _red(), script=True).status_code == 404
    # Naming the victim's run on one's own project uses one's own model, never theirs.
    own = _finished_run(project_with_images(other_user, classes=CLASSES, name="Mine"), trained_model_dir, tmp_path)
    response = _predict(client, own.project, _red(), script=True, run=run.pk)
    assert response.status_code == 200
    assert f'data-run="{own.pk}"' in response.content.decode() and f'data-run="{run.pk}"' not in response.content.decode()


def test_the_16_bit_memory_bomb_is_refused_with_its_name_and_reason(alice, run):
    from tests.conftest import sixteen_bit_bomb

    response = _predict(alice, run.project, upload("bomb.png", sixteen_bit_bomb()), _red(), script=True)
    reason = _error(response)
    assert "6300x6300 pixels of 1 16-bit channel" in reason and "over the limit of 60 MB" in reason
    page = response.content.decode()
    assert 'title="bomb.png"' in page and '<td class="top-class"><strong>red' in page  # the good image is still predicted


def test_the_prediction_allowance_counts_an_image_by_its_megapixels(alice, run, settings):
    from django.core.cache import cache

    cache.clear()
    settings.PREDICT_RATE_PER_MIN, settings.PREDICT_UNIT_MEGAPIXELS = 3, 0.002  # a 64x64 image counts 3
    assert _predict(alice, run.project, _red(), script=True).status_code == 200
    refused = _predict(alice, run.project, _red(), script=True)
    assert refused.status_code == 429 and "Too many predictions" in json.loads(refused.content)["error"]
    cache.clear()


def _solid_square(rgb=(40, 180, 60)) -> bytes:
    """An image unlike the red and blue training images: one colour, no shape."""
    from io import BytesIO

    from PIL import Image

    out = BytesIO()
    Image.new("RGB", (64, 64), rgb).save(out, format="PNG")
    return out.getvalue()


def _row_of(page: str, name: str) -> str:
    row = re.search(r'<tr class="prediction"[^>]*>(?:(?!</tr>).)*?' + re.escape(name) + r"(?:(?!</tr>).)*</tr>", page, re.S)
    assert row, page[:500]
    return row.group(0)


def test_a_dont_know_row_names_the_closest_class_with_no_confident_bar_and_no_heat_map_for_it(alice, run):
    """Issue #32.3: the answer state first; the class the probability belongs to only as the
    closest class; no bar and no heat map offered first for a class the row did not answer."""
    response = _predict(alice, run.project, upload("green-square.png", _solid_square()), script=True)
    row = _row_of(response.content.decode(), "green-square.png")
    assert 'data-unfamiliar="true"' in row, row  # the model itself says: unlike the training images
    assert '<td class="top-class"><strong>Don' in row
    closest = re.search(r"closest class: (\w+) \(([0-9.]+)%\)", html.unescape(row))
    assert closest and closest.group(1) in CLASSES, row
    assert "prob-bar" not in row  # no confident bar beside "Don't know"
    assert "data-heatmap-src" not in row  # nothing drawn for the closest class unless asked for
    picker = re.search(r"<select data-heatmap-class>(.*?)</select>", row, re.S).group(1)
    first = re.search(r"<option[^>]*>([^<]*)</option>", picker)
    assert 'value=""' in first.group(0) and first.group(1) not in CLASSES  # "choose a class" first
    assert all(f">{c}</option>" in picker for c in CLASSES)  # any class's map, when the user asks


def test_a_familiar_row_keeps_its_bar_and_its_heat_map(alice, run):
    row = _row_of(_predict(alice, run.project, _red(), script=True).content.decode(), "new-red.png")
    assert 'data-unfamiliar="false"' in row and "prob-bar" in row and "data-heatmap-src" in row
    assert "closest class" not in row


def test_the_batch_table_says_dont_know_with_the_closest_class_and_no_bar(alice, run, tmp_path):
    from transferapp.models import BatchPrediction
    from transferapp.serving import batch as serving_batch

    rows = serving_batch.predict_rows(run, [("green-square.png", _solid_square()), ("new-red.png", image_bytes("red", shape_seed=3))])
    assert rows[0]["abstained"] and rows[0].get("unfamiliar") is True and rows[1].get("unfamiliar") is False
    folder = tmp_path / "batch"
    folder.mkdir()
    (folder / BatchPrediction.CSV).write_text(serving_batch.to_csv(rows), encoding="utf-8")
    batch = BatchPrediction.objects.create(project=run.project, run=run, version=run.version, source_name="two.zip",
                                           folder=str(folder), csv_path=str(folder / BatchPrediction.CSV),
                                           status=BatchPrediction.Status.DONE, total=2, done=2)
    page = alice.get(reverse("predict", args=[run.project.pk]) + f"?batch={batch.pk}").content.decode()
    square, red = _row_of(page, "green-square.png"), _row_of(page, "new-red.png")
    assert "Don" in re.search(r'<td class="top-class">(.*?)</td>', square, re.S).group(1)
    closest = re.search(r"closest class: (\w+) \(([0-9.]+)%\)", html.unescape(square))
    assert closest and closest.group(1) == rows[0]["top"]["label"], square
    assert "prob-bar" not in square and "prob-bar" in red and "closest class" not in red
