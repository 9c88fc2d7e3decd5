"""Each audited event (#26) records exactly one entry, by whoever acted: the signed-in user on a
page, the token's user through the API, "worker" in a job, "operator" in a command. A refused
action records nothing."""
import io
import zipfile

import django_rq
import pytest
from django.core.management import call_command
from rq import SimpleWorker

from tests.conftest import image_bytes
from tests.factories import inbox_with_images, project_with_images, upload
from transferapp.accounts import tokens
from transferapp.jobs.workers import ActsAsWorker
from transferapp.models import AuditEntry, Image, Project, TrainingRun, Webhook

pytestmark = pytest.mark.django_db


class Recorded:
    """The entries recorded since it was made."""

    def __init__(self):
        self.since = AuditEntry.objects.order_by("-pk").values_list("pk", flat=True).first() or 0

    def all(self):
        return list(AuditEntry.objects.filter(pk__gt=self.since).order_by("pk"))

    def one(self, action):
        found = self.all()
        assert [e.action for e in found] == [action], [(e.action, e.detail) for e in found]
        return found[0]


class AuditingWorker(ActsAsWorker, SimpleWorker):
    """The app's worker's audit behaviour without its reaper (the test runs it in this process)."""


def _work_off(*queues):
    django_rq.get_worker(*(queues or ("default",)), worker_class=AuditingWorker).work(burst=True)


def test_relabelling_one_image_records_from_and_to_by_the_signed_in_user(alice, user):
    project = project_with_images(user, per_class=2)
    red, blue = project.labels.order_by("name").reverse()
    image = red.images.first()
    recorded = Recorded()
    alice.post(f"/images/{image.pk}/relabel/", {"target": blue.pk})
    entry = recorded.one("label.changed")
    assert entry.actor == "alice" and entry.actor_ref == user.pk and entry.project_ref == project.pk
    assert entry.detail["count"] == 1 and entry.detail["to"] == "blue"
    assert entry.detail["listed"] == [{"image": image.pk, "file": image.original_name, "from": "red"}]


def test_a_bulk_move_in_a_class_page_is_one_entry_naming_each_image(alice, user):
    project = project_with_images(user, per_class=3)
    red, blue = project.labels.get(name="red"), project.labels.get(name="blue")
    ids = list(red.images.values_list("pk", flat=True))
    recorded = Recorded()
    alice.post(f"/projects/{project.pk}/classes/{red.pk}/selection/", {"images": ids, "action": "move", "target": blue.pk})
    entry = recorded.one("label.changed")
    assert entry.detail["count"] == 3 and {row["image"] for row in entry.detail["listed"]} == set(ids)
    assert {row["from"] for row in entry.detail["listed"]} == {"red"}


def test_confirming_a_label_is_recorded(alice, user):
    image = project_with_images(user, per_class=1).labels.get(name="red").images.first()
    recorded = Recorded()
    alice.post(f"/images/{image.pk}/confirm/")
    assert recorded.one("label.confirmed").detail["label"] == "red"


def test_inbox_label_then_undo_record_the_way_there_and_back(alice, user):
    project = project_with_images(user, per_class=1)
    image = inbox_with_images(project, per_color=1)[0]
    recorded = Recorded()
    alice.post(f"/projects/{project.pk}/label/act/", {"action": "label", "label": "blue", "image": [image.pk]})
    assert recorded.one("label.changed").detail["listed"][0]["from"] == ""
    recorded = Recorded()
    alice.post(f"/projects/{project.pk}/label/act/", {"action": "undo", "image": [image.pk]})
    entry = recorded.one("label.changed")
    assert entry.detail["to"] == "" and entry.detail["listed"][0]["from"] == "blue"


def test_labelling_from_the_map_records_the_inbox_images(alice, user):
    project = project_with_images(user, per_class=1)
    waiting = inbox_with_images(project, per_color=2)
    recorded = Recorded()
    response = alice.post(f"/projects/{project.pk}/map/action/", {
        "images": ",".join(str(i.pk) for i in waiting), "action": "label", "target": project.labels.get(name="red").pk})
    assert response.status_code == 200
    assert recorded.one("label.changed").detail["count"] == 4


def test_an_upload_batch_is_one_entry_with_its_counts_and_names(alice, user):
    project = project_with_images(user, per_class=1)
    red = project.labels.get(name="red")
    files = [upload(f"new-{i}.png", image_bytes("red", shape_seed=50 + i)) for i in range(3)]
    files.append(upload("notes.txt", b"not an image", "text/plain"))
    recorded = Recorded()
    alice.post(f"/projects/{project.pk}/classes/{red.pk}/upload/", {"files": files})
    entry = recorded.one("images.uploaded")
    assert (entry.detail["added"], entry.detail["refused"], entry.detail["to"]) == (3, 1, "red")
    assert sorted(row["file"] for row in entry.detail["listed"]) == ["new-0.png", "new-1.png", "new-2.png"]


def test_an_upload_that_adds_nothing_records_nothing(alice, user):
    project = project_with_images(user, per_class=1)
    recorded = Recorded()
    alice.post(f"/projects/{project.pk}/inbox/upload/", {"files": [upload("notes.txt", b"no", "text/plain")]})
    assert recorded.all() == []


def test_delete_and_restore(alice, user):
    project = project_with_images(user, per_class=2)
    image = project.labels.get(name="red").images.first()
    recorded = Recorded()
    alice.post(f"/images/{image.pk}/delete/")
    assert recorded.one("images.deleted").detail["listed"] == [{"image": image.pk, "file": image.original_name, "label": "red"}]
    recorded = Recorded()
    alice.post(f"/projects/{project.pk}/images/restore/", {"images": [image.pk]})
    assert recorded.one("images.restored").detail["count"] == 1


def test_classes_and_the_project_created_renamed_deleted(alice, user):
    recorded = Recorded()
    alice.post("/projects/", {"name": "Cells"})
    project = Project.objects.get(name="Cells")
    assert recorded.one("project.created").actor == "alice"
    steps = [(f"/projects/{project.pk}/classes/new/", {"name": "ok"}, "class.created"),
             (f"/projects/{project.pk}/rename/", {"name": "Cells 2"}, "project.renamed")]
    for url, data, action in steps:
        recorded = Recorded()
        alice.post(url, data)
        recorded.one(action)
    label = project.labels.get()
    recorded = Recorded()
    alice.post(f"/projects/{project.pk}/classes/{label.pk}/rename/", {"name": "fine"})
    assert recorded.one("class.renamed").detail == {"class": label.pk, "from": "ok", "to": "fine"}
    recorded = Recorded()
    alice.post(f"/projects/{project.pk}/classes/{label.pk}/delete/", {"confirm_name": "fine"})
    recorded.one("class.deleted")
    recorded = Recorded()
    alice.post(f"/projects/{project.pk}/delete/", {"confirm_name": "Cells 2"})
    entry = recorded.one("project.deleted")
    assert not Project.objects.filter(pk=project.pk).exists() and entry.project_ref == project.pk


def test_refused_actions_record_nothing(client, alice, user, other_user):
    project = project_with_images(user, per_class=1)
    theirs = project_with_images(other_user, per_class=1, name="Theirs")
    image = project.labels.get(name="red").images.first()
    recorded = Recorded()
    assert alice.post(f"/images/{image.pk}/relabel/", {"target": theirs.labels.first().pk}).status_code == 404
    alice.post(f"/projects/{project.pk}/rename/", {"name": "   "})  # an empty name is refused
    alice.post(f"/projects/{project.pk}/classes/new/", {"name": "red"})  # a class by that name exists
    client.force_login(other_user)
    assert client.post(f"/images/{image.pk}/delete/").status_code == 404
    assert recorded.all() == [] and Image.objects.filter(pk=image.pk).exists()


def test_api_calls_refused_record_nothing(client, user, other_user):
    project = project_with_images(user, per_class=1)  # too few images to train
    _, secret = tokens.token_create(user=user, name="t")
    _, stranger = tokens.token_create(user=other_user, name="s")
    recorded = Recorded()
    bearer = {"HTTP_AUTHORIZATION": f"Bearer {secret}"}
    files = {"files": [upload("v.png", image_bytes("red", shape_seed=77))]}
    assert client.post(f"/api/v1/projects/{project.pk}/train", {}, content_type="application/json", **bearer).status_code == 409
    assert client.post(f"/api/v1/projects/{project.pk}/classes/nope/images", files, **bearer).status_code == 404
    files = {"files": [upload("v.png", image_bytes("red", shape_seed=77))]}
    assert client.post(f"/api/v1/projects/{project.pk}/classes/red/images", files,
                       HTTP_AUTHORIZATION=f"Bearer {stranger}").status_code == 404
    assert recorded.all() == []


def test_an_api_upload_with_a_personal_token_acts_as_its_user(client, user):
    project = project_with_images(user, per_class=1)
    _, secret = tokens.token_create(user=user, name="laptop")
    recorded = Recorded()
    response = client.post(f"/api/v1/projects/{project.pk}/classes/red/images",
                           {"files": [upload("api.png", image_bytes("red", shape_seed=90))]},
                           HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert response.status_code == 200, response.content
    entry = recorded.one("images.uploaded")
    assert entry.actor.startswith("alice (token ta_pt_") and entry.actor_ref == user.pk


def _zip(**classes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, n in classes.items():
            for i in range(n):
                archive.writestr(f"{name}/{name}-{i}.png", image_bytes(name, shape_seed=300 + i))
    return out.getvalue()


@pytest.mark.django_db(transaction=True)  # the import is queued when its row commits
def test_an_import_is_started_by_the_user_and_recorded_once_by_the_worker(alice, user, queue):
    project = project_with_images(user, per_class=1)
    recorded = Recorded()
    archive = upload("batch.zip", _zip(red=3, green=2), "application/zip")
    alice.post(f"/projects/{project.pk}/import/", {"archive": archive})
    assert recorded.one("import.started").actor == "alice"
    recorded = Recorded()
    _work_off("intake", "default")
    imported = [e for e in recorded.all() if e.action == "images.imported"]
    assert len(imported) == 1 and imported[0].actor == "worker"
    assert imported[0].detail["added"] == 5 and imported[0].detail["new_classes"] == ["green"]
    assert {e.action for e in recorded.all()} <= {"images.imported", "class.created"}


def test_the_import_command_acts_as_the_operator(tmp_path, user):
    (tmp_path / "red").mkdir()
    for i in range(2):
        (tmp_path / "red" / f"r{i}.png").write_bytes(image_bytes("red", shape_seed=400 + i))
    recorded = Recorded()
    call_command("import_images", str(tmp_path), user="alice", project="Cmd", stdout=io.StringIO())
    actions = [(e.action, e.actor) for e in recorded.all()]
    assert actions == [("project.created", "operator"), ("class.created", "operator"), ("images.imported", "operator")]


def test_webhooks_added_switched_and_removed(alice, user):
    project = project_with_images(user, per_class=1)
    recorded = Recorded()
    alice.post(f"/projects/{project.pk}/webhooks/add/", {"url": "https://93.184.216.34/hook", "events": ["training.finished"]})
    hook = Webhook.objects.get(project=project)
    assert recorded.one("webhook.added").detail["url"] == hook.url
    recorded = Recorded()
    alice.post(f"/webhooks/{hook.pk}/delete/")
    assert recorded.one("webhook.removed").detail["webhook"] == hook.pk


def test_training_started_and_cancelled(alice, user, queue):
    project = project_with_images(user, per_class=5)
    recorded = Recorded()
    alice.post(f"/projects/{project.pk}/train/", {"base_model": "efficientnet_lite0", "preset": "fast"})
    run = TrainingRun.objects.get(project=project)
    assert recorded.one("run.started").detail["run"] == run.pk
    recorded = Recorded()
    alice.post(f"/runs/{run.pk}/cancel/")
    assert recorded.one("run.cancelled").actor == "alice"


@pytest.mark.django_db(transaction=True)  # the run is queued when its row commits
def test_a_version_trained_through_the_api_published_exported_downloaded_and_deleted(client, alice, user, queue):
    from tests.api_support import photo_project

    project = photo_project(user)
    _, secret = tokens.token_create(user=user, name="ci")
    recorded = Recorded()
    response = client.post(f"/api/v1/projects/{project.pk}/train", {"preset": "fast"}, content_type="application/json",
                           HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert response.status_code == 202, response.content
    assert recorded.one("run.started").actor.startswith("alice (token ta_pt_")
    recorded = Recorded()
    _work_off()
    run = TrainingRun.objects.get(project=project)
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    assert [e for e in recorded.all() if e.actor != "worker"] == []  # the job's own entries, if any, are the worker's
    steps = [(f"/runs/{run.pk}/publish/", "post", "version.published"), (f"/runs/{run.pk}/export/", "post", "export.made"),
             (f"/runs/{run.pk}/export/download/", "get", "model.downloaded"),
             (f"/runs/{run.pk}/download/", "get", "model.downloaded"), (f"/runs/{run.pk}/delete/", "post", "version.deleted")]
    for url, method, action in steps:
        recorded = Recorded()
        response = getattr(alice, method)(url)
        if hasattr(response, "streaming_content"):
            b"".join(response.streaming_content)
        assert response.status_code in (200, 302), (url, response.status_code)
        entry = recorded.one(action)
        assert entry.actor == "alice" and entry.detail["run"] == run.pk, url
