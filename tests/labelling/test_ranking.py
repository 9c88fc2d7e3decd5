"""The Inbox's "label these next" order (#24), on real features of tiny images through the real
cached-feature path (the bundled weights load offline)."""
from pathlib import Path

import pytest
from django.conf import settings

from tests.factories import inbox_with_images, project_with_images
from transferapp.jobs import tasks
from transferapp.labelling import asking, inbox
from transferapp.labelling import ranking as inbox_ranking
from transferapp.models import Image, InboxRanking

pytestmark = pytest.mark.django_db

REASONS = {"unlike anything labelled yet", inbox_ranking.REASON_RANDOM}


@pytest.fixture
def project(user):
    project = project_with_images(user, classes=("red", "blue"), per_class=3)
    inbox_with_images(project, colors=("red", "blue"), per_color=6)
    return project


def _label(project, image, name, asked_as=None, suggested=None):
    inbox.inbox_label(project=project, image_ids=[image.pk], label=project.labels.get(name=name))
    if asked_as is not None:
        Image.objects.filter(pk=image.pk).update(asked_as=asked_as, suggested_label=suggested)


def test_the_whole_inbox_is_ranked_with_a_suggestion_and_a_reason_each_and_features_are_cached(project):
    ranking = inbox_ranking.ranking_refresh(project=project)
    waiting = set(Image.inbox.filter(project=project).values_list("pk", flat=True))
    assert ranking.status == "idle" and ranking.error == "" and ranking.seconds > 0
    assert sorted(ranking.order) == sorted(waiting) and len(ranking.order) == 12
    assert ranking.labels_at == 6
    cards = [ranking.cards[str(pk)] for pk in ranking.order]
    # 3 labels a class: the first batch covers the space (the cold start), one pick in ten at random;
    # the next batch counts those as known and asks where the model is unsure.
    assert [c["reason"] for c in cards[:10]].count(inbox_ranking.REASON_RANDOM) == 1
    assert {c["reason"] for c in cards[:10]} == REASONS and {c["kind"] for c in cards[:10]} == {"cold", "random"}
    assert {c["reason"] for c in cards[10:]} <= {"unsure between red and blue", "unsure between blue and red",
                                                  inbox_ranking.REASON_SURE_CHECK}
    for card in cards:  # the reason agrees with the suggestion's probability, from the same model
        if card["reason"].startswith("unsure between"):
            assert card["probability"] < inbox_ranking.SURE
        if card["reason"] == inbox_ranking.REASON_SURE_CHECK:
            assert card["probability"] >= inbox_ranking.SURE and card["kind"] == "unsure"
    assert {c["label"] for c in cards} <= {"red", "blue"} and all(0.5 <= c["probability"] <= 1 for c in cards)
    assert len(list(Path(settings.FEATURE_CACHE_DIR).glob("*/??/*.npy"))) == 18  # labelled and Inbox, once each


def test_with_enough_labels_the_cards_say_between_which_classes_the_model_is_unsure(user):
    project = project_with_images(user, classes=("red", "blue"), per_class=6)
    inbox_with_images(project, colors=("red", "blue", "green"), per_color=4)
    ranking = inbox_ranking.ranking_refresh(project=project)
    reasons = {ranking.cards[str(pk)]["reason"] for pk in ranking.order}
    assert {"unsure between red and blue", "unsure between blue and red"} & reasons
    suggestions = {pk: ranking.cards[str(pk)]["label"] for pk in ranking.order}
    red = Image.inbox.filter(project=project, original_name__startswith="inbox-red")
    assert all(suggestions[i.pk] == "red" for i in red)  # real features: a red image looks red


def test_unsure_images_are_asked_last_even_before_the_next_ranking(project):
    inbox_ranking.ranking_refresh(project=project)
    first = asking.inbox_next(project=project, n=1)[0]["image"]
    inbox.inbox_set_unsure(project=project, image_ids=[first])
    asked = asking.inbox_next(project=project, n=None)
    assert asked[-1]["image"] == first and asked[-1]["unsure"] and len(asked) == 12
    assert inbox_ranking.ranking_refresh(project=project).order[-1] == first


def test_new_arrivals_are_asked_with_no_suggestion_until_the_next_ranking(project):
    inbox_ranking.ranking_refresh(project=project)
    [new] = inbox_with_images(project, colors=("green",), per_color=1)
    assert inbox_ranking.is_stale(project)
    item = next(i for i in asking.inbox_next(project=project, n=None) if i["image"] == new.pk)
    assert item["suggestion"] is None and item["reason"] == inbox_ranking.REASON_NEW


def test_the_estimate_comes_from_random_picks_only_with_an_interval(project):
    pool = list(Image.inbox.filter(project=project).order_by("pk"))
    for image in pool[:4]:
        _label(project, image, "red", "random", "red")
    assert inbox_ranking.estimate_for(project) == {"n": 4}
    assert "needs more random picks (4 of 5 labelled)" in asking.progress(project=project)["estimate_text"]
    _label(project, pool[4], "blue", "random", "red")  # one wrong suggestion
    _label(project, pool[5], "blue", "unsure", "red")  # not random: left out of the estimate
    estimate = inbox_ranking.estimate_for(project)
    assert estimate["n"] == 5 and estimate["accuracy"] == 0.8 and estimate["low"] < 0.8 < estimate["high"]


def test_the_plateau_is_announced_when_predictions_and_estimate_stop_changing(project):
    pool = list(Image.inbox.filter(project=project).order_by("pk"))
    for image in pool[:5]:
        _label(project, image, image.original_name.split("-")[1], "random", image.original_name.split("-")[1])
    ranking = inbox_ranking.ranking_refresh(project=project)
    assert not ranking.plateau and len(ranking.history) == 1
    last = ranking.history[-1]
    ranking.history = [{**last, "labels": last["labels"] - step} for step in (30, 20, 10)] + [last]
    ranking.save()
    ranking = inbox_ranking.ranking_refresh(project=project)
    assert ranking.plateau and ranking.plateau_reason.startswith("Labelling more is unlikely to help")
    assert asking.progress(project=project)["plateau_text"] == ranking.plateau_reason


@pytest.mark.django_db(transaction=True)  # django_rq enqueues on commit
def test_a_retrain_is_due_every_few_labels_and_queued_once(project, queue, settings):
    settings.INBOX_RETRAIN_EVERY = 3
    assert inbox_ranking.is_stale(project) and inbox_ranking.due_after_labels(project)
    inbox_ranking.ranking_refresh(project=project)
    assert not inbox_ranking.is_stale(project) and not inbox_ranking.due_after_labels(project)
    pool = list(Image.inbox.filter(project=project).order_by("pk"))
    for n, image in enumerate(pool[:3], start=1):
        _label(project, image, "red")
        assert inbox_ranking.due_after_labels(project) == (n == 3)
    import django_rq
    intake = django_rq.get_queue("intake")
    assert inbox_ranking.rank_schedule(project=project) and not inbox_ranking.rank_schedule(project=project)
    assert intake.job_ids == [f"inbox-rank-{project.pk}"]
    assert InboxRanking.objects.get(project=project).status == "queued"


def test_the_job_ranks_and_reports_how_long_it_took(project):
    assert tasks.inbox_rank(project.pk).startswith("idle: 12 ranked in")
    assert tasks.inbox_rank(10 ** 6) == "project gone"


def test_more_like_this_finds_the_same_colour_first(project):
    red = Image.inbox.filter(project=project, original_name="inbox-red-0.png").get()
    inbox_ranking.ranking_refresh(project=project)  # the worker caches every image's features
    similar = asking.similar_in_inbox(project=project, image=red)
    assert len(similar) == 11 and red.pk not in {s["image"] for s in similar}
    names = [s["file"] for s in similar]
    assert all(n.startswith("inbox-red") for n in names[:5]), names
    assert similar[0]["similarity"] >= similar[-1]["similarity"]


def test_with_no_label_yet_the_inbox_is_still_ordered_by_coverage_with_no_suggestion(user):
    from transferapp.library import projects as library_projects
    project = library_projects.project_create(owner=user, name="Fresh")
    inbox_with_images(project, colors=("red", "blue"), per_color=3)
    ranking = inbox_ranking.ranking_refresh(project=project)  # no class at all yet
    assert ranking.status == "idle" and len(ranking.order) == 6
    assert all(card["label"] == "" and card["probability"] is None for card in ranking.cards.values())
    library_projects.label_create(project=project, name="red")
    first = asking.inbox_next(project=project, n=1)[0]
    assert first["suggestion"] is None and first["reason"] in REASONS
