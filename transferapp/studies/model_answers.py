"""The model's answer for each image of a study (#26), filled in by a worker job when the study
starts: the agreement page sets the model against the readers. The model is the project's
current one (the published version, else the latest); with none, the answers stay empty.

The answers are stored on the study's items and never shown to a reader while the study is open
(studies.py keeps that guarantee)."""
import logging

import django_rq
from django.conf import settings

from transferapp.library import errors, intake
from transferapp.library.images import max_upload_bytes
from transferapp.models import ReadingStudy, StudyImage
from transferapp.serving import predictions
from transferapp.training import selectors as training_selectors

logger = logging.getLogger(__name__)

TASK = "transferapp.jobs.tasks.study_model_answers"
CHUNK = 32  # images decoded and predicted at once


def schedule(study: ReadingStudy) -> None:
    """Enqueue the job once the study's rows are committed; if Redis is down, the study goes on
    without the model's answers (the agreement page then says there are none)."""
    def enqueue():
        django_rq.get_queue("intake").enqueue(TASK, study.pk, job_id=f"study-answers-{study.pk}", result_ttl=60)

    errors.on_commit_or_fail(enqueue, on_failure=lambda: logger.warning("Study %s: model answers not queued", study.pk))


def fill(study: ReadingStudy) -> int:
    """Predict every image of the study with the project's current model; returns how many got an
    answer (an image that cannot be decoded keeps an empty one)."""
    run = training_selectors.model_run(project=study.project)
    if run is None:
        return 0
    items = list(study.items.select_related("image"))
    answered = 0
    try:
        for start in range(0, len(items), CHUNK):
            answered += _fill_chunk(run, items[start:start + CHUNK])
    except predictions.PredictionError as exc:  # the version's files are gone: no answers, no version named
        logger.warning("Study %s: no model answers: %s", study.pk, exc)
        return 0
    ReadingStudy.objects.filter(pk=study.pk).update(model_version=run.version)
    return answered


def _fill_chunk(run, items: list[StudyImage]) -> int:
    decoded = [(item, _decoded(item)) for item in items]
    usable = [(item, rgb) for item, rgb in decoded if rgb is not None]
    if not usable:
        return 0
    labels = predictions.top_labels(run, [rgb for _, rgb in usable])
    for (item, _), label in zip(usable, labels):
        StudyImage.objects.filter(pk=item.pk).update(model_label=label)
    return len(usable)


def _decoded(item: StudyImage):
    """The image's pixels, bounded like an upload; None when its file is gone or unreadable."""
    try:
        with item.image.file.open("rb") as f:
            return intake.check_image(f.read(), max_bytes=max_upload_bytes(), max_pixels=settings.MAX_IMAGE_PIXELS).rgb
    except (OSError, intake.ImageRejected):
        logger.warning("Study item %s: image %s could not be read for the model's answer", item.pk, item.image_id)
        return None
