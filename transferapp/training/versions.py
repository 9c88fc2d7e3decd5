"""Model versions: a succeeded run numbered v1, v2, ...; publishing one as the project's model."""

from django.db import transaction

from transferapp.audit import trail
from transferapp.library import errors
from transferapp.models import Project, TrainingRun
from transferapp.webhooks import events as webhook_events

# --- model versions ---------------------------------------------------------------------------

def run_assign_version(*, run_id: int) -> int | None:
    """Number a succeeded run v1, v2, ... within its project (once: a run keeps its number).

    The project row is locked so two runs finishing together cannot take the same number."""
    with transaction.atomic():
        run = TrainingRun.objects.filter(pk=run_id).first()
        if run is None or run.version is not None or run.status != TrainingRun.Status.SUCCEEDED:
            return run.version if run else None
        project = Project.objects.select_for_update().get(pk=run.project_id)
        project.last_version += 1
        project.save(update_fields=["last_version"])
        run.version = project.last_version
        run.save(update_fields=["version"])
        return run.version


def run_publish(*, run: TrainingRun) -> Project:
    """Make this version the project's model (predict page, API and export default to it)."""
    if run.status != TrainingRun.Status.SUCCEEDED or run.version is None:
        raise errors.ServiceError("Only a finished, successful training can be published.")
    project = run.project
    already = project.published_run_id == run.pk
    project.published_run = run
    with transaction.atomic():
        project.save(update_fields=["published_run"])
        if not already:
            trail.record(action="version.published", project=project, detail={"run": run.pk, "version": run.version})
    if not already:
        webhook_events.version_published(run)
    return project
