"""A reading study's core: started with labeller readers, read blind, closed, adjudicated."""
import pytest

from tests.factories import member, project_with_images
from transferapp.library.errors import ServiceError
from transferapp.models import AuditEntry
from transferapp.studies import studies

pytestmark = pytest.mark.django_db


def test_readers_read_every_image_and_disagreements_go_to_adjudication(user):
    project = project_with_images(user, per_class=2)
    ann, bob = member(project, "ann", "labeller"), member(project, "bob", "labeller")
    ids = list(project.images.values_list("pk", flat=True))
    study = studies.study_create(project=project, name="", readers=[ann, bob], images=ids, created_by=user)
    assert study.items.count() == 4 and study.source == "selection"
    for reader, answer in ((ann, "red"), (bob, "blue")):
        for item in studies.next_for_reader(study=study, reader=reader, n=10):
            studies.read(study=study, reader=reader, item_id=item.pk, label="red" if item.position else answer)
    assert studies.progress(study=study)["complete"]
    assert studies.next_for_reader(study=study, reader=ann) == []
    split = studies.disagreements(study=study)
    assert [item.position for item in split] == [0]
    studies.adjudicate(study=study, item_id=split[0].pk, label="blue", by=user)
    studies.close(study=study)
    with pytest.raises(ServiceError):
        studies.read(study=study, reader=ann, item_id=study.items.first().pk, label="blue")
    assert list(AuditEntry.objects.filter(action__startswith="study.").values_list("action", flat=True)) == [
        "study.started", "study.adjudicated", "study.closed"]


def test_a_viewer_cannot_be_a_reader_and_one_reader_is_not_a_study(user):
    project = project_with_images(user, per_class=1)
    viewer, ann = member(project, "vic", "viewer"), member(project, "ann", "labeller")
    with pytest.raises(ServiceError, match="labeller"):
        studies.study_create(project=project, name="x", readers=[viewer, ann], images="test", created_by=user)
    with pytest.raises(ServiceError, match="two readers"):
        studies.study_create(project=project, name="x", readers=[ann, ann], images="test", created_by=user)
