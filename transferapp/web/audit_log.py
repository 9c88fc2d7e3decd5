"""A project's audit log (#26): its editors read it page by page, filtered by kind and person, and
download the whole of it as CSV (each row checkable against its hash)."""
from urllib.parse import urlencode

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, StreamingHttpResponse
from django.shortcuts import render
from django.utils.http import content_disposition_header
from django.utils.text import slugify

from transferapp.accounts import roles
from transferapp.audit import log, trail
from transferapp.models import Image, Project
from transferapp.storage import csvsafe
from transferapp.web import bucket

PER_PAGE = 50


def _project_for_editor(request, pk) -> Project:
    project = Project.objects.filter(pk=pk).first()
    if project is None:
        raise Http404("No such project")
    roles.require(request.user, project, roles.EDITOR)
    return project


def _filters(request) -> tuple[str, str]:
    kind = request.GET.get("kind", "")
    return (kind if kind in log.KINDS else ""), request.GET.get("actor", "")[:160]


@login_required
def audit_log(request, pk):
    project = _project_for_editor(request, pk)
    kind, actor = _filters(request)
    page = Paginator(log.entries(project_ref=project.pk, kind=kind, actor=actor), PER_PAGE).get_page(request.GET.get("page"))
    entries = list(page.object_list)
    wanted = {image for image in map(log.image_of, entries) if isinstance(image, int)}
    # One query for the page's thumbnails: only images of this project that still exist.
    alive = set(Image.objects.filter(project=project, pk__in=wanted).values_list("pk", flat=True))
    rows = [{"entry": e, "sentence": log.sentence(e), "image": log.image_of(e) if log.image_of(e) in alive else None}
            for e in entries]
    return render(request, "transferapp/audit_log.html", {
        "project": project, "page": page, "rows": rows, "kinds": list(log.KINDS.items()), "kind": kind,
        "actors": log.actors(project_ref=project.pk), "actor": actor,
        "query": urlencode({"kind": kind, "actor": actor})})


def _cell(value):
    return "" if value is None else value


class _Echo:
    def write(self, value):
        return value


CSV_HEADER = ["id", *trail.HASHED, "entry_hash", "what"]


@login_required
def audit_log_csv(request, pk):
    """The project's log, oldest first: every field each entry's hash covers (the detail in the
    canonical JSON the hash reads), its hash, and the sentence. Each row can be checked against its
    hash (`manage.py verify_audit_log --csv FILE`). The project's entries are a subset of one chain
    over the whole server, so the file proves that each listed row is as written, not that none of
    the project's rows is missing: only `verify_audit_log` on the database shows that."""
    project = _project_for_editor(request, pk)
    out = csvsafe.writer(_Echo())

    def rows():
        yield out.writerow(CSV_HEADER)
        for entry in log.entries(project_ref=project.pk).order_by("pk").iterator(chunk_size=2000):
            fields = trail.fields_of(entry) | {"detail": trail.canonical_json(entry.detail)}
            yield out.writerow([entry.pk, *(_cell(fields[name]) for name in trail.HASHED), entry.entry_hash,
                                log.sentence(entry)])

    response = StreamingHttpResponse(rows(), content_type=bucket.CSV_TYPE)
    name = f"{slugify(project.name) or 'project'}-audit-log.csv"
    response["Content-Disposition"] = content_disposition_header(as_attachment=True, filename=name)
    return response
