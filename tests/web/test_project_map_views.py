"""The project map's pages (#24 item 7): the page queues the layout, the data view, the actions."""
import django_rq
import numpy as np
import pytest
from django.urls import reverse

from tests.factories import inbox_with_images, project_with_images
from transferapp.labelling import project_map
from transferapp.models import Image, ProjectMap, TrainingRun

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("queue")]


def _synthetic_map(project):
    """A ready layout without the worker: random features for every live image."""
    fake = lambda paths, base: np.random.default_rng(0).normal(size=(len(paths), 8))
    return project_map.map_compute(project, "efficientnet_lite0", embed_features=fake)


def test_opening_the_page_queues_the_layout_once_and_shows_progress(alice, user, django_capture_on_commit_callbacks):
    project = project_with_images(user, per_class=2)
    for _ in range(2):
        with django_capture_on_commit_callbacks(execute=True):  # the queue enqueues when the request commits
            page = alice.get(reverse("project_map", args=[project.pk])).content.decode()
    assert "Computing the map…" in page and "map.js" in page and 'id="map-canvas"' in page
    assert [job.id for job in django_rq.get_queue("intake").jobs] == [f"map-{project.pk}"]
    status = alice.get(reverse("project_map", args=[project.pk]) + "?part=status", HTTP_HX_REQUEST="true")
    assert 'hx-trigger="every 2s"' in status.content.decode() and "<canvas" not in status.content.decode()


def test_a_fresh_map_is_not_recomputed_and_the_project_page_links_it(alice, user):
    project = project_with_images(user, per_class=2)
    _synthetic_map(project)
    page = alice.get(reverse("project_map", args=[project.pk])).content.decode()
    assert "4 images, laid out in" in page and "Computing" not in page
    assert len(django_rq.get_queue("intake")) == 0
    assert reverse("project_map", args=[project.pk]) in alice.get(project.get_absolute_url()).content.decode()


def test_the_data_flags_inbox_test_suspect_and_odd_points_with_their_classes(alice, user):
    project = project_with_images(user, per_class=2)
    inbox = inbox_with_images(project, colors=("red",), per_color=2)
    red, blue = project.labels.get(name="red"), project.labels.get(name="blue")
    reds, blues = list(red.images.order_by("pk")), list(blue.images.order_by("pk"))
    Image.objects.filter(pk=reds[0].pk).update(split="test")
    TrainingRun.objects.create(project=project, base_model="efficientnet_lite0", status="succeeded", metrics={
        "classes": ["blue", "red"],
        "suspected_mislabels": [{"key": str(blues[1].pk), "label": 0, "suggested": 1, "p_given": 0.1, "p_suggested": 0.9}],
        "odd_ones_out": [{"key": str(reds[1].pk), "label": 1, "score": 3.0}]})
    _synthetic_map(project)
    data = alice.get(reverse("project_map_data", args=[project.pk])).json()
    assert len(data["ids"]) == len(data["xy"]) == 6
    by_id = {pk: (cls, flags) for pk, cls, flags in zip(data["ids"], data["class"], data["flags"])}
    names = [c["name"] for c in data["classes"]]
    bits = data["flag_bits"]
    assert by_id[inbox[0].pk] == (-1, bits["inbox"])
    assert by_id[reds[0].pk] == (names.index("red"), bits["test"])
    assert by_id[blues[1].pk] == (names.index("blue"), bits["suspect"])
    assert by_id[reds[1].pk] == (names.index("red"), bits["odd"])
    assert by_id[blues[0].pk] == (names.index("blue"), 0)
    assert all(c["colour"].startswith("#") for c in data["classes"]) and not data["busy"] and data["fresh"]


def test_a_box_selection_labels_inbox_images_and_moves_labelled_ones(alice, user):
    project = project_with_images(user, per_class=2)
    inbox = inbox_with_images(project, colors=("red",), per_color=2)
    blue = project.labels.get(name="blue")
    a_red = project.labels.get(name="red").images.first()
    ids = ",".join(str(i) for i in (inbox[0].pk, inbox[1].pk, a_red.pk))
    answer = alice.post(reverse("project_map_action", args=[project.pk]), {"images": ids, "action": "label", "target": blue.pk})
    assert answer.status_code == 200 and answer.json()["labelled"] == 2 and answer.json()["moved"] == 1
    assert set(Image.objects.filter(label=blue).values_list("pk", flat=True)) >= {inbox[0].pk, inbox[1].pk, a_red.pk}
    assert Image.objects.get(pk=inbox[0].pk).labelled_by == user and not Image.inbox.filter(project=project).exists()


def test_set_aside_holds_labelled_images_out_and_leaves_the_inbox_alone(alice, user):
    project = project_with_images(user, per_class=2)
    (waiting,) = inbox_with_images(project, colors=("red",), per_color=1)
    labelled = list(Image.objects.filter(project=project)[:2])
    ids = ",".join(str(i.pk) for i in (*labelled, waiting))
    answer = alice.post(reverse("project_map_action", args=[project.pk]), {"images": ids, "action": "test"})
    assert answer.json()["changed"] == 2 and "1 Inbox image(s) left alone" in answer.json()["message"]
    assert Image.objects.filter(project=project, split="test").count() == 2
    assert Image.all_objects.get(pk=waiting.pk).split == ""


def test_bad_selections_are_refused_with_a_reason_and_change_nothing(alice, user, other_user):
    project = project_with_images(user, per_class=1)
    foreign = project_with_images(other_user, per_class=1, name="Theirs")
    foreign_image = foreign.labels.first().images.first()
    url = reverse("project_map_action", args=[project.pk])
    own = project.labels.get(name="red").images.first()
    assert alice.post(url, {"images": str(foreign_image.pk), "action": "test"}).status_code == 400
    refused = alice.post(url, {"images": str(own.pk), "action": "label", "target": foreign.labels.first().pk})
    assert refused.status_code == 400 and "blue" in refused.json()["message"] and "red" in refused.json()["message"]
    assert alice.post(url, {"images": str(own.pk), "action": "explode"}).status_code == 400
    assert Image.objects.get(pk=own.pk).label.name == "red" and Image.objects.get(pk=foreign_image.pk).split == ""


def test_a_failed_layout_says_why_on_the_page(alice, user):
    project = project_with_images(user, per_class=1)
    ProjectMap.objects.create(project=project, status=ProjectMap.Status.FAILED, error="The map could not be computed: MemoryError.")
    project_map.map_failed(project, "The map could not be computed: MemoryError.")
    status = alice.get(reverse("project_map", args=[project.pk]) + "?part=status", HTTP_HX_REQUEST="true")
    assert "MemoryError" in status.content.decode()


def test_a_box_of_one_inbox_image_is_not_counted_as_asked(alice, user):
    """Only a label given where the labelling page asked it feeds the honest estimate (outside review)."""
    from transferapp.models import InboxRanking
    project = project_with_images(user, per_class=2)
    [image] = inbox_with_images(project, colors=("red",), per_color=1)
    InboxRanking.objects.create(project=project, cards={str(image.pk): {"label": "red", "probability": 0.6,
                                                                        "kind": "random", "reason": "r"}})
    red = project.labels.get(name="red")
    answer = alice.post(reverse("project_map_action", args=[project.pk]), {"images": str(image.pk), "action": "label", "target": red.pk})
    assert answer.json()["labelled"] == 1
    image.refresh_from_db()
    assert image.label == red and (image.asked_as, image.suggested_label) == ("", "")
