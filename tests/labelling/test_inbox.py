"""The Inbox's core (#24): unlabelled images stay out of every labelled list until given a class."""
import pytest

from tests.conftest import image_bytes
from tests.factories import inbox_with_images, project_with_images
from transferapp.labelling import inbox
from transferapp.library import images as library_images
from transferapp.library import selectors as library_selectors
from transferapp.models import Image

pytestmark = pytest.mark.django_db


def test_inbox_images_are_not_labelled_images_until_labelled(user):
    project = project_with_images(user, per_class=2)
    waiting = inbox_with_images(project, per_color=3)
    assert Image.objects.filter(project=project).count() == 4
    assert Image.inbox.filter(project=project).count() == 6
    assert library_selectors.image_counts(project=project) == {"blue": 2, "red": 2}
    red = project.labels.get(name="red")
    assert inbox.inbox_label(project=project, image_ids=[waiting[0].pk, waiting[1].pk], label=red, user=user) == 2
    assert inbox.inbox_count(project=project) == {"waiting": 4, "unsure": 0, "labelled": 2}
    assert library_selectors.image_counts(project=project)["red"] == 4
    assert inbox.inbox_unlabel(project=project, image_ids=[waiting[0].pk]) == 1
    assert Image.inbox.filter(pk=waiting[0].pk).exists()


def test_unsure_stays_in_the_inbox_and_undo_never_unlabels_an_uploaded_image(user):
    project = project_with_images(user, per_class=2)
    waiting = inbox_with_images(project, per_color=1)
    assert inbox.inbox_set_unsure(project=project, image_ids=[waiting[0].pk]) == 1
    assert inbox.inbox_count(project=project)["unsure"] == 1
    uploaded = Image.objects.filter(project=project).first()
    assert inbox.inbox_unlabel(project=project, image_ids=[uploaded.pk]) == 0
    assert Image.objects.filter(pk=uploaded.pk).exists()


def test_another_projects_class_and_images_are_refused(user):
    mine = project_with_images(user, per_class=1)
    other = project_with_images(user, per_class=1, name="Other")
    waiting = inbox_with_images(mine, per_color=1)
    with pytest.raises(ValueError):
        inbox.inbox_label(project=mine, image_ids=[waiting[0].pk], label=other.labels.first())
    assert inbox.inbox_label(project=other, image_ids=[waiting[0].pk], label=other.labels.first()) == 0


def test_the_same_bytes_in_the_inbox_and_a_class_are_one_image(user):
    project = project_with_images(user, per_class=1)
    data = image_bytes("green", (64, 64), shape_seed=7)
    first = library_images.image_add(label=None, project=project, name="a.png", data=data)
    assert first.image is not None and first.image.label_id is None
    again = library_images.image_add(label=project.labels.first(), name="b.png", data=data)
    assert again.image is None and "Inbox" in again.error
