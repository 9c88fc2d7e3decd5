"""Per-user quotas (issue 13, finding 4): storage, images, projects, concurrent runs and imports.
Server-wide defaults from settings, a per-user override edited in the admin."""
import pytest
from django.urls import reverse

from tests.conftest import image_bytes
from tests.factories import member, project_with_images, upload
from tests.library.test_import import _summary, make_zip
from transferapp.library import errors
from transferapp.library import images as library_images
from transferapp.library import projects as library_projects
from transferapp.models import BatchPrediction, Image, ImportJob, Project, TrainingRun, UserQuota

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("queue")]


@pytest.fixture
def red_label(user):
    project = library_projects.project_create(owner=user, name="P")
    return library_projects.label_create(project=project, name="red")


def _upload(client, label, files):
    return client.post(reverse("label_upload", args=[label.project_id, label.pk]), {"files": files}, follow=True).content.decode()


def test_uploads_past_the_image_quota_are_refused_by_name_and_the_rest_kept(alice, red_label, settings):
    settings.QUOTA_IMAGES = 2
    files = [upload(f"{i}.png", image_bytes(shape_seed=i)) for i in range(3)]
    page = _upload(alice, red_label, files)
    assert red_label.images.count() == 2
    assert "2.png" in page and "image quota" in page and "2 images" in page
    assert "Your image quota is used up (2 images)." in page


def test_a_labeller_past_the_owners_quota_is_told_it_is_the_owners(client, red_label, settings):
    settings.QUOTA_IMAGES = 1
    labeller = member(red_label.project, "lena", "labeller")
    client.force_login(labeller)
    page = _upload(client, red_label, [upload(f"{i}.png", image_bytes(shape_seed=i)) for i in range(2)])
    assert red_label.images.count() == 1
    assert "This project&#x27;s owner has used up their image quota (1 image)." in page
    assert "Your image quota" not in page


def test_inbox_images_count_against_the_image_quota_both_ways(red_label, settings):
    settings.QUOTA_IMAGES = 2
    project = red_label.project
    for i in range(2):
        assert library_images.image_add(label=None, project=project, name=f"{i}.png", data=image_bytes(shape_seed=i)).image
    refused = library_images.image_add(label=red_label, name="2.png", data=image_bytes(shape_seed=2))
    assert refused.image is None and "image quota" in refused.error
    refused = library_images.image_add(label=None, project=project, name="3.png", data=image_bytes(shape_seed=3))
    assert refused.image is None and "image quota" in refused.error


def test_uploads_past_the_storage_quota_are_refused(alice, red_label, settings):
    first = image_bytes(size=(256, 256), shape_seed=1)
    settings.QUOTA_STORAGE_MB = 1
    UserQuota.objects.create(user=red_label.project.owner, storage_mb=0)  # 0 = unlimited for this user
    _upload(alice, red_label, [upload("a.png", first)])
    UserQuota.objects.filter(user=red_label.project.owner).update(storage_mb=1)
    Image.objects.update(size_bytes=999_000)  # as if the first image filled almost all of 1 MB
    page = _upload(alice, red_label, [upload("b.png", image_bytes(size=(256, 256), shape_seed=2))])
    assert red_label.images.count() == 1
    assert "b.png" in page and "storage quota" in page and "1 MB" in page


def test_a_stored_image_records_its_size(red_label):
    data = image_bytes(shape_seed=3)
    outcome = library_images.image_add(label=red_label, name="a.png", data=data)
    assert outcome.image.size_bytes == len(data)


def test_a_zip_import_refuses_files_past_the_quota_and_reports_the_rest(user, red_label, settings, tmp_path):
    UserQuota.objects.create(user=user, max_images=2)
    files = {f"red/{i}.png": image_bytes(shape_seed=i) for i in range(3)} | {"red/notes.txt": b"text"}
    summary = _summary(red_label.project, make_zip(files), tmp_path)
    assert summary["accepted"] == 2 and red_label.images.count() == 2
    reasons = {row["name"]: row["reason"] for row in summary["report"] if not row["ok"]}
    assert "image quota" in reasons["red/2.png"]
    assert "not an image file" in reasons["red/notes.txt"]  # the report goes on after the quota


def test_projects_past_the_quota_are_refused_with_a_message(alice, user, settings):
    settings.QUOTA_PROJECTS = 1
    alice.post(reverse("project_list"), {"name": "One"})
    page = alice.post(reverse("project_list"), {"name": "Two"}).content.decode()
    assert list(Project.objects.values_list("name", flat=True)) == ["One"]
    assert "project quota" in page and "1 project" in page


def test_concurrent_runs_past_the_quota_are_refused(alice, user, settings):
    settings.QUOTA_RUNS = 1
    project = project_with_images(user, per_class=5)
    url = reverse("training_start", args=[project.pk])
    alice.post(url, {"base_model": "efficientnet_lite0", "preset": "fast"})
    page = alice.post(url, {"base_model": "efficientnet_lite0", "preset": "fast"}, follow=True).content.decode()
    assert TrainingRun.objects.count() == 1 and "1 training" in page
    TrainingRun.objects.update(status="succeeded")
    alice.post(url, {"base_model": "efficientnet_lite0", "preset": "fast"})
    assert TrainingRun.objects.count() == 2


def test_concurrent_imports_past_the_quota_are_refused(alice, red_label, settings):
    settings.QUOTA_IMPORTS = 1
    url = reverse("import_create", args=[red_label.project_id])
    archive = make_zip({"red/a.png": image_bytes()})
    alice.post(url, {"archive": upload("one.zip", archive, "application/zip")})
    refused = alice.post(url, {"archive": upload("two.zip", archive, "application/zip")}, HTTP_X_REQUESTED_WITH="XMLHttpRequest")
    assert refused.status_code == 400 and "1 import" in refused.json()["error"]
    assert list(ImportJob.objects.values_list("source_name", flat=True)) == ["one.zip"]


def test_an_empty_override_keeps_the_default_and_zero_means_unlimited(user, settings):
    from transferapp.accounts.quotas import quota_for

    settings.QUOTA_PROJECTS, settings.QUOTA_RUNS = 7, 2
    UserQuota.objects.create(user=user, max_projects=None, max_runs=0)
    quota = quota_for(user)
    assert quota.projects == 7 and quota.runs == 0
    for i in range(3):
        TrainingRun.objects.create(project=library_projects.project_create(owner=user, name=f"P{i}"), base_model="x")
    from transferapp.accounts.quotas import run_refusal

    assert run_refusal(owner=user) == ""


def test_the_project_list_shows_usage_against_the_quota(alice, red_label, settings):
    settings.QUOTA_STORAGE_MB, settings.QUOTA_IMAGES = 10_000, 50_000
    library_images.image_add(label=red_label, name="a.png", data=image_bytes())
    page = alice.get(reverse("project_list")).content.decode()
    assert "of 10 GB" in page and "1 of 50,000 images" in page


def test_the_admin_edits_a_users_quota_on_the_user_page(client, user, django_user_model):
    root = django_user_model.objects.create_superuser("root", password="a-long-password-0")
    client.force_login(root)
    page = client.get(reverse("admin:auth_user_change", args=[user.pk])).content.decode()
    assert "quota-0-storage_mb" in page and "quota-0-max_runs" in page


def _race(monkeypatch, check_name: str, action, module=None) -> list:
    """Run `action` in two threads at once, each pausing right after its quota check until the other
    has checked too (or 2 s have passed: a check made one at a time never meets the other)."""
    import threading

    from django.db import connection

    from transferapp.accounts import quotas
    from transferapp.library import errors

    module = module or quotas
    both_checked = threading.Barrier(2, timeout=2)
    check = getattr(module, check_name)

    def check_then_wait(*args, **kwargs):
        reason = check(*args, **kwargs)
        try:
            both_checked.wait()
        except threading.BrokenBarrierError:
            pass
        return reason

    monkeypatch.setattr(module, check_name, check_then_wait)
    outcomes = []

    def run():
        try:
            outcomes.append(action())
        except errors.ServiceError as exc:
            outcomes.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return outcomes


@pytest.mark.django_db(transaction=True)
def test_two_projects_created_at_once_cannot_both_pass_the_quota(user, settings, monkeypatch):
    settings.QUOTA_PROJECTS = 1
    outcomes = _race(monkeypatch, "project_refusal", lambda: library_projects.project_create(owner=user, name="P"))
    assert Project.objects.filter(owner=user).count() == 1
    assert sum(isinstance(outcome, errors.ServiceError) for outcome in outcomes) == 1


@pytest.mark.django_db(transaction=True)
def test_two_images_stored_at_once_cannot_both_pass_the_quota(user, settings, monkeypatch):
    project = library_projects.project_create(owner=user, name="P")
    label = library_projects.label_create(project=project, name="red")
    settings.QUOTA_IMAGES = 1
    seeds = iter([1, 2])
    outcomes = _race(monkeypatch, "image_refusal",
                     lambda: library_images.image_add(label=label, name="a.png", data=image_bytes(shape_seed=next(seeds))))
    assert Image.objects.filter(project=project).count() == 1
    refused = [outcome for outcome in outcomes if outcome.error]
    assert len(refused) == 1 and "image quota" in refused[0].error
    stored = {path.name for path in (settings.MEDIA_ROOT / "projects" / str(project.pk) / "images").iterdir()}
    assert len(stored) == 1  # the refused one's file went with it


@pytest.mark.django_db(transaction=True)
def test_batches_sent_at_once_cannot_pass_the_limit_of_batches_at_once(user, settings, monkeypatch, queue):
    """Two batch predictions sent together while one is already waiting: only one more may wait."""
    from transferapp.serving import batch_runs

    project = library_projects.project_create(owner=user, name="P")
    run = TrainingRun.objects.create(project=project, base_model="efficientnet_lite0", preset="fast",
                                     status=TrainingRun.Status.SUCCEEDED, version=1, classes=["red", "blue"])
    monkeypatch.setattr(batch_runs, "BATCHES_AT_ONCE", 2)
    batch_runs.batch_create(project=project, run=run, uploads=[upload("first.png", image_bytes())], refused=[])
    outcomes = _race(monkeypatch, "_batch_refusal",
                     lambda: batch_runs.batch_create(project=project, run=run, uploads=[upload("b.png", image_bytes())],
                                                     refused=[]),
                     module=batch_runs)
    assert BatchPrediction.objects.filter(project=project).count() == 2
    refused = [outcome for outcome in outcomes if isinstance(outcome, errors.ServiceError)]
    assert len(refused) == 1 and "waiting or running" in str(refused[0])
    folders = {batch.folder for batch in BatchPrediction.objects.filter(project=project)}
    stored = {str(path) for path in (settings.MEDIA_ROOT / "batches").iterdir()}
    assert stored == folders  # the refused one's inputs went with it


@pytest.mark.django_db
def test_restoring_from_the_trash_stays_within_the_image_quota(alice, user, settings):
    """Deleted images do not count, so uploads may use their room; Undo then brings back only what fits."""
    settings.QUOTA_IMAGES = 2
    project = library_projects.project_create(owner=user, name="P")
    label = library_projects.label_create(project=project, name="red")
    first = [library_images.image_add(label=label, name=f"a{i}.png", data=image_bytes(shape_seed=i)).image for i in (1, 2)]
    alice.post(reverse("label_bulk", args=[project.pk, label.pk]), {"action": "delete", "images": [im.pk for im in first]})
    assert library_images.image_add(label=label, name="b3.png", data=image_bytes(shape_seed=3)).image is not None
    page = alice.post(reverse("images_restore", args=[project.pk]), {"images": [im.pk for im in first]}, follow=True)
    text = page.content.decode()
    assert Image.objects.filter(project=project).count() == 2
    assert "Restored 1 image" in text and "1 image not restored" in text and "image quota" in text
