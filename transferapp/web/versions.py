"""Model versions: publish, compare two, export a bundle."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404
from django.shortcuts import redirect, render
from django.utils.cache import patch_vary_headers
from django.views.decorators.http import require_POST

from transferapp.accounts import roles
from transferapp.library import errors, reviews
from transferapp.library import projects as library_projects
from transferapp.library import selectors as library_selectors
from transferapp.reporting import versiondiff
from transferapp.serving import exports
from transferapp.storage import blobs
from transferapp.training import selectors as training_selectors
from transferapp.training import versions as training_versions
from transferapp.web import bucket


@login_required
@require_POST
def run_publish(request, pk):
    run = training_selectors.run_get_for_user(user=request.user, need=roles.EDITOR, pk=pk)
    try:
        training_versions.run_publish(run=run)
        messages.success(request, f"Version {run.version} is now the project's model (predict page, API and export).")
    except errors.ServiceError as exc:
        messages.error(request, str(exc))
    return redirect(run.project)


@login_required
def version_compare(request, pk):
    """Two versions side by side: the evaluation images whose answer changed, and per-class figures
    on the images both scored. htmx swaps only the comparison when a select changes."""
    project = library_selectors.project_get_for_user(user=request.user, need=roles.VIEWER, pk=pk)
    asked = request.GET.get("before", ""), request.GET.get("after", "")
    before, after = training_selectors.compared_versions(project=project, before=asked[0], after=asked[1])
    context = {"project": project, "versions": list(training_selectors.versions_for_project(project=project)),
               "before": before, "after": after,
               "not_found": any(asked) and (str(before and before.version), str(after and after.version)) != asked}
    if before and after and before != after:
        context["diff"] = _version_diff(project, before, after)
    # A history restore (Back after a swap, cache missed) asks as htmx too but needs the whole page.
    partial = request.htmx and not request.htmx.history_restore_request
    response = render(request, "transferapp/version_compare.html" + ("#diff" if partial else ""), context)
    patch_vary_headers(response, ["HX-Request"])
    return response


def _version_diff(project, before, after) -> dict:
    classes = [before.metrics.get("classes", before.classes), after.metrics.get("classes", after.classes)]
    (old, old_source), (new, new_source) = (versiondiff.image_predictions(run.metrics or {}, names)
                                            for run, names in zip((before, after), classes))
    found = versiondiff.compare(old, new)
    common, names = found["common"], versiondiff.class_names(*classes)
    images = library_selectors.images_by_pk(project=project, pks=[int(k) for k in old.keys() | new.keys() if k.isdigit()])
    figures = [versiondiff.figures(preds, common, names) for preds in (old, new)]
    from_production = (reviews.added_between(project=project, start=before.created_at, end=after.created_at)
                       if after.created_at > before.created_at else 0)
    return {**found, "n_common": len(common), "sources": {"before": old_source, "after": new_source},
            "from_production": from_production,
            "groups": [_group_rows(name, found["groups"][name], images) for name in versiondiff.GROUPS],
            "accuracy": [f["accuracy"] for f in figures],
            "per_class": [{"name": n, "known": [n in c for c in classes],
                           "before": figures[0]["per_class"][n], "after": figures[1]["per_class"][n]} for n in names]}

GROUP_TITLES = {"fixed": ("Fixed", "wrong before, right now"), "broken": ("Broken", "right before, wrong now"),
                "still_wrong": ("Changed but still wrong", "a different wrong answer")}


def _group_rows(name, rows, images) -> dict:
    title, meaning = GROUP_TITLES[name]
    shown = [{**row, "image": images.get(int(row["key"])) if row["key"].isdigit() else None}
             for row in rows[:versiondiff.SHOWN_PER_GROUP]]
    # Reviewed predictions added to training (#25): what the corrections from real work changed.
    from_production = sum(1 for row in rows if row["key"].isdigit() and getattr(images.get(int(row["key"])), "provenance", ""))
    return {"name": name, "title": title, "meaning": meaning, "count": len(rows), "rows": shown,
            "from_production": from_production}


@login_required
@require_POST
def run_export(request, pk):
    run = training_selectors.run_get_for_user(user=request.user, need=roles.EDITOR, pk=pk)
    try:
        status = exports.run_export(run=run)
    except exports.ExportError as exc:
        messages.error(request, str(exc))
        return redirect(run)
    if status["passed"]:
        report = status["report"]
        messages.success(request, f"Export ready: its self-test predicted {report['images']} images exactly as the app "
                                  f"does (largest difference {report['max_abs_difference']:.1e}).")
    else:
        messages.error(request, "The export failed its self-test, so it is not offered for download: "
                                f"{status['report']}")
    return redirect(run)


@login_required
def run_export_download(request, pk):
    run = training_selectors.run_get_for_user(user=request.user, need=roles.EDITOR, pk=pk)
    path = exports.bundle_zip(run)
    if path is None:
        raise Http404("No export that passed its self-test")
    name = exports.export_status(run)["name"]
    exports.download_recorded(run=run, what="export bundle")
    if blobs.s3_mode():  # the bucket sends it (S3_PUBLIC_URL), or the app streams it from there
        return bucket.bucket_file(f"{run.artifact_dir}/export/bundle.zip", f"{name}.zip")
    return FileResponse(path.open("rb"), as_attachment=True, filename=f"{name}.zip", content_type="application/zip")


@login_required
@require_POST
def project_intended_use(request, pk):
    project = library_selectors.project_get_for_user(user=request.user, need=roles.EDITOR, pk=pk)
    try:
        library_projects.project_set_intended_use(project=project, text=request.POST.get("intended_use", ""))
        if "report_authors" in request.POST:  # the same form since the report's citation names its authors
            library_projects.project_set_report_credit(project=project, authors=request.POST.get("report_authors", ""),
                                                       affiliation=request.POST.get("report_affiliation", ""))
        messages.success(request, "Saved: the training reports print it under “Intended use and limitations” and “How to cite”.")
    except errors.ServiceError as exc:
        messages.error(request, str(exc))
    return redirect(f"{project.get_absolute_url()}#intended-use")


@login_required
@require_POST
def project_prediction_log(request, pk):
    """The prediction log's settings: keep the images (for review) or not, and the audit share."""
    project = library_selectors.project_get_for_user(user=request.user, need=roles.EDITOR, pk=pk)
    try:
        library_projects.project_set_prediction_log(project=project, keep_images=bool(request.POST.get("keep_prediction_images")),
                                                    audit_percent=request.POST.get("audit_percent", ""))
        messages.success(request, "Saved: new predictions are logged with these settings.")
    except errors.ServiceError as exc:
        messages.error(request, str(exc))
    return redirect(f"{project.get_absolute_url()}#prediction-log")
