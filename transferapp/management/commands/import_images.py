import json

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from transferapp.library import imports as library_imports
from transferapp.library import projects as library_projects
from transferapp.library.label_files import labels_for_source
from transferapp.models import Project
from transferapp.storage.archive import ArchiveRejected, Limits, open_source

from ._operator import as_operator


class Command(BaseCommand):
    help = "Import a folder or zip of class folders into a user's project (created if needed)."

    def add_arguments(self, parser):
        parser.add_argument("path", help="a folder or a .zip whose folders are the classes")
        parser.add_argument("--user", required=True, help="the owner's username")
        parser.add_argument("--project", required=True, help="project name; created when it does not exist")
        parser.add_argument("--json", action="store_true", help="print one JSON document instead of text")
        parser.add_argument("--unlabelled", action="store_true", help="put every image into the project's Inbox")
        parser.add_argument("--labels", help="a CSV (file,label) or JSON list giving each file's class; "
                                             "a named file takes its row's class, others keep their class folder's "
                                             "(loose ones go to the Inbox); --unlabelled wins over it")

    @as_operator
    def handle(self, *args, path, user, project, json: bool, unlabelled=False, labels=None, **options):
        owner = self._user(user)
        target = Project.objects.filter(owner=owner, name=project).first() or library_projects.project_create(owner=owner, name=project)
        try:
            with open_source(path, Limits()) as source:
                label_map = labels_for_source(source, labels_path=labels)
                summary = library_imports.import_entries(project=target, entries=source, into_inbox=unlabelled,
                                                         labels=label_map)
        except (ArchiveRejected, FileNotFoundError) as exc:
            raise CommandError(str(exc)) from None
        self._print(target, summary, as_json=json)

    def _user(self, username):
        try:
            return get_user_model().objects.get(username=username)
        except get_user_model().DoesNotExist:
            raise CommandError(f"No user called {username!r}.") from None

    def _print(self, project, summary, *, as_json):
        if as_json:
            document = {"project": project.name, "project_id": project.pk, **summary}
            self.stdout.write(_json_dumps(document))
            return
        for row in summary["report"]:
            if not row["ok"] or (row["reason"] and not row.get("inbox")):  # refusals and notes (a row over a folder)
                self.stdout.write(f"{row['status']:8} {row['name']}: {row['reason']}")
        self.stdout.write(self.style.SUCCESS(_summary_line(project, summary)))


def _summary_line(project, summary) -> str:
    line = (f"{summary['accepted']} imported, {summary['skipped']} skipped (already in their class), "
            f"{summary['refused']} refused, {summary['junk']} system files ignored into “{project.name}”")
    if summary["inbox"]:
        line += f"; {summary['inbox']} into the Inbox"
    if summary["labels_file"]:
        used = "not used (everything into the Inbox)" if summary.get("into_inbox") else "used"
        line += f"; labels file {summary['labels_file']} {used}"
    if summary["missing_rows"]:
        line += f"; {summary['missing_rows']} row(s) of the labels file name no file here"
    if summary["created_classes"]:
        line += f"; new classes: {', '.join(summary['created_classes'])}"
    if summary["empty_classes"]:
        line += f"; not created, every file refused: {', '.join(summary['empty_classes'])}"
    if not (summary["accepted"] or summary["skipped"] or summary["refused"]):
        line += "; the source held no images"
    return line


def _json_dumps(document) -> str:
    return json.dumps(document, ensure_ascii=False)
