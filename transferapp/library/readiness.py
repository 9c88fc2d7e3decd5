"""Is a project ready to train: the data checks (classes, images a class), warnings, groups and near-duplicates."""

from django.core.files.storage import default_storage
from django.db.models import Count, OuterRef, Q, Subquery
from PIL import Image as PILImage

from transferapp.accounts import roles
from transferapp.engine.config import TrainConfig
from transferapp.library import duplicates, grouping, selectors
from transferapp.models import Image, Label, Project, TrainingRun

MIN_CLASSES = 2

MIN_IMAGES_PER_CLASS = 5  # training_problems() says the same in words


def project_overviews(*, user) -> list[Project]:
    """The user's projects (owned and shared with them, #26) with counts, their latest run, a
    one-word status and the user's role, in five queries."""
    latest_run = TrainingRun.objects.filter(project=OuterRef("pk")).order_by("-created_at", "-pk").values("pk")[:1]
    projects = list(selectors.project_list_for_user(user=user).annotate(latest_run_pk=Subquery(latest_run)))
    runs = TrainingRun.objects.in_bulk([p.latest_run_pk for p in projects if p.latest_run_pk])
    counts, held = {}, {}
    rows = Label.objects.filter(project__in=projects).annotate(
        n=Count("images", filter=selectors.LIVE_IMAGES), held=Count("images", filter=Q(images__split="test") & selectors.LIVE_IMAGES))
    for row in rows.values("project_id", "name", "n", "held"):
        counts.setdefault(row["project_id"], {})[row["name"]] = row["n"]
        held.setdefault(row["project_id"], {})[row["name"]] = row["held"]
    role_of = roles.roles_in(user, projects)
    for project in projects:
        project.last_run = runs.get(project.latest_run_pk)
        project.my_role = role_of[project.pk]  # the list's badge
        problems = problems_for_counts(counts.get(project.pk, {}), held_out=held.get(project.pk, {}))
        project.status_text, project.status_css = _project_status(project, problems)
    return projects


def _project_status(project: Project, problems: list[str]) -> tuple[str, str]:
    """The training rules of problems_for_counts(), in one word for the project list."""
    run = project.last_run
    if run is not None and not run.is_finished:
        return "Training", "running"
    if project.n_labels < MIN_CLASSES:
        return "Needs classes", "queued"
    if problems:
        return "Needs images", "queued"
    if run is not None and run.status == TrainingRun.Status.SUCCEEDED:
        return "Trained", "succeeded"
    return "Ready to train", "ready"


def near_duplicate_groups(*, project: Project) -> list[list[int]]:
    """Ids of images that look the same (resized or recompressed copies), in groups of 2+."""
    hashes = dict(project.images.exclude(dhash="").values_list("pk", "dhash"))
    return duplicates.near_duplicate_groups(hashes, signature=_thumbnail_signatures(project))


def near_duplicate_pairs(*, project: Project) -> list[tuple[int, int]]:
    hashes = dict(project.images.exclude(dhash="").values_list("pk", "dhash"))
    return duplicates.near_duplicate_pairs(hashes, signature=_thumbnail_signatures(project))


def _thumbnail_signatures(project: Project):
    """Grey signatures read from the stored thumbnails, only for the images a hash match asks about."""
    names = dict(project.images.values_list("pk", "thumbnail"))
    cache = {}

    def signature(pk):
        if pk not in cache:
            try:
                with default_storage.open(names[pk], "rb") as f:
                    cache[pk] = duplicates.grey_signature(PILImage.open(f))
            except (KeyError, OSError, ValueError):  # no or unreadable thumbnail: the hash alone decides
                cache[pk] = None
        return cache[pk]

    return signature


def group_keys(*, project: Project) -> dict[int, str]:
    """Each image's group key under the project's rule ("" when none applies)."""
    if not project.group_by:
        return {}
    rows = project.images.values_list("pk", "original_name", "patient_key")
    return {pk: grouping.group_key(group_by=project.group_by, folder_level=project.group_folder_level,
                                   original_name=name, patient=patient) for pk, name, patient in rows}


def grouping_suggestion(*, project: Project) -> dict | None:
    """With no grouping chosen: whether the file names carry a repeating subject number worth
    grouping by (grouping.suggest_filename_number)."""
    if project.group_by:
        return None
    return grouping.suggest_filename_number(list(project.images.values_list("original_name", "label_id")))


def split_groups(*, project: Project) -> list[list[int]]:
    """Images every split keeps on one side: the project's groups joined with every near-identical pair."""
    return grouping.merge([near_duplicate_pairs(project=project), grouping.keyed_groups(group_keys(project=project))])


def groups_broken_by_imported_split(*, project: Project) -> list[list[Image]]:
    """Groups of the project's rule that an imported train/val split puts on both sides (a test
    image does not count as a side: training holds its whole group out with it)."""
    if not project.images.filter(split__in=["train", "val"]).exists():
        return []
    splits = dict(project.images.values_list("pk", "split"))
    broken = grouping.broken_by_split(grouping.keyed_groups(group_keys(project=project)), splits)
    images = selectors.images_by_pk(project=project, pks=[pk for group in broken for pk in group])
    return [[images[pk] for pk in group] for group in broken]


def training_warnings(*, project: Project, groups: list[list[Image]] | None = None) -> list[str]:
    """Things that make a model worse, said before training (training is still allowed)."""
    counts = selectors.image_counts(project=project)
    warnings = [
        f"“{name}” has only {count} image{'' if count == 1 else 's'}; 10 or more per class give a more reliable model."
        for name, count in counts.items()
        if 0 < count < 10
    ]
    non_empty = [c for c in counts.values() if c]
    if len(non_empty) >= 2 and max(non_empty) > 3 * min(non_empty):
        warnings.append(
            f"The classes are out of balance ({max(non_empty)} vs {min(non_empty)} images); training compensates, "
            "but more images of the small classes would help."
        )
    groups = near_duplicate_images(project=project) if groups is None else groups
    crossing = [group for group in groups if len({image.label_id for image in group}) > 1]
    if crossing:
        warnings.append(
            f"{len(crossing)} group(s) of near-identical images sit in different classes: check their labels."
        )
    for group in groups_broken_by_imported_split(project=project)[:5]:
        sides = ", ".join(f"{image.original_name} ({image.split or 'train'})" for image in group[:8])
        warnings.append(f"The imported split puts one group on both sides of the train/validation split: {sides}. "
                        "Validation then sees what training saw; move them to one side or let the run split.")
    return warnings


def near_duplicate_images(*, project: Project) -> list[list[Image]]:
    groups = near_duplicate_groups(project=project)
    images = {image.pk: image for image in project.images.select_related("label").filter(pk__in=[pk for g in groups for pk in g])}
    return [[images[pk] for pk in group] for group in groups]


def small_data_note(*, project: Project) -> str:
    """What a run of this project will do differently because it is small (engine: is_small_data)."""
    if project.images.filter(split="val").exists():  # an imported split is used as given (training.snapshot._split)
        return ""
    held = selectors.test_image_counts(project=project)
    trained = [count - held.get(name, 0) for name, count in selectors.image_counts(project=project).items() if count]
    below = TrainConfig.small_data_below
    if not trained or min(trained) >= below:
        return ""
    return (f"A small project: with fewer than {below} images in a class, every image trains the quick model, "
            "fine-tuning is skipped (no held-out image could show it helps), and each figure is estimated out-of-fold. "
            "“Validation split” in the advanced settings changes this.")


def training_problems(*, project: Project) -> list[str]:
    """Why this project cannot be trained yet; empty when it can."""
    return problems_for_counts(selectors.image_counts(project=project), held_out=selectors.test_image_counts(project=project))


def problems_for_counts(counts: dict[str, int], *, held_out: dict[str, int]) -> list[str]:
    """The rules at "Train" and again when the worker takes its snapshot of the images: `counts`
    are images per class, `held_out` those of them set aside for testing (never trained on)."""
    problems = []
    if len(counts) < MIN_CLASSES:
        problems.append(f"Add at least {MIN_CLASSES} classes (this project has {len(counts)}).")
    for name, count in counts.items():
        held = held_out.get(name, 0)
        if count < MIN_IMAGES_PER_CLASS:
            problems.append(f"Class “{name}” has {count} image(s); add at least {MIN_IMAGES_PER_CLASS}.")
        elif count - held < MIN_IMAGES_PER_CLASS:
            problems.append(f"Class “{name}” has {count - held} image(s) left for training "
                            f"({held} set aside for testing); keep at least {MIN_IMAGES_PER_CLASS} for training.")
    return problems
