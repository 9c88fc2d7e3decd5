"""The model's answers of a study (#26): filled by a real worker from the project's current model
(the published version, else the latest) when the study starts; none without a model."""
import pytest

from tests.api_support import photo_project, train_version, work_off_queue
from tests.factories import member
from transferapp.models import ReadingStudy, TrainingRun
from transferapp.studies import studies

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("queue")]


def test_starting_a_study_has_the_worker_fill_in_the_published_models_answers(user):
    project = photo_project(user, per_class=5)
    run = train_version(project)
    # a later version whose files are gone: were it used instead of the published one, no answer could come
    broken = TrainingRun.objects.create(project=project, base_model=run.base_model, status=TrainingRun.Status.SUCCEEDED,
                                        version=run.version + 1, artifact_dir="/nonexistent/model")
    project.published_run = run
    project.save(update_fields=["published_run"])
    readers = [member(project, "ann", "labeller"), member(project, "bob", "labeller")]
    study = studies.study_create(project=project, name="", readers=readers, images="validation", created_by=user)
    assert study.items.exists() and not study.items.exclude(model_label="").exists()
    work_off_queue("intake")
    study.refresh_from_db()
    assert study.model_version == run.version != broken.version
    items = list(study.items.all())
    assert all(item.model_label in study.classes for item in items)
    # the validation images were scored by this very model: its answers here are the ones it gave then
    scored = {str(row[0]): row for row in run.metrics["eval_predictions"]}
    assert len(items) == len(scored)
    right = sum(item.model_label == item.label_at_start for item in items)
    assert right / len(items) >= run.metrics["accuracy"] - 0.2


def test_without_a_model_the_answers_stay_empty(user):
    project = photo_project(user, per_class=2)
    readers = [member(project, "ann", "labeller"), member(project, "bob", "labeller")]
    study = studies.study_create(project=project, name="", readers=readers,
                                 images=list(project.images.values_list("pk", flat=True)), created_by=user)
    work_off_queue("intake")
    study = ReadingStudy.objects.get(pk=study.pk)
    assert study.model_version is None and not study.items.exclude(model_label="").exists()
