"""The outside review of #24's labelling: corrections relabel, only a label given where it was asked
feeds the honest estimate, the asking order is linear, "more like this" reads cached features only
(no backbone in the web process), errors read as sentences, test images stay out of the quick
model, and a card's reason agrees with its suggestion."""
import time

import numpy as np
import pytest

from tests.factories import inbox_with_images, project_with_images
from transferapp.engine import active
from transferapp.engine import features as engine_features
from transferapp.labelling import asking, inbox
from transferapp.labelling import ranking as inbox_ranking
from transferapp.models import Image, InboxRanking

pytestmark = pytest.mark.django_db


@pytest.fixture
def project(user):
    project = project_with_images(user, classes=("red", "blue"), per_class=2)
    inbox_with_images(project, colors=("red", "blue"), per_color=3)
    return project


def _cards(project, kind="random", label="red"):
    waiting = Image.inbox.filter(project=project).values_list("pk", flat=True)
    InboxRanking.objects.update_or_create(project=project, defaults={
        "cards": {str(pk): {"label": label, "probability": 0.7, "kind": kind, "reason": "r"} for pk in waiting}})


def test_a_correction_relabels_an_image_labelled_from_the_inbox_and_keeps_what_was_asked(project, user):
    _cards(project)
    red, blue = project.labels.get(name="red"), project.labels.get(name="blue")
    image = Image.inbox.filter(project=project).first()
    assert inbox.inbox_label(project=project, image_ids=[image.pk], label=red, user=user, asked=True) == 1
    assert inbox.inbox_label(project=project, image_ids=[image.pk], label=blue, user=user) == 1
    image.refresh_from_db()
    assert image.label == blue and (image.suggested_label, image.asked_as) == ("red", "random")
    uploaded = Image.objects.filter(project=project, labelled_at__isnull=True, label=red).first()
    assert inbox.inbox_label(project=project, image_ids=[uploaded.pk], label=blue) == 0  # never labelled from the Inbox
    assert Image.objects.get(pk=uploaded.pk).label == red


def test_only_one_image_labelled_where_it_was_asked_records_the_suggestion(project):
    _cards(project)
    red = project.labels.get(name="red")
    a, b, c, d = Image.inbox.filter(project=project).order_by("pk")[:4]
    inbox.inbox_label(project=project, image_ids=[a.pk], label=red, asked=True)
    inbox.inbox_label(project=project, image_ids=[b.pk, c.pk], label=red, asked=True)  # a bulk label is never "asked"
    inbox.inbox_label(project=project, image_ids=[d.pk], label=red)  # more like this, the map: asked=False
    recorded = dict(Image.objects.filter(pk__in=[a.pk, b.pk, c.pk, d.pk]).values_list("pk", "asked_as"))
    assert recorded == {a.pk: "random", b.pk: "", c.pk: "", d.pk: ""}
    assert Image.objects.get(pk=b.pk).suggested_label == ""


def test_the_asking_order_of_ten_thousand_inbox_images_is_fast_and_right():
    waiting = list(range(10_000))
    ranked = list(range(9_999, 999, -1)) + [123_456]  # 1,000 arrived after the ranking; one gone since
    unsure = set(range(0, 10_000, 7))
    started = time.perf_counter()
    order = asking.asking_order(ranked, waiting, unsure)
    seconds = time.perf_counter() - started
    assert seconds < 0.5, seconds  # the old per-element set took minutes here
    assert sorted(order) == waiting and 123_456 not in order
    sure = [pk for pk in order if pk not in unsure]
    assert sure[:3] == [9_999, 9_998, 9_997]  # the ranking's order first (9,999 is not a multiple of 7)
    assert all(pk in unsure for pk in order[-len(unsure):])
    assert [pk for pk in sure if pk < 1_000] == sorted(pk for pk in range(1_000) if pk not in unsure)


def _no_backbone(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a backbone was built in the web process")
    monkeypatch.setattr(inbox_ranking, "create_backbone", refuse)
    monkeypatch.setattr(engine_features, "create_backbone", refuse)
    inbox_ranking._backbone.cache_clear()


def test_more_like_this_reads_cached_features_only_and_skips_images_not_cached(project, monkeypatch):
    pool = list(Image.inbox.filter(project=project).order_by("pk"))
    shown = next(i for i in pool if i.original_name == "inbox-red-0.png")
    cached = [i for i in pool if i.original_name != "inbox-blue-2.png"]
    inbox_ranking.features_of(cached, inbox_ranking.project_base(project))  # what the worker does on arrival
    _no_backbone(monkeypatch)
    similar = asking.similar_in_inbox(project=project, image=shown)
    files = [s["file"] for s in similar]
    assert len(similar) == 4 and "inbox-blue-2.png" not in files
    assert files[:2] == sorted(files[:2]) and all(f.startswith("inbox-red") for f in files[:2])
    uncached = next(i for i in pool if i.original_name == "inbox-blue-2.png")
    assert asking.similar_in_inbox(project=project, image=uncached) == []  # not cached yet: nothing to compare


def test_cached_rows_reads_one_folder_and_leaves_out_what_is_not_cached(tmp_path):
    a, b, c = ("a" * 64, "b" * 64, "c" * 64)
    for folder, digests, value in (("efficientnet_lite0-000000000001", (a, b), 1.0),
                                   ("efficientnet_lite0-000000000002", (c,), 2.0),
                                   ("efficientnet_lite0_big-000000000003", (a, b, c), 3.0)):
        for d in digests:
            (tmp_path / folder / d[:2]).mkdir(parents=True, exist_ok=True)
            np.save(tmp_path / folder / d[:2] / f"{d}.orig.npy", np.full(3, value, dtype=np.float32))
    rows = engine_features.cached_rows(tmp_path, "efficientnet_lite0", [a, b, c, "d" * 64])
    assert sorted(rows) == [a, b] and all(float(r[0]) == 1.0 for r in rows.values())
    assert engine_features.cached_rows(tmp_path, "resnet50", [a]) == {}


def test_a_failed_ranking_shows_a_sentence_and_logs_the_detail(project, monkeypatch, caplog):
    def broken(project, ranking):
        raise RuntimeError("CUDA error: device-side assert /secret/path.py line 3")
    monkeypatch.setattr(inbox_ranking, "_compute", broken)
    ranking = inbox_ranking.ranking_refresh(project=project)
    assert ranking.status == "failed" and ranking.error == inbox_ranking.ERROR_SHOWN
    assert "CUDA" not in ranking.error and "CUDA error" in caplog.text
    assert asking.progress(project=project)["error"] == inbox_ranking.ERROR_SHOWN


def test_test_images_are_left_out_of_the_quick_model(project):
    held = Image.objects.filter(project=project, label__name="red").first()
    Image.objects.filter(pk=held.pk).update(split="test")
    ranking = inbox_ranking.ranking_refresh(project=project)
    assert ranking.labels_at == 3 and not inbox_ranking.is_stale(project)
    assert asking.progress(project=project)["ranked_on"] == 3


def test_an_unsure_pick_the_model_is_sure_of_says_so():
    classes = ["blue", "red"]
    doubt = inbox_ranking._card(active.Pick(0, active.UNSURE, "unsure between red and blue", 1, 0.55), classes)
    sure = inbox_ranking._card(active.Pick(1, active.UNSURE, "unsure between red and blue", 1, 1.0), classes)
    assert doubt["reason"] == "unsure between red and blue" and doubt["label"] == "red"
    assert sure["reason"] == inbox_ranking.REASON_SURE_CHECK and sure["label"] == "red" and sure["kind"] == "unsure"
