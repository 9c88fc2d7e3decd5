"""Rows built through the services, the same way the views build them."""
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.conftest import image_bytes
from transferapp.library import images as library_images
from transferapp.library import projects as library_projects


def project_with_images(owner, *, classes=("red", "blue"), per_class=5, size=(64, 64), name="Colours"):
    project = library_projects.project_create(owner=owner, name=name)
    for color in classes:
        label = library_projects.label_create(project=project, name=color)
        for i in range(per_class):
            outcome = library_images.image_add(label=label, name=f"{color}-{i}.png", data=image_bytes(color, size, shape_seed=i))
            assert outcome.image is not None, outcome.error
    return project


def upload(name, data, content_type="image/png"):
    return SimpleUploadedFile(name, data, content_type=content_type)


def inbox_with_images(project, *, colors=("red", "blue"), per_color=5, size=(64, 64), start=0):
    """Unlabelled images in the project's Inbox (#24), `per_color` of each colour; returns them."""
    added = []
    for color in colors:
        for i in range(start, start + per_color):
            outcome = library_images.image_add(label=None, project=project, name=f"inbox-{color}-{i}.png",
                                               data=image_bytes(color, size, shape_seed=1000 + i))
            assert outcome.image is not None, outcome.error
            added.append(outcome.image)
    return added


def member(project, username: str, role: str, django_user_model=None):
    """A new user with `role` in `project` (#26): "viewer", "labeller" or "editor"."""
    from django.contrib.auth import get_user_model

    from transferapp.models import Membership
    users = django_user_model or get_user_model()
    person = users.objects.create_user(username, password=f"{username}-long-password-1")
    Membership.objects.create(project=project, user=person, role=role, added_by=project.owner)
    return person
