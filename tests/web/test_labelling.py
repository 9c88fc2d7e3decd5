"""The labelling page's endpoints and the Inbox's API (#24): asking order, labelling, unsure, undo,
"more like this"; another user's or another key's project is a 404."""
import pytest
from django.urls import reverse

from tests.factories import inbox_with_images, project_with_images
from transferapp.accounts import api_keys
from transferapp.labelling import ranking as inbox_ranking
from transferapp.models import Image

pytestmark = pytest.mark.django_db(transaction=True)

API = "/api/v1"


@pytest.fixture(autouse=True)
def fresh_rate_limits(embedded_redis):
    from django.core.cache import cache
    cache.clear()


@pytest.fixture
def project(user):
    project = project_with_images(user, classes=("red", "blue"), per_class=2)
    inbox_with_images(project, colors=("red", "blue"), per_color=3)
    return project


def bearer(key):
    return {"HTTP_AUTHORIZATION": f"Bearer {key}"}


# --- the page ---------------------------------------------------------------------------------

def test_the_page_lists_the_classes_with_their_keys_and_queues_a_ranking(alice, project, queue):
    import django_rq
    page = alice.get(reverse("labelling_page", args=[project.pk])).content.decode()
    assert "<kbd>1</kbd> blue" in page and "<kbd>2</kbd> red" in page and "transferapp/labelling.js" in page
    assert "6 left in the Inbox" in page.replace("</strong>", "").replace("<strong data-left>", "")
    assert django_rq.get_queue("intake").job_ids == [f"inbox-rank-{project.pk}"]


def test_the_queue_comes_as_json_in_asking_order_with_image_urls(alice, project):
    inbox_ranking.ranking_refresh(project=project)
    data = alice.get(reverse("labelling_queue", args=[project.pk])).json()
    ranking = inbox_ranking.ranking_for(project)
    assert [item["image"] for item in data["items"]] == ranking.order
    first = data["items"][0]
    assert first["url"] == reverse("image_file", args=[first["image"]]) and alice.get(first["url"]).status_code == 200
    assert data["progress"]["waiting"] == 6 and data["progress"]["ranked_on"] == 4


def test_label_unsure_and_undo_through_the_page(alice, project, queue, settings):
    settings.INBOX_RETRAIN_EVERY = 2
    act = reverse("labelling_act", args=[project.pk])
    a, b, c = Image.inbox.filter(project=project).order_by("pk")[:3]
    answer = alice.post(act, {"action": "label", "image": [a.pk, b.pk], "label": "red"}).json()
    assert answer["done"] == 2 and answer["progress"]["waiting"] == 4 and answer["retrain_queued"]
    assert set(Image.objects.filter(project=project, label__name="red").values_list("pk", flat=True)) >= {a.pk, b.pk}
    assert alice.post(act, {"action": "unsure", "image": [c.pk]}).json()["progress"]["unsure"] == 1
    assert alice.post(act, {"action": "undo", "image": [b.pk]}).json()["done"] == 1
    assert Image.inbox.filter(pk=b.pk).exists() and not Image.inbox.filter(pk=a.pk).exists()
    refused = alice.post(act, {"action": "label", "image": [c.pk], "label": "green"})
    assert refused.status_code == 400 and "classes" in refused.json()["error"]
    assert alice.post(act, {"action": "paint", "image": [c.pk]}).status_code == 400


def test_an_image_of_another_project_is_left_alone(alice, project, user):
    other = project_with_images(user, classes=("red", "blue"), per_class=1, name="Other")
    [foreign] = inbox_with_images(other, colors=("red",), per_color=1)
    answer = alice.post(reverse("labelling_act", args=[project.pk]),
                        {"action": "label", "image": [foreign.pk], "label": "red"}).json()
    assert answer["done"] == 0 and Image.inbox.filter(pk=foreign.pk).exists()
    assert alice.get(reverse("labelling_similar", args=[project.pk, foreign.pk])).status_code == 404


def test_more_like_this_lists_the_nearest_inbox_images_with_thumbnails(alice, project):
    shown = Image.inbox.filter(project=project, original_name="inbox-red-0.png").get()
    inbox_ranking.ranking_refresh(project=project)  # the worker caches every image's features
    data = alice.get(reverse("labelling_similar", args=[project.pk, shown.pk])).json()
    assert data["image"] == shown.pk and len(data["similar"]) == 5
    assert data["similar"][0]["file"].startswith("inbox-red") and data["similar"][0]["url"].endswith("/thumbnail/")


# --- the API ----------------------------------------------------------------------------------

def test_next_gives_the_order_the_page_asks_with_suggestions_and_reasons(client, project):
    _, key = api_keys.api_key_create(project=project)
    ranking = inbox_ranking.ranking_refresh(project=project)
    answer = client.get(f"{API}/projects/{project.pk}/inbox/next?n=4", **bearer(key))
    assert answer.status_code == 200
    items = answer.json()
    assert [i["image"] for i in items] == ranking.order[:4]
    assert set(items[0]) == {"image", "file", "suggestion", "reason"}
    assert items[0]["file"].startswith("inbox-") and items[0]["suggestion"]["label"] in {"red", "blue"}
    assert items[0]["reason"] == ranking.cards[str(items[0]["image"])]["reason"]


def test_label_moves_an_image_out_of_the_inbox(client, project, queue):
    _, key = api_keys.api_key_create(project=project)
    image = Image.inbox.filter(project=project).first()
    answer = client.post(f"{API}/projects/{project.pk}/images/{image.pk}/label", {"label": "blue"},
                         content_type="application/json", **bearer(key))
    assert answer.status_code == 200 and answer.json() == {"image": image.pk, "label": "blue", "inbox": 5}
    assert Image.objects.get(pk=image.pk).label.name == "blue"
    again = client.post(f"{API}/projects/{project.pk}/images/{image.pk}/label", {"label": "blue"},
                        content_type="application/json", **bearer(key))
    assert again.status_code == 404  # no longer in the Inbox


def test_a_name_that_is_not_a_class_is_a_400_listing_the_classes(client, project):
    _, key = api_keys.api_key_create(project=project)
    image = Image.inbox.filter(project=project).first()
    answer = client.post(f"{API}/projects/{project.pk}/images/{image.pk}/label", {"label": "green"},
                         content_type="application/json", **bearer(key))
    assert answer.status_code == 400
    assert answer.json()["error"] == "“green” is not a class of this project. Its classes: blue, red."
    assert Image.inbox.filter(pk=image.pk).exists()


def test_another_projects_key_or_image_is_a_404_and_no_key_a_401(client, project, other_user):
    theirs = project_with_images(other_user, name="Theirs")
    [their_image] = inbox_with_images(theirs, colors=("red",), per_color=1)
    _, their_key = api_keys.api_key_create(project=theirs)
    _, key = api_keys.api_key_create(project=project)
    mine = Image.inbox.filter(project=project).first()
    label = {"data": {"label": "red"}, "content_type": "application/json"}
    assert client.get(f"{API}/projects/{project.pk}/inbox/next", **bearer(their_key)).status_code == 404
    assert client.post(f"{API}/projects/{project.pk}/images/{mine.pk}/label", **label, **bearer(their_key)).status_code == 404
    assert client.post(f"{API}/projects/{project.pk}/images/{their_image.pk}/label", **label, **bearer(key)).status_code == 404
    assert client.get(f"{API}/projects/{project.pk}/inbox/next").status_code == 401
    assert client.post(f"{API}/projects/{project.pk}/images/{mine.pk}/label", **label).status_code == 401
    assert Image.inbox.filter(pk__in=[mine.pk, their_image.pk]).count() == 2


# --- the outside review -----------------------------------------------------------------------

def test_a_correction_relabels_and_only_the_asked_label_records_the_suggestion(alice, project):
    from transferapp.models import InboxRanking
    act = reverse("labelling_act", args=[project.pk])
    a, b, c = Image.inbox.filter(project=project).order_by("pk")[:3]
    InboxRanking.objects.update_or_create(project=project, defaults={"cards": {
        str(i.pk): {"label": "red", "probability": 0.6, "kind": "random", "reason": "r"} for i in (a, b, c)}})
    assert alice.post(act, {"action": "label", "image": [a.pk], "label": "red", "asked": "1"}).json()["done"] == 1
    assert alice.post(act, {"action": "label", "image": [a.pk], "label": "blue"}).json()["done"] == 1  # ← back, another key
    assert alice.post(act, {"action": "label", "image": [b.pk, c.pk], "label": "red", "asked": "1"}).json()["done"] == 2
    rows = {pk: (name, asked) for pk, name, asked in
            Image.objects.filter(pk__in=[a.pk, b.pk, c.pk]).values_list("pk", "label__name", "asked_as")}
    assert rows == {a.pk: ("blue", "random"), b.pk: ("red", ""), c.pk: ("red", "")}


def test_with_fewer_than_two_classes_the_page_offers_to_add_one_and_comes_back(alice, user):
    from transferapp.library import projects as library_projects
    project = library_projects.project_create(owner=user, name="Fresh")
    inbox_with_images(project, colors=("red",), per_color=2)
    page_url = reverse("labelling_page", args=[project.pk])
    page = alice.get(page_url).content.decode()
    assert "no classes yet" in page and "Add a class" in page and f'value="{page_url}"' in page
    added = alice.post(reverse("label_create", args=[project.pk]), {"name": "cat", "next": page_url})
    assert added.status_code == 302 and added.url == page_url
    assert "one class so far" in alice.get(page_url).content.decode()
    away = alice.post(reverse("label_create", args=[project.pk]), {"name": "dog", "next": "https://evil.example/"})
    assert away.status_code == 302 and "evil" not in away.url
    assert "Add a class" not in alice.get(page_url).content.decode()
    assert "<kbd>1</kbd> cat" in alice.get(page_url).content.decode()


def test_the_project_page_with_no_class_points_to_the_inbox(alice, user):
    from transferapp.library import projects as library_projects
    project = library_projects.project_create(owner=user, name="Fresh")
    page = alice.get(project.get_absolute_url()).content.decode()
    assert "drop unlabelled images in the Inbox and label them with the keyboard" in page


def test_next_starts_a_ranking_when_stale_and_label_matches_names_in_any_case(client, project, queue):
    import django_rq
    _, key = api_keys.api_key_create(project=project)
    assert client.get(f"{API}/projects/{project.pk}/inbox/next", **bearer(key)).status_code == 200
    assert django_rq.get_queue("intake").job_ids == [f"inbox-rank-{project.pk}"]
    image = Image.inbox.filter(project=project).first()
    answer = client.post(f"{API}/projects/{project.pk}/images/{image.pk}/label", {"label": "BLUE"},
                         content_type="application/json", **bearer(key))
    assert answer.status_code == 200 and answer.json()["label"] == "blue"
