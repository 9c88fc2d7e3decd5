"""The Inbox in the browser and the API (#24): drop images in, see them, delete (and undo), upload by key."""
import pytest
from django.urls import reverse

from tests.conftest import image_bytes
from tests.factories import inbox_with_images, project_with_images, upload
from transferapp.accounts import api_keys
from transferapp.labelling import inbox as labelling_inbox
from transferapp.models import Image

pytestmark = pytest.mark.django_db
API = "/api/v1"
XHR = {"HTTP_X_REQUESTED_WITH": "XMLHttpRequest"}


@pytest.fixture(autouse=True)
def fresh_rate_limits(embedded_redis):
    from django.core.cache import cache
    cache.clear()


def test_dropped_files_land_in_the_inbox_with_the_per_file_report(alice, user):
    project = project_with_images(user, per_class=2)
    files = [upload("new.png", image_bytes("green", shape_seed=50)), upload("copy.png", image_bytes("red", shape_seed=0)),
             upload("junk.txt", b"hello", "text/plain")]
    body = alice.post(reverse("inbox_upload", args=[project.pk]), {"files": files}, **XHR).json()
    assert [(f["name"], f["status"]) for f in body["files"]] == [("new.png", "added"), ("copy.png", "refused"), ("junk.txt", "refused")]
    assert "already in class “red”" in body["files"][1]["reason"]
    again = alice.post(reverse("inbox_upload", args=[project.pk]), {"files": [upload("n2.png", image_bytes("green", shape_seed=50))]}, **XHR).json()
    assert again["skipped"] == 1 and "in the Inbox" in again["files"][0]["reason"]
    assert list(Image.inbox.filter(project=project).values_list("original_name", flat=True)) == ["new.png"]
    assert project.images.count() == 4  # the labelled lists do not see the Inbox


def test_the_project_page_and_the_inbox_page_show_the_waiting_images(alice, user):
    project = project_with_images(user, per_class=1)
    waiting = inbox_with_images(project, per_color=2)
    labelling_inbox.inbox_set_unsure(project=project, image_ids=[waiting[0].pk])
    page = alice.get(project.get_absolute_url()).content.decode()
    assert "4 unlabelled images waiting (1 marked unsure)" in page and reverse("inbox_upload", args=[project.pk]) in page
    assert reverse("image_thumbnail", args=[waiting[0].pk]) in page
    inbox = alice.get(reverse("inbox_page", args=[project.pk])).content.decode()
    assert inbox.count('class="thumb selectable"') == 4 and ">unsure</span>" in inbox
    assert "{# link to the labelling page" not in inbox  # a template comment, not shown


def test_the_inbox_page_is_paginated(alice, user, monkeypatch):
    from transferapp.web import inbox as web_inbox
    monkeypatch.setattr(web_inbox, "PER_PAGE", 3)
    project = project_with_images(user, per_class=1)
    inbox_with_images(project, per_color=2)
    first = alice.get(reverse("inbox_page", args=[project.pk])).content.decode()
    second = alice.get(reverse("inbox_page", args=[project.pk]) + "?page=2").content.decode()
    assert first.count('class="thumb selectable"') == 3 and second.count('class="thumb selectable"') == 1
    assert "Page 2 of 2" in second


def test_inbox_images_are_deleted_and_the_delete_can_be_undone(alice, user):
    project = project_with_images(user, per_class=1)
    waiting = inbox_with_images(project, per_color=2)
    response = alice.post(reverse("inbox_bulk", args=[project.pk]), {"action": "delete", "images": [waiting[0].pk, waiting[1].pk]})
    assert response["Location"] == reverse("inbox_page", args=[project.pk])
    assert Image.inbox.filter(project=project).count() == 2
    page = alice.get(response["Location"]).content.decode()
    assert "Deleted 2 images." in page
    restored = alice.post(reverse("images_restore", args=[project.pk]), {"images": [waiting[0].pk, waiting[1].pk]})
    assert restored["Location"] == reverse("inbox_page", args=[project.pk]) and Image.inbox.filter(project=project).count() == 4
    one = alice.post(reverse("image_delete", args=[waiting[2].pk]), HTTP_HX_REQUEST="true")
    assert one.status_code == 200 and 'id="inbox-grid"' in one.content.decode() and Image.inbox.filter(project=project).count() == 3


def test_another_user_cannot_see_upload_to_or_delete_from_an_inbox(client, user, other_user):
    project = project_with_images(user, per_class=1)
    waiting = inbox_with_images(project, per_color=1)
    client.force_login(other_user)
    assert client.get(reverse("inbox_page", args=[project.pk])).status_code == 404
    assert client.post(reverse("inbox_upload", args=[project.pk]), {"files": [upload("x.png", image_bytes("green", shape_seed=9))]}).status_code == 404
    assert client.post(reverse("inbox_bulk", args=[project.pk]), {"action": "delete", "images": [waiting[0].pk]}).status_code == 404
    assert client.post(reverse("image_delete", args=[waiting[0].pk])).status_code == 404
    assert Image.inbox.filter(project=project).count() == 2


# --- the API --------------------------------------------------------------------------------------

def _bearer(key):
    return {"HTTP_AUTHORIZATION": f"Bearer {key}"}


def test_the_api_adds_unlabelled_images_with_a_per_file_report(client, user):
    project = project_with_images(user, per_class=1)
    _, key = api_keys.api_key_create(project=project)
    files = [upload("new.png", image_bytes("green", shape_seed=60)), upload("red-0.png", image_bytes("red", shape_seed=0)),
             upload("junk.png", b"junk")]
    body = client.post(f"{API}/projects/{project.pk}/inbox", {"files": files}, **_bearer(key)).json()
    assert (body["added"], body["skipped"], body["refused"]) == (1, 0, 2)
    new = Image.inbox.get(project=project)
    assert body["files"][0] == {"file": "new.png", "status": "added", "image": new.pk, "error": ""}
    assert body["files"][1]["image"] is None and "already in class “red”" in body["files"][1]["error"]
    again = client.post(f"{API}/projects/{project.pk}/inbox", {"files": [upload("n.png", image_bytes("green", shape_seed=60))]},
                        **_bearer(key)).json()
    assert again["skipped"] == 1 and again["files"][0]["status"] == "skipped"


def test_the_api_inbox_needs_the_projects_own_key_and_respects_the_quota(client, user, other_user, settings):
    project = project_with_images(user, per_class=1)
    other = project_with_images(other_user, per_class=1, name="Theirs")
    _, other_key = api_keys.api_key_create(project=other)
    files = {"files": [upload("x.png", image_bytes("green", shape_seed=61))]}
    assert client.post(f"{API}/projects/{project.pk}/inbox", files).status_code == 401
    assert client.post(f"{API}/projects/{project.pk}/inbox", {"files": [upload("x.png", image_bytes("green", shape_seed=61))]},
                       **_bearer(other_key)).status_code == 404
    settings.QUOTA_IMAGES = project.images.count()
    _, key = api_keys.api_key_create(project=project)
    body = client.post(f"{API}/projects/{project.pk}/inbox", {"files": [upload("y.png", image_bytes("green", shape_seed=62))]},
                       **_bearer(key)).json()
    assert body["refused"] == 1 and not Image.inbox.filter(project=project).exists()
