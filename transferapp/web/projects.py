"""Project pages: the list, one project, its options. The first line of each view is the access check."""

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from transferapp.accounts import quotas, roles
from transferapp.accounts import selectors as accounts_selectors
from transferapp.engine.zoo import list_bases
from transferapp.jobs import checks
from transferapp.labelling import inbox as labelling_inbox
from transferapp.library import errors, readiness
from transferapp.library import projects as library_projects
from transferapp.library import selectors as library_selectors
from transferapp.training import selectors as training_selectors
from transferapp.web import actions, forms
from transferapp.web import studies as web_studies


@login_required
def project_list(request):
    form = forms.NameForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            project = library_projects.project_create(owner=request.user, name=form.cleaned_data["name"])
        except errors.ServiceError as exc:
            form.add_error("name", str(exc))
        else:
            return redirect(project)
    projects = readiness.project_overviews(user=request.user)
    context = {"projects": projects, "form": form, "usage": quotas.usage_text(request.user)}
    return render(request, "transferapp/project_list.html", context)


@login_required
def project_detail(request, pk):
    project = library_selectors.project_get_for_user(user=request.user, need=roles.VIEWER, pk=pk)
    runs = [checks.run_check(run=run) for run in training_selectors.runs_for_project(project=project)]
    duplicate_groups = readiness.near_duplicate_images(project=project)
    context = {
        "project": project,
        "labels": library_selectors.labels_with_previews(project=project),
        "inbox": labelling_inbox.inbox_count(project=project),
        "inbox_preview": library_selectors.inbox_preview(project=project),
        "runs": runs,
        "imports": [checks.import_check(job=job) for job in project.imports.all()[:5]],
        "problems": readiness.training_problems(project=project),
        "warnings": readiness.training_warnings(project=project, groups=duplicate_groups),
        "small_data_note": readiness.small_data_note(project=project),
        "duplicate_groups": duplicate_groups,
        "split_counts": library_selectors.split_counts(images=project.images.all()),
        "bases": list_bases(),
        "train_form": forms.TrainForm(),
        "no_mirroring": library_selectors.project_no_mirroring(project=project),
        "has_grayscale": library_selectors.project_has_grayscale(project=project),
        "group_choices": project.GroupBy.choices,
        "group_suggestion": readiness.grouping_suggestion(project=project),
        "class_order": library_selectors.project_class_order(project=project),
        "versions": training_selectors.versions_for_project(project=project),
        "current_run": training_selectors.model_run(project=project),
        "api_keys": accounts_selectors.api_keys_for_project(project=project),
        "prediction_log_days": settings.PREDICTION_LOG_KEPT_DAYS,
        "prediction_images_days": settings.PREDICTION_IMAGES_KEPT_DAYS,
        "study_rows": web_studies.study_rows(project=project, user=request.user),  # #26
        "study_editor": roles.at_least(roles.role_of(request.user, project), roles.EDITOR),
    }
    return render(request, "transferapp/project_detail.html", context)


@login_required
def project_near_duplicates(request, pk):
    """Every group of near-identical images of the project, each with its thumbnails and classes."""
    project = library_selectors.project_get_for_user(user=request.user, need=roles.VIEWER, pk=pk)
    groups = readiness.near_duplicate_images(project=project)
    context = {"project": project, "groups": groups,
               "crossing": sum(1 for group in groups if len({image.label_id for image in group}) > 1)}
    return render(request, "transferapp/near_duplicates.html", context)


@login_required
@require_POST
def project_image_options(request, pk):
    project = library_selectors.project_get_for_user(user=request.user, need=roles.EDITOR, pk=pk)
    level = request.POST.get("group_folder_level", "1")
    actions.apply(request, library_projects.project_set_image_options, project=project,
           no_mirroring=request.POST.get("no_mirroring") == "on", group_by=request.POST.get("group_by", ""),
           group_folder_level=library_selectors.parse_id(level) or 0)
    return redirect(project)


@login_required
@require_POST
def project_class_order(request, pk):
    project = library_selectors.project_get_for_user(user=request.user, need=roles.EDITOR, pk=pk)
    actions.apply(request, library_projects.project_set_class_order, project=project,
           ordered=request.POST.get("ordered_classes") == "on", order_text=request.POST.get("class_order", ""))
    return redirect(f"{project.get_absolute_url()}#class-order")


@login_required
@require_POST
def project_rename(request, pk):
    project = library_selectors.project_get_for_user(user=request.user, need=roles.EDITOR, pk=pk)
    actions.apply(request, library_projects.project_rename, project=project, name=request.POST.get("name", ""))
    return redirect(project)


@login_required
@require_POST
def project_delete(request, pk):
    project = library_selectors.project_get_for_user(user=request.user, need=roles.OWNER, pk=pk)
    if not actions.apply(request, library_projects.confirm_name, typed=request.POST.get("confirm_name", ""), name=project.name, what="project"):
        return redirect(project)
    library_projects.project_delete(project=project)
    messages.success(request, f"Project “{project.name}” deleted.")
    return redirect("project_list")


def healthz(request):
    """For load balancers and the Docker healthcheck: the app answers and reaches its database."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return HttpResponse("ok", content_type="text/plain")
