import json

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from tests.conftest import image_bytes
from tests.factories import inbox_with_images, project_with_images, upload
from tests.library.test_reviews import make_prediction
from transferapp.accounts import api_keys, tokens
from transferapp.library import images as library_images
from transferapp.library import projects as library_projects
from transferapp.models import (
    BatchPrediction,
    Image,
    ImportJob,
    Label,
    Membership,
    Project,
    ReadingStudy,
    StudyImage,
    TrainingRun,
    Webhook,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("queue")]


def test_it_signs_up_and_lands_on_projects(client):
    response = client.post(
        reverse("signup"), {"username": "bio", "password1": "a-long-password-9", "password2": "a-long-password-9"}
    )
    assert response.status_code == 302
    assert client.get(reverse("project_list")).status_code == 200


def test_it_logs_in_and_out(client, user):
    response = client.post(reverse("login"), {"username": "alice", "password": "a-long-password-1"})
    assert response.status_code == 302
    assert client.get(reverse("project_list")).status_code == 200
    client.post(reverse("logout"))
    assert client.get(reverse("project_list")).status_code == 302


def test_it_requires_login(client):
    response = client.get(reverse("project_list"))
    assert response.status_code == 302 and reverse("login") in response["Location"]


def test_it_creates_renames_and_deletes_a_project(alice, user):
    response = alice.post(reverse("project_list"), {"name": "Cracks"})
    project = Project.objects.get(owner=user)
    assert response["Location"] == project.get_absolute_url()
    alice.post(reverse("project_rename", args=[project.pk]), {"name": "Brick cracks"})
    project.refresh_from_db()
    assert project.name == "Brick cracks"
    page = alice.get(project.get_absolute_url())
    assert b"Brick cracks" in page.content and b"EfficientNet" in page.content
    alice.post(reverse("project_delete", args=[project.pk]), {"confirm_name": "Brick cracks"})
    assert not Project.objects.exists()


def test_it_refuses_an_empty_project_name(alice):
    response = alice.post(reverse("project_list"), {"name": "   "})
    assert response.status_code == 200
    assert not Project.objects.exists()


def test_it_adds_renames_and_deletes_classes(alice, user):
    project = library_projects.project_create(owner=user, name="P")
    alice.post(reverse("label_create", args=[project.pk]), {"name": "daisy"})
    label = Label.objects.get(project=project)
    response = alice.post(reverse("label_create", args=[project.pk]), {"name": "Daisy"}, follow=True)
    assert "already a class" in response.content.decode()
    alice.post(reverse("label_rename", args=[project.pk, label.pk]), {"name": "roses"})
    label.refresh_from_db()
    assert label.name == "roses"
    alice.post(reverse("label_delete", args=[project.pk, label.pk]), {"confirm_name": "roses"})
    assert not Label.objects.exists()


def test_it_uploads_many_files_without_javascript_and_reports_bad_ones(alice, user):
    project = library_projects.project_create(owner=user, name="P")
    label = library_projects.label_create(project=project, name="red")
    files = [
        upload("a.png", image_bytes("red", shape_seed=1)),
        upload("b.jpg", image_bytes("red", fmt="JPEG", shape_seed=2)),
        upload("notes.png", b"this is text, not a picture"),
        upload("empty.jpg", b""),
    ]
    response = alice.post(reverse("label_upload", args=[project.pk, label.pk]), {"files": files}, follow=True)
    text = response.content.decode()
    assert Image.objects.filter(label=label).count() == 2
    assert "2 added, 2 refused" in text
    assert "notes.png" in text and "not an image file" in text
    assert "empty.jpg" in text and "empty" in text


def test_it_uploads_one_file_per_script_request_and_answers_json(alice, user):
    project = library_projects.project_create(owner=user, name="P")
    label = library_projects.label_create(project=project, name="red")
    url = reverse("label_upload", args=[project.pk, label.pk])
    ok = alice.post(url, {"files": [upload("a.png", image_bytes())]}, HTTP_X_REQUESTED_WITH="XMLHttpRequest")
    assert ok.status_code == 200
    image = Image.objects.get()
    assert json.loads(ok.content)["images"][0]["id"] == image.pk
    again = alice.post(url, {"files": [upload("copy.png", image_bytes())]}, HTTP_X_REQUESTED_WITH="XMLHttpRequest")
    assert again.status_code == 200  # a harmless duplicate is skipped, not an error
    assert "Already in this class" in json.loads(again.content)["files"][0]["reason"]


def test_it_flags_the_same_image_in_two_classes(user):
    project = library_projects.project_create(owner=user, name="P")
    red = library_projects.label_create(project=project, name="red")
    blue = library_projects.label_create(project=project, name="blue")
    library_images.image_add(label=red, name="x.png", data=image_bytes())
    outcome = library_images.image_add(label=blue, name="y.png", data=image_bytes())
    assert outcome.image is None and "already in class “red”" in outcome.error


def test_it_shows_the_class_grid_with_thumbnails_and_deletes_an_image(alice, user):
    project = project_with_images(user, classes=("red",), per_class=2)
    label = project.labels.get()
    page = alice.get(label.get_absolute_url())
    assert page.content.decode().count('<figure class="thumb') == 2
    image = label.images.first()
    thumb = alice.get(reverse("image_thumbnail", args=[image.pk]))
    assert thumb.status_code == 200 and b"".join(thumb.streaming_content)[:2] == b"\xff\xd8"
    alice.post(reverse("image_delete", args=[image.pk]))
    assert label.images.count() == 1


def test_the_grid_partial_renders_alone_for_htmx(alice, user):
    project = project_with_images(user, classes=("red",), per_class=1)
    label = project.labels.get()
    response = alice.get(label.get_absolute_url(), HTTP_HX_REQUEST="true")
    assert response.content.decode().lstrip().startswith('<section id="image-grid"')


def test_it_refuses_to_train_with_too_little_data(alice, user, queue):
    project = project_with_images(user, classes=("red", "blue"), per_class=3)
    response = alice.post(reverse("training_start", args=[project.pk]), {"base_model": "efficientnet_lite0", "preset": "fast"}, follow=True)
    assert "add at least 5" in response.content.decode()
    assert not TrainingRun.objects.exists()
    assert queue.count == 0


def test_it_queues_a_run_after_the_transaction_commits(alice, user, queue, django_capture_on_commit_callbacks):
    project = project_with_images(user, per_class=5)
    with django_capture_on_commit_callbacks(execute=True):
        response = alice.post(reverse("training_start", args=[project.pk]), {"base_model": "efficientnet_lite0", "preset": "fast"})
    run = TrainingRun.objects.get()
    assert response["Location"] == run.get_absolute_url()
    assert run.status == "queued" and run.classes == ["blue", "red"]
    assert queue.job_ids == [run.job_id]


def test_the_run_page_shows_progress_and_stops_polling_when_done(alice, user):
    project = project_with_images(user, per_class=5)
    run = TrainingRun.objects.create(project=project, base_model="efficientnet_lite0", status="running", progress=0.42)
    page = alice.get(run.get_absolute_url()).content.decode()
    assert "width: 42%" in page and 'hx-trigger="every 2s"' in page
    TrainingRun.objects.filter(pk=run.pk).update(status="failed", error="The weights file is missing.")
    live = alice.get(run.get_absolute_url() + "?live=1", HTTP_HX_REQUEST="true")
    assert live.status_code == 286 and live["HX-Refresh"] == "true"
    assert 'id="run-status" hx-swap-oob="true">Failed' in live.content.decode()  # the header badge follows
    assert "The weights file is missing." in alice.get(run.get_absolute_url()).content.decode()


def test_a_stale_running_run_on_its_last_try_is_marked_failed(alice, user, settings):
    from datetime import timedelta

    from django.utils import timezone

    project = project_with_images(user, per_class=5)
    run = TrainingRun.objects.create(
        project=project, base_model="efficientnet_lite0", status="running", heartbeat_at=timezone.now() - timedelta(hours=1),
        attempt=settings.JOB_ATTEMPTS,  # an earlier try is run again instead: tests/jobs/test_recovery.py
    )
    page = alice.get(run.get_absolute_url()).content.decode()
    run.refresh_from_db()
    assert run.status == "failed" and "stopped responding" in page


def test_cancelling_a_queued_run_stops_it_at_once(alice, user):
    project = project_with_images(user, per_class=5)
    run = TrainingRun.objects.create(project=project, base_model="efficientnet_lite0")
    alice.post(reverse("run_cancel", args=[run.pk]))
    run.refresh_from_db()
    assert run.status == "cancelled"


def test_the_results_page_shows_metrics_confusion_and_mistakes(alice, user):
    project = project_with_images(user, per_class=5)
    wrong = project.images.filter(label__name="red").first()
    metrics = {
        "accuracy": 0.9, "n_train": 8, "n_val": 2, "classes": ["blue", "red"], "seconds": 3.2,
        "per_class": {"blue": {"precision": 1.0, "recall": 0.5, "f1": 0.67, "support": 2}},
        "confusion": [[1, 1], [0, 1]], "chosen_stage": "head", "chosen_reason": "The first model was better.",
        "depth": {"first_trained_stage": 0, "stages": 9, "why": "The pretrained features separate your classes poorly."},
        "mistakes": [{"key": str(wrong.pk), "true": "red", "predicted": "blue", "confidence": 0.77}],
        "history": [{"stage": "head", "epoch": 1, "train_loss": 0.5, "val_loss": 0.6, "train_accuracy": 0.8, "val_accuracy": 0.9}],
        "learning_curve": {"fractions": [0.5, 1.0], "n_train": [4, 8], "accuracy": [0.7, 0.9],
                           "per_class": {"blue": [0.5, 1.0], "red": [0.9, 0.8]},
                           "verdict": "Accuracy is still rising: more images of “blue” would help most."},
    }
    run = TrainingRun.objects.create(project=project, base_model="efficientnet_lite0", status="succeeded", metrics=metrics, history=metrics["history"])
    page = alice.get(run.get_absolute_url()).content.decode()
    assert "90%" in page and 'id="confusion-matrix"' in page
    assert reverse("image_thumbnail", args=[wrong.pk]) in page and "77%" in page
    assert "The first model was better." in page and "<polyline" in page
    assert "How deep it trained:</strong> The pretrained features separate your classes poorly." in page
    assert "Will more images help?" in page and "more images of “blue” would help most" in page


PUBLIC_URL_NAMES = {"home", "signup", "login", "logout", "healthz", "oidc_authentication_init", "oidc_authentication_callback"}
# Each user's own things (their projects, their API tokens): checked separately.
OWN_LIST_URL_NAMES = {"project_list", "token_list", "token_create"}


def _object_ids(project):
    label = project.labels.first()
    run = TrainingRun.objects.create(project=project, base_model="efficientnet_lite0", status="succeeded")
    job = ImportJob.objects.create(project=project, source_name="x.zip")
    key, _ = api_keys.api_key_create(project=project)
    batch = BatchPrediction.objects.create(project=project, run=run, source_name="x.zip", folder="/nonexistent")
    prediction = make_prediction(project, audit=True)
    webhook = Webhook.objects.create(project=project, url="https://hooks.example.com/x", events=["training.finished"],
                                     secret="whsec_dGVzdA==")
    study = ReadingStudy.objects.create(project=project, name="Second look", classes=[label.name])  # #26
    item = StudyImage.objects.create(study=study, image=label.images.first(), position=0)
    token, _ = tokens.token_create(user=project.owner)
    return {
        "accounts/tokens/": {"pk": token.pk},
        "projects/<int:project_pk>/classes/": {"project_pk": project.pk, "pk": label.pk},
        "projects/": {"pk": project.pk, "image_pk": inbox_with_images(project, colors=("red",), per_color=1)[0].pk,
                      "member_pk": Membership.objects.create(project=project, role="viewer",
                                                             user=get_user_model().objects.create_user("ids-member")).pk},
        "images/": {"pk": label.images.first().pk},
        "runs/": {"pk": run.pk, "image_pk": label.images.first().pk, "digest": "0" * 64, "class_index": 0},
        "imports/": {"pk": job.pk},
        "api-keys/": {"pk": key.pk},
        "batches/": {"pk": batch.pk},
        "predictions/": {"pk": prediction.pk},
        "webhooks/": {"pk": webhook.pk},
        "studies/": {"sid": study.pk, "pk": study.pk, "item_pk": item.pk},
    }


def _all_urls(project):
    """Every URL of the app (walked from urls.py, so a new page cannot be forgotten), with
    the given project's ids filled in."""
    from transferapp.urls import urlpatterns

    ids = _object_ids(project)
    urls = []
    for pattern in urlpatterns:
        name = getattr(pattern, "name", None)  # the admin (staff only) is a resolver without one
        if name in PUBLIC_URL_NAMES | OWN_LIST_URL_NAMES or not name:
            continue
        prefix = next((p for p in ids if str(pattern.pattern).startswith(p)), None)
        assert prefix is not None, f"no ids known for {pattern.pattern}: extend _object_ids"
        kwargs = {key: value for key, value in ids[prefix].items() if key in pattern.pattern.converters}
        urls.append(reverse(pattern.name, kwargs=kwargs))
    assert len(urls) >= 19
    return urls


def test_another_user_gets_404_everywhere(client, user, other_user):
    project = project_with_images(user, per_class=1)
    client.force_login(other_user)
    for url in _all_urls(project):
        assert client.get(url).status_code in (404, 405), url
        assert client.post(url).status_code == 404, url
    assert Project.objects.filter(pk=project.pk).exists() and project.images.count() == 2
    assert project.name not in client.get(reverse("project_list")).content.decode()


def test_anonymous_users_are_sent_to_login_everywhere(client, user):
    project = project_with_images(user, per_class=1)
    for url in _all_urls(project):
        response = client.get(url)
        assert response.status_code == 302 and "/accounts/login/" in response["Location"], url


def test_sign_in_is_refused_after_too_many_failures(client, user, settings):
    settings.LOGIN_ATTEMPTS_LIMIT = 3
    from django.core.cache import cache

    cache.clear()
    for _ in range(3):
        assert client.post(reverse("login"), {"username": "alice", "password": "wrong"}).status_code == 200
    blocked = client.post(reverse("login"), {"username": "alice", "password": "a-long-password-1"})
    assert blocked.status_code == 429 and "Too many failed sign-in attempts" in blocked.content.decode()
    cache.clear()


def test_selected_images_move_to_another_class_or_are_deleted(alice, user):
    project = project_with_images(user, classes=("red", "blue"), per_class=5)
    red, blue = project.labels.get(name="red"), project.labels.get(name="blue")
    chosen = list(red.images.values_list("pk", flat=True)[:3])
    url = reverse("label_bulk", args=[project.pk, red.pk])
    alice.post(url, {"images": chosen[:2], "action": "move", "target": blue.pk})
    assert red.images.count() == 3 and blue.images.count() == 7
    alice.post(url, {"images": chosen[2:], "action": "delete"})
    assert red.images.count() == 2


def test_a_selection_cannot_reach_other_users_images_or_classes(client, user, other_user):
    mine = project_with_images(user, classes=("red", "blue"), per_class=5)
    theirs = project_with_images(other_user, classes=("green", "blue"), per_class=5, name="Theirs")
    client.force_login(other_user)
    own_label = theirs.labels.get(name="green")
    victim_ids = list(mine.images.values_list("pk", flat=True))
    client.post(reverse("label_bulk", args=[theirs.pk, own_label.pk]), {"images": victim_ids, "action": "delete"})
    target = mine.labels.get(name="blue")
    own_ids = list(own_label.images.values_list("pk", flat=True))
    response = client.post(reverse("label_bulk", args=[theirs.pk, own_label.pk]), {"images": own_ids, "action": "move", "target": target.pk})
    assert response.status_code == 404
    assert mine.images.count() == 10 and own_label.images.count() == 5


def test_an_oversized_upload_is_refused_by_name_and_the_rest_kept(alice, user, settings):
    settings.MAX_UPLOAD_MB = 1
    project = library_projects.project_create(owner=user, name="P")
    label = library_projects.label_create(project=project, name="red")
    files = [upload("huge.png", b"\x89PNG" + b"0" * 2_000_000), upload("ok.png", image_bytes())]
    page = alice.post(reverse("label_upload", args=[project.pk, label.pk]), {"files": files}, follow=True).content.decode()
    assert "huge.png" in page and "the limit is 1 MB" in page
    assert list(label.images.values_list("original_name", flat=True)) == ["ok.png"]


def test_a_run_is_marked_failed_when_the_queue_cannot_be_reached(alice, user, monkeypatch, django_capture_on_commit_callbacks):
    import django_rq
    from redis import Redis
    from rq import Queue

    unreachable = Queue("default", connection=Redis(host="127.0.0.1", port=1, socket_connect_timeout=1))
    monkeypatch.setattr(django_rq, "get_queue", lambda *args, **kwargs: unreachable)
    project = project_with_images(user, per_class=5)
    with django_capture_on_commit_callbacks(execute=True):
        alice.post(reverse("training_start", args=[project.pk]), {"base_model": "efficientnet_lite0", "preset": "fast"})
    run = TrainingRun.objects.get()
    assert run.status == "failed" and "could not be reached" in run.error


def test_sign_up_can_be_closed_by_the_administrator(client, settings):
    settings.ALLOW_SIGNUP = False
    response = client.post(reverse("signup"), {"username": "x", "password1": "a-long-password-9", "password2": "a-long-password-9"})
    assert response.status_code == 403 and "Sign-up is closed" in response.content.decode()
    assert not get_user_model().objects.filter(username="x").exists()
    assert "Create an account" not in client.get(reverse("login")).content.decode()


def test_the_fine_tuning_depth_is_a_setting_and_nonsense_is_refused(alice, user):
    project = project_with_images(user, per_class=5)
    form = alice.get(reverse("project_detail", args=[project.pk])).content.decode()
    assert '<select name="depth">' in form and 'value="all"' in form
    url = reverse("training_start", args=[project.pk])
    response = alice.post(url, {"base_model": "efficientnet_lite0", "preset": "best", "depth": "all"})
    assert response.status_code == 302
    assert TrainingRun.objects.get(project=project).config["depth"] == "all"
    refused = alice.post(url, {"base_model": "efficientnet_lite0", "preset": "best", "depth": "deepest"}, follow=True)
    assert TrainingRun.objects.filter(project=project).count() == 1
    assert "Check the training settings" in refused.content.decode()
    # Naming how many top blocks to train means training those, not letting "auto" decide.
    alice.post(url, {"base_model": "efficientnet_lite0", "preset": "best", "unfrozen_blocks": 2})
    config = TrainingRun.objects.filter(project=project).latest("pk").config
    assert (config["unfrozen_blocks"], config["depth"]) == (2, "top")


def test_an_every_layer_run_lists_no_top_block_count_and_its_note_says_no_flips_when_mirroring_is_off(alice, user):
    from transferapp.reporting import charts
    assert "Unfrozen top blocks (when only the top is fine-tuned)" in dict(charts.settings_rows({"depth": "auto", "unfrozen_blocks": 3}))
    assert not any(label.startswith("Unfrozen") for label, _ in charts.settings_rows({"depth": "all", "unfrozen_blocks": 3}))
    project = project_with_images(user, per_class=5)
    history = [{"stage": "head", "epoch": 1, "train_loss": 0.5, "val_loss": 0.6, "train_accuracy": 0.8, "val_accuracy": 0.9},
               {"stage": "finetune", "epoch": 1, "train_loss": 0.7, "val_loss": 0.5, "train_accuracy": 0.7, "val_accuracy": 0.9}]
    metrics = {"accuracy": 0.9, "n_train": 8, "n_val": 2, "classes": ["blue", "red"], "chosen_stage": "finetune",
               "history": history, "depth": {"first_trained_stage": 0, "stages": 9, "why": "Every layer."}}
    for no_mirroring, note in ((False, "fine-tune every layer on randomly cropped and flipped images"),
                               (True, "fine-tune every layer on randomly cropped images")):
        run = TrainingRun.objects.create(project=project, base_model="efficientnet_lite0", status="succeeded",
                                         metrics=metrics, history=history, config={"no_mirroring": no_mirroring, "depth": "all"})
        assert note in alice.get(run.get_absolute_url()).content.decode()
