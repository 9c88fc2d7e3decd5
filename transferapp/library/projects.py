"""Projects and their classes: create, rename, options, delete (writes).

Functions take keyword-only arguments and objects the caller already fetched with an
access check (see library/selectors.py), so ownership is never re-decided here.
"""

import re
import shutil
import unicodedata
from pathlib import Path

from django.conf import settings
from django.db import transaction

from transferapp.accounts import quotas
from transferapp.library import errors, history, trash
from transferapp.models import Image, Label, Prediction, Project
from transferapp.storage import blobs


def project_create(*, owner, name: str) -> Project:
    name = errors.clean_name(name, "Project name")
    with transaction.atomic():
        quotas.lock_owner(owner)
        errors.refuse_if(quotas.project_refusal(owner=owner))
        project = Project.objects.create(owner=owner, name=name)
        history.trail.record(action="project.created", project=project, detail={"name": name})
        return project


def project_rename(*, project: Project, name: str) -> Project:
    old, project.name = project.name, errors.clean_name(name, "Project name")
    with transaction.atomic():
        project.save(update_fields=["name"])
        if old != project.name:
            history.trail.record(action="project.renamed", project=project, detail={"from": old, "to": project.name})
    return project


def project_set_image_options(*, project: Project, no_mirroring: bool, group_by: str, group_folder_level: int = 1) -> Project:
    """"Images must not be mirrored" and what ties images together (see grouping.py)."""
    if group_by not in Project.GroupBy.values:
        raise errors.ServiceError("Choose what ties images together from the list.")
    if not 1 <= group_folder_level <= 10:
        raise errors.ServiceError("The folder level must be between 1 and 10.")
    project.no_mirroring, project.group_by, project.group_folder_level = no_mirroring, group_by, group_folder_level
    project.save(update_fields=["no_mirroring", "group_by", "group_folder_level"])
    return project

INTENDED_USE_MAX_CHARS = 5000


REPORT_CREDIT_MAX_CHARS = 300


def project_set_report_credit(*, project: Project, authors: str, affiliation: str) -> Project:
    """The names and affiliation the training reports cite (blank: the account's name)."""
    authors, affiliation = " ".join(authors.split()), " ".join(affiliation.split())  # one line each: a citation
    if max(len(authors), len(affiliation)) > REPORT_CREDIT_MAX_CHARS:
        raise errors.ServiceError(f"Keep the authors and the affiliation under {REPORT_CREDIT_MAX_CHARS} characters each.")
    project.report_authors, project.report_affiliation = authors, affiliation
    project.save(update_fields=["report_authors", "report_affiliation"])
    return project


def project_set_prediction_log(*, project: Project, keep_images: bool, audit_percent: str) -> Project:
    """Whether logged predictions keep a small copy of their image (for review), and the share of
    predictions drawn at random into the audit sample (0-100 %; live accuracy counts only those)."""
    text = str(audit_percent).strip().rstrip("%").strip()
    if not re.fullmatch(r"[0-9]{1,3}", text) or int(text) > 100:
        raise errors.ServiceError("The audit share is a whole number of per cent, from 0 to 100.")
    project.keep_prediction_images, project.audit_percent = keep_images, int(text)
    project.save(update_fields=["keep_prediction_images", "audit_percent"])
    return project


def project_set_intended_use(*, project: Project, text: str) -> Project:
    """The owner's text on intended use and limitations, printed in the training reports."""
    text = text.strip()
    if len(text) > INTENDED_USE_MAX_CHARS:
        raise errors.ServiceError(f"Keep the intended use and limitations under {INTENDED_USE_MAX_CHARS} characters.")
    project.intended_use = text
    project.save(update_fields=["intended_use"])
    return project


def project_set_class_order(*, project: Project, ordered: bool, order_text: str = "") -> Project:
    """Whether the classes are grades, and their order as the user typed it ("KL0, KL2, KL3"):
    blank keeps the natural order of the names; otherwise every class, once, lowest first."""
    names = [label.name for label in project.labels.all()]
    order = _names_in_order(order_text, names)
    if order:
        unknown = [name for name in order if name not in names]
        if unknown:
            raise errors.ServiceError(f"No class is called {', '.join(unknown)}: use the class names, separated by commas.")
        if len(set(order)) != len(order):
            raise errors.ServiceError("A class is named twice in the order: name each class once, lowest first.")
        if set(order) != set(names):
            left_out = ", ".join(sorted(set(names) - set(order)))
            raise errors.ServiceError(f"The order leaves out {left_out}: name every class, lowest first.")
    project.ordered_classes, project.class_order = ordered, order
    project.save(update_fields=["ordered_classes", "class_order"])
    return project


def _names_in_order(text: str, names: list[str]) -> list[str]:
    """The comma-separated names, where a class whose own name holds a comma ("grade 1, mild") is
    recognised as one name: the longest run of pieces that names a class wins."""
    pieces = [piece.strip() for piece in text.split(",")]
    order, i = [], 0
    while i < len(pieces):
        end = next((j for j in range(len(pieces), i, -1) if ", ".join(pieces[i:j]) in names), None)
        if end is None:
            order += [pieces[i]] if pieces[i] else []  # not a class: reported by the caller
            i += 1
        else:
            order.append(", ".join(pieces[i:end]))
            i = end
    return order


def project_delete(*, project: Project) -> None:
    project_id = project.pk
    sha256s = set(Image.all_objects.filter(project=project).values_list("sha256", flat=True))
    uploaded_zips = list(project.imports.exclude(upload_path="").values_list("upload_path", flat=True))
    batch_folders = list(project.batches.values_list("folder", flat=True))
    with transaction.atomic():
        history.trail.record(action="project.deleted", project=project,
                             detail={"name": project.name, "images": len(sha256s)})
        project.delete()
    _remove_project_files(project_id)
    for folder in batch_folders:  # a running batch stops at its next chunk, finding no row
        blobs.remove_stored(folder)
    trash.features_forget_unused(sha256s=sha256s)
    for kept in uploaded_zips:  # a queued import's job will find no row; a running one stops at its next file
        blobs.discard_upload(kept)


def _remove_project_files(project_id: int) -> None:
    if blobs.s3_mode():
        blobs.remove_folder(f"projects/{project_id}")
        blobs.remove_folder(f"artifacts/project-{project_id}")
        return
    remove_tree(Path(settings.MEDIA_ROOT) / "projects" / str(project_id))
    remove_tree(Path(settings.ARTIFACTS_ROOT) / f"project-{project_id}")


def project_files_remove_if_deleted(*, project_id: int) -> None:
    """A job that was still writing when its project was deleted may have recreated the folder."""
    if not Project.objects.filter(pk=project_id).exists():
        _remove_project_files(project_id)


def label_create(*, project: Project, name: str) -> Label:
    with transaction.atomic():
        label = Label.objects.create(project=project, name=_free_label_name(project, name))
        history.trail.record(action="class.created", project=project, detail={"class": label.pk, "name": label.name})
    return label


def label_rename(*, label: Label, name: str) -> Label:
    """Rename a class. The prediction log names classes by name (the answer, the reviewed class,
    the prediction set), so the project's logged predictions follow the rename in the same
    transaction: a review of an older "red" prediction still names the class now called "rouge"."""
    old = label.name
    new = _free_label_name(label.project, name, exclude=label)
    with transaction.atomic():
        label.name = new
        label.save(update_fields=["name"])
        if new != old:
            _predictions_rename_class(label.project_id, old, new)
            history.trail.record(action="class.renamed", project=label.project,
                                 detail={"class": label.pk, "from": old, "to": new})
    return label


def _predictions_rename_class(project_id: int, old: str, new: str) -> None:
    logged = Prediction.objects.filter(project_id=project_id)
    logged.filter(top_label=old[:80]).update(top_label=new[:80])
    logged.filter(review_label=old[:80]).update(review_label=new[:80])
    changed = []
    for prediction in logged.only("pk", "prediction_set").iterator():
        names = prediction.prediction_set or []
        if old in names:
            prediction.prediction_set = [new if entry == old else entry for entry in names]
            changed.append(prediction)
    Prediction.objects.bulk_update(changed, ["prediction_set"], batch_size=500)


def _free_label_name(project: Project, name: str, exclude: Label | None = None) -> str:
    """The cleaned name, if no other class of the project has it (ignoring case)."""
    name = errors.clean_name(label_name(name), "Class name")
    others = project.labels.exclude(pk=exclude.pk) if exclude else project.labels.all()
    if others.filter(name__iexact=name).exists():
        raise errors.ServiceError(f"There is already a class called “{name}”.")
    return name


def label_delete(*, label: Label) -> None:
    images = list(Image.all_objects.filter(label=label))  # the trashed ones' files go too
    with transaction.atomic():
        history.trail.record(action="class.deleted", project=label.project, detail={
            "class": label.pk, "name": label.name, "images": sum(image.deleted_at is None for image in images)})
        label.delete()
    trash.delete_image_files(label.project_id, images)


def confirm_name(*, typed: str, name: str, what: str) -> bool:
    """A class or project is deleted only when its name is typed: no undo is offered for those."""
    typed = (typed or "").strip()
    if typed != name and not (what == "class" and label_name(typed) == name):  # "a<b" deletes the class "a‹b"
        raise errors.ServiceError(f"Type the {what} name “{name}” to confirm that it should be deleted.")
    return True

# A class name travels far (pages, reports, CSVs, the model's class list that API clients show), and
# zip folder names may hold anything: markup's "<" and ">" become look-alike angle quotes, so a
# folder "a<b" still imports (as "a‹b") and loses nothing; control characters go (tabs and line
# breaks become spaces), and so do the bidi overrides that make a name read differently from what
# it is. Other unicode (accents, CJK, emoji, "&", quotes) is kept: templates escape it.
_MARKUP_LOOKALIKES = str.maketrans({"<": "‹", ">": "›"})

_BIDI_CONTROLS = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def label_name(name: str) -> str:
    """A class name as stored: see _MARKUP_LOOKALIKES. The same name twice gives the same result."""
    kept = (" " if char.isspace() else "" if unicodedata.category(char) == "Cc" or char in _BIDI_CONTROLS else char
            for char in (name or ""))
    return "".join(kept).translate(_MARKUP_LOOKALIKES).strip()


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
