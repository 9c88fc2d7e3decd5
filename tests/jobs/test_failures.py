"""Failures with a real worker process: killed mid-training, cancelled, or absent."""
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import django_rq
import pytest
from django.conf import settings
from django.db import connection
from django.urls import reverse
from rq import Worker

from tests.factories import project_with_images
from transferapp.management.commands.serve import stop_children
from transferapp.models import TrainingRun

pytestmark = pytest.mark.django_db(transaction=True)


def _database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    password = f":{db['PASSWORD']}" if db["PASSWORD"] else ""
    return f"postgres://{db['USER']}{password}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.fixture
def start_worker(queue):
    """`manage.py rqworker default` (or the `queues` named) in its own process group, pointed at the
    test database; `extra_env`: settings for the worker process (its settings come from the environment)."""
    started = []

    def start(queues=("default",), **extra_env):
        env = {
            **os.environ,
            "DATABASE_URL": _database_url(),
            "REDIS_URL": settings.REDIS_URL,
            "MEDIA_ROOT": str(settings.MEDIA_ROOT),
            "ARTIFACTS_ROOT": str(settings.ARTIFACTS_ROOT),
            "FEATURE_CACHE_DIR": str(settings.FEATURE_CACHE_DIR),
            "TORCH_THREADS": "1",
            **extra_env,
        }
        command = [sys.executable, "manage.py", "rqworker", *queues]
        process = subprocess.Popen(command, cwd=settings.BASE_DIR, env=env, start_new_session=True,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            _strike_off(process.pid)


def _processes() -> dict[int, list[str]]:
    """Every live process: its /proc stat fields after the name (state, parent, process group, ...)."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            found[int(stat.parent.name)] = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
    return found


def _children(pid: int) -> list[int]:
    return [child for child, fields in _processes().items() if int(fields[1]) == pid]


def _alive_in_groups(groups: set[int]) -> list[int]:
    """Processes (not zombies) in these process groups."""
    return [pid for pid, fields in _processes().items() if int(fields[2]) in groups and fields[0] != "Z"]


def _kill_with_its_horse(worker) -> None:
    """SIGKILL the worker and its work horse (rq gives the horse its own session). A killed worker
    stays registered in Redis until its key expires (minutes): it is struck off here, so that a
    later test's "No worker is running" is not disproved by a dead one."""
    for pid in [worker.pid, *_children(worker.pid)]:
        os.kill(pid, signal.SIGKILL)
    worker.wait()
    _strike_off(worker.pid)


def _strike_off(pid: int) -> None:
    for registered in Worker.all(connection=django_rq.get_connection("default")):
        if registered.pid == pid:
            registered.register_death()


def _wait_for(run, condition, timeout_s=120):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run.refresh_from_db()
        if condition(run):
            return run
        time.sleep(0.2)
    raise AssertionError(f"run {run.pk} stayed {run.status} ({run.message})")


def _start_long_training(client, user):
    project = project_with_images(user, classes=("red", "blue"), per_class=30, size=(96, 96))
    response = client.post(
        reverse("training_start", args=[project.pk]),
        {"base_model": "efficientnet_lite0", "preset": "best", "epochs": 60, "time_budget_minutes": 30},
    )
    assert response.status_code == 302
    return TrainingRun.objects.get(project=project)


def test_a_queued_run_says_no_worker_is_running_then_a_worker_picks_it_up(alice, user, start_worker):
    run = _start_long_training(alice, user)
    assert "No worker is running" in alice.get(run.get_absolute_url()).content.decode()
    start_worker()
    _wait_for(run, lambda r: r.status == "running")
    assert "No worker is running" not in alice.get(run.get_absolute_url()).content.decode()


def test_cancel_stops_a_running_training_within_seconds(alice, user, start_worker):
    worker = start_worker()
    run = _start_long_training(alice, user)
    _wait_for(run, lambda r: r.status == "running" and r.progress > 0)
    asked = time.monotonic()
    alice.post(reverse("run_cancel", args=[run.pk]))
    _wait_for(run, lambda r: r.status == "cancelled", timeout_s=30)
    assert time.monotonic() - asked < 10
    assert worker.poll() is None  # the worker lives on, free for the next job


def test_a_worker_killed_mid_training_is_replaced_by_the_next_worker_as_its_next_try(alice, user, start_worker, settings):
    worker = start_worker()
    run = _start_long_training(alice, user)
    _wait_for(run, lambda r: r.status == "running" and r.progress > 0 and r.artifact_dir)
    silent_folder = Path(run.artifact_dir)
    _kill_with_its_horse(worker)  # the machine reboots
    settings.RUN_HEARTBEAT_TIMEOUT_S = 2
    time.sleep(3)
    page = alice.get(run.get_absolute_url()).content.decode()  # the page view settles it (or a reaper would)
    settings.RUN_HEARTBEAT_TIMEOUT_S = 180
    run.refresh_from_db()
    assert (run.status, run.attempt) == ("queued", 2) and "Running it again (try 2 of 2)" in page
    assert run.artifact_dir == str(silent_folder) and run.metrics["first_model_ready"]  # its quick model stays offered
    start_worker()  # another machine's worker takes it
    _wait_for(run, lambda r: r.status == "running" and r.artifact_dir != str(silent_folder))  # try 2's quick model
    assert run.artifact_dir == f"{silent_folder}-try-2" and Path(run.artifact_dir).is_dir()
    assert not silent_folder.exists()  # try 1's folder went when try 2's model replaced it
    alice.post(reverse("run_cancel", args=[run.pk]))
    _wait_for(run, lambda r: r.status == "cancelled", timeout_s=30)
    assert Path(run.artifact_dir).is_dir()  # a cancelled run keeps its quick model


def test_a_training_killed_under_a_living_worker_is_failed_not_run_again(alice, user, start_worker, settings):
    """The kernel's out-of-memory killer ends the work horse, not the worker: rq records it, and the
    same job would likely die the same way on the next worker."""
    worker = start_worker()
    run = _start_long_training(alice, user)
    _wait_for(run, lambda r: r.status == "running" and r.progress > 0)
    for pid in _children(worker.pid):
        os.kill(pid, signal.SIGKILL)
    settings.RUN_HEARTBEAT_TIMEOUT_S = 2
    time.sleep(3)
    page = alice.get(run.get_absolute_url()).content.decode()
    run.refresh_from_db()
    assert (run.status, run.attempt) == ("failed", 1), run.message
    assert "was killed while it ran" in run.error and "signal 9" in run.error and "ran out of memory" in run.error
    assert "was killed while it ran" in page and "Traceback" not in page
    assert worker.poll() is None  # the worker lives on


def test_a_worker_killed_mid_training_leaves_a_failed_run_that_can_be_restarted(alice, user, start_worker, settings):
    settings.JOB_ATTEMPTS = 1  # never run again: the user restarts it
    worker = start_worker()
    run = _start_long_training(alice, user)
    _wait_for(run, lambda r: r.status == "running" and r.progress > 0)
    _kill_with_its_horse(worker)  # as a reboot would
    settings.RUN_HEARTBEAT_TIMEOUT_S = 2
    time.sleep(3)
    page = alice.get(run.get_absolute_url()).content.decode()
    run.refresh_from_db()
    assert run.status == "failed" and "stopped responding" in run.error
    assert "Train again" in page
    response = alice.post(reverse("run_retry", args=[run.pk]))
    retried = TrainingRun.objects.exclude(pk=run.pk).get()
    assert response["Location"] == retried.get_absolute_url()
    assert retried.status == "queued" and retried.config == run.config


def test_two_workers_train_two_projects_at_once(alice, user, start_worker):
    runs = []
    for name in ("First", "Second"):
        project = project_with_images(user, per_class=8, name=name)
        alice.post(reverse("training_start", args=[project.pk]), {"base_model": "efficientnet_lite0", "preset": "best", "epochs": 2})
        runs.append(TrainingRun.objects.get(project=project))
    start_worker(), start_worker()
    for run in runs:
        _wait_for(run, lambda r: r.is_finished, timeout_s=240)
        assert run.status == "succeeded", run.error
    overlap = min(r.finished_at for r in runs) - max(r.started_at for r in runs)
    assert overlap.total_seconds() > 0  # both ran at the same time: neither waited for the other


def _sqlite_integrity() -> str:
    with sqlite3.connect(connection.settings_dict["NAME"]) as db:
        return db.execute("PRAGMA integrity_check").fetchone()[0]


@pytest.mark.skipif(not connection.vendor == "sqlite", reason="SQLite's file locks are what a fork can break")
def test_a_work_horse_starts_with_none_of_its_workers_database_files_open(start_worker, queue):
    """An SQLite connection carried across fork() breaks its file locks (the horse's copy, closed,
    drops them): the reaper's connection, between two sweeps, must not reach the work horse."""
    start_worker(REAPER_INTERVAL_S="3600")  # its first sweep has run before it takes the job
    job = queue.enqueue("tests.worker_jobs.database_files_open_at_start")
    deadline = time.monotonic() + 60
    while job.get_status(refresh=True) not in ("finished", "failed") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert job.get_status() == "finished"
    assert job.return_value() == []


def test_a_worker_killed_mid_training_leaves_no_process_behind_and_a_sound_database(alice, user, start_worker):
    """The out-of-memory killer (or a crash) takes the worker but not its work horse; `serve` then stops
    what it started. The horse must not train on, unseen, writing into a database that moved on."""
    worker = start_worker()  # as `serve` starts it: its own process group
    run = _start_long_training(alice, user)
    _wait_for(run, lambda r: r.status == "running" and r.progress > 0)
    horses = _children(worker.pid)
    groups = {worker.pid, *(os.getpgid(pid) for pid in horses)}
    assert horses and _alive_in_groups(groups)
    os.kill(worker.pid, signal.SIGKILL)
    stop_children([worker])
    _strike_off(worker.pid)
    deadline = time.monotonic() + 10
    while _alive_in_groups(groups) and time.monotonic() < deadline:
        time.sleep(0.2)
    survivors = _alive_in_groups(groups)
    for pid in survivors:
        os.kill(pid, signal.SIGKILL)
    assert survivors == []
    if connection.vendor == "sqlite":
        assert _sqlite_integrity() == "ok"
    run.refresh_from_db()
    assert run.status == "running"  # as the horse left it: the reaper runs it again (its next try)
