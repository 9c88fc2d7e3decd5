"""The project map (#24 item 7): the page, its points as JSON for static/transferapp/map.js (a
canvas: no DOM node a point), and the actions on a selection (label it, set it aside)."""

from django.contrib.auth.decorators import login_required
from django.http import JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_POST

from transferapp.accounts import roles
from transferapp.labelling import inbox, project_map
from transferapp.library import images as library_images
from transferapp.library import selectors as library_selectors
from transferapp.models import Image
from transferapp.reporting import trust
from transferapp.training import selectors as training_selectors

# Distinct on white and for the common colour-vision deficiencies (Okabe–Ito, then Tableau); the
# Inbox is grey, so no class is.
PALETTE = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#d55e00", "#56b4e9", "#b8a600", "#6a3d9a",
           "#1b9e77", "#e7298a", "#8c564b", "#17becf")
INBOX_COLOUR = "#a0a0a0"
SUSPECTS_READ = 10_000  # every suspect the run kept: the map marks them all


@login_required
def map_page(request, pk):
    project = library_selectors.project_get_for_user(user=request.user, need=roles.VIEWER, pk=pk)
    state = project_map.map_state(project)
    if not state["fresh"] and request.GET.get("part") != "status":
        # also while "busy": a job lost with its queue (Redis restarted) is queued again; one that
        # waits or runs is left alone (a fixed job id)
        project_map.map_schedule(project)
        state = project_map.map_state(project)
    context = {"project": project, **state, "classes": _classes(project)}
    if request.htmx and request.GET.get("part") == "status":
        return render(request, "transferapp/project_map.html#map-status", context)
    return render(request, "transferapp/project_map.html", context)


def _classes(project) -> list[dict]:
    labels = {label.name: label for label in project.labels.all()}
    order = library_selectors.project_class_order(project=project)
    return [{"pk": labels[name].pk, "name": name, "colour": PALETTE[i % len(PALETTE)]} for i, name in enumerate(order)]


@login_required
def map_data(request, pk):
    """The points of the last layout that are still live images, each with its class as it is now."""
    project = library_selectors.project_get_for_user(user=request.user, need=roles.VIEWER, pk=pk)
    state = project_map.map_state(project)
    points = project_map.load_points(state["map"])
    classes = _classes(project)
    index = {c["pk"]: i for i, c in enumerate(classes)}
    now = {pk: (label_id, split) for pk, label_id, split in
           project_map.live_images(project).values_list("pk", "label_id", "split")}
    suspect, odd = _flagged(project)
    ids, xy, cls, flags = [], [], [], []
    for image_id, (x, y) in zip(points["ids"], points["xy"]):
        if image_id not in now:
            continue  # trashed since the layout
        label_id, split = now[image_id]
        ids.append(image_id)
        xy.append([x, y])
        cls.append(index.get(label_id, -1))
        flags.append((label_id is None) | (split == "test") << 1 | (image_id in suspect) << 2 | (image_id in odd) << 3)
    return JsonResponse({"ids": ids, "xy": xy, "class": cls, "flags": flags,
                         "flag_bits": {"inbox": 1, "test": 2, "suspect": 4, "odd": 8},
                         "classes": [{"name": c["name"], "colour": c["colour"]} for c in classes],
                         "inbox_colour": INBOX_COLOUR, "fresh": state["fresh"], "busy": state["busy"]})


def _flagged(project) -> tuple[set[int], set[int]]:
    """Image ids of the latest succeeded run's suspected mislabels (those still worth a look, as the
    results page lists them) and its odd ones out."""
    run = training_selectors.latest_finished_run(project=project)
    if run is None:
        return set(), set()
    suspects = {row["image"].pk for row in trust.suspects(run, limit=SUSPECTS_READ)}
    odd = {int(row["key"]) for row in (run.metrics or {}).get("odd_ones_out") or [] if str(row["key"]).isdigit()}
    return suspects, odd


@login_required
@require_POST
def map_action(request, pk):
    """`images` (ids, comma-separated) selected on the map; `action` = label (with `target`, a class
    id) or test (set aside for testing). Answers JSON {"message"} (400 with the reason)."""
    project = library_selectors.project_get_for_user(user=request.user, need=roles.LABELLER, pk=pk)
    wanted = library_selectors.parse_ids(request.POST.get("images", ""))
    selected = list(project_map.live_images(project).filter(pk__in=wanted))
    action = request.POST.get("action", "")
    if not selected:
        return JsonResponse({"message": "Select one or more points first."}, status=400)
    if action == "label":
        return _label(request, project, selected)
    if action == "test":
        return _set_aside(selected)
    return JsonResponse({"message": "Unknown action: choose a class or “Set aside for testing”."}, status=400)


def _label(request, project, selected: list[Image]):
    target = request.POST.get("target", "")
    label = project.labels.filter(pk=library_selectors.parse_id(target) or 0).first()
    if label is None:
        names = ", ".join(c["name"] for c in _classes(project))
        return JsonResponse({"message": f"Choose one of the classes: {names}."}, status=400)
    from_inbox = [image.pk for image in selected if image.label_id is None]
    labelled = [image for image in selected if image.label_id is not None]
    done = inbox.inbox_label(project=project, image_ids=from_inbox, label=label, user=request.user)
    moved = library_images.images_move(images=labelled, label=label)
    return JsonResponse({"message": f"{done} Inbox image(s) labelled and {moved} moved to “{label.name}”.",
                         "labelled": done, "moved": moved})


def _set_aside(selected: list[Image]):
    labelled = [image for image in selected if image.label_id is not None]
    changed = library_images.images_set_aside(images=labelled, for_testing=True)
    left = len(selected) - len(labelled)
    note = f" {left} Inbox image(s) left alone: label them first." if left else ""
    return JsonResponse({"message": f"Set aside {changed} image(s) for testing: no run trains on them; each run "
                                    f"scores its final model on them.{note}", "changed": changed})
