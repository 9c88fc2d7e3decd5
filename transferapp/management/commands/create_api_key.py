from django.core.management.base import BaseCommand

from transferapp.accounts import api_keys

from ._project_arg import add_project_arguments, owned_project


class Command(BaseCommand):
    help = "Create an API key for one project and print it (it is shown only this once)."

    def add_arguments(self, parser):
        add_project_arguments(parser)
        parser.add_argument("--name", default="", help="a note saying what the key is for")

    def handle(self, *args, user, project, name, **options):
        _, key = api_keys.api_key_create(project=owned_project(user, project), name=name or "command line")
        self.stdout.write(key)
