"""Version diff: the pure comparison on hand-made answers, then the compare page on two versions
trained for real (a burst worker, real images, the real database), their stored per-image answers
edited where a test needs a particular change."""
import django_rq
import numpy as np
import pytest
from django.urls import reverse
from rq import SimpleWorker

from tests.factories import project_with_images
from transferapp.engine import metrics as M
from transferapp.library import images as library_images
from transferapp.models import TrainingRun
from transferapp.reporting import versiondiff
from transferapp.training import runs as training_runs

CLASSES = ["red", "blue", "green"]


def _answers(*rows) -> dict:
    """{key: answer} from (key, true, predicted, confidence) rows."""
    return {k: {"true": t, "predicted": p, "confidence": c} for k, t, p, c in rows}


# --- the pure comparison ------------------------------------------------------------------------

def test_changes_are_grouped_fixed_broken_and_still_wrong():
    before = _answers(("1", "red", "blue", 0.6), ("2", "red", "red", 0.9), ("3", "blue", "red", 0.7),
                      ("4", "green", "green", 0.8), ("5", "blue", "green", 0.5))
    after = _answers(("1", "red", "red", 0.95), ("2", "red", "green", 0.7), ("3", "blue", "green", 0.6),
                     ("4", "green", "green", 0.9), ("5", "blue", "green", 0.55))
    found = versiondiff.compare(before, after)
    assert [[r["key"] for r in found["groups"][g]] for g in versiondiff.GROUPS] == [["1"], ["2"], ["3"]]
    assert found["unchanged"] == 2 and found["common"] == ["1", "2", "3", "4", "5"]
    assert found["groups"]["broken"][0]["after"] == {"true": "red", "predicted": "green", "confidence": 0.7}


def test_only_images_both_scored_with_the_same_class_are_compared_and_the_rest_counted():
    before = _answers(("1", "red", "red", 0.9), ("2", "red", "blue", 0.6), ("3", "blue", "blue", 0.8))
    after = _answers(("2", "red", "red", 0.9), ("3", "red", "red", 0.8), ("7", "blue", "blue", 0.9),
                     ("8", "blue", "red", 0.9))
    found = versiondiff.compare(before, after)
    assert found["common"] == ["2"] and found["relabelled"] == 1  # image 3 moved from blue to red
    assert (found["only_before"], found["only_after"]) == (1, 2)
    assert [r["key"] for r in found["groups"]["fixed"]] == ["2"]


def test_figures_are_recomputed_on_the_given_images_with_wilson_intervals():
    answers = _answers(("1", "red", "red", 0.9), ("2", "red", "blue", 0.6), ("3", "blue", "blue", 0.8),
                       ("4", "blue", "blue", 0.8))
    got = versiondiff.figures(answers, ["1", "2", "3"], ["red", "blue", "green"])
    assert got["accuracy"] == M.rate(2, 3)
    assert got["per_class"]["red"]["recall"] == M.rate(1, 2)
    assert got["per_class"]["blue"]["precision"] == M.rate(1, 2)  # image 4 is not among the given ones
    assert got["per_class"]["green"]["recall"]["n"] == 0 and got["per_class"]["green"]["recall"]["value"] is None


def test_the_engine_keeps_every_scored_image_answer_with_its_confidence():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.2, 0.5, 0.3]])
    report = M.report(probs, np.array([0, 1, 1]), ["11", "12", "13"], CLASSES)
    assert report["eval_predictions"] == [["11", 0, 0, 0.7], ["12", 1, 2, 0.6], ["13", 1, 1, 0.5]]
    answers, source = versiondiff.image_predictions(report, CLASSES)
    assert source == "stored" and answers["12"] == {"true": "blue", "predicted": "green", "confidence": 0.6}


def test_a_run_from_before_per_image_answers_is_read_from_its_confusion_cells_without_confidences():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.2, 0.5, 0.3]])
    report = M.report(probs, np.array([0, 1, 1]), ["11", "12", "13"], CLASSES)
    del report["eval_predictions"]
    answers, source = versiondiff.image_predictions(report, CLASSES)
    assert source == "cells"
    assert answers["12"] == {"true": "blue", "predicted": "green", "confidence": 0.6}  # a mistake keeps its own
    assert answers["13"] == {"true": "blue", "predicted": "blue", "confidence": None}
    assert versiondiff.image_predictions({}, CLASSES) == ({}, "none")


# --- the compare page, on versions trained for real ----------------------------------------------

def _train(project) -> TrainingRun:
    # A validation split even for these few images, and no retrain on all of them: the tests need
    # images a version trained on but did not score (a small project, or a quick model retrained on
    # every image, leads with an out-of-fold figure over every image).
    run = training_runs.training_start(project=project, base_model="efficientnet_lite0", preset="fast",
                                  config={"small_data_below": 0, "refit": False})
    django_rq.get_worker("default", worker_class=SimpleWorker).work(burst=True)
    run.refresh_from_db()
    assert run.status == "succeeded", run.error
    return run


def _eval_keys(run) -> list[str]:
    return [row[0] for row in run.metrics["eval_predictions"]]


def _set_answer(run, key, predicted: str, confidence: float) -> None:
    """Make the stored answer for one image what a test needs (the rest stays the real model's)."""
    classes = run.metrics["classes"]
    for row in run.metrics["eval_predictions"]:
        if row[0] == key:
            row[2], row[3] = classes.index(predicted), confidence
    run.save(update_fields=["metrics"])


def _trained_on_one_per_class(project, run) -> list[str]:
    """One image of each class the run trained on (not among those it was scored on)."""
    scored = set(_eval_keys(run))
    return [next(str(pk) for pk in label.images.values_list("pk", flat=True) if str(pk) not in scored)
            for label in project.labels.all()]


def _compare(client, project, **query):
    return client.get(reverse("version_compare", args=[project.pk]), query)


@pytest.mark.django_db(transaction=True)
def test_the_page_groups_what_the_newer_version_fixed_broke_and_changed(alice, user, queue):
    project = project_with_images(user, classes=CLASSES, per_class=6)
    v1, v2 = _train(project), _train(project)
    assert (v1.version, v2.version) == (1, 2)
    keys = _eval_keys(v1)
    assert keys == _eval_keys(v2) and len(keys) >= 3  # same images and seed: the same validation images
    truth = {row[0]: v1.metrics["classes"][row[1]] for row in v1.metrics["eval_predictions"]}
    fixed, broken, changed = keys[:3]
    wrong = {k: [c for c in v1.metrics["classes"] if c != truth[k]] for k in (fixed, broken, changed)}
    _set_answer(v1, fixed, wrong[fixed][0], 0.61)
    _set_answer(v2, fixed, truth[fixed], 0.97)
    _set_answer(v1, broken, truth[broken], 0.88)
    _set_answer(v2, broken, wrong[broken][0], 0.77)
    _set_answer(v1, changed, wrong[changed][0], 0.55)
    _set_answer(v2, changed, wrong[changed][1], 0.66)

    response = _compare(alice, project)  # defaults: the latest (nothing published) against the one before
    assert response.status_code == 200
    assert (response.context["before"], response.context["after"]) == (v1, v2)
    diff = response.context["diff"]
    groups = {g["name"]: [r["key"] for r in g["rows"]] for g in diff["groups"]}
    assert groups == {"fixed": [fixed], "broken": [broken], "still_wrong": [changed]}
    page = response.content.decode()
    assert f"Compared on the {len(keys)} images both versions scored." in page
    assert "The two versions scored exactly the same images." in page
    for key in (fixed, broken, changed):  # thumbnails, not file names
        assert reverse("image_thumbnail", args=[int(key)]) in page
    assert f"v1: <strong>{wrong[fixed][0]}</strong> (61%)<br>v2: <strong>{truth[fixed]}</strong> (97%)" in page
    assert f"v1: <strong>{wrong[changed][0]}</strong> (55%)<br>v2: <strong>{wrong[changed][1]}</strong> (66%)" in page
    n = len(keys)
    assert diff["accuracy"][0] == M.rate(sum(1 for row in v1.metrics["eval_predictions"] if row[1] == row[2]), n)
    assert diff["accuracy"][0]["k"] <= n - 2 and diff["accuracy"][1]["k"] <= n - 2  # two wrong on each side
    link = reverse("version_compare", args=[project.pk])
    assert link in alice.get(project.get_absolute_url()).content.decode()  # reachable from the versions list

    partial = alice.get(link, {"before": 2, "after": 1}, HTTP_HX_REQUEST="true")  # htmx swaps the section only
    assert b"<html" not in partial.content and b'id="diff"' in partial.content
    fixed_section = partial.content.decode().split('id="group-fixed"')[1].split('id="group-broken"')[0]
    assert reverse("image_thumbnail", args=[int(broken)]) in fixed_section  # picked the other way round: fixed


@pytest.mark.django_db(transaction=True)
def test_versions_scored_on_different_images_are_compared_on_the_common_ones_only(alice, user, queue):
    project = project_with_images(user, classes=CLASSES, per_class=8)
    v1 = _train(project)
    assert "Only one version yet" in _compare(alice, project).content.decode()
    scored_by_v1 = _eval_keys(v1)
    test_set = scored_by_v1[:2] + _trained_on_one_per_class(project, v1)  # two v1 scored, three it trained on
    library_images.images_set_aside(images=list(project.images.filter(pk__in=test_set)), for_testing=True)
    v2 = _train(project)
    assert v2.metrics["evaluated_on"] == "test" and sorted(_eval_keys(v2)) == sorted(test_set)

    response = _compare(alice, project, before=1, after=2)
    diff = response.context["diff"]
    assert sorted(diff["common"]) == sorted(scored_by_v1[:2])
    assert (diff["only_before"], diff["only_after"]) == (len(scored_by_v1) - 2, 3)
    assert diff["accuracy"][0]["n"] == diff["accuracy"][1]["n"] == 2  # like for like: on the common images
    page = response.content.decode()
    assert "Compared on the 2 images both versions scored." in page
    assert f"Left out: {len(scored_by_v1) - 2} images only v1 scored, 3 only v2 scored." in page
    assert "v1 was scored on its validation images, v2 on the test set" in page
    assert f"on its {v2.metrics['n_scored']} test images" in page  # each version's own headline, with its n


@pytest.mark.django_db(transaction=True)
def test_versions_with_no_image_in_common_show_no_diff_and_others_get_404(alice, user, other_user, queue, client):
    project = project_with_images(user, classes=CLASSES, per_class=8)
    v1 = _train(project)
    scored_by_v1 = _eval_keys(v1)
    test_set = _trained_on_one_per_class(project, v1)  # v2 is scored on images v1 trained on: none in common
    library_images.images_set_aside(images=list(project.images.filter(pk__in=test_set)), for_testing=True)
    v2 = _train(project)
    assert not set(_eval_keys(v2)) & set(scored_by_v1)

    response = _compare(alice, project)
    page = response.content.decode()
    assert response.context["diff"]["n_common"] == 0
    assert "No evaluation image in common." in page and "no diff is shown" in page
    assert 'id="group-fixed"' not in page and 'id="per-class-diff"' not in page
    assert _compare(alice, project, before="x", after="99").status_code == 200  # nonsense in the URL: the defaults
    assert "There is no such version in this project" in _compare(alice, project, before=1, after=99).content.decode()

    client.force_login(other_user)
    assert _compare(client, project).status_code == 404
    assert _compare(client, project, before=1, after=2).status_code == 404


@pytest.mark.django_db(transaction=True)
def test_compare_opens_on_the_latest_against_the_published_one_or_the_one_before_it(alice, user):
    """Issue 32 item 17: with three versions it opened on v1 against v2 (the two oldest)."""
    project = project_with_images(user, classes=CLASSES, per_class=1)
    runs = [TrainingRun.objects.create(project=project, status="succeeded", base_model="efficientnet_lite0",
                                       classes=CLASSES, version=v, metrics={"classes": CLASSES}) for v in (1, 2, 3)]
    project.last_version = 3
    project.save(update_fields=["last_version"])

    def opened():
        context = _compare(alice, project).context
        return context["before"].version, context["after"].version

    assert opened() == (2, 3)  # none published: the latest against the one before it
    for published, expected in ((runs[0], (1, 3)), (runs[1], (2, 3)), (runs[2], (2, 3))):
        project.published_run = published
        project.save(update_fields=["published_run"])
        assert opened() == expected, published.version
