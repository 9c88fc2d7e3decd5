"""The --user/--project arguments that the model commands share."""
from django.contrib.auth import get_user_model
from django.core.management.base import CommandError

from transferapp.models import Project


def add_project_arguments(parser) -> None:
    parser.add_argument("--user", required=True, help="the owner's username")
    parser.add_argument("--project", required=True, help="the project's name")


def owned_project(username: str, title: str) -> Project:
    owner = get_user_model().objects.filter(username=username).first()
    if owner is None:
        raise CommandError(f"No user named {username!r}.")
    project = Project.objects.filter(owner=owner, name=title).first()
    if project is None:
        raise CommandError(f"{username} has no project named {title!r}.")
    return project
