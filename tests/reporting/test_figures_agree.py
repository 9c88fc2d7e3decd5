"""Issue 32 items 1, 2, 5 and 12: every figure a page shows names its image set and n, and the figures
on one page agree with each other (headline, confusion matrix, per-class table, mistakes, versions)."""
import html
import re

import django_rq
import pytest
from django.urls import reverse
from rq import SimpleWorker

from tests.factories import project_with_images
from transferapp.models import TrainingRun
from transferapp.reporting import charts

pytestmark = pytest.mark.django_db(transaction=True)


def _text(fragment: str) -> str:
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", fragment))).strip()


def _section(page: str, start: str, end: str) -> str:
    return page.split(start, 1)[1].split(end, 1)[0]


def _confusion(page: str) -> list[list[int]]:
    table = _section(page, 'id="confusion-matrix"', "</table>")
    rows = table.split("<tbody>")[1].split("</tr>")[:-1]
    return [[int(_text(cell)) for cell in re.findall(r"<td[^>]*>(.*?)</td>", row)] for row in rows]


def test_the_results_page_leads_with_the_served_models_estimate_and_its_figures_agree(alice, user, queue):
    project = project_with_images(user, classes=("red", "blue", "green"), per_class=6)
    alice.post(reverse("training_start", args=[project.pk]),
               {"base_model": "efficientnet_lite0", "preset": "fast", "epochs": 1, "validation": "always"})
    django_rq.get_worker("default", worker_class=SimpleWorker).work(burst=True)
    run = TrainingRun.objects.get(project=project)
    assert run.status == "succeeded", run.error
    m = run.metrics
    # The quick model was retrained on every image: the headline is the out-of-fold estimate of that
    # model over all 18 images, not the validation figure of the model before the retrain.
    assert m["refit"]["done"] and m["evaluated_on"] == "out_of_fold" and m["n_scored"] == 18
    k, n = m["n_correct"], m["n_scored"]
    page = alice.get(run.get_absolute_url()).content.decode()
    assert 'id="served-estimate-note"' in page and 'id="optimistic-note"' not in page
    label = _text(_section(page, 'id="headline-label">', "</span>"))
    assert label == f"out-of-fold accuracy on {n} images: an estimate for the model you use ({k}/{n} right)"
    headline = _text(_section(page, '<span class="value">', "</span>"))
    assert headline == f"{round(100 * k / n)}%"
    confusion = _confusion(page)
    assert sum(map(sum, confusion)) == n and sum(confusion[i][i] for i in range(len(confusion))) == k
    per_class = _section(page, 'class="metrics per-class"', "</table>")
    supports = [int(_text(row.split("<td>")[-1])) for row in per_class.split("<tbody>")[1].split("</tr>")[:-1]]
    assert sum(supports) == n
    assert f"images it got wrong ({n - k})" in _text(_section(page, 'id="mistakes"', "</h2>"))
    # The validation figure beside it names its own images.
    v = m["validation"]
    assert f"gave {round(100 * v['n_correct'] / v['n_scored'])}% ({v['n_correct']}/{v['n_scored']};" in _text(page)


def _run(project, version, preset, **metrics):
    classes = [lab.name for lab in project.labels.order_by("name")]
    return TrainingRun.objects.create(project=project, status="succeeded", base_model="efficientnet_lite0", preset=preset,
                                      classes=classes, version=version, config={"val_fraction": 0.2, "preset": preset},
                                      metrics={"classes": classes, "per_class": {}, "confusion": [[0, 0], [0, 0]],
                                               **metrics})


def test_the_versions_table_names_each_accuracys_images_and_says_fast_or_best(alice, user):
    project = project_with_images(user, classes=("blue", "red"), per_class=3)
    tested = _run(project, 1, "best", accuracy=0.9542, n_scored=153, n_correct=146, evaluated_on="test",
                  n_train=300, n_val=75, chosen_stage="head", refit={"done": True},
                  strategy="linear head on cached efficientnet_lite0 features (C=0.1), then retrained on all 375 images")
    validated = _run(project, 2, "fast", accuracy=0.9375, n_scored=80, n_correct=75, evaluated_on="validation",
                     n_train=320, n_val=80, chosen_stage="head", refit=None)
    project.last_version = 2
    project.save(update_fields=["last_version"])
    page = alice.get(project.get_absolute_url()).content.decode()
    rows = {_text(row.split("</td>")[0]).split()[0]: row for row in _section(page, 'id="versions"', "</tbody>").split("<tr>")[2:]}
    assert _text(_section(rows["v1"], 'class="version-accuracy">', "</td>")) == "95% (146/153 test)"
    assert _text(_section(rows["v2"], 'class="version-accuracy">', "</td>")) == "94% (75/80 validation)"
    assert _text(_section(rows["v1"], ">", "</td>")) and "linear head" not in _text(rows["v1"])
    assert _text(_section(rows["v1"], 'class="version-strategy"', "</td>").split(">", 1)[1]) == \
        "Best: quick model kept, retrained on all images"
    assert _text(_section(rows["v2"], 'class="version-strategy"', "</td>").split(">", 1)[1]) == "Fast"
    # Each version's figure is its own results page's headline, with the same k and n.
    for run in (tested, validated):
        run_page = alice.get(run.get_absolute_url()).content.decode()
        assert f"{run.metrics['n_correct']}/{run.metrics['n_scored']} right" in _text(run_page)


def test_settings_used_says_the_validation_share_an_imported_split_really_had(alice, user):
    project = project_with_images(user, classes=("blue", "red"), per_class=3)
    run = _run(project, 1, "fast", accuracy=0.95, n_scored=153, n_correct=146, evaluated_on="validation",
               n_train=247, n_val=153, split_imported=True)
    settings = _text(_section(alice.get(run.get_absolute_url()).content.decode(), "<summary>Settings used</summary>",
                              "</table>"))
    assert "Validation share 38% (153 of 400 images): the train/validation split imported with the images" in settings
    assert "20% was not applied" in settings
    assert charts.validation_share_used({"val_fraction": 0.2}, {"n_train": 320, "n_val": 80}) is None
