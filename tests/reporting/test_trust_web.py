"""Answers a domain expert can trust, through the app: test images held out, figures with their
evidence, honest answers on the predict page, and the "please look at these first" gallery."""
import html
import io
import re

import django_rq
import numpy as np
import pytest
from django.urls import reverse
from PIL import Image as PILImage
from rq import SimpleWorker

from tests.conftest import image_bytes
from tests.factories import project_with_images, upload
from transferapp.jobs import tasks
from transferapp.models import Image, TrainingRun

pytestmark = pytest.mark.django_db(transaction=True)


def _work_off_queue():
    django_rq.get_worker("default", worker_class=SimpleWorker).work(burst=True)


def _train(client, project, preset="fast", **fields):
    response = client.post(reverse("training_start", args=[project.pk]),
                           {"base_model": "efficientnet_lite0", "preset": preset, "epochs": 1, **fields})
    assert response.status_code == 302, response.content
    return TrainingRun.objects.filter(project=project).first()


def _noise_png() -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def received(monkeypatch):
    """What the engine's fit() was given by the worker: the sample keys of each part."""
    seen = {}
    original = tasks.fit

    def spy(train, val, classes, config, out_dir, **kwargs):
        seen.update(train={s.key for s in train}, val={s.key for s in val},
                    test={s.key for s in kwargs.get("test") or []})
        return original(train, val, classes, config, out_dir, **kwargs)
    monkeypatch.setattr(tasks, "fit", spy)
    return seen


def test_images_set_aside_for_testing_never_reach_training_and_are_scored_apart(alice, user, queue, received):
    project = project_with_images(user, classes=("red", "blue", "green"), per_class=7)
    label = project.labels.get(name="red")
    aside = list(label.images.values_list("pk", flat=True)[:2])
    for name in ("blue", "green"):
        aside += list(project.labels.get(name=name).images.values_list("pk", flat=True)[:2])
    for lab in project.labels.all():
        pks = [pk for pk in aside if Image.objects.get(pk=pk).label_id == lab.pk]
        alice.post(reverse("label_bulk", args=[project.pk, lab.pk]), {"images": pks, "action": "test"})
    assert set(Image.objects.filter(split="test").values_list("pk", flat=True)) == set(aside)

    run = _train(alice, project)
    _work_off_queue()
    run.refresh_from_db()
    assert run.status == "succeeded", run.error
    held = {str(pk) for pk in aside}
    assert received["test"] == held and not held & (received["train"] | received["val"])
    assert run.metrics["evaluated_on"] == "test" and run.metrics["n_scored"] == 6 == run.metrics["n_test"]
    page = alice.get(run.get_absolute_url()).content.decode()
    assert "accuracy on 6 images never used in training or choices" in page
    # 5 training images a class: no validation split, so the second figure is out-of-fold and says so.
    assert "The out-of-fold estimate over the 15 training images" in html.unescape(page)
    assert "The validation images, which chose the model" not in page


def test_images_given_back_to_training_are_trained_on_again(alice, user):
    project = project_with_images(user, per_class=3)
    label = project.labels.first()
    pks = list(label.images.values_list("pk", flat=True))
    alice.post(reverse("label_bulk", args=[project.pk, label.pk]), {"images": pks, "action": "test"})
    alice.post(reverse("label_bulk", args=[project.pk, label.pk]), {"images": pks[:1], "action": "train"})
    assert list(Image.objects.filter(split="test").values_list("pk", flat=True)) == sorted(pks[1:]) or \
        set(Image.objects.filter(split="test").values_list("pk", flat=True)) == set(pks[1:])
    assert Image.objects.get(pk=pks[0]).split == ""


def test_without_a_test_set_the_page_calls_the_figure_optimistic_and_predictions_say_dont_know(alice, user, queue):
    project = project_with_images(user, classes=("red", "blue", "green"), per_class=6)
    # No retrain on every image: the served model is the validated one (with the retrain, the headline
    # is the out-of-fold estimate: tests/reporting/test_figures_agree.py).
    run = _train(alice, project, validation="always", refit="no")
    _work_off_queue()
    run.refresh_from_db()
    assert run.status == "succeeded", run.error
    page = alice.get(run.get_absolute_url()).content.decode()
    assert 'id="optimistic-note"' in page and "Set aside for testing" in page
    assert f"validation accuracy on {run.metrics['n_scored']} images" in page
    assert "95% interval (Wilson)" in page and "Always answering" in page
    assert "not for each image" in page and 'id="reliability"' in page
    response = alice.post(reverse("predict", args=[project.pk]),
                          {"run": run.pk, "files": [upload("noise.png", _noise_png())]},
                          HTTP_X_REQUESTED_WITH="XMLHttpRequest")
    assert "Don't know — this image is unlike the training images" in html.unescape(response.content.decode())
    familiar = alice.post(reverse("predict", args=[project.pk]),
                          {"run": run.pk, "files": [upload("g.png", image_bytes("green", shape_seed=2))]},
                          HTTP_X_REQUESTED_WITH="XMLHttpRequest").content.decode()
    assert "Likely green" in familiar


def _finished_run(project, **metrics):
    classes = [lab.name for lab in project.labels.order_by("name")]
    base = {"classes": classes, "accuracy": 1.0, "n_scored": 2, "accuracy_ci": [0.34, 1.0], "per_class": {},
            "confusion": [[1, 0], [0, 1]], "evaluated_on": "validation", "n_train": 8, "n_val": 2,
            "trust": {"alpha": 0.1, "min_alpha": 0.1, "n_calibration": 9}}
    return TrainingRun.objects.create(project=project, status="succeeded", base_model="efficientnet_lite0",
                                      classes=classes, metrics={**base, **metrics})


def test_the_suspects_gallery_moves_confirms_and_remembers(alice, user):
    project = project_with_images(user, classes=("blue", "red"), per_class=3)
    blue, red = project.labels.get(name="blue"), project.labels.get(name="red")
    a, b, c = blue.images.all()[:3]
    rows = [{"key": str(img.pk), "label": 0, "suggested": 1, "p_given": 0.1, "p_suggested": 0.9} for img in (a, b, c)]
    run = _finished_run(project, suspected_mislabels=rows)
    page = alice.get(run.get_absolute_url()).content.decode()
    assert "Please look at these first (3)" in page and "Move to red" in re.sub(r"<[^>]+>", "", page)  # the name in its hx-disable span

    alice.post(reverse("image_relabel", args=[a.pk]), {"target": red.pk})
    alice.post(reverse("image_confirm", args=[b.pk]))
    a.refresh_from_db(), b.refresh_from_db()
    assert a.label_id == red.pk and b.label_confirmed
    page = alice.get(run.get_absolute_url()).content.decode()
    assert "Please look at these first (1)" in page and f'id="suspect-{c.pk}"' in page
    class_page = alice.get(reverse("label_detail", args=[project.pk, blue.pk]) + "?suspects=1").content.decode()
    assert f'id="image-{c.pk}"' in class_page and f'id="image-{b.pk}"' not in class_page


def test_deleting_a_suspect_from_the_gallery_replaces_only_its_card_and_can_be_undone(alice, user):
    project = project_with_images(user, classes=("blue", "red"), per_class=3)
    image = project.labels.get(name="blue").images.first()
    rows = [{"key": str(image.pk), "label": 0, "suggested": 1, "p_given": 0.1, "p_suggested": 0.9}]
    run = _finished_run(project, suspected_mislabels=rows)
    card = alice.post(reverse("image_delete", args=[image.pk]), {"card": "1"},
                      HTTP_HX_REQUEST="true", HTTP_HX_TARGET=f"suspect-{image.pk}").content.decode()
    assert "Deleted" in card and "selection-form" not in card and "image-grid" not in card  # not the class grid
    assert not Image.objects.filter(pk=image.pk).exists()
    alice.post(reverse("images_restore", args=[project.pk]), {"images": [image.pk]})
    assert Image.objects.filter(pk=image.pk).exists()
    assert "Please look at these first (1)" in alice.get(run.get_absolute_url()).content.decode()


def test_someone_else_cannot_relabel_or_confirm_my_images(client, other_user, user):
    project = project_with_images(user, classes=("blue", "red"), per_class=2)
    image, red = project.labels.get(name="blue").images.first(), project.labels.get(name="red")
    client.force_login(other_user)
    assert client.post(reverse("image_relabel", args=[image.pk]), {"target": red.pk}).status_code == 404
    assert client.post(reverse("image_confirm", args=[image.pk])).status_code == 404
    image.refresh_from_db()
    assert image.label.name == "blue" and not image.label_confirmed


def test_a_risk_level_the_calibration_cannot_support_is_refused_with_a_message(alice, user):
    project = project_with_images(user, classes=("blue", "red"), per_class=2)
    run = _finished_run(project)
    response = alice.post(reverse("run_trust_settings", args=[run.pk]), {"alpha": "0.01"}, follow=True)
    assert "cannot be promised" in response.content.decode()
    assert alice.post(reverse("run_trust_settings", args=[run.pk]), {"alpha": "lots"}, follow=True).status_code == 200
    run.refresh_from_db()
    assert run.alpha == 0.1
    alice.post(reverse("run_trust_settings", args=[run.pk]), {"alpha": "0.2"})
    run.refresh_from_db()
    assert run.alpha == 0.2


def test_a_confusion_cell_opens_its_images_and_a_class_without_images_shows_a_dash(alice, user):
    project = project_with_images(user, classes=("blue", "red"), per_class=2)
    blue = project.labels.get(name="blue").images.first()
    run = _finished_run(project, confusion_keys=[[[], [str(blue.pk)]], [[], []]], confusion=[[0, 1], [0, 0]],
                        per_class={"blue": {"precision": None, "recall": 0.0, "f1": None, "support": 1},
                                   "red": {"precision": 0.0, "recall": None, "f1": None, "support": 0}})
    page = alice.get(run.get_absolute_url()).content.decode()
    assert "?cell=0-1#cell-images" in page and "red —" in page
    cell = alice.get(run.get_absolute_url() + "?cell=0-1").content.decode()
    assert "“blue” image predicted as “red”" in cell and reverse("image_thumbnail", args=[blue.pk]) in cell
    assert alice.get(run.get_absolute_url() + "?cell=9-x").status_code == 200


def test_a_saved_decision_threshold_shows_its_trade_off_and_steers_predictions(alice, user, queue):
    project = project_with_images(user, classes=("blue", "red"), per_class=6)
    run = _train(alice, project)
    _work_off_queue()
    run.refresh_from_db()
    assert run.status == "succeeded", run.error
    assert 'id="threshold"' in alice.get(run.get_absolute_url()).content.decode()
    alice.post(reverse("run_trust_settings", args=[run.pk]), {"positive_class": "red", "threshold": "0.9999"})
    run.refresh_from_db()
    assert run.positive_class == "red" and run.decision_threshold == 0.9999
    response = alice.post(reverse("predict", args=[project.pk]),
                          {"run": run.pk, "files": [upload("r.png", image_bytes("red", shape_seed=1))]},
                          HTTP_X_REQUESTED_WITH="XMLHttpRequest").content.decode()
    assert "(threshold 0.9999 on “red”)" in response


def test_the_threshold_decides_between_the_two_classes():
    from transferapp.serving.predictions import _with_threshold
    run = TrainingRun(positive_class="sick", decision_threshold=0.3)
    result = {"top": "healthy", "probabilities": {"healthy": 0.6, "sick": 0.4}, "prediction_set": ["healthy"]}
    assert _with_threshold(run, result)["top"] == "sick"
    assert _with_threshold(TrainingRun(positive_class="sick", decision_threshold=0.5), result)["top"] == "healthy"
    assert _with_threshold(run, {**result, "unfamiliar": True})["top"] == "healthy"


def test_training_is_refused_when_setting_aside_leaves_a_class_too_few_training_images(alice, user):
    project = project_with_images(user, classes=("blue", "red"), per_class=5)
    label = project.labels.get(name="blue")
    alice.post(reverse("label_bulk", args=[project.pk, label.pk]),
               {"images": list(label.images.values_list("pk", flat=True)[:2]), "action": "test"})
    response = alice.post(reverse("training_start", args=[project.pk]),
                          {"base_model": "efficientnet_lite0", "preset": "fast"}, follow=True)
    assert "3 image(s) left for training (2 set aside for testing)" in response.content.decode()
    assert not TrainingRun.objects.filter(project=project).exists()


def _jpeg_copy(png: bytes, size=(48, 48)) -> bytes:
    out = io.BytesIO()
    PILImage.open(io.BytesIO(png)).convert("RGB").resize(size).save(out, format="JPEG", quality=80)
    return out.getvalue()


def test_a_near_identical_copy_of_a_test_image_is_held_out_with_it(alice, user, queue, received):
    project = project_with_images(user, classes=("red", "blue"), per_class=7)
    blue = project.labels.get(name="blue")
    original = blue.images.order_by("pk").first()
    copy = alice.post(reverse("label_upload", args=[project.pk, blue.pk]),
                      {"files": [upload("copy.jpg", _jpeg_copy(image_bytes("blue", shape_seed=0)), "image/jpeg")]})
    assert copy.status_code == 302
    duplicate = Image.objects.get(original_name="copy.jpg")
    alice.post(reverse("label_bulk", args=[project.pk, blue.pk]), {"images": [original.pk], "action": "test"})
    run = _train(alice, project)
    _work_off_queue()
    run.refresh_from_db()
    assert run.status == "succeeded", run.error
    assert {str(original.pk), str(duplicate.pk)} <= received["test"]
    assert str(duplicate.pk) not in received["train"] | received["val"]
    assert "held out with them" in run.metrics["split"]


def test_a_risk_level_that_is_not_a_number_is_refused_with_a_message(alice, user):
    project = project_with_images(user)
    run = TrainingRun.objects.create(project=project, base_model="efficientnet_lite0", status="succeeded",
                                     metrics={"trust": {"min_alpha": 0.05, "n_calibration": 20}})
    for bad in ("nan", "inf", "-1"):
        response = alice.post(reverse("run_trust_settings", args=[run.pk]), {"alpha": bad}, follow=True)
        assert response.status_code == 200
        run.refresh_from_db()
        assert run.alpha == 0.1, bad


def test_the_results_page_costs_the_same_queries_for_3_or_12_suspects(alice, user):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    project = project_with_images(user, classes=("blue", "red"), per_class=12)
    blue = list(project.labels.get(name="blue").images.all())
    counts = []
    for n in (3, 12):
        rows = [{"key": str(img.pk), "label": 0, "suggested": 1, "p_given": 0.1, "p_suggested": 0.9} for img in blue[:n]]
        run = _finished_run(project, suspected_mislabels=rows)
        with CaptureQueriesContext(connection) as queries:
            assert f"Please look at these first ({n})" in alice.get(run.get_absolute_url()).content.decode()
        counts.append(len(queries))
    assert counts[0] == counts[1], counts


def test_a_small_project_trains_on_every_image_and_says_its_figures_are_out_of_fold(alice, user, queue):
    project = project_with_images(user, classes=("red", "blue", "green"), per_class=6)
    page = alice.get(project.get_absolute_url()).content.decode()
    assert 'id="small-data-note"' in page and "fine-tuning is skipped" in page
    run = _train(alice, project, preset="best")
    _work_off_queue()
    run.refresh_from_db()
    assert run.status == "succeeded", run.error
    m = run.metrics
    assert m["evaluated_on"] == "out_of_fold" and m["n_scored"] == m["n_train"] == 18 and m["n_val"] == 0
    assert m["chosen_stage"] == "head" and not any(row["stage"] == "finetune" for row in run.history)
    page = html.unescape(alice.get(run.get_absolute_url()).content.decode())
    assert 'id="out-of-fold-note"' in page and 'id="optimistic-note"' not in page
    assert "out-of-fold accuracy on 18 images" in page and "every image trained the model" in page
    assert 'id="learning-curve"' in page and "Out-of-fold accuracy of quick models trained on that share" in page
    assert "Out-of-fold images it got wrong" in page or "None: every out-of-fold image" in page
    # A small run cancelled after its quick model has no validation figure to show: the predict page
    # still lists it (it once crashed on round(None)).
    TrainingRun.objects.create(project=project, base_model=run.base_model, preset="best", status="cancelled",
                               artifact_dir=run.artifact_dir, classes=run.classes, config=run.config,
                               metrics={"first_model_ready": True, "first_model_accuracy": None})
    page = html.unescape(alice.get(reverse("predict", args=[project.pk])).content.decode())
    assert "quick first model (run cancelled)" in page and "quick first model (run cancelled) ·" not in page
