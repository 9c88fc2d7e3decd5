"""Data migrations, run for real: migrate back, create rows as they were, migrate forward."""
import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor


@pytest.mark.django_db(transaction=True)
def test_models_trained_before_versions_existed_become_numbered_versions(django_user_model):
    executor = MigrationExecutor(connection)
    executor.migrate([("transferapp", "0006_trust")])
    old = executor.loader.project_state([("transferapp", "0006_trust")]).apps
    owner = old.get_model("auth", "User").objects.create(username="early", password="x")
    project = old.get_model("transferapp", "Project").objects.create(owner_id=owner.pk, name="Before versions")
    run_model = old.get_model("transferapp", "TrainingRun")
    first = run_model.objects.create(project=project, base_model="efficientnet_lite0", status="succeeded")
    run_model.objects.create(project=project, base_model="efficientnet_lite0", status="failed")
    second = run_model.objects.create(project=project, base_model="efficientnet_lite0", status="succeeded")

    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())
    from transferapp.models import Project, TrainingRun
    from transferapp.training import selectors as training_selectors

    assert dict(TrainingRun.objects.filter(project_id=project.pk).values_list("pk", "version")) == {
        first.pk: 1, second.pk: 2, first.pk + 1: None}
    migrated = Project.objects.get(pk=project.pk)
    assert migrated.last_version == 2 and training_selectors.model_run(project=migrated).pk == second.pk


@pytest.mark.django_db(transaction=True)
def test_an_import_report_of_the_first_release_becomes_report_rows():
    executor = MigrationExecutor(connection)
    executor.migrate([("transferapp", "0001_initial")])
    old = executor.loader.project_state([("transferapp", "0001_initial")]).apps
    owner = old.get_model("auth", "User").objects.create(username="first", password="x")
    project = old.get_model("transferapp", "Project").objects.create(owner_id=owner.pk, name="First release")
    job = old.get_model("transferapp", "ImportJob").objects.create(
        project=project, source_name="photos.zip", status="done",
        report=[{"name": "a.png", "label": "red", "ok": True, "reason": ""},
                {"name": "b.txt", "label": "red", "ok": False, "reason": "not an image"}])

    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())
    from transferapp.models import ImportReportRow

    rows = list(ImportReportRow.objects.filter(job_id=job.pk).order_by("pk").values_list("name", "ok", "reason"))
    assert rows == [("a.png", True, ""), ("b.txt", False, "not an image")]
