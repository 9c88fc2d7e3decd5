from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from transferapp.models import Project
from transferapp.reporting import reports as reporting_reports
from transferapp.training import selectors as training_selectors

FORMATS = {".pdf", ".html"}


class Command(BaseCommand):
    help = "Write a version's training report (default: the published version) as PDF or HTML, by the --out suffix."

    def add_base_argument(self, parser, *args, **kwargs):
        if "--version" not in args:  # here --version names the model version, not Django's
            super().add_base_argument(parser, *args, **kwargs)

    def add_arguments(self, parser):
        parser.add_argument("--project", required=True, help="the project's name")
        parser.add_argument("--user", default=None, help="the owner's username (needed when two owners use the name)")
        parser.add_argument("--version", type=int, default=None, dest="model_version")
        parser.add_argument("--out", required=True, help="FILE.pdf or FILE.html")

    def handle(self, *args, project, user, model_version, out, **options):
        path = Path(out)
        if path.suffix.lower() not in FORMATS:
            raise CommandError(f"--out must end in .pdf or .html (got {path.name!r}).")
        run = training_selectors.model_run(project=_project(project, user), version=model_version)
        if run is None:
            raise CommandError(f"Project {project!r} has no version {model_version}." if model_version
                               else f"Project {project!r} has no trained version yet.")
        html = reporting_reports.render_html(run)
        try:
            path.write_bytes(reporting_reports.render_pdf(run, html) if path.suffix.lower() == ".pdf" else html.encode())
        except OSError as exc:
            raise CommandError(f"Cannot write {path}: {exc.strerror}.") from None
        self.stdout.write(f"Wrote the training report of {run.project.name} v{run.version} to {path}.")


def _project(title: str, username: str | None) -> Project:
    projects = Project.objects.filter(name=title)
    if username is not None:
        if not get_user_model().objects.filter(username=username).exists():
            raise CommandError(f"No user named {username!r}.")
        projects = projects.filter(owner__username=username)
    found = list(projects[:2])
    if not found:
        raise CommandError(f"No project named {title!r}" + (f" owned by {username}." if username else "."))
    if len(found) > 1:
        raise CommandError(f"More than one owner has a project named {title!r}: add --user.")
    return found[0]
