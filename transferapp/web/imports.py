"""Zip imports: upload, then the import's progress and report."""

from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from transferapp.accounts import roles
from transferapp.jobs import checks
from transferapp.library import errors
from transferapp.library import imports as library_imports
from transferapp.library import selectors as library_selectors
from transferapp.web import actions, uploads


@login_required
@require_POST
@uploads.accepts_archives
def import_create(request, pk):
    project = library_selectors.project_get_for_user(user=request.user, need=roles.LABELLER, pk=pk)
    archive = request.FILES.get("archive")
    if archive is None or not archive.name.lower().endswith(".zip"):
        return actions.refuse(request, "Choose a .zip file whose folders are your classes.", project)
    try:
        job = library_imports.import_create(project=project, uploaded=archive,
                                            into_inbox=request.POST.get("into_inbox") == "on")
    except errors.ServiceError as exc:
        return actions.refuse(request, str(exc), project)
    if actions.is_script_request(request):
        return render(request, "transferapp/import_detail.html#live", {"job": job, "project": project, "rejected": []})
    return redirect(job)


@login_required
def import_detail(request, pk):
    job = checks.import_check(job=library_selectors.import_get_for_user(user=request.user, need=roles.VIEWER, pk=pk))
    context = {"job": job, "project": job.project, "rejected": library_selectors.import_refused_rows(job=job),
               "repeats": library_selectors.import_skipped_rows(job=job),
               "missing": library_selectors.import_missing_rows(job=job),
               "inboxed": library_selectors.import_inbox_rows(job=job),
               "noted": library_selectors.import_noted_rows(job=job)}
    if request.htmx and request.GET.get("live"):
        response = render(request, "transferapp/import_detail.html#live", context)
        if job.is_finished:
            response.status_code = 286  # htmx: stop polling
            response["HX-Trigger"] = "import-finished"  # the project page refreshes its counts
        return response
    return render(request, "transferapp/import_detail.html", context)
