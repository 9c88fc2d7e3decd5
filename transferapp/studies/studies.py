"""A reading study's life: started on a set of images with two or more readers, read blind, closed,
adjudicated. The agreement figures live in `agreement.py`; the model's answers are filled in by a
worker job (`model_answers.py`).

Blindness is kept here, not only in the pages: `next_for_reader` returns images and files only,
a reader names an image by its study item's id (never the project's image id, which leads to its
class page), and nothing in this module hands a reader another reader's read, the image's label or the model's
answer while the study is open.
"""
from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone

from transferapp.accounts import roles
from transferapp.audit import trail
from transferapp.library import errors
from transferapp.library.selectors import parse_ids
from transferapp.models import Image, ReadingStudy, StudyImage, StudyRead
from transferapp.studies import model_answers

MAX_IMAGES = 5000
MIN_READERS = 2


def study_images(*, project, images) -> tuple[list[Image], str]:
    """The live labelled images a study of `images` covers, and its source's name: "test" (the
    images set aside for testing), "validation" (the images the project's current model was
    evaluated on), or a list of image ids (a selection; ids of other projects are dropped)."""
    live = Image.objects.filter(project=project)
    if images == "test":
        return list(live.filter(split="test").order_by("pk")), "test"
    if images == "validation":
        from_run = _validation_ids(project)
        return list(live.filter(pk__in=from_run).order_by("pk")), "validation"
    if isinstance(images, str) and images.startswith("class:"):
        return list(live.filter(label__name=images[len("class:"):]).order_by("pk")), images[:40]
    return list(live.filter(pk__in=parse_ids(images if isinstance(images, list | tuple) else [])).order_by("pk")), "selection"


def _validation_ids(project) -> list[int]:
    """The images the project's model (published, else latest) was scored on."""
    from transferapp.models import TrainingRun  # models only: no layer is crossed
    run = (TrainingRun.objects.filter(pk=project.published_run_id).first()
           or project.runs.filter(status=TrainingRun.Status.SUCCEEDED).order_by("-version").first())
    rows = ((run.metrics or {}).get("eval_predictions") or []) if run else []
    return parse_ids([str(row[0]) for row in rows])


def study_create(*, project, name: str, readers: list, images, created_by) -> ReadingStudy:
    """Start a study. Readers must hold at least the labeller role in the project (reading is
    labelling); there must be two or more of them, and at least one image."""
    readers = list({reader.pk: reader for reader in readers}.values())
    errors.refuse_if("A study needs at least two readers." if len(readers) < MIN_READERS else "")
    for reader in readers:
        if not roles.at_least(roles.role_of(reader, project), roles.LABELLER):
            raise errors.ServiceError(f"{reader.get_username()} cannot read in this project: give them the labeller "
                                      f"role (or higher) first.")
    chosen, source = study_images(project=project, images=images)
    errors.refuse_if("There are no images to read in that set." if not chosen else "")
    errors.refuse_if(f"A study reads at most {MAX_IMAGES} images; this set has {len(chosen)}."
                     if len(chosen) > MAX_IMAGES else "")
    with transaction.atomic():
        study = ReadingStudy.objects.create(project=project, name=(name or "").strip()[:120] or f"Study of {source}",
                                            created_by=created_by, source=source,
                                            classes=[label.name for label in project.labels.all()])
        study.readers.set(readers)
        labels = {image.pk: image.label.name for image in chosen}
        StudyImage.objects.bulk_create([StudyImage(study=study, image=image, position=i, label_at_start=labels[image.pk])
                                        for i, image in enumerate(chosen)])
        trail.record(action="study.started", project=project,
                     detail={"study": study.pk, "name": study.name, "images": len(chosen), "source": source,
                             "readers": [reader.get_username() for reader in readers]})
        model_answers.schedule(study)
    return study


def is_reader(study: ReadingStudy, user) -> bool:
    return study.readers.filter(pk=user.pk).exists()


def next_for_reader(*, study: ReadingStudy, reader, n: int = 10) -> list[StudyImage]:
    """The reader's unread images, in the study's order (images and files only: nothing else of
    an item may reach a reader while the study is open)."""
    read = StudyRead.objects.filter(item__study=study, reader=reader).values("item_id")
    return list(study.items.exclude(pk__in=read).select_related("image")[:max(1, min(n, 100))])


def reads_of(*, study: ReadingStudy, reader) -> dict[int, str]:
    """One reader's own reads, {item_id: label}: what the reading page shows back to that reader
    (never anyone else's)."""
    return dict(StudyRead.objects.filter(item__study=study, reader=reader).values_list("item_id", "label"))


def progress(*, study: ReadingStudy) -> dict:
    """{"images": n, "readers": [{"reader": name, "read": k, "member": still a labeller}], "complete":
    every reader who is still a member has read everything}. A reader removed from the project (or
    down to viewer) since the study started no longer holds it open; their reads so far still count."""
    n = study.items.count()
    counts = dict(StudyRead.objects.filter(item__study=study).values("reader").annotate(k=Count("pk")).values_list("reader", "k"))
    readers = [{"reader": r.get_username(), "user": r.pk, "read": counts.get(r.pk, 0),
                "member": roles.at_least(roles.role_of(r, study.project), roles.LABELLER)}
               for r in study.readers.order_by("username")]
    members = [r for r in readers if r["member"]]
    return {"images": n, "readers": readers, "complete": bool(members) and all(r["read"] >= n for r in members)}


def read(*, study: ReadingStudy, reader, item_id, label: str) -> StudyRead:
    """Record (or change) a reader's label for one image of an open study, named by its study item's id."""
    errors.refuse_if("This study is closed: reads can no longer change." if not study.is_open else "")
    errors.refuse_if("You are not a reader of this study." if not is_reader(study, reader) else "")
    errors.refuse_if(f"“{label}” is not one of this study's classes." if label not in study.classes else "")
    item = study.items.filter(pk=item_id or 0).first()
    errors.refuse_if("That image is not part of this study." if item is None else "")
    row, _ = StudyRead.objects.update_or_create(item=item, reader=reader, defaults={"label": label})
    return row


def close(*, study: ReadingStudy) -> ReadingStudy:
    """Close the study (all have read, or an editor ends it early): reads freeze, results open."""
    if study.is_open:
        ReadingStudy.objects.filter(pk=study.pk).update(status=ReadingStudy.Status.CLOSED, closed_at=timezone.now())
        study.refresh_from_db()
        trail.record(action="study.closed", project=study.project, detail={"study": study.pk, "name": study.name})
    return study


def reads_table(*, study: ReadingStudy) -> tuple[list[StudyImage], list, dict]:
    """For the agreement figures and the adjudication queue (editors; never a reader of an open
    study): the items, the readers (by username), and {item_id: {reader_id: label}}."""
    items = list(study.items.select_related("image"))
    readers = list(study.readers.order_by("username"))
    table: dict[int, dict[int, str]] = {}
    for item_id, reader_id, label in StudyRead.objects.filter(item__study=study).values_list("item_id", "reader_id", "label"):
        table.setdefault(item_id, {})[reader_id] = label
    return items, readers, table


def disagreements(*, study: ReadingStudy) -> list[StudyImage]:
    """Items the readers who read them did not all label the same (the adjudication queue), not yet adjudicated first."""
    items, _, table = reads_table(study=study)
    split = [item for item in items if len(set(table.get(item.pk, {}).values())) > 1]
    return sorted(split, key=lambda item: (bool(item.adjudicated_label), item.position))


def adjudicate(*, study: ReadingStudy, item_id, label: str, by) -> StudyImage:
    errors.refuse_if(f"“{label}” is not one of this study's classes." if label not in study.classes else "")
    item = study.items.filter(pk=item_id).first()
    errors.refuse_if("That image is not part of this study." if item is None else "")
    StudyImage.objects.filter(pk=item.pk).update(adjudicated_label=label, adjudicated_by=by, adjudicated_at=timezone.now())
    item.refresh_from_db()
    trail.record(action="study.adjudicated", project=study.project,
                 detail={"study": study.pk, "image": item.image_id, "label": label})
    return item


def studies_for(*, project, user):
    """The project's studies a user may see: an editor sees all; anyone else the ones they read in,
    and every closed one (its figures are open to the whole project then)."""
    studies = project.studies.annotate(n_images=Count("items", distinct=True))
    if roles.at_least(roles.role_of(user, project), roles.EDITOR):
        return studies
    return studies.filter(Q(readers=user) | Q(status=ReadingStudy.Status.CLOSED)).distinct()


def write_back(*, study: ReadingStudy) -> dict:
    """Write the adjudicated labels into the project (a closed study only: its reads are final).
    Each image whose class changes moves with its provenance and one audit entry (from -> to);
    one already in its adjudicated class counts as confirmed. An image relabelled by someone since
    the study started is left alone and counted as "changed" (someone decided after the readers
    saw it); one deleted since, or whose adjudicated class no longer exists, is skipped and counted.
    Each item is written once: the study's row is locked, so a double submit waits, then finds
    nothing left to write."""
    errors.refuse_if("Close the study first: its reads, and so its disagreements, can still change while it is open."
                     if study.is_open else "")
    classes = {label.name: label for label in study.project.labels.all()}
    note = f"adjudicated in study {study.pk} ({study.name})"[:300]
    counts = {"moved": 0, "confirmed": 0, "changed": 0, "skipped": 0}
    with transaction.atomic():
        ReadingStudy.objects.select_for_update().filter(pk=study.pk).first()
        pending = list(study.items.exclude(adjudicated_label="").filter(written_back_at__isnull=True)
                       .select_related("image__label"))
        errors.refuse_if("There is no adjudicated label left to write: adjudicate the disagreements first."
                         if not pending else "")
        for item in pending:
            counts[_write_one(study, item, classes.get(item.adjudicated_label), note)] += 1
        trail.record(action="study.written_back", project=study.project, detail={"study": study.pk, **counts})
    return counts


def _write_one(study: ReadingStudy, item: StudyImage, target, note: str) -> str:
    image = item.image
    if image.deleted_at is not None or image.label_id is None or target is None:
        return "skipped"  # not written: it may still be written once the class exists again
    # Only the first writer of an item goes on (a conditional update: a racing submit finds it written).
    if not StudyImage.objects.filter(pk=item.pk, written_back_at__isnull=True).update(written_back_at=timezone.now()):
        return "skipped"
    if item.label_at_start and image.label.name != item.label_at_start:
        return "changed"  # relabelled since the study started: that later decision stands
    if image.label_id == target.pk:
        Image.all_objects.filter(pk=image.pk).update(label_confirmed=True)
        return "confirmed"
    moved = Image.all_objects.filter(pk=image.pk, label_id=image.label_id).update(
        label=target, label_confirmed=True, provenance=note)
    if not moved:
        return "changed"  # relabelled while we wrote
    trail.record(action="label.changed", project=study.project,
                 detail={"image": image.pk, "from": image.label.name, "to": target.name, "via": f"study {study.pk}"})
    return "moved"
