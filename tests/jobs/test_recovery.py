"""Recovery and data retention: jobs that die or vanish, files that must not outlive their rows."""
import os
import signal
import socket
import subprocess
import sys
import time
import tracemalloc
import zipfile
from datetime import timedelta
from pathlib import Path

import django_rq
import pytest
from django.conf import settings
from django.core.cache import cache
from django.urls import reverse
from django.utils import timezone
from rq import SimpleWorker
from rq.timeouts import BaseDeathPenalty

from tests.conftest import image_bytes
from tests.factories import project_with_images, upload
from tests.jobs.test_failures import _wait_for, start_worker  # noqa: F401 (a fixture)
from tests.library.test_import import make_zip, messy_zip
from transferapp.jobs import progress, reaper, sweeps, tries
from transferapp.library import images as library_images
from transferapp.library import imports as library_imports
from transferapp.library import intake, trash
from transferapp.library import projects as library_projects
from transferapp.models import Image, ImportJob, Project, TrainingRun
from transferapp.storage.archive import Limits, ZipSource
from transferapp.training import selectors as training_selectors

pytestmark = pytest.mark.django_db(transaction=True)

LONG_AGO = timedelta(hours=1)


def _work_off(*queues, worker_class=SimpleWorker):
    django_rq.get_worker(*queues, worker_class=worker_class).work(burst=True)


def _start_a_worker_with_nothing_to_do():
    """A worker of the class `manage.py rqworker` uses (settings.RQ), which settles stale rows as it
    starts. It listens to an empty queue: a forking worker must not run torch jobs inside the test
    process (a forked child of a process that already ran OpenMP can hang)."""
    worker = django_rq.get_worker("default")
    empty = django_rq.get_queue("default").__class__("nothing-to-do", connection=worker.connection)
    type(worker)([empty], connection=worker.connection).work(burst=True)


def _import_zip(client, project, data: bytes, name="photos.zip") -> ImportJob:
    response = client.post(reverse("import_create", args=[project.pk]), {"archive": upload(name, data, "application/zip")})
    assert response.status_code == 302, response.content
    return ImportJob.objects.get(project=project)


def _train(client, project, **fields) -> TrainingRun:
    data = {"base_model": "efficientnet_lite0", "preset": "fast", "epochs": 1, **fields}
    response = client.post(reverse("training_start", args=[project.pk]), data)
    assert response.status_code == 302, response.content
    return TrainingRun.objects.filter(project=project).first()


# 1. Imports claim, heartbeat, expire and requeue like training runs.

def test_an_import_whose_worker_died_goes_on_as_its_next_try_after_the_files_already_reported(alice, user, queue):
    project = library_projects.project_create(owner=user, name="P")
    job = _import_zip(alice, project, messy_zip())
    # Try 1 claims it, imports and reports the zip's first 2 entries (of 9), imports the third
    # (r1.jpg) without reporting it yet, then its worker dies.
    assert tries.claim(job)
    first_try = progress.ImportReporter(job)
    with ZipSource(Path(job.upload_path), Limits()) as source:
        entries = list(source)
        summary = library_imports.import_entries(project=project, entries=entries[:2], on_progress=first_try.report)
        first_try.report(summary, force=True)
        library_imports.import_entries(project=project, entries=entries[2:3])
    assert project.images.count() == 3
    ImportJob.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - LONG_AGO)
    django_rq.get_queue("intake").empty()

    _start_a_worker_with_nothing_to_do()  # no page view: the reaper queues try 2
    job.refresh_from_db()
    assert (job.status, job.attempt, job.job_id) == ("queued", 2, f"import-{job.pk}-try-2")
    assert "Running it again (try 2 of 2)" in alice.get(job.get_absolute_url()).content.decode()
    _work_off("intake")
    job.refresh_from_db()
    # The same outcome as an import that never stopped (r1.jpg counts as imported, not as a
    # duplicate of itself), each file reported once; the zip is gone.
    assert (job.status, job.accepted, job.refused, job.skipped, job.junk, job.processed) == ("done", 3, 2, 0, 4, 9), job.error
    names = list(job.report_rows.values_list("name", flat=True))
    assert len(names) == len(set(names)) == 5 and project.images.count() == 3
    assert not Path(job.upload_path).exists() and not job.message
    with pytest.raises(progress.ImportStopped):  # the first try, were it only silent, writes nothing more
        first_try.report(summary, force=True)


def test_an_import_whose_last_try_died_is_failed_by_a_worker_keeping_its_images_and_deleting_its_zip(alice, user, queue):
    project = project_with_images(user, per_class=1)
    zip_path = Path(settings.MEDIA_ROOT) / "imports" / "dead.zip"
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    zip_path.write_bytes(messy_zip())
    job = ImportJob.objects.create(project=project, source_name="dead.zip", upload_path=str(zip_path),
                                   status="running", heartbeat_at=timezone.now() - LONG_AGO, attempt=settings.JOB_ATTEMPTS)
    _start_a_worker_with_nothing_to_do()  # no page view
    job.refresh_from_db()
    assert job.status == "failed" and "stopped responding" in job.error
    assert not zip_path.exists() and project.images.count() == 2
    page = alice.get(job.get_absolute_url()).content.decode()
    assert "stopped responding" in page and "imported before this point was kept" in page


def test_a_queued_import_whose_job_vanished_is_queued_again_and_done(alice, user, queue):
    project = library_projects.project_create(owner=user, name="P")
    job = _import_zip(alice, project, messy_zip())
    queue.connection.flushdb()  # Redis restarted without persistence
    _start_a_worker_with_nothing_to_do()
    _work_off("intake")
    job.refresh_from_db()
    assert job.status == "done" and job.accepted == 3 and not Path(job.upload_path).exists()


def test_an_import_that_is_no_longer_queued_is_not_run_again(alice, user, queue):
    project = library_projects.project_create(owner=user, name="P")
    job = _import_zip(alice, project, messy_zip())
    ImportJob.objects.filter(pk=job.pk).update(status="failed", error="Expired.")
    _work_off("intake")
    job.refresh_from_db()
    assert job.status == "failed" and job.error == "Expired." and project.images.count() == 0


def test_a_running_import_claims_its_row_and_keeps_a_heartbeat(alice, user, queue):
    project = library_projects.project_create(owner=user, name="P")
    job = _import_zip(alice, project, messy_zip())
    _work_off("intake")
    job.refresh_from_db()
    assert job.status == "done" and job.started_at and job.heartbeat_at >= job.started_at


# 2. The report grows by rows instead of being rewritten.

def test_an_import_reports_each_file_as_its_own_row_and_the_page_lists_the_skipped_ones(alice, user, queue):
    from transferapp.models import ImportReportRow

    project = library_projects.project_create(owner=user, name="P")
    job = _import_zip(alice, project, messy_zip())
    _work_off("intake")
    rows = ImportReportRow.objects.filter(job=job)
    assert rows.count() == 5 and rows.filter(ok=False).count() == 2
    page = alice.get(job.get_absolute_url()).content.decode()
    assert "notes.txt" in page and "broken.jpg" in page and "d1.jpg" not in page


# 3. A reaper in the workers settles runs without a page view.

def test_a_silent_running_run_is_queued_again_as_its_next_try_by_a_worker_without_a_page_view(alice, user, queue):
    project = project_with_images(user, per_class=5)
    run = _train(alice, project)
    silent_folder = Path(settings.ARTIFACTS_ROOT) / f"project-{project.pk}" / f"run-{run.pk}"
    (silent_folder / "stage1").mkdir(parents=True)
    TrainingRun.objects.filter(pk=run.pk).update(
        status="running", heartbeat_at=timezone.now() - LONG_AGO, progress=0.4, artifact_dir=str(silent_folder),
        metrics={"first_model_ready": True, "first_model_accuracy": 0.9}, history=[{"epoch": 1}])
    queue.empty()
    _start_a_worker_with_nothing_to_do()
    run.refresh_from_db()
    assert (run.status, run.attempt, run.job_id) == ("queued", 2, f"run-{run.pk}-try-2")
    assert "stopped responding" in run.message and "try 2 of 2" in run.message and not run.error
    # The silent try's quick model stays offered until the next try has its own.
    assert (run.progress, run.history) == (0.0, []) and run.metrics["first_model_ready"]
    assert run.artifact_dir == str(silent_folder) and silent_folder.is_dir()
    assert run in training_selectors.predictable_runs(project=project) and "waiting to run again" in run.model_choice_label
    assert queue.fetch_job(f"run-{run.pk}-try-2") is not None
    assert "try 2 of 2" in alice.get(run.get_absolute_url()).content.decode()


def test_a_silent_run_on_its_last_try_is_failed_and_one_asked_to_cancel_is_cancelled(alice, user, queue, settings):
    project = project_with_images(user, per_class=5)
    last, cancelling = _train(alice, project), _train(alice, project)
    TrainingRun.objects.filter(pk=last.pk).update(status="running", heartbeat_at=timezone.now() - LONG_AGO,
                                                  attempt=settings.JOB_ATTEMPTS)
    TrainingRun.objects.filter(pk=cancelling.pk).update(status="running", heartbeat_at=timezone.now() - LONG_AGO,
                                                        cancel_requested=True)
    queue.empty()
    _start_a_worker_with_nothing_to_do()
    last.refresh_from_db(), cancelling.refresh_from_db()
    assert last.status == "failed" and "stopped responding" in last.error and "tried 2 times" in last.error
    assert cancelling.status == "cancelled" and not cancelling.error


def test_a_run_whose_job_failed_in_rq_before_it_was_claimed_is_marked_failed(alice, user, queue):
    project = project_with_images(user, per_class=5)
    run = _train(alice, project)
    job = queue.fetch_job(run.job_id)
    queue.connection.hset(job.key, "data", b"not a pickled job")  # the worker cannot even load it
    _work_off("default")
    assert queue.fetch_job(run.job_id).get_status() == "failed"
    run.refresh_from_db()
    assert run.status == "queued"  # the row never heard of it
    _start_a_worker_with_nothing_to_do()
    run.refresh_from_db()
    assert run.status == "failed" and "could not start" in run.error


def test_the_worker_class_used_by_rqworker_and_serve_runs_the_reaper():
    from transferapp.jobs.workers import ReapingWorker

    assert isinstance(django_rq.get_worker("default"), ReapingWorker)
    assert isinstance(django_rq.get_worker("intake"), ReapingWorker)


# 4. The run trains on a consistent snapshot taken when it starts.

def test_a_class_created_after_train_is_not_an_output_of_the_model(alice, user, queue):
    project = project_with_images(user, per_class=5)
    run = _train(alice, project)
    library_projects.label_create(project=project, name="green")  # empty, created before the worker starts
    _work_off("default")
    run.refresh_from_db()
    assert run.status == "succeeded", run.error
    assert run.classes == ["blue", "red"] and run.metrics["classes"] == ["blue", "red"] and run.n_images == 10


def test_a_run_whose_classes_lost_images_before_it_started_fails_with_the_plain_reason(alice, user, queue):
    project = project_with_images(user, per_class=5)
    run = _train(alice, project)
    trash.images_delete(images=list(project.images.filter(label__name="red")[:1]))
    _work_off("default")
    run.refresh_from_db()
    assert run.status == "failed" and "“red” has 4 image(s); add at least 5" in run.error
    assert "Traceback" not in run.error and not (Path(settings.ARTIFACTS_ROOT) / f"project-{project.pk}").exists()


# 5. A file stored for a row that could not be saved is removed.

def test_an_image_that_loses_the_race_for_its_row_leaves_no_files_behind(user):
    project = project_with_images(user, per_class=1)
    winner = project.images.first()
    checked = intake.check_image(winner.file.read(), max_bytes=10**7, max_pixels=10**7)
    # The same bytes, stored by a second request that checked for duplicates before the first saved its row.
    with pytest.raises(library_images._StoredMeanwhile) as race:
        library_images._store_image(winner.project, winner.label, "again.png", checked, "")
    assert race.value.existing.pk == winner.pk
    folder = Path(settings.MEDIA_ROOT) / "projects" / str(project.pk)
    stored = {p.relative_to(settings.MEDIA_ROOT).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert stored == {name for image in project.images.all() for name in (image.file.name, image.thumbnail.name)}


# 6. An import stops when its project goes, and leaves nothing behind.

def test_an_import_stops_when_its_project_is_deleted_and_leaves_no_files(alice, user, queue, monkeypatch):
    project = library_projects.project_create(owner=user, name="P")
    files = {f"photos/{'red' if i % 2 else 'blue'}/{i}.png": image_bytes("red" if i % 2 else "blue", shape_seed=i) for i in range(12)}
    job = _import_zip(alice, project, make_zip(files))
    real_image_add, calls = library_images.image_add, []

    def image_add_then_delete_the_project(**kwargs):
        calls.append(kwargs["name"])
        if len(calls) == 3:  # the owner deletes the project while the worker imports
            alice.post(reverse("project_delete", args=[project.pk]), {"confirm_name": project.name})
        return real_image_add(**kwargs)

    monkeypatch.setattr(library_images, "image_add", image_add_then_delete_the_project)
    _work_off("intake")
    assert len(calls) <= 4, calls
    assert not Project.objects.filter(pk=project.pk).exists() and not Image.objects.exists()
    assert not (Path(settings.MEDIA_ROOT) / "projects" / str(project.pk)).exists()
    assert not Path(job.upload_path).exists()


def test_deleting_a_project_with_a_queued_import_removes_the_uploaded_zip(alice, user, queue):
    project = library_projects.project_create(owner=user, name="P")
    job = _import_zip(alice, project, messy_zip())
    alice.post(reverse("project_delete", args=[project.pk]), {"confirm_name": project.name})
    assert not Path(job.upload_path).exists()
    _work_off("intake")  # the job finds no row and does nothing
    assert not (Path(settings.MEDIA_ROOT) / "projects" / str(project.pk)).exists()


# 7. Cached features go when no image has those bytes any more.

def _cache_entries_for(image: Image) -> list[Path]:
    return list(Path(settings.FEATURE_CACHE_DIR).rglob(f"{image.sha256}.*.npy"))


def _fake_cache_entries(images):
    for image in images:
        for base in ("efficientnet_lite0-0123456789ab", "resnet18-ba9876543210"):
            for view in ("orig", "flip"):
                path = Path(settings.FEATURE_CACHE_DIR) / base / image.sha256[:2] / f"{image.sha256}.{view}.npy"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(b"features")


def test_deleting_images_classes_and_projects_removes_their_cached_features_unless_still_used(alice, user):
    mine = project_with_images(user, per_class=2, name="Mine")
    shared = project_with_images(user, classes=("red",), per_class=1, name="Shares red-0")
    images = {(image.project_id, image.original_name): image for image in Image.objects.all()}
    _fake_cache_entries(images.values())
    only_mine = images[(mine.pk, "blue-1.png")]
    alice.post(reverse("image_delete", args=[only_mine.pk]))
    assert len(_cache_entries_for(only_mine)) == 4  # in the trash: "Undo" may still bring it back
    Image.all_objects.filter(pk=only_mine.pk).update(deleted_at=timezone.now() - timedelta(days=1))
    reaper.sweep()  # the undo window has passed: a worker purges it without anyone visiting
    assert not _cache_entries_for(only_mine)
    assert not Image.all_objects.filter(pk=only_mine.pk).exists()
    same_bytes = images[(mine.pk, "red-0.png")]
    alice.post(reverse("label_delete", args=[mine.pk, same_bytes.label_id]), {"confirm_name": "red"})
    assert len(_cache_entries_for(same_bytes)) == 4  # the other project still has these bytes
    assert not _cache_entries_for(images[(mine.pk, "red-1.png")])
    alice.post(reverse("project_delete", args=[shared.pk]), {"confirm_name": shared.name})
    assert not _cache_entries_for(same_bytes)
    assert len(_cache_entries_for(images[(mine.pk, "blue-0.png")])) == 4


# 8. The cache has its own Redis database.

def test_clearing_the_cache_leaves_queued_jobs_in_place(alice, user, queue):
    project = project_with_images(user, per_class=5)
    run = _train(alice, project)
    cache.set("something", 1)
    cache.clear()
    assert queue.job_ids == [run.job_id]


@pytest.mark.parametrize("queue_url, cache_url", [
    ("redis://redis:6379/0", "redis://redis:6379/1"),
    ("redis://:secret@redis:6379", "redis://:secret@redis:6379/1"),
    ("rediss://redis:6380/4", "rediss://redis:6380/5"),
    ("unix:///data/redis.sock", "unix:///data/redis.sock?db=1"),
    ("unix:///data/redis.sock?db=2", "unix:///data/redis.sock?db=3"),
])
def test_the_cache_uses_the_next_redis_database_after_the_queues(queue_url, cache_url):
    from transferapp.settings import next_redis_database

    assert next_redis_database(queue_url) == cache_url


# 9. A model download is streamed.

def _fake_artifact(run: TrainingRun, weights_mb: int) -> Path:
    folder = Path(settings.ARTIFACTS_ROOT) / f"project-{run.project_id}" / f"run-{run.pk}"
    folder.mkdir(parents=True)
    (folder / "meta.json").write_text('{"classes": ["blue", "red"]}')
    (folder / "model.pt").write_bytes(os.urandom(weights_mb * 1024 * 1024))
    TrainingRun.objects.filter(pk=run.pk).update(status="succeeded", artifact_dir=str(folder))
    return folder


def test_the_owner_downloads_the_model_as_a_streamed_zip_and_others_get_404(alice, user, other_user, client, queue, tmp_path):
    project = project_with_images(user, per_class=5)
    run = _train(alice, project)
    folder = _fake_artifact(run, weights_mb=24)
    tracemalloc.start()
    response = alice.get(reverse("run_download", args=[run.pk]))
    with open(tmp_path / "download.zip", "wb") as saved:  # as a browser saves it, chunk by chunk
        for chunk in response.streaming_content:
            saved.write(chunk)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert response.status_code == 200 and response.streaming
    assert response["Content-Disposition"] == f'attachment; filename="colours-run-{run.pk}.zip"'
    with zipfile.ZipFile(tmp_path / "download.zip") as archive:
        assert archive.read(f"colours-run-{run.pk}/meta.json") == (folder / "meta.json").read_bytes()
        assert archive.read(f"colours-run-{run.pk}/model.pt") == (folder / "model.pt").read_bytes()
    assert peak < 8 * 1024 * 1024, peak  # the weights are 24 MB: never whole in memory
    client.force_login(other_user)
    assert client.get(reverse("run_download", args=[run.pk])).status_code == 404


# 10. A cancelled run keeps its quick first model.

def test_a_run_cancelled_after_its_first_model_keeps_it_for_predictions(alice, user, start_worker):  # noqa: F811
    start_worker()
    project = project_with_images(user, classes=("red", "blue"), per_class=30, size=(96, 96))
    alice.post(reverse("training_start", args=[project.pk]),
               {"base_model": "efficientnet_lite0", "preset": "best", "epochs": 60, "time_budget_minutes": 30})
    run = TrainingRun.objects.get(project=project)
    _wait_for(run, lambda r: r.metrics.get("first_model_ready"))
    alice.post(reverse("run_cancel", args=[run.pk]))
    run = _wait_for(run, lambda r: r.is_finished)
    assert run.status == "cancelled"
    accuracy = round(100 * run.metrics["first_model_accuracy"])
    page = alice.get(run.get_absolute_url()).content.decode()
    assert f"Cancelled - the quick first model ({accuracy}%) was kept and can be used for predictions" in page
    assert f'<option value="{run.pk}"' in alice.get(reverse("predict", args=[project.pk])).content.decode()
    prediction = alice.post(reverse("predict", args=[project.pk]),
                            {"run": run.pk, "files": [upload("x.png", image_bytes("blue", (96, 96), shape_seed=3))]},
                            HTTP_X_REQUESTED_WITH="XMLHttpRequest")
    assert prediction.status_code == 200 and 'class="top-class"' in prediction.content.decode()


# 11. `dev.py run` stops everything it started.

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(pid: int) -> set[int]:
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.mark.django_db(transaction=False)
@pytest.mark.parametrize("command, signum", [
    (["dev.py", "run"], signal.SIGTERM),
    (["manage.py", "serve"], signal.SIGINT),
], ids=["dev.py run, SIGTERM", "manage.py serve, SIGINT"])
def test_the_server_stops_every_process_it_started_when_signalled(tmp_path, command, signum):
    port = _free_port()
    env = {key: value for key, value in os.environ.items() if key not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")}
    env.update(DATA_DIR=str(tmp_path / "data"), TORCH_THREADS="1", LOCAL_MODE="1")
    parent = subprocess.Popen([sys.executable, *command, "--port", str(port)], cwd=settings.BASE_DIR, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not _answers(port):
            assert time.monotonic() < deadline and parent.poll() is None, "dev.py run never answered"
            time.sleep(0.5)
        time.sleep(2)  # the workers start beside the web server
        children = _descendants(parent.pid)
        redis_socket = tmp_path / "data" / "redis.sock"
        assert len(children) >= 4 and redis_socket.exists()  # serve, gunicorn, two workers (+ their helpers)
        started = time.monotonic()
        parent.send_signal(signum)
        parent.wait(timeout=60)
        while any(_alive(pid) for pid in children) and time.monotonic() - started < 60:
            time.sleep(0.2)
        assert not [pid for pid in children if _alive(pid)]
        assert not _answers(port)
        assert not redis_socket.exists() or not _unix_socket_answers(redis_socket)
    finally:
        if parent.poll() is None:
            os.killpg(parent.pid, signal.SIGKILL)
        for pid in _descendants(parent.pid):
            os.kill(pid, signal.SIGKILL)


def _unix_socket_answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(str(path))
            return True
        except OSError:
            return False


@pytest.mark.django_db
def test_a_run_that_failed_after_its_first_model_still_offers_that_model(alice, user):
    from transferapp.training import selectors as training_selectors

    project = project_with_images(user, per_class=5)
    failed = TrainingRun.objects.create(project=project, base_model="efficientnet_lite0", status="failed",
                                        error="The worker stopped responding.",
                                        metrics={"first_model_ready": True, "first_model_accuracy": 0.8})
    TrainingRun.objects.create(project=project, base_model="efficientnet_lite0", status="failed", error="Out of memory.")
    assert list(training_selectors.predictable_runs(project=project)) == [failed]
    page = alice.get(failed.get_absolute_url()).content.decode()
    assert "Predict with the quick first model" in page and "can still be used for predictions" in page


@pytest.mark.django_db
def test_the_predict_page_names_a_failed_runs_quick_model_and_offers_no_batch_without_a_version(alice, user):
    project = project_with_images(user, per_class=5)
    failed = TrainingRun.objects.create(project=project, base_model="efficientnet_lite0", status="failed",
                                        metrics={"first_model_ready": True, "first_model_accuracy": 0.8})
    page = alice.get(reverse("predict", args=[project.pk])).content.decode()
    assert f"Run #{failed.pk} · efficientnet_lite0 · quick first model (run failed) · 80% accuracy" in page
    assert 'id="batch-predict"' not in page  # a batch uses a trained version; there is none yet


# 12. A model folder no run refers to (a try killed with its worker wrote it) leaves the disk.

def _model_folder(project, name: str, age_s: float = 0) -> Path:
    folder = Path(settings.ARTIFACTS_ROOT) / f"project-{project.pk}" / name
    folder.mkdir(parents=True)
    (folder / "model.pt").write_bytes(b"weights")
    then = time.time() - age_s
    for path in (folder / "model.pt", folder):
        os.utime(path, (then, then))
    return folder


def test_the_sweep_removes_old_model_folders_that_no_run_refers_to(user):
    project = project_with_images(user, per_class=1)
    done = TrainingRun.objects.create(project=project, status="succeeded", attempt=2)
    kept = _model_folder(project, f"run-{done.pk}-try-2", age_s=7200)
    TrainingRun.objects.filter(pk=done.pk).update(artifact_dir=str(kept))
    orphan = _model_folder(project, f"run-{done.pk}", age_s=7200)  # its try 1, killed with its worker
    of_a_deleted_run = _model_folder(project, "run-999999", age_s=7200)
    just_written = _model_folder(project, "run-999998")  # the row may not say so yet
    running = TrainingRun.objects.create(project=project, status="running", attempt=2)
    earlier_try = _model_folder(project, f"run-{running.pk}", age_s=7200)  # a running run's: never
    assert sweeps.model_folders_sweep() == 2
    assert not orphan.exists() and not of_a_deleted_run.exists()
    assert kept.is_dir() and just_written.is_dir() and earlier_try.is_dir()


# 13. rq's time limit is named as such, not taken for a lack of memory.

def test_a_training_stopped_at_its_time_limit_says_so(alice, user, queue):
    project = project_with_images(user, classes=("red", "blue"), per_class=30, size=(96, 96))
    run = _train(alice, project, preset="best", epochs=60, time_budget_minutes=30)
    job = queue.fetch_job(run.job_id)
    job.timeout = 3  # as if TRAINING_TIMEOUT_S were 3 s
    job.save()
    _work_off("default")
    run.refresh_from_db()
    assert run.status == "failed"
    assert run.error.startswith("The training stopped at the time limit (TRAINING_TIMEOUT_S = 3 s)"), run.error
    assert "memory" not in run.error


class _SilencedAlarm(BaseDeathPenalty):
    """rq's time-limit alarm as it is when a library's catch-all swallowed it: it never arrives."""

    def setup_death_penalty(self):
        pass

    def cancel_death_penalty(self):
        pass


class _WorkerWhoseAlarmIsSwallowed(SimpleWorker):
    death_penalty_class = _SilencedAlarm


def test_a_training_whose_time_limit_alarm_was_swallowed_still_stops_and_fails(alice, user, queue):
    project = project_with_images(user, classes=("red", "blue"), per_class=30, size=(96, 96))
    run = _train(alice, project, preset="best", epochs=60, time_budget_minutes=30)
    job = queue.fetch_job(run.job_id)
    job.timeout = 3
    job.save()
    _work_off("default", worker_class=_WorkerWhoseAlarmIsSwallowed)
    run.refresh_from_db()
    assert run.status == "failed"
    assert run.error.startswith("The training stopped at the time limit (TRAINING_TIMEOUT_S = 3 s)"), run.error
