"""Zip and folder imports: the upload kept and queued, then its entries imported one by one."""

from datetime import datetime

import django_rq
from django.db import transaction
from django.utils import timezone

from transferapp.accounts import quotas
from transferapp.library import errors, history, images, projects
from transferapp.library.label_files import LabelMap
from transferapp.models import Image, ImportJob, Label, Project
from transferapp.storage import blobs
from transferapp.storage.archive import NOT_IN_CLASS


def import_create(*, project: Project, uploaded, into_inbox: bool = False) -> ImportJob:
    """Keep the uploaded zip (on disk or in the bucket, streamed in chunks) and queue its import."""
    errors.refuse_if(quotas.import_refusal(owner=project.owner_id))
    try:
        kept = blobs.keep_upload(uploaded, "imports")
    except blobs.storage_errors() as exc:
        raise errors.ServiceError(errors.not_stored(exc)) from None
    with transaction.atomic():
        quotas.lock_owner(project.owner_id)
        refusal = quotas.import_refusal(owner=project.owner_id)  # again: one may have started meanwhile
        if refusal:
            blobs.discard_upload(kept)
            raise errors.ServiceError(refusal)
        job = ImportJob.objects.create(project=project, source_name=uploaded.name[:255], upload_path=kept,
                                       into_inbox=into_inbox)
        job.job_id = f"import-{job.pk}"
        job.save(update_fields=["job_id"])
        history.trail.record(action="import.started", project=project,
                             detail={"import": job.pk, "file": job.source_name, "into_inbox": into_inbox})
        errors.on_commit_or_fail(lambda: enqueue_import(job), on_failure=lambda: _import_not_queued(job))
    return job


def enqueue_import(job: ImportJob) -> None:
    queue = django_rq.get_queue("intake", commit_mode="auto")
    queue.enqueue("transferapp.jobs.tasks.run_import", job.pk, job_id=job.job_id)


def _import_not_queued(job: ImportJob) -> None:
    import_fail(job, errors.QUEUE_DOWN, among=[ImportJob.Status.QUEUED])


def import_fail(job: ImportJob, error: str, *, among: list[str], rows=None) -> None:
    """Fail an import that is in one of these states (among `rows`, if given: the row as a reaper
    saw it); its zip goes (what was imported stays)."""
    rows = ImportJob.objects.filter(pk=job.pk) if rows is None else rows
    if rows.filter(status__in=among).update(
        status=ImportJob.Status.FAILED, error=error, finished_at=timezone.now()
    ):
        blobs.discard_upload(job.upload_path)


def import_entries(*, project: Project, entries, on_progress=None, counts: dict | None = None,
                   earlier_try_since: datetime | None = None, into_inbox: bool = False,
                   labels: LabelMap | None = None) -> dict:
    """Import archive/folder entries one by one; returns counts (from `counts`, an earlier try's, on)
    and a per-file report of these entries.

    Each file ends up accepted, skipped (harmless: the same file is already in this class) or
    refused (with why), as on the upload page; system files are junk, only counted. Each file is
    stored as soon as it is checked, so a failure halfway keeps what came before. A later try of an
    import (see jobs.tasks.run_import) counts a file its earlier try stored (the same name, in the same
    class, since `earlier_try_since`) as imported, not as a duplicate. A class this import created
    whose every file was refused is removed again (`empty_classes` names it).

    The Inbox (#24): files of an unlabelled/ top folder, or every file with `into_inbox`, go to the
    project's Inbox. With `labels` (a labels file's rows) a file's row with a class gives its class (and
    the report says so where its class folder says otherwise); a file with no row keeps its class
    folder's class, and only loose or unlabelled/ files go to the Inbox. `into_inbox` wins over the
    labels file: every file goes to the Inbox. Rows naming no file of the import are reported apart
    from refused files (`missing_rows`); the labels file itself is neither an image nor junk.
    """
    classes = {label.name.lower(): label for label in project.labels.all()}
    # `processed`: entries handled, the labels file too (where a later try goes on from).
    summary = {"accepted": 0, "skipped": 0, "refused": 0, "junk": 0, "inbox": 0, "processed": 0, **(counts or {}),
               "report": [], "created_classes": [], "empty_classes": [], "missing_rows": 0,
               "labels_file": labels.source_name if labels is not None else "", "into_inbox": into_inbox}
    summary["splits"] = dict(summary.get("splits") or {})  # images imported per train/ val/ test/ folder
    for entry in entries:
        if labels is not None and labels.is_labels_file(entry.name):
            _report_labels_file(labels, into_inbox, summary)
        else:
            _route(entry, into_inbox, labels)
            _import_one(project, entry, classes, summary, earlier_try_since)
        # Counted once handled, never before: a file whose reading failed is read again by a later try.
        summary["processed"] += 1
        if on_progress:
            on_progress(summary)
    if not into_inbox:  # with everything into the Inbox the rows are not used, so none is missing
        _report_missing_rows(labels, summary)
    _remove_classes_left_empty(project, summary)
    history.imported(project=project, summary=summary)
    if summary["accepted"]:
        images.features_schedule(project=project)
    return summary


def _route(entry, into_inbox: bool, labels: LabelMap | None) -> None:
    """Where this entry goes: the Inbox (entry.inbox) with `into_inbox`; else its labels-file row's
    class, else its class folder's, else (a loose or unlabelled/ file) the Inbox; the note saying so."""
    if into_inbox:
        entry.label, entry.inbox = "", True
    elif labels is not None:
        _route_by_row(entry, labels)
    if entry.inbox or entry.label:  # the Inbox or the row places a loose file
        entry.skip = "" if entry.skip == NOT_IN_CLASS else entry.skip


def _route_by_row(entry, labels: LabelMap) -> None:
    """A row with a class wins over the class folder; a row with an empty class (no class yet) sends the
    file to the Inbox; with no row the class folder stands, unless the rows split that folder into
    several classes (images/ of a Kaggle-style export: its name is no class)."""
    row, folder = labels.row_for(entry.name), entry.label
    if row is not None and row.label:
        if folder and projects.label_name(folder).lower() != projects.label_name(row.label).lower():
            entry.note = (f"{labels.source_name} line {row.line} says {row.label}; its folder says {folder}: "
                          f"labelled {row.label}.")
        entry.label, entry.inbox = row.label, False
        return
    mixed = labels.folder_is_mixed(entry.name) if folder else None
    if row is None and folder and not mixed:
        return  # its class folder's class
    why = f"{labels.source_name} line {row.line} gives no class" if row else f"No row in {labels.source_name}"
    where = f", and its folder {mixed}/ holds files of several classes" if mixed else (
        f"; its folder says {folder}" if folder else "")
    entry.label, entry.inbox, entry.note = "", True, f"{why}{where}: put in the Inbox."


def _report_labels_file(labels: LabelMap, into_inbox: bool, summary: dict) -> None:
    """The labels file's own line of the report: used, or not (everything went into the Inbox)."""
    reason = ("Not used: everything went into the Inbox, as asked." if into_inbox
              else f"The labels file: {len(labels.labels)} row(s) name a file of this import.")
    summary["report"].append({"name": labels.source_name, "label": "", "ok": True, "status": "labels",
                              "reason": reason, "inbox": False})


def _report_missing_rows(labels: LabelMap | None, summary: dict) -> None:
    """Rows naming a file the import does not hold: which row, which file (not counted as files)."""
    for row in labels.missing if labels is not None else []:
        summary["missing_rows"] += 1
        summary["report"].append({"name": f"{labels.source_name} line {row.line}: {row.file}", "label": row.label,
                                  "ok": False, "status": "missing", "reason": "No such file in this import."})


def _import_one(project: Project, entry, classes: dict, summary: dict, earlier_try_since: datetime | None) -> None:
    if entry.junk:
        summary["junk"] += 1
        return
    reason, class_name, status = entry.skip, projects.label_name(entry.label), "refused"
    if not reason:
        try:
            label = None if entry.inbox else _label_for(project, class_name, classes, summary)
            outcome = images.image_add(label=label, project=project, name=entry.name, data=entry.read(), split=entry.split)
            status = "added" if _stored_by_an_earlier_try(outcome, earlier_try_since) else outcome.status
            reason = entry.note if status == "added" else outcome.error
            summary["inbox"] += status == "added" and label is None
        except (ValueError, OSError, errors.ServiceError) as exc:
            reason = str(exc)
    summary[{"added": "accepted", "skipped": "skipped"}.get(status, "refused")] += 1
    if status == "added" and entry.split:
        summary["splits"][entry.split] = summary["splits"].get(entry.split, 0) + 1
    summary["report"].append({"name": entry.name, "label": "" if entry.inbox else class_name, "ok": status == "added",
                              "status": status, "reason": reason, "inbox": entry.inbox})


def _remove_classes_left_empty(project: Project, summary: dict) -> None:
    """A folder whose every file was refused does not leave an empty class behind (the report
    still names each file and why)."""
    for name in list(summary["created_classes"]):
        label = project.labels.filter(name=name).first()
        if label is not None and not Image.all_objects.filter(label=label).exists():
            projects.label_delete(label=label)
            summary["created_classes"].remove(name)
            summary["empty_classes"].append(name)


def _stored_by_an_earlier_try(outcome: images.UploadOutcome, since: datetime | None) -> bool:
    same = outcome.duplicate_of
    return bool(since and same and outcome.skipped and same.original_name == outcome.name[:255] and same.created_at >= since)


def _label_for(project: Project, name: str, labels: dict, summary: dict) -> Label:
    name = projects.label_name(name)  # a folder "a<b" is the class "a‹b", for its first file and every other
    label = labels.get(name.lower())
    if label is None:
        label = projects.label_create(project=project, name=name)
        labels[name.lower()] = label
        summary["created_classes"].append(label.name)
    return label
