from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from transferapp.accounts import api_keys, tokens
from transferapp.audit import trail

from ._project_arg import owned_project


class Command(BaseCommand):
    help = ("Create an API key for one project (--user OWNER --project TITLE), or a personal token that acts "
            "as the user in every project they have a role in (--user U --personal), and print it: it is "
            "shown only this once.")

    def add_arguments(self, parser):
        parser.add_argument("--user", required=True, help="the project's owner, or the token's user (username)")
        parser.add_argument("--project", help="the project's name (a project key)")
        parser.add_argument("--personal", action="store_true", help="a personal token instead of a project key (#26)")
        parser.add_argument("--name", default="", help="a note saying what the key or token is for")

    def handle(self, *args, user, project, personal, name, **options):
        if personal == bool(project):
            raise CommandError("Give either --project TITLE (a project key) or --personal (a personal token), not both.")
        with trail.acting_as(trail.Actor("operator (manage.py create_api_key)")):
            self.stdout.write(_personal_token(user, name) if personal else _project_key(user, project, name))


def _project_key(username: str, title: str, name: str) -> str:
    project = owned_project(username, title)
    _, key = api_keys.api_key_create(project=project, name=name or "command line", by=project.owner)
    return key


def _personal_token(username: str, name: str) -> str:
    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        raise CommandError(f"No user named {username!r}.")
    if not user.is_active:
        raise CommandError(f"{username}'s account is deactivated: a token of theirs would be refused.")
    _, token = tokens.token_create(user=user, name=name or "command line")
    return token
