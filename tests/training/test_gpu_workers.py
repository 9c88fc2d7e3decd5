"""GPU workers and jobs that can run twice: trainings go to the `gpu` queue while a GPU worker is alive
(a real rq worker registration in Redis, heartbeat and all), else to the CPU queue; a real
`manage.py gpuworker` runs each job in a spawned interpreter and the run page says where it ran; the
same training job run twice gives one consistent result."""
import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import django_rq
import pytest
from django.conf import settings
from django.urls import reverse
from django.utils import timezone
from rq import SimpleWorker
from rq.utils import utcformat

from tests.factories import project_with_images
from tests.jobs.test_failures import _database_url
from transferapp.jobs import checks
from transferapp.jobs.workers import GpuWorker
from transferapp.models import TrainingRun

pytestmark = pytest.mark.django_db(transaction=True)


def _train(client, project, **fields) -> TrainingRun:
    data = {"base_model": "efficientnet_lite0", "preset": "fast", "epochs": 1, **fields}
    response = client.post(reverse("training_start", args=[project.pk]), data)
    assert response.status_code == 302, response.content
    return TrainingRun.objects.filter(project=project).first()


def _register_gpu_worker() -> GpuWorker:
    """A GpuWorker registered on the `gpu` queue as a live one is (birth + fresh heartbeat), without
    running jobs: the test decides when it goes silent or away."""
    gpu = django_rq.get_queue("gpu")
    worker = GpuWorker([gpu], connection=gpu.connection, name=f"gpu-test-{os.getpid()}")
    worker.register_birth()
    worker.set_state("idle")  # as a real worker waiting for work is
    return worker


def _unregister(worker: GpuWorker) -> None:
    worker.register_death()
    worker.connection.delete(worker.key)


@pytest.fixture
def gpu_worker_registered(queue):
    worker = _register_gpu_worker()
    yield worker
    _unregister(worker)


def _queue_of(run: TrainingRun) -> str:
    names = [name for name in ("default", "gpu") if run.job_id in django_rq.get_queue(name).job_ids]
    assert len(names) == 1, names  # exactly one queue holds the job
    return names[0]


def test_a_training_goes_to_the_cpu_queue_when_no_gpu_worker_is_alive(alice, user, queue):
    run = _train(alice, project_with_images(user))
    assert _queue_of(run) == "default"


def test_a_training_goes_to_the_gpu_queue_while_a_gpu_worker_is_alive(alice, user, gpu_worker_registered):
    run = _train(alice, project_with_images(user))
    assert _queue_of(run) == "gpu"
    page = alice.get(run.get_absolute_url()).content.decode()
    assert "No worker is running" not in page and run.job_id in django_rq.get_queue("gpu").job_ids


def test_a_busy_gpu_worker_leaves_new_trainings_to_the_cpu_queue(alice, user, gpu_worker_registered):
    gpu_worker_registered.set_state("busy")  # hours into another training: a new one must not wait behind it
    run = _train(alice, project_with_images(user))
    assert _queue_of(run) == "default"


def test_a_gpu_worker_silent_past_its_ttl_gets_no_training_and_its_queued_ones_move_to_the_cpu(
        alice, user, gpu_worker_registered):
    run = _train(alice, project_with_images(user))
    assert _queue_of(run) == "gpu"
    silent_since = timezone.now() - timedelta(seconds=settings.GPU_WORKER_TTL_S + 61)
    gpu_worker_registered.connection.hset(gpu_worker_registered.key, "last_heartbeat", utcformat(silent_since))
    second = _train(alice, project_with_images(user, name="Second"))
    assert _queue_of(second) == "default"
    checks.run_check(run=run)  # what the reaper (or a page view) does
    assert _queue_of(run) == "default"
    run.refresh_from_db()
    assert run.status == "queued"


def test_a_gpu_worker_keeps_its_registration_short_whatever_ttl_it_is_given(queue):
    gpu = django_rq.get_queue("gpu")
    assert GpuWorker([gpu], connection=gpu.connection, worker_ttl=420).worker_ttl == settings.GPU_WORKER_TTL_S


def _gpuworker_env() -> dict:
    return {**os.environ, "DATABASE_URL": _database_url(), "REDIS_URL": settings.REDIS_URL,
            "MEDIA_ROOT": str(settings.MEDIA_ROOT), "ARTIFACTS_ROOT": str(settings.ARTIFACTS_ROOT),
            "FEATURE_CACHE_DIR": str(settings.FEATURE_CACHE_DIR), "TORCH_THREADS": "1"}


def test_a_real_gpu_worker_runs_the_job_in_a_spawned_process_and_the_page_says_where(alice, user, queue):
    registered = _register_gpu_worker()
    run = _train(alice, project_with_images(user))
    _unregister(registered)  # that machine restarts: the GPU worker below finds the run in its queue
    assert _queue_of(run) == "gpu"
    name = f"gpu-spawn-{os.getpid()}"
    command = [sys.executable, "manage.py", "gpuworker", "--allow-cpu", "--burst", "--name", name]
    process = subprocess.Popen(command, cwd=settings.BASE_DIR, env=_gpuworker_env(), start_new_session=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = process.communicate(timeout=240)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 0, output
    run.refresh_from_db()
    assert run.status == "succeeded", (run.error, output[-3000:])
    assert run.worker_name == name and run.device == "cpu: 1 threads"
    page = alice.get(run.get_absolute_url()).content.decode()
    assert f"Trained on cpu: 1 threads (worker {name})" in page


def test_gpuworker_refuses_to_start_without_a_cuda_device(queue):
    from transferapp.management.commands.gpuworker import cuda_device_name

    if cuda_device_name():
        pytest.skip("this machine has a CUDA device")
    done = subprocess.run([sys.executable, "manage.py", "gpuworker", "--burst"], cwd=settings.BASE_DIR,
                          env=_gpuworker_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "No CUDA device found" in done.stderr and "Traceback" not in done.stderr


# --- jobs that can run twice ----------------------------------------------------------------------

def _work_off(*queues):
    django_rq.get_worker(*queues, worker_class=SimpleWorker).work(burst=True)


def _outcome(run: TrainingRun) -> dict:
    run.refresh_from_db()
    meta = (Path(run.artifact_dir) / "meta.json").read_text()
    return {"status": run.status, "version": run.version, "accuracy": run.metrics["accuracy"],
            "confusion": run.metrics["confusion"], "val_keys": run.metrics["val_keys"],
            "trust": run.metrics["trust"], "meta_classes": meta.count('"classes"'),
            "model_pt": (Path(run.artifact_dir) / "model.pt").stat().st_size}


def test_a_training_job_delivered_twice_trains_once(alice, user, queue):
    run = _train(alice, project_with_images(user))
    job_args = ("transferapp.jobs.tasks.run_training", run.pk)
    _work_off("default")
    first = _outcome(run)
    finished_at = run.finished_at
    queue.enqueue(*job_args)  # the same job again (a redelivery, or a requeue that raced a live worker)
    _work_off("default")
    assert _outcome(run) == first and run.finished_at == finished_at and first["status"] == "succeeded"
    assert TrainingRun.objects.filter(project=run.project).count() == 1 and run.project.runs.get().version == 1


def test_a_training_run_again_after_its_worker_died_gives_the_same_result(alice, user, queue, settings):
    run = _train(alice, project_with_images(user, per_class=8), preset="best")
    _work_off("default")
    first = _outcome(run)
    assert first["status"] == "succeeded"
    cached = sorted(p.name for p in Path(settings.FEATURE_CACHE_DIR).rglob("*.npy"))
    # Its worker died after the work was done but before anyone heard (as a reboot mid-write would
    # leave it): the row goes back to queued with its old files in place, and the job runs again.
    TrainingRun.objects.filter(pk=run.pk).update(status="queued", version=None, metrics={}, history=[],
                                                 finished_at=None, progress=0.3)
    queue.enqueue("transferapp.jobs.tasks.run_training", run.pk, job_id=run.job_id)
    _work_off("default")
    again = _outcome(run)
    assert again == {**first, "version": 2}  # the same model and figures; a new version number, as any success
    # The features were read from the cache (keyed by image hash, base and settings), not stored twice.
    assert sorted(p.name for p in Path(settings.FEATURE_CACHE_DIR).rglob("*.npy")) == cached


# --- operations: worker and queue health for the admin -----------------------------------------

DASHBOARD = "/admin/django_rq/dashboard/"


def test_the_queue_dashboard_shows_staff_every_queue_and_its_workers(client, django_user_model, gpu_worker_registered):
    staff = django_user_model.objects.create_user("ops", password="a-long-password-3", is_staff=True, is_superuser=True)
    client.force_login(staff)
    assert client.get(DASHBOARD).status_code == 200
    pages = {}
    for index in range(len(settings.RQ_QUEUES)):
        page = client.get(f"{DASHBOARD}workers/{index}/")
        assert page.status_code == 200
        text = page.content.decode()
        pages[text.split("<title>Workers in ", 1)[1].split()[0]] = text
    assert set(pages) == {"default", "intake", "gpu"}
    assert gpu_worker_registered.name in pages["gpu"] and gpu_worker_registered.name not in pages["default"]


def test_the_queue_dashboard_is_closed_to_users_who_are_not_staff(alice, client):
    for url in (DASHBOARD, f"{DASHBOARD}workers/0/", f"{DASHBOARD}stats.json"):
        response = alice.get(url)
        assert response.status_code in (302, 401), url
        if response.status_code == 302:
            assert "/admin/login/" in response["Location"]
        assert "default" not in response.content.decode()
    client.logout()
    assert client.get(DASHBOARD).status_code == 302
