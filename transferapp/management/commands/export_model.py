import json
import shutil
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from transferapp.serving import exports
from transferapp.training import selectors as training_selectors

from ._operator import as_operator
from ._project_arg import add_project_arguments, owned_project


class Command(BaseCommand):
    help = "Export a model version (default: the published one) as a bundle that runs without the app."

    def add_base_argument(self, parser, *args, **kwargs):
        if "--version" not in args:  # here --version names the model version, not Django's
            super().add_base_argument(parser, *args, **kwargs)

    def add_arguments(self, parser):
        add_project_arguments(parser)
        parser.add_argument("--version", type=int, default=None, dest="model_version")
        parser.add_argument("--out", required=True, help="folder to write the bundle into (created)")

    @as_operator
    def handle(self, *args, user, project, model_version, out, **options):
        target = owned_project(user, project)
        run = training_selectors.model_run(project=target, version=model_version)
        if run is None:
            raise CommandError("That project has no such trained version.")
        try:
            status = exports.run_export(run=run)
        except exports.ExportError as exc:
            raise CommandError(str(exc)) from None
        if not status["passed"]:
            raise CommandError(f"The export failed its self-test: {status['report']}")
        destination = Path(out)
        shutil.copytree(exports.export_dir(run) / "bundle", destination, dirs_exist_ok=True)
        self.stdout.write(json.dumps({"out": str(destination), **status}))
