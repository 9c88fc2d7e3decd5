"""A project's audit log (#26): its editors read it page by page, filtered by kind and person, and
download the whole of it as CSV."""
import json
from urllib.parse import urlencode

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, StreamingHttpResponse
from django.shortcuts import render
from django.utils.http import content_disposition_header
from django.utils.text import slugify

from transferapp.accounts import roles
from transferapp.audit import log
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


class _Echo:
    def write(self, value):
        return value


@login_required
def audit_log_csv(request, pk):
    """The project's whole log, oldest first, with each entry's hash (so a copy can be checked)."""
    project = _project_for_editor(request, pk)
    out = csvsafe.writer(_Echo())
    header = ["id", "time", "actor", "action", "what", "detail", "entry_hash"]

    def rows():
        yield out.writerow(header)
        for entry in log.entries(project_ref=project.pk).order_by("pk").iterator(chunk_size=2000):
            yield out.writerow([entry.pk, entry.created_at.isoformat(), entry.actor, entry.action,
                                log.sentence(entry), json.dumps(entry.detail, ensure_ascii=False), entry.entry_hash])

    response = StreamingHttpResponse(rows(), content_type=bucket.CSV_TYPE)
    name = f"{slugify(project.name) or 'project'}-audit-log.csv"
    response["Content-Disposition"] = content_disposition_header(as_attachment=True, filename=name)
    return response
